"""The comparison report of a sweep: results.json, results.md, tradeoff.png, bank.json, manifest last.

The documents are pure functions of the sweep's spec and status; :func:`write_report` renders
them into a local folder and uploads it with :meth:`kubepeft.storage.Store.upload_dir`, which
writes ``manifest.json`` (sha256 of every file) last: the report counts only once that exists.
Rewritten as trials finish; the last write, when the sweep ends, is the complete one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus, SweepReport, SweepTrial
from kubepeft.sources import local_path
from kubepeft.storage import Store
from kubepeft.storage.uri import join
from kubepeft.sweep.objective import ranked
from kubepeft.sweep.paths import value_from_text

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
TRADEOFF_PNG = "tradeoff.png"
BANK_JSON = "bank.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "kubepeft.dev/sweep-results/v1"
BANK_FORMAT = "kubepeft.dev/prompt-bank/v1"


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def trial_row(trial: SweepTrial) -> dict[str, Any]:
    """One trial as a results.json row."""
    return {
        "name": trial.name,
        "index": trial.index,
        "parameters": {path: value_from_text(text) for path, text in trial.parameters.items()},
        "phase": trial.phase,
        "objective": trial.objective,
        "evalLossBefore": trial.eval_loss_before,
        "evalLossAfter": trial.eval_loss_after,
        "trainLoss": trial.train_loss,
        "trainableParameters": trial.trainable_parameters,
        "tokensPerSecond": trial.tokens_per_second,
        "peakMemoryBytes": trial.peak_memory_bytes,
        "adapter": trial.adapter,
        "message": trial.message,
    }


def results_document(name: str, spec: PeftSweepSpec, status: PeftSweepStatus) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "sweep": name,
        "objective": spec.objective.to_wire(),
        "strategy": spec.strategy.to_wire(),
        "phase": status.phase,
        "best": status.best_trial.to_wire() if status.best_trial else None,
        "trials": [trial_row(t) for t in ranked(spec.objective, status.trials)],
    }


TABLE_HEADER = ["trial", "parameters", "phase", "objective", "eval before", "eval after", "trainable", "tok/s", "MiB"]


def table_rows(spec: PeftSweepSpec, status: PeftSweepStatus) -> list[list[str]]:
    """The comparison table, best first (also what the terminal prints)."""
    best = status.best_trial.name if status.best_trial else None
    rows = []
    for t in ranked(spec.objective, status.trials):
        params = " ".join(f"{path}={text}" for path, text in t.parameters.items())
        rows.append(
            [
                t.name + (" *" if t.name == best else ""),
                params,
                t.phase,
                _number(t.objective),
                _number(t.eval_loss_before),
                _number(t.eval_loss_after),
                _count(t.trainable_parameters),
                "-" if t.tokens_per_second is None else f"{t.tokens_per_second:,.0f}",
                _mib(t.peak_memory_bytes),
            ]
        )
    return rows


def results_markdown(name: str, spec: PeftSweepSpec, status: PeftSweepStatus) -> str:
    metric, direction = spec.objective.metric, spec.objective.direction
    lines = [
        f"# Sweep {name}",
        "",
        f"Objective: {direction} {metric}. Trials sorted best first; `*` marks the best. MiB: peak memory of rank 0.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "---|" * len(TABLE_HEADER),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(spec, status)]
    return "\n".join(lines) + "\n"


def plot_tradeoff(path: Path, spec: PeftSweepSpec, status: PeftSweepStatus) -> Path:
    """Objective against trainable parameters, one point per finished trial, the best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (t.name, float(t.trainable_parameters), float(t.objective))
        for t in status.trials
        if t.objective is not None and t.trainable_parameters
    ]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, x, y in points:
        ax.scatter([x], [y], color="tab:blue")
        ax.annotate(name, (x, y), fontsize=7)
    best = status.best_trial
    for name, x, y in points:
        if best is not None and name == best.name:
            ax.scatter([x], [y], marker="*", s=250, color="tab:red", label=f"best: {name}")
            ax.legend(loc="best", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(f"{spec.objective.metric} ({spec.objective.direction})")
    ax.set_title("objective vs. trainable parameters")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def bank_task_path(spec: PeftSweepSpec) -> str | None:
    """A prompt bank needs method promptTuning and exactly one varied path: the dataset."""
    paths = [p.path for p in spec.parameters]
    if spec.template.method == "promptTuning" and paths == ["dataset.uri"]:
        return "dataset.uri"
    return None


def task_name(dataset_uri: str) -> str:
    """``s3://b/tasks/reverse.jsonl`` -> ``reverse``."""
    leaf = dataset_uri.rstrip("/").rsplit("/", 1)[-1]
    return leaf.split(".", 1)[0] or leaf


def bank_document(spec: PeftSweepSpec, status: PeftSweepStatus, adapter_sha256: dict[str, str]) -> dict[str, Any]:
    """task -> adapter URI + sha256 of its weights + eval loss, for the succeeded trials."""
    tasks: dict[str, Any] = {}
    for t in sorted(status.trials, key=lambda t: t.index):
        if t.phase != "Succeeded" or t.adapter is None or t.name not in adapter_sha256:
            continue
        uri = value_from_text(t.parameters["dataset.uri"])
        tasks[task_name(uri)] = {
            "adapter": t.adapter,
            "sha256": adapter_sha256[t.name],
            "evalLoss": t.eval_loss_after,
            "dataset": uri,
            "trial": t.name,
        }
    return {"format": BANK_FORMAT, "baseModel": spec.template.model.uri, "method": "promptTuning", "tasks": tasks}


def adapter_digests(
    store: Store, spec: PeftSweepSpec, status: PeftSweepStatus, volume_dirs: dict[str, str] | None = None
) -> dict[str, str]:
    """sha256 of each succeeded trial's adapter weights, from the adapter's own manifest."""
    out: dict[str, str] = {}
    for t in status.trials:
        if t.phase != "Succeeded" or t.adapter is None:
            continue
        manifest = store.read_manifest(local_path(spec.template, t.adapter, volume_dirs))
        entry = manifest.entry(ADAPTER_WEIGHTS) if manifest else None
        if entry is not None:
            out[t.name] = entry.sha256
    return out


def render_report(
    local: Path,
    name: str,
    spec: PeftSweepSpec,
    status: PeftSweepStatus,
    store: Store,
    volume_dirs: dict[str, str] | None = None,
) -> list[str]:
    """Write the report files into ``local``; returns their names."""
    local.mkdir(parents=True, exist_ok=True)
    (local / RESULTS_JSON).write_text(json.dumps(results_document(name, spec, status), indent=2) + "\n")
    (local / RESULTS_MD).write_text(results_markdown(name, spec, status))
    plot_tradeoff(local / TRADEOFF_PNG, spec, status)
    names = [RESULTS_JSON, RESULTS_MD, TRADEOFF_PNG]
    if bank_task_path(spec):
        bank = bank_document(spec, status, adapter_digests(store, spec, status, volume_dirs))
        (local / BANK_JSON).write_text(json.dumps(bank, indent=2) + "\n")
        names.append(BANK_JSON)
    return names


def write_report(
    store: Store,
    root: str,
    local: Path,
    name: str,
    spec: PeftSweepSpec,
    status: PeftSweepStatus,
    *,
    volume_dirs: dict[str, str] | None = None,
) -> SweepReport:
    """Render and upload the report under ``root`` (the sweep's own name for it, ``pvc://`` for an
    output on a claim, found where the claim is: its mount path or its folder in ``volume_dirs``);
    the manifest is written last. The URIs returned are the sweep's own names."""
    names = render_report(local, name, spec, status, store, volume_dirs)
    where = local_path(spec.template, root, volume_dirs)
    store.upload_dir(local, where, metadata={"kind": "sweep-report", "sweep": name, "phase": status.phase})
    uris = {n: join(root, n) for n in names}
    return SweepReport(
        results=uris[RESULTS_JSON],
        table=uris[RESULTS_MD],
        tradeoff=uris[TRADEOFF_PNG],
        bank=uris.get(BANK_JSON),
        manifest=join(root, "manifest.json"),
    )
