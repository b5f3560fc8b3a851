"""Which storage a local run uses."""

from __future__ import annotations

from pathlib import Path

from kubepeft.api.models import PeftJobSpec
from kubepeft.local.storage_defaults import bucket_of, credentials_dirs, plan_storage


def _spec(output: str, model: str = "/models/tiny", endpoint: str | None = None) -> PeftJobSpec:
    out: dict[str, object] = {"uri": output}
    if endpoint:
        out["endpoint"] = endpoint
    return PeftJobSpec.model_validate(
        {
            "method": "lora",
            "model": {"uri": model},
            "dataset": {"uri": "/data/d.jsonl"},
            "training": {"maxSteps": 2},
            "output": out,
        }
    )


def test_local_paths_need_no_server(tmp_path: Path) -> None:
    plan = plan_storage(_spec("/out"), workdir=tmp_path, endpoint=None, credentials_dir=None)
    assert not plan.embedded and plan.endpoint is None


def test_s3_without_endpoint_starts_the_embedded_server_under_the_workdir(tmp_path: Path) -> None:
    for spec in (_spec("s3://bucket/runs"), _spec("/out", model="s3://bucket/models/m")):
        plan = plan_storage(spec, workdir=tmp_path, endpoint=None, credentials_dir=None)
        assert plan.embedded and plan.embedded_data_dir == tmp_path / "s3"


def test_an_endpoint_from_the_job_or_the_flag_wins(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    plan = plan_storage(
        _spec("s3://bucket1/x", endpoint="http://s3.example:9000"),
        workdir=tmp_path,
        endpoint=None,
        credentials_dir=creds,
    )
    assert (plan.embedded, plan.endpoint, plan.credentials_dir) == (False, "http://s3.example:9000", creds)
    plan = plan_storage(
        _spec("s3://bucket1/x", endpoint="http://a:1"), workdir=tmp_path, endpoint="http://b:2", credentials_dir=None
    )
    assert (plan.embedded, plan.endpoint) == (False, "http://b:2")


def test_credentials_dirs_and_buckets(tmp_path: Path) -> None:
    assert credentials_dirs(_spec("s3://bucket/x"), None) == {}
    # Like the operator's mounts: one entry per remote source, none for local paths.
    assert credentials_dirs(_spec("s3://bucket/x"), tmp_path) == {"output": str(tmp_path)}
    both = credentials_dirs(_spec("s3://bucket/x", model="s3://bucket/m"), tmp_path)
    assert both == {"model": str(tmp_path), "output": str(tmp_path)}
    assert bucket_of("s3://kubepeft-demo/runs") == "kubepeft-demo"
    assert bucket_of("/local") is None
