"""``kubepeft run JOB.yaml``: run a PeftJob on this machine, no cluster needed.

A file holding a PeftSweep runs the whole sweep instead (:mod:`kubepeft.local.sweep_cmd`).

Same spec, same validation, same trainer config (``build_trainer_config``), same ``kubepeft
train`` processes with the same launcher environment as worker pods, same artifacts. Storage
defaults: see :mod:`kubepeft.local.storage_defaults`; per-source credentials and volumes:
:mod:`kubepeft.local.access`. Ctrl-C stops the nodes cleanly; running the
same command again resumes from the latest checkpoint (same name and namespace -> same output
root); while a run of the same job in the same workdir is alive, a second one is refused (exit 1,
retryable: run again once the other has finished). Exit codes: the trainer's 0, 1 (retryable) or 3
(permanent); 2 when the input is refused before anything starts (invalid manifest, unreadable file,
bad flag, a ``--credentials``/``--volume`` folder that does not exist, a claim the job uses without
a ``--volume`` -- as argparse's usage errors); a workdir that cannot be written is a storage error
(classified like every other); 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from kubepeft.api.models import PeftJobSpec
from kubepeft.cli import EXIT_CODES, endpoint_url
from kubepeft.local.access import NO_ACCESS, LocalAccess, access_problems, local_access, name_and_folder
from kubepeft.local.job_file import JobFileError, LoadedJob, load_job_file
from kubepeft.local.run_lock import RunBusyError, run_lock
from kubepeft.local.session import default_workdir, execute, log_excerpt, prepare_run, run_dir_for
from kubepeft.local.storage_defaults import bucket_of, plan_storage, storage_for
from kubepeft.local.summary import RunOutcome, failure_lines, interrupted_lines, summary_lines
from kubepeft.storage.errors import StorageError, classify

EXIT_INVALID = 2
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 3
EXIT_BUSY = 1  # retryable: run again once the other run has finished


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXIT_CODES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("job", metavar="JOB.yaml", help="the PeftJob (or PeftSweep) manifest to run")
    parser.add_argument("--workdir", type=Path, default=None, help="state folder (default: ./.kubepeft)")
    parser.add_argument(
        "--endpoint", type=endpoint_url, default=None, help="S3 endpoint URL (default: the job's, else embedded S3)"
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=None,
        help="folder with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY files for --endpoint or the job's endpoint",
    )
    parser.add_argument(
        "--credentials",
        type=name_and_folder,
        action="append",
        default=None,
        metavar="SOURCE=DIR",
        help="a source's own credentials folder (model, dataset, adapter-<i>, output); repeatable",
    )
    parser.add_argument(
        "--volume",
        type=name_and_folder,
        action="append",
        default=None,
        metavar="CLAIM=DIR",
        help="the local folder standing for a claim of spec.volumes (pvc://CLAIM/...); repeatable",
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
    for flag, pairs in (("--credentials", args.credentials), ("--volume", args.volume)):
        for name, folder in pairs or []:
            words += [flag, f"{name}={folder}"]
    if getattr(args, "parallel", 1) != 1:
        words += ["--parallel", str(args.parallel)]
    return shlex.join(words)


def run_loaded_job(
    job: LoadedJob,
    *,
    workdir: Path,
    endpoint: str | None,
    credentials_dir: Path | None,
    console: Console,
    command: str,
    access: LocalAccess = NO_ACCESS,
) -> RunOutcome:
    """Storage, config, nodes, summary: everything after loading the file (shared with the demo).

    Raises :class:`RunBusyError` while another run of the same job in ``workdir`` (or one of its
    node processes) is alive."""
    plan = plan_storage(job.spec, workdir=workdir, endpoint=endpoint, credentials_dir=credentials_dir)
    output_bucket = bucket_of(job.spec.output.uri)
    with (
        run_lock(run_dir_for(workdir, job.namespace, job.name), f"{job.namespace}/{job.name}") as lock_fd,
        storage_for(plan, create_buckets=(output_bucket,) if output_bucket else ()) as storage,
    ):
        if storage.embedded:
            console.print(f"embedded S3 at {storage.endpoint} (data in {plan.embedded_data_dir})", highlight=False)
        run = prepare_run(job, storage, workdir, access)
        console.print(
            f"running {job.namespace}/{job.name}: {job.spec.resources.nodes} node(s) x "
            f"{job.spec.processes_per_node()} process(es), attempt {run.attempt}, output {run.config.output.root}",
            highlight=False,
        )
        outcome = execute(run, console, inherit_fds=(lock_fd,))
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


def flags_refused(spec: PeftJobSpec, access: LocalAccess, *, embedded: bool) -> bool:
    """Print why ``--credentials``/``--volume`` cannot run this job (or a sweep's template); True
    when they cannot, and nothing may start."""
    problems = access_problems(spec, access, embedded=embedded)
    for problem in problems:
        print(f"kubepeft run: {problem}", file=sys.stderr)
    return bool(problems)


def check_workdir(workdir: Path) -> None:
    """Create the workdir and write a probe file in it, before any server or node starts.

    A read-only or foreign folder is then one clear, classified storage error
    (:func:`kubepeft.storage.errors.classify`) instead of a traceback halfway through the run.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as error:
        raise classify(error, action="write to the workdir", uri=str(workdir)) from None


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
    workdir = (args.workdir or default_workdir()).absolute()
    access = local_access(args)
    embedded = plan_storage(job.spec, workdir=workdir, endpoint=args.endpoint, credentials_dir=None).embedded
    if flags_refused(job.spec, access, embedded=embedded):
        return EXIT_INVALID
    try:
        check_workdir(workdir)
        outcome = run_loaded_job(
            job,
            workdir=workdir,
            endpoint=args.endpoint,
            credentials_dir=args.credentials_dir.absolute() if args.credentials_dir else None,
            console=console,
            command=resume_command(args),
            access=access,
        )
    except (StorageError, OSError) as error:
        # Local file errors (workdir, logs, config) go through the same classifier as storage's.
        classified = classify(error, action="local run", uri=str(workdir))
        print(f"storage: {classified}", file=sys.stderr)
        return EXIT_RETRYABLE if classified.retryable else EXIT_PERMANENT
    except RunBusyError as error:
        print(f"kubepeft run: {error}", file=sys.stderr)
        return EXIT_BUSY
    return outcome.exit_code
