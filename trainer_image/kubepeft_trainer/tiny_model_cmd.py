"""``kubepeft tiny-model DIR``: build the tiny test/demo model and tokenizer offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, help="folder to write the model and tokenizer into")
    parser.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same bytes")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="full-parameter pretraining steps")
    parser.add_argument(
        "--dataset", type=Path, default=None, help="also write a JSONL dataset of the fine-tuning task here"
    )
    parser.add_argument("--records", type=int, default=256, help="records in --dataset")


def run(args: argparse.Namespace) -> int:
    from kubepeft.tiny_task import tiny_training_records, write_dataset
    from kubepeft_trainer.tiny_model import build_tiny_model

    path = build_tiny_model(args.out_dir, seed=args.seed, pretrain_steps=args.pretrain_steps)
    print(f"tiny model written to {path}")
    if args.dataset is not None:
        write_dataset(args.dataset, tiny_training_records(args.records, seed=args.seed), "jsonl")
        print(f"dataset ({args.records} records) written to {args.dataset}")
    return 0
