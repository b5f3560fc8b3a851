"""A kubelet that runs every worker pod's container as a real local process.

It extends :class:`kubepeft_testing.kubelet.FakeKubelet` (which watches pods and writes their
status): for each schedulable pod it builds a "sandbox" folder, materialises the pod's volumes
from the API, resolves the container's environment, starts the container's ``command`` + ``args``
as a process in its own process group, reports ``Running``, and when the process exits reports
``Succeeded``/``Failed`` with the exit code and a termination message. Deleting the pod stops
the process (SIGTERM to its group, the grace period, then SIGKILL), as a kubelet does.

What it emulates, and how (there is no container runtime, so no mount namespace):

* volumes -- ``configMap`` and ``secret``/``projected`` (secret sources) are written as files
  from the API objects (a missing optional Secret gives an empty folder; a missing required
  object keeps the pod Pending until it appears, like ContainerCreating); ``emptyDir`` is a
  fresh folder. Each ``volumeMount.mountPath`` maps to its folder: env values and the string
  values of mounted JSON files that start with a mount path are rewritten to the local folder
  (that is what makes ``/etc/kubepeft/config.json`` and the credential folders it names work).
* environment -- ``value``, ``valueFrom.fieldRef`` (metadata.name/namespace/uid, labels,
  annotations, spec.nodeName, spec.serviceAccountName, status.podIP) and
  ``secretKeyRef``/``configMapKeyRef``. The pod does not inherit the test's environment: it gets
  PATH (this interpreter's bin folder first, standing in for the image), ``KUBECONFIG`` (standing
  in for the in-cluster service account) and the ``extra_env`` the test passes.
* cluster DNS -- the rendezvous address ``<job>-0.<svc>.<ns>.svc`` becomes ``127.0.0.1`` and the
  port a free local port chosen once per job and attempt (so all nodes of an attempt meet and a
  new attempt never trips over the old one's sockets).
* termination message -- ``/dev/termination-log`` cannot be mounted, so the container gets
  ``KUBEPEFT_PROGRESS_FILE`` pointing into its sandbox; the last final report there becomes the
  message, formatted by the trainer's own ``termination_message``. Otherwise, on a non-zero exit,
  ``FallbackToLogsOnError``: the last 80 lines / 2 KiB of the container's log.

Not emulated: resource limits (no cgroups: nothing is OOM-killed), image pulls, probes, restarts
within a pod (pods run with ``restartPolicy: Never``), graceful pod deletion in the API (the
object is gone at once; the process still gets its grace period), RBAC (the trainer's patch of
the progress ConfigMap is not checked against its Role).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubepeft.net import free_port
from kubepeft_testing.kubelet import FakeKubelet, Pod, _key

ENV_MASTER_ADDR = "KUBEPEFT_MASTER_ADDR"
ENV_MASTER_PORT = "KUBEPEFT_MASTER_PORT"
ENV_ATTEMPT = "KUBEPEFT_ATTEMPT"
ENV_PROGRESS_FILE = "KUBEPEFT_PROGRESS_FILE"
LOG_FALLBACK_LINES = 80
LOG_FALLBACK_BYTES = 2048
MAX_GRACE_SECONDS = 15.0
VOLUME_WAIT_SECONDS = 60.0


def is_cluster_dns(host: str) -> bool:
    return host.endswith(".svc") or ".svc." in host


def rewrite_path(value: str, mounts: dict[str, Path]) -> str:
    """Pure: ``value`` with its longest matching mount path replaced by the local folder."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(mounts[mount_path]) + value[len(mount_path.rstrip("/")) :]
    return value


def rewrite_json_paths(document: Any, mounts: dict[str, Path]) -> Any:
    """Pure: every string value of a JSON document passed through :func:`rewrite_path`."""
    if isinstance(document, str):
        return rewrite_path(document, mounts)
    if isinstance(document, list):
        return [rewrite_json_paths(item, mounts) for item in document]
    if isinstance(document, dict):
        return {key: rewrite_json_paths(value, mounts) for key, value in document.items()}
    return document


def field_ref(pod: Pod, path: str) -> str:
    """Pure: the downward-API value of ``fieldRef.fieldPath``."""
    metadata = pod.get("metadata", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", "process-kubelet"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(metadata.get(source, {}).get(path[len(prefix) + 2 : -2], ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


def log_fallback(log_path: Path) -> str:
    """FallbackToLogsOnError: the log's last 80 lines, at most 2 KiB."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-LOG_FALLBACK_LINES:]
    except OSError:
        return ""
    return "\n".join(lines).encode()[-LOG_FALLBACK_BYTES:].decode(errors="replace")


def termination_from_reports(report_file: Path) -> str:
    """The last final trainer report in the file, as the trainer's TerminationSink would write it."""
    from kubepeft_trainer.progress import termination_message

    from kubepeft.contract import TrainerReport

    try:
        lines = report_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            report = TrainerReport.model_validate_json(line)
        except ValueError:
            continue
        if report.state in ("Succeeded", "Failed"):
            return str(termination_message(report))
    return ""


@dataclass
class PodProcess:
    namespace: str
    name: str
    sandbox: Path
    process: subprocess.Popen[bytes]
    grace_seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def log_path(self) -> Path:
        return self.sandbox / "container.log"

    @property
    def report_file(self) -> Path:
        return self.sandbox / "termination.jsonl"

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


class ProcessKubelet(FakeKubelet):
    """``ProcessKubelet(api.url, root=tmp, kubeconfig=path, extra_env={...})``; a context manager."""

    def __init__(
        self,
        server_url: str,
        *,
        root: Path,
        kubeconfig: Path,
        extra_env: dict[str, str] | None = None,
        label_selector: str = "",
    ) -> None:
        super().__init__(server_url, label_selector=label_selector)
        self.root = root
        self.kubeconfig = kubeconfig
        self.extra_env = dict(extra_env or {})
        self.processes: dict[tuple[str, str], PodProcess] = {}
        self.started_pods: list[tuple[str, str]] = []
        """Every pod started, in order (a pod started twice would show up twice)."""
        self.exits: dict[tuple[str, str], int] = {}
        self._ports: dict[tuple[str, str, str], int] = {}

    # --- API reads ------------------------------------------------------------------------------

    async def _get(self, path: str) -> dict[str, Any] | None:
        assert self._session is not None
        async with self._session.get(f"{self.url}{path}") as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
            return data

    async def _object(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, Any] | None:
        """A ConfigMap or Secret; waits for a required one (the pod stays Pending meanwhile)."""
        deadline = time.monotonic() + VOLUME_WAIT_SECONDS
        while True:
            found = await self._get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
            if found is not None or optional:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} {namespace}/{name} never appeared")
            await asyncio.sleep(0.2)

    @staticmethod
    def _data(obj: dict[str, Any] | None, kind: str) -> dict[str, bytes]:
        if obj is None:
            return {}
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} | {
                k: v.encode() for k, v in (obj.get("stringData") or {}).items()
            }
        return {k: v.encode() for k, v in (obj.get("data") or {}).items()} | {
            k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()
        }

    # --- volumes and environment ------------------------------------------------------------------

    async def _materialize(self, namespace: str, volume: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sources: list[tuple[str, dict[str, Any]]] = []
        if "configMap" in volume:
            sources.append(("configmaps", volume["configMap"]))
        if "secret" in volume:
            sources.append(("secrets", {**volume["secret"], "name": volume["secret"].get("secretName")}))
        for source in (volume.get("projected") or {}).get("sources", []):
            for key, kind in (("secret", "secrets"), ("configMap", "configmaps")):
                if key in source:
                    sources.append((kind, source[key]))
        for kind, ref in sources:
            obj = await self._object(kind, namespace, ref["name"], bool(ref.get("optional")))
            data = self._data(obj, kind)
            items = ref.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise RuntimeError(f"{kind} {namespace}/{ref['name']} has no key {item['key']!r}")
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[item["key"]])
                target.chmod(0o600 if kind == "secrets" else 0o644)

    async def _env(self, pod: Pod, container: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for entry in container.get("env") or []:
            name = entry["name"]
            if "value" in entry:
                env[name] = str(entry["value"])
                continue
            source = entry.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
            else:
                for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                    if key in source:
                        ref = source[key]
                        obj = await self._object(kind, namespace, ref["name"], bool(ref.get("optional")))
                        value = self._data(obj, kind).get(ref["key"])
                        if value is not None:
                            env[name] = value.decode()
        env = {name: rewrite_path(value, mounts) for name, value in env.items()}
        # Cluster DNS: rank 0's Service name -> loopback, one free port per job and attempt.
        if is_cluster_dns(env.get(ENV_MASTER_ADDR, "")):
            gang = (namespace, env[ENV_MASTER_ADDR], env.get(ENV_ATTEMPT, ""))
            if gang not in self._ports:
                self._ports[gang] = free_port()
            env[ENV_MASTER_ADDR] = "127.0.0.1"
            env[ENV_MASTER_PORT] = str(self._ports[gang])
        return env

    # --- the pod lifecycle ----------------------------------------------------------------------

    def _sandbox(self, pod: Pod) -> Path:
        namespace, name = _key(pod)
        sandbox = self.root / namespace / f"{name}-{pod['metadata'].get('uid', '')[:8]}"
        shutil.rmtree(sandbox, ignore_errors=True)
        sandbox.mkdir(parents=True)
        return sandbox

    async def start_pod(self, pod: Pod) -> None:
        namespace, name = _key(pod)
        spec = pod["spec"]
        container = spec["containers"][0]
        sandbox = self._sandbox(pod)
        folders: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            folders[volume["name"]] = sandbox / "volumes" / volume["name"]
            await self._materialize(namespace, volume, folders[volume["name"]])
        mounts = {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts") or []}
        for folder in mounts.values():
            for path in folder.rglob("*.json"):
                path.write_text(json.dumps(rewrite_json_paths(json.loads(path.read_text()), mounts), indent=2))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8",
            "KUBECONFIG": str(self.kubeconfig),
            **self.extra_env,
            **await self._env(pod, container, mounts),
            ENV_PROGRESS_FILE: str(sandbox / "termination.jsonl"),
        }
        command = [*container.get("command", []), *container.get("args", [])]
        executable = shutil.which(command[0], path=env["PATH"]) or command[0]
        log = (sandbox / "container.log").open("wb")
        try:
            process = subprocess.Popen(
                [executable, *command[1:]],
                env=env,
                cwd=sandbox,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        grace = min(float(spec.get("terminationGracePeriodSeconds", 30)), MAX_GRACE_SECONDS)
        running = PodProcess(namespace, name, sandbox, process, grace)
        self.processes[(namespace, name)] = running
        self.started_pods.append((namespace, name))
        await self.set_running(namespace, name)
        code = await asyncio.to_thread(process.wait)
        exit_code = 128 - code if code < 0 else code
        self.exits[(namespace, name)] = exit_code
        message = termination_from_reports(running.report_file)
        if not message and exit_code != 0:
            message = log_fallback(running.log_path)
        await self.set_terminated(namespace, name, exit_code, message)

    async def stop_pod(self, pod: Pod) -> None:
        running = self.processes.pop(_key(pod), None)
        if running is None:
            return
        await asyncio.to_thread(self._stop_process, running)

    @staticmethod
    def _stop_process(running: PodProcess) -> None:
        if running.process.poll() is not None:
            return  # exited (and reaped): its group id may already belong to someone else
        running.signal_group(signal.SIGTERM)
        try:
            running.process.wait(timeout=running.grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        running.signal_group(signal.SIGKILL)  # ranks outliving the launcher die with the pod
        running.process.wait()

    # --- test controls (any thread) -------------------------------------------------------------

    def start(self) -> ProcessKubelet:
        super().start()
        return self

    def __enter__(self) -> ProcessKubelet:
        return self.start()

    def kill(self, namespace: str, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the pod's whole process group (a lost node: launcher and ranks die)."""
        self.processes[(namespace, name)].signal_group(sig)

    def stop(self) -> None:
        super().stop()
        for running in list(self.processes.values()):
            self._stop_process(running)
        self.processes.clear()
