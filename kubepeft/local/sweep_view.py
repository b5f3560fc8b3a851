"""What ``kubepeft run SWEEP.yaml`` shows: one live row per trial on a terminal, plain lines otherwise.

The rows come from the same trials table the sweep's status holds (and the operator writes), plus
the latest trainer report of each running trial for step, loss, throughput and ETA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus, SweepTrial
from kubepeft.contract import TrainerReport
from kubepeft.local.progress_view import format_eta, progress_line
from kubepeft.sweep.report import TABLE_HEADER, table_rows

LIVE_COLUMNS = ["trial", "parameters", "phase", "step", "loss", "eval loss", "tok/s", "ETA"]


def _params(trial: SweepTrial) -> str:
    return " ".join(f"{path}={text}" for path, text in trial.parameters.items())


def live_row(trial: SweepTrial, report: TrainerReport | None) -> list[str]:
    """Pure: one trial's live row."""
    progress = report.progress if report is not None else None
    step = f"{progress.step}/{progress.total_steps or '?'}" if progress else "-"
    loss = f"{progress.loss:.4f}" if progress and progress.loss is not None else "-"
    evaluation = trial.evaluations[-1].loss if trial.evaluations else None
    tokens = f"{progress.tokens_per_second:,.0f}" if progress and progress.tokens_per_second else "-"
    eta = format_eta(progress.eta_seconds) if progress and trial.phase == "Running" else "-"
    shown_eval = "-" if evaluation is None else f"{evaluation:.4f}"
    return [trial.name, _params(trial), trial.phase, step, loss, shown_eval, tokens, eta]


def comparison_table(name: str, spec: PeftSweepSpec, status: PeftSweepStatus) -> Table:
    table = Table(title=f"sweep {name}: {spec.objective.direction} {spec.objective.metric} (* best)")
    for column in TABLE_HEADER:
        table.add_column(column)
    for row in table_rows(spec, status):
        table.add_row(*row)
    return table


def comparison_lines(spec: PeftSweepSpec, status: PeftSweepStatus) -> list[str]:
    """Pure: the comparison table as aligned plain text (piped output)."""
    rows = [TABLE_HEADER, *table_rows(spec, status)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


@dataclass
class SweepView:
    console: Console
    name: str
    reports: dict[str, TrainerReport] = field(default_factory=dict)
    _live: Live | None = None
    _last: dict[str, str] = field(default_factory=dict)

    def __enter__(self) -> SweepView:
        if self.console.is_terminal:
            self._live = Live(Table(), console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()

    def report(self, trial: str, report: TrainerReport) -> None:
        self.reports[trial] = report

    def update(self, status: PeftSweepStatus) -> None:
        if self._live is not None:
            table = Table(title=f"sweep {self.name}: {status.phase} ({status.trial_count}/{status.planned_trials})")
            for column in LIVE_COLUMNS:
                table.add_column(column)
            for trial in status.trials:
                table.add_row(*live_row(trial, self.reports.get(trial.name)))
            self._live.update(table)
            return
        for trial in status.trials:
            report = self.reports.get(trial.name)
            detail = progress_line(report) if report is not None and trial.phase == "Running" else trial.phase
            if trial.phase != "Running" and trial.message:
                detail += f" -- {trial.message}"
            line = f"{trial.name} [{_params(trial)}] {detail}"
            if self._last.get(trial.name) != line:
                self.console.print(line, markup=False, highlight=False)
                self._last[trial.name] = line
