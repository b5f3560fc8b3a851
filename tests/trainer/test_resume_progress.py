"""The first report of a resumed attempt carries the checkpoint's last losses."""

from __future__ import annotations

from kubepeft_trainer.checkpoints import TrainerState
from kubepeft_trainer.progress import Reporter, progress_line


def test_first_report_after_resume_shows_the_last_eval_loss() -> None:
    saved = TrainerState(
        step=20,
        total_steps=40,
        epoch=1.5,
        eval_loss_before=1.3,
        loss_history=[(19, 0.52), (20, 0.48)],
        eval_history=[(10, 0.9), (20, 0.7)],
    )
    restored = TrainerState.from_json(saved.to_json())  # what the next attempt reads back
    reporter = Reporter([], echo=None)
    report = reporter.publish(state="Training", resumed_from_step=20, progress=restored.progress())
    assert report.progress.eval_loss == 0.7
    assert (report.progress.step, report.progress.total_steps) == (20, 40)
    assert progress_line(report).endswith("eval_loss 0.7000")


def test_fresh_state_reports_no_losses() -> None:
    progress = TrainerState(total_steps=40).progress()
    assert progress["eval_loss"] is None and progress["step"] == 0
