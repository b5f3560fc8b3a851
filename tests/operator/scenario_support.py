"""The operator against the test API server: trainer-like pods and the helpers the scenario tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubepeft_operator import naming
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import FakeKubelet, Pod, PodScript

from kubepeft.contract import REPORT_KEY, ReportArtifacts, ReportProgress, TrainerReport
from tests.fixtures.kube import wait_for
from tests.operator.support import NS, spec_dict

LABEL = f"{naming.LABEL_JOB_NAME}=tune"


def attempt_of(pod: Pod) -> int:
    return int(pod["metadata"]["labels"][naming.LABEL_ATTEMPT])


def rank_of(pod: Pod) -> int:
    return int(pod["metadata"]["labels"][naming.LABEL_RANK])


class TrainerKubelet(FakeKubelet):
    """Pods that behave like trainers: rank 0 reports progress, then the result; exit codes by script."""

    def __init__(self, url: str, script: Callable[[Pod], PodScript | None]) -> None:
        super().__init__(url, script)

    async def start_pod(self, pod: Pod) -> None:
        script = self.behavior(pod)
        if script is None:
            return
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        attempt = attempt_of(pod)
        await self.set_running(ns, name)
        if rank_of(pod) == 0:
            await self.report(
                pod,
                TrainerReport(
                    state="Training", attempt=attempt, progress=ReportProgress(step=5, total_steps=10, loss=2.0)
                ),
            )
        if script.exit_code is None:
            return
        await asyncio.sleep(script.run_for)
        if rank_of(pod) == 0:
            if script.exit_code == 0:
                final = TrainerReport(
                    state="Succeeded",
                    attempt=attempt,
                    progress=ReportProgress(step=10, total_steps=10, loss=0.5, eval_loss=0.7),
                    artifacts=ReportArtifacts(
                        adapter="s3://runs/out/team-a/tune/adapter", manifest="s3://runs/out/team-a/tune/manifest.json"
                    ),
                    eval_loss_before=2.5,
                )
                await self.report(pod, final)
                # As the real trainer: the final report is also the container's termination message.
                await self.set_terminated(ns, name, 0, final.to_json())
                return
            elif script.exit_code == 3:
                await self.report(
                    pod,
                    TrainerReport(state="Failed", attempt=attempt, failure_class="permanent", message=script.message),
                )
        await self.set_terminated(ns, name, script.exit_code, script.message)

    async def report(self, pod: Pod, report: TrainerReport) -> None:
        ns = pod["metadata"]["namespace"]
        cm = next(e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == "KUBEPEFT_PROGRESS_CONFIGMAP")
        await self.api_patch(f"/api/v1/namespaces/{ns}/configmaps/{cm}", {"data": {REPORT_KEY: report.to_json()}})


def status(server: ApiServer, name: str = "tune") -> dict[str, Any]:
    job = server.get("peftjobs", NS, name)
    return (job or {}).get("status") or {}


def wait_phase(server: ApiServer, phase: str, name: str = "tune", timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: status(server, name) if status(server, name).get("phase") == phase else None,
        timeout,
        what=f"phase {phase} (last status: {status(server, name)})",
    )


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def pods(server: ApiServer) -> list[Pod]:
    return server.list("pods", NS, LABEL)


def event_reasons(server: ApiServer) -> list[str]:
    return [e.get("reason", "") for e in server.list("events", NS)]


class TrialKubelet(FakeKubelet):
    """Pods that train: report progress (with trainable parameters), then succeed with an eval loss
    that falls with the trial index, so the last trial is the best. The sweep's report pod exits 0."""

    report_pods: list[Pod]

    def __init__(self, url: str, script: Callable[[Pod], PodScript | None]) -> None:
        super().__init__(url, script)
        self.report_pods = []

    async def start_pod(self, pod: Pod) -> None:
        script = self.behavior(pod)
        if script is None:
            return
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if pod["metadata"]["labels"].get(naming.LABEL_COMPONENT) == "sweep-report":
            self.report_pods.append(pod)
            await self.set_running(ns, name)
            await self.set_terminated(ns, name, 0, "")
            return
        job = pod["metadata"]["labels"][naming.LABEL_JOB_NAME]
        index = int(job.rsplit("-t", 1)[1])
        await self.set_running(ns, name)
        progress = ReportProgress(step=5, total_steps=10, loss=2.0, eval_loss=2.0 - 0.1 * index)
        await self.report(pod, TrainerReport(state="Training", progress=progress, trainable_parameters=1000 * 2**index))
        if script.exit_code is None:
            return  # runs until stopped
        await asyncio.sleep(script.run_for)
        if script.exit_code != 0:
            failed = TrainerReport(state="Failed", failure_class="permanent", message=script.message)
            await self.report(pod, failed)
            await self.set_terminated(ns, name, script.exit_code, script.message)
            return
        final = TrainerReport(
            state="Succeeded",
            progress=ReportProgress(step=10, total_steps=10, loss=1.0, eval_loss=1.0 - 0.1 * index),
            eval_loss_before=2.5,
            eval_loss_after=1.0 - 0.1 * index,
            trainable_parameters=1000 * 2**index,
            peak_memory_bytes=2**20,
            artifacts=ReportArtifacts(adapter=f"s3://runs/out/{ns}/{job}/adapter"),
        )
        await self.report(pod, final)
        await self.set_terminated(ns, name, 0, script.message)

    async def report(self, pod: Pod, report: TrainerReport) -> None:
        ns = pod["metadata"]["namespace"]
        cm = next(e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == "KUBEPEFT_PROGRESS_CONFIGMAP")
        await self.api_patch(f"/api/v1/namespaces/{ns}/configmaps/{cm}", {"data": {REPORT_KEY: report.to_json()}})


def peftsweep(name: str = "ranks", **spec: Any) -> dict[str, Any]:
    template = spec_dict(resources={"nodes": 1, "gpusPerNode": 0})
    body = {
        "template": template,
        "parameters": [{"path": "lora.r", "values": [2, 4, 8, 16]}],
        "maxParallel": 2,
        **spec,
    }
    return {"apiVersion": "kubepeft.dev/v1alpha1", "kind": "PeftSweep", "metadata": {"name": name}, "spec": body}
