"""The worker's and launcher's stages that are testable without a process group."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.export import exports_merged
from kubepeft_trainer.launcher import exporting_report
from kubepeft_trainer.methods.lora import Lora
from kubepeft_trainer.rank_files import TrainingResult, read_failures
from kubepeft_trainer.settings import TrainerSettings
from kubepeft_trainer.worker import RankJob, record_failure

from kubepeft.api.models import TrainingSpec
from kubepeft.contract import EXIT_PERMANENT, EXIT_RETRYABLE, build_trainer_config
from kubepeft.settings import SettingsError
from tests.fixtures.training import lora_job_spec


def spec(tmp_path: Path, **overrides: object) -> object:
    return lora_job_spec(tmp_path / "model", tmp_path / "data.jsonl", tmp_path / "out", **overrides)


def test_export_asks_the_methods_registry_whether_to_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    merging = spec(tmp_path)
    assert exports_merged(merging)
    assert not exports_merged(spec(tmp_path, output={"uri": str(tmp_path / "out"), "merge": False}))
    monkeypatch.setattr(Lora, "supports_merge", False)  # a method that cannot merge: no merged/ at all
    assert not exports_merged(merging)


def test_a_rank_job_needs_training_and_a_dataset(tmp_path: Path) -> None:
    settings = TrainerSettings.load({})
    config = build_trainer_config(spec(tmp_path), "ns", "job")
    job = RankJob.of(config, settings, tmp_path)
    assert job.training == config.spec.training and not job.deepspeed and not job.zero3
    merge_only = config.model_copy(update={"spec": config.spec.model_copy(update={"training": None})})
    with pytest.raises(PermanentTrainerError, match=r"spec\.training and spec\.dataset are required"):
        RankJob.of(merge_only, settings, tmp_path)


def test_a_rank_failure_records_its_class(tmp_path: Path) -> None:
    assert record_failure(tmp_path, 0, PermanentTrainerError("data.jsonl:3: bad")) == EXIT_PERMANENT
    assert record_failure(tmp_path, 1, SettingsError("KUBEPEFT_NUM_NODES: bad")) == EXIT_PERMANENT
    assert record_failure(tmp_path, 2, RuntimeError("gloo timeout")) == EXIT_RETRYABLE
    failures = read_failures(tmp_path)
    assert [(f.rank, f.exit_code, f.error) for f in failures] == [
        (0, EXIT_PERMANENT, "PermanentTrainerError"),
        (1, EXIT_PERMANENT, "SettingsError"),
        (2, EXIT_RETRYABLE, "RuntimeError"),
    ]
    assert failures[0].message == "data.jsonl:3: bad"


def test_the_exporting_report_comes_from_the_training_result() -> None:
    result = TrainingResult(
        total_steps=12,
        final_step=12,
        epoch=1.234567,
        resumed_from_step=5,
        eval_loss_before=2.0,
        eval_loss_after=1.0,
        loss_history=[(step, float(step)) for step in range(1, 13)],
        trainable_parameters=10,
        total_parameters=100,
        peak_memory_bytes=7,
    )
    fields = exporting_report(result, TrainingSpec(max_steps=12, log_every_steps=5))
    assert fields["progress"] == {
        "step": 12,
        "total_steps": 12,
        "epoch": 1.2346,
        "loss": 11.5,  # the last reporting interval: steps 11-12
        "eval_loss": 1.0,
        "eta_seconds": 0,
    }
    assert (fields["resumed_from_step"], fields["eval_loss_before"], fields["peak_memory_bytes"]) == (5, 2.0, 7)


def test_a_folder_without_an_adapter_is_a_permanent_error_naming_the_source(tmp_path: Path) -> None:
    from kubepeft_trainer.methods.base import adapter_peft_type

    with pytest.raises(PermanentTrainerError, match=r"adapters\.sources\[0\]: .* is not a PEFT adapter"):
        adapter_peft_type(tmp_path, "adapters.sources[0]")


class _Layer:
    def __init__(self, switch: bool | None) -> None:
        if switch is not None:
            self.support_avx512bf16_for_cpu = switch


class _Model:
    def __init__(self, *layers: _Layer) -> None:
        self.layers = layers

    def modules(self) -> tuple[_Layer, ...]:
        return self.layers


def test_the_cpu_repack_switch_off_for_good_or_for_a_block() -> None:
    from kubepeft_trainer.bnb_cpu import disable_cpu_inference_repack, no_cpu_weight_repacking

    on, off, plain = _Layer(True), _Layer(False), _Layer(None)
    with no_cpu_weight_repacking(_Model(on, off, plain)):
        assert not on.support_avx512bf16_for_cpu
    assert on.support_avx512bf16_for_cpu and not off.support_avx512bf16_for_cpu  # restored as found
    assert disable_cpu_inference_repack(_Model(on, off, plain)) == 2
    assert not on.support_avx512bf16_for_cpu and not hasattr(plain, "support_avx512bf16_for_cpu")
