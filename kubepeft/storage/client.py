"""The S3 client: endpoint, addressing style, credentials, retries and transfer tuning.

Credentials: an explicit ``credentials_dir`` (files ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_SESSION_TOKEN``, as a Kubernetes Secret volume mounts
them) wins; otherwise the standard AWS chain (environment, shared config, instance roles).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from kubepeft.settings import CoreSettings, SettingsError, core_settings
from kubepeft.storage.errors import PermanentStorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

MB = 1024 * 1024
ACCESS_KEY_FILE = "AWS_ACCESS_KEY_ID"
SECRET_KEY_FILE = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN_FILE = "AWS_SESSION_TOKEN"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never show the values, not even in a traceback's locals
        return "Credentials(access_key_id=***, secret_access_key=***)"

    @property
    def secrets(self) -> list[str]:
        """Values to scrub from every message."""
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


_DEFAULTS = CoreSettings()  # the measured defaults, one definition (docs/storage.md, Tuning)


@dataclass(frozen=True)
class TransferTuning:
    """Part size and parallelism of transfers.

    Defaults are :class:`~kubepeft.settings.CoreSettings`' (``KUBEPEFT_S3_*`` override them
    without code changes); the timeouts are fixed.
    """

    multipart_threshold: int = _DEFAULTS.s3_part_mb * MB
    part_size: int = _DEFAULTS.s3_part_mb * MB
    concurrency: int = _DEFAULTS.s3_concurrency
    max_attempts: int = _DEFAULTS.s3_max_attempts
    retry_mode: str = _DEFAULTS.s3_retry_mode
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: CoreSettings) -> TransferTuning:
        part = settings.s3_part_mb * MB
        return cls(
            multipart_threshold=part,
            part_size=part,
            concurrency=settings.s3_concurrency,
            max_attempts=settings.s3_max_attempts,
            retry_mode=settings.s3_retry_mode,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TransferTuning:
        """Overrides from ``KUBEPEFT_S3_*``; a malformed value is a permanent error naming the variable."""
        return _from_settings(lambda: CoreSettings.load(environ))

    @classmethod
    def of_process(cls) -> TransferTuning:
        """This process's tuning: its ``KUBEPEFT_S3_*``, read once (:func:`kubepeft.settings.core_settings`)."""
        return _from_settings(core_settings)

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.part_size,
            max_concurrency=self.concurrency,
            use_threads=True,
            # s3transfer's own re-reads of interrupted GET streams (botocore does not retry those).
            num_download_attempts=self.max_attempts,
        )


def _from_settings(read: Callable[[], CoreSettings]) -> TransferTuning:
    try:
        return TransferTuning.from_settings(read())
    except SettingsError as exc:  # storage callers handle storage errors: a permanent one
        raise PermanentStorageError(str(exc), code="InvalidConfig") from None


def credentials_in(credentials_dir: str | os.PathLike[str]) -> Credentials | None:
    """Keys from a credentials folder, or None when it holds neither key file: an optional Secret
    that does not exist is mounted as an empty folder, and then the standard AWS chain applies."""
    folder = Path(credentials_dir)
    if not (folder / ACCESS_KEY_FILE).exists() and not (folder / SECRET_KEY_FILE).exists():
        return None
    return read_credentials_dir(folder)


def read_credentials_dir(credentials_dir: str | os.PathLike[str]) -> Credentials:
    """Keys from a mounted-Secret-style folder; errors name the file, never its content."""
    folder = Path(credentials_dir)
    values: dict[str, str] = {}
    for name in (ACCESS_KEY_FILE, SECRET_KEY_FILE, SESSION_TOKEN_FILE):
        path = folder / name
        try:
            values[name] = path.read_text().strip()
        except FileNotFoundError:
            if name != SESSION_TOKEN_FILE:
                raise PermanentStorageError(
                    f"credentials folder {folder} has no {name} file", code="NoCredentials"
                ) from None
        except OSError as exc:
            raise PermanentStorageError(f"cannot read {path}: {exc.strerror}", code="NoCredentials") from None
    if not values[ACCESS_KEY_FILE] or not values[SECRET_KEY_FILE]:
        raise PermanentStorageError(f"credentials folder {folder} has an empty key file", code="NoCredentials")
    return Credentials(values[ACCESS_KEY_FILE], values[SECRET_KEY_FILE], values.get(SESSION_TOKEN_FILE) or None)


def make_s3_client(
    *,
    endpoint: str | None,
    region: str,
    force_path_style: bool,
    credentials: Credentials | None,
    tuning: TransferTuning,
) -> tuple[S3Client, list[str]]:
    """A boto3 S3 client and the list of secret values to scrub from error messages."""
    session = boto3.session.Session(
        aws_access_key_id=credentials.access_key_id if credentials else None,
        aws_secret_access_key=credentials.secret_access_key if credentials else None,
        aws_session_token=credentials.session_token if credentials else None,
        region_name=region,
    )
    config = Config(
        region_name=region,
        # botocore's standard/adaptive modes: exponential backoff with full jitter on throttling,
        # 5xx and connection errors, up to max_attempts tries per request.
        retries={"mode": tuning.retry_mode, "max_attempts": tuning.max_attempts},  # type: ignore[typeddict-item,arg-type]
        s3={"addressing_style": "path" if force_path_style else "auto"},
        max_pool_connections=tuning.concurrency * 2 + 4,
        connect_timeout=tuning.connect_timeout,
        read_timeout=tuning.read_timeout,
        signature_version="s3v4",
    )
    client = session.client("s3", endpoint_url=endpoint or None, config=config)
    resolved = session.get_credentials()
    secrets = credentials.secrets if credentials else []
    if resolved is not None:
        frozen = resolved.get_frozen_credentials()
        secrets += [v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v]
    return client, secrets
