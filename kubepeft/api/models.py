"""The PeftJob API (kubepeft.dev/v1alpha1) as typed models: the one source of truth.

The CRD in ``crds/`` is generated from these models (``make crds``), ``kubepeft validate``
checks manifests against that generated CRD, and the trainer config document embeds a
validated :class:`PeftJobSpec`. Field docstrings become the CRD's ``description`` texts, so
``kubectl explain peftjob.spec.lora`` reads them.

Cross-field rules live next to the model they constrain as CEL expressions
(``x-kubernetes-validations``); the API server and ``kubepeft validate`` evaluate the same
expressions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubepeft.worker_paths import DEFAULT_VOLUME_ROOT, RESERVED

GROUP = "kubepeft.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PeftJob"
PLURAL = "peftjobs"
SINGULAR = "peftjob"
SHORT_NAMES = ["pj"]
CATEGORIES = ["kubepeft"]

# metadata.name of a PeftJob: a DNS-1123 subdomain of at most 63 characters, so the job name
# fits a label value. Child names (Service, Jobs, pods, hostnames) derive from it; the operator
# shortens those that would exceed a limit with a hash of the full name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_NAME_LENGTH = 63
NAME_LENGTH_MESSAGE = f"must be at most {MAX_NAME_LENGTH} characters long (it is also a label value)"
# The API server cuts generateName to this many characters before appending 5 random ones, so a
# generated name always fits MAX_NAME_LENGTH.
MAX_GENERATE_NAME_PREFIX = MAX_NAME_LENGTH - 5


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` for a model carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


def name_length_rule() -> dict[str, Any]:
    """Root-level rule: the API server itself allows 253 characters, kubepeft (and its validator) 63."""
    rule = f"!has(self.metadata.name) || size(self.metadata.name) <= {MAX_NAME_LENGTH}"
    return cel(rule, NAME_LENGTH_MESSAGE, field_path=".metadata.name", reason="FieldValueInvalid")


IMMUTABLE_MESSAGE = "spec is immutable once created, except runPolicy.suspend"


def immutable() -> dict[str, Any]:
    """``json_schema_extra`` of a field that may not change once the job exists.

    One cheap rule per field instead of one spec-wide comparison: each rule's CEL cost is then
    bounded by its own field, and the server names the changed field in its error.
    """
    return validations(cel("self == oldSelf", IMMUTABLE_MESSAGE, reason="FieldValueForbidden"))


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected (like a strict API server)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML/JSON (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- references ---------------------------------------------------------------------------


class CredentialsSecretRef(ApiModel):
    """A Secret holding credentials; its values are mounted as files, never copied into the spec."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Name of the Secret in the job's namespace."""
    access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", min_length=1, max_length=253)
    """Key holding the S3 access key id (S3 sources and outputs)."""
    secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", min_length=1, max_length=253)
    """Key holding the S3 secret access key (S3 sources and outputs)."""
    token_key: str = Field(default="HF_TOKEN", min_length=1, max_length=253)
    """Key holding a Hugging Face hub token (hf:// sources)."""


# --- model, adapters, dataset -------------------------------------------------------------

S3_URI = r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?"
# pvc://<claim>/<path>: a path on a PersistentVolumeClaim the job declares in spec.volumes.
CLAIM_NAME_PATTERN = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
PVC_URI = rf"pvc://{CLAIM_NAME_PATTERN}(/[^\s]*)?"
URI_PATTERN = rf"^({S3_URI}|hf://[^/\s]+/[^\s]+|{PVC_URI}|/[^\s]*)$"
OUTPUT_URI_PATTERN = rf"^({S3_URI}|{PVC_URI}|/[^\s]*)$"
ENDPOINT_PATTERN = r"^https?://[^\s/]+(/.*)?$"


class SourceAccess(ApiModel):
    """Where an input's S3 server is and how to sign in; every field defaults to the output's."""

    endpoint: str | None = Field(default=None, max_length=1024, pattern=ENDPOINT_PATTERN)
    """S3-compatible endpoint of this source; default: the output's endpoint."""
    region: str | None = Field(default=None, max_length=64)
    """S3 region of this source; default: the output's region."""
    force_path_style: bool | None = None
    """Path-style addressing for this source; default: the output's setting."""
    credentials_secret_ref: CredentialsSecretRef | None = None
    """Secret with this source's credentials (S3 keys or a hub token). Without it, a source on the
    output's endpoint uses the output's credentials; a source on another endpoint gets none of the
    output's keys (the standard AWS credential chain applies)."""


class ModelSpec(SourceAccess):
    """The base model to fine-tune."""

    uri: str = Field(pattern=URI_PATTERN, max_length=1024)
    """Where the base model lives: ``s3://bucket/prefix``, ``hf://org/name``, ``pvc://claim/path`` or an
    absolute path (in the image, or on a volume of ``spec.volumes``)."""
    revision: str | None = Field(default=None, max_length=255)
    """Hub revision (branch, tag or commit) for ``hf://`` models."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run. Off unless you trust the source."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """dtype to load the base weights in (QLoRA quantizes regardless)."""


class AdapterSource(SourceAccess):
    """An existing PEFT adapter."""

    uri: str = Field(pattern=URI_PATTERN, max_length=1024)
    """Where the adapter lives (``s3://``, ``hf://``, ``pvc://`` or an absolute path), in PEFT's layout."""
    name: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    """Adapter name inside the model; defaults to ``adapter<index>``."""
    weight: float = Field(default=1.0, ge=-10.0, le=10.0)
    """Weight of this adapter in a merge-only combination."""


class AdaptersSpec(ApiModel):
    """Existing adapters: a starting point for training, or the inputs of a merge-only job."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.mergeOnly || size(self.sources) == 1",
                "training starts from at most one adapter; set mergeOnly to combine several",
                field_path=".sources",
            ),
        )
    )

    sources: list[AdapterSource] = Field(min_length=1, max_length=16)
    """The adapters, in order."""
    merge_only: bool = False
    """Do not train: combine the sources (weighted) and merge them into the base model for deployment."""
    combination: Literal["linear", "cat", "svd"] = "linear"
    """How several adapters are combined (peft's ``add_weighted_adapter``). ``linear`` needs equal ranks."""


class DatasetSpec(SourceAccess):
    """Training data."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.format == 'hf' ? self.uri.startsWith('hf://') : !self.uri.startsWith('hf://')",
                "format hf goes with an hf:// uri, and an hf:// uri with format hf",
                field_path=".format",
            ),
        )
    )

    uri: str = Field(pattern=URI_PATTERN, max_length=1024)
    """A file or prefix (``s3://``, ``pvc://``, absolute path) or a hub dataset (``hf://org/name``)."""
    format: Literal["jsonl", "csv", "parquet", "hf"] = "jsonl"
    """File format; ``hf`` loads a hub dataset."""
    split: str = Field(default="train", max_length=64)
    """Split to read from an ``hf`` dataset."""
    revision: str | None = Field(default=None, max_length=255)
    """Hub revision for ``hf://`` datasets."""
    template: Literal["text", "promptResponse", "chat"] = "text"
    """How records become tokens: plain text, prompt + response (loss on the response only), or chat messages
    rendered with the tokenizer's chat template."""
    text_field: str = Field(default="text", min_length=1, max_length=128)
    """Record field with the text (template ``text``)."""
    prompt_field: str = Field(default="prompt", min_length=1, max_length=128)
    """Record field with the prompt (template ``promptResponse``)."""
    response_field: str = Field(default="response", min_length=1, max_length=128)
    """Record field with the response (template ``promptResponse``)."""
    messages_field: str = Field(default="messages", min_length=1, max_length=128)
    """Record field with the list of ``{role, content}`` messages (template ``chat``)."""
    validation_split: float = Field(default=0.1, ge=0.0, le=0.5)
    """Fraction of records held out for evaluation (0 disables evaluation)."""
    max_samples: int | None = Field(default=None, ge=1)
    """Use at most this many records (after shuffling with the seed)."""


# --- methods ------------------------------------------------------------------------------


class LoraSpec(ApiModel):
    """LoRA settings (also used by QLoRA)."""

    r: int = Field(default=16, ge=1, le=1024)
    """Rank of the update matrices."""
    alpha: int = Field(default=32, ge=1, le=4096)
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: ["all-linear"], min_length=1, max_length=64
    )
    """Module names (or suffixes) to adapt; ``all-linear`` adapts every linear layer but the output head."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


class QuantizationSpec(ApiModel):
    """bitsandbytes quantization of the frozen base (QLoRA)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.bits == 4 || self.quantType == 'nf4'",
                "quantType fp4 applies to bits 4 only",
                field_path=".quantType",
            ),
        )
    )

    bits: Literal[4, 8] = 4
    """4-bit (NF4/FP4) or 8-bit (LLM.int8) base weights."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type (bits 4 only)."""
    double_quant: bool = True
    """Quantize the quantization constants too (4-bit only; ignored with bits 8)."""
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """dtype of the matmuls on dequantized weights."""


class PromptTuningSpec(ApiModel):
    """Prompt tuning settings."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.init != 'text' || (has(self.initText) && size(self.initText) > 0)",
                "init text requires initText",
                field_path=".initText",
            ),
        )
    )

    num_virtual_tokens: int = Field(default=20, ge=1, le=1024)
    """Number of trainable virtual tokens prepended to every input."""
    init: Literal["random", "text"] = "random"
    """Initialise the virtual tokens randomly or from the embedding of ``initText``."""
    init_text: str | None = Field(default=None, max_length=4096)
    """Text whose token embeddings initialise the virtual tokens (init ``text``)."""


# --- training, resources, distribution ---------------------------------------------------


class TrainingSpec(ApiModel):
    """The optimisation loop."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.maxSteps) != has(self.epochs)",
                "set exactly one of maxSteps and epochs",
                field_path=".maxSteps",
            ),
            cel(
                "!has(self.maxSteps) || self.warmupSteps < self.maxSteps",
                "warmupSteps must be less than maxSteps",
                field_path=".warmupSteps",
            ),
        )
    )

    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    """Optimizer steps to run (one of maxSteps and epochs)."""
    epochs: float | None = Field(default=None, gt=0, le=1000)
    """Passes over the training data (one of maxSteps and epochs)."""
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0)
    """Peak learning rate."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constantWithWarmup"] = "cosine"
    """Learning-rate schedule after warmup."""
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    """Linear warmup steps."""
    per_device_batch_size: int = Field(default=4, ge=1, le=4096)
    """Sequences (packed rows with packing) per process per micro-step."""
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    """Micro-steps per optimizer step."""
    max_seq_length: int = Field(default=1024, ge=8, le=262144)
    """Sequences are truncated (or packed) to this many tokens."""
    packing: bool = False
    """Pack whole examples into rows of up to maxSeqLength tokens without padding (any template; each
    example keeps its own positions and attends only to itself)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Mixed-precision mode of the forward/backward pass."""
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    """Seed for data order, initialisation and dropout; runs are reproducible per seed."""
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw"
    """Optimizer for the trainable parameters."""
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    """Decoupled weight decay."""
    max_grad_norm: float = Field(default=1.0, ge=0.0, le=1e6)
    """Gradient clipping norm (0 disables clipping)."""
    log_every_steps: int = Field(default=10, ge=1, le=1_000_000)
    """Report progress every N optimizer steps."""
    eval_every_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    """Evaluate on the validation split every N steps (always before and after training)."""


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "value must be empty when operator is Exists",
                field_path=".value",
            ),
        )
    )

    key: str | None = Field(default=None, max_length=316)
    """Taint key the toleration applies to."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"


class ResourcesSpec(ApiModel):
    """Where and on what the workers run: one pod per node, one process per GPU."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.gpusPerNode == 0 || !has(self.processesPerNode) || self.processesPerNode == self.gpusPerNode",
                "with GPUs, processesPerNode must equal gpusPerNode (one process per GPU)",
                field_path=".processesPerNode",
            ),
        )
    )

    nodes: int = Field(default=1, ge=1, le=512)
    """Number of worker pods (one per node)."""
    gpus_per_node: int = Field(default=1, ge=0, le=16)
    """GPUs per worker pod (``nvidia.com/gpu``); 0 trains on CPU."""
    processes_per_node: int | None = Field(default=None, ge=1, le=64)
    """Training processes per pod; defaults to gpusPerNode (1 on CPU)."""
    cpu: str | None = Field(default=None, max_length=64, pattern=QUANTITY_PATTERN)
    """CPU request and limit per worker pod (a Kubernetes quantity)."""
    memory: str | None = Field(default=None, max_length=64, pattern=QUANTITY_PATTERN)
    """Memory request and limit per worker pod (a Kubernetes quantity)."""
    shared_memory: str = Field(default="1Gi", max_length=64, pattern=QUANTITY_PATTERN)
    """Size of the in-memory /dev/shm volume (NCCL and data loaders need more than the default 64Mi)."""
    scratch: str | None = Field(default=None, max_length=64, pattern=QUANTITY_PATTERN)
    """Size limit of the scratch volume for model and data downloads (emptyDir)."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict, max_length=32)
    """Node labels the workers must match."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the workers tolerate."""
    affinity: dict[str, Any] | None = Field(
        default=None, max_length=3, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A core/v1 Affinity for the worker pods, passed through unchanged."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass of the worker pods."""
    image: str | None = Field(default=None, max_length=1024)
    """Trainer image override; defaults to the operator's GPU or CPU trainer image."""


class DistributedSpec(ApiModel):
    """How the processes share the work."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                # has(): the API server checks rules against the `{}` default as written at CRD creation.
                "!has(self.offloadParams) || !self.offloadParams"
                " || (self.backend == 'deepspeed' && self.zeroStage == 3)",
                "offloadParams needs backend deepspeed with zeroStage 3",
                field_path=".offloadParams",
            ),
            cel(
                "!has(self.offloadOptimizer) || !self.offloadOptimizer || self.backend == 'deepspeed'",
                "offloadOptimizer needs backend deepspeed",
                field_path=".offloadOptimizer",
            ),
        )
    )

    backend: Literal["ddp", "deepspeed"] = "ddp"
    """Data parallel through accelerate (DDP) or DeepSpeed ZeRO."""
    zero_stage: Literal[2, 3] = 2
    """ZeRO stage for backend deepspeed: 2 shards optimizer state and gradients, 3 also parameters."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory (deepspeed)."""
    offload_params: bool = False
    """Keep parameters in CPU memory (deepspeed, ZeRO-3)."""


# --- volumes, output, checkpoints, run policy ---------------------------------------------


def _mount_of(volume: str) -> str:
    """CEL: the effective mount path of a ``spec.volumes`` item (as :meth:`VolumeSpec.effective_mount_path`)."""
    return f"(has({volume}.mountPath) ? {volume}.mountPath : '{DEFAULT_VOLUME_ROOT}/' + {volume}.claimName)"


def _reserved_rule() -> str:
    """CEL: a mount path is neither on, inside nor above a folder the worker uses itself."""
    reserved = ", ".join(f"'{path}'" for path in RESERVED)
    clear = "self.mountPath != p && !self.mountPath.startsWith(p + '/') && !p.startsWith(self.mountPath + '/')"
    return f"!has(self.mountPath) || [{reserved}].all(p, {clear})"


class VolumeSpec(ApiModel):
    """A PersistentVolumeClaim mounted into every worker pod: read-only, unless the output is on it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                _reserved_rule(),
                f"mountPath must not be on, inside or above a folder the worker uses itself ({', '.join(RESERVED)})",
                field_path=".mountPath",
            ),
            cel(
                "!has(self.mountPath) || !self.mountPath.matches('//|/[.][.]?(/|$)')",
                "mountPath must be a plain absolute path (no empty, '.' or '..' segments)",
                field_path=".mountPath",
            ),
        )
    )

    claim_name: str = Field(min_length=1, max_length=253, pattern=f"^{CLAIM_NAME_PATTERN}$")
    """Name of the PersistentVolumeClaim in the job's namespace; ``pvc://<claimName>/path`` names a path on it."""
    mount_path: str | None = Field(default=None, max_length=1024, pattern=r"^/[^\s]*[^/\s]$")
    """Where the claim is mounted in the workers (default ``/mnt/kubepeft/volumes/<claimName>``); absolute
    paths under it work like ``pvc://`` URIs. Each volume has its own, not inside another's, and not on,
    inside or above a folder the worker uses itself (``/etc/kubepeft``, ``/var/run/secrets``, ``/scratch``,
    ``/tmp``, ``/cache``, ``/dev/shm``, ``/opt/venv``, ``/usr``, ``/bin``, ``/sbin``, ``/lib``, ``/lib64``, ``/proc``,
    ``/sys``)."""

    def effective_mount_path(self) -> str:
        return self.mount_path or f"{DEFAULT_VOLUME_ROOT}/{self.claim_name}"


def _declared_claim(uri: str) -> str:
    """CEL: a ``pvc://`` URI names a claim of ``spec.volumes``."""
    on_claim = f"{uri} == 'pvc://' + v.claimName || {uri}.startsWith('pvc://' + v.claimName + '/')"
    return f"!{uri}.startsWith('pvc://') || (has(self.volumes) && self.volumes.exists(v, {on_claim}))"


def _no_parent_segments(uri: str) -> str:
    """CEL: a ``pvc://`` URI or an absolute path has no ``..`` segment (it could leave its claim)."""
    return f"!({uri}.startsWith('pvc://') || {uri}.startsWith('/')) || !{uri}.matches('/[.][.](/|$)')"


def _distinct_mounts() -> str:
    """CEL: no two volumes share a mount path, and none is mounted inside another."""
    a, b = _mount_of("a"), _mount_of("b")
    own = f"self.volumes.exists_one(b, {b} == {a})"
    return f"!has(self.volumes) || self.volumes.all(a, {own} && self.volumes.all(b, !{a}.startsWith({b} + '/')))"


class OutputSpec(ApiModel):
    """Where artifacts go: ``<uri>/<namespace>/<job>/{checkpoints/,adapter/,merged/,manifest.json}``."""

    uri: str = Field(pattern=OUTPUT_URI_PATTERN, max_length=1024)
    """``s3://bucket/prefix``, ``pvc://claim/path`` or an absolute path on a volume of ``spec.volumes``."""
    endpoint: str | None = Field(default=None, max_length=1024, pattern=ENDPOINT_PATTERN)
    """S3-compatible endpoint URL; empty means AWS (or the local run's embedded server)."""
    region: str = Field(default="us-east-1", max_length=64)
    """S3 region."""
    force_path_style: bool = True
    """Path-style addressing (most S3-compatible servers need it)."""
    credentials_secret_ref: CredentialsSecretRef | None = None
    """Secret with S3 keys; without it the standard AWS credential chain applies."""
    merge: bool = False
    """Also export the base model with the adapter merged in (LoRA/QLoRA only)."""
    merged_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """dtype of the merged model's weights."""
    max_shard_size: str = Field(default="5GB", max_length=16, pattern=r"^[0-9]+(KB|MB|GB)$")
    """Largest safetensors shard of the merged model."""


class CheckpointingSpec(ApiModel):
    """Periodic checkpoints used for automatic resume."""

    every_steps: int = Field(default=100, ge=1, le=10_000_000)
    """Write a checkpoint every N optimizer steps; at most this much work is redone after a failure."""
    keep: int = Field(default=2, ge=1, le=100)
    """Complete checkpoints to keep; older ones are deleted only after a newer one completes."""


class RunPolicy(ApiModel):
    """Lifecycle knobs, as in Kubeflow's runPolicy."""

    backoff_limit: int = Field(default=3, ge=0, le=100, json_schema_extra=immutable())
    """Attempts after the first before the job fails (retryable failures only)."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, json_schema_extra=immutable())
    """Fail the job (DeadlineExceeded) after this long since it started."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, json_schema_extra=immutable())
    """Delete the job and its children this long after it succeeds or fails."""
    suspend: bool = False
    """Tear the workers down and keep checkpoints; unsuspending resumes from them."""


# --- the spec -----------------------------------------------------------------------------

# Optional spec sections: adding or removing one after creation is refused by the spec-level rule;
# changing one is refused by the section's own transition rule (`self == oldSelf`).
OPTIONAL_SECTIONS = ("lora", "quantization", "promptTuning", "adapters", "dataset", "training", "volumes")
# runPolicy fields fixed at creation too: only suspend may change on a created job.
OPTIONAL_RUN_POLICY_FIELDS = ("activeDeadlineSeconds", "ttlSecondsAfterFinished")


def _presence_rule() -> str:
    """CEL: every optional section (and optional runPolicy field) is present before and after, or neither."""
    paths = [*OPTIONAL_SECTIONS, *(f"runPolicy.{name}" for name in OPTIONAL_RUN_POLICY_FIELDS)]
    return " && ".join(f"has(self.{path}) == has(oldSelf.{path})" for path in paths)


class PeftJobSpec(ApiModel):
    """What to fine-tune, on what, and where the results go."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.method != 'qlora' || has(self.quantization)",
                "method qlora requires quantization",
                field_path=".quantization",
            ),
            cel(
                "self.method == 'qlora' || !has(self.quantization)",
                "quantization applies to method qlora only",
                field_path=".quantization",
            ),
            cel(
                "self.method != 'promptTuning' || !has(self.lora)",
                "lora settings do not apply to method promptTuning",
                field_path=".lora",
            ),
            cel(
                "self.method == 'promptTuning' || !has(self.promptTuning)",
                "promptTuning settings apply to method promptTuning only",
                field_path=".promptTuning",
            ),
            cel(
                "self.method != 'promptTuning' || !self.output.merge",
                "merge applies to methods lora and qlora only",
                field_path=".output.merge",
            ),
            cel(
                "!has(self.adapters) || !self.adapters.mergeOnly || self.method != 'promptTuning'",
                "merge-only jobs combine LoRA adapters; method must be lora or qlora",
                field_path=".adapters.mergeOnly",
            ),
            cel(
                "has(self.training) || (has(self.adapters) && self.adapters.mergeOnly)",
                "training is required unless adapters.mergeOnly is true",
                field_path=".training",
            ),
            cel(
                "has(self.dataset) || (has(self.adapters) && self.adapters.mergeOnly)",
                "dataset is required unless adapters.mergeOnly is true",
                field_path=".dataset",
            ),
            cel(
                "!has(self.adapters) || !self.adapters.mergeOnly || self.output.merge",
                "a merge-only job must set output.merge",
                field_path=".output.merge",
            ),
            cel(
                "self.distributed.backend != 'deepspeed' || self.method != 'qlora'",
                "qlora runs with backend ddp (bitsandbytes 4/8-bit weights cannot be ZeRO-partitioned)",
                field_path=".distributed.backend",
            ),
            cel(
                "!has(self.adapters) || !self.adapters.mergeOnly || (!has(self.training) && !has(self.dataset))",
                "a merge-only job does not train: remove training and dataset",
                field_path=".adapters.mergeOnly",
            ),
            cel(
                "!has(self.training) || !self.training.packing || self.method != 'promptTuning'",
                "packing does not apply to method promptTuning (every example needs its own soft prompt)",
                field_path=".training.packing",
            ),
            cel(
                _declared_claim("self.model.uri"),
                "model.uri names a claim not in spec.volumes",
                field_path=".model.uri",
            ),
            cel(
                f"!has(self.dataset) || ({_declared_claim('self.dataset.uri')})",
                "dataset.uri names a claim not in spec.volumes",
                field_path=".dataset.uri",
            ),
            cel(
                f"!has(self.adapters) || self.adapters.sources.all(s, {_declared_claim('s.uri')})",
                "an adapters.sources uri names a claim not in spec.volumes",
                field_path=".adapters.sources",
            ),
            cel(
                _declared_claim("self.output.uri"),
                "output.uri names a claim not in spec.volumes",
                field_path=".output.uri",
            ),
            cel(
                "!has(self.volumes) || self.volumes.all(a, self.volumes.exists_one(b, b.claimName == a.claimName))",
                "each claim is declared once in spec.volumes",
                field_path=".volumes",
            ),
            cel(
                _distinct_mounts(),
                "each volume needs its own mountPath, not inside another volume's",
                field_path=".volumes",
            ),
            cel(
                _no_parent_segments("self.model.uri"),
                "model.uri must not contain '..' segments",
                field_path=".model.uri",
            ),
            cel(
                f"!has(self.dataset) || ({_no_parent_segments('self.dataset.uri')})",
                "dataset.uri must not contain '..' segments",
                field_path=".dataset.uri",
            ),
            cel(
                f"!has(self.adapters) || self.adapters.sources.all(s, {_no_parent_segments('s.uri')})",
                "an adapters.sources uri must not contain '..' segments",
                field_path=".adapters.sources",
            ),
            cel(
                _no_parent_segments("self.output.uri"),
                "output.uri must not contain '..' segments",
                field_path=".output.uri",
            ),
            cel(_presence_rule(), IMMUTABLE_MESSAGE, reason="FieldValueForbidden"),
        )
    )

    method: Literal["lora", "qlora", "promptTuning"] = Field(json_schema_extra=immutable())
    """The PEFT method."""
    model: ModelSpec = Field(json_schema_extra=immutable())
    """The base model."""
    lora: LoraSpec | None = Field(default=None, json_schema_extra=immutable())
    """LoRA settings for methods lora and qlora (defaults apply when omitted)."""
    quantization: QuantizationSpec | None = Field(default=None, json_schema_extra=immutable())
    """Base-model quantization; required for qlora."""
    prompt_tuning: PromptTuningSpec | None = Field(default=None, json_schema_extra=immutable())
    """Prompt tuning settings for method promptTuning (defaults apply when omitted)."""
    adapters: AdaptersSpec | None = Field(default=None, json_schema_extra=immutable())
    """Existing adapters to start from, or to merge without training."""
    dataset: DatasetSpec | None = Field(default=None, json_schema_extra=immutable())
    """Training data (not needed for merge-only jobs)."""
    training: TrainingSpec | None = Field(default=None, json_schema_extra=immutable())
    """The optimisation loop (not needed for merge-only jobs)."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, json_schema_extra=immutable())
    """Workers: nodes, GPUs, CPU/memory, placement, image."""
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, json_schema_extra=immutable())
    """DDP or DeepSpeed ZeRO."""
    volumes: list[VolumeSpec] | None = Field(default=None, max_length=8, json_schema_extra=immutable())
    """PersistentVolumeClaims to mount into the workers, for ``pvc://`` (or absolute-path) inputs and output."""
    output: OutputSpec = Field(json_schema_extra=immutable())
    """Where checkpoints, the adapter, the merged model and the manifest are written."""
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, json_schema_extra=immutable())
    """Checkpoint interval and retention."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    """Retries, deadline, TTL, suspend."""

    def effective_lora(self) -> LoraSpec:
        return self.lora or LoraSpec()

    def effective_prompt_tuning(self) -> PromptTuningSpec:
        return self.prompt_tuning or PromptTuningSpec()

    def processes_per_node(self) -> int:
        if self.resources.processes_per_node:
            return self.resources.processes_per_node
        return max(1, self.resources.gpus_per_node)

    def is_merge_only(self) -> bool:
        return bool(self.adapters and self.adapters.merge_only)


# --- status -------------------------------------------------------------------------------

Phase = Literal["Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]


class Condition(ApiModel):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="allow")

    type: str
    """Condition type: Created, Running, Restarting, Succeeded, Failed or Suspended."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """CamelCase reason, e.g. DeadlineExceeded, BackoffLimitExceeded, InvalidSpec."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


class _ProgressDisplay(ApiModel):
    # A base of Progress only so that ``display`` stays the first property of the status schema.
    display: str | None = None
    """``step/totalSteps`` as text, for ``kubectl get`` (the operator fills it in)."""


class TrainingProgress(ApiModel):
    """Progress as the trainer measures it: the ``progress`` block of its report
    (``kubepeft.contract.ReportProgress``) and the measured part of ``.status.progress``."""

    step: int | None = None
    """Optimizer steps done."""
    total_steps: int | None = None
    """Optimizer steps planned."""
    epoch: float | None = None
    """Fractional epoch."""
    loss: float | None = None
    """Training loss over the last reporting interval."""
    eval_loss: float | None = None
    """Latest validation loss."""
    learning_rate: float | None = None
    """Current learning rate."""
    tokens_per_second: float | None = None
    """Training throughput (all ranks, real tokens)."""
    eta_seconds: int | None = None
    """Estimated seconds to the end of training."""


class Progress(TrainingProgress, _ProgressDisplay):
    """Live training progress reported by the trainer."""

    last_update_time: str | None = None
    """When the trainer last reported (RFC 3339)."""


class Artifacts(ApiModel):
    """Where the results are; each set is complete only once its manifest exists. The trainer's
    report carries the same block (``kubepeft.contract.ReportArtifacts`` derives from this class)."""

    adapter: str | None = None
    """URI of the exported adapter (PEFT layout)."""
    merged: str | None = None
    """URI of the merged model (safetensors shards + tokenizer)."""
    manifest: str | None = None
    """URI of the job's manifest.json (sha256 of every file, written last)."""
    latest_checkpoint: str | None = None
    """URI of the latest complete checkpoint."""
    loss_curve: str | None = None
    """URI of the loss-curve PNG."""


class PeftJobStatus(ApiModel):
    """Observed state, written by the operator."""

    model_config = ConfigDict(extra="forbid")

    phase: Phase | None = None
    """Created, Running, Restarting, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """metav1-style conditions."""
    observed_generation: int | None = None
    """The spec generation the status reflects."""
    start_time: str | None = None
    """When the first attempt started (RFC 3339)."""
    completion_time: str | None = None
    """When the job succeeded or failed (RFC 3339)."""
    attempts: int = 0
    """Attempts started so far."""
    progress: Progress | None = None
    """Live training progress."""
    artifacts: Artifacts | None = None
    """Artifact URIs."""
    eval_loss_before: float | None = None
    """Validation loss of the base (or starting adapter) before training."""
    message: str | None = None
    """Human-readable summary of the current state."""


class ObjectMeta(ApiModel):
    """The parts of metadata kubepeft reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None


class PeftJob(ApiModel):
    """A parameter-efficient fine-tuning job."""

    api_version: Literal["kubepeft.dev/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    """APIVersion defines the versioned schema of this representation of an object."""
    kind: Literal["PeftJob"] = KIND  # type: ignore[assignment]
    """Kind is a string value representing the REST resource this object represents."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: PeftJobSpec
    """What to fine-tune, on what, and where the results go."""
    status: PeftJobStatus | None = None
    """Observed state, written by the operator."""
