"""Kill and resume: a run SIGKILLed mid-training (launcher, accelerate and rank, like a lost pod)
and started again on a fresh work folder (a new pod) resumes by itself from the latest complete
checkpoint and ends with exactly the adapter of the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.training import (
    LORA_CHECKPOINT_EVERY,
    FinishedJob,
    lora_job_spec,
    run_train,
    start_train,
    write_trainer_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_kill_and_resume_matches_uninterrupted(
    tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, lora_job: FinishedJob
) -> None:
    from safetensors.torch import load_file

    # Same spec as the reference job (dropout on: the RNG states of the rank must be restored too).
    spec = lora_job_spec(tiny_model_dir, tiny_task_data, tmp_path / "out")
    config = write_trainer_config(tmp_path, spec, "lora")
    root = tmp_path / "out" / "tests" / "lora"
    first_commit = root / "checkpoints" / "step-00000010" / "manifest.json"

    first = start_train(config, tmp_path / "attempt1")
    first.wait_until(first_commit.exists, timeout=300)
    first.kill()
    reached = max(r["progress"].get("step", 0) for r in first.reports())
    assert 10 <= reached < 40, reached  # killed mid-training
    assert not (root / "manifest.json").exists()

    second = run_train(config, tmp_path / "attempt2", timeout=300)
    assert second.returncodes == [0], second.log()[-6000:]
    reports = second.reports()
    final = reports[-1]
    resumed = final["resumed_from_step"]
    assert resumed is not None and resumed % LORA_CHECKPOINT_EVERY == 0
    # At most one checkpoint interval of work is redone.
    assert reached - resumed <= LORA_CHECKPOINT_EVERY, (reached, resumed)
    steps = [r["progress"]["step"] for r in reports if r["state"] == "Training" and r["progress"].get("loss")]
    assert steps[0] == resumed + 1 and steps[-1] == 40

    ours = load_file(str(root / "adapter" / "adapter_model.safetensors"))
    reference = load_file(str(lora_job.root / "adapter" / "adapter_model.safetensors"))
    assert ours.keys() == reference.keys()
    diff = max((ours[k] - reference[k]).abs().max().item() for k in ours)
    print(f"killed at step {reached}, resumed from {resumed}: adapter max abs diff {diff:.2e}")
    assert diff <= 1e-6, diff
    assert final["eval_loss_before"] == pytest.approx(lora_job.run.reports()[-1]["eval_loss_before"], abs=1e-9)
