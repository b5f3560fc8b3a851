"""Progress reporting: line format, sinks, ConfigMap payload and rate limiting, termination message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubepeft_trainer.progress import (
    ConfigMapSink,
    FileSink,
    Reporter,
    TerminationSink,
    configmap_patch,
    progress_line,
    read_reports,
    sinks_from_settings,
    termination_message,
)

from kubepeft.contract import REPORT_KEY, TrainerReport


def test_progress_line() -> None:
    report = TrainerReport(state="Training")
    report.progress = report.progress.model_copy(
        update={
            "step": 20,
            "total_steps": 60,
            "loss": 1.2345,
            "learning_rate": 2e-4,
            "tokens_per_second": 1234.4,
            "eta_seconds": 70,
        }
    )
    assert progress_line(report) == "step 20/60 loss 1.2345 lr 2.0e-04 1234 tok/s eta 0:01:10"


def test_file_sink_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "p" / "progress.jsonl"
    reporter = Reporter([FileSink(path)], attempt=2, echo=None)
    reporter.publish(state="Starting")
    reporter.publish(state="Training", progress={"step": 5, "total_steps": 10, "loss": 0.5})
    reporter.publish(state="Succeeded", artifacts={"adapter": "s3://b/a/adapter"})
    reports = read_reports(path)
    assert [r.state for r in reports] == ["Starting", "Training", "Succeeded"]
    assert reports[1].progress.step == 5 and reports[1].attempt == 2
    assert reports[2].progress.loss == 0.5  # progress carries over
    assert reports[2].artifacts.adapter == "s3://b/a/adapter"
    assert all(r.time for r in reports)


def test_configmap_payload_and_rate_limit() -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []
    now = [100.0]
    sink = ConfigMapSink(
        "job-progress", "ns", min_interval=5.0, patch=lambda n, ns, b: calls.append((n, ns, b)), clock=lambda: now[0]
    )
    reporter = Reporter([sink], echo=None)
    reporter.publish(state="Training", progress={"step": 1})
    now[0] += 1
    reporter.publish(state="Training", progress={"step": 2})  # too soon: dropped
    now[0] += 5
    reporter.publish(state="Training", progress={"step": 3})
    now[0] += 0.1
    reporter.publish(state="Succeeded")  # final: always sent
    assert [json.loads(b["data"][REPORT_KEY])["progress"]["step"] for _, _, b in calls] == [1, 3, 3]
    assert calls[0][:2] == ("job-progress", "ns")
    assert json.loads(calls[-1][2]["data"][REPORT_KEY])["state"] == "Succeeded"
    assert configmap_patch(TrainerReport()) == {"data": {REPORT_KEY: TrainerReport().to_json()}}


def test_sink_failures_never_raise(tmp_path: Path) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("API down")

    reporter = Reporter([ConfigMapSink("x", "ns", patch=broken), FileSink(tmp_path / "f.jsonl")], echo=None)
    reporter.publish(state="Failed", message="boom")
    assert read_reports(tmp_path / "f.jsonl")[0].message == "boom"


def test_termination_sink_only_final_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    path.write_text("")
    sink = TerminationSink(str(path))
    sink.send(TrainerReport(state="Training"), final=False)
    assert path.read_text() == ""
    long = TrainerReport(state="Failed", message="x" * 10000)
    sink.send(long, final=True)
    text = path.read_text()
    assert len(text.encode()) <= 4096
    assert json.loads(text)["state"] == "Failed"
    assert json.loads(termination_message(TrainerReport(state="Succeeded")))["state"] == "Succeeded"


def test_sinks_from_settings(tmp_path: Path) -> None:
    from kubepeft_trainer.settings import TrainerSettings

    env = {
        "KUBEPEFT_PROGRESS_FILE": str(tmp_path / "p.jsonl"),
        "KUBEPEFT_PROGRESS_CONFIGMAP": "cm",
        "KUBEPEFT_NAMESPACE": "team",
    }
    sinks = sinks_from_settings(TrainerSettings.load(env), termination_log=str(tmp_path / "absent"))
    assert [type(s).__name__ for s in sinks] == ["FileSink", "ConfigMapSink"]
    assert isinstance(sinks[1], ConfigMapSink) and sinks[1].namespace == "team"
