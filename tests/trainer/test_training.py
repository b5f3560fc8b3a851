"""End to end through ``kubepeft train`` on CPU: LoRA learns the task and exports reloadable,
verifiable artifacts; prompt tuning and QLoRA train through the same loop; bad data fails fast
and permanently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import open_store, sha256_file
from tests.fixtures.training import (
    FinishedJob,
    lora_job_spec,
    lora_training,
    run_train,
    write_trainer_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _greedy(model: Any, tokenizer: Any, prompt: str, n: int = 8) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def _logits(model: Any, tokenizer: Any, text: str) -> Any:
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits


def test_lora_loss_falls_and_reports_progress(lora_job: FinishedJob) -> None:
    reports = lora_job.run.reports()
    states = [r["state"] for r in reports]
    assert states[0] == "Starting" and states[-1] == "Succeeded"
    assert "Training" in states and "Exporting" in states
    training = [r for r in reports if r["state"] == "Training" and r["progress"].get("loss") is not None]
    assert training[-1]["progress"]["step"] == training[-1]["progress"]["total_steps"] == 40
    assert all(r["progress"].get("tokens_per_second", 0) > 0 for r in training)
    first, last = training[0]["progress"]["loss"], training[-1]["progress"]["loss"]
    assert last < 0.5 * first, (first, last)
    final = reports[-1]
    assert final["eval_loss_after"] < final["eval_loss_before"]
    assert final["artifacts"]["manifest"].endswith("/manifest.json")
    # The human-readable line on stdout.
    assert "step 40/40 loss " in lora_job.run.log() and " tok/s eta " in lora_job.run.log()


def test_lora_adapter_reloads_exactly_and_answers(lora_job: FinishedJob, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubepeft.tiny_task import tiny_training_records

    tokenizer = AutoTokenizer.from_pretrained(lora_job.root / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    probes = [r for r in tiny_training_records(40, seed=1234) if len(r["response"].split()) >= 3][:3]
    before = [_greedy(base, tokenizer, r["prompt"], 4) for r in probes]
    model = PeftModel.from_pretrained(base, lora_job.root / "adapter").eval()
    # The task flips the default direction: after training, greedy decoding gives the response.
    for record, was in zip(probes, before, strict=True):
        expected = " " + " ".join(record["response"].split()[:4])
        answer = _greedy(model, tokenizer, record["prompt"], 4)
        assert answer == expected, (record, answer, was)
        assert was != expected

    again = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32"), lora_job.root / "adapter"
    ).eval()
    text = "f = e d c"
    assert (_logits(model, tokenizer, text) - _logits(again, tokenizer, text)).abs().max().item() == 0.0

    # The merged model loads with plain transformers and matches base + adapter.
    merged = AutoModelForCausalLM.from_pretrained(lora_job.root / "merged").eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(lora_job.root / "merged")
    diff = (_logits(merged, merged_tokenizer, text) - _logits(model, tokenizer, text)).abs().max().item()
    print(f"merged vs base+adapter: max abs logit diff {diff:.2e}")
    assert diff <= 1e-5, diff
    shards = list((lora_job.root / "merged").glob("*.safetensors"))
    assert len(shards) > 1, "maxShardSize 200KB must shard the merged model"


def test_lora_manifests_cover_every_file(lora_job: FinishedJob) -> None:
    root = lora_job.root
    store = open_store(str(root))
    job = store.verify(str(root))  # every file's size and sha256 against the job manifest
    paths = {entry.path for entry in job.files}
    assert "adapter/adapter_model.safetensors" in paths and "adapter/adapter_config.json" in paths
    assert any(p.startswith("merged/") and p.endswith(".safetensors") for p in paths)
    assert {"report/metrics.json", "report/loss_curve.png"} <= paths
    for entry in job.files:
        assert sha256_file(root / entry.path) == entry.sha256
    for part in ("adapter", "merged", "report"):
        assert store.is_complete(str(root / part))
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert (root / "report" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # Retention kept the newest two complete checkpoints; the last one is the final step.
    steps = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert steps == ["step-00000030", "step-00000040"]


def test_prompt_tuning_trains_and_reloads_exactly(tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = lora_job_spec(
        tiny_model_dir,
        tiny_task_data,
        tmp_path / "out",
        method="promptTuning",
        lora=None,
        promptTuning={"numVirtualTokens": 4},
        training=lora_training(maxSteps=25, learningRate=3e-2, lrScheduler="constantWithWarmup"),
        output={"uri": str(tmp_path / "out"), "merge": False},
    )
    run = run_train(write_trainer_config(tmp_path, spec, "pt"), tmp_path / "run")
    assert run.returncodes == [0], run.log()[-6000:]
    final = run.reports()[-1]
    assert final["state"] == "Succeeded"
    assert final["eval_loss_after"] < final["eval_loss_before"]
    adapter = tmp_path / "out" / "tests" / "pt" / "adapter"
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    text = "f = e d c"
    one = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    two = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    # Logits include the virtual-token positions; both models have them, compare everything.
    assert (_logits(one, tokenizer, text) - _logits(two, tokenizer, text)).abs().max().item() == 0.0
    assert not (tmp_path / "out" / "tests" / "pt" / "merged").exists()


def test_qlora_trains_through_the_loop(tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path) -> None:
    spec = lora_job_spec(
        tiny_model_dir,
        tiny_task_data,
        tmp_path / "out",
        method="qlora",
        quantization={"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "float32"},
        # The 8-bit optimizer and a linear schedule ride along on this short run.
        training=lora_training(maxSteps=6, optimizer="adamw8bit", lrScheduler="linear", learningRate=3e-3),
        output={"uri": str(tmp_path / "out"), "merge": True, "mergedDtype": "float32"},
    )
    run = run_train(write_trainer_config(tmp_path, spec, "qlora"), tmp_path / "run")
    assert run.returncodes == [0], run.log()[-6000:]
    final = run.reports()[-1]
    assert final["state"] == "Succeeded"
    losses = [r["progress"]["loss"] for r in run.reports() if r["state"] == "Training" and r["progress"].get("loss")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    root = tmp_path / "out" / "tests" / "qlora"
    open_store(str(root)).verify(str(root))
    assert (root / "merged" / "config.json").exists()


def test_malformed_dataset_fails_permanently_with_file_and_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "a b =", "response": " b c"})
    data.write_text("\n".join([good, good, "{not json", good]) + "\n")
    spec = lora_job_spec(tiny_model_dir, data, tmp_path / "out")
    run = run_train(write_trainer_config(tmp_path, spec, "bad"), tmp_path / "run", timeout=180)
    assert run.returncodes == [3], run.log()[-4000:]
    final = run.reports()[-1]
    assert final["state"] == "Failed" and final["failure_class"] == "permanent"
    assert "bad.jsonl:3" in final["message"], final["message"]


def test_merge_only_on_node_zero(tmp_path: Path, tiny_model_dir: Path, lora_job: FinishedJob) -> None:
    """Merge-only: nothing trains; node 0 combines the adapters and exports, node 1 exits at once."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = str(lora_job.root / "adapter")
    spec = lora_job_spec(
        tiny_model_dir,
        tmp_path,
        tmp_path / "out",
        training=None,
        dataset=None,
        checkpointing=None,
        adapters={
            "sources": [{"uri": adapter, "name": "one", "weight": 0.5}, {"uri": adapter, "name": "two", "weight": 0.5}],
            "mergeOnly": True,
            "combination": "cat",
        },
    )
    run = run_train(write_trainer_config(tmp_path, spec, "merge"), tmp_path / "run", nodes=2)
    assert run.returncodes == [0, 0], run.log()[-6000:]
    assert run.reports()[-1]["state"] == "Succeeded"
    root = tmp_path / "out" / "tests" / "merge"
    paths = {e.path for e in open_store(str(root)).verify(str(root)).files}
    assert any(p.startswith("merged/") for p in paths) and any(p.startswith("adapter/") for p in paths)
    # 0.5 x A + 0.5 x A (cat) is A itself: the merged model equals base + the trained adapter.
    import torch

    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(root / "merged").eval()(input_ids=ids).logits
        single = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
        expected = single(input_ids=ids).logits
    assert (merged - expected).abs().max().item() <= 1e-4
