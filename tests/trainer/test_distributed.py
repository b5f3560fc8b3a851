"""Several ranks on CPU: DDP on one node, two nodes over loopback, DeepSpeed ZeRO-2 and ZeRO-3.

The same global batch on 1 or N ranks gives the same adapter (token-weighted loss), so every
distributed run is compared with one single-process reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import open_store
from tests.fixtures.training import lora_job_spec, lora_training, run_train, write_trainer_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GLOBAL_BATCH = 4
STEPS = 12


def _spec(model: Path, data: Path, out: Path, *, world: int, **overrides: Any) -> Any:
    wire: dict[str, Any] = {
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},  # dropout RNG streams differ per rank
        "training": lora_training(maxSteps=STEPS, perDeviceBatchSize=GLOBAL_BATCH // world),
        "output": {"uri": str(out), "merge": False},
        "checkpointing": {"everySteps": 6, "keep": 1},
    }
    wire.update(overrides)
    return lora_job_spec(model, data, out, **wire)


def _adapter(root: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(root / "adapter" / "adapter_model.safetensors"))


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _losses(run: Any) -> list[float]:
    return [r["progress"]["loss"] for r in run.reports() if r["state"] == "Training" and r["progress"].get("loss")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_task_data: Path) -> Any:
    base = tmp_path_factory.mktemp("ref")
    spec = _spec(tiny_model_dir, tiny_task_data, base / "out", world=1)
    run = run_train(write_trainer_config(base, spec, "ref"), base / "run")
    assert run.returncodes == [0], run.log()[-6000:]
    return _adapter(base / "out" / "tests" / "ref"), _losses(run)


def test_two_ranks_match_one(tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, reference: Any) -> None:
    """1 sequence x 2 accumulation steps x 2 ranks (with gradient checkpointing) = the reference's 4 x 1 x 1."""
    spec = _spec(
        tiny_model_dir,
        tiny_task_data,
        tmp_path / "out",
        world=2,
        training=lora_training(
            maxSteps=STEPS, perDeviceBatchSize=1, gradientAccumulationSteps=2, gradientCheckpointing=True
        ),
    )
    run = run_train(write_trainer_config(tmp_path, spec, "ddp"), tmp_path / "run", procs=2)
    assert run.returncodes == [0], run.log()[-6000:]
    adapter, losses = _adapter(tmp_path / "out" / "tests" / "ddp"), _losses(run)
    ref_adapter, ref_losses = reference
    adapter_diff = _max_diff(adapter, ref_adapter)
    loss_diff = max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True))
    print(f"2 ranks vs 1: adapter max abs diff {adapter_diff:.2e}, loss max abs diff {loss_diff:.2e}")
    assert adapter_diff <= 1e-4 and loss_diff <= 1e-4


def test_two_nodes_on_loopback_with_s3(
    tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, reference: Any, s3_server: Any, s3_bucket: str
) -> None:
    """Two ``kubepeft train`` processes (node ranks 0/1, own work folders = own disks) rendezvous
    on 127.0.0.1; output to the embedded S3 server; each node uploads its own checkpoint part."""
    from safetensors.torch import load_file

    from tests.fixtures.s3 import open_s3_store

    spec = _spec(tiny_model_dir, tiny_task_data, tmp_path / "out", world=2, output={"uri": f"s3://{s3_bucket}/jobs"})
    config = write_trainer_config(tmp_path, spec, "nodes", s3=s3_server)
    run = run_train(config, tmp_path / "run", nodes=2, procs=1)
    assert run.returncodes == [0, 0], run.log(0)[-4000:] + run.log(1)[-4000:]
    store = open_s3_store(s3_server, f"s3://{s3_bucket}/jobs/tests/nodes")
    store.verify("adapter")
    store.verify(store.root)  # the job manifest, every file's sha256 read back from S3
    store.download_dir("adapter", tmp_path / "adapter")
    adapter = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    diff = _max_diff(adapter, reference[0])
    print(f"2 nodes vs 1 process: adapter max abs diff {diff:.2e}")
    assert diff <= 1e-4
    # The last checkpoint holds both nodes' parts (each uploaded by its own node), committed by node 0.
    manifest = store.verify("checkpoints/step-00000012")
    paths = {e.path for e in manifest.files}
    assert any(p.startswith("nodes/node-000/") for p in paths)
    assert "nodes/node-001/random_states_1.pkl" in paths
    assert not store.is_complete("checkpoints/step-00000006")  # retention: keep 1
    assert [r["state"] for r in run.reports(0)][-1] == "Succeeded"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero(stage: int, tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, reference: Any) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # ZeRO-2 also accumulates (DeepSpeed's own boundaries): 1 x 2 steps x 2 ranks = the reference's batch.
    per_device, accumulation = (1, 2) if stage == 2 else (2, 1)
    spec = _spec(
        tiny_model_dir,
        tiny_task_data,
        tmp_path / "out",
        world=2,
        training=lora_training(maxSteps=STEPS, perDeviceBatchSize=per_device, gradientAccumulationSteps=accumulation),
        distributed={"backend": "deepspeed", "zeroStage": stage},
        output={"uri": str(tmp_path / "out"), "merge": True, "mergedDtype": "float32"},
    )
    run = run_train(write_trainer_config(tmp_path, spec, f"zero{stage}"), tmp_path / "run", procs=2, timeout=600)
    assert run.returncodes == [0], run.log()[-8000:]
    root = tmp_path / "out" / "tests" / f"zero{stage}"
    if stage == 3:
        assert "ZeRO-3 partitioned" in run.log() and "ZeRO-3 partitioned 0 " not in run.log(), run.log()[-3000:]
    adapter = _adapter(root)
    assert all(t.numel() > 0 for t in adapter.values())
    diff = _max_diff(adapter, reference[0])
    print(f"ZeRO-{stage} vs 1-process DDP: adapter max abs diff {diff:.2e}")
    assert diff <= 1e-3
    # The merged model (separate non-distributed step) equals base + adapter.
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(root / "merged").eval()(input_ids=ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / "adapter")
        expected = peft.eval()(input_ids=ids).logits
    merge_diff = (merged - expected).abs().max().item()
    print(f"ZeRO-{stage} merged vs base+adapter: {merge_diff:.2e}")
    assert merge_diff <= 1e-5
    open_store(str(root)).verify(str(root))
