"""The headless Service that gives rank 0 a stable DNS name across attempts."""

from __future__ import annotations

from typing import Any

from kubepeft.contract import DEFAULT_MASTER_PORT
from kubepeft_operator import naming
from kubepeft_operator.render.common import JobIdentity, child_metadata


def render_service(job: JobIdentity) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(job, naming.service_name(job.name), "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "selector": {naming.LABEL_JOB_NAME: naming.label_value(job.name)},
            # Ranks resolve rank 0 before it is Ready (there is no readiness probe to pass).
            "publishNotReadyAddresses": True,
            "ports": [
                {
                    "name": "rendezvous",
                    "port": DEFAULT_MASTER_PORT,
                    "targetPort": DEFAULT_MASTER_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }
