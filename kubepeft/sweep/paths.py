"""Field paths of a PeftJob spec (``lora.r``) read and written on the wire form (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any


def set_path(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the wire-form ``spec`` with ``value`` at the dotted ``path`` (sections created as needed)."""
    out = copy.deepcopy(spec)
    node = out
    *parents, leaf = path.split(".")
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node = child
    node[leaf] = copy.deepcopy(value)
    return out


def get_path(spec: dict[str, Any], path: str) -> Any:
    """The value at ``path``, or None when absent."""
    node: Any = spec
    for name in path.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def value_text(value: Any) -> str:
    """A value as compact JSON text (the trials table stores values this way)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def value_from_text(text: str) -> Any:
    return json.loads(text)
