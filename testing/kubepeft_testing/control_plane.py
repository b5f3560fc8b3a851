"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager.

Follows the envtest convention: ``$KUBEBUILDER_ASSETS`` (default ``~/.cache/kubepeft/kube-bin``)
names a folder holding ``etcd``, ``kube-apiserver`` and, optionally, ``kube-controller-manager``.
Everything listens on loopback on free ports, under one working folder:

- etcd with its own data dir (a second etcd is never started over a running one's);
- kube-apiserver with a self-generated serving certificate (``--cert-dir``), a static admin token,
  ``Node,RBAC`` authorization, ServiceAccount token signing (TokenRequest works) and the default
  admission plugins (PodSecurity included);
- kube-controller-manager with the garbage collector, namespace, ServiceAccount and token
  controllers (no node, route or service-LB controllers: there are no nodes or clouds).

There is no scheduler and no kubelet: :mod:`tests.cluster.kubelet` plays the kubelet.

CLI (for benchmarks and people): ``python -m kubepeft_testing.control_plane up --dir D`` starts one,
prints the admin kubeconfig's path and waits until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kubepeft.net import free_port

ASSETS_ENV = "KUBEBUILDER_ASSETS"
DEFAULT_ASSETS = Path.home() / ".cache" / "kubepeft" / "kube-bin"
REQUIRED_BINARIES = ("etcd", "kube-apiserver")
HOW_TO_GET = (
    "no Kubernetes control-plane binaries (etcd, kube-apiserver, kube-controller-manager) in {where}: "
    "set KUBEBUILDER_ASSETS to a folder holding them (`export KUBEBUILDER_ASSETS=$(setup-envtest use -p path)`, "
    "or a Kubernetes release), "
    "or build them with ../shared/tools/build-kube-control-plane.sh"
)
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "kubepeft-admin"
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service"
START_TIMEOUT = 120.0


def assets_dir() -> Path:
    return Path(os.environ.get(ASSETS_ENV) or DEFAULT_ASSETS).expanduser()


def missing_assets(assets: Path | None = None) -> str | None:
    """None when the binaries are there, else the one line that says how to get them."""
    assets = assets or assets_dir()
    if all(os.access(assets / name, os.X_OK) for name in REQUIRED_BINARIES):
        return None
    return HOW_TO_GET.format(where=assets)


def _die_with_parent() -> None:
    """Child processes get SIGTERM if the test process dies (no stray servers after a crash)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _write_rsa_key(private: Path, public: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    private.chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> Path:
    """A token kubeconfig (CA = the API server's serving certificate)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubepeft-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "kubepeft-test", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class ControlPlane:
    """One control plane in ``workdir``. ``start()`` blocks until it serves; ``stop()`` tears it down."""

    workdir: Path
    assets: Path = field(default_factory=assets_dir)
    controller_manager: bool = True
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    etcd_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate (with its CA): what clients trust."""
        return self.workdir / "pki" / "apiserver.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            write_kubeconfig(self.admin_kubeconfig, self.server, self.ca_file, self.admin_token, ADMIN_USER)
            if self.controller_manager and os.access(self.assets / "kube-controller-manager", os.X_OK):
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        try:
            self._processes[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        finally:
            log.close()

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd"
        pid_file = self.workdir / "etcd.pid"
        if pid_file.exists() and _alive(int(pid_file.read_text() or 0)):
            # Two etcds over one data dir corrupt it: refuse instead.
            raise RuntimeError(f"an etcd (pid {pid_file.read_text()}) already runs over {data}")
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.assets / "etcd"),
                f"--data-dir={data}",
                "--name=default",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--log-level=warn",
            ],
        )
        pid_file.write_text(str(self._processes["etcd"].pid))

    def _start_apiserver(self) -> None:
        (self.workdir / "pki").mkdir(exist_ok=True)
        sa_key, sa_pub = self.workdir / "pki" / "sa.key", self.workdir / "pki" / "sa.pub"
        if not sa_key.exists():
            _write_rsa_key(sa_key, sa_pub)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n', encoding="utf-8")
        tokens.chmod(0o600)
        self._spawn(
            "kube-apiserver",
            [
                str(self.assets / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'pki'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                # On top of the defaults (PodSecurity included), as OpenShift does: setting
                # blockOwnerDeletion needs `update` on the owner's finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--allow-privileged=false",
                "--v=0",
            ],
        )

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.assets / "kube-controller-manager"),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=0",
            ],
        )

    # --- readiness ------------------------------------------------------------------------

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def _wait_ready(self) -> None:
        """/readyz can say ok while etcd is gone: /livez/etcd as well."""
        deadline = time.monotonic() + START_TIMEOUT
        pool = urllib3.PoolManager(cert_reqs="CERT_NONE", timeout=urllib3.Timeout(total=5), retries=False)
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # only while the cert is being made
        while True:
            self._check_alive()
            try:
                answers = [pool.request("GET", self.server + p, headers=headers) for p in ("/livez/etcd", "/readyz")]
                if all(answer.status == 200 for answer in answers) and self.ca_file.exists():
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"kube-apiserver not ready after {START_TIMEOUT:.0f} s; logs in {self.logs}")
            time.sleep(0.5)

    def is_running(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """Stop in reverse order (controller-manager, API server, etcd); SIGKILL what lingers."""
        started_etcd = "etcd" in self._processes
        for name in reversed(list(self._processes)):
            process = self._processes.pop(name)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        if started_etcd:  # never another instance's
            (self.workdir / "etcd.pid").unlink(missing_ok=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _up(workdir: Path) -> int:
    problem = missing_assets()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    plane = ControlPlane(workdir.resolve())
    stop = False

    def _on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        plane.start()
    except (RuntimeError, TimeoutError) as error:
        print(f"control plane did not start: {error}", file=sys.stderr)
        return 1
    try:
        print(plane.admin_kubeconfig, flush=True)
        print(f"export KUBECONFIG={plane.admin_kubeconfig}  # Ctrl-C stops the control plane", file=sys.stderr)
        while not stop:
            plane._check_alive()
            time.sleep(1)
    finally:
        plane.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubepeft_testing.control_plane", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a control plane, print its admin kubeconfig path, wait for Ctrl-C")
    up.add_argument("--dir", type=Path, required=True, help="working folder (etcd data, certificates, logs)")
    args = parser.parse_args(argv)
    return _up(args.dir)


if __name__ == "__main__":
    sys.exit(main())
