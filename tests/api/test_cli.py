"""``kubepeft validate`` and ``kubepeft crds`` as commands: exit codes, output format, files written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubepeft.api import crd, reference
from kubepeft.cli import main
from tests.fixtures.api import REPO_ROOT

INVALID_DIR = Path(__file__).parent / "invalid"


def kubepeft(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kubepeft", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_process_reports_each_file_and_exits_1_on_any_problem(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "examples" / "tiny-lora.yaml", tmp_path / "good.yaml")
    shutil.copy(INVALID_DIR / "lora-rank-zero.yaml", tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("kind: PeftJob\nspec: {method: lora\n")
    done = kubepeft("validate", "good.yaml", "bad.yaml", "broken.yaml", "missing.yaml", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["good.yaml: ok", "bad.yaml: spec.lora.r: must be >= 1, got 0"]
    assert lines[2].startswith("broken.yaml:3: YAML syntax error: ")
    assert lines[3].startswith("missing.yaml: cannot read: ")
    assert len(lines) == 4


def test_validate_process_exits_0_when_all_are_valid_and_reads_stdin(tmp_path: Path) -> None:
    text = (REPO_ROOT / "examples" / "merge-only.yaml").read_text()
    done = kubepeft("validate", "-", str(REPO_ROOT / "examples" / "prompt-tuning.yaml"), cwd=tmp_path, stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["<stdin>: ok", f"{REPO_ROOT / 'examples' / 'prompt-tuning.yaml'}: ok"]


def test_crds_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    assert capsys.readouterr().out == crd.crd_yaml()
    assert main(["crds", "--docs"]) == 0
    assert capsys.readouterr().out == reference.render_reference()


def test_crds_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 1
    (tmp_path / "charts" / "kubepeft").mkdir(parents=True)
    assert main(["crds", "--write", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "crds" / crd.CRD_FILE).read_text() == crd.crd_yaml()
    assert (tmp_path / "charts" / "kubepeft" / "crds" / crd.CRD_FILE).read_text() == crd.crd_yaml()
    assert (tmp_path / "docs" / "api-reference.md").read_text() == reference.render_reference()
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs" / "api-reference.md").write_text("stale\n")
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 1
    assert "api-reference.md: out of date" in capsys.readouterr().err
