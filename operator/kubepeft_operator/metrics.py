"""Prometheus metrics (own registry: several operators can live in one test process)."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = ("Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("kubepeft_jobs", "PeftJobs this operator knows, by phase", ["phase"], registry=self.registry)
        self.reconcile_seconds = Histogram(
            "kubepeft_reconcile_seconds",
            "Time to observe, decide and act for one PeftJob",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.reconcile_errors = Counter(
            "kubepeft_reconcile_errors", "Reconciles that failed and were retried", registry=self.registry
        )
        self.attempts = Counter("kubepeft_attempts", "Worker attempts started", registry=self.registry)
        self.restarts = Counter(
            "kubepeft_restarts", "Attempts started after a retryable worker failure", registry=self.registry
        )
        self.api_requests = Counter(
            "kubepeft_api_requests",
            "Requests the operator sent to the API server (watches excluded), by HTTP method",
            ["method"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._tally: Tally[str] = Tally()
        for phase in PHASES:
            self.jobs.labels(phase).set(0)

    def set_phase(self, key: tuple[str, str], phase: str | None) -> None:
        previous = self._phases.pop(key, None) if phase is None else self._phases.get(key)
        if previous == phase:
            return
        if phase is not None:
            self._phases[key] = phase
        for name, delta in ((previous, -1), (phase, 1)):
            if name is not None:
                self._tally[name] += delta
                if name in PHASES:
                    self.jobs.labels(name).set(self._tally[name])

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
