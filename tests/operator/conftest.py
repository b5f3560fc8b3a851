"""Fixtures of the operator scenario tests: a test API server with the jobs' Secrets, trainer-like pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import FakeKubelet, Pod, PodScript

from tests.operator.scenario_support import TrainerKubelet, TrialKubelet
from tests.operator.support import NS, S3_KEYS, secret


@pytest.fixture
def cluster(apiserver: ApiServer) -> ApiServer:
    apiserver.create("secrets", NS, secret("model-creds", *S3_KEYS))
    apiserver.create("secrets", NS, secret("s3-creds", *S3_KEYS))
    return apiserver


@pytest.fixture
def start_trainers(cluster: ApiServer) -> Any:
    """Start fake kubelets whose pods behave like trainers (see :class:`TrainerKubelet`)."""
    yield from _kubelets(cluster, TrainerKubelet)


@pytest.fixture
def start_trials(cluster: ApiServer) -> Any:
    """Start fake kubelets whose pods behave like sweep trials (see :class:`TrialKubelet`)."""
    yield from _kubelets(cluster, TrialKubelet)


def _kubelets(cluster: ApiServer, kind: type[FakeKubelet]) -> Any:
    started: list[FakeKubelet] = []

    def start(script: Callable[[Pod], PodScript | None]) -> FakeKubelet:
        kubelet = kind(cluster.url, script).start()
        started.append(kubelet)
        return kubelet

    yield start
    for kubelet in started:
        kubelet.stop()
