"""Transfers through a proxy that fails ~10% of requests (500s and mid-response resets)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubepeft.storage import TransferTuning, sha256_file
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.s3 import make_tree, open_s3_store
from tests.storage.faulty_proxy import FaultyProxy

MB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_flaky_network_still_ends_with_a_complete_verified_set(
    s3_server: EmbeddedS3, s3_bucket: str, tmp_path: Path
) -> None:
    sizes = {f"shard-{i}.bin": 3 * MB + i for i in range(3)} | {f"small-{i}.json": 2000 + i for i in range(12)}
    source = make_tree(tmp_path / "src", sizes)
    # A short read timeout: a cut that the client did not notice fails fast instead of after 60 s.
    tuning = TransferTuning(
        multipart_threshold=1 * MB, part_size=1 * MB, concurrency=4, max_attempts=12, read_timeout=10
    )
    with FaultyProxy(s3_server.port or 0, fault_rate=0.1, seed=7) as proxy:
        store = open_s3_store(s3_server, f"s3://{s3_bucket}/flaky", endpoint=proxy.endpoint, tuning=tuning)
        store.upload_dir(source, "set", metadata={"kind": "adapter"})
        manifest = store.download_dir("set", tmp_path / "dst")
        store.verify("set")
    assert proxy.counts.errors_500 >= 3 and proxy.counts.resets >= 3, proxy.counts
    for entry in manifest.files:
        assert sha256_file(tmp_path / "dst" / entry.path) == sha256_file(source / entry.path)
    # Checked again directly against the server, bypassing the proxy.
    direct = open_s3_store(s3_server, f"s3://{s3_bucket}/flaky")
    assert direct.verify("set").files == manifest.files


UPLOADER = """
import sys
from kubepeft.storage import TransferTuning, open_store
store = open_store(sys.argv[1], endpoint=sys.argv[2], credentials_dir=sys.argv[3],
                   tuning=TransferTuning(multipart_threshold=64 << 20, part_size=64 << 20, concurrency=1))
store.upload_dir(sys.argv[4], "set", metadata={"kind": "checkpoint"})
"""


@pytest.mark.timeout(120)
def test_killed_upload_resumes_with_only_the_missing_files(
    s3_server: EmbeddedS3, s3_bucket: str, tmp_path: Path
) -> None:
    count = 24
    source = make_tree(tmp_path / "src", {f"file-{i:02d}.bin": 2 * MB for i in range(count)})
    root = f"s3://{s3_bucket}/killed"
    client = s3_server.client()

    def uploaded() -> int:
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="killed/set/")  # type: ignore[attr-defined]
        return len(listing.get("Contents", []))

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, root, s3_server.endpoint, str(s3_server.credentials_dir), str(source)],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while uploaded() < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the upload finished before it could be killed"

    # A PUT the server had fully received when the client died may still land: settle first.
    present, deadline = uploaded(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if (now := uploaded()) == present:
            break
        present = now
    assert 4 <= present < count
    store = open_s3_store(s3_server, root)
    assert not store.is_complete("set")  # killed before the manifest: not a result

    manifest = store.upload_dir(source, "set", metadata={"kind": "checkpoint"})
    assert manifest.transfer is not None
    assert manifest.transfer.skipped_files == present
    assert manifest.transfer.transferred_files == count - present
    assert manifest.transfer.transferred_bytes == (count - present) * 2 * MB
    store.verify("set")
