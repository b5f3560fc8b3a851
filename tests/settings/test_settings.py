"""The settings base: environment mapping vs process environment, empty = unset, errors naming the
variable, JSON and comma-separated values, frozen models; the core's model and its one read."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import Field, PositiveInt, ValidationError, field_validator

from kubepeft.settings import (
    CoreSettings,
    CsvList,
    PlaneSettings,
    SettingsError,
    core_settings,
    rows,
    split_csv,
)
from kubepeft.storage import PermanentStorageError, TransferTuning


class Sample(PlaneSettings):
    name: str = Field("default", description="a string")
    count: PositiveInt = Field(3, description="a positive number")
    ratio: float = Field(0.5, description="a float")
    mode: Literal["a", "b"] = Field("a", description="a choice")
    labels: dict[str, str] = Field(default_factory=dict, description="a JSON object")
    items: list[dict[str, Any]] = Field(default_factory=list, description="a JSON list")
    names: CsvList = Field((), description="a comma-separated list")

    @field_validator("names", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return split_csv(value)


def test_a_mapping_is_read_case_insensitively_and_unknown_variables_are_ignored() -> None:
    settings = Sample.load(
        {
            "KUBEPEFT_NAME": "x",
            "kubepeft_count": "7",
            "KUBEPEFT_RATIO": "1.5",
            "KUBEPEFT_MODE": "b",
            "KUBEPEFT_LABELS": '{"pool": "gpu"}',
            "KUBEPEFT_ITEMS": '[{"key": "gpu"}]',
            "KUBEPEFT_NAMES": " a, b,,c ",
            "KUBEPEFT_SOMETHING_ELSE": "ignored",
            "NAME": "not ours",
        }
    )
    assert (settings.name, settings.count, settings.ratio, settings.mode) == ("x", 7, 1.5, "b")
    assert settings.labels == {"pool": "gpu"} and settings.items == [{"key": "gpu"}]
    assert settings.names == ("a", "b", "c")


def test_the_process_environment_is_read_by_load_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEPEFT_NAME", "from-process")
    monkeypatch.setenv("KUBEPEFT_NAMES", "p,q")
    assert Sample.load().name == "from-process" and Sample.load().names == ("p", "q")
    assert Sample.load({}).name == "default", "a given mapping replaces the process environment"
    assert Sample().name == "default" and Sample(count=2).count == 2, "direct construction reads nothing"


def test_empty_and_blank_variables_count_as_unset_and_values_are_stripped() -> None:
    empty = {f"KUBEPEFT_{name.upper()}": "" for name in Sample.model_fields}
    assert Sample.load(empty) == Sample()
    blank = {f"KUBEPEFT_{name.upper()}": "  " for name in Sample.model_fields}
    assert Sample.load(blank) == Sample()
    assert Sample.load({"KUBEPEFT_MODE": " b ", "KUBEPEFT_COUNT": " 4\n"}).model_dump(include={"mode", "count"}) == {
        "mode": "b",
        "count": 4,
    }


def test_models_are_frozen_and_refuse_unknown_fields_in_code() -> None:
    settings = Sample.load({})
    with pytest.raises(ValidationError):
        settings.name = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="nmae"):
        Sample(nmae="typo")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KUBEPEFT_COUNT", "three", "must be a valid integer, not 'three'"),
        ("KUBEPEFT_COUNT", "0", "must be greater than 0, not '0'"),
        ("KUBEPEFT_RATIO", "half", "must be a valid number, not 'half'"),
        ("KUBEPEFT_MODE", "c", "must be 'a' or 'b', not 'c'"),
        ("KUBEPEFT_LABELS", "{not json", "must be valid JSON, not '{not json'"),
        ("KUBEPEFT_LABELS", "[1]", "must be a valid dictionary, not '[1]'"),
        ("KUBEPEFT_LABELS", '{"pool": 1}', "must be a valid string (at pool)"),
        ("KUBEPEFT_ITEMS", '{"a": 1}', "must be a valid list"),
        ("KUBEPEFT_ITEMS", "[1]", "must be a valid dictionary (at 0)"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Sample.load({name: value})
    assert str(caught.value).startswith(f"{name} {expected}")


def test_every_malformed_variable_is_named_and_long_values_are_cut() -> None:
    with pytest.raises(SettingsError) as caught:
        Sample.load({"KUBEPEFT_COUNT": "x" * 500, "KUBEPEFT_MODE": "z"})
    message = str(caught.value)
    assert "KUBEPEFT_COUNT must be" in message and "KUBEPEFT_MODE must be" in message
    assert "x" * 80 + "..." in message and "x" * 81 not in message


def test_core_settings_defaults_are_the_transfer_defaults() -> None:
    assert TransferTuning.from_settings(CoreSettings()) == TransferTuning()
    tuned = TransferTuning.from_settings(CoreSettings.load({"KUBEPEFT_S3_PART_MB": "5"}))
    assert tuned.part_size == tuned.multipart_threshold == 5 * 1024 * 1024


def test_core_settings_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    core_settings.cache_clear()
    try:
        monkeypatch.setenv("KUBEPEFT_S3_CONCURRENCY", "3")
        assert TransferTuning.of_process().concurrency == 3
        monkeypatch.setenv("KUBEPEFT_S3_CONCURRENCY", "5")
        assert TransferTuning.of_process().concurrency == 3, "read once, not per store"
        core_settings.cache_clear()
        monkeypatch.setenv("KUBEPEFT_S3_CONCURRENCY", "many")
        with pytest.raises(PermanentStorageError, match=r"^KUBEPEFT_S3_CONCURRENCY must be"):
            TransferTuning.of_process()
    finally:
        core_settings.cache_clear()


def test_rows_describe_each_field_in_order() -> None:
    table = {row.variable: row for row in rows(Sample)}
    assert list(table) == [f"KUBEPEFT_{name.upper()}" for name in Sample.model_fields]
    assert (table["KUBEPEFT_COUNT"].type, table["KUBEPEFT_COUNT"].default) == ("int > 0", "3")
    assert table["KUBEPEFT_RATIO"].type == "float"
    assert table["KUBEPEFT_NAMES"].type == "tuple[str]" and table["KUBEPEFT_NAMES"].default == ""
    assert table["KUBEPEFT_LABELS"].type == "dict[str, str]"
    assert table["KUBEPEFT_MODE"].type == "'a' \\| 'b'" and table["KUBEPEFT_MODE"].description == "a choice"
