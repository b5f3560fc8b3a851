"""The trainer plane's ``kubepeft`` subcommands (entry points of group ``kubepeft.commands``).

Kept free of heavy imports: ``kubepeft --help`` loads this module to list the commands.
"""

from __future__ import annotations

from kubepeft.commands import Command

# What every trainer command needs before its module can be imported (the `trainer` extra).
NEEDS = ("torch", "transformers", "peft")

SAMPLE = Command(
    "kubepeft_trainer.sample_cmd",
    "answer prompts with a prompt bank's tasks (one base, adapters switched)",
    order=40,
    plane="trainer",
    needs=NEEDS,
)
DEMO = Command(
    "kubepeft_trainer.demo_cmd",
    "build a tiny model and run examples/tiny-lora.yaml end to end",
    order=60,
    plane="trainer",
    needs=NEEDS,
)
TRAIN = Command(
    "kubepeft_trainer.main", "the trainer entry point worker pods run", order=70, plane="trainer", needs=NEEDS
)
TINY_MODEL = Command(
    "kubepeft_trainer.tiny_model_cmd",
    "build a tiny Llama-style model and tokenizer offline",
    order=80,
    plane="trainer",
    needs=NEEDS,
)
