"""Error classification and secret hygiene, against the real server where the error is real."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kubepeft.net import free_ports
from kubepeft.storage import (
    NotFoundError,
    PermanentStorageError,
    RetryableStorageError,
    TransferTuning,
    open_store,
)
from kubepeft.storage.errors import classify
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.s3 import make_tree

FAST_FAIL = TransferTuning(max_attempts=2, connect_timeout=1, read_timeout=2)


def _wrong_credentials(tmp_path: Path, server: EmbeddedS3, *, good_access_key: bool) -> tuple[Path, str, str]:
    folder = tmp_path / "creds"
    folder.mkdir()
    access = server.credentials.access_key_id if good_access_key else "KPWRONGACCESSKEY0001"
    secret = "wrong-secret-" + "s" * 27
    (folder / "AWS_ACCESS_KEY_ID").write_text(access)
    (folder / "AWS_SECRET_ACCESS_KEY").write_text(secret)
    return folder, access, secret


@pytest.mark.parametrize("good_access_key", [True, False], ids=["bad-secret", "unknown-key"])
def test_wrong_credentials_are_permanent_and_never_leak(
    s3_server: EmbeddedS3, s3_bucket: str, tmp_path: Path, good_access_key: bool
) -> None:
    creds, access, secret = _wrong_credentials(tmp_path, s3_server, good_access_key=good_access_key)
    store = open_store(
        f"s3://{s3_bucket}/job", endpoint=s3_server.endpoint, credentials_dir=str(creds), tuning=FAST_FAIL
    )
    source = make_tree(tmp_path / "src", {"a": 10})
    with pytest.raises(PermanentStorageError) as caught:
        store.upload_dir(source, "set", metadata={})
    error = caught.value
    assert not error.retryable
    assert error.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
    text = str(error) + repr(error) + repr(error.__cause__) + repr(error.__context__)
    assert secret not in text and access not in text
    assert s3_server.credentials.secret_access_key not in text


def test_missing_bucket_is_permanent(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    store = open_store(
        "s3://no-such-bucket-kp/job", endpoint=s3_server.endpoint, credentials_dir=str(s3_server.credentials_dir)
    )
    with pytest.raises(PermanentStorageError, match="NoSuchBucket") as caught:
        store.put_bytes("x", b"1")
    assert caught.value.code == "NoSuchBucket" and not isinstance(caught.value, NotFoundError)


def test_unreachable_endpoint_is_retryable(s3_server: EmbeddedS3) -> None:
    (closed_port,) = free_ports(1)  # nothing listens there
    store = open_store(
        "s3://bucket/job",
        endpoint=f"http://127.0.0.1:{closed_port}",
        credentials_dir=str(s3_server.credentials_dir),
        tuning=FAST_FAIL,
    )
    with pytest.raises(RetryableStorageError) as caught:
        store.get_bytes("x")
    assert caught.value.retryable
    assert s3_server.credentials.secret_access_key not in str(caught.value)


def test_missing_credentials_folder_names_the_file_not_a_value(tmp_path: Path) -> None:
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("AKIAEXAMPLE")
    with pytest.raises(PermanentStorageError, match="AWS_SECRET_ACCESS_KEY"):
        open_store("s3://bucket/x", endpoint="http://127.0.0.1:1", credentials_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (503, "SlowDown", True),
        (500, "InternalError", True),
        (429, "TooManyRequests", True),
        (400, "RequestTimeout", True),
        (403, "AccessDenied", False),
        (404, "NoSuchBucket", False),
        (400, "InvalidArgument", False),
    ],
)
def test_classification_of_s3_error_codes(status: int, code: str, retryable: bool) -> None:
    # A server message quoting the request must come out scrubbed.
    response = {
        "Error": {"Code": code, "Message": "request by AKIASECRET123 with sig s3cr3tvalue"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = classify(
        ClientError(response, "PutObject"),  # type: ignore[arg-type]
        action="upload",
        uri="s3://b/k",
        secrets=["AKIASECRET123", "s3cr3tvalue"],
    )
    assert error.retryable is retryable
    assert "AKIASECRET123" not in str(error) and "s3cr3tvalue" not in str(error)
    assert f"{code} (HTTP {status})" in str(error)


def test_transfer_tuning_from_env_reads_overrides_and_names_a_bad_variable() -> None:
    tuned = TransferTuning.from_env(
        {"KUBEPEFT_S3_PART_MB": "32", "KUBEPEFT_S3_CONCURRENCY": "4", "KUBEPEFT_S3_RETRY_MODE": "adaptive"}
    )
    assert tuned.part_size == tuned.multipart_threshold == 32 * 1024 * 1024
    assert tuned.concurrency == 4 and tuned.retry_mode == "adaptive" and tuned.max_attempts == 10
    assert TransferTuning.from_env({}) == TransferTuning()
    for name, value in (
        ("KUBEPEFT_S3_PART_MB", "16MB"),
        ("KUBEPEFT_S3_CONCURRENCY", "0"),
        ("KUBEPEFT_S3_MAX_ATTEMPTS", "-2"),
        ("KUBEPEFT_S3_RETRY_MODE", "fast"),
    ):
        with pytest.raises(PermanentStorageError, match=f"^{name} must be .*{value!r}"):
            TransferTuning.from_env({name: value})


def test_a_credentials_folder_without_key_files_means_the_standard_chain(tmp_path: Path) -> None:
    """An optional Secret that does not exist is mounted as an empty folder: no keys, no error."""
    from kubepeft.storage.client import credentials_in

    empty = tmp_path / "empty"
    empty.mkdir()
    assert credentials_in(empty) is None
    open_store("s3://bucket/prefix", endpoint="http://127.0.0.1:9", credentials_dir=empty)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "AWS_ACCESS_KEY_ID").write_text("id\n")
    (keys / "AWS_SECRET_ACCESS_KEY").write_text("secret\n")
    found = credentials_in(keys)
    assert found is not None and found.access_key_id == "id"
    (keys / "AWS_SECRET_ACCESS_KEY").unlink()  # half a Secret is a mistake, never the chain
    with pytest.raises(PermanentStorageError, match="has no AWS_SECRET_ACCESS_KEY file"):
        credentials_in(keys)
