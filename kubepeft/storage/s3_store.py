"""S3 backend: boto3 + s3transfer's TransferManager (multipart uploads, ranged parallel GETs)."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferManager

from kubepeft.storage.client import Credentials, S3Client, TransferTuning, make_s3_client
from kubepeft.storage.errors import NOT_FOUND_CODES, NotFoundError, PermanentStorageError, classify
from kubepeft.storage.store import DownloadItem, Store, UploadItem
from kubepeft.storage.uri import S3Location, is_s3, parse_s3

# The sha256 we computed at upload, stored as x-amz-meta-sha256: lets a restarted upload decide
# from a HEAD whether an object is already complete, before any manifest exists.
SHA256_METADATA_KEY = "sha256"
DELETE_BATCH = 1000


class HashingSink(io.RawIOBase):
    """A write-only, non-seekable file object that hashes what s3transfer writes into it.

    Being non-seekable makes s3transfer deliver its parallel ranged GETs in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        return view.nbytes


class S3Store(Store):
    def __init__(
        self,
        root: str,
        *,
        endpoint: str | None,
        region: str,
        force_path_style: bool,
        credentials: Credentials | None,
        tuning: TransferTuning,
    ) -> None:
        super().__init__(root)
        self.endpoint = endpoint
        self.region = region
        self.tuning = tuning
        self._buckets_seen: set[str] = set()
        self.client: S3Client
        self.client, self._secrets = make_s3_client(
            endpoint=endpoint, region=region, force_path_style=force_path_style, credentials=credentials, tuning=tuning
        )

    def __repr__(self) -> str:
        return f"S3Store(root={self.root!r}, endpoint={self.endpoint!r})"

    def _manager(self) -> TransferManager:
        return TransferManager(self.client, self.tuning.transfer_config())

    def _check_uri(self, uri: str) -> None:
        if not is_s3(uri):
            raise PermanentStorageError(f"an S3 store cannot address {uri!r}", uri=uri, code="InvalidURI")
        parse_s3(uri)

    def _run(self, action: str, futures: Sequence[tuple[str, TransferFuture]]) -> None:
        """Wait for every transfer; on the first failure cancel the rest and raise it classified."""
        for uri, future in futures:
            try:
                future.result()
            except Exception as exc:
                for _, other in futures:
                    other.cancel()
                raise classify(exc, action=action, uri=uri, secrets=self._secrets) from None

    def _head(self, uri: str) -> dict[str, Any] | None:
        """The object's HEAD answer, or None when it does not exist."""
        loc = parse_s3(uri)
        try:
            return dict(self.client.head_object(Bucket=loc.bucket, Key=loc.key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
                self._require_bucket(loc.bucket, uri)
                return None
            raise

    def _require_bucket(self, bucket: str, uri: str) -> None:
        """A HEAD answers a bare 404 for a missing object AND for a missing bucket: tell them apart,
        or a missing bucket reads as "no manifest: the upload never completed"."""
        if bucket in self._buckets_seen:
            return
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status == 404 or str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND_CODES:
                raise PermanentStorageError(
                    f"{uri}: bucket {bucket!r} does not exist at {self.endpoint or 'AWS S3'}",
                    uri=uri,
                    code="NoSuchBucket",
                ) from None
            return  # e.g. no s3:ListBucket right: cannot tell, keep the object's own answer
        self._buckets_seen.add(bucket)

    def _remote_sha256(self, uri: str, size: int) -> str | None:
        head = self._head(uri)
        if head is None or head["ContentLength"] != size:
            return None
        sha: str | None = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        return sha

    def _upload_args(self, item: UploadItem) -> dict[str, Any]:
        args: dict[str, Any] = {"Metadata": {SHA256_METADATA_KEY: item.sha256}}
        if item.size < self.tuning.multipart_threshold:
            # One PUT: send the digest we already have; the server checks the body against it.
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(item.sha256)).decode()
        else:
            # Multipart: botocore computes and sends a SHA256 per part, the server checks each.
            args["ChecksumAlgorithm"] = "SHA256"
        return args

    def _put_files(self, items: Sequence[UploadItem]) -> None:
        if not items:
            return
        with self._manager() as manager:
            futures = []
            for item in items:
                loc = parse_s3(item.uri)
                futures.append(
                    (item.uri, manager.upload(str(item.local_path), loc.bucket, loc.key, self._upload_args(item)))
                )
            self._run("upload", futures)

    def _get_files(self, items: Sequence[DownloadItem]) -> None:
        if not items:
            return
        with self._manager() as manager:
            futures = []
            for item in items:
                loc = parse_s3(item.uri)
                future = manager.download(loc.bucket, loc.key, str(item.local_path))
                # A known size spares s3transfer its HEAD request.
                if item.size >= 0:
                    future.meta.provide_transfer_size(item.size)
                futures.append((item.uri, future))
            self._run("download", futures)

    def _put_bytes(self, uri: str, data: bytes) -> None:
        loc = parse_s3(uri)
        digest = hashlib.sha256(data)
        self.client.put_object(
            Bucket=loc.bucket,
            Key=loc.key,
            Body=data,
            Metadata={SHA256_METADATA_KEY: digest.hexdigest()},
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        )

    def _get_bytes(self, uri: str) -> bytes:
        loc = parse_s3(uri)
        buffer = io.BytesIO()
        # Through s3transfer: it re-reads a stream cut mid-body, which a bare get_object does not.
        try:
            with self._manager() as manager:
                self._run("read", [(uri, manager.download(loc.bucket, loc.key, buffer))])
        except NotFoundError:
            self._require_bucket(loc.bucket, uri)
            raise
        return buffer.getvalue()

    def _hash_objects(self, uris: Sequence[str]) -> list[tuple[int, str] | None]:
        sinks: list[HashingSink | None] = []
        with self._manager() as manager:
            futures = []
            for uri in uris:
                loc = parse_s3(uri)
                if not self._exists(uri):
                    sinks.append(None)
                    continue
                sink = HashingSink()
                sinks.append(sink)
                futures.append((uri, manager.download(loc.bucket, loc.key, sink)))  # type: ignore[arg-type]
            self._run("verify", futures)
        return [None if sink is None else (sink.size, sink.digest.hexdigest()) for sink in sinks]

    def _exists(self, uri: str) -> bool:
        return self._head(uri) is not None

    def _list_prefixes(self, uri: str) -> list[str]:
        # Derived from a recursive listing rather than Delimiter="/": some servers (SeaweedFS)
        # keep reporting a "folder" as a common prefix after every object in it was deleted.
        loc = parse_s3(uri)
        base = loc.dir_prefix
        children = {key[len(base) :].split("/", 1)[0] for key in self._list_keys(loc) if "/" in key[len(base) :]}
        return [loc.child(child).uri for child in children]

    def _list_keys(self, loc: S3Location) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.dir_prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _delete_prefix(self, uri: str) -> None:
        loc = parse_s3(uri)
        if not loc.key:
            raise PermanentStorageError(f"refusing to delete a whole bucket: {uri}", uri=uri, code="InvalidURI")
        keys = self._list_keys(loc)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=loc.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise ClientError(
                    {"Error": {"Code": first.get("Code", "DeleteFailed"), "Message": first.get("Message", "")}},
                    "DeleteObjects",
                )

    def _delete(self, uri: str) -> None:
        loc = parse_s3(uri)
        self.client.delete_object(Bucket=loc.bucket, Key=loc.key)

    def _abort_incomplete(self, uri: str) -> int:
        loc = parse_s3(uri)
        paginator = self.client.get_paginator("list_multipart_uploads")
        pending = [
            (upload["Key"], upload["UploadId"])
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.dir_prefix)
            for upload in page.get("Uploads", [])
        ]
        for key, upload_id in pending:
            self.client.abort_multipart_upload(Bucket=loc.bucket, Key=key, UploadId=upload_id)
        return len(pending)
