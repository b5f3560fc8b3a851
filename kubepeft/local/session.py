"""One local run of a PeftJob: render the trainer config, start the nodes, follow them, conclude.

This is the body shared by ``kubepeft run`` and ``kubepeft demo``. It renders the config with the
operator's own :func:`~kubepeft.contract.build_trainer_config`, starts one ``kubepeft train``
process per node (:mod:`kubepeft.local.runner`), shows the progress file
(:mod:`kubepeft.local.progress_view`) and turns the nodes' exit codes into the run's: 0, the
trainer's 3 (permanent) or 1 (retryable), or 130 after Ctrl-C. Everything the run keeps lives in
``<workdir>/runs/<namespace>/<name>/``: ``config.json``, ``node<N>.log``, ``progress-node<N>.jsonl``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console

from kubepeft.contract import EXIT_RETRYABLE, TrainerConfig, TrainerReport, build_trainer_config
from kubepeft.local.access import NO_ACCESS, LocalAccess
from kubepeft.local.job_file import LoadedJob, path_under
from kubepeft.local.progress_view import ProgressView, ReportTail
from kubepeft.local.runner import DEFAULT_GRACE_SECONDS, NodeGroup, plan_nodes, tail_text, trainer_command
from kubepeft.local.storage_defaults import ResolvedStorage, credentials_dirs
from kubepeft.local.summary import RunOutcome
from kubepeft.net import free_port

EXIT_INTERRUPTED = 130
LOCAL_UID = "local"
POLL_SECONDS = 0.5


def default_workdir() -> Path:
    return Path.cwd() / ".kubepeft"


def run_dir_for(workdir: Path, namespace: str, name: str) -> Path:
    return path_under(workdir / "runs", namespace, name)


@dataclass(frozen=True)
class LocalRun:
    job: LoadedJob
    config: TrainerConfig
    run_dir: Path
    config_path: Path
    attempt: int


def render_config(job: LoadedJob, storage: ResolvedStorage, access: LocalAccess = NO_ACCESS) -> TrainerConfig:
    """Pure: the trainer config of a local run -- the operator's function, the local endpoint, the
    local credentials folders and the folders standing for the job's volumes."""
    return build_trainer_config(
        job.spec,
        job.namespace,
        job.name,
        uid=LOCAL_UID,
        credentials_dirs=credentials_dirs(job.spec, storage.credentials_dir, access.credentials),
        endpoint_override=storage.endpoint,
        volume_dirs=access.volume_dirs(),
    )


def prepare_run(job: LoadedJob, storage: ResolvedStorage, workdir: Path, access: LocalAccess = NO_ACCESS) -> LocalRun:
    """Write the config and count the attempt (each invocation for the same job is one attempt)."""
    config = render_config(job, storage, access)
    run_dir = run_dir_for(workdir, job.namespace, job.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    config_path.write_text(config.to_json() + "\n", encoding="utf-8")
    attempts_file = run_dir / "attempts"
    try:
        attempt = int(attempts_file.read_text().strip() or 0)
    except (OSError, ValueError):
        attempt = 0
    attempts_file.write_text(f"{attempt + 1}\n")
    return LocalRun(job, config, run_dir, config_path, attempt)


def node_base_env(run: LocalRun) -> dict[str, str]:
    """The environment every node inherits: ours, plus what a pod spec would set."""
    env = dict(os.environ)
    nodes = run.config.spec.resources.nodes
    procs = run.config.spec.processes_per_node()
    # As torchrun does: without an explicit setting, share the cores between the ranks.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (nodes * procs))))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


class Interrupt:
    """Turns SIGINT/SIGTERM into a flag the follow loop checks (main thread only)."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


@contextmanager
def catch_interrupts(flag: Interrupt) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, flag.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(
    run: LocalRun,
    console: Console,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    stop_event: threading.Event | None = None,
    inherit_fds: tuple[int, ...] = (),
) -> RunOutcome:
    """Start the nodes, show progress until they finish (or an interrupt), return the outcome.

    ``inherit_fds`` stay open in every node for its whole life (the run lock)."""
    spec = run.config.spec
    plans = plan_nodes(
        num_nodes=spec.resources.nodes,
        procs_per_node=spec.processes_per_node(),
        master_port=free_port(),
        config_path=run.config_path,
        run_dir=run.run_dir,
        namespace=run.job.namespace,
        attempt=run.attempt,
    )
    group = NodeGroup(
        plans=plans, base_env=node_base_env(run), command=trainer_command(run.config_path), inherit_fds=inherit_fds
    )
    tails = [ReportTail(plan.progress_file) for plan in plans]
    interrupt = Interrupt()
    failure_reports: list[TrainerReport] = []
    with catch_interrupts(interrupt), ProgressView(console) as view:
        group.start()
        try:
            while True:
                view.update(tails[0].read_new())
                for tail in tails[1:]:
                    failure_reports += [r for r in tail.read_new() if r.state == "Failed"]
                if interrupt.requested or (stop_event is not None and stop_event.is_set()):
                    break
                if group.finished():
                    break
                time.sleep(POLL_SECONDS)
        finally:
            group.stop(grace_seconds)
        view.update(tails[0].read_new())
        for tail in tails[1:]:
            failure_reports += [r for r in tail.read_new() if r.state == "Failed"]
    if interrupt.requested or (stop_event is not None and stop_event.is_set()):
        return RunOutcome(EXIT_INTERRUPTED, view.latest, interrupted=True, final_loss=view.last_loss)
    code = group.exit_code()
    report = view.latest
    if code != 0 and (report is None or report.state != "Failed") and failure_reports:
        report = failure_reports[0]
    if code == 0 and (report is None or report.state != "Succeeded"):
        # Exit 0 without a final report breaks the contract: never call such a run a success.
        code = EXIT_RETRYABLE
    failed_logs = [plan.log_file for plan, c in zip(plans, group.poll(), strict=True) if c not in (0, None)]
    log_files = failed_logs or [plan.log_file for plan in plans]
    hint = ", ".join(str(p) for p in log_files) if code else None
    return RunOutcome(code, report, log_hint=hint, final_loss=view.last_loss)


def log_excerpt(outcome: RunOutcome, max_lines: int = 25) -> str:
    """The tail of the first failed node's log (for a failure without a trainer message)."""
    if not outcome.log_hint:
        return ""
    return tail_text(Path(outcome.log_hint.split(", ")[0]), max_lines)
