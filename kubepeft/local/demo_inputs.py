"""The demo's inputs on this machine: the tiny model and the tiny task's dataset, built once under
``<workdir>/demo/`` and reused (by ``kubepeft demo`` and by ``kubepeft run`` of the sweep examples).

The model is built by ``kubepeft tiny-model`` in a child process -- the trainer plane's command,
the same way the local run starts ``kubepeft train`` -- so the core never imports torch or the
trainer. The datasets are pure Python (:mod:`kubepeft.tiny_task`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from kubepeft.local.job_file import LoadedJob
from kubepeft.local.quiet import DEBUG_LOG
from kubepeft.tiny_task import tiny_chat_records, tiny_text_records, tiny_training_records, write_dataset

DEMO_RECORDS = 512
ERROR_LINES = 15


class DemoInputError(Exception):
    """The tiny model could not be built (the message names the cause and the log)."""


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    def dataset(self, uri: str) -> Path:
        return self.root / "data" / uri.rstrip("/").rsplit("/", 1)[-1]

    def results(self, name: str) -> Path:
        return self.root / "results" / name


def records_for(job: LoadedJob, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """The tiny task in the shape the job's dataset template reads."""
    assert job.spec.dataset is not None
    template = job.spec.dataset.template
    if template == "chat":
        return tiny_chat_records(count, seed=seed)
    if template == "text":
        return tiny_text_records(count, seed=seed)
    return tiny_training_records(count, seed=seed)


def build_tiny_model(target: Path, log: Path) -> None:
    """``kubepeft tiny-model TARGET`` in a child process; its output is appended to ``log``."""
    done = subprocess.run(
        [sys.executable, "-m", "kubepeft", "tiny-model", str(target)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-ERROR_LINES:])
        raise DemoInputError(f"building the tiny model failed (exit {done.returncode}; output in {log}):\n{tail}")


def ensure_model(paths: DemoPaths, console: Console) -> Path:
    """Build the tiny model once; a half-built folder never counts (built aside, then renamed)."""
    if (paths.model / "config.json").is_file():
        console.print(f"model: reusing {paths.model}", highlight=False)
        return paths.model
    console.print("model: building the tiny Llama-style model (pretraining it briefly) ...", highlight=False)
    staging = paths.model.with_name(paths.model.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    build_tiny_model(staging, paths.root.parent / DEBUG_LOG)  # paths.root is <workdir>/demo
    staging.rename(paths.model)
    return paths.model


def ensure_dataset(job: LoadedJob, paths: DemoPaths, count: int) -> Path:
    assert job.spec.dataset is not None
    path = paths.dataset(job.spec.dataset.uri)
    if not path.is_file():
        write_dataset(path, records_for(job, count), job.spec.dataset.format)
    return path
