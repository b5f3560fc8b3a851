"""The comparison report: documents, table order, PNG, bank.json, manifest written last (local store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubepeft.api.sweep_models import PeftSweepStatus, SweepTrial
from kubepeft.storage import open_store
from kubepeft.sweep.paths import value_text
from kubepeft.sweep.report import bank_document, bank_task_path, results_markdown, task_name, write_report
from kubepeft.sweep.state import summarize
from tests.sweep.support import RANK_GROUP, TEMPLATE, sweep_spec


def finished_status() -> PeftSweepStatus:
    spec = sweep_spec(RANK_GROUP)
    rows = []
    for index, (r, loss) in enumerate([(2, 2.1), (4, 1.8), (8, 1.4), (16, None)]):
        rows.append(
            SweepTrial(
                name=f"s-t{index}",
                index=index,
                parameters={"lora.r": value_text(r), "lora.alpha": value_text(2 * r)},
                phase="Succeeded" if loss is not None else "Failed",
                objective=loss,
                eval_loss_after=loss,
                eval_loss_before=2.4,
                trainable_parameters=896 * r,
                tokens_per_second=1000.0,
                peak_memory_bytes=512 * 2**20,
                message=None if loss is not None else "out of memory",
            )
        )
    return summarize(spec, PeftSweepStatus(trials=rows))


def test_report_files_sorted_best_first_and_manifest_last(tmp_path: Path) -> None:
    spec, status = sweep_spec(RANK_GROUP), finished_status()
    root = str(tmp_path / "out" / "default" / "s")
    store = open_store(str(tmp_path / "out"))
    report = write_report(store, root, tmp_path / "local", "s", spec, status)
    manifest = store.verify(root)  # every file present with its sha256
    assert {e.path for e in manifest.files} == {"results.json", "results.md", "tradeoff.png"}
    assert report.manifest == f"{root}/manifest.json" and report.bank is None
    results = json.loads(Path(root, "results.json").read_text())
    assert [t["name"] for t in results["trials"]] == ["s-t2", "s-t1", "s-t0", "s-t3"]
    assert results["best"]["name"] == "s-t2" and results["trials"][0]["parameters"] == {"lora.r": 8, "lora.alpha": 16}
    assert Path(root, "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = results_markdown("s", spec, status).splitlines()
    rows = [line for line in table if line.startswith("| s-t")]
    assert rows[0].startswith("| s-t2 * | lora.r=8 lora.alpha=16 | Succeeded | 1.4000 |")
    assert rows[-1].startswith("| s-t3 | lora.r=16 lora.alpha=32 | Failed | - |")


def test_bank_sweeps_and_bank_document() -> None:
    uris = ["s3://b/tasks/down.jsonl", "s3://b/tasks/up.jsonl"]
    template = {**TEMPLATE, "method": "promptTuning"}
    from kubepeft.api.sweep_models import PeftSweepSpec

    spec = PeftSweepSpec.model_validate({"template": template, "parameters": [{"path": "dataset.uri", "values": uris}]})
    assert bank_task_path(spec) == "dataset.uri" and bank_task_path(sweep_spec(RANK_GROUP)) is None
    assert task_name("s3://b/tasks/down.jsonl") == "down"
    rows = [
        SweepTrial(
            name=f"p-t{i}",
            index=i,
            parameters={"dataset.uri": value_text(uri)},
            phase="Succeeded",
            eval_loss_after=0.5 + i,
            adapter=f"s3://b/runs/default/p-t{i}/adapter",
        )
        for i, uri in enumerate(uris)
    ]
    bank = bank_document(spec, PeftSweepStatus(trials=rows), {"p-t0": "a" * 64, "p-t1": "b" * 64})
    assert bank["baseModel"] == TEMPLATE["model"]["uri"]
    assert bank["tasks"] == {
        "down": {
            "adapter": "s3://b/runs/default/p-t0/adapter",
            "sha256": "a" * 64,
            "evalLoss": 0.5,
            "dataset": uris[0],
            "trial": "p-t0",
        },
        "up": {
            "adapter": "s3://b/runs/default/p-t1/adapter",
            "sha256": "b" * 64,
            "evalLoss": 1.5,
            "dataset": uris[1],
            "trial": "p-t1",
        },
    }


def test_sweep_report_command_writes_what_the_report_pod_is_asked_for(tmp_path: Path) -> None:
    from kubepeft.cli import main

    spec = sweep_spec(RANK_GROUP).model_copy(deep=True)
    spec.template.output.uri = str(tmp_path / "out")
    document = {"name": "s", "namespace": "team-a", "spec": spec.to_wire(), "status": finished_status().to_wire()}
    (tmp_path / "input.json").write_text(json.dumps(document))
    assert main(["sweep-report", "--input", str(tmp_path / "input.json")]) == 0
    root = str(tmp_path / "out" / "team-a" / "s")
    assert len(open_store(root).verify(root).files) == 3
    (tmp_path / "bad.json").write_text("{}")
    assert main(["sweep-report", "--input", str(tmp_path / "bad.json")]) == 3


def test_sweep_report_command_writes_an_output_on_a_claim_where_the_claim_is_mounted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubepeft.api.models import VolumeSpec
    from kubepeft.cli import main

    spec = sweep_spec(RANK_GROUP).model_copy(deep=True)
    spec.template.output.uri = "pvc://results/runs"
    spec.template.volumes = [VolumeSpec(claim_name="results", mount_path=str(tmp_path / "mnt"))]
    document = {"name": "s", "namespace": "team-a", "spec": spec.to_wire(), "status": finished_status().to_wire()}
    (tmp_path / "input.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["sweep-report", "--input", str(tmp_path / "input.json")]) == 0
    root = str(tmp_path / "mnt" / "runs" / "team-a" / "s")
    assert len(open_store(root).verify(root).files) == 3
    assert not (Path.cwd() / "pvc:").exists()
    # The report names its files as the sweep does (what .status shows), not the pod's mount path.
    uris = json.loads(capsys.readouterr().out)
    assert uris["manifest"] == "pvc://results/runs/team-a/s/manifest.json"
    assert all(uri.startswith("pvc://results/runs/team-a/s/") for uri in uris.values())
