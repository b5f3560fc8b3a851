"""``kubepeft run JOB.yaml``: run a PeftJob on this machine, no cluster needed.

A file holding a PeftSweep runs the whole sweep instead (:mod:`kubepeft.local.sweep_cmd`).

Same spec, same validation, same trainer config (``build_trainer_config``), same ``kubepeft
train`` processes with the same launcher environment as worker pods, same artifacts. Storage
defaults: see :mod:`kubepeft.local.storage_defaults`. Ctrl-C stops the nodes cleanly; running the
same command again resumes from the latest checkpoint (same name and namespace -> same output
root). The exit code is the trainer's: 0, 1 (retryable), 3 (permanent); 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rich.console import Console

from kubepeft.local.job_file import JobFileError, LoadedJob, load_job_file
from kubepeft.local.session import default_workdir, execute, log_excerpt, prepare_run
from kubepeft.local.storage_defaults import bucket_of, plan_storage, storage_for
from kubepeft.local.summary import RunOutcome, failure_lines, interrupted_lines, summary_lines
from kubepeft.storage.errors import StorageError

EXIT_INVALID = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB.yaml", help="the PeftJob (or PeftSweep) manifest to run")
    parser.add_argument("--workdir", type=Path, default=None, help="state folder (default: ./.kubepeft)")
    parser.add_argument("--endpoint", default=None, help="S3 endpoint URL (default: the job's, else embedded S3)")
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=None,
        help="folder with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY files for --endpoint or the job's endpoint",
    )
    parser.add_argument("--name", default=None, help="job name (default: metadata.name)")
    parser.add_argument("--namespace", default=None, help="namespace (default: metadata.namespace, else 'default')")
    parser.add_argument(
        "--parallel", type=int, default=1, metavar="N", help="PeftSweep: trials to run at the same time (default 1)"
    )


def resume_command(args: argparse.Namespace) -> str:
    """The command line that resumes this run (the same one)."""
    words = ["kubepeft", "run", str(args.job)]
    for flag, value in (
        ("--workdir", args.workdir),
        ("--endpoint", args.endpoint),
        ("--credentials-dir", args.credentials_dir),
        ("--name", args.name),
        ("--namespace", args.namespace),
    ):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def run_loaded_job(
    job: LoadedJob,
    *,
    workdir: Path,
    endpoint: str | None,
    credentials_dir: Path | None,
    console: Console,
    command: str,
) -> RunOutcome:
    """Storage, config, nodes, summary: everything after loading the file (shared with the demo)."""
    plan = plan_storage(job.spec, workdir=workdir, endpoint=endpoint, credentials_dir=credentials_dir)
    output_bucket = bucket_of(job.spec.output.uri)
    with storage_for(plan, create_buckets=(output_bucket,) if output_bucket else ()) as storage:
        if storage.embedded:
            console.print(f"embedded S3 at {storage.endpoint} (data in {plan.embedded_data_dir})", highlight=False)
        run = prepare_run(job, storage, workdir)
        console.print(
            f"running {job.namespace}/{job.name}: {job.spec.resources.nodes} node(s) x "
            f"{job.spec.processes_per_node()} process(es), attempt {run.attempt}, output {run.config.output.root}",
            highlight=False,
        )
        outcome = execute(run, console)
    if outcome.interrupted:
        lines = interrupted_lines(run.config, command)
    elif outcome.exit_code == 0 and outcome.report is not None:
        lines = summary_lines(run.config, outcome.report, outcome.final_loss)
    else:
        lines = failure_lines(run.config, outcome)
        if outcome.report is None or not outcome.report.message:
            lines.append(log_excerpt(outcome))
    if storage.embedded:
        lines.append(f"(the embedded S3 server has stopped; its data stays in {plan.embedded_data_dir})")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    return outcome


def run(args: argparse.Namespace) -> int:
    from kubepeft.local.sweep_cmd import is_sweep_file, run_sweep

    if is_sweep_file(args.job):
        return run_sweep(args)
    console = Console(soft_wrap=True)
    try:
        job = load_job_file(args.job, name=args.name, namespace=args.namespace)
    except JobFileError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    try:
        outcome = run_loaded_job(
            job,
            workdir=(args.workdir or default_workdir()).absolute(),
            endpoint=args.endpoint,
            credentials_dir=args.credentials_dir.absolute() if args.credentials_dir else None,
            console=console,
            command=resume_command(args),
        )
    except StorageError as error:
        print(f"storage: {error}", file=sys.stderr)
        return 3 if not error.retryable else 1
    return outcome.exit_code
