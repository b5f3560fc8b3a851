"""``kubepeft demo`` (``make demo``): the main job end to end on a fresh machine.

A trainer-plane command (it samples from the models with torch); everything else it reuses from
the core: the inputs (:mod:`kubepeft.local.demo_inputs`) and the local run (``kubepeft run``).

1. builds the tiny model (``kubepeft tiny-model``) and a small dataset under ``<workdir>/demo/``
   (reused when already there);
2. starts the embedded S3 server (data under ``<workdir>/s3``, persistent), creates the buckets and
   uploads the model (a manifest'ed prefix, resumable) and the dataset to exactly the URIs that
   ``examples/tiny-lora.yaml`` names;
3. runs that file through the same code as ``kubepeft run``;
4. downloads the artifacts and checks every sha256 against the manifest, and prints a greedy
   sample from the merged model next to the base model's.

Idempotent: the model and inputs are reused (the upload skips what is already there); a job
whose manifest already exists is not rerun -- the next free name (``tiny-lora-2``, ...) is used;
an interrupted job (no manifest yet) is resumed from its latest checkpoint under the same name.

``--prepare-only`` stops after step 2 and prints the endpoint and the credentials folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

import kubepeft
from kubepeft.contract import output_root
from kubepeft.local.demo_inputs import (
    DEMO_RECORDS,
    DemoInputError,
    DemoPaths,
    ensure_dataset,
    ensure_model,
    records_for,
)
from kubepeft.local.job_file import JobFileError, LoadedJob, load_job_file
from kubepeft.local.quiet import quiet_third_party
from kubepeft.local.run_cmd import EXIT_INVALID, run_loaded_job
from kubepeft.local.run_lock import RunBusyError
from kubepeft.local.session import default_workdir
from kubepeft.local.storage_defaults import S3_DATA_DIR, bucket_of
from kubepeft.storage.errors import StorageError
from kubepeft.storage.store import Store

EXAMPLE = Path("examples") / "tiny-lora.yaml"
SAMPLE_SEED = 2024


def default_example() -> Path:
    """``examples/tiny-lora.yaml`` in the current directory, else in the source checkout."""
    here = Path.cwd() / EXAMPLE
    if here.is_file():
        return here
    return Path(kubepeft.__file__).resolve().parent.parent / EXAMPLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", type=Path, default=None, help=f"the PeftJob to run (default: {EXAMPLE})")
    parser.add_argument("--workdir", type=Path, default=None, help="state folder (default: ./.kubepeft)")
    parser.add_argument("--prepare-only", action="store_true", help="build and upload the inputs, then stop")
    parser.add_argument("--endpoint", default=None, help="use this S3 server instead of the embedded one")
    parser.add_argument("--credentials-dir", type=Path, default=None, help="key files for --endpoint")
    parser.add_argument("--records", type=int, default=DEMO_RECORDS, help="dataset size (records)")
    parser.add_argument("--no-sample", action="store_true", help="skip the greedy sample from the merged model")


@dataclass(frozen=True)
class Server:
    endpoint: str
    credentials_dir: Path | None
    region: str
    embedded_data_dir: Path | None = None

    def store(self, root: str) -> Store:
        from kubepeft.storage import open_store

        return open_store(root, endpoint=self.endpoint, region=self.region, credentials_dir=self.credentials_dir)


@contextmanager
def demo_server(args: argparse.Namespace, workdir: Path, buckets: list[str]) -> Iterator[Server]:
    """``--endpoint`` if given, else the embedded server (started here, stopped on exit)."""
    if args.endpoint:
        yield Server(args.endpoint, args.credentials_dir.absolute() if args.credentials_dir else None, "us-east-1")
        return
    from kubepeft.storage.seaweed import EmbeddedS3

    with EmbeddedS3(workdir / S3_DATA_DIR) as server:
        for bucket in buckets:
            server.create_bucket(bucket)
        yield Server(server.endpoint, server.credentials_dir, server.region, workdir / S3_DATA_DIR)


def upload_inputs(job: LoadedJob, server: Server, model_dir: Path, dataset_file: Path, console: Console) -> None:
    assert job.spec.dataset is not None
    model_uri, dataset_uri = job.spec.model.uri, job.spec.dataset.uri
    store = server.store(model_uri)
    manifest = store.upload_dir(model_dir, model_uri, metadata={"kind": "model", "source": "kubepeft demo tiny model"})
    sent = manifest.transfer.transferred_files if manifest.transfer else len(manifest.files)
    console.print(f"model: {model_uri} ({len(manifest.files)} files, {sent} uploaded)", highlight=False)
    store.upload_file(dataset_file, dataset_uri)
    console.print(f"dataset: {dataset_uri} ({dataset_file.stat().st_size} bytes)", highlight=False)


def choose_name(job: LoadedJob, server: Server) -> str:
    """The example's name, unless that job already finished: then the next free ``<name>-<n>``.

    A job without a manifest (never run, or interrupted) keeps its name and resumes.
    """

    def finished(name: str) -> bool:
        root = output_root(job.spec, job.namespace, name)
        return server.store(root).read_manifest(root) is not None

    name, number = job.name, 1
    while finished(name):
        number += 1
        name = f"{job.name}-{number}"
    return name


def verify_artifacts(job: LoadedJob, server: Server, paths: DemoPaths, console: Console) -> Path:
    """Download the job's artifact set and check every file's sha256 against its manifest."""
    root = output_root(job.spec, job.namespace, job.name)
    store = server.store(root)
    local = paths.results(job.name)
    manifest = store.download_dir(root, local, verify=True)
    console.print(
        f"verified: {len(manifest.files)} files, {manifest.total_bytes} bytes match {root}/manifest.json "
        f"(sha256, downloaded to {local})",
        highlight=False,
    )
    return local


def sample_prompt(job: LoadedJob) -> tuple[str | list[dict[str, str]], str] | None:
    """A prompt of the tiny task (unseen seed) and its expected answer; None for the text template."""
    record = records_for(job, 1, seed=SAMPLE_SEED)[0]
    if "prompt" in record:
        return str(record["prompt"]), str(record["response"])
    if "messages" in record:
        *context, answer = record["messages"]
        return list(context), str(answer["content"])
    return None


def greedy_sample(model_dir: Path, prompt: str | list[dict[str, str]], max_new_tokens: int = 32) -> str:
    """A greedy continuation of ``prompt`` (text, or chat messages) from a saved causal LM (plain transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubepeft_trainer.prompt_bank import greedy

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return greedy(model, tokenizer, prompt, max_new_tokens)


def show_sample(job: LoadedJob, paths: DemoPaths, results: Path, console: Console) -> None:
    merged = results / "merged"
    sample = sample_prompt(job)
    if sample is None or not (merged / "config.json").is_file():
        return
    prompt, expected = sample
    shown = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    console.print(f"greedy sample for {shown!r} (the fine-tuning target: {expected!r}):", highlight=False)
    console.print(f"  base model:   {greedy_sample(paths.model, prompt)!r}", highlight=False)
    console.print(f"  merged model: {greedy_sample(merged, prompt)!r}", highlight=False)


def run(args: argparse.Namespace) -> int:
    workdir = (args.workdir or default_workdir()).absolute()
    with quiet_third_party(workdir):  # in-process model builds and samples: their noise to debug.log
        return _run(args, workdir)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    console = Console(soft_wrap=True)
    example = args.job or default_example()
    try:
        job = load_job_file(example)
    except JobFileError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    if job.spec.dataset is None:
        print(f"{example}: the demo needs a job with a dataset", file=sys.stderr)
        return 1
    paths = DemoPaths(workdir / "demo")
    try:
        model_dir = ensure_model(paths, console)
    except DemoInputError as error:
        print(f"kubepeft demo: {error}", file=sys.stderr)
        return 1
    dataset_file = ensure_dataset(job, paths, args.records)
    uris = [job.spec.model.uri, job.spec.dataset.uri, job.spec.output.uri]
    buckets = sorted({b for uri in uris if (b := bucket_of(uri))})
    try:
        with demo_server(args, workdir, buckets) as server:
            upload_inputs(job, server, model_dir, dataset_file, console)
            if args.prepare_only:
                console.print(f"endpoint: {server.endpoint}", highlight=False)
                console.print(f"credentials dir: {server.credentials_dir}", highlight=False)
                if server.embedded_data_dir is not None:
                    console.print(
                        f"(the embedded server stops now; its data stays in {server.embedded_data_dir})",
                        highlight=False,
                    )
                return 0
            job = replace(job, name=choose_name(job, server))
            outcome = run_loaded_job(
                job,
                workdir=workdir,
                endpoint=server.endpoint,
                credentials_dir=server.credentials_dir,
                console=console,
                command="kubepeft demo" + (f" --workdir {args.workdir}" if args.workdir else ""),
            )
            if outcome.exit_code != 0:
                return outcome.exit_code
            results = verify_artifacts(job, server, paths, console)
    except StorageError as error:
        print(f"storage: {error}", file=sys.stderr)
        return 1 if error.retryable else 3
    except RunBusyError as error:
        print(f"kubepeft demo: {error}", file=sys.stderr)
        return 1
    if not args.no_sample:
        show_sample(job, paths, results, console)
    return 0
