"""``kubepeft run SWEEP.yaml``: a PeftSweep on this machine, up to ``--parallel`` trials at once.

The decisions are the operator's (:func:`kubepeft.sweep.state.decide`: which trial next, pruning,
maxFailedTrials); each trial is a PeftJob run exactly like ``kubepeft run JOB.yaml`` runs one
(:mod:`kubepeft.local.session`: same config, same ``kubepeft train`` nodes, same artifacts). The
sweep's status lives in ``<workdir>/sweeps/<namespace>/<name>/status.json``, written after every
change: Ctrl-C stops the running trials (their checkpoints stay) and running the same command
again keeps the finished trials and resumes the others from their latest checkpoints. The report
is refreshed as trials finish and written complete at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus, SweepTrial
from kubepeft.contract import output_root
from kubepeft.local.access import NO_ACCESS, LocalAccess
from kubepeft.local.job_file import LoadedJob
from kubepeft.local.progress_view import ReportTail
from kubepeft.local.runner import NodeGroup, plan_nodes, trainer_command
from kubepeft.local.session import EXIT_INTERRUPTED, Interrupt, catch_interrupts, node_base_env, prepare_run
from kubepeft.local.storage_defaults import ResolvedStorage
from kubepeft.local.sweep_view import SweepView
from kubepeft.net import free_port
from kubepeft.sources import local_path
from kubepeft.storage import Store, open_store_for
from kubepeft.sweep.expand import trial_spec
from kubepeft.sweep.paths import value_from_text
from kubepeft.sweep.report import write_report
from kubepeft.sweep.state import apply_report, decide, summarize

POLL_SECONDS = 0.5
STATE_FILE = "status.json"


@dataclass(frozen=True)
class LoadedSweep:
    source: str
    name: str
    namespace: str
    spec: PeftSweepSpec


class SweepStateError(Exception):
    """The saved state belongs to a different sweep definition."""


def spec_digest(spec: PeftSweepSpec) -> str:
    """What the saved trials depend on: everything but maxParallel (``--parallel`` may change)."""
    wire = spec.to_wire()
    wire.pop("maxParallel", None)
    return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()


def load_state(path: Path, spec: PeftSweepSpec) -> PeftSweepStatus:
    """The saved status (trials that were running go back to Pending: they resume); a new one if none."""
    if not path.is_file():
        return PeftSweepStatus()
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("specDigest") != spec_digest(spec):
        raise SweepStateError(
            f"{path}: saved state is for a different sweep definition; change metadata.name (or --name) "
            "to start a new sweep, or delete that file to start over"
        )
    status = PeftSweepStatus.model_validate(saved["status"])
    trials = [
        t.model_copy(update={"phase": "Pending", "message": "resumes from its latest checkpoint"})
        if t.phase in ("Running", "Suspended")
        else t
        for t in status.trials
    ]
    return status.model_copy(update={"trials": trials, "phase": "Running" if trials else None})


def save_state(path: Path, spec: PeftSweepSpec, status: PeftSweepStatus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"specDigest": spec_digest(spec), "status": status.to_wire()}, indent=1))
    tmp.replace(path)


@dataclass
class TrialProcess:
    """One running trial: its node processes and the progress file of node 0."""

    group: NodeGroup
    tail: ReportTail


@dataclass
class SweepRun:
    sweep: LoadedSweep
    spec: PeftSweepSpec
    """The sweep's spec with maxParallel set to ``--parallel``."""
    storage: ResolvedStorage
    workdir: Path
    view: SweepView
    store: Store
    status: PeftSweepStatus
    access: LocalAccess = NO_ACCESS
    """``--credentials``/``--volume``: every trial gets them, as a job would."""
    processes: dict[str, TrialProcess] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.workdir / "sweeps" / self.sweep.namespace / self.sweep.name / STATE_FILE

    @property
    def root(self) -> str:
        return output_root(self.spec.template, self.sweep.namespace, self.sweep.name)

    def start(self, trial: SweepTrial) -> None:
        values = {path: value_from_text(text) for path, text in trial.parameters.items()}
        job = LoadedJob(self.sweep.source, trial.name, self.sweep.namespace, trial_spec(self.spec, values), {})
        run = prepare_run(job, self.storage, self.workdir, self.access)
        spec = run.config.spec
        plans = plan_nodes(
            num_nodes=spec.resources.nodes,
            procs_per_node=spec.processes_per_node(),
            master_port=free_port(),
            config_path=run.config_path,
            run_dir=run.run_dir,
            namespace=job.namespace,
            attempt=run.attempt,
        )
        group = NodeGroup(plans=plans, base_env=node_base_env(run), command=trainer_command(run.config_path))
        group.start()
        self.processes[trial.name] = TrialProcess(group, ReportTail(plans[0].progress_file))

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.group.stop()

    def set_trial(self, name: str, **update: object) -> None:
        trials = [t.model_copy(update=update) if t.name == name else t for t in self.status.trials]
        self.status = self.status.model_copy(update={"trials": trials})

    def follow(self) -> bool:
        """Apply new reports; conclude trials whose processes exited. True when a trial finished."""
        finished = False
        rows = {t.name: t for t in self.status.trials}
        for name, process in list(self.processes.items()):
            for report in process.tail.read_new():
                self.view.report(name, report)
                rows[name] = apply_report(self.spec, rows[name], report)
            if process.group.finished():
                code = process.group.exit_code()
                process.group.close()
                del self.processes[name]
                finished = True
                if code != 0 or rows[name].phase != "Succeeded":
                    message = rows[name].message or f"trainer exited with code {code}"
                    rows[name] = rows[name].model_copy(update={"phase": "Failed", "message": message})
        self.status = self.status.model_copy(update={"trials": [rows[t.name] for t in self.status.trials]})
        return finished

    def step(self) -> bool:
        """One round: follow, decide, stop/prune/start, save. True when the report should be refreshed."""
        finished = self.follow()
        decision = decide(self.sweep.name, self.spec, self.status)
        self.status = decision.status
        for name in decision.prune:
            self.stop(name)
        for name in decision.stop:  # the sweep failed or is suspended
            self.stop(name)
            phase = "Suspended" if self.status.phase == "Suspended" else "Failed"
            self.set_trial(name, phase=phase, message=f"stopped: the sweep is {self.status.phase}")
        for trial in self.status.trials:
            if trial.phase == "Pending" and trial.name not in self.processes and self.status.phase == "Running":
                self.start(trial)
                self.set_trial(trial.name, phase="Running", message=None)
        self.status = summarize(self.spec, self.status, phase=self.status.phase, message=self.status.message)
        save_state(self.state_path, self.spec, self.status)
        self.view.update(self.status)
        return finished or bool(decision.prune)

    def write_report(self) -> None:
        local = self.state_path.parent / "report"
        report = write_report(
            self.store, self.root, local, self.sweep.name, self.spec, self.status, volume_dirs=self.access.volume_dirs()
        )
        self.status = self.status.model_copy(update={"report": report})
        save_state(self.state_path, self.spec, self.status)

    def interrupt(self) -> None:
        for name in list(self.processes):
            self.stop(name)
            self.set_trial(name, phase="Pending", message="interrupted; resumes from its latest checkpoint")
        save_state(self.state_path, self.spec, self.status)


def drive(run: SweepRun) -> int:
    """Run the loop until the sweep ends (0 Succeeded, 1 Failed) or an interrupt (130)."""
    interrupted = Interrupt()
    with catch_interrupts(interrupted):
        while True:
            if run.step():
                run.write_report()
            if interrupted.requested:
                run.interrupt()
                return EXIT_INTERRUPTED
            if run.status.phase in ("Succeeded", "Failed") and not run.processes:
                break
            time.sleep(POLL_SECONDS)
    run.write_report()
    return 0 if run.status.phase == "Succeeded" else 1


def open_sweep_store(spec: PeftSweepSpec, storage: ResolvedStorage, access: LocalAccess = NO_ACCESS) -> Store:
    """The store of the sweep's report: the template's output, an output on a claim at its folder."""
    output = spec.template.output
    root = local_path(spec.template, output.uri, access.volume_dirs())
    return open_store_for(root, output, endpoint=storage.endpoint, credentials_dir=storage.credentials_dir)
