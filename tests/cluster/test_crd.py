"""The CRD on a real API server: accepted, Established, explained; the server and
``kubepeft validate`` agree on every example and every invalid manifest, field path included."""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.api import models
from kubepeft.api.validate import validate_object
from tests.cluster.conftest import CRD_PATH, CRD_PATH_IN_CHART
from tests.cluster.rest import Kube, KubeError
from tests.cluster.support import CRD_API, apply_crd, condition, dry_run_create
from tests.deploy.support import CHART_DIR, render
from tests.fixtures.api import REPO_ROOT

pytestmark = pytest.mark.cluster

EXAMPLES = [  # the PeftJob examples; the PeftSweep ones: tests/cluster/test_sweep.py
    path
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml"))
    if yaml.safe_load(path.read_text()).get("kind") == models.KIND
]
INVALID = sorted((REPO_ROOT / "tests" / "api" / "invalid").glob("*.yaml"))
NOT_CHECKED = "some validation rules were not checked"


def server_field_paths(error: KubeError) -> set[str]:
    """The field paths a refusal names: its causes, or the field named by a strict-decoding error.

    Left out: the server's note that some rules were not checked, and rules that could not be
    evaluated ("no such key") on an object the server did not default (a wrong kind).
    """
    paths = {
        str(cause["field"])
        for cause in error.causes
        if cause.get("field") not in (None, "", "<nil>") and "no such key" not in cause.get("message", "")
    }
    paths.update(re.findall(r'unknown field "([^"]+)"', error.message))
    version = re.search(r'in version "([^"]+)" cannot be handled', error.message)
    if version and version.group(1) != models.VERSION:
        paths = {"apiVersion"}  # posted to our version's URL: the server names the mismatched version
    return paths


def test_the_crd_from_crds_is_established_and_served(peftjob_crd: dict[str, Any], admin: Kube) -> None:
    assert condition(peftjob_crd, "Established") == "True"
    assert condition(peftjob_crd, "NamesAccepted") == "True"
    listing = admin.get(f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}")
    assert listing["kind"] == "PeftJobList"


def test_the_chart_installs_its_crds_and_renders_objects_the_server_accepts(admin: Kube, peftjob_crd: Any) -> None:
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            established = apply_crd(admin, crd)
            assert condition(established, "Established") == "True", path.name
    assert yaml.safe_load(CRD_PATH_IN_CHART.read_text()) == yaml.safe_load(CRD_PATH.read_text())
    namespace = "chart-install"
    admin.ensure_namespace(namespace)
    for obj in render({}, namespace=namespace):
        # dryRun: the server runs validation and admission, and keeps nothing.
        admin.request(
            "PATCH",
            admin.path_of(obj, namespace),
            obj,
            params={"dryRun": "All", "fieldManager": "helm", "fieldValidation": "Strict", "force": True},
            content_type="application/apply-patch+yaml",
        )


def test_the_old_crd_shape_is_refused_as_the_issue_reports(admin: Kube, peftjob_crd: Any) -> None:
    """A nested default of {} breaks the server's check of rules against defaults when a rule reads
    a field without has(): the reason the defaults are written out in full and the optional
    fields' rules start with has(). The probe undoes both, as the shipped CRD was."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    crd["metadata"]["name"] = f"{models.PLURAL}.probe.{models.GROUP}"
    crd["spec"]["group"] = f"probe.{models.GROUP}"
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    distributed = spec["properties"]["distributed"]
    distributed["default"] = {}
    for rule in distributed["x-kubernetes-validations"]:
        rule["rule"] = re.sub(r"!has\(self\.\w+\) \|\| ", "", rule["rule"])
    with pytest.raises(KubeError) as refused:
        admin.request("POST", CRD_API, crd, params={"dryRun": "All"})
    assert refused.value.status == 422
    assert "no such key: offloadParams" in refused.value.message


def _every_rule(node: dict[str, Any]) -> list[dict[str, Any]]:
    rules = list(node.get("x-kubernetes-validations", []))
    for sub in node.get("properties", {}).values():
        rules += _every_rule(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            rules += _every_rule(node[key])
    return rules


def test_every_rule_uses_under_a_tenth_of_the_cost_budget(admin: Kube, peftjob_crd: Any) -> None:
    """The server computes each rule's worst-case CEL cost when the CRD is created and refuses a
    rule over its budget. Every rule repeated ten times in one rule must still fit: headroom for
    the free-form affinity compared by spec.resources' immutability rule."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    crd["metadata"]["name"] = f"{models.PLURAL}.cost.{models.GROUP}"
    crd["spec"]["group"] = f"cost.{models.GROUP}"
    rules = _every_rule(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert len(rules) > 20
    for rule in rules:
        rule["rule"] = " && ".join([f"({rule['rule']})"] * 10)
    admin.request("POST", CRD_API, crd, params={"dryRun": "All"})  # refused (422) if any rule is over


def test_kubectl_explain_reads_the_field_descriptions(control_plane: Any, peftjob_crd: Any) -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(control_plane.admin_kubeconfig), "explain", "peftjob.spec.lora"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "LoRA settings" in result.stdout
    assert "Rank of the update matrices" in result.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted(admin: Kube, peftjob_crd: Any, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert validate_object(doc) == []
    error = dry_run_create(admin, doc, "default")
    assert error is None, f"{path.name}: {error}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_every_invalid_manifest_is_refused_at_the_same_field(admin: Kube, peftjob_crd: Any, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    offline = {error.path for error in validate_object(doc)}
    error = dry_run_create(admin, doc, "default")
    assert error is not None, f"{path.name}: accepted by the server, refused offline at {offline}"
    assert offline, f"{path.name}: refused by the server ({error}), accepted offline"
    assert server_field_paths(error) == offline, f"{path.name}: {error}"


def merged(a: Any, b: Any) -> Any:
    """``b`` laid over ``a`` (maps merged key by key, anything else replaced)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{key: merged(a[key], value) if key in a else value for key, value in b.items()}}
    return copy.deepcopy(b)


def test_the_server_and_the_validator_agree_on_every_pair_of_invalid_manifests(admin: Kube, peftjob_crd: Any) -> None:
    """Two mistakes at once: which checks still run after which failures (blocking schema errors,
    unknown fields, a wrong kind) is where an offline validator drifts from the server."""
    docs = {path.name: yaml.safe_load(path.read_text()) for path in INVALID}
    disagreements = []
    for a, b in itertools.combinations(sorted(docs), 2):
        doc = merged(docs[a], docs[b])
        offline = {error.path for error in validate_object(doc)}
        error = dry_run_create(admin, doc, "default")
        server = server_field_paths(error) if error else set()
        if offline != server:
            disagreements.append(f"{a} + {b}: offline {sorted(offline)}, server {sorted(server)}")
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize("length", [models.MAX_NAME_LENGTH, models.MAX_NAME_LENGTH + 1, 253])
def test_the_name_limit_is_the_same_on_the_server(admin: Kube, peftjob_crd: Any, length: int) -> None:
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    doc["metadata"] = {"name": "a" * length}
    offline = [str(error) for error in validate_object(doc)]
    error = dry_run_create(admin, doc, "default")
    if length <= models.MAX_NAME_LENGTH:
        assert offline == [] and error is None
    else:
        assert offline == [f"metadata.name: {models.NAME_LENGTH_MESSAGE}"]
        assert error is not None and server_field_paths(error) == {"metadata.name"}
        assert models.NAME_LENGTH_MESSAGE in error.message


def test_a_long_generate_name_is_cut_to_fit_by_both(admin: Kube, peftjob_crd: Any) -> None:
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    doc["metadata"] = {"generateName": "sweep-" + "x" * 100}
    assert validate_object(doc) == []
    created = admin.request(
        "POST",
        f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}",
        doc,
        params={"dryRun": "All"},
    )
    assert len(created["metadata"]["name"]) == models.MAX_NAME_LENGTH


def test_spec_changes_are_refused_at_the_changed_field_except_suspend(admin: Kube, peftjob_crd: Any) -> None:
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    doc["metadata"] = {"name": "immutable-probe"}
    path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}/immutable-probe"
    admin.request("POST", path.rsplit("/", 1)[0], doc)
    try:
        admin.patch(path, {"spec": {"runPolicy": {"suspend": True}}})
        changes = {
            "spec.training": {"training": {"maxSteps": 7}},
            "spec.resources": {"resources": {"affinity": {"nodeAffinity": {}}}},
            "spec.runPolicy.backoffLimit": {"runPolicy": {"backoffLimit": 9}},
            "spec.lora": {"lora": {"r": 4}},
            "spec": {"runPolicy": {"activeDeadlineSeconds": 60}},  # adding an optional field
        }
        for field_path, change in changes.items():
            with pytest.raises(KubeError) as refused:
                admin.patch(path, {"spec": change})
            assert refused.value.status == 422
            assert server_field_paths(refused.value) == {field_path}
            assert models.IMMUTABLE_MESSAGE in refused.value.message
    finally:
        admin.delete(path)
