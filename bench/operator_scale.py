"""Operator scale benchmark: 500 PeftJobs against the test API server, or a real one.

Measures, per job, the time from its create request to the moment every child (2 ConfigMaps,
ServiceAccount, Role, RoleBinding, Service, one pod per node) has appeared in a watch stream,
the operator's peak RSS, and the API requests the operator made per job (its own
``kubepeft_api_requests`` counter, watches excluded; against the test API server also counted
from the server's request log). The operator runs as a separate process (``kubepeft operator``)
so its RSS is its own, sampled every 50 ms with psutil. The baseline is the API server's own
create -> watch-event latency for a single object, measured in the same run; the ratio is the
operator's p99 divided by the baseline's p99.

    python bench/operator_scale.py [--jobs 500] [--nodes 2] [--rate 10 | --burst N] [--kubeconfig PATH]

With ``--kubeconfig`` the same measurement runs against that cluster's API server (the CRD from
``crds/`` is applied if missing; namespaces ``bench`` and ``baseline`` are used): for instance
one started by ``python -m kubepeft_testing.control_plane up``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

from kubepeft.net import free_port

REPO = Path(__file__).resolve().parents[1]

NS = "bench"
BASELINE_NS = "baseline"
JOB_LABEL = "kubepeft.dev/job-name"
CHILD_KINDS = ("configmaps", "serviceaccounts", "services", "pods")
RBAC_KINDS = ("roles", "rolebindings")
SECRET_DATA = {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}
JOBS_PATH = f"/apis/kubepeft.dev/v1alpha1/namespaces/{NS}/peftjobs"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def job_body(name: str, nodes: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubepeft.dev/v1alpha1",
        "kind": "PeftJob",
        "metadata": {"name": name},
        "spec": {
            "method": "lora",
            "model": {"uri": "s3://models/tiny", "credentialsSecretRef": {"name": "creds"}},
            "dataset": {"uri": "s3://data/train.jsonl"},
            "training": {"maxSteps": 10},
            "resources": {"nodes": nodes, "gpusPerNode": 0},
            "output": {"uri": "s3://runs/out", "credentialsSecretRef": {"name": "creds"}},
        },
    }


@dataclass
class Target:
    """Where the API server is and how to talk to it (the test server, or a kubeconfig's)."""

    url: str
    kubeconfig: Path
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | bool = False
    emulator: Any = None

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.ssl_context, limit=64)
        return aiohttp.ClientSession(self.url, headers=self.headers, connector=connector)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Target:
        import kubernetes.client
        import kubernetes.config

        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(path), client_configuration=config)
        headers = {}
        if token := config.get_api_key_with_prefix("authorization") or config.get_api_key_with_prefix("BearerToken"):
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        context: ssl.SSLContext | bool = False
        if config.host.startswith("https"):
            context = ssl.create_default_context(cafile=config.ssl_ca_cert) if config.verify_ssl else False
            if isinstance(context, ssl.SSLContext) and config.cert_file:
                context.load_cert_chain(config.cert_file, config.key_file)
        return cls(url=config.host, kubeconfig=path, headers=headers, ssl_context=context)


async def api(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
    async with http.request(method, path, json=body) as response:
        if response.status >= 300 and response.status not in ok:
            raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
        return await response.json() if response.content_type == "application/json" else None


async def prepare(target: Target, keep_existing: bool) -> None:
    """Namespaces, the Secret the jobs name, and (on a real server) the CRD, established."""
    async with target.session() as http:
        if target.emulator is None:
            crd = yaml.safe_load((REPO / "crds" / "kubepeft.dev_peftjobs.yaml").read_text())
            crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
            await api(http, "POST", crds, crd, ok=(409,))
            for _ in range(100):
                got = await api(http, "GET", f"{crds}/{crd['metadata']['name']}")
                conditions = (got.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                await asyncio.sleep(0.1)
            for ns in (NS, BASELINE_NS):
                await api(http, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}}, ok=(409,))
            if not keep_existing:
                async with http.delete(JOBS_PATH) as response:  # a rerun starts from no jobs
                    await response.read()
        secret = {"metadata": {"name": "creds"}, "data": SECRET_DATA}
        await api(http, "POST", f"/api/v1/namespaces/{NS}/secrets", secret, ok=(409,))


async def watch(
    http: aiohttp.ClientSession,
    path: str,
    seen: asyncio.Queue[tuple[float, dict[str, Any]]],
    ready: asyncio.Event,
    selector: str | None = None,
) -> None:
    params = {"watch": "true", "resourceVersion": "0"}
    if selector:
        params["labelSelector"] = selector
    async with http.get(path, params=params, timeout=aiohttp.ClientTimeout(total=None)) as response:
        ready.set()
        async for line in response.content:
            if line.strip():
                event = json.loads(line)
                if event["type"] == "ADDED":
                    seen.put_nowait((time.perf_counter(), event["object"]))


async def baseline(target: Target, samples: int) -> list[float]:
    """The API server alone: POST a ConfigMap, wait for its ADDED event on a watch."""
    latencies = []
    path = f"/api/v1/namespaces/{BASELINE_NS}/configmaps"
    async with target.session() as http:
        async with http.delete(path) as response:
            await response.read()
        seen: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        ready = asyncio.Event()
        task = asyncio.create_task(watch(http, path, seen, ready, "bench=baseline"))
        await ready.wait()
        for i in range(samples):
            started = time.perf_counter()
            body = {"metadata": {"name": f"b{i}", "labels": {"bench": "baseline"}}, "data": {"k": "v"}}
            await api(http, "POST", path, body)
            arrived, _obj = await seen.get()
            latencies.append(arrived - started)
        task.cancel()
    return latencies


def start_operator(kubeconfig: Path, max_workers: int, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")]),
        "KUBEPEFT_WATCH_NAMESPACES": NS,
        "KUBEPEFT_HEALTH_PORT": str(free_port()),
        "KUBEPEFT_METRICS_PORT": str(metrics_port),
        "KUBEPEFT_LOG_LEVEL": "WARNING",
        "KUBEPEFT_MAX_WORKERS": str(max_workers),
        "KUBEPEFT_RESYNC_SECONDS": "300",
    }
    command = [sys.executable, "-m", "kubepeft.cli", "operator", "--kubeconfig", str(kubeconfig)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def operator_settled(metrics_port: int, quiet: float = 2.0, limit: float = 180.0) -> None:
    """Wait until the operator has worked through what it found at start (jobs already present):
    its reconcile count stays put for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        found = re.search(r"^kubepeft_reconcile_seconds_count (\S+)$", text, re.M)
        count = float(found.group(1)) if found else 0.0
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.25)


def operator_requests(metrics_port: int) -> float:
    """The operator's own count of the requests it sent (``kubepeft_api_requests_total``)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(v) for v in re.findall(r"^kubepeft_api_requests_total\{[^}]*\} (\S+)$", text, re.M))


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)


async def run_jobs(
    target: Target, jobs: int, nodes: int, rate: float, timeout: float, prefix: str = "job"
) -> tuple[dict[str, float], float]:
    expected = 6 + nodes
    created_at: dict[str, float] = {}
    children: dict[str, set[str]] = {}
    complete: dict[str, float] = {}
    done = asyncio.Event()
    seen: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    async with target.session() as http:
        tasks, readies = [], []
        paths = [f"/api/v1/namespaces/{NS}/{plural}" for plural in CHILD_KINDS]
        paths += [f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/{plural}" for plural in RBAC_KINDS]
        for path in paths:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(http, path, seen, ready, JOB_LABEL)))
            readies.append(ready)
        for ready in readies:
            await ready.wait()

        async def collect() -> None:
            while len(complete) < jobs:
                arrived, obj = await seen.get()
                job = obj["metadata"]["labels"][JOB_LABEL]
                kinds = children.setdefault(job, set())
                kinds.add(f"{obj['kind']}/{obj['metadata']['name']}")
                if len(kinds) == expected and job not in complete and job in created_at:
                    complete[job] = arrived - created_at[job]
            done.set()

        async def submit(name: str) -> None:
            created_at[name] = time.perf_counter()
            await api(http, "POST", JOBS_PATH, job_body(name, nodes))

        collector = asyncio.create_task(collect())
        started = time.perf_counter()
        pending = []
        for i in range(jobs):
            pending.append(asyncio.create_task(submit(f"{prefix}-{i:04d}")))
            if rate > 0:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
        await asyncio.gather(*pending)
        try:
            await asyncio.wait_for(done.wait(), timeout=timeout)
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - started
        collector.cancel()
        for task in tasks:
            task.cancel()
    return complete, elapsed


def emulator_target(tmp: Path) -> Target:
    from kubepeft_testing.apiserver import ApiServer

    server = ApiServer(cel=False).start()  # schema checks only: cel-python would dominate the server's cost
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
    return Target(url=server.url, kubeconfig=kubeconfig, emulator=server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--burst", type=int, default=None, help="submit N jobs at once (same as --jobs N --rate 0)")
    parser.add_argument("--nodes", type=int, default=2, help="worker pods per job")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second; 0 = submit as one burst")
    parser.add_argument("--max-workers", type=int, default=0, help="KUBEPEFT_MAX_WORKERS (0 = kopf default)")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="a real cluster instead of the test API server")
    parser.add_argument("--baseline-samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for all children")
    parser.add_argument("--prefix", default="job", help="job name prefix (a second run beside the first: another one)")
    parser.add_argument(
        "--keep-existing", action="store_true", help="real server: keep the jobs of earlier runs (a burst among them)"
    )
    args = parser.parse_args()
    if args.burst is not None:
        args.jobs, args.rate = args.burst, 0.0

    with tempfile.TemporaryDirectory() as tmp:
        target = Target.from_kubeconfig(args.kubeconfig) if args.kubeconfig else emulator_target(Path(tmp))
        asyncio.run(prepare(target, args.keep_existing))
        base = asyncio.run(baseline(target, args.baseline_samples))
        metrics_port = free_port()
        operator = start_operator(target.kubeconfig, args.max_workers, metrics_port)
        sampler = RssSampler(operator.pid)
        sampler.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    requests_before = operator_requests(metrics_port)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(3.0)  # kopf has listed and started its watches
            operator_settled(metrics_port)
            idle_rss = sampler.process.memory_info().rss
            requests_before = operator_requests(metrics_port)
            audit_before = len(target.emulator.store.audit) if target.emulator else 0
            latencies, elapsed = asyncio.run(
                run_jobs(target, args.jobs, args.nodes, args.rate, args.timeout, args.prefix)
            )
            time.sleep(1.0)  # the last writes (status, events) land
            requests = operator_requests(metrics_port) - requests_before
        finally:
            sampler.stop_flag.set()
            operator.terminate()
            try:
                _out, err = operator.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
                _out, err = operator.communicate()
        audited = None
        if target.emulator is not None:
            log = target.emulator.store.audit[audit_before:]
            audited = sum(
                1 for agent, verb, *_ in log if agent.startswith(("kubepeft-operator", "kopf/")) and verb != "watch"
            )
            target.emulator.stop()

    values = [v * 1000 for v in latencies.values()]
    base_ms = [v * 1000 for v in base]
    if len(values) < args.jobs:
        print(err.decode()[-3000:])
        print(f"only {len(values)} of {args.jobs} jobs got all children")
        return 1
    p50, p99 = statistics.median(values), percentile(values, 99)
    base_p50, base_p99 = statistics.median(base_ms), percentile(base_ms, 99)
    server = "real API server" if args.kubeconfig else "test API server"
    print(f"{server}: baseline create->watch-event p50={base_p50:.2f}ms p99={base_p99:.2f}ms ({len(base_ms)} samples)")
    print(
        f"jobs={args.jobs} nodes={args.nodes} rate={'burst' if args.rate <= 0 else args.rate} "
        f"wall={elapsed:.1f}s throughput={args.jobs / elapsed:.1f} jobs/s"
    )
    print(
        f"create->all-children: p50={p50:.0f}ms p90={percentile(values, 90):.0f}ms p99={p99:.0f}ms "
        f"max={max(values):.0f}ms"
    )
    per_job = requests / args.jobs
    extra = f", {audited / args.jobs:.1f} per job in the server's request log" if audited is not None else ""
    print(
        f"operator RSS: idle={idle_rss / 2**20:.0f}MB peak={sampler.peak / 2**20:.0f}MB; "
        f"API requests: {requests:.0f} ({per_job:.1f} per job{extra})"
    )
    print(
        f"RESULT operator jobs={args.jobs} p50_ms={p50:.0f} p99_ms={p99:.0f} rss_mb={sampler.peak / 2**20:.0f} "
        f"requests_per_job={per_job:.1f} ratio={p99 / base_p99:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
