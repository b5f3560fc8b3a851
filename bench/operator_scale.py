"""Operator scale benchmark: 500 PeftJobs against the test API server.

Measures, per job, the time from its create request to the moment every child (2 ConfigMaps,
ServiceAccount, Role, RoleBinding, Service, one pod per node) has appeared in a watch stream,
and the operator's peak RSS. The operator runs as a separate process (``kubepeft operator``)
so its RSS is its own, sampled every 50 ms with psutil. The baseline is the API server's own
create -> watch-event latency for a single object, measured in the same run; the ratio is the
operator's p99 divided by the baseline's p99.

    python bench/operator_scale.py [--jobs 500] [--nodes 2] [--rate 0 (burst)] [--max-workers 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.harness.apiserver import ApiServer  # noqa: E402

NS = "bench"
JOB_LABEL = "kubepeft.dev/job-name"
CHILD_KINDS = ("configmaps", "serviceaccounts", "services", "pods")
RBAC_KINDS = ("roles", "rolebindings")
SECRET_DATA = {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


async def baseline(server: ApiServer, samples: int) -> list[float]:
    """The API server alone: POST a ConfigMap, wait for its ADDED event on a watch."""
    latencies = []
    async with aiohttp.ClientSession(server.url) as http:
        seen: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        ready = asyncio.Event()
        task = asyncio.create_task(watch(http, "/api/v1/namespaces/baseline/configmaps", seen, ready))
        await ready.wait()
        for i in range(samples):
            started = time.perf_counter()
            body = {"metadata": {"name": f"b{i}"}, "data": {"k": "v"}}
            async with http.post("/api/v1/namespaces/baseline/configmaps", json=body) as response:
                assert response.status == 201
            arrived, _obj = await seen.get()
            latencies.append(arrived - started)
        task.cancel()
    return latencies


def start_operator(kubeconfig: Path, max_workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")]),
        "KUBEPEFT_WATCH_NAMESPACES": NS,
        "KUBEPEFT_HEALTH_PORT": str(free_port()),
        "KUBEPEFT_LOG_LEVEL": "WARNING",
        "KUBEPEFT_MAX_WORKERS": str(max_workers),
        "KUBEPEFT_RESYNC_SECONDS": "300",
    }
    command = [sys.executable, "-m", "kubepeft.cli", "operator", "--kubeconfig", str(kubeconfig), "--no-metrics"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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
    server: ApiServer, jobs: int, nodes: int, rate: float, timeout: float
) -> tuple[dict[str, float], float]:
    expected = 6 + nodes
    created_at: dict[str, float] = {}
    children: dict[str, set[str]] = {}
    complete: dict[str, float] = {}
    done = asyncio.Event()
    seen: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    async with aiohttp.ClientSession(server.url) as http:
        tasks, readies = [], []
        for plural in CHILD_KINDS:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(http, f"/api/v1/namespaces/{NS}/{plural}", seen, ready, JOB_LABEL)))
            readies.append(ready)
        for plural in RBAC_KINDS:
            ready = asyncio.Event()
            path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/{plural}"
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
                if len(kinds) == expected and job not in complete:
                    complete[job] = arrived - created_at[job]
            done.set()

        collector = asyncio.create_task(collect())
        started = time.perf_counter()
        for i in range(jobs):
            name = f"job-{i:04d}"
            created_at[name] = time.perf_counter()
            async with http.post(
                f"/apis/kubepeft.dev/v1alpha1/namespaces/{NS}/peftjobs", json=job_body(name, nodes)
            ) as r:
                assert r.status == 201, await r.text()
            if rate > 0:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
        await asyncio.wait_for(done.wait(), timeout=timeout)
        elapsed = time.perf_counter() - started
        collector.cancel()
        for task in tasks:
            task.cancel()
    return complete, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=2, help="worker pods per job")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second; 0 = submit as one burst")
    parser.add_argument("--max-workers", type=int, default=0, help="KUBEPEFT_MAX_WORKERS (0 = kopf default)")
    parser.add_argument("--baseline-samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for all children")
    args = parser.parse_args()

    server = ApiServer().start()
    server.create("secrets", NS, {"metadata": {"name": "creds"}, "data": SECRET_DATA})
    base = asyncio.run(baseline(server, args.baseline_samples))
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
        operator = start_operator(kubeconfig, args.max_workers)
        sampler = RssSampler(operator.pid)
        sampler.start()
        try:
            time.sleep(0.5)
            deadline = time.monotonic() + 60
            while server.store.requests.get("GET", 0) < 10 and time.monotonic() < deadline:
                time.sleep(0.2)  # kopf has scanned the API and started its watches
            time.sleep(1.0)
            idle_rss = sampler.process.memory_info().rss
            requests_before = dict(server.store.requests)
            latencies, elapsed = asyncio.run(run_jobs(server, args.jobs, args.nodes, args.rate, args.timeout))
        finally:
            sampler.stop_flag.set()
            operator.terminate()
            try:
                _out, err = operator.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
                _out, err = operator.communicate()
        server.stop()

    values = [v * 1000 for v in latencies.values()]
    base_ms = [v * 1000 for v in base]
    requests = {k: v - requests_before.get(k, 0) for k, v in server.store.requests.items()}
    if len(values) < args.jobs:
        print(err.decode()[-3000:])
        print(f"only {len(values)} of {args.jobs} jobs got all children")
        return 1
    p50, p99 = statistics.median(values), percentile(values, 99)
    base_p50, base_p99 = statistics.median(base_ms), percentile(base_ms, 99)
    print(f"baseline create->watch-event: p50={base_p50:.2f}ms p99={base_p99:.2f}ms ({len(base_ms)} samples)")
    print(
        f"jobs={args.jobs} nodes={args.nodes} rate={'burst' if args.rate <= 0 else args.rate} "
        f"wall={elapsed:.1f}s throughput={args.jobs / elapsed:.1f} jobs/s"
    )
    print(
        f"create->all-children: p50={p50:.0f}ms p90={percentile(values, 90):.0f}ms p99={p99:.0f}ms "
        f"max={max(values):.0f}ms"
    )
    print(
        f"operator RSS: idle={idle_rss / 2**20:.0f}MB peak={sampler.peak / 2**20:.0f}MB; "
        f"API requests during the run: {requests}"
    )
    print(
        f"RESULT operator jobs={args.jobs} p50_ms={p50:.0f} p99_ms={p99:.0f} rss_mb={sampler.peak / 2**20:.0f} "
        f"ratio={p99 / base_p99:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
