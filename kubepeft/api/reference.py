"""Render docs/api-reference.md from the generated CRD schema (pure, deterministic)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubepeft.api import crd, models

REFERENCE_FILE = "docs/api-reference.md"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def type_name(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if kind == "array":
        return "[]" + type_name(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + type_name(schema["additionalProperties"])
    return str(kind)


def constraints(schema: dict[str, Any]) -> str:
    """Enum values, bounds, lengths and patterns as one short text."""
    parts: list[str] = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
    if "minimum" in schema:
        parts.append(("> " if schema.get("exclusiveMinimum") else "≥ ") + str(schema["minimum"]))
    if "maximum" in schema:
        parts.append(("< " if schema.get("exclusiveMaximum") else "≤ ") + str(schema["maximum"]))
    for key, label in (("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    for key, label in (("maxItems", "items ≤"), ("maxProperties", "entries ≤")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern {_code(schema['pattern'])}")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        parts.append("free-form (passed through)")
    return "; ".join(parts)


def iter_fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every (field path, schema, required) below ``schema``, depth first, in model order."""
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        sub_path = f"{path}.{name}"
        yield sub_path, sub, name in required
        yield from iter_fields(sub, sub_path)
        items = sub.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from iter_fields(items, f"{sub_path}[]")


def field_table(schema: dict[str, Any], path: str) -> list[str]:
    rows = ["| Field | Type | Default | Constraints | Description |", "|---|---|---|---|---|"]
    for field_path, sub, required in iter_fields(schema, path):
        default = "required" if required else (_code(sub["default"]) if "default" in sub else "")
        rows.append(
            f"| `{field_path}` | {type_name(sub)} | {_cell(default)} | {_cell(constraints(sub))} "
            f"| {_cell(sub.get('description', ''))} |"
        )
    return rows


def rules_table(schema: dict[str, Any], path: str) -> list[str]:
    from kubepeft.api.validate import iter_rules  # here, so the docs need no CEL engine to import

    rows = ["| Object | Field | Rule (CEL) | Message |", "|---|---|---|---|"]
    for node_path, _node, rule in iter_rules(schema, path):
        field = node_path + rule.get("fieldPath", "")
        text = rule["rule"]
        if len(text) > 160:
            text = text[:157] + "..."
        rows.append(f"| `{node_path}` | `{field}` | `{_cell(text)}` | {_cell(rule['message'])} |")
    return rows


_OFFLINE_LIMITS = """\
## What `kubepeft validate` cannot check offline

`kubepeft validate` applies the generated CRD's defaults, its structural schema (unknown fields
rejected, as `kubectl apply --validate=strict` does) and every `x-kubernetes-validations` rule,
evaluated with cel-python. It is a faithful check of the rules' logic, not of the API server
itself:

- **Which checks run after a failure** follows the API server: unknown fields are reported
  alone (the server refuses to decode the object); a wrong type, a missing required field, an
  unsupported enum value or a too-long string or list stops every CEL rule; a bound or pattern
  failure does not. The control-plane test tier checks that the server and `kubepeft validate`
  name the same fields for every invalid manifest and for every pair of them.
- **Transition rules** (those reading `oldSelf`, i.e. spec immutability) need a stored object:
  `kubepeft validate` checks one manifest and skips them; `kubepeft.api.validate.validate_update`
  evaluates them for an update.
- **Kubernetes' own CEL extensions** (`quantity()`, `isURL()`, `url()`, `format.*`, list and
  regex library extras) do not exist in cel-python; the rules here use only standard CEL, and a
  test keeps it that way by compiling every rule with cel-python.
- **CEL cost estimation** (the per-rule and per-CRD cost budgets the API server computes when the
  CRD is created) is not computed offline. The schema bounds every string, list and map the rules
  can reach (`maxLength`, `maxItems`, `maxProperties`) so the estimate stays small, and a test
  checks those bounds exist. Immutability is one `self == oldSelf` rule per field, so no single
  rule compares the whole spec. The control-plane test tier (`make test-cluster`) creates the CRD
  on a real API server, which computes the real costs.
- **Pattern dialect**: the API server evaluates `pattern` with Go's RE2, this tool with Python's
  `re`; the patterns used are in the common subset of both, all anchored `^...$` and matched
  with `re.fullmatch`, so `$` cannot match before a final newline (`cpu: "2\\n"` is refused, as
  Go refuses it).
- **Stricter than the API server** where `kubepeft run` could not use the value: a NUL in any
  string, YAML that kubectl would coerce (unquoted dates, `!!binary`, non-string keys), and
  files over the input limits (see docs/local-run.md, "Input limits").
- **`metadata.name`**: the API server itself allows a DNS-1123 subdomain of up to 253 characters;
  kubepeft limits it to {max_name} characters, because the job name is used as a label value. A
  root-level CEL rule makes the server refuse a longer name with the same field path and message
  as `kubepeft validate`. A long `generateName` is accepted by both: the server cuts it to
  {max_prefix} characters before appending 5 random ones.
"""


def render_reference(schema: dict[str, Any] | None = None) -> str:
    schema = schema if schema is not None else crd.version_schema()
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    lines = [
        "<!-- Generated by `make crds` (kubepeft crds --write) from kubepeft/api/models.py. Do not edit. -->",
        f"# PeftJob API reference ({models.API_VERSION})",
        "",
        f"`{models.KIND}` (plural `{models.PLURAL}`, short name `{', '.join(models.SHORT_NAMES)}`, "
        f"category `{', '.join(models.CATEGORIES)}`) is a namespaced custom resource. The typed models in "
        "`kubepeft/api/models.py` are the single source of truth: the CRD in `crds/`, this page and "
        "`kubepeft validate` are all generated from them.",
        "",
        "Sweeps over PeftJob configurations (`PeftSweep`) have their own page: `api-reference-peftsweep.md`.",
        "",
        f"`metadata.name` must be a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`) of at most "
        f"{models.MAX_NAME_LENGTH} characters. Child objects (ConfigMap, Service, Jobs, pods) derive their "
        "names from it; the operator shortens any that would exceed a Kubernetes limit with a hash.",
        "",
        "## Spec",
        "",
        _cell(spec.get("description", "")),
        "",
        *field_table(spec, "spec"),
        "",
        "## Cross-field rules",
        "",
        "Evaluated by the API server (and by `kubepeft validate`) after defaults are applied. "
        "`fieldPath` is where the error is reported.",
        "",
        *rules_table(schema, ""),
        "",
        "## Status",
        "",
        _cell(status.get("description", "")),
        "",
        *field_table(status, "status"),
        "",
        "## `kubectl get` columns",
        "",
        "| Column | JSONPath | Shown |",
        "|---|---|---|",
        *[
            f"| {col['name']} | `{col['jsonPath']}` | {'with `-o wide`' if col.get('priority') else 'always'} |"
            for col in crd.PRINTER_COLUMNS
        ],
        "",
        _OFFLINE_LIMITS.format(max_name=models.MAX_NAME_LENGTH, max_prefix=models.MAX_GENERATE_NAME_PREFIX),
    ]
    return "\n".join(lines)
