"""The trainer's settings model: every KUBEPEFT_* variable it reads, the contract's names, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubepeft_trainer.settings import ENV_LAUNCHER_PID, TrainerSettings

from kubepeft import contract
from kubepeft.contract import LauncherEnv
from kubepeft.settings import SettingsError, rows

# Every variable the operator (or the local run) renders for the trainer, by the field that reads it.
CONTRACT_FIELDS = {
    "config": contract.ENV_CONFIG,
    "workdir": contract.ENV_WORKDIR,
    "node_rank": contract.ENV_NODE_RANK,
    "num_nodes": contract.ENV_NUM_NODES,
    "procs_per_node": contract.ENV_PROCS_PER_NODE,
    "master_addr": contract.ENV_MASTER_ADDR,
    "master_port": contract.ENV_MASTER_PORT,
    "attempt": contract.ENV_ATTEMPT,
    "progress_file": contract.ENV_PROGRESS_FILE,
    "progress_configmap": contract.ENV_PROGRESS_CONFIGMAP,
    "namespace": contract.ENV_NAMESPACE,
}


def test_field_names_are_the_contract_variable_names() -> None:
    for field, variable in CONTRACT_FIELDS.items():
        assert TrainerSettings.variable(field) == variable
    every_contract_variable = {v for k, v in vars(contract).items() if k.startswith("ENV_")}
    assert every_contract_variable == set(CONTRACT_FIELDS.values())


def test_defaults_without_any_variable() -> None:
    settings = TrainerSettings.load({})
    assert settings.config == Path(contract.DEFAULT_CONFIG_PATH)
    assert settings.workdir is None and settings.progress_file is None and settings.launcher_pid is None
    assert settings.launcher_env() == LauncherEnv(0, 1, 1, "127.0.0.1", contract.DEFAULT_MASTER_PORT)
    assert (settings.dist_timeout_minutes, settings.checkpoint_part_timeout) == (30, 900.0)
    assert settings.zero3_persistence_threshold == 100_000


def test_values_are_parsed_and_empty_means_unset(tmp_path: Path) -> None:
    env = LauncherEnv(node_rank=1, num_nodes=2, procs_per_node=3, master_addr="job-0.job", master_port=29511)
    settings = TrainerSettings.load(
        {
            **env.to_env(),
            "KUBEPEFT_ATTEMPT": "2",
            "KUBEPEFT_WORKDIR": str(tmp_path),
            "KUBEPEFT_PROGRESS_FILE": "",
            "KUBEPEFT_CHECKPOINT_PART_TIMEOUT": "1.5",
            "KUBEPEFT_ZERO3_PERSISTENCE_THRESHOLD": "0",
            ENV_LAUNCHER_PID: "4242",
            "UNRELATED": "x",
        }
    )
    assert settings.launcher_env() == env
    assert settings.attempt == 2 and settings.workdir == tmp_path and settings.progress_file is None
    assert settings.checkpoint_part_timeout == 1.5 and settings.zero3_persistence_threshold == 0
    assert settings.launcher_pid == 4242


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KUBEPEFT_NODE_RANK", "one"),
        ("KUBEPEFT_NUM_NODES", "0"),
        ("KUBEPEFT_MASTER_PORT", "70000"),
        ("KUBEPEFT_DIST_TIMEOUT_MINUTES", "soon"),
        ("KUBEPEFT_CHECKPOINT_PART_TIMEOUT", "-1"),
    ],
)
def test_a_malformed_variable_is_named(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        TrainerSettings.load({variable: value})


def test_every_variable_is_documented() -> None:
    documented = rows(TrainerSettings)
    assert all(row.description for row in documented)
    assert {row.variable for row in documented} >= set(CONTRACT_FIELDS.values()) | {ENV_LAUNCHER_PID}
