"""Artifact storage for kubepeft: S3-compatible prefixes and local folders behind one API.

Nothing is a result until its manifest exists: every artifact set (checkpoint, adapter, merged
model, the job itself) ends with ``manifest.json`` listing each file's size and sha256, written
last. See docs/storage.md.
"""

from kubepeft.storage.client import Credentials, TransferTuning, read_credentials_dir
from kubepeft.storage.errors import (
    IncompleteError,
    IntegrityError,
    NotFoundError,
    PermanentStorageError,
    RetryableStorageError,
    StorageError,
)
from kubepeft.storage.factory import StoreAccess, open_store, open_store_for
from kubepeft.storage.manifest import MANIFEST_FORMAT, MANIFEST_NAME, FileEntry, Manifest, TransferStats, sha256_file
from kubepeft.storage.retention import (
    apply_retention,
    checkpoint_name,
    complete_checkpoints,
    latest_checkpoint,
    parse_checkpoint_name,
)
from kubepeft.storage.store import Store, write_manifest
from kubepeft.storage.uploader import BackgroundUploader
from kubepeft.storage.uri import is_s3, join

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "BackgroundUploader",
    "Credentials",
    "FileEntry",
    "IncompleteError",
    "IntegrityError",
    "Manifest",
    "NotFoundError",
    "PermanentStorageError",
    "RetryableStorageError",
    "StorageError",
    "Store",
    "StoreAccess",
    "TransferStats",
    "TransferTuning",
    "apply_retention",
    "checkpoint_name",
    "complete_checkpoints",
    "is_s3",
    "join",
    "latest_checkpoint",
    "open_store",
    "open_store_for",
    "parse_checkpoint_name",
    "read_credentials_dir",
    "sha256_file",
    "write_manifest",
]
