"""`kubepeft run`'s per-source credentials (--credentials) and volumes (--volume), refused early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.api.models import PeftJobSpec
from kubepeft.cli import main
from kubepeft.local.access import LocalAccess, access_problems
from kubepeft.local.storage_defaults import credentials_dirs, plan_storage

OTHER = "http://data-s3:9000"


def spec(**fields: Any) -> PeftJobSpec:
    wire: dict[str, Any] = {
        "method": "lora",
        "model": {"uri": "pvc://models/tiny"},
        "dataset": {"uri": "s3://data/d.jsonl", "endpoint": OTHER},
        "training": {"maxSteps": 2},
        "volumes": [{"claimName": "models"}],
        "output": {"uri": "s3://out/runs"},
        **fields,
    }
    return PeftJobSpec.model_validate(wire)


def manifest(kind: str, name: str, spec_wire: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubepeft.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec_wire}


def test_a_source_with_its_own_endpoint_does_not_need_the_embedded_server(tmp_path: Path) -> None:
    only_own = spec(output={"uri": "/out"})
    assert not plan_storage(only_own, workdir=tmp_path, endpoint=None, credentials_dir=None).embedded
    assert plan_storage(spec(), workdir=tmp_path, endpoint=None, credentials_dir=None).embedded


def test_credentials_folders_follow_the_operators_rules(tmp_path: Path) -> None:
    job = spec(adapters={"sources": [{"uri": "s3://out/adapter"}]})
    default = tmp_path / "default"
    # The one folder serves the default endpoint (output, and the adapter on it); the dataset on
    # its own endpoint gets none of it; the volume needs none.
    assert credentials_dirs(job, default) == {"adapter-0": str(default), "output": str(default)}
    own = {"dataset": tmp_path / "data-keys", "adapter-0": tmp_path / "adapter-keys"}
    assert credentials_dirs(job, default, own) == {
        "dataset": str(tmp_path / "data-keys"),
        "adapter-0": str(tmp_path / "adapter-keys"),
        "output": str(default),
    }
    # The output's own folder is what an S3 input on its endpoint borrows, as the operator mounts it.
    assert credentials_dirs(job, default, {"output": tmp_path / "out-keys"}) == {
        "adapter-0": str(tmp_path / "out-keys"),
        "output": str(tmp_path / "out-keys"),
    }


def test_problems_name_the_claim_the_source_and_the_flag(tmp_path: Path) -> None:
    assert access_problems(spec(), LocalAccess(volumes={"models": tmp_path}), embedded=True) == []
    assert access_problems(spec(), LocalAccess(), embedded=True) == [
        "claim 'models': the job reads or writes it; map it to a local folder with --volume models=DIR"
    ]
    flags = LocalAccess(
        credentials={"dataset": tmp_path / "nope", "weights": tmp_path, "model": tmp_path, "output": tmp_path},
        volumes={"models": tmp_path, "scratch": tmp_path},
    )
    problems = access_problems(spec(), flags, embedded=True)
    assert problems == [
        f"--credentials dataset={tmp_path / 'nope'}: no such folder",
        f"--credentials weights={tmp_path}: the job has no source 'weights' (its sources: model, dataset, output)",
        f"--credentials model={tmp_path}: model is a local path (pvc://models/tiny) and needs no credentials",
        f"--credentials output={tmp_path}: output is on the embedded S3 server, which only knows its own keys "
        "(name an endpoint with --endpoint or in the job to use your own)",
        f"--volume scratch={tmp_path}: the job declares no claim 'scratch' in spec.volumes",
    ]


def test_an_absolute_path_on_a_declared_volume_needs_a_mapping_too() -> None:
    job = spec(model={"uri": "/weights/tiny"}, volumes=[{"claimName": "models", "mountPath": "/weights"}])
    assert access_problems(job, LocalAccess(), embedded=False) == [
        "claim 'models': the job reads or writes it; map it to a local folder with --volume models=DIR"
    ]


def test_run_refuses_an_unmapped_claim_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = manifest("PeftJob", "pvc-job", spec(output={"uri": "/out"}, dataset={"uri": "/data/d.jsonl"}).to_wire())
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err
    assert "claim 'models'" in err and "--volume models=DIR" in err
    assert not (tmp_path / "wd").exists()  # nothing started


def sweep_document(template: dict[str, Any]) -> dict[str, Any]:
    from tests.sweep.support import RANK_GROUP

    return manifest("PeftSweep", "pvc-sweep", {"template": template, "parameters": RANK_GROUP})


def test_a_sweep_checks_the_flags_against_its_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = spec(output={"uri": "/out"}, dataset={"uri": "/data/d.jsonl"}).to_wire()
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_document(template)))
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err
    assert "claim 'models'" in err and "--volume models=DIR" in err
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd"), "--volume", "other=/tmp"]) == 2
    assert "declares no claim 'other'" in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()  # nothing started


def test_a_sweep_on_a_claim_writes_its_report_and_trials_in_the_claims_folder(tmp_path: Path) -> None:
    from kubepeft.api.sweep_models import PeftSweepSpec
    from kubepeft.local.storage_defaults import ResolvedStorage
    from kubepeft.local.sweep_run import open_sweep_store
    from kubepeft.sweep.expand import trial_spec

    template = spec(output={"uri": "pvc://results/runs"}, volumes=[{"claimName": "models"}, {"claimName": "results"}])
    sweep = PeftSweepSpec.model_validate(sweep_document(template.to_wire())["spec"])
    access = LocalAccess(volumes={"models": tmp_path / "models", "results": tmp_path / "results"})
    store = open_sweep_store(sweep, ResolvedStorage(endpoint=None, credentials_dir=None, embedded=False), access)
    store.put_bytes(str(tmp_path / "results" / "runs" / "probe"), b"x")
    assert (tmp_path / "results" / "runs" / "probe").read_bytes() == b"x"
    trial = trial_spec(sweep, {"lora.r": 4, "lora.alpha": 8})
    from kubepeft.contract import build_trainer_config

    config = build_trainer_config(trial, "default", "pvc-sweep-t0", volume_dirs=access.volume_dirs())
    assert config.output.root == str(tmp_path / "results" / "runs" / "default" / "pvc-sweep-t0")
    # Reports name artifacts as the job does; the local summary maps them back to the folder.
    assert config.output.public(config.output.adapter) == "pvc://results/runs/default/pvc-sweep-t0/adapter"
    assert config.output.located("pvc://results/runs/default/pvc-sweep-t0/adapter") == config.output.adapter
