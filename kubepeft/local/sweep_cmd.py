"""``kubepeft run SWEEP.yaml`` (dispatched from :mod:`kubepeft.local.run_cmd` by kind).

Loads and validates the sweep with the CRD's rules (as ``kubepeft validate``), picks the storage
the template's job would use (the embedded S3 server when nothing else is named), builds the
example inputs on first use, runs the trials, and prints the comparison table and the report URIs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from kubepeft.api.sweep_models import PeftSweep, PeftSweepStatus
from kubepeft.api.sweep_validate import validate_sweep_object
from kubepeft.api.yaml_input import ManifestInputError, load_documents, read_manifest
from kubepeft.local.access import local_access
from kubepeft.local.demo_inputs import DemoInputError
from kubepeft.local.job_file import DEFAULT_NAMESPACE, JobFileError
from kubepeft.local.quiet import quiet_third_party
from kubepeft.local.run_cmd import EXIT_INVALID, flags_refused, resume_command
from kubepeft.local.session import default_workdir
from kubepeft.local.storage_defaults import bucket_of, plan_storage, storage_for
from kubepeft.local.sweep_inputs import ensure_demo_inputs
from kubepeft.local.sweep_run import LoadedSweep, SweepRun, SweepStateError, drive, load_state, open_sweep_store
from kubepeft.local.sweep_view import SweepView, comparison_lines, comparison_table
from kubepeft.storage.errors import StorageError


def _documents(path: str | Path) -> list[Any]:
    """The file's documents, read under the same input limits as every manifest."""
    return load_documents(read_manifest(str(path)), str(path))


def is_sweep_file(path: str | Path) -> bool:
    """Whether the file holds a PeftSweep (anything unreadable is left to the PeftJob path's errors)."""
    try:
        docs = _documents(path)
    except ManifestInputError:
        return False
    return any(isinstance(d, dict) and d.get("kind") == "PeftSweep" for d in docs)


def load_sweep_file(path: str | Path, *, name: str | None, namespace: str | None) -> LoadedSweep:
    source = str(path)
    try:
        docs = _documents(path)
    except ManifestInputError as error:
        raise JobFileError([str(error)]) from None
    sweeps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "PeftSweep"]
    if len(sweeps) != 1:
        raise JobFileError([f"{source}: kubepeft run takes exactly one PeftSweep, found {len(sweeps)}"])
    document = sweeps[0]
    metadata = document.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata.update({k: v for k, v in (("name", name), ("namespace", namespace)) if v})
    errors = validate_sweep_object(document)
    if errors:
        raise JobFileError([f"{source}: {error}" for error in errors])
    sweep = PeftSweep.model_validate(document)
    return LoadedSweep(source, str(sweep.metadata.name), sweep.metadata.namespace or DEFAULT_NAMESPACE, sweep.spec)


def _finish(run: SweepRun, code: int, console: Console, command: str) -> None:
    if code == 130:
        console.print(f"Interrupted: running trials stopped, checkpoints kept. Resume with: {command}", highlight=False)
        return
    status = run.status
    if console.is_terminal:
        console.print(comparison_table(run.sweep.name, run.spec, status))
    else:
        for line in comparison_lines(run.spec, status):
            console.print(line, markup=False, highlight=False)
    best = status.best_trial
    console.print(f"{status.phase}: {status.message or ''}".rstrip(), highlight=False)
    if best is not None:
        console.print(f"  best trial   {best.name} ({run.spec.objective.metric} {best.objective:.4f})", highlight=False)
    if status.report is not None:
        for label, uri in status.report.to_wire().items():
            console.print(f"  {label:<12} {uri}", highlight=False)


def run_sweep(args: argparse.Namespace) -> int:
    console = Console(soft_wrap=True)
    try:
        sweep = load_sweep_file(args.job, name=args.name, namespace=args.namespace)
    except JobFileError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return 1
    spec = sweep.spec.model_copy(update={"max_parallel": max(1, args.parallel)})
    workdir = (args.workdir or default_workdir()).absolute()
    template = spec.template
    credentials = args.credentials_dir.absolute() if args.credentials_dir else None
    plan = plan_storage(template, workdir=workdir, endpoint=args.endpoint, credentials_dir=credentials)
    access = local_access(args)
    # Every trial is the template's job with other values: the flags are checked once, against it.
    if flags_refused(template, access, embedded=plan.embedded):
        return EXIT_INVALID
    bucket = bucket_of(template.output.uri)
    try:
        with storage_for(plan, create_buckets=(bucket,) if bucket else ()) as storage:
            with quiet_third_party(workdir):
                ensure_demo_inputs(spec, storage, workdir, console)
            with SweepView(console, sweep.name) as view:
                store = open_sweep_store(spec, storage, access)
                run = SweepRun(sweep, spec, storage, workdir, view, store, PeftSweepStatus(), access)
                run.status = load_state(run.state_path, spec)
                console.print(f"sweep {sweep.namespace}/{sweep.name}: report under {run.root}", highlight=False)
                code = drive(run)
            _finish(run, code, console, resume_command(args))
            return code
    except (SweepStateError, DemoInputError) as error:
        print(error, file=sys.stderr)
        return 1
    except StorageError as error:
        print(f"storage: {error}", file=sys.stderr)
        return 1 if error.retryable else 3


__all__ = ["is_sweep_file", "load_sweep_file", "run_sweep"]
