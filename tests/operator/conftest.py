"""Fixtures of the operator scenario tests: a test API server with the jobs' Secrets, trainer-like pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.apiserver import ApiServer
from tests.harness.kubelet import Pod, PodScript
from tests.operator.scenario_support import TrainerKubelet
from tests.operator.support import NS, S3_KEYS, secret


@pytest.fixture
def cluster(apiserver: ApiServer) -> ApiServer:
    apiserver.create("secrets", NS, secret("model-creds", *S3_KEYS))
    apiserver.create("secrets", NS, secret("s3-creds", *S3_KEYS))
    return apiserver


@pytest.fixture
def start_trainers(cluster: ApiServer) -> Any:
    started: list[TrainerKubelet] = []

    def start(script: Callable[[Pod], PodScript | None]) -> TrainerKubelet:
        kubelet = TrainerKubelet(cluster.url, script).start()
        started.append(kubelet)
        return kubelet

    yield start
    for kubelet in started:
        kubelet.stop()
