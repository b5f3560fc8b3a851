"""The one input resolver: where each input is (own endpoint, volumes) and with which credentials."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.inputs import fetch_adapters, fetch_base_model, fetch_dataset
from kubepeft_trainer.sources import locate_inputs

from kubepeft.contract import TrainerConfig, build_trainer_config
from tests.fixtures.trainer import make_spec

OUT = "http://output-s3:9000"
OTHER = "http://data-s3:9000"


def config(spec: Any, **kwargs: Any) -> TrainerConfig:
    return build_trainer_config(spec, "tests", "job", **kwargs)


def s3_spec(**overrides: Any) -> Any:
    return make_spec(
        "s3://models/tiny",
        "s3://data/d.jsonl",
        output={"uri": "s3://out/runs", "endpoint": OUT, "region": "eu-west-1"},
        **overrides,
    )


def test_inputs_default_to_the_outputs_endpoint_and_may_name_their_own() -> None:
    spec = s3_spec(dataset={"endpoint": OTHER, "region": "us-west-2", "forcePathStyle": False})
    located = locate_inputs(config(spec))
    model, dataset = located["model"].source, located["dataset"].source
    assert (model.endpoint, model.region, model.force_path_style, model.own_endpoint) == (OUT, "eu-west-1", True, False)
    assert (dataset.endpoint, dataset.region, dataset.force_path_style, dataset.own_endpoint) == (
        OTHER,
        "us-west-2",
        False,
        True,
    )


def test_defaults_follow_the_output_as_the_trainer_reaches_it() -> None:
    # The operator's default endpoint (or a local run's server) replaces an output without one.
    spec = make_spec("s3://models/tiny", output={"uri": "s3://out/runs"})
    located = locate_inputs(config(spec, endpoint_override="http://default:8333"))
    assert located["model"].source.endpoint == "http://default:8333"


def test_each_source_reads_its_own_credentials_folder() -> None:
    spec = s3_spec(
        model={"uri": "hf://org/tiny"},
        dataset={"endpoint": OTHER},
        adapters={"sources": [{"uri": "s3://adapters/a"}, {"uri": "s3://adapters/b", "endpoint": OTHER}]},
    )
    folders = {"output": "/creds/output", "adapter-0": "/creds/adapter-0"}
    located = locate_inputs(config(spec, credentials_dirs=folders))
    assert located["adapter-0"].credentials_dir == "/creds/adapter-0"  # its own, not the output's
    assert located["adapter-1"].credentials_dir is None  # another endpoint: none of the output's keys
    assert located["dataset"].credentials_dir is None
    assert located["model"].credentials_dir is None  # the hub never borrows the output's S3 keys


def test_an_s3_input_on_the_outputs_endpoint_without_a_folder_uses_the_outputs() -> None:
    located = locate_inputs(config(s3_spec(), credentials_dirs={"output": "/creds/output", "dataset": "/creds/d"}))
    assert located["model"].credentials_dir == "/creds/output"
    assert located["dataset"].credentials_dir == "/creds/d"


def test_a_missing_credentials_folder_is_a_permanent_error_naming_the_source(tmp_path: Path) -> None:
    folders = {"dataset": str(tmp_path / "nope")}
    with pytest.raises(
        PermanentTrainerError, match=r"dataset s3://data/d\.jsonl: credentials folder .*nope.*'dataset'"
    ):
        fetch_dataset(config(s3_spec(), credentials_dirs=folders), tmp_path / "work")


def _volume_spec(model: str, **overrides: Any) -> Any:
    return make_spec(model, volumes=[{"claimName": "models"}, {"claimName": "data", "mountPath": "/data"}], **overrides)


def test_pvc_and_volume_paths_are_read_where_the_volume_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _volume_spec("pvc://models/tiny", dataset={"uri": "/data/sets/d.jsonl"})
    in_pods = locate_inputs(config(spec))
    assert in_pods["model"].path == "/mnt/kubepeft/volumes/models/tiny"
    assert in_pods["dataset"].path == "/data/sets/d.jsonl"
    # A local run names the folder standing for each claim.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model_dir)
    local = config(spec, volume_dirs={"models": str(tmp_path / "models"), "data": str(tmp_path / "data")})
    assert locate_inputs(local)["dataset"].path == f"{tmp_path}/data/sets/d.jsonl"
    assert fetch_base_model(local, tmp_path / "work") == tmp_path / "models" / "tiny"


def test_a_pvc_path_that_is_not_there_names_the_uri_and_the_folder(tmp_path: Path) -> None:
    spec = _volume_spec("pvc://models/absent")
    where = re.escape(str(tmp_path / "absent"))
    with pytest.raises(PermanentTrainerError, match=rf"model pvc://models/absent \(at {where}\): no such directory"):
        fetch_base_model(config(spec, volume_dirs={"models": str(tmp_path)}), tmp_path / "work")


def test_an_output_on_a_volume_is_written_where_the_volume_is(tmp_path: Path) -> None:
    spec = _volume_spec("/m", output={"uri": "pvc://models/runs"})
    assert config(spec).output.root == "/mnt/kubepeft/volumes/models/runs/tests/job"
    assert config(spec, volume_dirs={"models": str(tmp_path)}).output.root == f"{tmp_path}/runs/tests/job"
    # Reports and status name what is written there as the job does, wherever the claim is.
    for paths in (config(spec).output, config(spec, volume_dirs={"models": str(tmp_path)}).output):
        assert paths.public(paths.adapter) == "pvc://models/runs/tests/job/adapter"
        assert paths.located(paths.public(paths.merged)) == paths.merged
    plain = config(_volume_spec("/m", output={"uri": "/data/runs"})).output
    assert plain.uri is None and plain.public(plain.adapter) == plain.adapter == "/data/runs/tests/job/adapter"


def _bad_keys(folder: Path) -> str:
    folder.mkdir()
    (folder / "AWS_ACCESS_KEY_ID").write_text("wrong")
    (folder / "AWS_SECRET_ACCESS_KEY").write_text("wrong-secret")
    return str(folder)


def test_an_adapter_is_fetched_with_its_own_keys_not_the_outputs(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    from kubepeft.storage import StorageError, open_store

    store = open_store(f"s3://{s3_bucket}", endpoint=s3_server.endpoint, credentials_dir=s3_server.credentials_dir)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    store.upload_dir(adapter, f"s3://{s3_bucket}/adapters/a", metadata={"kind": "adapter"})
    spec = make_spec(
        f"s3://{s3_bucket}/models/none",
        adapters={"sources": [{"uri": f"s3://{s3_bucket}/adapters/a"}]},
        output={"uri": f"s3://{s3_bucket}/runs"},
    )
    # The output's folder holds keys the server refuses; the adapter's own folder holds good ones.
    folders = {"output": _bad_keys(tmp_path / "output-keys"), "adapter-0": str(s3_server.credentials_dir)}
    job = config(spec, credentials_dirs=folders, endpoint_override=s3_server.endpoint)
    fetched = fetch_adapters(job, tmp_path / "work")
    assert fetched == [tmp_path / "work" / "adapter-0"] and (fetched[0] / "adapter_config.json").is_file()
    # The model, with no folder of its own, uses the output's keys: refused, which shows they differ.
    with pytest.raises(StorageError):
        fetch_base_model(job, tmp_path / "work")
