"""Pure pieces of the loop: data order, token-weighted loss, metrics, loss curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kubepeft_trainer.evaluation import count_label_tokens, make_eval_batches, token_loss_sum
from kubepeft_trainer.export import build_metrics
from kubepeft_trainer.loss_curve import plot_loss_curve
from kubepeft_trainer.rank_files import TrainingResult
from kubepeft_trainer.sampling import DataPlan


def test_global_batch_is_the_same_set_for_any_world_size() -> None:
    one = DataPlan(num_examples=23, per_device_batch_size=4, gradient_accumulation_steps=1, world_size=1, seed=7)
    two = DataPlan(num_examples=23, per_device_batch_size=2, gradient_accumulation_steps=1, world_size=2, seed=7)
    for step in range(12):  # crosses several epochs
        ranks = [i for r in range(2) for mb in two.rank_micro_batches(step, r) for i in mb]
        assert sorted(ranks) == sorted(one.rank_micro_batches(step, 0)[0])


def test_epochs_are_permutations_and_deterministic() -> None:
    plan = DataPlan(num_examples=10, per_device_batch_size=5, gradient_accumulation_steps=1, world_size=1, seed=3)
    first_epoch = plan.global_indices(0) + plan.global_indices(1)
    assert sorted(first_epoch) == list(range(10))
    assert plan.global_indices(2) != plan.global_indices(0) or plan.global_indices(3) != plan.global_indices(1)
    again = DataPlan(num_examples=10, per_device_batch_size=5, gradient_accumulation_steps=1, world_size=1, seed=3)
    assert again.global_indices(5) == plan.global_indices(5)
    assert plan.epoch_at(3) == pytest.approx(1.5)


def test_total_steps() -> None:
    plan = DataPlan(num_examples=100, per_device_batch_size=4, gradient_accumulation_steps=2, world_size=2, seed=0)
    assert plan.total_steps(max_steps=7, epochs=None) == 7
    assert plan.total_steps(max_steps=None, epochs=1.0) == 7  # ceil(100 / 16)
    micro = plan.rank_micro_batches(0, 1)
    assert len(micro) == 2 and all(len(mb) == 4 for mb in micro)


def test_token_loss_sum_matches_mean_and_handles_virtual_tokens() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[1, 2, 3, -100], [4, 5, -100, -100]])
    logits = torch.randn(2, 4, 9)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    assert count_label_tokens(labels) == 3
    assert token_loss_sum(logits, labels).item() / 3 == pytest.approx(expected.item(), rel=1e-6)
    # Prompt tuning: 5 virtual-token positions in front of the logits are ignored.
    padded = torch.cat([torch.randn(2, 5, 9), logits], dim=1)
    assert token_loss_sum(padded, labels).item() == pytest.approx(token_loss_sum(logits, labels).item())


def test_eval_batches_are_equal_in_number_on_every_rank() -> None:
    items = list(range(5))

    def collate(batch: list[int]) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(batch)}

    per_rank = [make_eval_batches(items, collate, 2, rank=r, world=2) for r in range(2)]
    assert [len(b) for b in per_rank] == [2, 2]
    counted = [int(v) for rank in per_rank for batch, counts in rank if counts for v in batch["x"]]
    assert sorted(counted) == items
    assert make_eval_batches([], collate, 2, rank=0, world=2) == []


def test_metrics_and_loss_curve(tmp_path: Path) -> None:
    result = TrainingResult(
        total_steps=2,
        final_step=2,
        epoch=0.5,
        eval_loss_before=2.0,
        eval_loss_after=1.0,
        loss_history=[(1, 3.0), (2, 2.0)],
        tokens_seen=100,
    )
    metrics = build_metrics(result)
    assert metrics["perplexity_after"] == pytest.approx(2.718281828)
    assert metrics["train_loss_first"] == 3.0 and metrics["train_loss_last10_mean"] == 2.5
    png = plot_loss_curve(tmp_path / "c.png", [(1, 3.0), (2, 2.0)], [(2, 1.5)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizers(name: str) -> None:
    from kubepeft_trainer.optimization import build_optimizer

    p = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer(name, [p], 0.1, 0.0)
    (p**2).sum().backward()
    optimizer.step()
    assert (p < 1).all()


@pytest.mark.parametrize("name", ["linear", "cosine", "constant", "constantWithWarmup"])
def test_schedulers(name: str) -> None:
    from kubepeft_trainer.optimization import SCHEDULER_NAMES
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    warmup = 0 if name == "constant" else 2
    scheduler = get_scheduler(SCHEDULER_NAMES[name], optimizer, num_warmup_steps=warmup, num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    if warmup:
        assert lrs[0] == 0.0 and lrs[2] == 1.0
    if name in ("linear", "cosine"):
        assert lrs[-1] < 0.2
    else:
        assert lrs[-1] == 1.0


def test_checkpoint_parts_overlay_and_state_roundtrip(tmp_path: Path) -> None:
    from kubepeft_trainer.checkpoints import TrainerState, node_part_name, overlay_node_parts

    downloaded = tmp_path / "dl"
    for node, files in {
        0: {"model.safetensors": "w0", "latest": "t", "random_states_0.pkl": "r0"},
        1: {"latest": "other", "random_states_1.pkl": "r1"},
    }.items():
        part = downloaded / node_part_name(node)
        part.mkdir(parents=True)
        (part / "manifest.json").write_text("{}")
        for name, text in files.items():
            (part / name).write_text(text)
    merged = overlay_node_parts(downloaded, tmp_path / "merged")
    assert sorted(p.name for p in merged.iterdir()) == [
        "latest",
        "model.safetensors",
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert (merged / "latest").read_text() == "t"  # node 0 wins on duplicates
    state = TrainerState(step=7, epoch=0.5, loss_history=[(1, 2.0)], eval_loss_before=1.25)
    assert TrainerState.from_json(state.to_json()) == state
