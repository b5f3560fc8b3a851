"""Lock down every port of the embedded SeaweedFS, not just its S3 port.

``weed mini`` opens master, volume, filer and admin HTTP ports and a gRPC port for each service,
all of which serve or accept objects without credentials by default: SigV4 guards only the S3
port. SeaweedFS's own ``security.toml`` closes them:

* gRPC (master, volume, filer, S3, admin, worker): mutual TLS with a CA generated per start, so a
  connection without a client certificate signed by it fails in the TLS handshake;
* HTTP (master, volume, filer, admin): HTTPS with client-certificate verification (the same CA),
  and every internal HTTP client presents the certificate (``[https.client]``);
* JWT signing for volume and filer reads and writes, as a second lock behind the TLS one;
* no volume UI, no directory metadata on the filer.

Keys, certificates and the file live in a private (0700) folder next to the S3 credentials and
are regenerated at every start: nothing that survives a restart depends on them.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SECURITY_FILE = "security.toml"
CA_CERT_FILE = "ca.crt"
NODE_CERT_FILE = "node.crt"
NODE_KEY_FILE = "node.key"
# security.toml sections: gRPC servers and the gRPC client each weed component dials with.
GRPC_SECTIONS = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq", "client")
HTTPS_SERVERS = ("master", "volume", "filer", "admin")
JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _private_write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def generate_tls(folder: Path, host: str) -> TlsFiles:
    """A fresh CA and one certificate (server and client use) for ``host``, signed by it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kubepeft embedded S3 CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = (
        _builder(_name("kubepeft embedded S3"), ca_name, node_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / CA_CERT_FILE, folder / NODE_CERT_FILE, folder / NODE_KEY_FILE)
    _private_write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _private_write(files.cert, node_cert.public_bytes(serialization.Encoding.PEM))
    _private_write(
        files.key,
        node_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return files


def _table(name: str, values: Mapping[str, str | int | bool]) -> list[str]:
    # json.dumps writes valid TOML basic strings, integers and booleans.
    return [f"[{name}]", *(f"{key} = {json.dumps(value)}" for key, value in values.items()), ""]


def security_toml(tls: TlsFiles, jwt_keys: dict[str, str], expires_after_seconds: int = 10) -> str:
    """Pure: the ``security.toml`` text for ``tls`` and one signing key per JWT section."""
    lines: list[str] = []
    for section in JWT_SECTIONS:
        lines += _table(section, {"key": jwt_keys[section], "expires_after_seconds": expires_after_seconds})
    lines += _table("access", {"ui": False})
    lines += _table("filer.expose_directory_metadata", {"enabled": False})
    lines += _table("grpc", {"ca": str(tls.ca_cert)})
    for component in GRPC_SECTIONS:
        lines += _table(f"grpc.{component}", {"cert": str(tls.cert), "key": str(tls.key)})
    pem = {"cert": str(tls.cert), "key": str(tls.key), "ca": str(tls.ca_cert)}
    lines += _table("https.client", {"enabled": True, **pem})
    for server in HTTPS_SERVERS:
        lines += _table(f"https.{server}", pem)  # with "ca": clients must present a certificate
    return "\n".join(lines)


def write_security_config(folder: Path, host: str) -> Path:
    """Generate keys and certificates into ``folder`` (created 0700) and write ``security.toml``;
    returns the folder, to pass as ``weed -config_dir``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tls = generate_tls(folder, host)
    jwt_keys = {section: secrets.token_hex(32) for section in JWT_SECTIONS}
    _private_write(folder / SECURITY_FILE, security_toml(tls, jwt_keys).encode())
    return folder
