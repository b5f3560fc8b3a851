"""Padding-free packing: the best-fit packer, the row format, and exactness on the tiny model --
every example's loss and gradients are the same packed or alone, for every template and layout."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from kubepeft_trainer.data import build_datasets, collate, model_inputs
from kubepeft_trainer.data.packing import best_fit_bins, pack, packed_row
from kubepeft_trainer.data.templates import IGNORE_INDEX

from kubepeft.api.models import DatasetSpec, TrainingSpec
from kubepeft.tiny_task import tiny_chat_records, tiny_text_records, tiny_training_records
from tests.fixtures.trainer import make_spec

torch.set_num_threads(1)

Example = dict[str, list[int]]
RECORDS = {
    "text": lambda n: tiny_text_records(n, seed=5),
    "promptResponse": lambda n: tiny_training_records(n, seed=5),
    "chat": lambda n: tiny_chat_records(n, seed=5),
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from kubepeft_trainer.model_loading import load_tokenizer

    return load_tokenizer(tiny_model_dir, trust_remote_code=False)


def build(tokenizer: Any, template: str, n: int, *, packing: bool, max_len: int = 64) -> list[Example]:
    ds = DatasetSpec.model_validate({"uri": "/d.jsonl", "template": template, "validationSplit": 0.0})
    training = TrainingSpec.model_validate({"maxSteps": 1, "maxSeqLength": max_len, "packing": packing})
    train, _ = build_datasets(ds, training, tokenizer, RECORDS[template](n), seed=0)
    return list(train)


def unpack(row: Example) -> list[Example]:
    """The examples of a packed row, split where the position ids restart."""
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
    return [{k: row[k][a:b] for k in ("input_ids", "labels")} for a, b in itertools.pairwise(starts)]


# --- the packer --------------------------------------------------------------------------------


def test_best_fit_keeps_every_example_once_and_fills_rows() -> None:
    rng = random.Random(0)
    capacity = 256
    lengths = [rng.randint(capacity // 10, capacity) for _ in range(500)]  # the benchmark's spread
    bins = best_fit_bins(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    fill = sum(lengths) / (len(bins) * capacity)
    print(f"{len(lengths)} examples in {len(bins)} rows, fill {fill:.3f}")
    # A lower bound on the optimum: items above half the capacity need a row each. Best fit
    # decreasing is within 11/9 of the optimum; on this spread it is within a few percent.
    lower = max(sum(1 for n in lengths if n > capacity // 2), -(-sum(lengths) // capacity))
    assert len(bins) <= 11 / 9 * lower + 1 and len(bins) <= 1.05 * lower
    assert fill > 0.95
    assert best_fit_bins(lengths, capacity) == bins  # deterministic


def test_best_fit_is_best_fit_and_rejects_what_cannot_fit() -> None:
    # 6 goes to the row with 4 free (after 6), not to the row with 5 free (after 5).
    assert best_fit_bins([6, 5, 4], 10) == [[0, 2], [1]]
    assert best_fit_bins([10, 10], 10) == [[0], [1]]
    with pytest.raises(ValueError, match=r"1\.\.10"):
        best_fit_bins([11], 10)


def test_packed_rows_are_transformers_flattening_format(tokenizer: Any) -> None:
    from transformers import DataCollatorWithFlattening

    examples = build(tokenizer, "chat", 24, packing=False)
    bins = best_fit_bins([len(e["input_ids"]) for e in examples], 64)
    rows = [packed_row([examples[i] for i in b]) for b in bins]
    flat = collate(rows[:3], pad_token_id=tokenizer.pad_token_id, flatten=True)
    reference = DataCollatorWithFlattening(return_tensors="pt")([examples[i] for b in bins[:3] for i in b])
    assert flat.keys() == {"input_ids", "labels", "position_ids"}
    for key in flat:
        assert torch.equal(flat[key], reference[key]), key


@pytest.mark.parametrize("template", ["text", "promptResponse", "chat"])
def test_packing_keeps_every_example_and_label_for_every_template(tokenizer: Any, template: str) -> None:
    plain = build(tokenizer, template, 40, packing=False)
    rows = build(tokenizer, template, 40, packing=True)
    assert rows == pack(plain, 64)
    assert len(rows) < len(plain) / 2
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["position_ids"]) <= 64 for r in rows)
    parts = [part for row in rows for part in unpack(row)]
    # Same examples; only each example's first label (never a target) reads -100.
    key = lambda e: (e["input_ids"], e["labels"][1:])  # noqa: E731
    assert sorted(map(key, parts)) == sorted(map(key, plain))
    assert all(p["labels"][0] == IGNORE_INDEX for p in parts)
    count = lambda es: sum(t != IGNORE_INDEX for e in es for t in e["labels"][1:])  # noqa: E731
    assert count(rows) == count(plain)


def test_text_packing_cuts_long_documents_instead_of_truncating(tokenizer: Any) -> None:
    long = {"text": " ".join("abcdefghijklmnopqrstuvwxyz") * 3}
    ds = DatasetSpec.model_validate({"uri": "/d.jsonl", "validationSplit": 0.0})
    training = TrainingSpec.model_validate({"maxSteps": 1, "maxSeqLength": 32, "packing": True})
    rows, _ = build_datasets(ds, training, tokenizer, [long], seed=0)
    whole = tokenizer(long["text"])["input_ids"] + [tokenizer.eos_token_id]
    assert len(whole) > 64
    pieces = sorted((p["input_ids"] for r in rows for p in unpack(r)), key=lambda ids: whole.index(ids[0]))
    assert [t for p in pieces for t in p] == whole[: sum(map(len, pieces))]
    assert len(whole) - sum(map(len, pieces)) <= 1  # only a one-token tail (no target) is left out


# --- exactness on the tiny model ---------------------------------------------------------------


def lora_model(model_dir: Path, tokenizer: Any, attention: str) -> Any:
    from kubepeft_trainer.methods import get_method
    from kubepeft_trainer.model_loading import load_causal_lm

    spec = make_spec(model_dir, lora={"dropout": 0.0})
    base = load_causal_lm(model_dir, dtype=torch.float32, attn_implementation=attention)
    torch.manual_seed(0)
    model = get_method(spec).apply(base, tokenizer, spec)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # LoRA starts with B = 0, where A gets no gradient: make both matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-position next-token losses (0 where the target is -100), shape (rows, width)."""
    logits = model(**model_inputs(batch)).logits
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    flat = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return flat.view(targets.shape)


def per_example(losses: torch.Tensor, spans: list[tuple[int, int, int]], counts: list[int]) -> list[torch.Tensor]:
    """Each example's mean token loss from its (row, start, end) span."""
    return [losses[r, a:b].sum() / n for (r, a, b), n in zip(spans, counts, strict=True)]


def packed_spans(rows_of: list[list[int]], lengths: list[int], *, flatten: bool) -> dict[int, tuple[int, int, int]]:
    spans, offset = {}, 0
    for row, members in enumerate(rows_of):
        start = offset if flatten else 0
        for i in members:
            spans[i] = (0 if flatten else row, start, start + lengths[i])
            start += lengths[i]
        offset = start
    return spans


def grads(model: Any, loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


@pytest.mark.parametrize(
    ("template", "attention", "flatten"),
    [("chat", "sdpa", False), ("chat", "sdpa", True), ("chat", "eager", False), ("promptResponse", "sdpa", False)],
)
def test_packed_loss_and_grads_match_unpacked(
    tiny_model_dir: Path, tokenizer: Any, template: str, attention: str, flatten: bool
) -> None:
    examples = build(tokenizer, template, 12, packing=False)
    lengths = [len(e["input_ids"]) for e in examples]
    counts = [sum(t != IGNORE_INDEX for t in e["labels"][1:]) for e in examples]
    bins = best_fit_bins(lengths, 64)
    assert max(len(b) for b in bins) > 1
    model = lora_model(tiny_model_dir, tokenizer, attention)
    params = [p for p in model.parameters() if p.requires_grad]
    pad = tokenizer.pad_token_id

    alone = per_example(token_losses(model, collate(examples, pad)), [(i, 0, n) for i, n in enumerate(lengths)], counts)
    rows = [packed_row([examples[i] for i in b]) for b in bins]
    batch = collate(rows, pad, flatten=flatten)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == (1 if flatten else len(rows))
    spans = packed_spans(bins, lengths, flatten=flatten)
    packed = per_example(token_losses(model, batch), [spans[i] for i in range(len(examples))], counts)

    loss_diff = max(abs(a.item() - b.item()) for a, b in zip(alone, packed, strict=True))
    grad_diff = max(
        (grads(model, a, params) - grads(model, b, params)).abs().max().item()
        for a, b in zip(alone, packed, strict=True)
    )
    layout = "flat" if flatten else "rows"
    print(f"{template}/{attention}/{layout}: max |loss diff| {loss_diff:.1e}, max |grad diff| {grad_diff:.1e}")
    assert loss_diff <= 1e-5 and grad_diff <= 1e-5
    # The check has teeth: the same rows with one plain causal mask let examples see each other.
    leaky = batch | {"attention_mask": torch.ones_like(batch["input_ids"])}
    leaked = per_example(token_losses(model, leaky), [spans[i] for i in range(len(examples))], counts)
    assert max(abs(a.item() - b.item()) for a, b in zip(alone, leaked, strict=True)) > 1e-3


@pytest.mark.slow
def test_a_packed_step_and_evaluation_match_unpacked(tiny_model_dir: Path, tokenizer: Any) -> None:
    """Through the real loop: one optimizer step over the same examples, plain or packed, gives the
    same token-weighted loss, token count, updated adapter and evaluation loss."""
    from functools import partial

    from accelerate import Accelerator
    from kubepeft_trainer.checkpoints import TrainerState
    from kubepeft_trainer.evaluation import evaluate, make_eval_batches
    from kubepeft_trainer.loop import LoopSettings, train
    from kubepeft_trainer.sampling import DataPlan
    from transformers import get_scheduler

    examples = build(tokenizer, "chat", 16, packing=False)
    batcher = partial(collate, pad_token_id=tokenizer.pad_token_id)
    outcome = {}
    for name, items in (("plain", examples), ("packed", pack(examples, 64))):
        model = lora_model(tiny_model_dir, tokenizer, "sdpa")
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        scheduler = get_scheduler("constant", optimizer)
        accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        plan = DataPlan(len(items), len(items), 1, 1, seed=0)  # the whole set in one step
        settings = LoopSettings(1, 1, 10**9, None, 1.0, False)
        state = train(accelerator, model, optimizer, scheduler, plan, items, batcher, settings, TrainerState())
        eval_loss, _ = evaluate(model, make_eval_batches(items, batcher, 3, rank=0, world=1), all_reduce=lambda t: t)
        weights = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
        outcome[name] = (state.loss_history[0][1], state.tokens_seen, eval_loss, weights)
    (loss, tokens, eval_loss, weights), (p_loss, p_tokens, p_eval, p_weights) = outcome["plain"], outcome["packed"]
    assert p_tokens == tokens == sum(len(e["input_ids"]) for e in examples)
    assert abs(p_loss - loss) <= 1e-5 and eval_loss is not None and p_eval is not None
    assert abs(p_eval - eval_loss) <= 1e-5 and eval_loss < loss  # the step learned something
    assert (p_weights - weights).abs().max().item() <= 1e-5


def test_packing_is_refused_for_prompt_tuning(tiny_model_dir: Path, tmp_path: Path) -> None:
    from kubepeft_trainer.errors import PermanentTrainerError
    from kubepeft_trainer.inputs import FetchedInputs, build_training_inputs

    from kubepeft.contract import build_trainer_config

    spec = make_spec(tiny_model_dir, method="promptTuning", training={"packing": True})
    config = build_trainer_config(spec, "tests", "prompt-tuning")
    with pytest.raises(PermanentTrainerError, match=r"training\.packing: does not apply to method promptTuning"):
        build_training_inputs(config, FetchedInputs(tiny_model_dir, [], tmp_path / "unused.jsonl"))


def test_flash_attention_is_chosen_for_packed_half_precision_on_cuda_when_installed(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from kubepeft_trainer.model_loading import packed_attention_implementation as choose

    def spec(dtype: str, packing: bool) -> Any:
        return make_spec(tiny_model_dir, model={"dtype": dtype}, training={"packing": packing})

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real_find_spec(name, *a)
    )
    assert choose(spec("bfloat16", True), cuda=True) is None  # not installed: the library default
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real_find_spec(name, *a)
    )
    assert choose(spec("bfloat16", True), cuda=True) == "flash_attention_2"
    assert choose(spec("float16", True), cuda=True) == "flash_attention_2"
    assert choose(spec("bfloat16", True), cuda=False) is None
    assert choose(spec("bfloat16", False), cuda=True) is None
    assert choose(spec("float32", True), cuda=True) is None  # the kernels run in half precision only


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_packed_chat_job_trains_through_kubepeft_train(tmp_path: Path, tiny_model_dir: Path, tokenizer: Any) -> None:
    """The whole path a pod runs: a chat dataset, packing on, epochs counted in packed rows; then a
    new attempt resumed from an earlier checkpoint (new process: rows rebuilt, data position and RNG
    restored) ends with exactly the same adapter."""
    import shutil

    from safetensors.torch import load_file

    from kubepeft.tiny_task import write_dataset
    from tests.fixtures.training import lora_job_spec, lora_training, run_train, write_trainer_config

    records = tiny_chat_records(96)
    data = write_dataset(tmp_path / "chat.jsonl", records, "jsonl")
    training = lora_training(maxSeqLength=64, packing=True, perDeviceBatchSize=2)
    del training["maxSteps"]
    spec = lora_job_spec(
        tiny_model_dir,
        data,
        tmp_path / "out",
        dataset={"uri": str(data), "template": "chat", "validationSplit": 0.125},
        training={**training, "epochs": 3},
        output={"uri": str(tmp_path / "out")},
    )
    rows, validation = build_datasets(spec.dataset, spec.training, tokenizer, records, seed=spec.training.seed)
    assert validation is not None and all("position_ids" in r for r in [*rows, *validation])
    run = run_train(write_trainer_config(tmp_path, spec, "packed"), tmp_path / "run")
    assert run.returncodes == [0], run.log()[-6000:]
    assert f"{len(rows)} rows of at most 64 tokens" in run.log()
    reports = run.reports()
    training_reports = [r["progress"] for r in reports if r["state"] == "Training" and r["progress"].get("loss")]
    assert training_reports[-1]["total_steps"] == -(-3 * len(rows) // 2)  # epochs over rows
    assert training_reports[-1]["epoch"] == pytest.approx(3.0, abs=2 / len(rows))
    assert training_reports[-1]["loss"] < 0.5 * training_reports[0]["loss"]
    assert reports[-1]["state"] == "Succeeded"
    assert reports[-1]["eval_loss_after"] < reports[-1]["eval_loss_before"]

    root = tmp_path / "out" / "tests" / "packed"
    first = load_file(str(root / "adapter" / "adapter_model.safetensors"))
    checkpoints = sorted((root / "checkpoints").iterdir())
    assert len(checkpoints) == 2  # keep: 2
    for stale in (checkpoints[-1], root / "adapter", root / "report"):
        shutil.rmtree(stale)
    (root / "manifest.json").unlink()
    again = run_train(write_trainer_config(tmp_path, spec, "packed"), tmp_path / "run2")
    assert again.returncodes == [0], again.log()[-6000:]
    resumed = again.reports()[-1]["resumed_from_step"]
    assert resumed == int(checkpoints[0].name.removeprefix("step-")) < training_reports[-1]["total_steps"]
    second = load_file(str(root / "adapter" / "adapter_model.safetensors"))
    assert max((first[k] - second[k]).abs().max().item() for k in first) <= 1e-6
