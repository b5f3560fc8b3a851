"""Following the trainer's progress file."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from kubepeft.contract import ReportProgress, TrainerReport
from kubepeft.local.progress_view import ProgressView, ReportTail, format_eta, parse_report, progress_line


def _report(step: int, **kwargs: object) -> TrainerReport:
    return TrainerReport(
        state="Training",
        progress=ReportProgress(
            step=step, total_steps=60, loss=1.5 - step / 100, tokens_per_second=1234.5, eta_seconds=75
        ),
        **kwargs,  # type: ignore[arg-type]
    )


def test_tail_reads_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    tail = ReportTail(path)
    assert tail.read_new() == []  # not there yet
    first, second = _report(5).to_json(), _report(10).to_json()
    path.write_text(first + "\n" + second[:20])
    assert [r.progress.step for r in tail.read_new()] == [5]
    with path.open("a") as handle:
        handle.write(second[20:] + "\nnot json\n\n")
    assert [r.progress.step for r in tail.read_new()] == [10]  # garbage lines are skipped
    assert tail.read_new() == []


def test_parse_report_rejects_garbage() -> None:
    assert parse_report(b"") is None
    assert parse_report('{"state": "Nope"}') is None
    assert parse_report(_report(1).to_json()).progress.step == 1  # type: ignore[union-attr]


def test_progress_line_and_eta() -> None:
    assert format_eta(None) == "-"
    assert format_eta(75) == "1:15"
    assert format_eta(3 * 3600 + 120) == "3h02m"
    line = progress_line(_report(20, resumed_from_step=20))
    assert line.startswith("[Training] step 20/60 loss 1.3000 tokens/s 1,234 eta 1:15")
    assert "resumed from step 20" in line
    failed = TrainerReport(state="Failed", message="data.jsonl line 3: not JSON")
    assert "data.jsonl line 3: not JSON" in progress_line(failed)


def test_view_prints_plain_lines_off_terminal() -> None:
    out = io.StringIO()
    with ProgressView(Console(file=out, force_terminal=False, width=200)) as view:
        view.update([_report(5), _report(5), _report(10)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # a repeated report is not printed twice
    assert view.latest is not None and view.latest.progress.step == 10


def test_view_renders_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    with ProgressView(Console(file=out, force_terminal=True, width=160)) as view:
        view.update([_report(30)])
    assert "30/60" in out.getvalue()
    assert "1,234 tok/s" in out.getvalue()


def test_terminal_bar_shows_the_latest_eval_loss() -> None:
    out = io.StringIO()
    report = _report(40)
    report.progress.eval_loss = 0.4321
    with ProgressView(Console(file=out, force_terminal=True, width=200)) as view:
        view.update([report])
    assert "eval 0.4321" in out.getvalue() and "40/60" in out.getvalue()
