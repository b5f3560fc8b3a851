"""Loading a job file for a local run: the same validation as `kubepeft validate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepeft.api.validate import validate_text
from kubepeft.local.job_file import JobFileError, load_job_file

JOB = """\
apiVersion: kubepeft.dev/v1alpha1
kind: PeftJob
metadata:
  name: tiny
spec:
  method: lora
  model: {uri: /models/tiny}
  dataset: {uri: /data/train.jsonl, template: promptResponse}
  training: {maxSteps: 4}
  resources: {gpusPerNode: 0}
  output: {uri: /out}
"""


def test_loads_a_valid_job(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    job = load_job_file(path)
    assert (job.name, job.namespace) == ("tiny", "default")
    assert job.spec.training is not None and job.spec.training.max_steps == 4
    job = load_job_file(path, name="other", namespace="team")
    assert (job.name, job.namespace) == ("other", "team")


def test_invalid_job_reports_file_field_reason_like_validate(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = JOB.replace("maxSteps: 4", "maxSteps: 0").replace("method: lora", "method: lora\n  bogus: 1")
    path.write_text(text)
    with pytest.raises(JobFileError) as caught:
        load_job_file(path)
    assert caught.value.lines == validate_text(text, str(path)).lines()
    # As on the API server (strict field validation), unknown fields are reported alone.
    assert caught.value.lines == [f"{path}: spec.bogus: unknown field"]
    path.write_text(JOB.replace("maxSteps: 4", "maxSteps: 0"))
    with pytest.raises(JobFileError) as caught:
        load_job_file(path)
    assert caught.value.lines == [  # a bound failure lets the rules run, as on the server
        f"{path}: spec.training.maxSteps: must be >= 1, got 0",
        f"{path}: spec.training.warmupSteps: warmupSteps must be less than maxSteps",
    ]


def test_invalid_name_override_is_a_field_error(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    with pytest.raises(JobFileError) as caught:
        load_job_file(path, name="Not_A_Name")
    assert caught.value.lines[0].startswith(f"{path}: metadata.name: invalid value")


def test_unreadable_and_multi_job_files(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="cannot read"):
        load_job_file(tmp_path / "missing.yaml")
    path = tmp_path / "two.yaml"
    path.write_text(JOB + "---\n" + JOB.replace("name: tiny", "name: tiny2"))
    with pytest.raises(JobFileError, match="exactly one PeftJob, found 2"):
        load_job_file(path)
