"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), with the API server's error classes."""

from __future__ import annotations

import copy
from typing import Any


class PatchConflict(Exception):
    """A JSON-patch ``test`` failed (the API server answers 422 Invalid; kopf expects that)."""


class PatchInvalid(Exception):
    """A malformed patch (400 BadRequest) or a path that does not exist (422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchInvalid(f"invalid JSON pointer: {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, list):
            current = current[int(token)]
        elif isinstance(current, dict) and token in current:
            current = current[token]
        else:
            raise PatchInvalid(f"path not found: /{'/'.join(tokens)}")
    return current, tokens[-1]


def _get(doc: Any, tokens: list[str]) -> Any:
    current = doc
    for token in tokens:
        try:
            current = current[int(token)] if isinstance(current, list) else current[token]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchInvalid(f"path not found: /{'/'.join(tokens)}") from exc
    return current


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, key = _parent(doc, tokens)
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            parent.insert(int(key), value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise PatchInvalid("cannot add to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, key = _parent(doc, tokens)
    try:
        if isinstance(parent, list):
            del parent[int(key)]
        else:
            del parent[key]
    except (KeyError, IndexError, ValueError) as exc:
        raise PatchInvalid(f"path not found: /{'/'.join(tokens)}") from exc
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchInvalid("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchInvalid(f"malformed operation: {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "test":
            try:
                actual = _get(doc, tokens)
            except PatchInvalid as exc:
                raise PatchConflict(f"test failed: {op['path']} is absent") from exc
            if actual != op.get("value"):
                raise PatchConflict(f"test failed: {op['path']} is {actual!r}, not {op.get('value')!r}")
        elif kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)  # must exist
            doc = _remove(doc, tokens) if tokens else doc
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, tokens, value)
        else:
            raise PatchInvalid(f"unknown operation: {kind!r}")
    return doc
