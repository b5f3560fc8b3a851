"""Operator settings come from the environment (`OperatorSettings.load`); malformed ones stop the
operator with a clear error."""

from __future__ import annotations

import pytest
from kubepeft_operator.settings import DEFAULT_CPU_IMAGE, OperatorSettings, SettingsError


def test_defaults() -> None:
    settings = OperatorSettings.load({})
    assert settings.watch_namespaces == () and settings.image_pull_policy == "IfNotPresent"
    assert settings.trainer_image_cpu == DEFAULT_CPU_IMAGE and settings.metrics_port == 8080
    assert settings.health_port == 8081 and settings.peering == "" and settings.max_workers == 0


def test_every_variable_is_read() -> None:
    settings = OperatorSettings.load(
        {
            "KUBEPEFT_WATCH_NAMESPACES": "a, b,,",
            "KUBEPEFT_TRAINER_IMAGE": "gpu:1",
            "KUBEPEFT_TRAINER_IMAGE_CPU": "cpu:1",
            "KUBEPEFT_IMAGE_PULL_POLICY": "Always",
            "KUBEPEFT_IMAGE_PULL_SECRETS": "reg1,reg2",
            "KUBEPEFT_DEFAULT_S3_ENDPOINT": "http://s3:8333",
            "KUBEPEFT_DEFAULT_S3_REGION": "eu-west-1",
            "KUBEPEFT_DEFAULT_CREDENTIALS_SECRET": "s3-default",
            "KUBEPEFT_TRAINER_NODE_SELECTOR": '{"pool": "gpu"}',
            "KUBEPEFT_TRAINER_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
            "KUBEPEFT_TRAINER_DEFAULT_CPU": "4",
            "KUBEPEFT_TRAINER_DEFAULT_MEMORY": "16Gi",
            "KUBEPEFT_LOG_LEVEL": "debug",
            "KUBEPEFT_METRICS_PORT": "9090",
            "KUBEPEFT_HEALTH_PORT": "9091",
            "KUBEPEFT_PEERING": "kubepeft",
            "KUBEPEFT_MAX_WORKERS": "50",
        }
    )
    assert settings.watch_namespaces == ("a", "b")
    assert settings.image_pull_secrets == ("reg1", "reg2")
    assert settings.trainer_node_selector == {"pool": "gpu"}
    assert settings.trainer_tolerations == [{"key": "gpu", "operator": "Exists"}]
    assert (settings.metrics_port, settings.health_port, settings.max_workers) == (9090, 9091, 50)
    assert settings.log_level == "DEBUG" and settings.peering == "kubepeft"
    assert settings.default_credentials_secret == "s3-default"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KUBEPEFT_IMAGE_PULL_POLICY", "Sometimes"),
        ("KUBEPEFT_TRAINER_NODE_SELECTOR", "[1]"),
        ("KUBEPEFT_TRAINER_NODE_SELECTOR", "{not json"),
        ("KUBEPEFT_TRAINER_TOLERATIONS", '{"a": 1}'),
        ("KUBEPEFT_METRICS_PORT", "eighty"),
    ],
)
def test_malformed_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        OperatorSettings.load({name: value})


def test_connections_and_resync_have_floors() -> None:
    settings = OperatorSettings.load({"KUBEPEFT_API_CONNECTIONS": "0", "KUBEPEFT_RESYNC_SECONDS": "0.2"})
    assert (settings.api_connections, settings.resync_seconds) == (1, 1.0)
    assert OperatorSettings(resync_seconds=5).resync_seconds == 5.0
    with pytest.raises(SettingsError, match=r"^KUBEPEFT_RESYNC_SECONDS must be a valid number, not 'soon'"):
        OperatorSettings.load({"KUBEPEFT_RESYNC_SECONDS": "soon"})


def test_a_model_built_in_code_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEPEFT_TRAINER_IMAGE", "from-the-environment:1")
    assert OperatorSettings().trainer_image != "from-the-environment:1"
    assert OperatorSettings.load().trainer_image == "from-the-environment:1"
