"""Reading manifests safely: the API server's input limits, applied before any YAML is built.

A manifest comes from a user who may be careless or hostile. Everything here bounds the work
before it is done:

* :func:`read_manifest` reads regular files only (a FIFO, ``/dev/zero`` or a symlink to it is
  refused without reading) and at most :data:`MAX_MANIFEST_BYTES` (the API server's request limit).
* :func:`load_documents` first walks the YAML *events* (PyYAML's parser, iterative, libyaml's when
  present) and counts nesting depth and nodes, an alias counting as many nodes as it expands to:
  a 1.5 KB alias bomb, a circular alias or 10,000 nested ``[`` are refused before a single object
  is built. Only then does the strict loader (a :class:`yaml.SafeLoader` subclass, the C one when
  present) build the documents, refusing what JSON cannot hold and what kubectl refuses: duplicate
  keys, keys that are not strings, YAML-only types (``!!timestamp``, ``!!binary``, ``!!set``,
  ``!!omap``, ``!!pairs``, unknown tags), NaN and infinities, lone surrogates.

Every refusal is a :class:`ManifestInputError` whose text is ``<file>:<line>: <reason>`` (or
``<file>: <reason>``), the same shape as the validator's ``<file>: <field>: <reason>``.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_MANIFEST_BYTES = 3 * 1024 * 1024
"""The API server refuses request bodies over 3 MiB; so does every manifest reader here."""
MAX_DEPTH = 100
"""Nesting levels of mappings and sequences (a PeftJob with a full affinity needs about 12)."""
MAX_NODES = 50_000
"""Nodes of one file with every alias expanded (a PeftJob has a few hundred; validating 50,000
takes about two seconds, the time CEL needs to see them)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_TAG = "tag:yaml.org,2002:"
_NON_JSON_TAGS = {
    f"{_TAG}timestamp": "a date or time",
    f"{_TAG}binary": "binary data (!!binary)",
    f"{_TAG}set": "a set (!!set)",
    f"{_TAG}omap": "an ordered map (!!omap)",
    f"{_TAG}pairs": "a list of pairs (!!pairs)",
}


class ManifestInputError(Exception):
    """The file cannot be read as manifests; ``str()`` is ``<file>[:<line>]: <reason>``."""

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        self.source, self.reason, self.line = source, reason, line
        super().__init__(f"{source}:{line}: {reason}" if line is not None else f"{source}: {reason}")


# --- reading ------------------------------------------------------------------------------


def _read_capped(handle: BinaryIO, source: str, limit: int) -> bytes:
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise ManifestInputError(source, f"larger than {limit} bytes (the API server's request limit)")
    return data


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ManifestInputError(source, f"not UTF-8 text (byte 0x{data[error.start]:02x})", line) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def read_manifest(name: str, *, limit: int = MAX_MANIFEST_BYTES) -> str:
    """The text of a manifest file (``-``: stdin); raises :class:`ManifestInputError`.

    The file (after following symlinks) must be a regular file: anything else could block or
    never end. It is checked before opening and again on the open handle (it may be swapped).
    """
    if name == "-":
        return _decode(_read_capped(sys.stdin.buffer, "<stdin>", limit), "<stdin>")
    try:
        kind = _not_regular(os.stat(name).st_mode)
        if kind is not None:
            raise ManifestInputError(name, f"cannot read: {kind}, not a regular file")
        with open(name, "rb") as handle:
            kind = _not_regular(os.fstat(handle.fileno()).st_mode)
            if kind is not None:
                raise ManifestInputError(name, f"cannot read: {kind}, not a regular file")
            data = _read_capped(handle, name, limit)
    except OSError as error:
        raise ManifestInputError(name, f"cannot read: {error.strerror or type(error).__name__}") from None
    except ValueError as error:  # e.g. a NUL in the path
        raise ManifestInputError(name, f"cannot read: {error}") from None
    return _decode(data, name)


# --- limits on the event stream ------------------------------------------------------------


class _LimitExceeded(yaml.MarkedYAMLError):
    """A limit of this module, raised at the event that broke it."""


@dataclass
class _Budget:
    """Counts nodes (aliases expanded) and depth over a stream of parser events."""

    max_depth: int
    max_nodes: int
    nodes: int = 0
    stack: list[list[Any]] = field(default_factory=list)  # [anchor, expanded size so far]
    sizes: dict[str, int] = field(default_factory=dict)  # anchor -> expanded size
    open: set[str] = field(default_factory=set)  # anchors of collections not yet closed

    def _fail(self, event: yaml.Event, reason: str) -> None:
        mark: Any = event.start_mark  # libyaml's Mark or PyYAML's: both have .line
        raise _LimitExceeded(problem=reason, problem_mark=mark)

    def _add(self, event: yaml.Event, size: int) -> None:
        self.nodes += size
        if self.stack:
            self.stack[-1][1] += size
        if self.nodes > self.max_nodes:
            self._fail(event, f"more than {self.max_nodes} nodes, counting each alias as the nodes it repeats")

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.sizes.clear()  # anchors are local to their document
            self.open.clear()
        elif isinstance(event, yaml.ScalarEvent):
            self._add(event, 1)
            if event.anchor is not None:
                self.sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(self.stack) >= self.max_depth:
                self._fail(event, f"nested deeper than {self.max_depth} levels")
            self.stack.append([event.anchor, 0])
            self._add(event, 1)  # the collection itself, counted in its own entry
            if event.anchor is not None:
                self.sizes.pop(event.anchor, None)
                self.open.add(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = self.stack.pop()
            if self.stack:
                self.stack[-1][1] += size
            if anchor is not None:
                self.sizes[anchor] = size
                self.open.discard(anchor)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)

    def _alias(self, event: yaml.AliasEvent) -> None:
        anchor = event.anchor
        if anchor in self.open:
            self._fail(event, f"circular alias *{anchor}: it refers to a node that contains it")
        size = self.sizes.get(anchor) if anchor is not None else None
        if size is None:
            self._fail(event, f"undefined alias *{anchor}")
        else:
            self._add(event, size)


# --- the strict loader ------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {list: "sequence", dict: "mapping"}
    return "a " + names.get(type(value), type(value).__name__)


class _StrictConstruction:
    """Mixin over :class:`yaml.constructor.SafeConstructor`: only what JSON can hold."""

    def flatten_mapping(self, node: MappingNode) -> None:
        # Runs once per mapping before its merge keys (<<) are folded in: check the keys as written.
        if not getattr(node, "keys_checked", False):
            node.keys_checked = True  # type: ignore[attr-defined]
            self._check_keys(node)
        super().flatten_mapping(node)  # type: ignore[misc]

    def _check_keys(self, node: MappingNode) -> None:
        seen: dict[str, Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == f"{_TAG}merge":
                continue
            key = self.construct_object(key_node)  # type: ignore[attr-defined]
            if not isinstance(key, str):
                written = f" {key_node.value!r}" if isinstance(key_node, ScalarNode) else ""
                raise ConstructorError(
                    None, None, f"mapping keys must be strings, got {_kind(key)}{written}", key_node.start_mark
                )
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark
                )
            seen[key] = key_node


def _checked(
    construct: Callable[[Any, Any], Any], what: str
) -> Callable[[yaml.constructor.SafeConstructor, Node], Any]:
    """A scalar constructor whose malformed input is a YAML error, not a ValueError or KeyError."""

    def constructor(loader: yaml.constructor.SafeConstructor, node: Node) -> Any:
        try:
            value = construct(loader, node)
        except (ValueError, KeyError, IndexError, OverflowError):
            raise ConstructorError(None, None, f"invalid {what} {node.value!r}", node.start_mark) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConstructorError(
                None, None, f"{node.value!r} is not a finite number (JSON has no NaN or infinity)", node.start_mark
            )
        if isinstance(value, str) and _SURROGATE.search(value):
            raise ConstructorError(None, None, "invalid Unicode: a lone surrogate (e.g. \\ud800)", node.start_mark)
        return value

    return constructor


def _refused(reason: str) -> Callable[[yaml.constructor.SafeConstructor, Node], Any]:
    def constructor(loader: yaml.constructor.SafeConstructor, node: Node) -> Any:
        raise ConstructorError(
            None, None, f"{reason} is not a JSON value: quote it to make it a string", node.start_mark
        )

    return constructor


def _unknown_tag(loader: yaml.constructor.SafeConstructor, node: Node) -> Any:
    tag = "!!" + node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else node.tag
    raise ConstructorError(None, None, f"unsupported YAML tag {tag}: only plain JSON values", node.start_mark)


def _strict_loader(base: type) -> type:
    """A strict subclass of ``base`` (CSafeLoader or SafeLoader)."""
    loader: type = type(f"Strict{base.__name__}", (_StrictConstruction, base), {})
    safe = yaml.constructor.SafeConstructor
    loader.add_constructor(f"{_TAG}int", _checked(safe.construct_yaml_int, "integer"))  # type: ignore[attr-defined]
    loader.add_constructor(f"{_TAG}float", _checked(safe.construct_yaml_float, "number"))  # type: ignore[attr-defined]
    loader.add_constructor(f"{_TAG}bool", _checked(safe.construct_yaml_bool, "boolean"))  # type: ignore[attr-defined]
    loader.add_constructor(f"{_TAG}str", _checked(safe.construct_yaml_str, "string"))  # type: ignore[attr-defined]
    loader.add_constructor(f"{_TAG}value", _checked(safe.construct_yaml_str, "string"))  # type: ignore[attr-defined]
    for tag, reason in _NON_JSON_TAGS.items():
        loader.add_constructor(tag, _refused(reason))  # type: ignore[attr-defined]
    loader.add_constructor(None, _unknown_tag)  # type: ignore[attr-defined]
    return loader


PYTHON_LOADER: type = _strict_loader(yaml.SafeLoader)
C_LOADER: type | None = _strict_loader(yaml.CSafeLoader) if getattr(yaml, "__with_libyaml__", False) else None
DEFAULT_LOADER: type = C_LOADER or PYTHON_LOADER
"""libyaml's parser when PyYAML was built with it (faster; the pure-Python one otherwise)."""


# --- loading ------------------------------------------------------------------------------


def _reason(error: yaml.YAMLError, text: str, from_libyaml: bool) -> tuple[str, int | None]:
    if isinstance(error, yaml.reader.ReaderError):
        # An offset instead of a mark: libyaml counts bytes of the UTF-8 text, PyYAML characters.
        if from_libyaml:
            line = text.encode("utf-8")[: error.position].count(b"\n") + 1
        else:
            line = text.count("\n", 0, error.position) + 1
        character = error.character if isinstance(error.character, str) else chr(error.character)
        return f"YAML syntax error: character {character!r} is not allowed ({error.reason})", line
    mark = getattr(error, "problem_mark", None)
    at: int | None = mark.line + 1 if mark is not None else None
    problem = getattr(error, "problem", None) or str(error)
    if isinstance(error, ConstructorError | _LimitExceeded):
        return str(problem), at
    return f"YAML syntax error: {problem}", at


def _documents(text: str, loader: type) -> Iterator[Any]:
    budget = _Budget(MAX_DEPTH, MAX_NODES)
    for event in yaml.parse(text, Loader=loader):
        budget.feed(event)
    yield from yaml.load_all(text, Loader=loader)


def load_documents(text: str, source: str, *, loader: type | None = None) -> list[Any]:
    """Every non-empty document of a YAML (or JSON) stream; raises :class:`ManifestInputError`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise ManifestInputError(source, f"larger than {MAX_MANIFEST_BYTES} bytes (the API server's request limit)")
    if _SURROGATE.search(text):
        raise ManifestInputError(source, "invalid Unicode: the text holds a lone surrogate")
    chosen = loader or DEFAULT_LOADER
    try:
        return [doc for doc in _documents(text, chosen) if doc is not None]
    except yaml.YAMLError as error:
        reason, line = _reason(error, text, from_libyaml=chosen is C_LOADER)
        raise ManifestInputError(source, reason, line) from None
    except (ValueError, OverflowError, RecursionError) as error:
        # The pure-Python scanner turns some escapes (\U7fffffff) into ValueError.
        raise ManifestInputError(source, f"YAML syntax error: {error}") from None
