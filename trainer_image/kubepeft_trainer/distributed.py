"""How the rank processes are started and configured: pure functions of the spec and the launcher env.

``build_launch_command`` turns a job spec + :class:`~kubepeft.contract.LauncherEnv` into the
``accelerate launch`` argv and extra environment that start this node's ranks, and
``build_deepspeed_config`` into the DeepSpeed JSON. Both are pure so they are unit-tested
without starting anything; the launcher only writes the JSON and runs the argv.

Measured traps these functions encode (see the environment guide):

* ``accelerate launch --cpu --num_processes 2`` starts ONE process. Without CUDA we launch with
  ``--multi_gpu`` plus ``ACCELERATE_USE_CPU=1``, which gives a real gloo process group (and
  ``--cpu`` only for a world of one, where accelerate refuses ``--multi_gpu``).
* DeepSpeed on CPU needs the gloo backend passed explicitly (the worker does that), and must NOT
  get ``ACCELERATE_USE_CPU`` (accelerate would then skip DeepSpeed's own init).
* An accelerate config that names a DeepSpeed file must not carry ``mixed_precision``: the
  precision lives in the DeepSpeed JSON only.
* Multi-node DeepSpeed through accelerate defaults to the pdsh launcher (ssh to every host);
  pods start themselves, so we ask for the ``standard`` (torchrun-style) launcher.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from kubepeft.api.models import PeftJobSpec, TrainingSpec
from kubepeft.contract import LauncherEnv

Precision = Literal["bf16", "fp16", "fp32"]

WORKER_MODULE = "kubepeft_trainer.worker"
# DeepSpeed's default: it keeps every small tensor whole on every rank. Tests set 0
# ($KUBEPEFT_ZERO3_PERSISTENCE_THRESHOLD) so that ZeRO-3 really partitions a tiny model's parameters.
DEFAULT_ZERO3_PERSISTENCE_THRESHOLD = 100_000


def effective_precision(requested: Precision, *, cuda: bool, deepspeed: bool) -> Precision:
    """The precision actually used. On CPU fp16 autocast is unsupported, so fp16 runs in fp32;
    bf16 autocast works under DDP on CPU, but DeepSpeed's bf16 engine is untested there (fp32)."""
    if cuda:
        return requested
    if requested == "fp16":
        return "fp32"
    if requested == "bf16" and deepspeed:
        return "fp32"
    return requested


def accelerate_mixed_precision(precision: Precision) -> str:
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]


def build_deepspeed_config(
    spec: PeftJobSpec,
    world_size: int,
    *,
    cuda: bool,
    num_nodes: int = 1,
    param_persistence_threshold: int = DEFAULT_ZERO3_PERSISTENCE_THRESHOLD,
) -> dict[str, Any]:
    """The DeepSpeed JSON for a job. Batch sizes are explicit so DeepSpeed and our loop agree."""
    training = spec.training or TrainingSpec(max_steps=1)
    dist = spec.distributed
    precision = effective_precision(training.precision, cuda=cuda, deepspeed=True)
    zero: dict[str, Any] = {
        "stage": dist.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
    }
    if dist.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    if dist.zero_stage == 3:
        zero["stage3_param_persistence_threshold"] = param_persistence_threshold
        # Without it, saving a ZeRO-3 model writes empty placeholder tensors.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if dist.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": cuda}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": training.per_device_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "train_batch_size": training.per_device_batch_size * training.gradient_accumulation_steps * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # Our optimizer (torch AdamW / bitsandbytes / SGD) is passed in as a client optimizer.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if training.max_grad_norm > 0:
        config["gradient_clipping"] = training.max_grad_norm
    if num_nodes > 1:
        # Pods have their own disks: each node's local rank 0 writes the model states it needs,
        # and each node uploads its own part of the checkpoint (see checkpoints.py).
        config["checkpoint"] = {"use_node_local_storage": True}
    return config


@dataclass(frozen=True)
class LaunchPlan:
    """What the launcher runs on one node: the argv and the environment it adds."""

    argv: list[str]
    env: dict[str, str]


def build_launch_command(
    spec: PeftJobSpec,
    launcher_env: LauncherEnv,
    *,
    config_path: str,
    workdir: str,
    cuda: bool,
    deepspeed_config_path: str | None = None,
    threads_per_process: int = 1,
    python: str = sys.executable,
) -> LaunchPlan:
    """The ``accelerate launch`` command starting this node's ``procs_per_node`` ranks."""
    deepspeed = spec.distributed.backend == "deepspeed"
    if deepspeed and not deepspeed_config_path:
        raise ValueError("backend deepspeed needs the path of the generated DeepSpeed config")
    training = spec.training or TrainingSpec(max_steps=1)
    argv = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        str(launcher_env.num_nodes),
        "--machine_rank",
        str(launcher_env.node_rank),
        "--main_process_ip",
        launcher_env.master_addr,
        "--main_process_port",
        str(launcher_env.master_port),
        "--num_processes",
        str(launcher_env.world_size),
        "--num_cpu_threads_per_process",
        str(max(1, threads_per_process)),
        "--dynamo_backend",
        "no",
        # A failed rank fails the attempt: the operator restarts the whole attempt, which resumes.
        "--max_restarts",
        "0",
    ]
    env: dict[str, str] = {}
    if deepspeed:
        argv += ["--use_deepspeed", "--deepspeed_config_file", str(deepspeed_config_path)]
        if launcher_env.num_nodes > 1:
            argv += ["--deepspeed_multinode_launcher", "standard"]
    else:
        if launcher_env.world_size > 1:
            argv += ["--multi_gpu"]
            if not cuda:
                env["ACCELERATE_USE_CPU"] = "1"
        elif not cuda:
            # One process: accelerate refuses --multi_gpu, and --cpu is exactly right for one.
            argv += ["--cpu"]
        precision = effective_precision(training.precision, cuda=cuda, deepspeed=False)
        argv += ["--mixed_precision", accelerate_mixed_precision(precision)]
    argv += ["-m", WORKER_MODULE, "--config", config_path, "--workdir", workdir]
    env.update(launcher_env.to_env())
    return LaunchPlan(argv=argv, env=env)
