"""An output the job cannot write fails the job before any training, permanently, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepeft.contract import build_trainer_config
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.training import lora_job_spec, run_train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("case", ["read-only keys", "missing bucket"])
def test_unwritable_output_fails_before_training(
    case: str, tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, s3_server: EmbeddedS3, s3_bucket: str
) -> None:
    readonly = case == "read-only keys"
    bucket = s3_bucket if readonly else "kp-missing-output-bucket"
    credentials = s3_server.readonly_credentials_dir if readonly else s3_server.credentials_dir
    spec = lora_job_spec(tiny_model_dir, tiny_task_data, Path("/unused"), output={"uri": f"s3://{bucket}/out"})
    config = build_trainer_config(
        spec, "tests", "preflight", credentials_dirs={"output": str(credentials)}, endpoint_override=s3_server.endpoint
    )
    path = tmp_path / "config.json"
    path.write_text(config.to_json(), encoding="utf-8")
    run = run_train(path, tmp_path / "run", timeout=240)
    assert run.returncodes == [3], run.log()[-4000:]
    reports = run.reports()
    assert [r["state"] for r in reports if r["state"] in ("Training", "Exporting")] == []  # no step was trained
    final = reports[-1]
    assert final["state"] == "Failed" and final["failure_class"] == "permanent"
    assert f"output s3://{bucket}/out/tests/preflight is not writable" in final["message"]
    assert ("AccessDenied" if readonly else "NoSuchBucket") in final["message"]
