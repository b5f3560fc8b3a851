"""Failures are reported where they happen, and unfinished uploads do not linger.

A missing bucket is "bucket does not exist" (not "no manifest: the upload never completed"), a
read-only output fails a write-and-delete preflight, and multipart uploads that a killed process
or a failed transfer left behind are aborted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import IncompleteError, PermanentStorageError, RetryableStorageError, Store, open_store
from kubepeft.storage.manifest import PART_SUFFIX
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.s3 import make_tree, open_s3_store


def _pending_uploads(server: EmbeddedS3, bucket: str, prefix: str = "") -> list[str]:
    answer = server.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def _leave_multipart_upload(server: EmbeddedS3, bucket: str, key: str) -> None:
    """What a process SIGKILLed mid-transfer leaves: an upload with a part and no completion."""
    client = server.client()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)


def test_missing_bucket_is_named_as_such_not_as_an_incomplete_upload(s3_server: EmbeddedS3) -> None:
    store = open_s3_store(s3_server, "s3://kp-no-such-bucket/jobs/ns/job")
    for action in (lambda: store.verify("adapter"), lambda: store.read_manifest("adapter")):
        with pytest.raises(PermanentStorageError, match="bucket 'kp-no-such-bucket' does not exist") as caught:
            action()
        assert caught.value.code == "NoSuchBucket" and not isinstance(caught.value, IncompleteError)
    with pytest.raises(PermanentStorageError, match=r"is not writable: .*NoSuchBucket") as caught:
        store.check_writable()
    assert "s3://kp-no-such-bucket/jobs/ns/job" in str(caught.value)


def test_an_existing_bucket_without_the_object_is_still_incomplete(s3_store: Store) -> None:
    with pytest.raises(IncompleteError, match="never completed"):
        s3_store.verify("adapter")


def test_read_only_output_fails_the_preflight_and_leaves_nothing(s3_server: EmbeddedS3, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/jobs/ns/job"
    readonly = open_store(root, endpoint=s3_server.endpoint, credentials_dir=s3_server.readonly_credentials_dir)
    with pytest.raises(PermanentStorageError, match=f"output {root} is not writable") as caught:
        readonly.check_writable()
    assert caught.value.code == "AccessDenied"
    writer = open_s3_store(s3_server, root)
    writer.check_writable()  # the owner passes, and the probe is gone afterwards
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    writer.put_bytes("probe", b"1")
    assert readonly.get_bytes("probe") == b"1"  # the read-only keys do read


def test_preflight_aborts_what_a_killed_process_left(s3_server: EmbeddedS3, s3_bucket: str) -> None:
    _leave_multipart_upload(s3_server, s3_bucket, "jobs/ns/job/checkpoints/step-00000010/nodes/node-000/big")
    _leave_multipart_upload(s3_server, s3_bucket, "jobs/ns/other/adapter/big")
    store = open_s3_store(s3_server, f"s3://{s3_bucket}/jobs/ns/job")
    assert store.abort_incomplete_uploads() == 1
    assert _pending_uploads(s3_server, s3_bucket) == ["jobs/ns/other/adapter/big"]  # another job's: untouched


def test_failed_upload_aborts_its_multipart_uploads(
    s3_server: EmbeddedS3, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_s3_store(s3_server, f"s3://{s3_bucket}/jobs/ns/job")
    source = make_tree(tmp_path / "src", {"weights.bin": 2000})

    def dies_mid_transfer(items: Any) -> None:
        # The connection drops after the first part, and takes the library's own abort with it.
        _leave_multipart_upload(s3_server, s3_bucket, "jobs/ns/job/adapter/weights.bin")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(store, "_put_files", dies_mid_transfer)
    with pytest.raises(RetryableStorageError):
        store.upload_dir(source, "adapter", metadata={})
    assert _pending_uploads(s3_server, s3_bucket, "jobs/ns/job/") == []


def test_local_store_discards_temporary_files_of_killed_writes(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "out"))
    leftover = tmp_path / "out" / "adapter" / f".weights.bin.a1b2{PART_SUFFIX}"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    store.put_bytes("adapter/kept.json", b"{}")
    assert store.abort_incomplete_uploads() == 1
    assert not leftover.exists() and (tmp_path / "out" / "adapter" / "kept.json").exists()
    store.check_writable()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["adapter", "kept.json"]
