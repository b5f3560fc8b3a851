"""docs/settings.md is generated from every plane's settings model and must be current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from kubepeft.settings import ENV_PREFIX, rows

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "hack" / "settings_table.py"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_table_is_current() -> None:
    tool = load_tool()
    committed = (REPO_ROOT / tool.SETTINGS_FILE).read_text(encoding="utf-8")
    assert committed == tool.render(), "docs/settings.md is stale: run make settings"


def test_every_setting_is_documented_once() -> None:
    tool = load_tool()
    planes = [plane for plane, _ in tool.PLANE_MODELS]
    assert planes[:2] == ["core", "operator"]
    variables = [row.variable for _, model in tool.PLANE_MODELS for row in rows(model)]
    assert len(variables) == len(set(variables)), "a variable belongs to one plane"
    for _, model in tool.PLANE_MODELS:
        for row in rows(model):
            assert row.variable.startswith(ENV_PREFIX) and row.description, f"{row.variable} needs a description"
    page = tool.render()
    assert all(f"| `{variable}` |" in page for variable in variables)


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    tool = load_tool()
    tool.REPO_ROOT = tmp_path
    (tmp_path / "docs").mkdir()
    assert tool.main(["--check"]) == 1
    assert tool.main(["--write"]) == 0 and tool.main(["--check"]) == 0
    assert (tmp_path / "docs" / "settings.md").read_text(encoding="utf-8") == tool.render()


def test_the_script_runs_standalone() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
