"""Label and field selectors with the API server's syntax (equality, set-based, existence)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


class SelectorError(ValueError):
    """The selector string is malformed (the API server answers 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, get: Callable[[str], str | None]) -> bool:
        value = get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # "!=" and "notin" match objects that lack the key, as in Kubernetes.
        return value is None or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_selector(text: str | None) -> tuple[Requirement, ...]:
    if not text:
        return ()
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        for op in ("!=", "==", "="):
            if op in part and "(" not in part:
                key, _, value = part.partition(op)
                key, value = key.strip(), value.strip()
                if not key:
                    raise SelectorError(f"invalid selector: {part!r}")
                requirements.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
                break
        else:
            match = _SET_RE.match(part)
            if not match:
                raise SelectorError(f"invalid selector: {part!r}")
            negated, key, set_op, values = match.groups()
            if set_op:
                if negated:
                    raise SelectorError(f"invalid selector: {part!r}")
                items = frozenset(v.strip() for v in values.split(",") if v.strip())
                requirements.append(Requirement(key, set_op, items))
            else:
                requirements.append(Requirement(key, "!exists" if negated else "exists"))
    return tuple(requirements)


def labels_match(requirements: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels.get) for r in requirements)


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    if current is None:
        return None
    return str(current).lower() if isinstance(current, bool) else str(current)


def fields_match(requirements: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    # Field selectors treat an absent field as the empty string.
    return all(r.matches(lambda key: _field(obj, key) or "") for r in requirements)
