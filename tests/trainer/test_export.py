"""The export pipeline without training: manifests, job manifest last, idempotent re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubepeft_trainer import export
from kubepeft_trainer.rank_files import TrainingResult

from kubepeft.contract import build_trainer_config
from kubepeft.storage import open_store, sha256_file
from tests.fixtures.training import lora_job_spec

RESULT = TrainingResult(
    final_step=4,
    total_steps=4,
    epoch=0.5,
    eval_loss_before=2.0,
    eval_loss_after=1.5,
    loss_history=[(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.8)],
    eval_history=[],
    tokens_seen=400,
)


def _staged(tmp_path: Path, *, merge: bool) -> tuple[Any, Path]:
    spec = lora_job_spec(
        tmp_path / "model",
        tmp_path / "data.jsonl",
        tmp_path / "out",
        output={"uri": str(tmp_path / "out"), "merge": merge},
    )
    config = build_trainer_config(spec, "ns", "job")
    export_dir = tmp_path / "work" / "export"
    adapter = export_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    return config, export_dir


def test_export_writes_every_set_and_the_job_manifest_last(tmp_path: Path) -> None:
    config, export_dir = _staged(tmp_path, merge=False)
    store = open_store(config.output.root)
    artifacts = export.export_training(store, config, export_dir, None, RESULT)
    root = Path(config.output.root)
    assert artifacts == {
        "adapter": config.output.adapter,
        "loss_curve": config.output.child("report/loss_curve.png"),
        "manifest": config.output.manifest,
    }
    job = store.verify(config.output.root)
    for entry in job.files:
        assert sha256_file(root / entry.path) == entry.sha256
    assert {e.path for e in job.files} == {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "report/metrics.json",
        "report/loss_curve.png",
    }
    assert job.metadata["kind"] == "job" and job.metadata["sets"] == ["adapter", "report"]
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["eval_loss_after"] == 1.5 and metrics["steps"] == 4


def test_export_rerun_skips_what_is_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, export_dir = _staged(tmp_path, merge=True)
    store = open_store(config.output.root)
    calls: list[Path] = []

    def fake_merge(base: Path, adapter: Path, out: Path, spec: Any) -> Path:
        calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"m" * 100)
        return out

    import kubepeft_trainer.merge as merge_module

    monkeypatch.setattr(merge_module, "merge_adapter_into_base", fake_merge)
    export.export_training(store, config, export_dir, tmp_path / "base", RESULT)
    assert len(calls) == 1
    # A crash after the merged upload: the re-run uploads nothing again and does not merge again.
    (Path(config.output.root) / "manifest.json").unlink()
    export.export_training(store, config, export_dir, tmp_path / "base", RESULT)
    assert len(calls) == 1
    assert store.read_manifest(config.output.root) is not None
    assert "merged/model.safetensors" in {e.path for e in store.verify(config.output.root).files}
    again = store.upload_dir(export_dir / "adapter", config.output.adapter, metadata={})
    assert again.transfer is not None and again.transfer.transferred_files == 0


def test_adapter_config_of_a_later_attempt_is_not_uploaded_again(tmp_path: Path) -> None:
    """peft writes target_modules in per-process hash order and the node's download folder as
    the base model: the exported config must not change with either."""
    config, export_dir = _staged(tmp_path, merge=False)
    store = open_store(config.output.root)
    adapter = export_dir / "adapter"

    def attempt(node_folder: str, modules: list[str]) -> Any:
        raw = {"peft_type": "LORA", "base_model_name_or_path": node_folder, "target_modules": modules}
        (adapter / "adapter_config.json").write_text(json.dumps(raw))
        return export.export_adapter(store, config, adapter)

    attempt(str(tmp_path / "node-a" / "inputs" / "model"), ["q_proj", "v_proj"])
    second = attempt(str(tmp_path / "node-b" / "inputs" / "model"), ["v_proj", "q_proj"])
    assert second.transfer is not None and second.transfer.transferred_files == 0
    stored = json.loads((Path(config.output.adapter) / "adapter_config.json").read_text())
    assert stored["base_model_name_or_path"] == str(tmp_path / "model")  # the job's model.uri
    assert stored["target_modules"] == ["q_proj", "v_proj"]
