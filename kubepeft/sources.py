"""The inputs and the output of a job, each with where it lives and how it is reached.

One pure answer used by every place that needs it: the operator (which Secrets and volumes to
mount), ``kubepeft run`` (which folders to hand the trainer) and the trainer (what to download,
from which endpoint, with which keys). Defaulting rules, in one place:

* ``endpoint``, ``region`` and ``forcePathStyle`` of an input default to the output's;
* an ``s3://`` input without its own ``credentialsSecretRef`` on the output's endpoint uses the
  output's Secret; on another endpoint it gets none of the output's keys;
* an ``hf://`` input never borrows the output's Secret (it holds S3 keys, not a hub token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubepeft.api.models import CredentialsSecretRef, OutputSpec, PeftJobSpec, SourceAccess, VolumeSpec

# The scheme test lives with the storage URIs (one definition); re-exported here for callers.
from kubepeft.storage.uri import Scheme as Scheme
from kubepeft.storage.uri import scheme_of as scheme_of

if TYPE_CHECKING:
    from kubepeft.storage.factory import StoreAccess

OUTPUT = "output"
MODEL = "model"
DATASET = "dataset"
ADAPTER_PREFIX = "adapter-"


def is_remote(uri: str) -> bool:
    """Reached over the network (S3 or the hub), so it may need credentials."""
    return scheme_of(uri) in ("s3", "hf")


@dataclass(frozen=True)
class Source:
    """One input or the output of a job."""

    name: str
    """``model``, ``dataset``, ``adapter-<i>`` or ``output``: names its credentials folder."""
    uri: str
    scheme: Scheme
    endpoint: str | None
    """The S3 endpoint; None means the output's (the operator's or the local run's default)."""
    region: str
    force_path_style: bool
    credentials: CredentialsSecretRef | None
    """The Secret to read keys from, after the defaulting rules (None: no Secret)."""
    own_endpoint: bool = False
    """The source names an endpoint other than the output's."""


def _input(name: str, uri: str, access: SourceAccess, output: OutputSpec, reached: StoreAccess) -> Source:
    scheme = scheme_of(uri)
    own_endpoint = access.endpoint is not None and access.endpoint != output.endpoint
    credentials = access.credentials_secret_ref
    if credentials is None and scheme == "s3" and not own_endpoint:
        credentials = output.credentials_secret_ref
    return Source(
        name=name,
        uri=uri,
        scheme=scheme,
        endpoint=access.endpoint or reached.endpoint,
        region=access.region or reached.region,
        force_path_style=reached.force_path_style if access.force_path_style is None else access.force_path_style,
        credentials=credentials,
        own_endpoint=own_endpoint,
    )


def output_source(spec: PeftJobSpec) -> Source:
    out = spec.output
    return Source(
        name=OUTPUT,
        uri=out.uri,
        scheme=scheme_of(out.uri),
        endpoint=out.endpoint,
        region=out.region,
        force_path_style=out.force_path_style,
        credentials=out.credentials_secret_ref,
    )


def input_sources(spec: PeftJobSpec, reached: StoreAccess | None = None) -> list[Source]:
    """The model, the dataset (if any) and each adapter source, in that order.

    ``reached`` is the output as a process reaches it (the operator's default endpoint and region,
    a local run's server): an input's defaults come from it; whether the input names an endpoint
    of its own, and so whose keys it may use, is always judged against the spec's output."""
    out = spec.output
    default = reached or out
    sources = [_input(MODEL, spec.model.uri, spec.model, out, default)]
    if spec.dataset is not None:
        sources.append(_input(DATASET, spec.dataset.uri, spec.dataset, out, default))
    for index, adapter in enumerate(spec.adapters.sources if spec.adapters else []):
        sources.append(_input(f"{ADAPTER_PREFIX}{index}", adapter.uri, adapter, out, default))
    return sources


def job_sources(spec: PeftJobSpec) -> list[Source]:
    """Every input, then the output."""
    return [*input_sources(spec), output_source(spec)]


def claim_of(uri: str) -> tuple[str, str]:
    """``pvc://claim/a/b`` -> ``("claim", "a/b")``."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    return claim, path


def volume_for(spec: PeftJobSpec, claim: str) -> VolumeSpec:
    """The declared volume of a claim (validation guarantees it exists)."""
    for volume in spec.volumes or []:
        if volume.claim_name == claim:
            return volume
    raise KeyError(f"claim {claim!r} is not declared in spec.volumes")


def writable_claims(spec: PeftJobSpec) -> set[str]:
    """Claims mounted read-write: the one holding the output (pvc:// or an absolute path under its
    mount path). Every other claim is mounted read-only."""
    uri = spec.output.uri
    if scheme_of(uri) == "pvc":
        return {claim_of(uri)[0]}
    return {
        v.claim_name
        for v in spec.volumes or []
        if uri == v.effective_mount_path() or uri.startswith(v.effective_mount_path() + "/")
    }


def mounted_path(spec: PeftJobSpec, uri: str, mount_root: dict[str, str] | None = None) -> str:
    """Where a ``pvc://`` URI is on a worker's file system (or on this machine, when
    ``mount_root`` maps claims to local folders, as ``kubepeft run`` does). Other URIs pass through."""
    if scheme_of(uri) != "pvc":
        return uri
    claim, path = claim_of(uri)
    root = (mount_root or {}).get(claim) or volume_for(spec, claim).effective_mount_path()
    return f"{root.rstrip('/')}/{path}" if path else root


def volume_at(spec: PeftJobSpec, path: str) -> VolumeSpec | None:
    """The declared volume whose mount path holds an absolute path, if any."""
    for volume in spec.volumes or []:
        mount = volume.effective_mount_path()
        if path == mount or path.startswith(mount + "/"):
            return volume
    return None


def claim_in_use(spec: PeftJobSpec, uri: str) -> str | None:
    """The claim a URI is on: ``pvc://claim/...``, or an absolute path under a declared mount path."""
    scheme = scheme_of(uri)
    if scheme == "pvc":
        return claim_of(uri)[0]
    volume = volume_at(spec, uri) if scheme == "path" else None
    return volume.claim_name if volume else None


def used_claims(spec: PeftJobSpec) -> list[str]:
    """The claims the job's inputs and output are on (a declared claim no URI uses is not listed)."""
    return sorted({claim for source in job_sources(spec) if (claim := claim_in_use(spec, source.uri))})


def local_path(spec: PeftJobSpec, uri: str, volume_dirs: dict[str, str] | None = None) -> str:
    """Where a URI is on this file system: :func:`mounted_path` for ``pvc://``, and an absolute path
    under a declared mount path moved to the folder ``volume_dirs`` maps its claim to (a local run's
    ``--volume``). Without a mapping (in pods) paths are where the volumes are mounted."""
    if scheme_of(uri) == "pvc":
        return mounted_path(spec, uri, volume_dirs)
    volume = volume_at(spec, uri) if scheme_of(uri) == "path" else None
    if volume is None or volume.claim_name not in (volume_dirs or {}):
        return uri
    rest = uri[len(volume.effective_mount_path()) :]
    return (volume_dirs or {})[volume.claim_name].rstrip("/") + rest
