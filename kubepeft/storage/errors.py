"""Storage errors, classified so callers can decide whether a retry can help.

``RetryableStorageError``: throttling, 5xx, dropped connections, timeouts -- a later attempt may
succeed. ``PermanentStorageError``: bad credentials, access denied, a missing bucket or object,
corrupt data, bad input -- retrying the same request cannot help.

Messages are built here from the error code and the URI only, then scrubbed of every registered
secret: botocore errors can embed request details (access key ids, string-to-sign), and these
messages end up in logs, Kubernetes events and the job's status.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

REDACTED = "***"

# S3 error codes that a retry can fix (besides any 5xx and 429).
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# Local I/O failures worth a new attempt (another node, a remounted volume).
RETRYABLE_ERRNOS = frozenset({errno.EIO, errno.ENOSPC, errno.ETIMEDOUT, errno.ESTALE, errno.EAGAIN, errno.EINTR})


class StorageError(Exception):
    """Base of every storage failure. ``retryable`` says whether a new attempt can help."""

    retryable: bool = False

    def __init__(self, message: str, *, uri: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.uri = uri
        self.code = code


class RetryableStorageError(StorageError):
    """Transient: throttling, server errors, lost connections, timeouts."""

    retryable = True


class PermanentStorageError(StorageError):
    """Retrying cannot help: credentials, permissions, missing bucket/object, bad input."""

    retryable = False


class IntegrityError(PermanentStorageError):
    """Stored data does not match its manifest (size or sha256), or the manifest is missing/invalid."""


class NotFoundError(PermanentStorageError):
    """The object or prefix does not exist."""


class IncompleteError(PermanentStorageError):
    """A prefix has no manifest: its upload never finished, so it is not a result."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def classify(exc: BaseException, *, action: str, uri: str, secrets: Iterable[str] = ()) -> StorageError:
    """Turn a botocore/s3transfer/OS error into a classified :class:`StorageError` with a clean message."""
    secrets = list(secrets)
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        # The server's own message is useful ("The specified bucket does not exist") but may
        # quote request details: scrub it, and never include the raw response.
        detail = redact(str(error.get("Message", "")), secrets)
        message = f"{action} {uri} failed: {code} (HTTP {status or '?'})" + (f": {detail}" if detail else "")
        retryable = status >= 500 or status == 429 or code in RETRYABLE_CODES
        cls: type[StorageError] = RetryableStorageError if retryable else PermanentStorageError
        if code in NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            cls = NotFoundError
        return cls(message, uri=uri, code=code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentStorageError(f"{action} {uri} failed: no usable S3 credentials", uri=uri, code="NoCredentials")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError):
        return RetryableStorageError(
            f"{action} {uri} failed: {type(exc).__name__}: {redact(str(exc), secrets)}", uri=uri, code="Connection"
        )
    if isinstance(exc, BotoCoreError):
        # Remaining botocore errors (including s3transfer's exhausted download retries, which
        # subclass nothing useful) are transport-level: treat as transient.
        return RetryableStorageError(
            f"{action} {uri} failed: {type(exc).__name__}: {redact(str(exc), secrets)}",
            uri=uri,
            code=type(exc).__name__,
        )
    if isinstance(exc, ConnectionError | TimeoutError):
        return RetryableStorageError(f"{action} {uri} failed: {type(exc).__name__}", uri=uri, code="Connection")
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{action} {uri} failed: not found", uri=uri, code="ENOENT")
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, "OSError")
        cls = RetryableStorageError if exc.errno in RETRYABLE_ERRNOS else PermanentStorageError
        reason = exc.strerror or type(exc).__name__
        return cls(f"{action} {uri} failed: {reason}", uri=uri, code=code)
    name = type(exc).__name__
    if name == "RetriesExceededError":  # s3transfer: download retries exhausted on a flaky stream
        return RetryableStorageError(f"{action} {uri} failed: retries exhausted", uri=uri, code=name)
    return PermanentStorageError(f"{action} {uri} failed: {name}: {redact(str(exc), secrets)}", uri=uri, code=name)
