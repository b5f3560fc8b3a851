"""Load a PeftJob file for a local run, validated exactly as ``kubepeft validate`` does.

The same CRD schema and CEL rules the API server applies decide; problems come back as
``<file>: <field path>: <reason>`` lines. ``--name``/``--namespace`` overrides are applied to the
document before validation, so an invalid override is reported like an invalid file.
"""

from __future__ import annotations

import copy
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubepeft.api.models import PeftJob, PeftJobSpec
from kubepeft.api.validate import claims_peftjob, validate_object, validate_text

DEFAULT_NAMESPACE = "default"


class JobFileError(Exception):
    """The file cannot be run; ``lines`` are the ``file: field: reason`` problems to print."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class LoadedJob:
    source: str
    name: str
    namespace: str
    spec: PeftJobSpec
    document: dict[str, Any]


def _random_suffix(length: int = 5) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def load_job_text(text: str, source: str, *, name: str | None = None, namespace: str | None = None) -> LoadedJob:
    """Validate and parse the one PeftJob of ``text``; raises :class:`JobFileError`."""
    result = validate_text(text, source)
    if not result.ok and result.problem is not None:
        raise JobFileError(result.lines())
    documents = [doc for doc in yaml.safe_load_all(text) if claims_peftjob(doc)]
    if len(documents) != 1:
        raise JobFileError([f"{source}: kubepeft run takes exactly one PeftJob, found {len(documents)}"])
    document = copy.deepcopy(documents[0])
    metadata = document.get("metadata")
    if isinstance(metadata, dict):
        if name:
            metadata["name"] = name
            metadata.pop("generateName", None)
        if namespace:
            metadata["namespace"] = namespace
    errors = validate_object(document)
    if errors:
        raise JobFileError([f"{source}: {error}" for error in errors])
    job = PeftJob.model_validate(document)
    metadata = document["metadata"]
    job_name = metadata.get("name") or f"{metadata['generateName']}{_random_suffix()}"
    return LoadedJob(
        source=source,
        name=job_name,
        namespace=metadata.get("namespace") or DEFAULT_NAMESPACE,
        spec=job.spec,
        document=document,
    )


def load_job_file(path: str | Path, *, name: str | None = None, namespace: str | None = None) -> LoadedJob:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise JobFileError([f"{source}: cannot read: {reason}"]) from None
    return load_job_text(text, source, name=name, namespace=namespace)
