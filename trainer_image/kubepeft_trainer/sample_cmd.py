"""``kubepeft sample --bank URI --task NAME --prompt TEXT``: serve a prompt bank on this machine.

Loads the bank's base model once and every task's prompt adapter (each download verified against
its manifest, each adapter against the bank's sha256), then answers with the chosen task's soft
prompt, switching adapters with peft's ``set_adapter``. Without ``--prompt`` it reads
``task: prompt`` lines from stdin (interactive mode) and answers each, switching as it goes.
Storage: ``--endpoint`` (+ ``--credentials-dir``), else the embedded S3 server of ``--workdir``
for ``s3://`` banks (where ``kubepeft run`` put them), else a local path.

A trainer-plane command (registered by entry point): the model runs in this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubepeft.local.quiet import quiet_third_party
from kubepeft.local.session import default_workdir
from kubepeft.local.storage_defaults import StoragePlan, storage_for
from kubepeft.storage import open_store
from kubepeft.storage.errors import StorageError
from kubepeft.storage.uri import scheme_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", required=True, help="URI of bank.json (s3:// or an absolute path)")
    parser.add_argument("--task", default=None, help="the task whose prompt to use (default: every task)")
    parser.add_argument("--prompt", default=None, help="the input; without it, read 'task: prompt' lines from stdin")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="state folder (default: ./.kubepeft)")
    parser.add_argument("--endpoint", default=None, help="S3 endpoint URL (default: the embedded server)")
    parser.add_argument("--credentials-dir", type=Path, default=None, help="key files for --endpoint")


def _answer(bank: object, task: str, prompt: str, max_new_tokens: int) -> str:
    from kubepeft_trainer.prompt_bank import PromptBank

    assert isinstance(bank, PromptBank)
    return f"[{task}] {prompt!r} -> {bank.generate(task, prompt, max_new_tokens)!r}"


def _serve(args: argparse.Namespace, endpoint: str | None, credentials: Path | None, workdir: Path) -> int:
    from kubepeft_trainer.prompt_bank import BankError, PromptBank, fetch_bank

    root = args.bank.rsplit("/", 1)[0]
    store = open_store(root, endpoint=endpoint, credentials_dir=credentials)
    try:
        local = fetch_bank(store, args.bank, workdir / "banks" / Path(root).name)
        bank = PromptBank(local.base_dir, local.adapters)
        if args.prompt is not None:
            for task in [args.task] if args.task else bank.tasks:
                print(_answer(bank, task, args.prompt, args.max_new_tokens))
            return 0
        print(f"tasks: {', '.join(bank.tasks)}; type 'task: prompt' per line", file=sys.stderr)
        for line in sys.stdin:
            task, sep, prompt = line.rstrip("\n").partition(":")
            if not sep:
                task, prompt = args.task or "", line.rstrip("\n")
            print(_answer(bank, task.strip(), prompt.strip(), args.max_new_tokens), flush=True)
        return 0
    except BankError as error:
        print(f"bank: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    workdir = (args.workdir or default_workdir()).absolute()
    embedded = scheme_of(args.bank) == "s3" and not args.endpoint
    credentials = args.credentials_dir.absolute() if args.credentials_dir else None
    plan = StoragePlan(embedded, args.endpoint, credentials, workdir / "s3" if embedded else None)
    try:
        with quiet_third_party(workdir), storage_for(plan) as storage:
            return _serve(args, storage.endpoint, storage.credentials_dir, workdir)
    except StorageError as error:
        print(f"storage: {error}", file=sys.stderr)
        return 1 if error.retryable else 3
