"""Every port of the embedded SeaweedFS refuses a client without credentials.

The ports are discovered from the running process (not from our own flag list), so a port that a
new SeaweedFS release opens is probed too. Each gets plain HTTP reads and writes, a TLS handshake
without a client certificate and a raw HTTP/2 (gRPC) preface; only the S3 port speaks plain HTTP,
and it answers 403 to unsigned requests. Positive controls show that the probes reach live
services: with the server's client certificate the master answers, and the filer still wants a
JWT; authenticated S3 through boto3 works.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kubepeft.storage.seaweed import LOOPBACK, EmbeddedS3
from kubepeft.storage.seaweed_security import CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE

SECRET = b"model weights nobody else may read"
# HTTP/2 connection preface + an empty SETTINGS frame: what a gRPC client sends first.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_TYPE = 0x04
DENIED = (400, 401, 403, 405)  # 405: S3 refuses an unsigned POST on a bucket path before auth


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    with EmbeddedS3(tmp_path_factory.mktemp("locked-s3")) as s3:
        s3.create_bucket("private")
        s3.client().put_object(Bucket="private", Key="model/weights.bin", Body=SECRET)
        yield s3


def listening_ports(pid: int) -> list[int]:
    connections = psutil.Process(pid).net_connections(kind="inet")
    return sorted({c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN})


def plain_http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes] | None:
    """(status, body), or None when the server drops the connection instead of answering."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.HTTPException, TimeoutError):
        return None
    finally:
        connection.close()


def tls_without_client_cert(port: int) -> tuple[int, bytes] | None:
    """A GET over TLS presenting no certificate: None when the handshake or first read fails."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
    try:
        connection.request("GET", "/buckets/private/model/weights.bin")
        response = connection.getresponse()
        return response.status, response.read()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, TimeoutError):
        return None
    finally:
        connection.close()


def h2_answer(port: int) -> bytes:
    """The first bytes a server answers to a plaintext HTTP/2 preface (b"" when it closes)."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(H2_PREFACE)
        try:
            return sock.recv(64)
        except (ConnectionError, TimeoutError):
            return b""


def assert_refused(port: int, answer: tuple[int, bytes] | None, what: str) -> None:
    if answer is None:
        return
    status, body = answer
    assert status in DENIED, f"port {port}: {what} answered {status}: {body[:200]!r}"
    assert SECRET not in body


def test_every_port_refuses_clients_without_credentials(server: EmbeddedS3) -> None:
    assert server.process is not None and server.port is not None
    ports = listening_ports(server.process.pid)
    assert server.port in ports and len(ports) >= 8, ports  # master, volume, filer, S3, admin + gRPC
    for port in ports:
        probes = {
            "GET object via filer path": plain_http(port, "GET", "/buckets/private/model/weights.bin"),
            "GET volume assignment": plain_http(port, "GET", "/dir/assign"),
            "PUT object": plain_http(port, "PUT", "/buckets/private/model/weights.bin", b"overwritten"),
            "POST upload": plain_http(port, "POST", "/buckets/private/model/", b"evil"),
            "TLS without client certificate": tls_without_client_cert(port),
        }
        for what, answer in probes.items():
            assert_refused(port, answer, what)
        answer = h2_answer(port)
        assert not (len(answer) >= 9 and answer[3] == H2_SETTINGS_TYPE), f"port {port} speaks plaintext HTTP/2"
    # Nothing was overwritten, and the owner still reads and writes through S3.
    client = server.client()
    assert client.get_object(Bucket="private", Key="model/weights.bin")["Body"].read() == SECRET
    client.put_object(Bucket="private", Key="model/new.bin", Body=b"ok")
    assert client.get_object(Bucket="private", Key="model/new.bin")["Body"].read() == b"ok"


def _with_certificate(security_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(security_dir / CA_CERT_FILE))
    context.check_hostname = False
    context.load_cert_chain(security_dir / NODE_CERT_FILE, security_dir / NODE_KEY_FILE)
    return context


def test_probes_reach_live_services_that_want_credentials(server: EmbeddedS3) -> None:
    """The controls: the same HTTPS request WITH the server's certificate gets through the TLS
    lock (master answers; the filer then wants its JWT), so the refusals above are the locks."""
    context = _with_certificate(server.security_dir)
    answers = {}
    for flag in ("master.port", "filer.port"):
        connection = http.client.HTTPSConnection(LOOPBACK, server.ports[flag], timeout=10, context=context)
        path = "/dir/status" if flag == "master.port" else "/buckets/private/model/weights.bin"
        connection.request("GET", path)
        response = connection.getresponse()
        answers[flag] = (response.status, response.read())
        connection.close()
    assert answers["master.port"][0] == 200 and b"Topology" in answers["master.port"][1]
    assert answers["filer.port"][0] == 401 and SECRET not in answers["filer.port"][1]


def test_security_files_are_private(server: EmbeddedS3) -> None:
    assert oct(server.security_dir.stat().st_mode & 0o777) == "0o700"
    for path in server.security_dir.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
