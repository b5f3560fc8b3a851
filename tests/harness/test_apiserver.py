"""The test API server keeps the promises the operator relies on (each one a kmock gap)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config
import pytest
from kubepeft_testing.apiserver import ApiServer
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.timeout(30)
NS = "team-a"


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def cm(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, **meta}, "data": {"k": "v"}}


SPEC = {
    "method": "lora",
    "model": {"uri": "/models/tiny"},
    "dataset": {"uri": "/data/train.jsonl"},
    "training": {"maxSteps": 5},
    "output": {"uri": "/out"},
}


def job(name: str, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubepeft.dev/v1alpha1",
        "kind": "PeftJob",
        "metadata": {"name": name},
        "spec": spec or SPEC,
    }
    if status is not None:
        body["status"] = status
    return body


def test_create_stamps_metadata_and_takes_namespace_from_url(core: kubernetes.client.CoreV1Api) -> None:
    a = core.create_namespaced_config_map(NS, cm("a"))
    b = core.create_namespaced_config_map(NS, cm("b"))
    assert a.metadata.namespace == NS
    assert a.metadata.uid and a.metadata.uid != b.metadata.uid
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    assert a.metadata.creation_timestamp is not None
    assert a.metadata.generation == 1
    assert NS in [n.metadata.name for n in core.list_namespace().items]  # the first object creates its namespace
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(NS, cm("a"))
    assert exists.value.status == 409
    with pytest.raises(ApiException) as mismatch:
        core.create_namespaced_config_map(NS, cm("c", namespace="other"))
    assert mismatch.value.status == 400


def test_invalid_names_and_labels_are_rejected(core: kubernetes.client.CoreV1Api) -> None:
    for body in (cm("Bad_Name"), cm("ok", {"k": "x" * 64}), cm("ok2", {"bad key!": "v"})):
        with pytest.raises(ApiException) as invalid:
            core.create_namespaced_config_map(NS, body)
        assert invalid.value.status == 422
    with pytest.raises(ApiException) as service:
        core.create_namespaced_service(NS, {"metadata": {"name": "a.b"}, "spec": {"clusterIP": "None"}})
    assert service.value.status == 422  # Service names are RFC 1035 labels: no dots
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "c", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        },
    }
    with pytest.raises(ApiException) as affinity:
        core.create_namespaced_pod(NS, pod)
    assert affinity.value.status == 422 and "at least one node selector term" in affinity.value.body


async def test_discovery_reports_core_v1_and_our_crd(apiserver: ApiServer) -> None:
    async with aiohttp.ClientSession(apiserver.url) as http:
        assert (await (await http.get("/api")).json())["versions"] == ["v1"]
        core = await (await http.get("/api/v1")).json()
        assert core["groupVersion"] == "v1"
        assert {"pods", "pods/status", "configmaps", "events"} <= {r["name"] for r in core["resources"]}
        groups = {g["name"]: g for g in (await (await http.get("/apis")).json())["groups"]}
        assert groups["kubepeft.dev"]["preferredVersion"]["version"] == "v1alpha1"
        ours = await (await http.get("/apis/kubepeft.dev/v1alpha1")).json()
        peftjobs = next(r for r in ours["resources"] if r["name"] == "peftjobs")
        assert peftjobs["kind"] == "PeftJob" and peftjobs["namespaced"] and "pj" in peftjobs["shortNames"]
        assert "peftjobs/status" in {r["name"] for r in ours["resources"]}
        assert (await http.get("/apis/nope.dev/v1")).status == 404


async def _events(response: aiohttp.ClientResponse, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        line = await response.content.readline()
        if not line:
            break
        if line.strip():
            events.append(json.loads(line))
    return events


async def test_watch_from_a_resource_version_replays_nothing_and_loses_nothing(apiserver: ApiServer) -> None:
    apiserver.create("configmaps", NS, cm("before"))
    async with aiohttp.ClientSession(apiserver.url) as http:
        listing = await (await http.get(f"/api/v1/namespaces/{NS}/configmaps")).json()
        version = listing["metadata"]["resourceVersion"]
        apiserver.create("configmaps", NS, cm("between"))  # after the list, before the watch
        params = {"watch": "true", "resourceVersion": version}
        async with http.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
            apiserver.create("configmaps", NS, cm("after"))
            apiserver.create("configmaps", "elsewhere", cm("other-namespace"))
            events = await _events(response, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "between"), ("ADDED", "after")]


async def test_watch_without_version_starts_with_the_current_objects(apiserver: ApiServer) -> None:
    apiserver.create("configmaps", NS, cm("existing"))
    async with aiohttp.ClientSession(apiserver.url) as http:
        params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
        async with http.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
            events = await _events(response, 2)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "existing"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


async def test_watch_honours_timeout_seconds(apiserver: ApiServer) -> None:
    async with aiohttp.ClientSession(apiserver.url) as http:
        started = time.monotonic()
        params = {"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1"}
        async with http.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
            assert await response.read() == b""
        assert 0.9 <= time.monotonic() - started < 3


async def test_watch_too_old_version_is_410_gone() -> None:
    server = ApiServer(history=3).start()
    try:
        for i in range(6):
            server.create("configmaps", NS, cm(f"c{i}"))
        async with aiohttp.ClientSession(server.url) as http:
            params = {"watch": "true", "resourceVersion": "1"}
            async with http.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
                events = await _events(response, 1)
    finally:
        server.stop()
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


async def test_watch_label_selector_follows_objects_in_and_out(apiserver: ApiServer) -> None:
    apiserver.create("configmaps", NS, cm("x", {"app": "a"}))
    version = str(apiserver.store.rv)
    async with aiohttp.ClientSession(apiserver.url) as http:
        params = {"watch": "true", "resourceVersion": version, "labelSelector": "app=a"}
        async with http.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
            patch = {"metadata": {"labels": {"app": "b"}}}
            apiserver.call(
                apiserver.store.patch,
                apiserver.rtype("configmaps"),
                NS,
                "x",
                patch,
                "application/merge-patch+json",
                None,
            )
            apiserver.create("configmaps", NS, cm("y", {"app": "b"}))
            apiserver.call(
                apiserver.store.patch,
                apiserver.rtype("configmaps"),
                NS,
                "x",
                {"metadata": {"labels": {"app": "a"}}},
                "application/merge-patch+json",
                None,
            )
            events = await _events(response, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "x"), ("ADDED", "x")]


def test_stale_resource_version_conflicts(core: kubernetes.client.CoreV1Api) -> None:
    first = core.create_namespaced_config_map(NS, cm("a"))
    core.patch_namespaced_config_map("a", NS, {"data": {"k": "new"}})
    stale = cm("a")
    stale["metadata"]["resourceVersion"] = first.metadata.resource_version
    with pytest.raises(ApiException) as put:
        core.replace_namespaced_config_map("a", NS, stale)
    assert put.value.status == 409
    with pytest.raises(ApiException) as patch:
        core.patch_namespaced_config_map("a", NS, {"metadata": {"resourceVersion": first.metadata.resource_version}})
    assert patch.value.status == 409


def test_failed_json_patch_test_is_422_and_a_good_one_applies(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, cm("a"))
    wrong = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
        {"op": "replace", "path": "/data/k", "value": "x"},
    ]
    with pytest.raises(ApiException) as failed:
        core.patch_namespaced_config_map("a", NS, wrong)
    assert failed.value.status == 422
    right = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": created.metadata.resource_version},
        {"op": "replace", "path": "/data/k", "value": "x"},
    ]
    assert core.patch_namespaced_config_map("a", NS, right).data == {"k": "x"}


def test_put_replaces_the_object(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, cm("a", {"l": "1"}))
    body = {"metadata": {"name": "a", "resourceVersion": created.metadata.resource_version}, "data": {"only": "this"}}
    replaced = core.replace_namespaced_config_map("a", NS, body)
    assert replaced.data == {"only": "this"} and not replaced.metadata.labels
    assert replaced.metadata.uid == created.metadata.uid


def test_noop_patch_keeps_the_resource_version(core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, cm("a"))
    same = core.patch_namespaced_config_map("a", NS, {"data": {"k": "v"}})
    assert same.metadata.resource_version == created.metadata.resource_version


def test_status_subresource_is_separate_from_the_main_object(custom: kubernetes.client.CustomObjectsApi) -> None:
    args = ("kubepeft.dev", "v1alpha1", NS, "peftjobs")
    created = custom.create_namespaced_custom_object(*args, job("j", status={"phase": "Succeeded"}))
    assert created["status"] == {} and created["metadata"]["generation"] == 1  # clients cannot create a status
    # Status writes change the status only, and never the generation.
    patched = custom.patch_namespaced_custom_object_status(
        *args, "j", {"status": {"phase": "Running"}, "spec": {"method": "qlora"}}
    )
    # (The schema's status defaults are filled in, as the API server does.)
    assert patched["status"]["phase"] == "Running" and patched["spec"]["method"] == "lora"
    assert patched["metadata"]["generation"] == 1
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    # Main-object writes ignore the status; spec changes bump the generation; metadata ones do not.
    change = {"status": {"phase": "Failed"}, "spec": {"runPolicy": {"suspend": True}}}
    main = custom.patch_namespaced_custom_object(*args, "j", change)
    assert main["status"]["phase"] == "Running" and main["spec"]["runPolicy"]["suspend"] is True
    assert main["metadata"]["generation"] == 2
    # The CRD's transition rules are evaluated (by kubepeft.api.validate): the rest of the spec is immutable.
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.patch_namespaced_custom_object(*args, "j", {"spec": {"method": "promptTuning"}})
    assert refused.value.status == 422 and "immutable" in str(refused.value.body)
    labelled = custom.patch_namespaced_custom_object(*args, "j", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 2
    replaced = custom.replace_namespaced_custom_object_status(
        *args, "j", {**labelled, "status": {"phase": "Suspended"}}
    )
    assert replaced["status"]["phase"] == "Suspended" and replaced["metadata"]["generation"] == 2


def test_label_and_field_selectors(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("a", {"tier": "web", "env": "prod"}))
    core.create_namespaced_config_map(NS, cm("b", {"tier": "db"}))
    core.create_namespaced_config_map(NS, cm("c"))

    def names(**kwargs: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier!=web") == ["b", "c"]
    assert names(label_selector="tier in (web,db)") == ["a", "b"]
    assert names(label_selector="tier notin (web)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier,env=prod") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as bad:
        names(label_selector="tier in web")
    assert bad.value.status == 400


def _owned(name: str, *owners: Any) -> dict[str, Any]:
    refs = [{"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid} for o in owners]
    return cm(name, ownerReferences=refs)


def test_garbage_collection_follows_owner_references(core: kubernetes.client.CoreV1Api) -> None:
    owner = core.create_namespaced_config_map(NS, cm("owner"))
    other = core.create_namespaced_config_map(NS, cm("other-owner"))
    child = core.create_namespaced_config_map(NS, _owned("child", owner))
    core.create_namespaced_config_map(NS, _owned("grandchild", child))
    core.create_namespaced_config_map(NS, _owned("shared", owner, other))
    core.delete_namespaced_config_map("owner", NS)  # background (the default)
    left = sorted(i.metadata.name for i in core.list_namespaced_config_map(NS).items)
    assert left == ["other-owner", "shared"]  # "shared" still has a live owner

    fg_owner = core.create_namespaced_config_map(NS, cm("fg"))
    core.create_namespaced_config_map(NS, _owned("fg-child", fg_owner))
    core.delete_namespaced_config_map("fg", NS, propagation_policy="Foreground")
    assert "fg-child" not in [i.metadata.name for i in core.list_namespaced_config_map(NS).items]

    late = core.create_namespaced_config_map(NS, _owned("late", owner))  # its owner is already gone
    assert late.metadata.name == "late"
    assert "late" not in [i.metadata.name for i in core.list_namespaced_config_map(NS).items]

    orphan_owner = core.create_namespaced_config_map(NS, cm("o"))
    core.create_namespaced_config_map(NS, _owned("o-child", orphan_owner))
    core.delete_namespaced_config_map("o", NS, propagation_policy="Orphan")
    assert core.read_namespaced_config_map("o-child", NS).metadata.owner_references is None


def test_finalizers_delay_deletion(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("f", finalizers=["example.com/hold"]))
    core.delete_namespaced_config_map("f", NS)
    held = core.read_namespaced_config_map("f", NS)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("f", NS)
    assert gone.value.status == 404


def test_delete_collection_by_label(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, cm("a", {"x": "1"}))
    core.create_namespaced_config_map(NS, cm("b", {"x": "2"}))
    core.delete_collection_namespaced_config_map(NS, label_selector="x=1")
    assert [i.metadata.name for i in core.list_namespaced_config_map(NS).items] == ["b"]


def test_list_pages_with_limit_and_continue(core: kubernetes.client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, cm(f"c{i}"))
    first = core.list_namespaced_config_map(NS, limit=2)
    second = core.list_namespaced_config_map(NS, limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_config_map(NS, limit=2, _continue=second.metadata._continue)
    names = [i.metadata.name for page in (first, second, third) for i in page.items]
    assert names == [f"c{i}" for i in range(5)] and third.metadata._continue is None


def test_custom_resources_are_pruned_and_validated_by_the_crd_schema(
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    args = ("kubepeft.dev", "v1alpha1", NS, "peftjobs")
    created = custom.create_namespaced_custom_object(*args, job("j", {**SPEC, "notAField": 1}))
    assert "notAField" not in created["spec"]
    status = {"status": {"phase": "Running", "kopf": {"progress": {}}, "attempts": 1}}
    patched = custom.patch_namespaced_custom_object_status(*args, "j", status)
    assert patched["status"] == {"phase": "Running", "attempts": 1, "conditions": []}  # pruned, then defaulted
    with pytest.raises(ApiException) as bad_phase:
        custom.patch_namespaced_custom_object_status(*args, "j", {"status": {"phase": "Dancing"}})
    assert bad_phase.value.status == 422
    with pytest.raises(ApiException) as missing:
        custom.create_namespaced_custom_object(*args, job("k", {"method": "lora"}))
    assert missing.value.status == 422 and "model" in json.loads(missing.value.body)["message"]
