"""Settings from the environment: the base every plane's settings model derives from.

Each plane has exactly one typed model of its ``KUBEPEFT_*`` variables (the core's in
``kubepeft.local``/``kubepeft.storage``, the operator's in ``kubepeft_operator.settings``, the
trainer's in ``kubepeft_trainer.settings``). A model is read once, at the start of a process,
with :meth:`PlaneSettings.load`; a malformed value is a :class:`SettingsError` naming the variable.
``docs/settings.md`` is generated from the models (``hack/settings_table.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, get_origin

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "KUBEPEFT_"


class SettingsError(ValueError):
    """A setting is malformed; the process refuses to start. The message names the variable."""


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ`` (tests, and
    callers that build a child's environment)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # Names are matched case-insensitively, as the process environment is (case_sensitive=False).
        self.env_vars = {key.lower(): value for key, value in environ.items() if value or not self.env_ignore_empty}


class PlaneSettings(BaseSettings):
    """Base of the settings models: ``KUBEPEFT_<FIELD>`` variables, frozen.
    An empty variable counts as unset (Helm renders unset values as empty strings)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
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
        # Only the environment: no .env files or secret folders are read behind the user's back.
        return (init_settings, env_settings)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the settings from ``environ`` (default: the process environment)."""
        try:
            if environ is None:
                return cls()
            source = _MappingEnvSource(cls, environ)
            return cls.model_validate(source())
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None
        except SourceError as exc:  # a complex value (list, dict) that is not JSON
            field = next((name for name in cls.model_fields if f'"{name}"' in str(exc)), "")
            name = cls.variable(field) if field else "a KUBEPEFT_ variable"
            raise SettingsError(f"{name} is not valid JSON") from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of one field."""
        return ENV_PREFIX + field.upper()


def _describe(cls: type[PlaneSettings], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = cls.variable(field) if field in cls.model_fields else field
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, str) else ""
        problems.append(f"{name}: {error['msg']}{shown}")
    return "; ".join(problems)


@dataclass(frozen=True)
class SettingRow:
    """One row of the generated settings table."""

    variable: str
    type: str
    default: str
    description: str


def rows(cls: type[PlaneSettings]) -> list[SettingRow]:
    """The documented variables of one settings model, in declaration order."""
    out = []
    for name, info in cls.model_fields.items():
        annotation: Any = info.annotation
        generic = get_origin(annotation) is not None
        plain = getattr(annotation, "__name__", str(annotation))
        type_name = str(annotation).replace("typing.", "") if generic else plain
        default = info.get_default(call_default_factory=True)
        out.append(
            SettingRow(
                variable=cls.variable(name),
                type=type_name,
                default="" if default in (None, "", (), [], {}) else str(default),
                description=(info.description or "").strip(),
            )
        )
    return out
