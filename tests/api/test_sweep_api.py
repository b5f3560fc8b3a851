"""PeftSweep API: generated CRD (drift, structure, names, columns), CEL on defaults, invalid corpus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kubepeft.api import sweep_crd, sweep_models, sweep_reference
from kubepeft.api.sweep_validate import semantic_errors, sweep_schema, validate_sweep_object
from kubepeft.api.validate import apply_defaults, cel_errors, is_transition_rule, iter_rules, validate_text
from tests.fixtures.api import REPO_ROOT

INVALID_DIR = Path(__file__).parent / "invalid_sweep"
INVALID = sorted(INVALID_DIR.glob("*.yaml"))
EXPECT_PREFIX = "# expect: "
CRD = sweep_crd.build_crd()
SCHEMA = sweep_schema()


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")


def sweep(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "template": {
            "method": "lora",
            "model": {"uri": "s3://kubepeft-demo/models/tiny-llama"},
            "dataset": {"uri": "s3://kubepeft-demo/data/tiny-chat.jsonl"},
            "training": {"maxSteps": 10},
            "output": {"uri": "s3://kubepeft-demo/runs"},
        },
        "parameters": [{"path": "lora.r", "values": [2, 4]}],
    }
    base.update(spec)
    return {"apiVersion": "kubepeft.dev/v1alpha1", "kind": "PeftSweep", "metadata": {"name": "s"}, "spec": base}


def test_checked_in_crd_chart_copy_and_reference_are_up_to_date() -> None:
    text = sweep_crd.crd_yaml()
    assert (REPO_ROOT / "crds" / sweep_crd.CRD_FILE).read_text() == text, "run `make crds`"
    assert (REPO_ROOT / "charts" / "kubepeft" / "crds" / sweep_crd.CRD_FILE).read_text() == text
    assert (REPO_ROOT / sweep_reference.REFERENCE_FILE).read_text() == sweep_reference.render_reference()


def test_crd_names_columns_and_validity() -> None:
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("PeftSweep", "peftsweeps", ["psw"])
    assert CRD["metadata"]["name"] == "peftsweeps.kubepeft.dev"
    columns = [c["name"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Trials", "Running", "Succeeded", "Phase", "Best", "Best-Eval-Loss", "Age"]
    nodes = dict(walk(SCHEMA))
    for column in CRD["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".")
        if not path.startswith("metadata."):
            assert nodes[path]["type"] == column["type"], column["name"]
    kubernetes_validate.validate(CRD, "1.33", strict=True)


def test_schema_is_structural_and_only_values_are_untyped() -> None:
    untyped = [path for path, node in walk(SCHEMA) if "type" not in node]
    assert untyped == ["spec.parameters[].values[]"]
    assert SCHEMA["properties"]["spec"]["properties"]["parameters"]["items"]["properties"]["values"]["items"] == {
        "x-kubernetes-preserve-unknown-fields": True
    }
    for path, node in walk(SCHEMA):
        assert not {"$ref", "anyOf", "title", "const"} & node.keys(), path


def test_no_cel_rule_reads_the_untyped_values() -> None:
    # The API server cannot type-check a rule over preserve-unknown-fields values: CRD creation fails.
    for _path, _node, rule in iter_rules(SCHEMA):
        assert "values" not in rule["rule"], rule["rule"]


@pytest.mark.parametrize("kind", ["PeftSweep", "PeftJob"])
def test_cel_rules_hold_for_schema_defaults(kind: str) -> None:
    """The API server evaluates rules against defaults when the CRD is created."""
    from kubepeft.api.validate import crd_schema

    checked = 0
    for path, node in walk(SCHEMA if kind == "PeftSweep" else crd_schema()):
        if "default" in node and node.get("x-kubernetes-validations"):
            value = apply_defaults(node, node["default"])
            assert cel_errors(node, value, path) == [], path
            # And the default exactly as written (without nested defaults): rules must use has().
            assert cel_errors({**node, "properties": {}}, node["default"], path) == [], path
            checked += 1
    assert checked >= 2  # (the sweep's strategy;) the job's distributed and resources


def test_tunable_paths_come_from_the_peftjob_schema() -> None:
    paths = sweep_models.tunable_paths()
    assert {"lora.r", "lora.alpha", "training.learningRate", "dataset.uri", "method", "lora.targetModules"} <= set(
        paths
    )
    assert not [p for p in paths if p.startswith(("output.", "runPolicy.", "resources."))]
    assert not [p for p in paths if "credentialsSecretRef" in p]
    # Where a source is reached is not an experiment (a sweep cannot send a source's keys elsewhere).
    assert not [p for p in paths if p.endswith((".endpoint", ".region", ".forcePathStyle"))]
    assert not [p for p in paths if p.startswith("volumes")]
    assert paths["lora.r"]["type"] == "integer"


def test_values_are_checked_against_the_peftjob_schema_at_their_path() -> None:
    errors = validate_sweep_object(sweep(parameters=[{"path": "training.learningRate", "values": [0.001, "fast"]}]))
    assert [str(e) for e in errors] == [
        'spec.parameters[0].values[1]: training.learningRate: must be of type number, got string "fast"'
    ]
    ok = sweep(parameters=[{"path": "lora.targetModules", "values": [["q_proj"], ["q_proj", "v_proj"]]}])
    assert validate_sweep_object(ok) == []


def test_integer_range_bounds_are_checked_against_the_field() -> None:
    doc = sweep(
        strategy={"type": "random", "maxTrials": 3},
        parameters=[{"path": "lora.r", "min": 1, "max": 4096, "scale": "log"}],
    )
    assert [str(e) for e in validate_sweep_object(doc)] == ["spec.parameters[0].max: lora.r: must be <= 1024, got 4096"]


def test_semantic_errors_accept_a_random_sweep_over_ranges() -> None:
    doc = sweep(
        strategy={"type": "tpe", "maxTrials": 6},
        parameters=[
            {"path": "training.learningRate", "min": 1e-4, "max": 1e-2, "scale": "log"},
            {"path": "lora.r", "values": [2, 4, 8]},
        ],
    )
    assert validate_sweep_object(doc) == []
    assert semantic_errors(apply_defaults(SCHEMA, doc)["spec"]) == []


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 15
    for path in INVALID:
        assert expected_lines(path), path.name


def expected_lines(path: Path) -> list[str]:
    return [line[len(EXPECT_PREFIX) :] for line in path.read_text().splitlines() if line.startswith(EXPECT_PREFIX)]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_sweep_fails_with_its_expected_message(path: Path) -> None:
    result = validate_text(path.read_text(), path.name)
    assert not result.ok
    assert sorted(result.lines()) == sorted(f"{path.name}: {line}" for line in expected_lines(path))


def test_every_sweep_rule_has_a_failing_manifest_in_the_corpus() -> None:
    expected = {line for path in INVALID for line in expected_lines(path)}
    for node_path, _node, rule in iter_rules(SCHEMA):
        if is_transition_rule(rule["rule"]) or node_path.startswith("spec.template"):
            continue
        where = (node_path + rule.get("fieldPath", "")).replace("[]", "[0]")
        assert f"{where}: {rule['message']}" in expected, f"no invalid sweep exercises {rule['rule'][:60]!r}"


def test_validate_handles_both_kinds_in_one_stream() -> None:
    job = (REPO_ROOT / "examples" / "tiny-lora.yaml").read_text()
    sweep_text = (REPO_ROOT / "examples" / "sweep-lora-rank.yaml").read_text()
    result = validate_text(job + "\n---\n" + sweep_text, "both.yaml")
    assert result.lines() == ["both.yaml#1: ok", "both.yaml#2: ok"]
