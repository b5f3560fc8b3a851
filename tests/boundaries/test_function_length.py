"""No function of the product is longer than 60 lines: a longer one is a sequence of steps that
wants names (issue: the worker as stages). Test support, tests and benchmarks are not held to it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("kubepeft", "operator", "trainer_image")
MAX_LINES = 60


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_product_function_is_longer_than_60_lines() -> None:
    assert [f for package in PRODUCT for f in long_functions(REPO_ROOT / package)] == []


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "probe.py").write_text(f"def short() -> None:\n    pass\n\n\ndef long() -> None:\n{body}\n")
    assert long_functions(tmp_path) == [f"probe.py:5 long ({MAX_LINES + 1} lines)"]
