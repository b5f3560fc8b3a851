"""What a finished local run prints: where the results are and how training went (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from kubepeft.contract import TrainerConfig, TrainerReport


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    report: TrainerReport | None
    interrupted: bool = False
    log_hint: str | None = None
    final_loss: float | None = None


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_lines(config: TrainerConfig, report: TrainerReport, final_loss: float | None = None) -> list[str]:
    """The success summary: artifact locations, eval loss before/after, final loss (the report's,
    else ``final_loss``: the last training loss reported)."""
    output = config.output
    # Reports name an output on a claim as pvc://...; this machine's folder is what a user opens.
    artifacts = report.artifacts.model_copy(
        update={k: output.located(v) for k, v in report.artifacts.model_dump().items() if v is not None}
    )
    rows = [
        ("job", f"{config.job.namespace}/{config.job.name}"),
        ("adapter", artifacts.adapter or output.adapter),
        ("merged model", artifacts.merged or ("-" if not config.spec.output.merge else output.merged)),
        ("manifest", artifacts.manifest or output.manifest),
        ("loss curve", artifacts.loss_curve or "-"),
        ("steps", f"{report.progress.step}/{report.progress.total_steps}"),
        ("final loss", _loss(report.progress.loss if report.progress.loss is not None else final_loss)),
        ("eval loss", f"{_loss(report.eval_loss_before)} before -> {_loss(report.eval_loss_after)} after"),
    ]
    if report.resumed_from_step is not None:
        rows.append(("resumed", f"from the checkpoint at step {report.resumed_from_step}"))
    if output.endpoint:
        rows.append(("endpoint", output.endpoint))
    width = max(len(key) for key, _ in rows)
    return ["Succeeded"] + [f"  {key:<{width}}  {value}" for key, value in rows]


def failure_lines(config: TrainerConfig, outcome: RunOutcome) -> list[str]:
    """The failure summary: the trainer's classification and message, and what to do next."""
    report = outcome.report
    kind = {3: "permanent"}.get(outcome.exit_code, "retryable")
    if report is not None and report.failure_class:
        kind = report.failure_class
    lines = [f"Failed ({kind}, exit code {outcome.exit_code})"]
    if report is not None and report.message:
        lines.append(f"  {report.message}")
    if kind == "retryable":
        checkpoints = config.output.checkpoints
        lines.append(f"  Run the same command again to resume from the latest checkpoint under {checkpoints}")
    else:
        lines.append("  Retrying as is cannot help: fix it (see above) and run again.")
    if outcome.log_hint:
        lines.append(f"  Logs: {outcome.log_hint}")
    return lines


def interrupted_lines(config: TrainerConfig, command: str) -> list[str]:
    return [
        "Interrupted: the node processes were stopped.",
        f"  Checkpoints stay under {config.output.checkpoints}",
        f"  Resume from the latest one with: {command}",
    ]
