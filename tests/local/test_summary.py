"""The end-of-run texts."""

from __future__ import annotations

from kubepeft.api.models import PeftJobSpec
from kubepeft.contract import ReportArtifacts, ReportProgress, TrainerReport, build_trainer_config
from kubepeft.local.summary import RunOutcome, failure_lines, interrupted_lines, summary_lines

SPEC = PeftJobSpec.model_validate(
    {
        "method": "lora",
        "model": {"uri": "/m"},
        "dataset": {"uri": "/d.jsonl"},
        "training": {"maxSteps": 10},
        "output": {"uri": "s3://bucket/runs", "merge": True},
    }
)
CONFIG = build_trainer_config(SPEC, "team", "job", endpoint_override="http://127.0.0.1:9000")
ROOT = "s3://bucket/runs/team/job"


def test_summary_names_every_artifact_and_the_losses() -> None:
    report = TrainerReport(
        state="Succeeded",
        progress=ReportProgress(step=10, total_steps=10),
        artifacts=ReportArtifacts(manifest=f"{ROOT}/manifest.json", loss_curve=f"{ROOT}/report/loss_curve.png"),
        eval_loss_before=2.5,
        eval_loss_after=0.75,
        resumed_from_step=4,
    )
    text = "\n".join(summary_lines(CONFIG, report, final_loss=0.5))
    assert f"adapter       {ROOT}/adapter" in text
    assert f"merged model  {ROOT}/merged" in text
    assert f"manifest      {ROOT}/manifest.json" in text
    assert "loss_curve.png" in text
    assert "final loss    0.5000" in text  # the last training loss when the final report has none
    assert "eval loss     2.5000 before -> 0.7500 after" in text
    assert "from the checkpoint at step 4" in text
    assert "http://127.0.0.1:9000" in text


def test_failure_and_interrupt_texts() -> None:
    permanent = TrainerReport(state="Failed", failure_class="permanent", message="d.jsonl line 3: not JSON")
    lines = failure_lines(CONFIG, RunOutcome(3, permanent, log_hint="/wd/node0.log"))
    assert lines[0] == "Failed (permanent, exit code 3)"
    assert "d.jsonl line 3: not JSON" in lines[1] and "fix it" in lines[2] and "/wd/node0.log" in lines[3]
    retryable = failure_lines(CONFIG, RunOutcome(1, None))
    assert retryable[0] == "Failed (retryable, exit code 1)" and f"{ROOT}/checkpoints" in retryable[1]
    assert "kubepeft run job.yaml" in interrupted_lines(CONFIG, "kubepeft run job.yaml")[-1]
