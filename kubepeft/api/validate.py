"""Offline PeftJob validation with the same rules the API server applies from the generated CRD.

Order, as in the API server: apply the schema's defaults, check the structural schema (unknown
fields rejected, as ``kubectl --validate=strict`` does), then evaluate every
``x-kubernetes-validations`` CEL rule at its node with cel-python. Transition rules (those that
read ``oldSelf``) need a previous object and are skipped. A node with schema errors inside it
does not get its CEL rules evaluated: the rules assume well-typed input.

Everything here is pure; :mod:`kubepeft.api.validate_cmd` does the file I/O and printing.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
import yaml

from kubepeft.api import crd, models

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OLD_SELF = re.compile(r"\boldSelf\b")


@dataclass(frozen=True, order=True)
class FieldError:
    """One problem with one field of one object."""

    path: str
    """Field path such as ``spec.lora.r`` or ``spec.resources.tolerations[0].effect``."""
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


@dataclass(frozen=True)
class DocumentResult:
    """The outcome for one PeftJob document of a file."""

    label: str
    """``<file>``, or ``<file>#<n>`` (1-based) when the file holds several documents."""
    errors: tuple[FieldError, ...]

    def lines(self) -> list[str]:
        if not self.errors:
            return [f"{self.label}: ok"]
        return [f"{self.label}: {error}" for error in self.errors]


@dataclass(frozen=True)
class FileResult:
    source: str
    documents: tuple[DocumentResult, ...] = ()
    problem: str | None = None
    """A problem with the file as a whole (unreadable, YAML syntax, no PeftJob in it)."""

    @property
    def ok(self) -> bool:
        return self.problem is None and all(not doc.errors for doc in self.documents)

    def lines(self) -> list[str]:
        if self.problem is not None:
            return [self.problem]
        return [line for doc in self.documents for line in doc.lines()]


# --- paths --------------------------------------------------------------------------------


def join_path(base: str, key: str | int) -> str:
    """``spec`` + ``lora`` -> ``spec.lora``; list index -> ``[0]``; odd map keys -> ``[kubernetes.io/os]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{base}.{key}" if base else key
    return f"{base}[{key}]"


def _path_of(parts: Iterator[str | int] | list[str | int]) -> str:
    path = ""
    for part in parts:
        path = join_path(path, part)
    return path


def _within(path: str, node_path: str) -> bool:
    return path == node_path or path.startswith(node_path + ".") or path.startswith(node_path + "[") or not node_path


# --- schema -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def crd_schema() -> dict[str, Any]:
    """The generated CRD's openAPIV3Schema (computed once)."""
    return crd.version_schema()


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields forbidden wherever it lists properties (kubectl --validate=strict)."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict_schema(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = strict_schema(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(out["additionalProperties"])
    return out


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    # Draft 4 matches OpenAPI v3.0's boolean exclusiveMinimum/exclusiveMaximum.
    return jsonschema.Draft4Validator(strict_schema(crd_schema()))


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, top-down like the API server."""
    if isinstance(value, dict):
        out = dict(value)
        properties: dict[str, Any] = schema.get("properties", {})
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in out:
                if name not in properties:
                    out[name] = apply_defaults(extra, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def _type_name(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _bound(error: jsonschema.ValidationError, op: str, strict_op: str, exclusive_key: str) -> str:
    exclusive = bool(error.schema.get(exclusive_key)) if isinstance(error.schema, dict) else False
    return f"must be {strict_op if exclusive else op} {error.validator_value}, got {_show(error.instance)}"


def _schema_error(error: jsonschema.ValidationError) -> list[FieldError]:
    """One jsonschema error -> field errors with a path and a short, Kubernetes-like reason."""
    path = _path_of(list(error.absolute_path))
    kind, limit, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        return [
            FieldError(join_path(path, name), "required field is missing")
            for name in limit
            if isinstance(instance, dict) and name not in instance
        ]
    if kind == "additionalProperties":
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [FieldError(join_path(path, name), "unknown field") for name in instance if name not in known]
    reasons = {
        "type": lambda: f"must be of type {limit}, got {_type_name(instance)} {_show(instance)}",
        "enum": lambda: f"unsupported value {_show(instance)}: supported values: {', '.join(_show(v) for v in limit)}",
        "minimum": lambda: _bound(error, ">=", ">", "exclusiveMinimum"),
        "maximum": lambda: _bound(error, "<=", "<", "exclusiveMaximum"),
        "minLength": lambda: f"must be at least {_count(limit, 'character')} long",
        "maxLength": lambda: f"must be at most {_count(limit, 'character')} long",
        "minItems": lambda: f"must have at least {_count(limit, 'item')}",
        "maxItems": lambda: f"must have at most {_count(limit, 'item')}",
        "maxProperties": lambda: f"must have at most {_count(limit, 'entry', 'entries')}",
        "pattern": lambda: f"invalid value {_show(instance)}: must match {limit}",
    }
    reason = reasons.get(kind, lambda: error.message)()
    return [FieldError(path, reason)]


def schema_errors(obj: Any) -> list[FieldError]:
    """Structural-schema problems of a (defaulted) PeftJob object."""
    found: set[FieldError] = set()
    for error in _validator().iter_errors(obj):
        found.update(_schema_error(error))
    return sorted(found)


# --- CEL ----------------------------------------------------------------------------------

_CEL_ENV = celpy.Environment()


@functools.cache
def compiled_rule(rule: str) -> celpy.Runner:
    """A CEL rule compiled once per process (raises celpy.CELParseError on bad syntax)."""
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def is_transition_rule(rule: str) -> bool:
    return bool(_OLD_SELF.search(rule))


def _to_cel_json(schema: dict[str, Any], value: Any) -> Any:
    """Integers in ``type: number`` fields become doubles, as the API server's CEL typing does."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: _to_cel_json(properties.get(k, extra if isinstance(extra, dict) else {}), v) for k, v in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items")
        return [_to_cel_json(items if isinstance(items, dict) else {}, v) for v in value]
    return value


def cel_value(value: Any, schema: dict[str, Any] | None = None) -> Any:
    """A JSON value as a CEL value, typed by its schema."""
    return celpy.json_to_cel(_to_cel_json(schema or {}, value))


def evaluate_rule(rule: str, value: Any, schema: dict[str, Any] | None = None, *, old_value: Any = None) -> bool | str:
    """True/False for the rule on ``self = value`` (and ``oldSelf``); an error text when evaluation fails."""
    return _evaluate(rule, cel_value(value, schema), None if old_value is None else cel_value(old_value, schema))


def _evaluate(rule: str, cel_self: Any, cel_old_self: Any = None) -> bool | str:
    activation = {"self": cel_self}
    if cel_old_self is not None:
        activation["oldSelf"] = cel_old_self
    try:
        result = compiled_rule(rule).evaluate(activation)
    except celpy.CELEvalError as error:
        return f"could not be evaluated: {error.args[0] if error.args else error}"
    if isinstance(result, celpy.CELEvalError):
        return f"could not be evaluated: {result.args[0] if result.args else result}"
    return bool(result)


def iter_rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every (schema path, node schema, rule) of a schema; list items appear as ``path[]``."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, schema, rule
    for name, sub in schema.get("properties", {}).items():
        yield from iter_rules(sub, join_path(path, name))
    if isinstance(schema.get("items"), dict):
        yield from iter_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_rules(schema["additionalProperties"], f"{path}[*]")


def cel_errors(
    schema: dict[str, Any], value: Any, path: str = "", skip: frozenset[str] = frozenset()
) -> list[FieldError]:
    """Evaluate every non-transition rule at its node; nodes containing a path in ``skip`` are left out."""
    if any(_within(bad, path) for bad in skip):
        # Still descend: siblings of the broken field may carry their own rules.
        own: list[FieldError] = []
    else:
        own = []
        rules = [r for r in schema.get("x-kubernetes-validations", []) if not is_transition_rule(r["rule"])]
        cel_self = cel_value(value, schema) if rules else None
        for rule in rules:
            outcome = _evaluate(rule["rule"], cel_self)
            if outcome is True:
                continue
            target = path + rule.get("fieldPath", "") if path else rule.get("fieldPath", "").lstrip(".")
            reason = rule["message"] if outcome is False else f"rule {rule['rule']!r} {outcome}"
            own.append(FieldError(target, reason))
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        for name, sub in properties.items():
            if name in value:
                own.extend(cel_errors(sub, value[name], join_path(path, name), skip))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in properties:
                    own.extend(cel_errors(extra, item, join_path(path, name), skip))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            own.extend(cel_errors(schema["items"], item, join_path(path, index), skip))
    return own


# --- identity: apiVersion, kind, metadata -------------------------------------------------


def claims_peftjob(doc: Any) -> bool:
    """Whether a document is meant as a PeftJob: our API group, or kind PeftJob."""
    if not isinstance(doc, dict):
        return False
    api_version = doc.get("apiVersion")
    return doc.get("kind") == models.KIND or (
        isinstance(api_version, str) and api_version.split("/")[0] == models.GROUP
    )


def identity_errors(doc: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version is None:
        errors.append(FieldError("apiVersion", "required field is missing"))
    elif api_version != models.API_VERSION:
        errors.append(
            FieldError("apiVersion", f"unsupported value {_show(api_version)}: expected {models.API_VERSION}")
        )
    if kind is None:
        errors.append(FieldError("kind", "required field is missing"))
    elif kind != models.KIND:
        errors.append(FieldError("kind", f"unsupported value {_show(kind)}: expected {models.KIND}"))
    metadata = doc.get("metadata")
    if metadata is None:
        return [*errors, FieldError("metadata.name", "required field is missing")]
    if not isinstance(metadata, dict):
        return [*errors, FieldError("metadata", f"must be of type object, got {_type_name(metadata)}")]
    name, generate_name = metadata.get("name"), metadata.get("generateName")
    if name is None and generate_name is None:
        errors.append(FieldError("metadata.name", "required field is missing"))
    if name is not None:
        errors.extend(_name_errors("metadata.name", name, models.MAX_NAME_LENGTH, models.NAME_PATTERN))
    if generate_name is not None:
        # The API server appends 5 random characters to generateName.
        prefix_pattern = r"^[a-z0-9]([-a-z0-9.]*)?$"
        errors.extend(_name_errors("metadata.generateName", generate_name, models.MAX_NAME_LENGTH - 5, prefix_pattern))
    return errors


def _name_errors(path: str, name: Any, max_length: int, pattern: str) -> list[FieldError]:
    if not isinstance(name, str):
        return [FieldError(path, f"must be of type string, got {_type_name(name)}")]
    if len(name) > max_length:
        return [FieldError(path, f"must be at most {max_length} characters long (it is also a label value)")]
    if not re.match(pattern, name):
        return [
            FieldError(
                path,
                f"invalid value {_show(name)}: must be a DNS-1123 subdomain (lowercase letters, digits, '-' "
                "and '.', starting and ending with a letter or digit)",
            )
        ]
    return []


# --- whole objects and files --------------------------------------------------------------


def validate_object(doc: Any) -> list[FieldError]:
    """Every problem of one PeftJob object, as the API server would find them (no transition rules)."""
    if not isinstance(doc, dict):
        return [FieldError("", f"a PeftJob must be a mapping, got {_type_name(doc)}")]
    schema = crd_schema()
    defaulted = apply_defaults(schema, doc)
    errors = identity_errors(doc)
    structural = schema_errors(defaulted)
    errors.extend(structural)
    errors.extend(cel_errors(schema, defaulted, skip=frozenset(e.path for e in structural)))
    return sorted(set(errors))


def validate_document(doc: Any) -> list[FieldError]:
    """A PeftJob or a PeftSweep (by kind), each with its own CRD's rules."""
    if isinstance(doc, dict) and doc.get("kind") == "PeftSweep":
        from kubepeft.api.sweep_validate import validate_sweep_object  # imports this module

        return validate_sweep_object(doc)
    return validate_object(doc)


def validate_text(text: str, source: str) -> FileResult:
    """Validate every PeftJob document of a YAML stream; other kinds are skipped."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(error, "problem", None) or str(error)
        return FileResult(source, problem=f"{where}: YAML syntax error: {problem}")
    many = len(documents) > 1
    results = []
    for index, doc in enumerate(documents, start=1):
        # A lone non-mapping document is reported; in a stream, other kinds are someone else's.
        lone_non_mapping = not many and not isinstance(doc, dict)
        if not claims_peftjob(doc) and not lone_non_mapping:
            continue
        label = f"{source}#{index}" if many else source
        results.append(DocumentResult(label, tuple(validate_document(doc))))
    if not results:
        return FileResult(source, problem=f"{source}: no {models.KIND} ({models.API_VERSION}) document found")
    return FileResult(source, tuple(results))
