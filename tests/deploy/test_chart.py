"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk), every object
validated against the real Kubernetes OpenAPI schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.support import (
    CHART_DIR,
    CUSTOM_KINDS,
    RELEASE,
    RELEASE_NAMESPACE,
    REPO_ROOT,
    SCENARIOS,
    assert_restricted,
    env_of,
    load_chart,
    load_yaml_docs,
    of_kind,
    one,
    pod_specs,
    render,
    render_text,
    rule_triples,
    validate_strict,
)

# --- what the operator needs, and nothing more ------------------------------------------------

JOB_VERBS = ("get", "list", "watch", "create", "patch", "delete")  # created as sweep trials only; never PUT


def _grant(group: str, resources: tuple[str, ...], verbs: tuple[str, ...]) -> set[tuple[str, str, str]]:
    return {(group, r, v) for r in resources for v in verbs}


NAMESPACED_NEEDS = (
    _grant("kubepeft.dev", ("peftjobs",), JOB_VERBS)
    | _grant("kubepeft.dev", ("peftjobs/status",), ("patch",))
    | _grant("kubepeft.dev", ("peftjobs/finalizers",), ("update",))
    | _grant("kubepeft.dev", ("peftsweeps",), ("get", "list", "watch"))
    | _grant("kubepeft.dev", ("peftsweeps/status",), ("patch",))
    | _grant("kubepeft.dev", ("peftsweeps/finalizers",), ("update",))
    | _grant("", ("pods",), ("get", "list", "watch", "create", "delete"))
    | _grant("", ("configmaps",), ("list", "watch", "create", "get", "patch"))
    | _grant("", ("services", "serviceaccounts"), ("get", "create"))
    | _grant("rbac.authorization.k8s.io", ("roles", "rolebindings"), ("get", "create"))
    | _grant("", ("secrets", "persistentvolumeclaims"), ("get",))
    | _grant("", ("events",), ("create",))
)
CLUSTER_WIDE_NEEDS = (
    NAMESPACED_NEEDS
    | _grant("kopf.dev", ("clusterkopfpeerings",), ("get", "list", "watch", "patch"))
    | _grant("", ("namespaces",), ("list", "watch"))
    | _grant("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"))
)
PER_NAMESPACE_NEEDS = NAMESPACED_NEEDS | _grant("kopf.dev", ("kopfpeerings",), ("get", "list", "watch", "patch"))
CRD_SCAN_NEEDS = _grant("apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch")) | _grant(
    "", ("namespaces",), ("list", "watch")
)


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(SCENARIOS[request.param])


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "namespaced", "two-replicas", "custom-images"])
def test_chart_lints_clean_in_strict_mode(name: str) -> None:
    report = helm.lint(str(CHART_DIR), SCENARIOS[name], strict=True, namespace=RELEASE_NAMESPACE)
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_every_rendered_object_validates_strict(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = scenario
    assert objects, f"{name}: nothing rendered"
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        validate_strict(obj)


CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterKopfPeering",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def test_objects_carry_the_recommended_labels(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "kubepeft", where
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("app.kubernetes.io/version") == "0.1.0", where
        assert labels.get("app.kubernetes.io/part-of") == "kubepeft", where
        if obj["kind"] not in CLUSTER_SCOPED_KINDS and obj["metadata"].get("namespace") is None:
            pytest.fail(f"{where}: namespaced object without metadata.namespace")


def test_default_render_has_exactly_the_expected_objects() -> None:
    objects = render({})
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert kinds == [
        "ClusterRole/kubepeft",
        "ClusterRoleBinding/kubepeft",
        "Deployment/kubepeft",
        "Service/kubepeft-metrics",
        "ServiceAccount/kubepeft",
        "ValidatingAdmissionPolicy/kubepeft-secret-access",
        "ValidatingAdmissionPolicyBinding/kubepeft-secret-access",
    ]


def test_the_access_policy_checks_every_secret_and_claim_reference_and_can_restrict_images() -> None:
    """Its verdicts are tested against a real API server (tests/cluster); here: its shape."""
    import celpy  # the CEL syntax, offline (Kubernetes adds authorizer and request on top)

    policy = one(
        render({"admissionPolicy": {"allowedImageRegistries": ["registry.example.com/ml"]}}),
        "ValidatingAdmissionPolicy",
    )
    expressions = [v["expression"] for v in policy["spec"]["validations"]]
    # A sweep's template is checked like a job's spec (the operator, not the user, creates its trials).
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["peftjobs", "peftsweeps"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["spec"] == "object.kind == 'PeftSweep' ? object.spec.template : object.spec"
    assert all("object.spec" not in e for e in expressions)
    for source in ("model", "dataset", "output"):
        assert any(
            f"variables.spec.{source}.credentialsSecretRef.name" in e and "check('get')" in e for e in expressions
        )
    assert any("registry.example.com/ml" in e for e in expressions)
    # One rule per index of the adapters' and the volumes' lists, as many as the CRD allows items.
    from kubepeft.api.validate import crd_schema

    spec = crd_schema()["properties"]["spec"]["properties"]
    adapters = spec["adapters"]["properties"]["sources"]["maxItems"]
    volumes = spec["volumes"]["maxItems"]
    for i in range(adapters):
        assert any(f"variables.spec.adapters.sources[{i}].credentialsSecretRef.name" in e for e in expressions), i
    assert not any(f"variables.spec.adapters.sources[{adapters}]" in e for e in expressions)
    for i in range(volumes):
        assert any(f"name(variables.spec.volumes[{i}].claimName).check('get')" in e for e in expressions), i
    assert not any(f"variables.spec.volumes[{volumes}]" in e for e in expressions)
    env = celpy.Environment()
    for expression in expressions:
        env.compile(expression)
    assert of_kind(render({"admissionPolicy": {"enabled": False}}), "ValidatingAdmissionPolicy") == []
    assert len(of_kind(render({}), "ValidatingAdmissionPolicy")[0]["spec"]["validations"]) == 3 + adapters + volumes


# --- the operator Deployment ------------------------------------------------------------------


def test_every_pod_template_meets_pod_security_restricted(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    specs = list(pod_specs(objects))
    assert specs, "no pod template rendered"
    for name, pod in specs:
        assert_restricted(name, pod)


def test_operator_deployment_defaults() -> None:
    deployment = one(render({}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one replica without peering must not overlap"
    assert pod["serviceAccountName"] == "kubepeft"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["image"] == "ghcr.io/kubepeft/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    # The selector is stable (no version) and matches the pod labels.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/version" not in selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_operator_environment_defaults() -> None:
    env = env_of(one(render({}), "Deployment"))
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["KUBEPEFT_WATCH_NAMESPACES"] == ""
    assert env["KUBEPEFT_TRAINER_IMAGE"] == "ghcr.io/kubepeft/trainer:0.1.0"
    assert env["KUBEPEFT_TRAINER_IMAGE_CPU"] == "ghcr.io/kubepeft/trainer-cpu:0.1.0"
    assert env["KUBEPEFT_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["KUBEPEFT_IMAGE_PULL_SECRETS"] == ""
    assert env["KUBEPEFT_DEFAULT_S3_ENDPOINT"] == ""
    assert env["KUBEPEFT_DEFAULT_S3_REGION"] == "us-east-1"
    assert env["KUBEPEFT_DEFAULT_CREDENTIALS_SECRET"] == ""
    assert json.loads(env["KUBEPEFT_TRAINER_NODE_SELECTOR"]) == {}
    assert json.loads(env["KUBEPEFT_TRAINER_TOLERATIONS"]) == []
    assert env["KUBEPEFT_TRAINER_DEFAULT_CPU"] == "2"
    assert env["KUBEPEFT_TRAINER_DEFAULT_MEMORY"] == "8Gi"
    assert env["KUBEPEFT_LOG_LEVEL"] == "INFO"
    assert env["KUBEPEFT_METRICS_PORT"] == "8080"
    assert env["KUBEPEFT_HEALTH_PORT"] == "8081"
    assert "KUBEPEFT_PEERING" not in env
    assert "KUBEPEFT_MAX_WORKERS" not in env
    # Environment values are strings (the API server rejects anything else).
    assert all(isinstance(v, str | dict) for v in env.values())


def test_custom_images_and_pull_secrets() -> None:
    objects = render(SCENARIOS["custom-images"])
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = env_of(deployment)
    assert pod["containers"][0]["image"] == "registry.example.com/ml/kubepeft-operator:1.2.3"
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-cred"}]
    assert env["KUBEPEFT_TRAINER_IMAGE"] == "registry.example.com/ml/kubepeft-trainer@sha256:" + "a" * 64
    assert env["KUBEPEFT_TRAINER_IMAGE_CPU"] == "registry.example.com/ml/kubepeft-trainer-cpu:1.2.3-cpu"
    assert env["KUBEPEFT_IMAGE_PULL_POLICY"] == "Always"
    assert env["KUBEPEFT_IMAGE_PULL_SECRETS"] == "regcred,mirror-cred"


def test_custom_default_storage_and_trainer_placement() -> None:
    deployment = one(render(SCENARIOS["custom-storage"]), "Deployment")
    env = env_of(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert env["KUBEPEFT_DEFAULT_S3_ENDPOINT"] == "https://minio.storage.svc:9000"
    assert env["KUBEPEFT_DEFAULT_S3_REGION"] == "eu-west-1"
    assert env["KUBEPEFT_DEFAULT_CREDENTIALS_SECRET"] == "team-s3"
    assert env["KUBEPEFT_TRAINER_DEFAULT_CPU"] == "8"
    assert env["KUBEPEFT_TRAINER_DEFAULT_MEMORY"] == "64Gi"
    assert json.loads(env["KUBEPEFT_TRAINER_NODE_SELECTOR"]) == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert json.loads(env["KUBEPEFT_TRAINER_TOLERATIONS"]) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert env["KUBEPEFT_LOG_LEVEL"] == "DEBUG"
    assert env["KUBEPEFT_MAX_WORKERS"] == "40"
    # Operator placement is separate from trainer placement.
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "control-plane", "operator": "Exists", "effect": "NoSchedule"}]
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "ml"}


def test_no_secret_values_anywhere(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    assert of_kind(objects, "Secret") == [], "the chart references Secrets by name only"
    text = yaml.safe_dump_all(objects)
    assert "AWS_SECRET_ACCESS_KEY" not in text


# --- several replicas -------------------------------------------------------------------------


def test_two_replicas_turn_on_peering_and_a_disruption_budget() -> None:
    objects = render(SCENARIOS["two-replicas"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(deployment)
    peering = one(objects, "ClusterKopfPeering")
    assert env["KUBEPEFT_PEERING"] == peering["metadata"]["name"] == "kubepeft"
    assert "namespace" not in peering["metadata"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_one_replica_has_no_peering_and_no_disruption_budget() -> None:
    objects = render({})
    assert of_kind(objects, "PodDisruptionBudget") == []
    assert of_kind(objects, "ClusterKopfPeering") == of_kind(objects, "KopfPeering") == []


def test_namespaced_peering_objects_live_in_each_watched_namespace() -> None:
    objects = render(SCENARIOS["two-replicas-namespaced"])
    peerings = of_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in peerings} == {env_of(one(objects, "Deployment"))["KUBEPEFT_PEERING"]}
    assert of_kind(objects, "ClusterKopfPeering") == []


def test_peering_objects_have_the_kopf_shape() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for doc in load_yaml_docs(CHART_DIR / "crds" / "kopf.dev_peerings.yaml")}
    for name in ("two-replicas", "two-replicas-namespaced"):
        for obj in render(SCENARIOS[name]):
            if obj["kind"] in crds:
                crd = crds[obj["kind"]]
                assert obj["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
                assert set(obj) == {"apiVersion", "kind", "metadata"}
                assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")


# --- RBAC -------------------------------------------------------------------------------------


def test_no_rbac_rule_has_a_wildcard(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = scenario
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    assert roles, f"{name}: no RBAC rendered"
    for role in roles:
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(field, []), f"{name}: {role['kind']}/{role['metadata']['name']} {field}"
                assert not any("*" in item for item in rule.get(field, [])), f"{name}: wildcard in {field}"
            assert "resourceNames" not in rule or rule["resourceNames"], "empty resourceNames"
            assert "nonResourceURLs" not in rule, "the operator needs no non-resource URLs"


def test_cluster_wide_rbac_grants_exactly_what_the_operator_needs() -> None:
    objects = render({})
    assert of_kind(objects, "Role") == of_kind(objects, "RoleBinding") == []
    role = one(objects, "ClusterRole")
    assert rule_triples(role["rules"]) == CLUSTER_WIDE_NEEDS
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubepeft"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubepeft", "namespace": RELEASE_NAMESPACE}]


def test_namespaced_rbac_is_a_role_per_watched_namespace() -> None:
    objects = render(SCENARIOS["namespaced"])
    roles = of_kind(objects, "Role")
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rule_triples(role["rules"]) == PER_NAMESPACE_NEEDS
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubepeft", "namespace": RELEASE_NAMESPACE}]
    # Cluster scope: only reading CRDs (kopf's resource scanning), nothing namespaced.
    cluster_role = one(objects, "ClusterRole")
    assert rule_triples(cluster_role["rules"]) == CRD_SCAN_NEEDS
    assert one(objects, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert env_of(one(objects, "Deployment"))["KUBEPEFT_WATCH_NAMESPACES"] == "team-a,team-b"


def test_trainer_role_the_operator_creates_is_within_its_own_rights() -> None:
    """RBAC escalation check: the operator can only create the per-job Role if it holds its verbs."""
    trainer_role = _grant("", ("configmaps",), ("get", "patch"))
    assert trainer_role <= rule_triples(one(render({}), "ClusterRole")["rules"])
    for role in of_kind(render(SCENARIOS["namespaced"]), "Role"):
        assert trainer_role <= rule_triples(role["rules"])


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    objects = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "preprovisioned"}})
    assert {o["kind"] for o in objects} == {
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",  # not RBAC: it stays
        "ValidatingAdmissionPolicyBinding",
    }
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "preprovisioned"


# --- metrics ----------------------------------------------------------------------------------


def test_service_monitor_shape() -> None:
    objects = render(SCENARIOS["service-monitor"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert (
        service["spec"]["selector"].items()
        <= one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_service_monitor_is_off_by_default() -> None:
    assert of_kind(render({}), "ServiceMonitor") == []


# --- values schema ----------------------------------------------------------------------------

BAD_VALUES = [
    ({"replicas": "two"}, "at '/replicas': got string, want integer"),
    ({"replicas": 0}, "at '/replicas'"),
    ({"logLevel": "TRACE"}, "at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
    ({"images": {"operator": {"pullPolicy": "Sometimes"}}}, "at '/images/operator/pullPolicy'"),
    ({"replica": 2}, "additional properties 'replica' not allowed"),
    ({"metrics": {"serviceMonitor": {"enable": True}}}, "at '/metrics/serviceMonitor': additional properties 'enable'"),
    ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
    ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
    ({"defaultStorage": {"endpoint": "minio:9000"}}, "at '/defaultStorage/endpoint'"),
    ({"defaultStorage": {"credentialsSecret": {"name": "x"}}}, "at '/defaultStorage/credentialsSecret': got object"),
    ({"imagePullSecrets": ["regcred"]}, "at '/imagePullSecrets/0': got string, want object"),
    ({"trainer": {"defaultResources": {"memory": "8 GB"}}}, "at '/trainer/defaultResources/memory'"),
    ({"images": {"trainer": {"digest": "latest"}}}, "at '/images/trainer/digest'"),
    ({"metrics": {"port": 80}}, "at '/metrics/port'"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m.split(":")[0] for _, m in BAD_VALUES])
def test_values_schema_rejects_bad_values_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(values)
    assert message in str(caught.value), str(caught.value)


INCONSISTENT_VALUES = [
    (
        {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.service.enabled",
    ),
    ({"metrics": {"port": 9000}, "health": {"port": 9000}}, "metrics.port and health.port must differ"),
    ({"replicas": 2, "podDisruptionBudget": {"minAvailable": 2}}, "minAvailable must be less than replicas"),
]


@pytest.mark.parametrize(("values", "message"), INCONSISTENT_VALUES, ids=["monitor-without-service", "ports", "pdb"])
def test_inconsistent_values_fail_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        paths |= _schema_paths(sub, f"{prefix}{key}.")
    return paths


def _value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        if isinstance(value, dict) and value and key not in FREE_FORM_VALUES:
            paths |= _value_paths(value, f"{prefix}{key}.")
    return paths


# Maps whose keys are the user's (labels, annotations, selectors, affinity, resource lists).
FREE_FORM_VALUES = {"annotations", "labels", "nodeSelector", "podAnnotations", "podLabels", "affinity"}


def test_values_schema_covers_every_value_and_forbids_unknown_keys() -> None:
    with load_chart() as chart:
        schema = chart.schema
        defaults = chart.values
        chart.validate_schema(defaults)
    assert schema is not None
    missing = _value_paths(defaults) - _schema_paths(schema)
    assert not missing, f"values without a schema entry: {sorted(missing)}"

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where or '<root>'} allows unknown keys"
        for key, sub in node.get("properties", {}).items():
            assert "type" in sub, f"{where}{key} has no type"
            walk(sub, f"{where}{key}.")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[].")

    walk(schema, "")


def test_kind_e2e_overrides_are_valid_values() -> None:
    """The `--set` flags hack/kind-e2e.sh passes to `helm install` must satisfy the schema."""
    script = (REPO_ROOT / "hack" / "kind-e2e.sh").read_text(encoding="utf-8")
    sets = [line.split("--set", 1)[1].strip().rstrip("\\").strip() for line in script.splitlines() if "--set " in line]
    assert len(sets) >= 8
    values: dict[str, Any] = {}
    for expression in sets:
        # Shell variables in the script stand for plain strings.
        expression = expression.replace('"$IMAGE_TAG"', "e2e").replace(
            '"$S3_IN_CLUSTER"', "http://seaweedfs.s.svc:8333"
        )
        _merge(values, helm.parse_set_string(expression))
    assert values["defaultStorage"]["endpoint"] == "http://seaweedfs.s.svc:8333"
    deployment = one(render(values), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "kubepeft-operator:e2e"
    assert env_of(deployment)["KUBEPEFT_TRAINER_IMAGE_CPU"] == "kubepeft-trainer-cpu:e2e"


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


# --- CRDs and NOTES ---------------------------------------------------------------------------


def test_chart_crd_is_the_generated_crd_byte_for_byte() -> None:
    generated = REPO_ROOT / "crds" / "kubepeft.dev_peftjobs.yaml"
    chart_copy = CHART_DIR / "crds" / "kubepeft.dev_peftjobs.yaml"
    assert chart_copy.read_bytes() == generated.read_bytes(), "run `make crds` to refresh the chart's copy"


def test_chart_crds_validate_strict_and_load() -> None:
    with load_chart() as chart:
        names = {crd["name"] for crd in chart.crds}
    docs = [doc for path in sorted((CHART_DIR / "crds").glob("*.yaml")) for doc in load_yaml_docs(path)]
    assert {d["metadata"]["name"] for d in docs} == {
        "peftjobs.kubepeft.dev",
        "peftsweeps.kubepeft.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    assert len(names) == len(list((CHART_DIR / "crds").glob("*.yaml")))
    for doc in docs:
        validate_strict(doc)


def test_notes_tell_the_user_how_to_submit_and_watch_a_job() -> None:
    notes = render_text({})["kubepeft/templates/NOTES.txt"]
    for command in (
        "kubectl apply -f examples/tiny-lora.yaml",
        "kubectl get peftjobs -w",
        "kubectl describe pj tiny-lora",
        "kubectl wait --for=condition=Succeeded",
        "pj/tiny-lora",
    ):
        assert command in notes
    assert (REPO_ROOT / "examples" / "tiny-lora.yaml").exists()
    namespaced = render_text({"watchNamespaces": ["team-a"], "replicas": 2})["kubepeft/templates/NOTES.txt"]
    assert "team-a" in namespaced and "peering" in namespaced


# --- the contract with the operator -----------------------------------------------------------


def test_the_operator_reads_the_environment_the_chart_sets(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    """The chart's env goes through the operator's own settings parser, as in the real pod."""
    from kubepeft_operator.settings import OperatorSettings

    name, objects = scenario
    env = {k: v for k, v in env_of(one(objects, "Deployment")).items() if isinstance(v, str)}
    settings = OperatorSettings.load(env)
    values = SCENARIOS[name]
    assert settings.watch_namespaces == tuple(values.get("watchNamespaces", ()))
    assert settings.image_pull_secrets == tuple(s["name"] for s in values.get("imagePullSecrets", ()))
    assert settings.trainer_node_selector == values.get("trainer", {}).get("nodeSelector", {})
    assert settings.trainer_tolerations == values.get("trainer", {}).get("tolerations", [])
    assert settings.peering == ("kubepeft" if values.get("replicas", 1) > 1 else "")
    assert settings.metrics_port == 8080 and settings.health_port == 8081
    assert settings.max_workers == values.get("maxWorkers", 0)
    assert settings.trainer_image.endswith(("trainer:0.1.0", "@sha256:" + "a" * 64))


def test_operations_guide_documents_every_value() -> None:
    guide = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    with load_chart() as chart:
        defaults = chart.values
    for key, value in defaults.items():
        assert f"`{key}" in guide, f"docs/operations.md does not document the value {key}"
        if isinstance(value, dict) and key not in FREE_FORM_VALUES and key != "resources":
            for sub in value:
                # `key.sub` or the brace form `key.{a,sub,b}`
                pattern = rf"{key}\.(\{{[^}}]*\b{sub}\b[^}}]*\}}|{sub}\b)"
                assert re.search(pattern, guide), f"docs/operations.md does not document {key}.{sub}"
    for step in (
        "make kind-e2e",
        "KEEP_CLUSTER=1",
        "Docker daemon",
        "kubectl apply --server-side -f charts/kubepeft/crds/",
    ):
        assert step in guide
