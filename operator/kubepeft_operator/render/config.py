"""The trainer's config ConfigMap, the progress ConfigMap, and where credentials are mounted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kubepeft.api.models import CredentialsSecretRef, PeftJobSpec
from kubepeft.contract import CONFIG_KEY, TrainerConfig, build_trainer_config
from kubepeft_operator import naming
from kubepeft_operator.render.common import JobIdentity, child_metadata
from kubepeft_operator.settings import OperatorSettings

CREDENTIALS_ROOT = "/var/run/secrets/kubepeft"
Source = Literal["model", "dataset", "output"]


@dataclass(frozen=True)
class CredentialMount:
    """One source's credentials: a Secret projected as files into ``<root>/<source>/``."""

    source: Source
    secret: str
    items: tuple[tuple[str, str], ...]  # (key in the Secret, file name)
    explicit: bool
    """Named by the spec (must exist) rather than the operator's default (optional)."""

    @property
    def path(self) -> str:
        return f"{CREDENTIALS_ROOT}/{self.source}"

    @property
    def volume_name(self) -> str:
        return f"credentials-{self.source}"


def _scheme(uri: str) -> str:
    if uri.startswith("s3://"):
        return "s3"
    if uri.startswith("hf://"):
        return "hf"
    return "path"


def _items(scheme: str, ref: CredentialsSecretRef) -> tuple[tuple[str, str], ...]:
    if scheme == "s3":
        return (
            (ref.access_key_id_key, "AWS_ACCESS_KEY_ID"),
            (ref.secret_access_key_key, "AWS_SECRET_ACCESS_KEY"),
        )
    return ((ref.token_key, "HF_TOKEN"),)


def credential_mounts(spec: PeftJobSpec, settings: OperatorSettings) -> list[CredentialMount]:
    """Which Secret each remote source reads its credentials from.

    Local paths need none. A source without a ``credentialsSecretRef`` uses the operator's
    default Secret when one is configured, mounted optionally (public hub models need none).
    An S3 dataset falls back to the output's ref, as documented on the API; a hub dataset does
    not (the output's Secret holds S3 keys, not a hub token).
    """
    sources: list[tuple[Source, str, CredentialsSecretRef | None]] = [
        ("model", spec.model.uri, spec.model.credentials_secret_ref)
    ]
    if spec.dataset is not None:
        ref = spec.dataset.credentials_secret_ref
        if ref is None and _scheme(spec.dataset.uri) == "s3":
            ref = spec.output.credentials_secret_ref
        sources.append(("dataset", spec.dataset.uri, ref))
    sources.append(("output", spec.output.uri, spec.output.credentials_secret_ref))
    mounts = []
    for source, uri, ref in sources:
        scheme = _scheme(uri)
        if scheme == "path":
            continue
        if ref is not None:
            mounts.append(CredentialMount(source, ref.name, _items(scheme, ref), explicit=True))
        elif settings.default_credentials_secret:
            default = CredentialsSecretRef(name=settings.default_credentials_secret)
            mounts.append(CredentialMount(source, default.name, _items(scheme, default), explicit=False))
    return mounts


def trainer_config(job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings) -> TrainerConfig:
    """The trainer's config with the operator's storage defaults applied."""
    endpoint = spec.output.endpoint or settings.default_s3_endpoint or None
    config = build_trainer_config(
        spec,
        job.namespace,
        job.name,
        uid=job.uid,
        credentials_dirs={m.source: m.path for m in credential_mounts(spec, settings)},
        endpoint_override=endpoint,
    )
    if not spec.output.endpoint and settings.default_s3_region:
        config = config.model_copy(
            update={"output": config.output.model_copy(update={"region": settings.default_s3_region})}
        )
    return config


def render_config_map(job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(job, naming.config_map_name(job.name), "trainer-config"),
        "data": {CONFIG_KEY: trainer_config(job, spec, settings).to_json()},
    }


def render_progress_map(job: JobIdentity) -> dict[str, Any]:
    """Created empty; rank 0 patches ``report.json`` into it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(job, naming.progress_map_name(job.name), "progress"),
        "data": {},
    }
