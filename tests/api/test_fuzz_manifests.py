"""Property: any mutation of a real example is accepted or refused with the project's own error.

Mutated manifests derived from ``examples/*.yaml`` (object-level changes with hostile values,
rendered as YAML or JSON, then text-level damage: hostile snippets, deleted spans, duplicated
lines) go through both entry points -- ``validate_text`` (``kubepeft validate``) and
``load_job_text`` (``kubepeft run``'s loader, nothing is trained). Each is accepted, or refused
with lines ``<file>[#n][:line]: <reason>``; never another exception; and ``validate`` says ok
exactly when ``run`` accepts. The slow tier also hands every fifth mutated object to
``check_object`` directly (NaN, huge integers, non-string keys as Python values). The fast tier runs 400 texts
(about 5 s); the slow tier 5,000 (one to two minutes on two busy cores).
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepeft.api import yaml_input
from kubepeft.api.validate import check_object, validate_text
from kubepeft.local.job_file import JobFileError, load_job_text
from tests.fixtures.api import REPO_ROOT

SOURCE = "fuzz.yaml"
FAST_EXAMPLES = 400
SLOW_EXAMPLES = 5_000
EXAMPLES = [
    doc
    for doc in (yaml.safe_load(path.read_text()) for path in sorted((REPO_ROOT / "examples").glob("*.yaml")))
    if doc.get("kind") == "PeftJob"  # the PeftJob run path (sweeps: tests/api/test_sweep_api.py)
]
LINE = re.compile(r"fuzz\.yaml(#\d+)?(:\d+)?: \S.*")

HOSTILE_STRINGS = [
    "2\n",
    "x\0y",
    "\ud800",
    "",
    " ",
    "../../x",
    "a" * 300,
    "2024-01-01",
    "s3://bucket/runs\0/x",
    "hf://org/name\n",
    "NaN",
    "1e999",
    "!!binary",
    "*a",
    "&a",
    "{",
    "- x",
    "'",
    '"',
    "\t",
    "\u2028",
    "\ufeff",
]
HOSTILE_SNIPPETS = [
    "&a ",
    "*a",
    "*a ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!!timestamp ",
    "!!python/object:os.system ",
    "!foo ",
    "<<: *a\n",
    "? ",
    "{",
    "}",
    "[",
    "]",
    "- ",
    ": ",
    "\t",
    "'",
    '"',
    "2024-01-01",
    ".nan",
    "-.inf",
    "~",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    '"\\ud800"',
    '"\\0"',
    "\\",
    "1.5: x\n",
    "null: x\n",
    "0b_",
    "!!float ''",
    "99999999999999999999999",
    "a: &a [*a]\n",
]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_STRINGS),
    st.booleans(),
    st.none(),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["", "x\0", "\ud800", "a.b", "[0]", "spec"]), st.integers())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)


def _locations(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (dict keys and list indices)."""
    out = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _locations(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _locations(value, (*path, index))
    return out


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [*doc.keys(), *(s for value in doc.values() for s in _strings(value))]
    if isinstance(doc, list):
        return [s for value in doc for s in _strings(value)]
    return [doc] if isinstance(doc, str) else []


EXAMPLE_STRINGS = sorted({s for doc in EXAMPLES for s in _strings(doc)})


def _similar(draw: st.DrawFn, value: Any) -> Any:
    """A value of the same kind, near the valid range: the boundaries the schema, the CEL rules
    and the typed model must agree on (maxSteps 0 or 1, warmup >= maxSteps, a known enum)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return draw(st.integers(min_value=-2, max_value=5000))
    if isinstance(value, float):
        return draw(st.floats(min_value=-0.5, max_value=2.0))
    if isinstance(value, str):
        return draw(st.sampled_from(EXAMPLE_STRINGS))
    return value


def _mutate_object(draw: st.DrawFn, doc: Any) -> Any:
    location = draw(st.sampled_from(_locations(doc)))
    if not location:
        return draw(values)
    parent = doc
    for part in location[:-1]:
        parent = parent[part]
    last = location[-1]
    action = draw(st.sampled_from(["similar", "similar", "replace", "delete", "add", "rekey"]))
    if action == "similar":
        parent[last] = _similar(draw, parent[last])
    elif action == "replace":
        parent[last] = draw(values)
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(keys)] = draw(values)
    elif action == "rekey" and isinstance(parent, dict):
        parent[draw(keys)] = parent.pop(last)
    return doc


def _render(draw: st.DrawFn, doc: Any) -> str:
    style = draw(st.sampled_from(["block", "flow", "json"]))
    if style == "json":
        return json.dumps(doc, default=str)
    return yaml.safe_dump(doc, default_flow_style=style == "flow", sort_keys=False, allow_unicode=True)


def _damage_text(draw: st.DrawFn, text: str) -> str:
    action = draw(st.sampled_from(["none", "none", "none", "insert", "delete", "duplicate", "char"]))
    if not text or action == "none":
        return text
    at = draw(st.integers(min_value=0, max_value=len(text)))
    if action == "insert":
        return text[:at] + draw(st.sampled_from(HOSTILE_SNIPPETS)) + text[at:]
    if action == "delete":
        return text[:at] + text[at + draw(st.integers(min_value=1, max_value=40)) :]
    if action == "duplicate":
        lines = text.splitlines(keepends=True)
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        return "".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
    return text[:at] + draw(st.characters(codec="utf-8")) + text[at + 1 :]


@st.composite
def mutated_manifests(draw: st.DrawFn) -> tuple[Any, str]:
    """A mutated example as an object (hostile Python values included) and as damaged text."""
    doc = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        doc = _mutate_object(draw, doc)
    return doc, _damage_text(draw, _render(draw, doc))


def check_object_directly(doc: Any) -> None:
    """The object itself, as a Python caller (or the operator) would pass it: NaN, sets, bytes,
    non-string keys and huge integers are field errors, never an exception."""
    checked = check_object(doc)
    assert (checked.job is None) == bool(checked.errors)
    for error in checked.errors:
        line = f"{SOURCE}: {error}"
        assert LINE.fullmatch(line) and line.encode("utf-8"), line


def check_both_entry_points(text: str, seen: Counter[str]) -> None:
    result = validate_text(text, SOURCE)  # never raises
    lines = result.lines()
    assert lines and all(LINE.fullmatch(line) for line in lines), lines
    assert all(line.encode("utf-8") for line in lines)  # printable: no lone surrogate
    try:
        job = load_job_text(text, SOURCE)
    except JobFileError as error:
        assert error.lines and all(LINE.fullmatch(line) for line in error.lines), error.lines
        job = None
    one_job = result.ok and len(result.documents) == 1
    # validate accepts exactly what run accepts
    assert (job is not None) == one_job, (lines, job)
    seen["accepted" if job is not None else "refused"] += 1


def _run_property(max_examples: int, *, derandomize: bool, objects: bool = True) -> Counter[str]:
    """Run the property ``max_examples`` times (``objects``: also pass every fifth mutated object
    to :func:`check_object` directly); returns how many texts were accepted / refused."""
    seen: Counter[str] = Counter()

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(mutated_manifests())
    def property_(case: tuple[Any, str]) -> None:
        doc, text = case
        if objects and sum(seen.values()) % 5 == 0:  # every fifth: it costs a full validation
            check_object_directly(doc)
        check_both_entry_points(text, seen)

    property_()
    return seen


def test_mutated_examples_are_accepted_or_refused_cleanly() -> None:
    # The texts only: hostile Python objects are covered by the slow run and test_hostile_input.
    seen = _run_property(FAST_EXAMPLES, derandomize=True, objects=False)
    assert sum(seen.values()) >= FAST_EXAMPLES
    # Both outcomes occur: the mutations neither always break nor never break a manifest.
    assert seen["accepted"] > 0 and seen["refused"] > 0, seen


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_five_thousand_mutated_examples_are_accepted_or_refused_cleanly() -> None:
    seen = _run_property(SLOW_EXAMPLES, derandomize=False)
    assert sum(seen.values()) >= SLOW_EXAMPLES
    assert seen["accepted"] > 0 and seen["refused"] > 0, seen


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_pure_python_parser_holds_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where PyYAML has no libyaml, its pure-Python parser reads manifests: same property.
    monkeypatch.setattr(yaml_input, "DEFAULT_LOADER", yaml_input.PYTHON_LOADER)
    seen = _run_property(FAST_EXAMPLES, derandomize=True, objects=False)
    assert sum(seen.values()) >= FAST_EXAMPLES
