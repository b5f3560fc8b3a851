"""Offline validation: examples pass, each invalid manifest fails with exactly its expected message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.api import models
from kubepeft.api.validate import validate_object, validate_text
from tests.fixtures.api import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
INVALID_DIR = Path(__file__).parent / "invalid"
INVALID = sorted(INVALID_DIR.glob("*.yaml"))
EXPECT_PREFIX = "# expect: "

Manifest = Callable[..., dict[str, Any]]


def expected_lines(path: Path) -> list[str]:
    return [line[len(EXPECT_PREFIX) :] for line in path.read_text().splitlines() if line.startswith(EXPECT_PREFIX)]


def test_the_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "tiny-lora.yaml",
        "tiny-lora-2node.yaml",
        "prompt-tuning.yaml",
        "qlora-llama3-8b.yaml",
        "deepspeed-zero3-multinode.yaml",
        "merge-only.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    result = validate_text(path.read_text(), path.name)
    assert result.lines() == [f"{path.name}: ok"]
    # The typed model (what the operator and the trainer parse) accepts it too.
    document = yaml.safe_load(path.read_text())
    if document.get("kind") == "PeftSweep":
        from kubepeft.api.sweep_models import PeftSweep

        assert PeftSweep.model_validate(document).metadata.name
        return
    job = models.PeftJob.model_validate(document)
    assert job.metadata.name


def test_the_demo_example_matches_the_demo_contract() -> None:
    job = models.PeftJob.model_validate(yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text()))
    spec = job.spec
    assert spec.model.uri == "s3://kubepeft-demo/models/tiny-llama"
    assert spec.dataset is not None and spec.dataset.uri == "s3://kubepeft-demo/data/tiny-chat.jsonl"
    assert spec.output.uri == "s3://kubepeft-demo/runs" and spec.output.endpoint is None
    assert spec.output.merge and spec.resources.gpus_per_node == 0 and spec.resources.nodes == 1


def test_the_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 25
    for path in INVALID:
        assert expected_lines(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_fails_with_its_expected_message(path: Path) -> None:
    result = validate_text(path.read_text(), path.name)
    assert not result.ok
    assert sorted(result.lines()) == sorted(f"{path.name}: {line}" for line in expected_lines(path))


def test_every_cross_field_rule_has_a_failing_manifest_in_the_corpus() -> None:
    from kubepeft.api.validate import crd_schema, is_transition_rule, iter_rules

    expected = {line for path in INVALID for line in expected_lines(path)}
    for node_path, _node, rule in iter_rules(crd_schema()):
        if is_transition_rule(rule["rule"]):
            continue
        field_path = rule.get("fieldPath", "")
        where = (node_path + field_path if node_path else field_path.lstrip(".")).replace("[]", "[0]")
        assert f"{where}: {rule['message']}" in expected, f"no invalid manifest exercises {rule['rule']!r}"


def test_defaults_are_applied_before_cel(peftjob_manifest: Manifest) -> None:
    # No distributed, no output.merge: the rules reading them see the schema defaults.
    manifest = peftjob_manifest(method="qlora", quantization={"bits": 4})
    assert validate_object(manifest) == []


def test_bounds_and_patterns_let_every_rule_run(peftjob_manifest: Manifest) -> None:
    # As on the API server: a minimum or pattern failure does not stop the CEL rules.
    manifest = peftjob_manifest(
        training={"maxSteps": 10, "epochs": 1, "perDeviceBatchSize": 0},
        distributed={"offloadOptimizer": True},
    )
    messages = [str(error) for error in validate_object(manifest)]
    assert messages == [
        "spec.distributed.offloadOptimizer: offloadOptimizer needs backend deepspeed",
        "spec.training.maxSteps: set exactly one of maxSteps and epochs",
        "spec.training.perDeviceBatchSize: must be >= 1, got 0",
    ]


@pytest.mark.parametrize(
    "broken",
    [
        {"maxSteps": "ten"},  # wrong type
        {"maxSteps": 10, "lrScheduler": "step"},  # unsupported enum value
        {"maxSteps": 10, "nonsense": 1},  # unknown field: only that is reported
    ],
)
def test_blocking_schema_errors_stop_every_rule(peftjob_manifest: Manifest, broken: dict[str, Any]) -> None:
    # As on the API server (hasBlockingErr): no CEL rule runs, so offloadOptimizer is not reported.
    manifest = peftjob_manifest(training=broken, distributed={"offloadOptimizer": True})
    paths = [error.path for error in validate_object(manifest)]
    assert len(paths) == 1 and paths[0].startswith("spec.training.")


def test_several_problems_are_all_reported(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest(lora={"r": 0, "alpha": 0}, method="qlora")
    manifest["metadata"]["name"] = "Bad"
    paths = [error.path for error in validate_object(manifest)]
    assert paths == ["metadata.name", "spec.lora.alpha", "spec.lora.r", "spec.quantization"]


def test_another_version_or_kind_is_not_checked_against_the_schema(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest(lora={"r": 0})
    manifest["apiVersion"] = "kubepeft.dev/v1"
    assert [e.path for e in validate_object(manifest)] == ["apiVersion"]
    # Not defaulted: a rule reading a missing default cannot be evaluated and is left out.
    manifest = peftjob_manifest(lora={"r": 0}, distributed={"backend": "ddp", "offloadOptimizer": True})
    manifest["kind"] = "PeftJobs"
    assert [e.path for e in validate_object(manifest)] == ["kind", "spec.distributed.offloadOptimizer"]


def test_numbers_given_as_integers_are_accepted_for_number_fields(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest(training={"epochs": 2, "learningRate": 1})
    assert validate_object(manifest) == []


def test_generate_name_replaces_name(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest()
    manifest["metadata"] = {"generateName": "sweep-"}
    assert validate_object(manifest) == []
    # The API server cuts a long generateName to fit (58 + 5 random characters): accepted.
    manifest["metadata"] = {"generateName": "x" * 200}
    assert validate_object(manifest) == []
    manifest["metadata"] = {"generateName": "x" * 254}
    assert [e.path for e in validate_object(manifest)] == ["metadata.generateName"]


def test_multi_document_files_label_documents_and_skip_other_kinds(peftjob_manifest: Manifest) -> None:
    good = peftjob_manifest()
    bad = peftjob_manifest(lora={"r": 0})
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    text = yaml.safe_dump_all([good, config_map, bad])
    result = validate_text(text, "jobs.yaml")
    assert result.lines() == ["jobs.yaml#1: ok", "jobs.yaml#3: spec.lora.r: must be >= 1, got 0"]


def test_a_file_without_any_peftjob_is_a_problem() -> None:
    result = validate_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "cm.yaml")
    assert not result.ok
    assert result.lines() == ["cm.yaml: no PeftJob (kubepeft.dev/v1alpha1) document found"]


def test_yaml_syntax_errors_name_the_line() -> None:
    text = "apiVersion: kubepeft.dev/v1alpha1\nkind: PeftJob\nspec:\n  method: [lora\n  model: x\n"
    (line,) = validate_text(text, "broken.yaml").lines()
    assert line.startswith("broken.yaml:5: YAML syntax error: ")


def test_a_document_that_is_not_a_mapping() -> None:
    assert validate_text("- just\n- a list\n", "list.yaml").lines() == [
        "list.yaml: a PeftJob must be a mapping, got array"
    ]


def test_a_peftjob_kind_without_api_version(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest()
    del manifest["apiVersion"]
    assert [str(e) for e in validate_object(manifest)] == ["apiVersion: required field is missing"]


def test_map_keys_that_are_not_identifiers_are_bracketed(peftjob_manifest: Manifest) -> None:
    manifest = peftjob_manifest(resources={"nodeSelector": {"kubernetes.io/os": 1}})
    assert [str(e) for e in validate_object(manifest)] == [
        "spec.resources.nodeSelector[kubernetes.io/os]: must be of type string, got integer 1"
    ]
