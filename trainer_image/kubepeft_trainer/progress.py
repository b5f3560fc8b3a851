"""Progress reporting: the trainer -> operator half of the contract.

Only global rank 0 (during training) and the node-0 launcher (before and after) report. A
:class:`Reporter` holds the current :class:`~kubepeft.contract.TrainerReport` and sends it to
every configured sink:

* file -- one JSON line appended to ``$KUBEPEFT_PROGRESS_FILE`` per report (local runs read it);
* ConfigMap -- ``data["report.json"]`` of ``$KUBEPEFT_PROGRESS_CONFIGMAP`` in
  ``$KUBEPEFT_NAMESPACE`` is patched through the Kubernetes API (in-cluster config, else
  ``$KUBECONFIG``), at most every ``min_interval`` seconds; final states always go out;
* termination message -- the final report is written to ``/dev/termination-log`` when writable.

Reporting never fails training: every sink error is logged as a warning and swallowed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kubepeft.contract import REPORT_KEY, TERMINATION_LOG, TrainerReport

if TYPE_CHECKING:
    from kubepeft_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

FINAL_STATES = ("Succeeded", "Failed")
DEFAULT_CONFIGMAP_INTERVAL_S = 5.0
# Kubernetes truncates termination messages at 4096 bytes; keep the JSON valid by shortening the message.
TERMINATION_LIMIT = 4096


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return str(timedelta(seconds=max(0, round(seconds))))


def progress_line(report: TrainerReport) -> str:
    """The human-readable line, e.g. ``step 20/60 loss 1.234 lr 2.0e-04 1234 tok/s eta 0:01:10``."""
    p = report.progress
    parts = [f"step {p.step}/{p.total_steps}"]
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if p.learning_rate is not None:
        parts.append(f"lr {p.learning_rate:.1e}")
    if p.tokens_per_second is not None:
        parts.append(f"{p.tokens_per_second:.0f} tok/s")
    parts.append(f"eta {format_eta(p.eta_seconds)}")
    if p.eval_loss is not None:
        parts.append(f"eval_loss {p.eval_loss:.4f}")
    return " ".join(parts)


def configmap_patch(report: TrainerReport) -> dict[str, Any]:
    """The merge patch that publishes ``report`` in the progress ConfigMap."""
    return {"data": {REPORT_KEY: report.to_json()}}


def termination_message(report: TrainerReport, limit: int = TERMINATION_LIMIT) -> str:
    """The report as a termination message within Kubernetes' limit (the message is shortened)."""
    text = report.to_json()
    message = report.message or ""
    while len(text.encode()) > limit and message:
        message = message[: max(0, len(message) - (len(text.encode()) - limit) - 3)]
        text = report.model_copy(update={"message": message + "..."}).to_json()
    return text


class Sink(Protocol):
    def send(self, report: TrainerReport, *, final: bool) -> None: ...


class FileSink:
    """Append one JSON line per report (``$KUBEPEFT_PROGRESS_FILE``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def send(self, report: TrainerReport, *, final: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(report.to_json() + "\n")


class ConfigMapSink:
    """Patch ``data["report.json"]`` of one ConfigMap, rate-limited; final reports always go out."""

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        min_interval: float = DEFAULT_CONFIGMAP_INTERVAL_S,
        patch: Callable[[str, str, dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.min_interval = min_interval
        self._patch = patch
        self._clock = clock
        self._last_sent: float | None = None
        self.sent = 0

    def _default_patch(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        from kubernetes import client, config  # imported lazily: only pods with a ConfigMap sink need it

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        client.CoreV1Api().patch_namespaced_config_map(name, namespace, body)

    def due(self, *, final: bool) -> bool:
        if final or self._last_sent is None:
            return True
        return self._clock() - self._last_sent >= self.min_interval

    def send(self, report: TrainerReport, *, final: bool) -> None:
        if not self.due(final=final):
            return
        self._last_sent = self._clock()
        (self._patch or self._default_patch)(self.name, self.namespace, configmap_patch(report))
        self.sent += 1


class TerminationSink:
    """Write the final report as the container's termination message, if the file is writable."""

    def __init__(self, path: str = TERMINATION_LOG) -> None:
        self.path = path

    def send(self, report: TrainerReport, *, final: bool) -> None:
        if not final:
            return
        directory = os.path.dirname(self.path) or "."
        if not (os.access(self.path, os.W_OK) or (not os.path.exists(self.path) and os.access(directory, os.W_OK))):
            return
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(termination_message(report))


def sinks_from_settings(settings: TrainerSettings, *, termination_log: str = TERMINATION_LOG) -> list[Sink]:
    """The sinks the settings ask for (a progress file, a ConfigMap) plus the termination message."""
    sinks: list[Sink] = []
    if settings.progress_file is not None:
        sinks.append(FileSink(str(settings.progress_file)))
    if settings.progress_configmap:
        sinks.append(ConfigMapSink(settings.progress_configmap, settings.namespace))
    # In pods /dev/termination-log exists; outside a container /dev is not writable and this is a no-op.
    if os.path.exists(termination_log):
        sinks.append(TerminationSink(termination_log))
    return sinks


class Reporter:
    """Holds the current report and publishes it; never raises."""

    def __init__(self, sinks: list[Sink], *, attempt: int = 0, echo: Callable[[str], None] | None = print) -> None:
        self.sinks = sinks
        self.report = TrainerReport(attempt=attempt)
        self.echo = echo

    @classmethod
    def from_settings(cls, settings: TrainerSettings, *, enabled: bool = True) -> Reporter:
        """The reporter of a process; ``enabled=False`` (every rank but 0) reports nowhere."""
        return cls(sinks_from_settings(settings) if enabled else [], attempt=settings.attempt)

    def update(self, **fields: Any) -> TrainerReport:
        """Set top-level report fields (``progress=...`` merges into the progress block)."""
        progress = fields.pop("progress", None)
        if progress:
            self.report.progress = self.report.progress.model_copy(update=progress)
        artifacts = fields.pop("artifacts", None)
        if artifacts:
            self.report.artifacts = self.report.artifacts.model_copy(update=artifacts)
        if fields:
            self.report = self.report.model_copy(update=fields)
        return self.report

    def publish(self, *, line: bool = False, **fields: Any) -> TrainerReport:
        report = self.update(**fields)
        report.time = utc_now()
        final = report.state in FINAL_STATES
        if line and self.echo:
            self.echo(progress_line(report))
        for sink in self.sinks:
            try:
                sink.send(report, final=final)
            except Exception as exc:  # a progress sink must never fail training
                log.warning("progress sink %s failed: %s", type(sink).__name__, exc)
        return report


def read_reports(path: str | os.PathLike[str]) -> list[TrainerReport]:
    """All reports of a progress file (what ``kubepeft run`` and the tests read)."""
    reports = []
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        if text.strip():
            reports.append(TrainerReport.model_validate(json.loads(text)))
    return reports
