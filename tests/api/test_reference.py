"""docs/api-reference.md is generated from the models and never goes stale."""

from __future__ import annotations

from kubepeft.api import reference
from kubepeft.api.validate import crd_schema, iter_rules
from tests.fixtures.api import REPO_ROOT


def test_checked_in_reference_is_up_to_date() -> None:
    checked_in = (REPO_ROOT / reference.REFERENCE_FILE).read_text(encoding="utf-8")
    assert checked_in == reference.render_reference(), "docs/api-reference.md is stale: run `make crds`"


def test_reference_lists_every_field_and_rule() -> None:
    text = reference.render_reference()
    schema = crd_schema()
    for part in ("spec", "status"):
        for path, _node, _required in reference.iter_fields(schema["properties"][part], part):
            assert f"| `{path}` |" in text, path
    for _path, _node, rule in iter_rules(schema):
        assert rule["message"] in text
    assert "## What `kubepeft validate` cannot check offline" in text


def test_reference_row_shows_type_default_bounds_and_description() -> None:
    text = reference.render_reference()
    assert "| `spec.lora.r` | integer | `16` | ≥ 1; ≤ 1024 | Rank of the update matrices. |" in text.splitlines()
    assert "| `spec.method` | string | required | one of `lora`, `qlora`, `promptTuning` | The PEFT method. |" in text
