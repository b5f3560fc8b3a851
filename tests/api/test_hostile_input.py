"""Hostile and careless input: each case is refused with the project's own one-line error.

``hostile/*.yaml`` is a hand corpus, one case per file, each with its expected lines
(``# expect:``; ``# expect-python:`` where PyYAML's pure-Python parser words a syntax error
differently from libyaml). Every file goes through both commands that read manifests,
``kubepeft validate`` (exit 1) and ``kubepeft run`` (exit 2, nothing started). Cases that cannot be
committed as files (a 200 MB file, /dev/zero, a FIFO, stdin, flags) are built here.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from kubepeft.api import yaml_input
from kubepeft.api.validate import (
    check_object,
    crd_schema,
    model_errors,
    pattern_matches,
    validate_object,
    validate_text,
    value_errors,
)
from kubepeft.cli import endpoint_url, main
from kubepeft.local.job_file import JobFileError, load_job_file
from tests.fixtures.api import MINIMAL_PEFTJOB, REPO_ROOT

HOSTILE_DIR = Path(__file__).parent / "hostile"
HOSTILE = sorted(HOSTILE_DIR.glob("*.yaml"))
LIMIT = yaml_input.MAX_MANIFEST_BYTES


def expected_lines(path: Path) -> list[str]:
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    python = [line[len("# expect-python: ") :] for line in lines if line.startswith("# expect-python: ")]
    if python and yaml_input.DEFAULT_LOADER is yaml_input.PYTHON_LOADER:
        return python
    return [line[len("# expect: ") :] for line in lines if line.startswith("# expect: ")]


def test_the_corpus_covers_every_case() -> None:
    names = {path.stem for path in HOSTILE}
    required = {
        "alias-bomb",
        "yaml-date",
        "binary-tag",
        "set-tag",
        "circular-alias",
        "float-key",
        "null-key",
        "deep-nesting",
        "lone-surrogate",
        "nan",
        "duplicate-keys",
        "cpu-trailing-newline",
        "nul-in-output-uri",
        "namespace-traversal",
    }
    assert required <= names, required - names
    for path in HOSTILE:
        assert expected_lines(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_validate_refuses_with_the_expected_lines(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(HOSTILE_DIR)
    assert main(["validate", path.name]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == expected_lines(path)
    assert out.err == ""


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_run_refuses_with_the_same_lines_and_starts_nothing(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(HOSTILE_DIR)
    assert main(["run", path.name, "--workdir", str(tmp_path / "wd")]) == 2
    assert capsys.readouterr().err.splitlines() == expected_lines(path)
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("loader", [yaml_input.PYTHON_LOADER, yaml_input.C_LOADER], ids=["python", "libyaml"])
def test_both_yaml_parsers_refuse_the_whole_corpus(loader: type | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if loader is None:
        pytest.skip("PyYAML was built without libyaml")
    monkeypatch.setattr(yaml_input, "DEFAULT_LOADER", loader)
    for path in HOSTILE:
        try:
            text = yaml_input.read_manifest(str(path))
        except yaml_input.ManifestInputError:
            continue
        lines = validate_text(text, path.name).lines()
        assert lines and all(line.startswith(path.name) and line != f"{path.name}: ok" for line in lines), lines


# --- files that are not manifests ----------------------------------------------------------------


def _refused_by_both(path: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", path]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{path}: {reason}"]
    assert main(["run", path, "--workdir", str(tmp_path / "wd")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{path}: {reason}"]
    assert not (tmp_path / "wd").exists()


def test_a_200_mb_file_is_refused_after_reading_the_cap_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:  # a valid head, then 200 MB (sparse: nothing to write)
        handle.write((REPO_ROOT / "examples" / "tiny-lora.yaml").read_bytes())
        handle.seek(200 * 1024 * 1024)
        handle.write(b"\n")
    _refused_by_both(str(path), f"larger than {LIMIT} bytes (the API server's request limit)", tmp_path, capsys)


def test_a_symlink_to_dev_zero_is_refused_without_reading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.symlink_to("/dev/zero")
    _refused_by_both(str(path), "cannot read: a character device, not a regular file", tmp_path, capsys)


@pytest.mark.timeout(60)
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    os.mkfifo(path)  # opening it for reading would wait for a writer forever
    _refused_by_both(str(path), "cannot read: a FIFO, not a regular file", tmp_path, capsys)


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.yaml").mkdir()
    _refused_by_both(str(tmp_path / "job.yaml"), "cannot read: a directory, not a regular file", tmp_path, capsys)


def test_stdin_is_capped_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"# x\n" * (LIMIT // 4 + 1))))
    assert main(["validate", "-"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"<stdin>: larger than {LIMIT} bytes (the API server's request limit)"
    ]


# --- names that become paths ----------------------------------------------------------------------


def _job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    return path


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--namespace", "../../X", "metadata.namespace"),
        ("--namespace", "a/b", "metadata.namespace"),
        ("--namespace", ".", "metadata.namespace"),
        ("--name", "../X", "metadata.name"),
        ("--name", "x\n", "metadata.name"),
    ],
)
def test_run_refuses_names_that_would_leave_the_workdir(
    flag: str, value: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job_file(tmp_path)
    workdir = tmp_path / "a" / "b" / "wd"
    assert main(["run", str(job), flag, value, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{job}: {field}: invalid value "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]  # nothing written anywhere


# --- flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["verify s3://bucket/x", "run job.yaml"])
def test_an_endpoint_that_is_not_a_url_is_a_usage_error(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _job_file(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--endpoint", "not a url"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --endpoint: 'not a url' is not an http:// or https:// URL with a host" in err
    assert "Traceback" not in err


def test_endpoint_urls() -> None:
    for good in ("http://127.0.0.1:8333", "https://s3.example.com", "https://s3.example.com/base"):
        assert endpoint_url(good) == good
    for bad in ("not a url", "ftp://host", "http://", "http://host:99999", "http://host:0", "http://[::1", "s3.com"):
        with pytest.raises(Exception, match="is not an http"):
            endpoint_url(bad)


def test_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "2 input refused before" in out and "130 interrupted" in out


# --- a read-only workdir ----------------------------------------------------------------------------


def _run_with_read_only_workdir(job: Path, workdir: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """``kubepeft run`` with a workdir it cannot write, and the reason the system gives.

    Root writes through mode bits, so as root the workdir becomes a read-only tmpfs in a private
    user and mount namespace (``unshare``); an ordinary user gets a mode 0555 folder.
    """
    command = [sys.executable, "-m", "kubepeft", "run", str(job), "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if os.geteuid() != 0:
        workdir.chmod(0o555)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120), "Permission denied"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only")
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    wrapped = ["unshare", "-rm", "sh", "-c", script, "sh", str(workdir), *command]
    return subprocess.run(wrapped, env=env, capture_output=True, text=True, timeout=120), "Read-only file system"


def test_run_with_a_read_only_workdir_is_a_permanent_storage_error(tmp_path: Path) -> None:
    job = _job_file(tmp_path)
    workdir = tmp_path / "ro"
    workdir.mkdir()
    done, reason = _run_with_read_only_workdir(job, workdir)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.splitlines() == [f"storage: write to the workdir {workdir} failed: {reason}"]
    assert "Traceback" not in done.stdout


# --- the shared check on objects (the operator's and any caller's path) ---------------------------


def test_every_schema_pattern_is_anchored_so_fullmatch_is_gos_answer() -> None:
    patterns: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(crd_schema())
    assert patterns and all(p.startswith("^") and p.endswith("$") for p in patterns), patterns
    assert not pattern_matches(r"^[0-9]+$", "2\n") and pattern_matches(r"^[0-9]+$", "2")


def _minimal(**training: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {**MINIMAL_PEFTJOB, "spec": {**MINIMAL_PEFTJOB["spec"]}}
    doc["spec"]["training"] = {"maxSteps": 10, **training}
    return doc


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "must be a finite number, got nan (JSON has no NaN or infinity)"),
        (math.inf, "must be a finite number, got inf (JSON has no NaN or infinity)"),
        (2**64, "integer out of range (64 bits)"),
        ("a\0b", "must not contain a NUL character"),
        ("\udc80", "invalid Unicode: a lone surrogate"),
        (date(2024, 1, 1), "must be a JSON value, got date"),
        (b"bytes", "must be a JSON value, got bytes"),
        ({1, 2}, "must be a JSON value, got set"),
    ],
)
def test_values_json_cannot_hold_are_field_errors(value: Any, reason: str) -> None:
    errors = [str(e) for e in validate_object(_minimal(learningRate=value))]
    assert errors == [f"spec.training.learningRate: {reason}"]
    assert check_object(_minimal(learningRate=value)).job is None


def test_non_string_keys_and_cycles_are_field_errors_not_crashes() -> None:
    doc = _minimal()
    doc["spec"]["resources"] = {"nodeSelector": {1.5: "x", None: "y"}}
    assert [str(e) for e in value_errors(doc)] == [
        "spec.resources.nodeSelector: mapping keys must be strings, got number 1.5",
        "spec.resources.nodeSelector: mapping keys must be strings, got null null",
    ]
    cycle: list[Any] = []
    cycle.append(cycle)
    doc = _minimal()
    doc["spec"]["resources"] = {"affinity": {"a": cycle}}
    errors = value_errors(doc)
    assert len(errors) == 1 and errors[0].reason == f"nested deeper than {yaml_input.MAX_DEPTH} levels"


def test_model_errors_use_wire_names_and_the_validators_paths() -> None:
    from pydantic import ValidationError

    from kubepeft.api.models import PeftJob

    doc = _minimal(maxSteps=0)
    with pytest.raises(ValidationError) as caught:
        PeftJob.model_validate(doc)
    assert [str(e) for e in model_errors(caught.value)] == [
        "spec.training.maxSteps: Input should be greater than or equal to 1"
    ]


def test_what_validate_accepts_the_typed_model_accepts() -> None:
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        (doc,) = yaml_input.load_documents(path.read_text(), path.name)
        if doc.get("kind") != "PeftJob":
            continue  # PeftSweeps: tests/api/test_sweep_api.py
        checked = check_object(doc)
        assert checked.errors == () and checked.job is not None


def test_job_file_error_lines_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as caught:
        load_job_file(tmp_path / "missing.yaml")
    assert caught.value.lines == [f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def test_metadata_checks() -> None:
    from kubepeft.api.validate import metadata_errors

    assert metadata_errors({"name": "a", "namespace": ""}) == []  # empty: unset, as kubectl reads it
    assert [str(e) for e in metadata_errors({"name": "a", "namespace": "x" * 64})] == [
        "metadata.namespace: must be at most 63 characters long (a DNS-1123 label)"
    ]
    doc = {**MINIMAL_PEFTJOB, "metadata": "x"}
    assert [str(e) for e in validate_object(doc)] == ['metadata: must be of type object, got string "x"']
