"""``kubepeft operator``: run the kopf operator with the settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
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


def _kopf_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Kubernetes Events through kopf's poster (batched, logged)."""
    try:
        kopf.event(cast(Any, body), type=type_, reason=reason, message=message)
    except LookupError:  # outside kopf's context (direct reconciler use): log only
        logging.getLogger("kubepeft.operator").info("%s %s: %s", type_, reason, message)


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
    kube = KubeApi(configuration, threads=settings.api_threads)
    reconciler = Reconciler(kube, settings, metrics, events=_kopf_event)
    sweeps = SweepApi(configuration, threads=settings.api_threads)
    try:
        await kopf.operator(
            registry=build_registry(configuration, settings),
            settings=configure_kopf(kopf.OperatorSettings(), settings),
            memo=kopf.Memo(reconciler=reconciler, **{MEMO_KEY: SweepReconciler(sweeps, settings, events=_kopf_event)}),
            clusterwide=not settings.watch_namespaces,
            namespaces=list(settings.watch_namespaces),
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if liveness else None,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        kube.close()
        sweeps.close()


def run(args: argparse.Namespace) -> int:
    try:
        settings = OperatorSettings.from_env()
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
