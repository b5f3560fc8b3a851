"""``kubepeft operator``: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import kopf
import kubernetes.client

from kubepeft_operator.handlers import build_registry, configure_kopf
from kubepeft_operator.kube import KubeApi, load_configuration
from kubepeft_operator.metrics import Metrics
from kubepeft_operator.reconciler import Reconciler
from kubepeft_operator.settings import OperatorSettings, SettingsError
from kubepeft_operator.sweep.api import SweepApi
from kubepeft_operator.sweep.handlers import MEMO_KEY
from kubepeft_operator.sweep.reconciler import SweepReconciler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")


def _event_poster(metrics: Metrics) -> Callable[[dict[str, Any], str, str, str], None]:
    def post(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Kubernetes Events through kopf's poster (one POST each, logged)."""
        try:
            kopf.event(cast(Any, body), type=type_, reason=reason, message=message)
            metrics.api_requests.labels("POST").inc()
        except LookupError:  # outside kopf's context (direct reconciler use): log only
            logging.getLogger("kubepeft.operator").info("%s %s: %s", type_, reason, message)

    return post


async def run_operator(
    settings: OperatorSettings,
    configuration: kubernetes.client.Configuration,
    *,
    metrics: Metrics | None = None,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | asyncio.Event | None = None,
    liveness: bool = True,
) -> None:
    """Run until ``stop_flag`` is set (or a signal arrives). Tests call this in their own thread."""
    metrics = metrics or Metrics()
    kube = KubeApi(
        configuration, connections=settings.api_connections, on_request=lambda m: metrics.api_requests.labels(m).inc()
    )
    events = _event_poster(metrics)
    reconciler = Reconciler(kube, settings, metrics, events=events)
    sweeps = SweepReconciler(SweepApi(kube), settings, events=events)
    try:
        await kopf.operator(
            registry=build_registry(configuration, settings),
            settings=configure_kopf(kopf.OperatorSettings(), settings),
            memo=kopf.Memo(reconciler=reconciler, **{MEMO_KEY: sweeps}),
            clusterwide=not settings.watch_namespaces,
            namespaces=list(settings.watch_namespaces),
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if liveness else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await kube.close()


def run(args: argparse.Namespace) -> int:
    try:
        settings = OperatorSettings.load()
    except SettingsError as exc:
        print(f"kubepeft operator: {exc}")
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configuration = load_configuration(args.kubeconfig)
    metrics = Metrics()
    if not args.no_metrics:
        metrics.serve(settings.metrics_port)
    asyncio.run(run_operator(settings, configuration, metrics=metrics))
    return 0
