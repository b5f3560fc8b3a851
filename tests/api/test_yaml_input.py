"""The strict YAML loader keeps what kubectl accepts (merge keys, small aliases, JSON) and
counts what it refuses the same way with libyaml and with PyYAML's pure-Python parser."""

from __future__ import annotations

import pytest

from kubepeft.api import yaml_input
from kubepeft.api.yaml_input import ManifestInputError, load_documents

LOADERS = [
    pytest.param(yaml_input.PYTHON_LOADER, id="python"),
    pytest.param(
        yaml_input.C_LOADER,
        id="libyaml",
        marks=pytest.mark.skipif(yaml_input.C_LOADER is None, reason="PyYAML built without libyaml"),
    ),
]


def test_libyaml_is_used_when_present() -> None:
    import yaml

    assert yaml_input.DEFAULT_LOADER is (yaml_input.C_LOADER if yaml.__with_libyaml__ else yaml_input.PYTHON_LOADER)


@pytest.mark.parametrize("loader", LOADERS)
def test_merge_keys_and_small_aliases_still_work(loader: type) -> None:
    text = "base: &base {a: 1, b: 2}\nderived: {<<: *base, a: 5}\nagain: *base\n=: x\n"
    assert load_documents(text, "f", loader=loader) == [
        {"base": {"a": 1, "b": 2}, "derived": {"a": 5, "b": 2}, "again": {"a": 1, "b": 2}, "=": "x"}
    ]


@pytest.mark.parametrize("loader", LOADERS)
def test_json_and_multi_document_streams(loader: type) -> None:
    text = '{"a": [1, 2.5, true, null, "x"]}\n---\n---\nb: 1\n'
    assert load_documents(text, "f", loader=loader) == [{"a": [1, 2.5, True, None, "x"]}, {"b": 1}]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "f:1: circular alias *a: it refers to a node that contains it"),
        ("a: 1\na: 2\n", "f:2: duplicate key 'a' (first at line 1)"),
        ("base: &b {a: 1}\nx: {<<: *b, c: 1, c: 2}\n", "f:2: duplicate key 'c' (first at line 2)"),
        ("a: [" + ",".join(["1"] * yaml_input.MAX_NODES) + "]\n", "f:1: more than 50000 nodes"),
        ("a: " + "{b: " * 101 + "1" + "}" * 101 + "\n", "f:1: nested deeper than 100 levels"),
        ("a: !!timestamp 2024-01-01\n", "f:1: a date or time is not a JSON value"),
        ("a: !!pairs [{a: 1}]\n", "f:1: a list of pairs (!!pairs) is not a JSON value"),
    ],
)
def test_refusals(loader: type, text: str, message: str) -> None:
    with pytest.raises(ManifestInputError) as caught:
        load_documents(text, "f", loader=loader)
    assert str(caught.value).startswith(message), str(caught.value)


def test_text_over_the_cap_is_refused_before_parsing() -> None:
    with pytest.raises(ManifestInputError, match=r"^f: larger than 3145728 bytes"):
        load_documents("#" * (yaml_input.MAX_MANIFEST_BYTES + 1), "f")


def test_the_budget_counts_each_alias_as_what_it_repeats() -> None:
    import yaml

    budget = yaml_input._Budget(max_depth=100, max_nodes=10**9)
    for event in yaml.parse("a: &a [1, [2, 3]]\nb: *a\nc: [*a, *a]\n", Loader=yaml_input.PYTHON_LOADER):
        budget.feed(event)
    # root 1 + keys 3 + a 5 (list, 1, list, 2, 3) + b 5 + c 11 (list + twice a)
    assert (budget.nodes, budget.sizes) == (25, {"a": 5})
