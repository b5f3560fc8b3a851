"""Offline PeftJob validation with the same rules the API server applies from the generated CRD.

Order, as in the API server: apply the schema's defaults; a manifest with unknown fields is
refused for those alone (strict field validation, as ``kubectl --validate=strict``); then the
structural schema and metadata; then every ``x-kubernetes-validations`` CEL rule, evaluated with
cel-python, unless a schema failure of a blocking kind (wrong type, missing required field,
unsupported enum value, too long or too many) stopped the server from evaluating rules at all.
Transition rules (those that read ``oldSelf``) need a previous object: :func:`validate_update`
evaluates them.

Before all of that, values JSON cannot hold (NaN, NUL, lone surrogates, non-string keys, other
Python types, too deep or too large) are reported alone (:func:`value_errors`); after it, the
typed model the operator and the trainer use parses the object. :func:`check_object` is that
whole path, shared by ``kubepeft validate`` and ``kubepeft run`` so they accept the same files.
Manifests are read by :mod:`kubepeft.api.yaml_input` (the input limits).

Everything here is pure; :mod:`kubepeft.api.validate_cmd` does the file I/O and printing.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
import pydantic

from kubepeft.api import crd, models
from kubepeft.api.yaml_input import MAX_DEPTH, MAX_NODES, ManifestInputError, load_documents

UNKNOWN_FIELD = "unknown field"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OLD_SELF = re.compile(r"\boldSelf\b")
_SURROGATE = re.compile("[\ud800-\udfff]")

# metadata.namespace: a DNS-1123 label, as the API server requires of a Namespace's name.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAMESPACE_LENGTH = 63
MAX_SHOWN_CHARS = 200
"""Values quoted in a reason are cut to this length (a hostile file may hold megabyte strings)."""
MAX_VALUE_ERRORS = 20
INT64 = (-(2**63), 2**63 - 1)


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
    if _IDENTIFIER.fullmatch(key):
        return f"{base}.{key}" if base else key
    if not key.isprintable() or "[" in key or "]" in key:
        # A path is printed on one line: quote keys with newlines, NULs or surrogates.
        key = json.dumps(key)
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


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a schema pattern as the API server's Go regexp does.

    In Go, ``$`` matches only at the very end of the text; in Python it also matches before a
    final newline, so ``re.search("^[0-9]+$", "2\\n")`` succeeds. The CRD's patterns are all
    anchored ``^...$``: ``re.fullmatch`` gives Go's answer.
    """
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.fullmatch(pattern, value) is not None
    return re.search(pattern, value) is not None


def _pattern_keyword(
    validator: jsonschema.protocols.Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not pattern_matches(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 4 matches OpenAPI v3.0's boolean exclusiveMinimum/exclusiveMaximum.
_Draft4GoPatterns = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _pattern_keyword})


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = strict_schema(crd_schema())
    # metadata declares only name (for a rule's fieldPath); the server owns the rest of it.
    schema["properties"]["metadata"] = crd_schema()["properties"]["metadata"]
    return _Draft4GoPatterns(schema)


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
    """A value as JSON for a reason: cut when long, printable even with a lone surrogate."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
            FieldError(join_path(path, name), REQUIRED)
            for name in limit
            if isinstance(instance, dict) and name not in instance
        ]
    if kind == "additionalProperties":
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [FieldError(join_path(path, name), UNKNOWN_FIELD) for name in instance if name not in known]
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


# Schema failures after which the API server evaluates no CEL rule at all (its hasBlockingErr:
# NotSupported, Required, TooLong, TooMany, TypeInvalid); the others (bounds, patterns) let every
# rule run.
BLOCKING_KEYWORDS = frozenset({"type", "required", "enum", "maxLength", "maxItems", "maxProperties"})


def schema_problems(obj: Any) -> tuple[list[FieldError], bool]:
    """Structural-schema problems of a (defaulted) PeftJob object, and whether one of them blocks CEL."""
    found: set[FieldError] = set()
    blocking = False
    for error in _validator().iter_errors(obj):
        found.update(_schema_error(error))
        blocking = blocking or error.validator in BLOCKING_KEYWORDS
    return sorted(found), blocking


def schema_errors(obj: Any) -> list[FieldError]:
    """Structural-schema problems of a (defaulted) PeftJob object."""
    return schema_problems(obj)[0]


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
        errors.append(FieldError("apiVersion", REQUIRED))
    elif api_version != models.API_VERSION:
        errors.append(
            FieldError("apiVersion", f"unsupported value {_show(api_version)}: expected {models.API_VERSION}")
        )
    if kind is None:
        errors.append(FieldError("kind", REQUIRED))
    elif kind != models.KIND:
        errors.append(FieldError("kind", f"unsupported value {_show(kind)}: expected {models.KIND}"))
    return errors + metadata_errors(doc.get("metadata"))


def metadata_errors(metadata: Any) -> list[FieldError]:
    """metadata.name (or generateName) and metadata.namespace, checked as the API server does.

    They name the job's children and, in a local run, folders: ``runs/<namespace>/<name>``.
    """
    if metadata is None:
        return [FieldError("metadata.name", REQUIRED)]
    if not isinstance(metadata, dict):
        return []  # the schema reports it ("metadata: must be of type object, got ...")
    errors: list[FieldError] = []
    name, generate_name = metadata.get("name"), metadata.get("generateName")
    if name is None and generate_name is None:
        errors.append(FieldError("metadata.name", REQUIRED))
    if name is not None:
        # The server's own limit; kubepeft's (63) is the CRD's root-level CEL rule, evaluated with
        # the other rules (models.name_length_rule).
        too_long = f"must be at most {MAX_SUBDOMAIN_LENGTH} characters long"
        errors.extend(_name_errors("metadata.name", name, MAX_SUBDOMAIN_LENGTH, models.NAME_PATTERN, too_long))
    if generate_name is not None:
        # The API server cuts generateName to MAX_GENERATE_NAME_PREFIX characters and appends 5
        # random ones, so any length up to the subdomain limit yields a name that fits.
        prefix_pattern = r"^[a-z0-9]([-a-z0-9.]*)?$"
        too_long = f"must be at most {MAX_SUBDOMAIN_LENGTH} characters long"
        errors.extend(
            _name_errors("metadata.generateName", generate_name, MAX_SUBDOMAIN_LENGTH, prefix_pattern, too_long)
        )
    namespace = metadata.get("namespace")
    if namespace is not None and namespace != "":  # empty: unset, as kubectl reads it
        too_long = f"must be at most {MAX_NAMESPACE_LENGTH} characters long (a DNS-1123 label)"
        errors.extend(
            _name_errors(
                "metadata.namespace", namespace, MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN, too_long, kind="label"
            )
        )
    return errors


MAX_SUBDOMAIN_LENGTH = 253
REQUIRED = "required field is missing"


def _name_errors(
    path: str, name: Any, max_length: int, pattern: str, too_long: str, kind: str = "subdomain"
) -> list[FieldError]:
    if not isinstance(name, str):
        return [FieldError(path, f"must be of type string, got {_type_name(name)}")]
    if len(name) > max_length:
        return [FieldError(path, too_long)]
    if not pattern_matches(pattern, name):
        allowed = "lowercase letters, digits and '-'" if kind == "label" else "lowercase letters, digits, '-' and '.'"
        return [
            FieldError(
                path,
                f"invalid value {_show(name)}: must be a DNS-1123 {kind} ({allowed}, "
                "starting and ending with a letter or digit)",
            )
        ]
    return []


# --- values JSON cannot hold ----------------------------------------------------------------


def _value_problem(value: Any) -> str | None:
    """What is wrong with one scalar (or container) in a JSON document, if anything."""
    if isinstance(value, str):
        if "\0" in value:
            return "must not contain a NUL character"
        if _SURROGATE.search(value):
            return "invalid Unicode: a lone surrogate"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, int):
        return None if INT64[0] <= value <= INT64[1] else "integer out of range (64 bits)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value!r} (JSON has no NaN or infinity)"
    return f"must be a JSON value, got {type(value).__name__}"


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return f"mapping keys must be strings, got {_type_name(key)} {_show(key)}"
    problem = _value_problem(key)
    return f"key {_show(key)}: {problem}" if problem else None


def value_errors(doc: Any) -> list[FieldError]:
    """What a YAML loader or a Python caller can put in a document that JSON (and so the API
    server) cannot hold: NaN and infinities, NULs, lone surrogates, non-string keys, integers
    beyond 64 bits, other Python types, nesting deeper than ``MAX_DEPTH``, more than
    ``MAX_NODES`` nodes (a reference cycle ends at the depth limit). Iterative: no recursion limit.
    """
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    nodes = 0
    while stack and len(errors) < MAX_VALUE_ERRORS:
        value, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return [*errors, FieldError("", f"more than {MAX_NODES} values")]
        problem = _value_problem(value)
        if problem is not None:
            errors.append(FieldError(path, problem))
        elif isinstance(value, dict | list) and depth >= MAX_DEPTH:
            errors.append(FieldError(path, f"nested deeper than {MAX_DEPTH} levels"))
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                key_problem = _key_problem(key)
                if key_problem is not None:
                    errors.append(FieldError(path, key_problem))
                else:
                    children.append((item, join_path(path, key), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend((item, join_path(path, index), depth + 1) for index, item in reversed(list(enumerate(value))))
    return errors


# --- whole objects and files --------------------------------------------------------------


def validate_object(doc: Any) -> list[FieldError]:
    """Every problem of one PeftJob object, as the API server would find them (no transition rules).

    Values JSON cannot hold are reported alone: the schema and the rules assume JSON input.
    """
    hostile = value_errors(doc)
    if hostile:
        return sorted(set(hostile))
    if not isinstance(doc, dict):
        return [FieldError("", f"a PeftJob must be a mapping, got {_type_name(doc)}")]
    # The API server's order: a manifest with unknown fields is not decoded at all (strict field
    # validation names only them); then the schema and metadata checks; then, unless one of those
    # failures blocks it, every CEL rule.
    schema = crd_schema()
    identity = identity_errors(doc)
    if isinstance(doc.get("apiVersion"), str) and doc["apiVersion"] != models.API_VERSION:
        return sorted(set(identity))  # another version: the server does not decode it against this schema
    if isinstance(doc.get("kind"), str) and doc["kind"] != models.KIND:
        # The server neither defaults nor schema-checks it, but evaluates the rules on it as it is
        # (rules that cannot be evaluated without the defaults are left out here).
        rules = [e for e in cel_errors(schema, doc) if not e.reason.startswith("rule ")]
        return sorted(set(identity + rules))
    defaulted = apply_defaults(schema, doc)
    structural, blocking = schema_problems(defaulted)
    unknown = [error for error in structural if error.reason == UNKNOWN_FIELD]
    if unknown:
        return sorted(set(identity + unknown))
    errors = identity + structural
    blocking = blocking or not isinstance(doc.get("metadata"), dict) or any(e.reason == REQUIRED for e in identity)
    if not blocking:
        errors.extend(cel_errors(schema, defaulted))
    return sorted(set(errors))


def transition_errors(schema: dict[str, Any], new: Any, old: Any, path: str = "") -> list[FieldError]:
    """Evaluate the transition rules (those reading ``oldSelf``) of an update, as the server does:
    at every node present in both the old and the new object. List items are not paired (no
    transition rule of the PeftJob schema sits under a list)."""
    found: list[FieldError] = []
    rules = [r for r in schema.get("x-kubernetes-validations", []) if is_transition_rule(r["rule"])]
    for rule in rules:
        outcome = evaluate_rule(rule["rule"], new, schema, old_value=old)
        if outcome is not True:
            target = join_path(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path
            reason = rule["message"] if outcome is False else f"rule {rule['rule']!r} {outcome}"
            found.append(FieldError(target, reason))
    if isinstance(new, dict) and isinstance(old, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in new and name in old:
                found.extend(transition_errors(sub, new[name], old[name], join_path(path, name)))
    return found


def validate_update(old_doc: dict[str, Any], new_doc: Any) -> list[FieldError]:
    """Every problem of an update of ``old_doc`` to ``new_doc``: the new object's own problems,
    then the transition rules (spec immutability) between the two defaulted objects."""
    errors = validate_object(new_doc)
    if errors or not isinstance(new_doc, dict):
        return errors
    schema = crd_schema()
    found = transition_errors(schema, apply_defaults(schema, new_doc), apply_defaults(schema, old_doc))
    return sorted(set(found))


@dataclass(frozen=True)
class CheckedObject:
    """A PeftJob object after the one check every entry point shares: the typed job, or errors."""

    job: models.PeftJob | None
    errors: tuple[FieldError, ...]


def model_errors(error: pydantic.ValidationError) -> list[FieldError]:
    """The typed model's complaints as field errors (wire names, the validator's path syntax)."""
    found = set()
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path = join_path(path, part)
        found.add(FieldError(path, item["msg"]))
    return sorted(found)


def check_object(doc: Any) -> CheckedObject:
    """The parse-and-validate step of ``kubepeft validate``, ``kubepeft run`` and anything else
    that takes a PeftJob document: the CRD's schema and rules (:func:`validate_object`), then the
    typed model the operator and the trainer use. What passes here is a :class:`models.PeftJob`."""
    errors = validate_object(doc)
    if errors:
        return CheckedObject(None, tuple(errors))
    try:
        job = models.PeftJob.model_validate(doc)
    except pydantic.ValidationError as error:
        return CheckedObject(None, tuple(model_errors(error)))
    return CheckedObject(job, ())


def peftjob_documents(documents: list[Any], source: str) -> tuple[list[tuple[str, Any]], str | None]:
    """The (label, document) pairs of a stream that are PeftJobs, or a problem with the file.

    A lone non-mapping document is checked (and reported); in a stream, other kinds are someone
    else's. The label is ``<file>``, or ``<file>#<n>`` when the stream holds several documents.
    """
    many = len(documents) > 1
    chosen = [
        (f"{source}#{index}" if many else source, doc)
        for index, doc in enumerate(documents, start=1)
        if claims_peftjob(doc) or (not many and not isinstance(doc, dict))
    ]
    if not chosen:
        return [], f"{source}: no {models.KIND} ({models.API_VERSION}) document found"
    return chosen, None


def validate_document(doc: Any) -> list[FieldError]:
    """A PeftJob or a PeftSweep (by kind), each through its own kind's whole check."""
    if isinstance(doc, dict) and doc.get("kind") == "PeftSweep":
        from kubepeft.api.sweep_validate import validate_sweep_object  # imports this module

        return validate_sweep_object(doc)
    return list(check_object(doc).errors)


def validate_text(text: str, source: str) -> FileResult:
    """Validate every PeftJob document of a YAML stream; other kinds are skipped."""
    try:
        documents = load_documents(text, source)
    except ManifestInputError as error:
        return FileResult(source, problem=str(error))
    chosen, problem = peftjob_documents(documents, source)
    if problem is not None:
        return FileResult(source, problem=problem)
    return FileResult(source, tuple(DocumentResult(label, tuple(validate_document(doc))) for label, doc in chosen))
