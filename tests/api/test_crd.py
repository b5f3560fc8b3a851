"""The generated CRD: drift against the checked-in file, structural-schema rules, Kubernetes validity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from pydantic import Field

from kubepeft.api import crd, models
from kubepeft.api.validate import apply_defaults, iter_rules, strict_schema
from tests.fixtures.api import REPO_ROOT

CRD = crd.build_crd()
SCHEMA = crd.version_schema(CRD)
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "nullable"}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its field path (list items as ``[]``, map values as ``[*]``)."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")


def test_checked_in_crd_is_up_to_date() -> None:
    checked_in = (REPO_ROOT / "crds" / crd.CRD_FILE).read_text(encoding="utf-8")
    assert checked_in == crd.crd_yaml(), "crds/ is stale: run `make crds`"


def test_chart_copy_is_up_to_date() -> None:
    chart_copy = REPO_ROOT / "charts" / "kubepeft" / "crds" / crd.CRD_FILE
    if not (REPO_ROOT / "charts" / "kubepeft").is_dir():
        pytest.skip("no chart in this checkout")
    assert chart_copy.read_text(encoding="utf-8") == crd.crd_yaml(), "chart CRD is stale: run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crd.crd_yaml() == crd.crd_yaml(crd.build_crd())


def test_changing_one_field_bound_changes_exactly_that_node() -> None:
    class NarrowLoraSpec(models.LoraSpec):
        r: int = Field(default=16, ge=1, le=512)
        """Rank of the update matrices."""

    class NarrowSpec(models.PeftJobSpec):
        lora: NarrowLoraSpec | None = Field(default=None, json_schema_extra=models.immutable())
        """LoRA settings for methods lora and qlora (defaults apply when omitted)."""

    changed = crd.version_schema(crd.build_crd(spec_model=NarrowSpec))
    original_nodes = dict(walk(SCHEMA))
    changed_nodes = dict(walk(changed))
    assert original_nodes.keys() == changed_nodes.keys()
    differing = [
        path
        for path in original_nodes
        if {k: v for k, v in original_nodes[path].items() if k not in ("properties", "items")}
        != {k: v for k, v in changed_nodes[path].items() if k not in ("properties", "items")}
    ]
    # The class docstring differs (subclasses have none), but field descriptions win for lora.
    assert differing == ["spec.lora.r"]
    assert changed_nodes["spec.lora.r"]["maximum"] == 512
    assert crd.crd_yaml(crd.build_crd(spec_model=NarrowSpec)) != crd.crd_yaml()


def test_crd_names_and_version() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "peftjobs.kubepeft.dev"
    assert spec["group"] == "kubepeft.dev" and spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "PeftJob",
        "listKind": "PeftJobList",
        "plural": "peftjobs",
        "singular": "peftjob",
        "shortNames": ["pj"],
        "categories": ["kubepeft"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(CRD, "1.33", strict=True)


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    broken = crd.build_crd()
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["bogusKeyword"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)


def test_schema_is_structural() -> None:
    for path, node in walk(SCHEMA):
        assert not FORBIDDEN_KEYWORDS & node.keys(), f"{path}: {FORBIDDEN_KEYWORDS & node.keys()}"
        assert not isinstance(node.get("additionalProperties"), bool), path
        if path == "metadata":
            # Only name may be declared (the server forbids the rest), and only for the root rule's fieldPath.
            assert node.keys() == {"type", "properties"} and node["properties"].keys() == {"name"}
            assert node["properties"]["name"].keys() == {"type", "description"}
            continue
        assert "type" in node, f"{path} has no type"
        if path and not path.endswith(("[]", "[*]")):
            assert node.get("description"), f"{path} has no description"
        if "properties" in node:
            assert node["type"] == "object", path
            assert set(node.get("required", [])) <= node["properties"].keys(), path


def test_preserve_unknown_fields_only_where_the_model_says() -> None:
    marked = [path for path, node in walk(SCHEMA) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert marked == ["spec.resources.affinity"]


def test_optional_fields_are_plain_types_and_required_fields_are_listed() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert spec["required"] == ["method", "model", "output"]
    assert spec["properties"]["quantization"]["type"] == "object"
    assert spec["properties"]["training"]["properties"]["maxSteps"] == {
        "description": "Optimizer steps to run (one of maxSteps and epochs).",
        "maximum": 10_000_000,
        "minimum": 1,
        "type": "integer",
    }
    epochs = spec["properties"]["training"]["properties"]["epochs"]
    assert (epochs["minimum"], epochs["exclusiveMinimum"]) == (0, True)


def test_nested_object_defaults_are_written_out_in_full() -> None:
    # The API server checks every CEL rule against the default as written when the CRD is created:
    # a {} default fails "no such key" on a rule reading self.backend.
    spec = SCHEMA["properties"]["spec"]["properties"]
    for name in ("resources", "distributed", "checkpointing", "runPolicy"):
        node = spec[name]
        assert node["default"] == apply_defaults(node, {}), name
        assert node["default"].keys() == {k for k, sub in node["properties"].items() if "default" in sub}, name
    assert spec["lora"]["properties"]["targetModules"]["default"] == ["all-linear"]
    defaulted = apply_defaults(SCHEMA, {"spec": {"method": "lora", "output": {"uri": "/out"}}})
    assert defaulted["spec"]["distributed"] == {
        "backend": "ddp",
        "zeroStage": 2,
        "offloadOptimizer": False,
        "offloadParams": False,
    }
    assert defaulted["spec"]["output"]["merge"] is False


def test_every_default_is_valid_against_its_own_schema() -> None:
    checked = 0
    for path, node in walk(SCHEMA):
        if "default" in node:
            value = apply_defaults(node, node["default"])
            errors = list(jsonschema.Draft4Validator(strict_schema(node)).iter_errors(value))
            assert not errors, f"{path}: default {node['default']!r}: {errors[0].message}"
            checked += 1
    assert checked > 50


def test_status_is_typed_and_conditions_are_a_map_list() -> None:
    status = SCHEMA["properties"]["status"]
    assert not status.get("x-kubernetes-preserve-unknown-fields")
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert status["properties"]["progress"]["properties"]["display"]["type"] == "string"


def test_printer_columns_point_at_existing_fields() -> None:
    columns = {col["name"]: col for col in CRD["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Method", "Model", "Phase", "Progress", "Loss", "ETA-Seconds", "Age"]
    nodes = dict(walk(SCHEMA))
    for name, column in columns.items():
        path = column["jsonPath"].lstrip(".")
        if path.startswith("metadata."):
            continue
        node = nodes[path]
        expected_type = {"string": "string", "number": "number", "integer": "integer"}[column["type"]]
        assert node["type"] == expected_type, name
    assert columns["Age"]["type"] == "date"


def test_every_rule_field_path_exists() -> None:
    nodes = dict(walk(SCHEMA))
    for node_path, _node, rule in iter_rules(SCHEMA):
        if "fieldPath" in rule:
            target = node_path + rule["fieldPath"] if node_path else rule["fieldPath"].lstrip(".")
            assert target in nodes, f"{rule['message']}: fieldPath {target} is not in the schema"
        assert rule.get("reason", "FieldValueInvalid") in (
            "FieldValueInvalid",
            "FieldValueForbidden",
            "FieldValueRequired",
            "FieldValueDuplicate",
        )


def test_everything_cel_can_reach_is_bounded() -> None:
    """CEL cost estimation needs maxLength/maxItems/maxProperties on what the rules compare.

    The immutability rule compares every spec field but runPolicy, so every string, list and map
    there must be bounded (an enum or a pattern with a fixed length is not enough for the estimator).
    """
    unbounded = [
        path
        for path, node in walk(SCHEMA["properties"]["spec"], "spec")
        if not path.startswith("spec.runPolicy") and is_unbounded(node)
    ]
    assert unbounded == []


def is_unbounded(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    if kind == "string":
        return "maxLength" not in node and "enum" not in node
    if kind == "array":
        return "maxItems" not in node
    is_map = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    return kind == "object" and bool(is_map) and "maxProperties" not in node
