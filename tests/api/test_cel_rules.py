"""The CRD's CEL rules: each compiles with cel-python and decides positive and negative samples right."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubepeft.api.validate import (
    apply_defaults,
    compiled_rule,
    crd_schema,
    evaluate_rule,
    is_transition_rule,
    iter_rules,
    validate_update,
)

RULES = list(iter_rules(crd_schema()))
NODES = {path: node for path, node, rule in RULES if not is_transition_rule(rule["rule"])}
TRANSITION_NODES = {path for path, _node, rule in RULES if is_transition_rule(rule["rule"])}


def rule_with(message: str) -> tuple[str, dict[str, Any], str]:
    """(node path, node schema, rule text) of the rule with this message."""
    (match,) = [
        (path, node, rule["rule"])
        for path, node, rule in RULES
        if rule["message"] == message and not is_transition_rule(rule["rule"])
    ]
    return match


def decide(message: str, value: dict[str, Any]) -> bool | str:
    _path, node, rule = rule_with(message)
    return evaluate_rule(rule, apply_defaults(node, value), node)


@pytest.mark.parametrize("rule", [rule["rule"] for _p, _n, rule in RULES])
def test_rule_compiles_with_cel_python(rule: str) -> None:
    assert compiled_rule(rule) is compiled_rule(rule)  # compiled once, then cached


def test_there_are_rules_on_every_object_that_needs_them() -> None:
    assert set(NODES) == {
        "",  # metadata.name's length
        "spec",
        "spec.quantization",
        "spec.promptTuning",
        "spec.adapters",
        "spec.dataset",
        "spec.training",
        "spec.resources",
        "spec.resources.tolerations[]",
        "spec.distributed",
        "spec.volumes[]",
    }


def test_every_immutable_field_carries_its_own_transition_rule() -> None:
    fields = {*IMMUTABLE_SPEC_FIELDS, "runPolicy.backoffLimit", *OPTIONAL_RUN_POLICY}
    assert {"spec", *(f"spec.{name}" for name in fields)} == TRANSITION_NODES
    for path, _node, rule in RULES:
        if is_transition_rule(rule["rule"]) and path != "spec":
            assert rule["rule"] == "self == oldSelf", path


IMMUTABLE_SPEC_FIELDS = (
    "method",
    "model",
    "lora",
    "quantization",
    "promptTuning",
    "adapters",
    "dataset",
    "training",
    "resources",
    "distributed",
    "volumes",
    "output",
    "checkpointing",
)
OPTIONAL_RUN_POLICY = ("runPolicy.activeDeadlineSeconds", "runPolicy.ttlSecondsAfterFinished")
OUTPUT = {"uri": "s3://bucket/runs"}
BASE_SPEC = {"method": "lora", "model": {"uri": "/m"}, "dataset": {"uri": "/d"}, "training": {"maxSteps": 5}}

# (rule message, value that satisfies it, value that breaks it)
SAMPLES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "must be at most 63 characters long (it is also a label value)",
        {"metadata": {"name": "a" * 63}, "spec": {}},
        {"metadata": {"name": "a" * 64}, "spec": {}},
    ),
    (
        "method qlora requires quantization",
        {**BASE_SPEC, "method": "qlora", "quantization": {}, "output": OUTPUT},
        {**BASE_SPEC, "method": "qlora", "output": OUTPUT},
    ),
    (
        "quantization applies to method qlora only",
        {**BASE_SPEC, "output": OUTPUT},
        {**BASE_SPEC, "quantization": {}, "output": OUTPUT},
    ),
    (
        "lora settings do not apply to method promptTuning",
        {**BASE_SPEC, "lora": {"r": 4}, "output": OUTPUT},
        {**BASE_SPEC, "method": "promptTuning", "lora": {"r": 4}, "output": OUTPUT},
    ),
    (
        "promptTuning settings apply to method promptTuning only",
        {**BASE_SPEC, "method": "promptTuning", "promptTuning": {}, "output": OUTPUT},
        {**BASE_SPEC, "promptTuning": {}, "output": OUTPUT},
    ),
    (
        "merge applies to methods lora and qlora only",
        {**BASE_SPEC, "output": {**OUTPUT, "merge": True}},
        {**BASE_SPEC, "method": "promptTuning", "output": {**OUTPUT, "merge": True}},
    ),
    (
        "training is required unless adapters.mergeOnly is true",
        {"method": "lora", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
        {"method": "lora", "dataset": {"uri": "/d"}, "output": OUTPUT},
    ),
    (
        "dataset is required unless adapters.mergeOnly is true",
        {"method": "lora", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
        {"method": "lora", "training": {"maxSteps": 5}, "output": OUTPUT},
    ),
    (
        "a merge-only job must set output.merge",
        {
            "method": "lora",
            "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]},
            "output": {**OUTPUT, "merge": True},
        },
        {"method": "lora", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
    ),
    (
        "a merge-only job does not train: remove training and dataset",
        {"method": "lora", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
        {**BASE_SPEC, "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
    ),
    (
        "qlora runs with backend ddp (bitsandbytes 4/8-bit weights cannot be ZeRO-partitioned)",
        {**BASE_SPEC, "distributed": {"backend": "deepspeed"}, "output": OUTPUT},
        {**BASE_SPEC, "method": "qlora", "distributed": {"backend": "deepspeed"}, "output": OUTPUT},
    ),
    (
        "packing does not apply to method promptTuning (every example needs its own soft prompt)",
        {
            **BASE_SPEC,
            "dataset": {"uri": "/d", "template": "chat"},
            "training": {"maxSteps": 5, "packing": True},
            "output": OUTPUT,
        },
        {**BASE_SPEC, "method": "promptTuning", "training": {"maxSteps": 5, "packing": True}, "output": OUTPUT},
    ),
    ("quantType fp4 applies to bits 4 only", {"bits": 4, "quantType": "fp4"}, {"bits": 8, "quantType": "fp4"}),
    ("init text requires initText", {"init": "text", "initText": "Say hi."}, {"init": "text", "initText": ""}),
    (
        "training starts from at most one adapter; set mergeOnly to combine several",
        {"mergeOnly": True, "sources": [{"uri": "/a"}, {"uri": "/b"}]},
        {"sources": [{"uri": "/a"}, {"uri": "/b"}]},
    ),
    (
        "format hf goes with an hf:// uri, and an hf:// uri with format hf",
        {"uri": "hf://org/data", "format": "hf"},
        {"uri": "hf://org/data"},
    ),
    ("set exactly one of maxSteps and epochs", {"epochs": 1.5}, {}),
    ("warmupSteps must be less than maxSteps", {"maxSteps": 10, "warmupSteps": 9}, {"maxSteps": 10, "warmupSteps": 11}),
    (
        "with GPUs, processesPerNode must equal gpusPerNode (one process per GPU)",
        {"gpusPerNode": 0, "processesPerNode": 2},
        {"gpusPerNode": 2, "processesPerNode": 1},
    ),
    (
        "value must be empty when operator is Exists",
        {"operator": "Equal", "value": "x"},
        {"operator": "Exists", "value": "x"},
    ),
    (
        "offloadParams needs backend deepspeed with zeroStage 3",
        {"backend": "deepspeed", "zeroStage": 3, "offloadParams": True},
        {"backend": "deepspeed", "offloadParams": True},
    ),
    (
        "offloadOptimizer needs backend deepspeed",
        {"backend": "deepspeed", "offloadOptimizer": True},
        {"offloadOptimizer": True},
    ),
    (
        "model.uri names a claim not in spec.volumes",
        {**BASE_SPEC, "model": {"uri": "pvc://models/m"}, "volumes": [{"claimName": "models"}], "output": OUTPUT},
        {**BASE_SPEC, "model": {"uri": "pvc://models/m"}, "volumes": [{"claimName": "model"}], "output": OUTPUT},
    ),
    (
        "dataset.uri names a claim not in spec.volumes",
        {**BASE_SPEC, "dataset": {"uri": "pvc://data"}, "volumes": [{"claimName": "data"}], "output": OUTPUT},
        {**BASE_SPEC, "dataset": {"uri": "pvc://data/train.jsonl"}, "output": OUTPUT},
    ),
    (
        "an adapters.sources uri names a claim not in spec.volumes",
        {
            **BASE_SPEC,
            "adapters": {"sources": [{"uri": "pvc://a/x"}]},
            "volumes": [{"claimName": "a"}],
            "output": OUTPUT,
        },
        {
            **BASE_SPEC,
            "adapters": {"sources": [{"uri": "pvc://ab/x"}]},
            "volumes": [{"claimName": "a"}],
            "output": OUTPUT,
        },
    ),
    (
        "output.uri names a claim not in spec.volumes",
        {**BASE_SPEC, "volumes": [{"claimName": "runs"}], "output": {"uri": "pvc://runs/out"}},
        {**BASE_SPEC, "output": {"uri": "pvc://runs/out"}},
    ),
    (
        "each claim is declared once in spec.volumes",
        {**BASE_SPEC, "volumes": [{"claimName": "a"}, {"claimName": "b"}], "output": OUTPUT},
        {**BASE_SPEC, "volumes": [{"claimName": "a"}, {"claimName": "a", "mountPath": "/a"}], "output": OUTPUT},
    ),
    (
        "each volume needs its own mountPath, not inside another volume's",
        {
            **BASE_SPEC,
            "volumes": [{"claimName": "a", "mountPath": "/data"}, {"claimName": "b", "mountPath": "/data2"}],
            "output": OUTPUT,
        },
        {
            **BASE_SPEC,
            "volumes": [{"claimName": "a", "mountPath": "/data"}, {"claimName": "b", "mountPath": "/data/b"}],
            "output": OUTPUT,
        },
    ),
    (
        "model.uri must not contain '..' segments",
        {**BASE_SPEC, "model": {"uri": "/models/m..v2"}, "output": OUTPUT},
        {**BASE_SPEC, "model": {"uri": "/models/../m"}, "output": OUTPUT},
    ),
    (
        "dataset.uri must not contain '..' segments",
        {**BASE_SPEC, "dataset": {"uri": "s3://bkt/../d"}, "output": OUTPUT},  # S3 keys are not paths
        {**BASE_SPEC, "dataset": {"uri": "pvc://data/.."}, "output": OUTPUT},
    ),
    (
        "an adapters.sources uri must not contain '..' segments",
        {**BASE_SPEC, "adapters": {"sources": [{"uri": "pvc://a/..x"}]}, "output": OUTPUT},
        {**BASE_SPEC, "adapters": {"sources": [{"uri": "pvc://a/x/../y"}]}, "output": OUTPUT},
    ),
    (
        "output.uri must not contain '..' segments",
        {**BASE_SPEC, "output": {"uri": "pvc://runs/out"}},
        {**BASE_SPEC, "output": {"uri": "/out/.."}},
    ),
    (
        "mountPath must not be on, inside or above a folder the worker uses itself (/etc/kubepeft, /var/run/secrets,"
        " /scratch, /tmp, /cache, /dev/shm, /opt/venv, /usr, /bin, /sbin, /lib, /lib64, /proc, /sys)",
        {"claimName": "a", "mountPath": "/scratch2"},
        {"claimName": "a", "mountPath": "/etc"},
    ),
    (
        "mountPath must be a plain absolute path (no empty, '.' or '..' segments)",
        {"claimName": "a", "mountPath": "/data/.cache"},
        {"claimName": "a", "mountPath": "/data//x"},
    ),
    (
        "merge-only jobs combine LoRA adapters; method must be lora or qlora",
        {"method": "qlora", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
        {"method": "promptTuning", "adapters": {"mergeOnly": True, "sources": [{"uri": "/a"}]}, "output": OUTPUT},
    ),
]


@pytest.mark.parametrize(("message", "good", "bad"), SAMPLES, ids=[s[0][:40] for s in SAMPLES])
def test_rule_accepts_the_good_sample_and_rejects_the_bad_one(
    message: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    assert decide(message, good) is True
    assert decide(message, bad) is False


def test_every_non_transition_rule_has_samples() -> None:
    sampled = {message for message, _good, _bad in SAMPLES}
    assert sampled == {rule["message"] for _p, _n, rule in RULES if not is_transition_rule(rule["rule"])}


IMMUTABLE = "spec is immutable once created, except runPolicy.suspend"


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubepeft.dev/v1alpha1", "kind": "PeftJob", "metadata": {"name": "j"}, "spec": spec}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"runPolicy": {"backoffLimit": 9}}, "spec.runPolicy.backoffLimit"),
        ({"runPolicy": {"activeDeadlineSeconds": 60}}, "spec"),  # adding an optional field
        ({"training": {"maxSteps": 6}}, "spec.training"),
        ({"resources": {"nodes": 2}}, "spec.resources"),
        ({"resources": {"affinity": {"nodeAffinity": {}}}}, "spec.resources"),
        ({"lora": {"r": 4}}, "spec"),  # adding an optional section
        ({"lora": None}, "spec"),  # removing one
        ({"method": "qlora", "quantization": {}}, "spec"),
        ({"output": {"uri": "s3://bucket/other"}}, "spec.output"),
    ],
)
def test_spec_immutability_transition_rules(change: dict[str, Any], path: str) -> None:
    old = _job({**BASE_SPEC, "output": OUTPUT, "runPolicy": {"suspend": False}})
    if change.get("lora", 0) is None:
        old["spec"]["lora"] = {"r": 8}
    new = copy.deepcopy(old)
    for key, value in change.items():
        if value is None:
            del new["spec"][key]
        else:
            new["spec"][key] = value
    errors = validate_update(old, new)
    assert path in {error.path for error in errors}
    assert {error.reason for error in errors} == {IMMUTABLE}


def test_suspend_may_change() -> None:
    old = _job({**BASE_SPEC, "output": OUTPUT, "runPolicy": {"suspend": False}})
    new = copy.deepcopy(old)
    new["spec"]["runPolicy"]["suspend"] = True
    new["metadata"]["labels"] = {"a": "b"}
    assert validate_update(old, new) == []
    assert validate_update(old, old) == []


def test_the_mount_path_rule_and_its_description_name_every_reserved_folder() -> None:
    from kubepeft.api.models import VolumeSpec
    from kubepeft.worker_paths import RESERVED

    description = VolumeSpec.model_fields["mount_path"].description or ""
    assert all(f"``{path}``" in description for path in RESERVED)
    _path, node, rule = rule_with(
        "mountPath must not be on, inside or above a folder the worker uses itself (" + ", ".join(RESERVED) + ")"
    )
    for path in RESERVED:
        for bad in (path, f"{path}/x", path.rsplit("/", 1)[0] or "/x"):
            if bad != "/x":
                assert evaluate_rule(rule, {"claimName": "a", "mountPath": bad}, node) is False, bad
    assert evaluate_rule(rule, {"claimName": "a", "mountPath": "/models"}, node) is True
