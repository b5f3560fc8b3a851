"""The CLI finds every subcommand through entry points; a missing plane gets a clear message."""

from __future__ import annotations

import re

import pytest

from kubepeft import cli
from kubepeft.commands import Command

CORE = {"validate", "crds", "run", "sweep-report", "verify", "s3-server"}
TRAINER = {"sample", "demo", "train", "tiny-model"}
OPERATOR = {"operator"}


def test_every_plane_registers_its_commands() -> None:
    commands = cli.discover_commands()
    assert set(commands) == CORE | TRAINER | OPERATOR
    assert {name for name, c in commands.items() if c.plane == "core"} == CORE
    assert {name for name, c in commands.items() if c.plane == "trainer"} == TRAINER
    assert {name for name, c in commands.items() if c.plane == "operator"} == OPERATOR
    core_modules = [c.module for c in commands.values() if c.plane == "core"]
    assert all(module.startswith("kubepeft.") for module in core_modules)


def test_help_lists_every_installed_command_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^    ([a-z0-9-]+)(?:\s|$)", out, flags=re.MULTILINE)
    assert listed == list(cli.discover_commands())
    assert listed[0] == "validate" and listed[-1] == "operator"


def test_a_command_whose_plane_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = Command("kubepeft_trainer.main", "x", order=1, plane="trainer", needs=("kubepeft_no_such_dependency",))
    monkeypatch.setattr(cli, "discover_commands", lambda: {"train": absent})
    assert cli.main(["train", "--help"]) == cli.EXIT_PLANE_MISSING
    err = capsys.readouterr().err
    assert "kubepeft train: needs the trainer plane" in err
    assert "kubepeft_no_such_dependency" in err
    assert "pip install 'kubepeft[trainer]'" in err


def test_a_third_party_import_failure_is_reported_as_a_missing_plane() -> None:
    broken = Command("kubepeft_no_such_dependency.main", "x", order=1, plane="operator")
    with pytest.raises(cli.PlaneMissing, match=r"kubepeft\[operator\]"):
        cli.load_command_module("operator", broken)


def test_a_broken_own_module_is_not_hidden_as_a_missing_plane() -> None:
    broken = Command("kubepeft.no_such_module", "x", order=1)
    with pytest.raises(ModuleNotFoundError):
        cli.load_command_module("x", broken)


def test_an_install_without_the_entry_points_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "discover_commands", lambda: {})
    assert cli.main(["validate", "x.yaml"]) == cli.EXIT_PLANE_MISSING
    assert "no commands are registered" in capsys.readouterr().err
