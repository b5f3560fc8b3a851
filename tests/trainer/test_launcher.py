"""Pure builders of the launch: accelerate argv, DeepSpeed JSON, exit classification."""

from __future__ import annotations

from typing import Any

import pytest
from kubepeft_trainer.distributed import (
    build_deepspeed_config,
    build_launch_command,
    effective_precision,
)
from kubepeft_trainer.launcher import classify_exit, last_interval_loss
from kubepeft_trainer.rank_files import RankFailure

from kubepeft.api.models import PeftJobSpec, TrainingSpec
from kubepeft.contract import ENV_NODE_RANK, EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, LauncherEnv


def spec(**overrides: Any) -> PeftJobSpec:
    body: dict[str, Any] = {
        "method": "lora",
        "model": {"uri": "/models/tiny"},
        "dataset": {"uri": "/data/train.jsonl"},
        "training": {"maxSteps": 10, "perDeviceBatchSize": 2, "gradientAccumulationSteps": 3, "precision": "fp32"},
        "output": {"uri": "/out"},
    }
    body.update(overrides)
    return PeftJobSpec.model_validate(body)


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_cpu_ddp_uses_multi_gpu_with_accelerate_use_cpu() -> None:
    env = LauncherEnv(node_rank=1, num_nodes=2, procs_per_node=2, master_addr="10.0.0.1", master_port=29511)
    plan = build_launch_command(spec(), env, config_path="/c.json", workdir="/w", cuda=False, python="py")
    argv = plan.argv
    assert argv[:3] == ["py", "-m", "accelerate.commands.launch"]
    # --cpu --num_processes N starts ONE process: never use --cpu.
    assert "--cpu" not in argv and "--multi_gpu" in argv
    assert plan.env["ACCELERATE_USE_CPU"] == "1"
    assert arg(argv, "--num_processes") == "4"  # the world size, not the per-node count
    assert arg(argv, "--num_machines") == "2"
    assert arg(argv, "--machine_rank") == "1"
    assert arg(argv, "--main_process_ip") == "10.0.0.1"
    assert arg(argv, "--main_process_port") == "29511"
    assert arg(argv, "--mixed_precision") == "no"
    assert argv[-6:] == ["-m", "kubepeft_trainer.worker", "--config", "/c.json", "--workdir", "/w"]
    assert plan.env[ENV_NODE_RANK] == "1"


def test_single_cpu_process_uses_cpu_flag() -> None:
    plan = build_launch_command(spec(), LauncherEnv(0, 1, 1, "127.0.0.1"), config_path="c", workdir="w", cuda=False)
    assert "--cpu" in plan.argv and "--multi_gpu" not in plan.argv
    assert arg(plan.argv, "--num_processes") == "1"
    plan = build_launch_command(spec(), LauncherEnv(0, 1, 1, "127.0.0.1"), config_path="c", workdir="w", cuda=True)
    assert "--cpu" not in plan.argv and "--multi_gpu" not in plan.argv


def test_gpu_ddp_has_no_cpu_flag_and_keeps_precision() -> None:
    s = spec(training={"maxSteps": 1, "precision": "bf16"})
    plan = build_launch_command(s, LauncherEnv(0, 1, 8, "127.0.0.1"), config_path="c", workdir="w", cuda=True)
    assert "ACCELERATE_USE_CPU" not in plan.env
    assert arg(plan.argv, "--mixed_precision") == "bf16"
    assert arg(plan.argv, "--num_processes") == "8"


def test_deepspeed_launch_names_the_config_and_no_precision() -> None:
    s = spec(distributed={"backend": "deepspeed", "zeroStage": 3})
    env = LauncherEnv(0, 2, 1, "h")
    plan = build_launch_command(s, env, config_path="c", workdir="w", cuda=False, deepspeed_config_path="/w/ds.json")
    assert "--use_deepspeed" in plan.argv and arg(plan.argv, "--deepspeed_config_file") == "/w/ds.json"
    assert arg(plan.argv, "--deepspeed_multinode_launcher") == "standard"  # pods start themselves: no pdsh
    assert "--mixed_precision" not in plan.argv
    # DeepSpeed must not get ACCELERATE_USE_CPU: accelerate would skip DeepSpeed's init.
    assert "ACCELERATE_USE_CPU" not in plan.env
    with pytest.raises(ValueError):
        build_launch_command(s, env, config_path="c", workdir="w", cuda=False)


def test_deepspeed_config_zero3() -> None:
    s = spec(distributed={"backend": "deepspeed", "zeroStage": 3, "offloadParams": True, "offloadOptimizer": True})
    config = build_deepspeed_config(s, 4, cuda=False, num_nodes=2, param_persistence_threshold=0)
    assert config["train_micro_batch_size_per_gpu"] == 2
    assert config["gradient_accumulation_steps"] == 3
    assert config["train_batch_size"] == 2 * 3 * 4
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_param_persistence_threshold"] == 0
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_param"]["device"] == "cpu" and zero["offload_optimizer"]["device"] == "cpu"
    assert config["gradient_clipping"] == 1.0
    assert config["checkpoint"] == {"use_node_local_storage": True}
    assert not config["bf16"]["enabled"] and not config["fp16"]["enabled"]


def test_deepspeed_config_zero2_gpu_bf16() -> None:
    s = spec(training={"maxSteps": 1, "precision": "bf16", "maxGradNorm": 0}, distributed={"backend": "deepspeed"})
    config = build_deepspeed_config(s, 1, cuda=True)
    assert config["zero_optimization"]["stage"] == 2
    assert "stage3_param_persistence_threshold" not in config["zero_optimization"]
    assert config["bf16"]["enabled"] is True
    assert "gradient_clipping" not in config and "checkpoint" not in config


@pytest.mark.parametrize(
    ("requested", "cuda", "deepspeed", "expected"),
    [
        ("fp16", False, False, "fp32"),
        ("bf16", False, False, "bf16"),
        ("bf16", False, True, "fp32"),
        ("fp16", True, True, "fp16"),
        ("fp32", False, False, "fp32"),
    ],
)
def test_effective_precision(requested: Any, cuda: bool, deepspeed: bool, expected: str) -> None:
    assert effective_precision(requested, cuda=cuda, deepspeed=deepspeed) == expected


def test_classify_exit() -> None:
    assert classify_exit(0, []) == (EXIT_OK, None)
    assert classify_exit(1, [])[0] == EXIT_RETRYABLE
    bad = RankFailure(rank=1, exit_code=3, error="PermanentTrainerError", message="data.jsonl:7: bad JSON")
    other = RankFailure(rank=0, exit_code=1, error="RuntimeError", message="gloo")
    assert classify_exit(1, [other, bad]) == (EXIT_PERMANENT, "data.jsonl:7: bad JSON")
    code, message = classify_exit(1, [other])
    assert code == EXIT_RETRYABLE and "gloo" in (message or "")


def test_final_loss_is_the_mean_of_the_last_reporting_interval() -> None:
    history = [(step, float(step)) for step in range(1, 13)]
    # Reports every 5 steps: the last interval after step 10 is steps 11-12.
    assert last_interval_loss(history, TrainingSpec(max_steps=12, log_every_steps=5)) == 11.5
    # A full last interval: steps 6-10.
    assert last_interval_loss(history[:10], TrainingSpec(max_steps=10, log_every_steps=5)) == 8.0
    assert last_interval_loss([], TrainingSpec(max_steps=10)) is None
