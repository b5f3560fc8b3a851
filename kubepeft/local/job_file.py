"""Load a PeftJob file for a local run, validated exactly as ``kubepeft validate`` does.

The same reader (:func:`~kubepeft.api.yaml_input.read_manifest`: size cap, regular files only),
the same strict YAML loader, and the same :func:`~kubepeft.api.validate.check_object` decide;
problems come back as ``<file>: <field path>: <reason>`` lines. ``--name``/``--namespace``
overrides are applied to the document before validation, so an invalid override is reported like
an invalid file.
"""

from __future__ import annotations

import copy
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft.api.validate import check_object, peftjob_documents
from kubepeft.api.yaml_input import ManifestInputError, load_documents, read_manifest

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


def path_under(root: Path, *segments: str) -> Path:
    """``root/segment/...`` for names that become folders (namespace, job name).

    Each segment must be one plain path component, so the result cannot leave ``root``
    (``--namespace ../../X`` would otherwise put checkpoints anywhere). Names are DNS-checked
    before they get here; this is the last line of defence where the path is built.
    """
    for segment in segments:
        if segment in ("", ".", "..") or "/" in segment or "\\" in segment or "\0" in segment:
            raise JobFileError([f"{segment!r} cannot name a folder under {root}: not a single path component"])
    path = root.joinpath(*segments)
    base = os.path.normpath(root)
    if os.path.commonpath([base, os.path.normpath(path)]) != base:
        raise JobFileError([f"{path} is not inside {root}"])
    return path


def _apply_overrides(document: dict[str, Any], name: str | None, namespace: str | None) -> dict[str, Any]:
    document = copy.deepcopy(document)
    metadata = document.get("metadata")
    if isinstance(metadata, dict):
        if name is not None:
            metadata["name"] = name
            metadata.pop("generateName", None)
        if namespace is not None:
            metadata["namespace"] = namespace
    return document


def load_job_text(text: str, source: str, *, name: str | None = None, namespace: str | None = None) -> LoadedJob:
    """Validate and parse the one PeftJob of ``text``; raises :class:`JobFileError`."""
    try:
        documents = load_documents(text, source)
    except ManifestInputError as error:
        raise JobFileError([str(error)]) from None
    chosen, problem = peftjob_documents(documents, source)
    if problem is not None:
        raise JobFileError([problem])
    if len(chosen) != 1:
        raise JobFileError([f"{source}: kubepeft run takes exactly one PeftJob, found {len(chosen)}"])
    label, original = chosen[0]
    document = _apply_overrides(original, name, namespace) if isinstance(original, dict) else original
    checked = check_object(document)
    if checked.job is None:
        raise JobFileError([f"{label}: {error}" for error in checked.errors])
    metadata = document["metadata"]
    job_name = metadata.get("name") or f"{metadata['generateName']}{_random_suffix()}"
    job_namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    path_under(Path("/"), job_namespace, job_name)  # the folders a run builds from them stay put
    return LoadedJob(source=source, name=job_name, namespace=job_namespace, spec=checked.job.spec, document=document)


def load_job_file(path: str | Path, *, name: str | None = None, namespace: str | None = None) -> LoadedJob:
    source = str(path)
    try:
        text = read_manifest(source)
    except ManifestInputError as error:
        raise JobFileError([str(error)]) from None
    return load_job_text(text, source, name=name, namespace=namespace)
