"""Failure classes of the trainer.

A :class:`PermanentTrainerError` means the input is wrong (a malformed dataset row, a model
folder that is not a model, a missing manifest): retrying cannot help, so the entry point maps it
to ``kubepeft.contract.EXIT_PERMANENT``. Anything else that escapes is treated as retryable.
"""

from __future__ import annotations


class PermanentTrainerError(Exception):
    """Bad input: the job fails without a retry. The message names the file/row or the field."""


class RetryableTrainerError(Exception):
    """A transient failure (network, storage): a new attempt may succeed."""


def is_permanent(exc: BaseException) -> bool:
    """Bad input: our own PermanentTrainerError, config validation, a malformed setting, a
    missing/corrupt input object."""
    from pydantic import ValidationError

    from kubepeft.settings import SettingsError
    from kubepeft.storage import PermanentStorageError

    return isinstance(exc, PermanentTrainerError | ValidationError | SettingsError | PermanentStorageError)
