"""`kubepeft run SWEEP.yaml` for real: trials on the tiny model, the report, Ctrl-C and resume."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.api.sweep_models import PeftSweepStatus
from kubepeft.local.sweep_run import SweepStateError, load_state, save_state
from kubepeft.local.sweep_view import comparison_lines, live_row
from kubepeft.storage import open_store
from kubepeft.storage.seaweed import EmbeddedS3
from kubepeft.sweep.state import decide
from kubepeft.tiny_task import task_records
from tests.fixtures.api import REPO_ROOT
from tests.sweep.support import RANK_GROUP, sweep_spec

RANK_EXAMPLE = REPO_ROOT / "examples" / "sweep-lora-rank.yaml"


def short_example(path: Path, target: Path, *, steps: int, values: dict[str, list[Any]] | None = None) -> Path:
    """The example with a few steps only (the slow tier must stay short); same structure otherwise."""
    doc = yaml.safe_load(path.read_text())
    training = doc["spec"]["template"]["training"]
    training.update({"maxSteps": steps, "evalEverySteps": 2, "logEverySteps": 1})
    training.pop("warmupSteps", None)
    doc["spec"]["template"]["checkpointing"] = {"everySteps": 2}
    for parameter in doc["spec"]["parameters"]:
        if values and parameter["path"] in values:
            parameter["values"] = values[parameter["path"]]
    target.write_text(yaml.safe_dump(doc))
    return target


def seeded_workdir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A workdir whose demo model is the session's tiny model (the run uploads it, not rebuilds it)."""
    workdir = tmp_path / "wd"
    shutil.copytree(tiny_model_dir, workdir / "demo" / "model")
    return workdir


def kubepeft(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubepeft", *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def state(workdir: Path, name: str) -> PeftSweepStatus:
    path = workdir / "sweeps" / "default" / name / "status.json"
    return PeftSweepStatus.model_validate(json.loads(path.read_text())["status"])


# --- fast ---------------------------------------------------------------------------------


def test_state_file_round_trip_resets_running_trials_and_refuses_another_spec(tmp_path: Path) -> None:
    spec = sweep_spec(RANK_GROUP, maxParallel=2)
    status = decide("s", spec, PeftSweepStatus()).status
    status = status.model_copy(update={"trials": [status.trials[0].model_copy(update={"phase": "Running"})]})
    path = tmp_path / "status.json"
    save_state(path, spec, status)
    loaded = load_state(path, spec)
    assert [(t.name, t.phase) for t in loaded.trials] == [("s-t0", "Pending")]
    assert load_state(path, sweep_spec(RANK_GROUP, maxParallel=3)).trials == loaded.trials  # --parallel may change
    with pytest.raises(SweepStateError, match="different sweep definition"):
        load_state(path, sweep_spec(RANK_GROUP, maxParallel=2, maxFailedTrials=0))
    assert load_state(tmp_path / "none.json", spec) == PeftSweepStatus()


def test_comparison_lines_and_live_rows() -> None:
    spec = sweep_spec(RANK_GROUP, maxParallel=4)
    status = decide("s", spec, PeftSweepStatus()).status
    trials = [t.model_copy(update={"phase": "Succeeded", "objective": 2.0 - t.index * 0.1}) for t in status.trials]
    status = decide("s", spec, status.model_copy(update={"trials": trials})).status
    lines = comparison_lines(spec, status)
    assert lines[0].split()[:3] == ["trial", "parameters", "phase"]
    assert lines[1].startswith("s-t3 *") and "lora.r=16 lora.alpha=32" in lines[1]
    assert [line.split()[0] for line in lines[1:]] == ["s-t3", "s-t2", "s-t1", "s-t0"]
    assert live_row(trials[0], None)[:3] == ["s-t0", "lora.r=2 lora.alpha=4", "Succeeded"]


def test_task_records_differ_per_task() -> None:
    down, up, skip = (task_records(task, 3) for task in ("down", "up", "skip"))
    assert all(r["prompt"].endswith(" =") for r in down + up + skip)
    first = down[0]["prompt"][0]
    assert down[0]["response"].split()[0] < first and up[0]["response"].split()[0] > up[0]["prompt"][0]
    letters = skip[0]["response"].split()
    assert all(ord(a) - ord(b) == 2 for a, b in itertools.pairwise(letters))


# --- slow ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rank_example_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    example = short_example(RANK_EXAMPLE, tmp_path / "rank.yaml", steps=4)
    workdir = seeded_workdir(tmp_path, tiny_model_dir)
    process = kubepeft("run", str(example), "--workdir", str(workdir), "--parallel", "2", cwd=tmp_path)
    out, _ = process.communicate(timeout=560)
    assert process.returncode == 0, out
    assert "Setting accelerator to CPU" not in out and "FutureWarning" not in out
    table = [line for line in out.splitlines() if line.startswith("lora-rank-t")]
    assert len([line for line in table if "Succeeded" in line and "lora.r=" in line]) >= 4, out
    final = state(workdir, "lora-rank")
    assert final.phase == "Succeeded" and final.trial_count == final.succeeded == 4
    assert final.best_trial is not None and final.report is not None and final.report.manifest
    rows = sorted(final.trials, key=lambda t: t.index)
    counts = [t.trainable_parameters for t in rows]
    assert counts == sorted(counts) and len(set(counts)) == 4  # rank 2 < 4 < 8 < 16
    assert all(t.peak_memory_bytes and t.tokens_per_second and t.eval_loss_after for t in rows)
    with EmbeddedS3(workdir / "s3") as server:
        root = "s3://kubepeft-demo/runs/default/lora-rank"
        store = open_store(root, endpoint=server.endpoint, credentials_dir=server.credentials_dir)
        manifest = store.verify(root)
        assert {e.path for e in manifest.files} == {"results.json", "results.md", "tradeoff.png"}
        results = json.loads(store.get_bytes(f"{root}/results.json"))
        assert len(results["trials"]) == 4 and results["best"]["name"] == results["trials"][0]["name"]
        objectives = [t["objective"] for t in results["trials"]]
        assert objectives == sorted(objectives)
        assert store.get_bytes(f"{root}/tradeoff.png")[:8] == b"\x89PNG\r\n\x1a\n"
        assert store.get_bytes(f"{root}/results.md").decode().count("| lora-rank-t") == 4


def _wait_for(condition: Any, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before the condition held"
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_then_rerun_keeps_finished_trials_and_resumes_the_others(tiny_model_dir: Path, tmp_path: Path) -> None:
    values = {"lora.r": [2, 4], "lora.alpha": [4, 8]}
    example = short_example(RANK_EXAMPLE, tmp_path / "rank.yaml", steps=10, values=values)
    workdir = seeded_workdir(tmp_path, tiny_model_dir)
    args = ("run", str(example), "--workdir", str(workdir))
    first = kubepeft(*args, cwd=tmp_path)
    runs = workdir / "runs" / "default"

    def second_trial_checkpointed() -> bool:
        trials = {t.name: t for t in state(workdir, "lora-rank").trials}
        progress = (runs / "lora-rank-t1" / "progress-node0.jsonl").read_text().splitlines()
        steps = [json.loads(line)["progress"]["step"] for line in progress if line.strip()]
        return trials["lora-rank-t0"].phase == "Succeeded" and max(steps, default=0) >= 6

    _wait_for(second_trial_checkpointed, first, 400)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    assert "Resume with: kubepeft run" in out
    interrupted = {t.name: t.phase for t in state(workdir, "lora-rank").trials}
    assert interrupted == {"lora-rank-t0": "Succeeded", "lora-rank-t1": "Pending"}

    second = kubepeft(*args, cwd=tmp_path)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out
    assert (runs / "lora-rank-t0" / "attempts").read_text().strip() == "1"  # kept, not rerun
    assert (runs / "lora-rank-t1" / "attempts").read_text().strip() == "2"
    reports = [json.loads(line) for line in (runs / "lora-rank-t1" / "progress-node0.jsonl").read_text().splitlines()]
    assert max(r.get("resumed_from_step") or 0 for r in reports) >= 2
    final = state(workdir, "lora-rank")
    assert final.phase == "Succeeded" and final.succeeded == 2 and final.report is not None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prompt_task_example_writes_a_bank_that_switches_like_fresh_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    from kubepeft_trainer.prompt_bank import PromptBank, fetch_bank, fresh_generate

    example = short_example(REPO_ROOT / "examples" / "sweep-prompt-tasks.yaml", tmp_path / "tasks.yaml", steps=4)
    workdir = seeded_workdir(tmp_path, tiny_model_dir)
    process = kubepeft("run", str(example), "--workdir", str(workdir), cwd=tmp_path)
    out, _ = process.communicate(timeout=500)
    assert process.returncode == 0, out
    final = state(workdir, "prompt-tasks")
    assert final.report is not None and final.report.bank == "s3://kubepeft-demo/runs/default/prompt-tasks/bank.json"
    sample = kubepeft("sample", "--bank", final.report.bank, "--prompt", "f =", "--workdir", str(workdir), cwd=tmp_path)
    answers, _ = sample.communicate(timeout=200)
    assert sample.returncode == 0, answers
    assert [line.split("]")[0] for line in answers.splitlines() if line.startswith("[")] == ["[down", "[skip", "[up"]
    with EmbeddedS3(workdir / "s3") as server:
        root = "s3://kubepeft-demo/runs/default/prompt-tasks"
        store = open_store(root, endpoint=server.endpoint, credentials_dir=server.credentials_dir)
        assert "bank.json" in {e.path for e in store.verify(root).files}
        bank = json.loads(store.get_bytes(final.report.bank))
        assert sorted(bank["tasks"]) == ["down", "skip", "up"]
        assert all(len(t["sha256"]) == 64 and t["evalLoss"] is not None for t in bank["tasks"].values())
        local = fetch_bank(store, final.report.bank, tmp_path / "bank")
    switching = PromptBank(local.base_dir, local.adapters)
    for prompt in ("f =", "k ="):
        for task in ("up", "down", "skip", "down"):  # switch back and forth
            expected = fresh_generate(local.base_dir, local.adapters[task], prompt, 12)
            assert switching.generate(task, prompt, 12) == expected, (task, prompt)


def test_live_view_on_a_terminal_and_plain_lines_when_piped() -> None:
    import io

    from rich.console import Console

    from kubepeft.contract import ReportProgress, TrainerReport
    from kubepeft.local.sweep_view import SweepView

    spec = sweep_spec(RANK_GROUP, maxParallel=2)
    status = decide("s", spec, PeftSweepStatus()).status
    report = TrainerReport(state="Training", progress=ReportProgress(step=3, total_steps=9, loss=1.25, eta_seconds=30))
    running = status.model_copy(update={"trials": [t.model_copy(update={"phase": "Running"}) for t in status.trials]})
    tty = io.StringIO()
    with SweepView(Console(file=tty, force_terminal=True, width=160), "s") as view:
        view.report("s-t0", report)
        view.update(running)
    shown = tty.getvalue()
    assert "s-t0" in shown and "3/9" in shown and "1.2500" in shown and "0:30" in shown
    piped = io.StringIO()
    with SweepView(Console(file=piped, force_terminal=False), "s") as view:
        view.report("s-t0", report)
        view.update(running)
        view.update(running)  # unchanged: no new lines
    lines = piped.getvalue().splitlines()
    assert lines == [
        "s-t0 [lora.r=2 lora.alpha=4] [Training] step 3/9 loss 1.2500 tokens/s - eta 0:30",
        "s-t1 [lora.r=4 lora.alpha=8] Running",
    ]
