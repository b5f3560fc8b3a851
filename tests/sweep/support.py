"""Builders for sweep unit tests."""

from __future__ import annotations

from typing import Any

from kubepeft.api.sweep_models import PeftSweepSpec

TEMPLATE: dict[str, Any] = {
    "method": "lora",
    "model": {"uri": "s3://kubepeft-demo/models/tiny-llama"},
    "dataset": {"uri": "s3://kubepeft-demo/data/tiny-chat.jsonl"},
    "training": {"maxSteps": 10},
    "output": {"uri": "s3://kubepeft-demo/runs"},
}


def sweep_spec(parameters: list[dict[str, Any]], **fields: Any) -> PeftSweepSpec:
    return PeftSweepSpec.model_validate({"template": TEMPLATE, "parameters": parameters, **fields})


RANK_GROUP = [
    {"path": "lora.r", "values": [2, 4, 8, 16], "group": "rank"},
    {"path": "lora.alpha", "values": [4, 8, 16, 32], "group": "rank"},
]
