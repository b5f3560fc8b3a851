"""The plane boundaries ([tool.importlinter] in pyproject.toml) hold, and `make lint` fails when one
is crossed: import-linter runs on a copy of the tree with one forbidden import added (to small
modules that exist for the boundaries themselves, so the cases outlive refactorings)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# root package -> the folder that holds it (the package-dir mapping of pyproject.toml)
SOURCES = {
    "kubepeft": "kubepeft",
    "kubepeft_operator": "operator/kubepeft_operator",
    "kubepeft_trainer": "trainer_image/kubepeft_trainer",
    "kubepeft_testing": "testing/kubepeft_testing",
    "tests": "tests",
    "bench": "bench",
}
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` (what `make lint` runs) in ``root``, finding the packages on ``pythonpath``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python sources and pyproject.toml, laid out as in the repository."""
    root = tmp_path_factory.mktemp("tree")
    for folder in SOURCES.values():
        shutil.copytree(
            REPO / folder,
            root / folder,
            ignore=lambda d, names: [n for n in names if not n.endswith(".py") and not (Path(d) / n).is_dir()],
        )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def search_path(root: Path) -> list[Path]:
    """Where the copied packages are found (ahead of the installed, editable ones)."""
    return [root, root / "operator", root / "trainer_image", root / "testing"]


def test_the_real_tree_keeps_every_contract() -> None:
    done = lint_imports(REPO, [REPO])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "named"),
    [
        # a lazy import inside a function counts as much as one at the top
        (
            "kubepeft/net.py",
            "\n\ndef _forbidden():\n    import torch\n\n    return torch\n",
            "core never imports",
            "kubepeft.net -> torch",
        ),
        (
            "kubepeft/cli.py",
            "\nimport kubepeft_trainer.main\n",
            "core never imports",
            "kubepeft.cli -> kubepeft_trainer.main",
        ),
        (
            "operator/kubepeft_operator/commands.py",
            "\nimport kubepeft_trainer.commands\n",
            "never import each other",
            "kubepeft_operator.commands -> kubepeft_trainer.commands",
        ),
        (
            "trainer_image/kubepeft_trainer/commands.py",
            "\nimport tests.conftest\n",
            "product never imports",
            "kubepeft_trainer.commands -> tests.conftest",
        ),
        (
            "bench/storage_throughput.py",
            "\nimport tests.conftest\n",
            "benchmarks and the test-support package never import the tests",
            "bench.storage_throughput -> tests.conftest",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_lint(tree: Path, module: str, line: str, contract: str, named: str) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(original + line)
    try:
        done = lint_imports(tree, search_path(tree))
    finally:
        path.write_text(original)
    assert done.returncode != 0, done.stdout
    assert "Broken contracts" in done.stdout, done.stdout
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken
    assert named in broken
