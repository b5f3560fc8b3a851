"""The embedded server itself and the two storage CLI commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kubepeft.cli import main
from kubepeft.storage import Store, open_store
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.s3 import make_tree, open_s3_store

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_restart_with_same_data_dir_keeps_objects_and_credentials(tmp_path: Path) -> None:
    server = EmbeddedS3(tmp_path / "s3")
    with server:
        server.create_bucket("persist")
        store = open_s3_store(server, "s3://persist/job")
        store.upload_dir(make_tree(tmp_path / "src", {"a": 1000, "b/c": 6 * 1024 * 1024}), "set", metadata={"n": 1})
        secret = server.credentials.secret_access_key
    assert not server.running
    assert "start" in server.log_path.read_text()
    with server:
        assert server.credentials.secret_access_key == secret
        store = open_s3_store(server, "s3://persist/job")
        assert store.verify("set").metadata == {"n": 1}


def test_auth_is_enforced(s3_server: EmbeddedS3, s3_bucket: str) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    anonymous = boto3.client(
        "s3", endpoint_url=s3_server.endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    with pytest.raises(ClientError) as caught:
        anonymous.list_objects_v2(Bucket=s3_bucket)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert oct(os.stat(s3_server.credentials_dir / "AWS_SECRET_ACCESS_KEY").st_mode & 0o777) == "0o600"


def test_verify_command_exit_codes(s3_server: EmbeddedS3, s3_store: Store, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    s3_store.upload_dir(make_tree(tmp_path / "src", {"weights.bin": 4000}), "adapter", metadata={"kind": "adapter"})
    common = ["--endpoint", s3_server.endpoint, "--credentials-dir", str(s3_server.credentials_dir)]
    uri = s3_store.resolve("adapter")
    assert main(["verify", uri, *common]) == 0
    assert "1 files, 4000 bytes (adapter)" in capsys.readouterr().out

    s3_store.put_bytes("adapter/weights.bin", b"x" * 4000)
    assert main(["verify", uri, *common]) == 1
    assert "weights.bin: sha256" in capsys.readouterr().err

    s3_store.put_bytes("partial/x", b"1")
    assert main(["verify", s3_store.resolve("partial"), *common]) == 2

    local = open_store(str(tmp_path / "local"))
    local.upload_dir(tmp_path / "src", "set", metadata={})
    assert main(["verify", local.resolve("set")]) == 0


@pytest.mark.timeout(120)
def test_s3_server_command_prints_endpoint_but_never_the_secret(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kubepeft", "s3-server", "--data-dir", str(tmp_path / "s3"), "--bucket", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        info = dict(line.split(": ", 1) for line in lines if ": " in line)
        endpoint = info["endpoint"].strip()
        credentials_dir = tmp_path / "s3" / "credentials"
        store = open_store("s3://models/m", endpoint=endpoint, credentials_dir=str(credentials_dir))
        store.put_bytes("probe", b"ok")  # the bucket exists and the printed endpoint answers
        assert store.get_bytes("probe") == b"ok"
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    secret = (tmp_path / "s3" / "credentials" / "AWS_SECRET_ACCESS_KEY").read_text()
    assert secret not in "".join(lines) + out
