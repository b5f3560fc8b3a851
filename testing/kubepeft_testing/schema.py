"""CRD schemas in the test API server: structural pruning, defaulting and validation, as the API server does.

Pruning drops fields the schema does not declare (unless ``x-kubernetes-preserve-unknown-fields``).
PeftJobs are then defaulted and checked by :mod:`kubepeft.api.validate` itself -- the one
validator, CEL rules and transition rules (immutability) included -- so the emulator refuses
what ``kubepeft validate`` refuses; whether the real API server agrees is the control-plane
tier's question (``tests/cluster/test_crd.py``). Status writes (no CEL rule reads the status), other
custom resources, and a store built with ``cel=False`` get a plain jsonschema check of types,
enums, patterns, bounds and ``required``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kubepeft_testing.resources import ResourceType

REPO_ROOT = Path(__file__).resolve().parents[2]
PEFTJOB_CRD = REPO_ROOT / "crds" / "kubepeft.dev_peftjobs.yaml"
PEFTSWEEP_CRD = REPO_ROOT / "crds" / "kubepeft.dev_peftsweeps.yaml"


def prune(value: Any, schema: dict[str, Any]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and isinstance(extra, dict):
            return {k: prune(v, extra) for k, v in value.items()}
        if props is None:
            return value if extra else {}
        return {k: prune(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in value]
    return value


def peftjob_errors(obj: dict[str, Any], old: dict[str, Any] | None, *, cel: bool, schema: dict[str, Any]) -> list[str]:
    """Default ``obj`` in place (the server stores defaulted objects), then validate it: with the
    project's validator when ``cel`` (as an update of ``old`` when there is one: transition
    rules), else against the schema alone."""
    from kubepeft.api.validate import apply_defaults, crd_schema, validate_object, validate_update

    defaulted = apply_defaults(crd_schema(), obj)
    obj.update({key: value for key, value in defaulted.items() if key != "metadata"})  # callers hold metadata
    if not cel:
        return validation_errors(obj, schema)
    problems = validate_object(obj) if old is None else validate_update(old, obj)
    return [f"{problem.path or '<root>'}: {problem.reason}" for problem in problems][:5]


def validation_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    top = {
        **schema,
        "properties": {
            k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")
        },
    }
    validator = jsonschema.Draft4Validator(top)  # OpenAPI v3.0: boolean exclusiveMinimum
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ][:5]


@functools.lru_cache(maxsize=4)
def load_crd(path: Path = PEFTJOB_CRD) -> tuple[ResourceType, dict[str, Any]]:
    """The resource type and schema of a CRD file (cached: treat the schema as read-only)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    names = crd["spec"]["names"]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    rtype = ResourceType(
        crd["spec"]["group"],
        version["name"],
        names["plural"],
        names["kind"],
        namespaced=crd["spec"]["scope"] == "Namespaced",
        status_subresource="status" in (version.get("subresources") or {}),
        short_names=tuple(names.get("shortNames", ())),
        categories=tuple(names.get("categories", ())),
    )
    return rtype, version["schema"]["openAPIV3Schema"]
