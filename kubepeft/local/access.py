"""What a local run is told about reaching each source: ``--credentials SOURCE=DIR`` and
``--volume CLAIM=DIR``.

In a cluster the operator mounts each source's Secret and each declared claim into the pods; a
local run names folders instead. ``--credentials-dir`` stays the one folder for every source on the
run's default endpoint; ``--credentials model=DIR`` gives one source (``model``, ``dataset``,
``adapter-<i>``, ``output``) its own folder. ``--volume CLAIM=DIR`` says where a claim of
``spec.volumes`` is on this machine; a claim the job's URIs use (``pvc://claim/...`` or a path under
its mount path) must be mapped, or the run is refused before anything starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubepeft.api.models import PeftJobSpec
from kubepeft.sources import Source, is_remote, job_sources, used_claims


@dataclass(frozen=True)
class LocalAccess:
    credentials: Mapping[str, Path] = field(default_factory=dict)
    """Source name -> its own credentials folder (``--credentials``)."""
    volumes: Mapping[str, Path] = field(default_factory=dict)
    """Claim -> the local folder standing for it (``--volume``)."""

    def volume_dirs(self) -> dict[str, str]:
        """The trainer config's ``volume_dirs``."""
        return {claim: str(folder) for claim, folder in self.volumes.items()}


NO_ACCESS = LocalAccess()


def local_access(args: argparse.Namespace) -> LocalAccess:
    """The ``--credentials`` and ``--volume`` flags of ``kubepeft run`` (a job or a sweep)."""
    return LocalAccess(credentials=dict(args.credentials or []), volumes=dict(args.volume or []))


def name_and_folder(text: str) -> tuple[str, Path]:
    """argparse type of ``NAME=DIR`` (the folder made absolute: nodes run in other folders)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(folder).expanduser().absolute()


def on_default_endpoint(source: Source) -> bool:
    """An S3 source served by the run's default endpoint (the job's, ``--endpoint``, or embedded)."""
    return source.scheme == "s3" and not source.own_endpoint


def _credentials_problems(spec: PeftJobSpec, access: LocalAccess, *, embedded: bool) -> list[str]:
    sources = {source.name: source for source in job_sources(spec)}
    problems = []
    for name, folder in access.credentials.items():
        flag = f"--credentials {name}={folder}"
        source = sources.get(name)
        if source is None:
            problems.append(f"{flag}: the job has no source {name!r} (its sources: {', '.join(sources)})")
        elif not is_remote(source.uri):
            problems.append(f"{flag}: {name} is a local path ({source.uri}) and needs no credentials")
        elif embedded and on_default_endpoint(source):
            problems.append(
                f"{flag}: {name} is on the embedded S3 server, which only knows its own keys "
                "(name an endpoint with --endpoint or in the job to use your own)"
            )
        elif not folder.is_dir():
            problems.append(f"{flag}: no such folder")
    return problems


def _volume_problems(spec: PeftJobSpec, access: LocalAccess) -> list[str]:
    declared = {volume.claim_name for volume in spec.volumes or []}
    problems = []
    for claim, folder in access.volumes.items():
        if claim not in declared:
            problems.append(f"--volume {claim}={folder}: the job declares no claim {claim!r} in spec.volumes")
        elif not folder.is_dir():
            problems.append(f"--volume {claim}={folder}: no such folder")
    for claim in used_claims(spec):
        if claim not in access.volumes:
            problems.append(
                f"claim {claim!r}: the job reads or writes it; map it to a local folder with --volume {claim}=DIR"
            )
    return problems


def access_problems(spec: PeftJobSpec, access: LocalAccess, *, embedded: bool) -> list[str]:
    """Pure but for folder checks: why the flags cannot run this job (empty: they can)."""
    return _credentials_problems(spec, access, embedded=embedded) + _volume_problems(spec, access)
