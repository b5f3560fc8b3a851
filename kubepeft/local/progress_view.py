"""Follow the trainer's progress file and show it: a rich progress bar on a terminal, plain lines
otherwise (CI logs, tests).

The trainer appends one :class:`~kubepeft.contract.TrainerReport` JSON document per line to
``$KUBEPEFT_PROGRESS_FILE`` -- the same reports it patches into the progress ConfigMap on a
cluster -- so the local view shows exactly what ``kubectl get peftjob`` would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kubepeft.contract import TrainerReport


class ReportTail:
    """Reads complete new lines from a growing JSONL file; a half-written last line waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._pending = b""

    def read_new(self) -> list[TrainerReport]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [report for line in lines if (report := parse_report(line)) is not None]


def parse_report(line: bytes | str) -> TrainerReport | None:
    """One report from a line; None for blank or unparseable lines (never fatal for the view)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if not text.strip():
        return None
    try:
        return TrainerReport.model_validate_json(text)
    except ValidationError:
        return None


def format_eta(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}:{secs:02d}"


def progress_fields(report: TrainerReport) -> dict[str, str]:
    """Pure: the texts of the view's columns for one report."""
    progress = report.progress
    return {
        "state": report.state,
        "loss": "-" if progress.loss is None else f"{progress.loss:.4f}",
        "eval_loss": "-" if progress.eval_loss is None else f"{progress.eval_loss:.4f}",
        "tokens_per_second": "-" if progress.tokens_per_second is None else f"{progress.tokens_per_second:,.0f}",
        "eta": format_eta(progress.eta_seconds),
    }


def progress_line(report: TrainerReport) -> str:
    """Pure: one plain-text line for a report (non-terminal output)."""
    fields = progress_fields(report)
    progress = report.progress
    total = progress.total_steps or "?"
    if report.state != "Training":
        line = f"[{report.state}] step {progress.step}/{total}"
        if report.resumed_from_step is not None:
            line += f" (resumed from step {report.resumed_from_step})"
        return line + (f" -- {report.message}" if report.message else "")
    line = (
        f"[{fields['state']}] step {progress.step}/{total} loss {fields['loss']} "
        f"tokens/s {fields['tokens_per_second']} eta {fields['eta']}"
    )
    if progress.eval_loss is not None:
        line += f" eval_loss {fields['eval_loss']}"
    if report.resumed_from_step is not None:
        line += f" (resumed from step {report.resumed_from_step})"
    return line


@dataclass
class ProgressView:
    """Shows reports as they arrive; keeps the latest one."""

    console: Console
    latest: TrainerReport | None = None
    last_loss: float | None = None
    """The latest training loss seen (final reports may not repeat it)."""
    _progress: Progress | None = None
    _task: TaskID | None = None
    _last_line: str = ""

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def __enter__(self) -> ProgressView:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[state]:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("eval {task.fields[eval_loss]}"),
                TextColumn("{task.fields[tokens_per_second]} tok/s"),
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=None, state="Starting", loss="-", eval_loss="-", tokens_per_second="-", eta="-"
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, reports: list[TrainerReport]) -> None:
        for report in reports:
            self.latest = report
            if report.progress.loss is not None:
                self.last_loss = report.progress.loss
            if self._progress is not None and self._task is not None:
                fields: dict[str, object] = dict(progress_fields(report))
                total = report.progress.total_steps or None
                self._progress.update(self._task, completed=report.progress.step, total=total, **fields)  # type: ignore[arg-type]
            else:
                line = progress_line(report)
                if line != self._last_line:
                    self.console.print(line, markup=False, highlight=False)
                    self._last_line = line
