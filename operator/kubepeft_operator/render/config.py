"""The trainer's config ConfigMap, the progress ConfigMap, and where credentials are mounted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubepeft.api.models import CredentialsSecretRef, PeftJobSpec
from kubepeft.contract import CONFIG_KEY, TrainerConfig, build_trainer_config
from kubepeft.sources import Source, job_sources
from kubepeft.worker_paths import CREDENTIALS_ROOT
from kubepeft_operator import naming
from kubepeft_operator.render.common import JobIdentity, child_metadata
from kubepeft_operator.settings import OperatorSettings


@dataclass(frozen=True)
class CredentialMount:
    """One source's credentials: a Secret projected as files into ``<root>/<source>/``."""

    source: str
    """``model``, ``dataset``, ``adapter-<i>`` or ``output`` (``kubepeft.sources``)."""
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


def _items(source: Source, ref: CredentialsSecretRef) -> tuple[tuple[str, str], ...]:
    if source.scheme == "s3":
        return (
            (ref.access_key_id_key, "AWS_ACCESS_KEY_ID"),
            (ref.secret_access_key_key, "AWS_SECRET_ACCESS_KEY"),
        )
    return ((ref.token_key, "HF_TOKEN"),)


def _mount(source: Source, settings: OperatorSettings) -> CredentialMount | None:
    if source.scheme not in ("s3", "hf"):
        return None  # pvc:// and paths are volumes: no keys
    if source.credentials is not None:
        return CredentialMount(source.name, source.credentials.name, _items(source, source.credentials), True)
    # The operator's default Secret holds keys for its default endpoint (and, optionally, a hub
    # token): an S3 source on an endpoint of its own does not get it, as it gets none of the output's.
    if not settings.default_credentials_secret or (source.scheme == "s3" and source.own_endpoint):
        return None
    default = CredentialsSecretRef(name=settings.default_credentials_secret)
    return CredentialMount(source.name, default.name, _items(source, default), explicit=False)


def credential_mounts(spec: PeftJobSpec, settings: OperatorSettings) -> list[CredentialMount]:
    """Which Secret each remote source (inputs, adapters included, then the output) reads keys from.

    Which Secret a source uses is ``kubepeft.sources``' answer (its own ref; else, for an S3 input
    on the output's endpoint, the output's). A remote source left without one uses the operator's
    default Secret when one is configured, mounted optionally (public hub models need none).
    """
    return [mount for source in job_sources(spec) if (mount := _mount(source, settings)) is not None]


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
