"""Settings from the environment: the base every plane's settings model derives from, and the core's.

Each plane has exactly one typed model of its ``KUBEPEFT_*`` variables (the core's
:class:`CoreSettings` here, the operator's in ``kubepeft_operator.settings``, the trainer's in
``kubepeft_trainer.settings``). A model is read once, at the start of a process, with
:meth:`PlaneSettings.load`; a malformed value is a :class:`SettingsError` naming the variable.
Constructing a model directly (``OperatorSettings(resync_seconds=2)``) never reads the
environment: only ``load`` does. ``docs/settings.md`` is generated from the models
(``hack/settings_table.py``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import Field, PositiveInt, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "KUBEPEFT_"
_SHOWN_CHARS = 80  # a bad value is quoted in the error, cut to this length

CsvList = Annotated[tuple[str, ...], NoDecode]
"""A comma-separated list (``a, b,,c`` -> ``("a", "b", "c")``), as the Helm chart renders lists
with ``join ","``; parse it with :func:`split_csv` in a ``mode="before"`` validator."""


class SettingsError(ValueError):
    """A setting is malformed; the process refuses to start. The message names the variable."""


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping (the process environment, or a test's)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Surrounding whitespace is never meant (a quoted YAML value, a stray space): stripped,
        # so a blank variable is unset like an empty one.
        stripped = {key: value.strip() for key, value in self._environ.items()}
        return parse_env_vars(stripped, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class PlaneSettings(BaseSettings):
    """Base of the settings models: ``KUBEPEFT_<FIELD>`` variables, frozen.

    Values are stripped; an empty variable counts as unset (Helm renders unset values as empty
    strings). A field validator of a derived model raises ``ValueError("<what it must be>")``:
    the error then reads ``KUBEPEFT_X must be <what it must be>, not '<value>'``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Direct construction takes only its arguments: the environment is read by ``load``
        # alone, so a model built in code (tests, harnesses) never picks up a stray variable.
        # No .env files or secret folders are read behind the user's back either.
        return (init_settings,)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        try:
            values = _MappingEnvSource(cls, env)()
        except SourceError as exc:  # a complex value (list, dict) that is not JSON
            field = next((name for name in cls.model_fields if f'"{name}"' in str(exc)), "")
            if not field:
                raise SettingsError(f"a {ENV_PREFIX} variable is not valid JSON") from None
            raise SettingsError(f"{cls.variable(field)} must be valid JSON, not {_shown(cls, field, env)}") from None
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError("; ".join(_describe(cls, error, env) for error in exc.errors())) from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of one field."""
        return ENV_PREFIX + field.upper()


def split_csv(value: Any) -> Any:
    """A comma-separated string as a tuple of its non-empty, stripped items; anything else as is."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _raw(cls: type[PlaneSettings], field: str, environ: Mapping[str, str]) -> str | None:
    wanted = cls.variable(field)
    return next((value for key, value in environ.items() if key.upper() == wanted), None)


def _shown(cls: type[PlaneSettings], field: str, environ: Mapping[str, str]) -> str:
    raw = _raw(cls, field, environ) or ""
    return repr(raw if len(raw) <= _SHOWN_CHARS else raw[:_SHOWN_CHARS] + "...")


def _describe(cls: type[PlaneSettings], error: ErrorDetails, environ: Mapping[str, str]) -> str:
    """``KUBEPEFT_X must be <expectation>, not '<value>'`` for one validation error."""
    loc = error["loc"]
    field = str(loc[0]) if loc else ""
    if field not in cls.model_fields:
        return f"{field or 'settings'}: {error['msg']}"
    message = error["msg"].removeprefix("Value error, ")
    expectation = message.removeprefix("Input should be ").split(", unable to parse")[0]
    where = f" (at {'.'.join(str(part) for part in loc[1:])})" if len(loc) > 1 else ""
    return f"{cls.variable(field)} must be {expectation}{where}, not {_shown(cls, field, environ)}"


class CoreSettings(PlaneSettings):
    """The core's variables: S3 transfer tuning, read by every process that opens a store.

    Defaults were measured against SeaweedFS on a 2-core machine (``docs/storage.md``, Tuning)."""

    s3_part_mb: PositiveInt = Field(
        16, description="Multipart part size (and the size above which uploads go multipart), in MiB."
    )
    s3_concurrency: PositiveInt = Field(8, description="Parallel part transfers per file.")
    s3_max_attempts: PositiveInt = Field(
        10, description="Attempts per S3 request (botocore retries) and per interrupted download."
    )
    s3_retry_mode: Literal["standard", "adaptive", "legacy"] = Field("standard", description="botocore's retry mode.")


@functools.cache
def core_settings() -> CoreSettings:
    """This process's core settings, read from its environment once, when first needed (never at
    import). Raises :class:`SettingsError`; a failed read is not cached."""
    return CoreSettings.load()


@dataclass(frozen=True)
class SettingRow:
    """One row of the generated settings table."""

    variable: str
    type: str
    default: str
    description: str


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type for the table."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return " \\| ".join(repr(arg) for arg in get_args(annotation))
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(type_name(arg) for arg in args)}]"


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _bounds(metadata: list[Any]) -> str:
    """`` > 0`` for a PositiveInt: the numeric bounds of a field, as the table shows them."""
    found = [f" {sign} {getattr(item, bound)}" for item in metadata for bound, sign in _BOUNDS if hasattr(item, bound)]
    return "".join(found)


def rows(cls: type[PlaneSettings]) -> list[SettingRow]:
    """The documented variables of one settings model, in declaration order."""
    out = []
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        out.append(
            SettingRow(
                variable=cls.variable(name),
                type=type_name(info.annotation) + _bounds(info.metadata),
                default="" if default in (None, "", (), [], {}) else str(default),
                description=(info.description or "").strip(),
            )
        )
    return out
