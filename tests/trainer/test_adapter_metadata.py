"""An exported adapter names the job's model (not the node's download folder) in stable bytes,
and loads with nothing but transformers + peft once its base model is where the config says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubepeft_trainer.adapter_metadata import canonical_adapter_config, describe_job_model, model_reference

from kubepeft.api.models import ModelSpec
from tests.fixtures.s3 import open_s3_store
from tests.fixtures.training import FinishedJob, lora_job_spec, lora_training, run_train, write_trainer_config

LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Saves a fresh LoRA adapter of the tiny model the way the trainer does (peft's save_pretrained).
SAVE_ADAPTER = """
import sys
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
config = LoraConfig(r=4, target_modules=sys.argv[3].split(","), task_type="CAUSAL_LM")
get_peft_model(base, config).save_pretrained(sys.argv[2])
"""
# Only transformers and peft: AutoPeftModel finds the base through adapter_config.json alone.
LOAD_ADAPTER = """
import sys
import torch
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
assert out.logits.shape[:2] == (1, 3), out.logits.shape
assert not any(name.startswith("kubepeft") for name in sys.modules), "not a clean process"
print("loaded", type(model).__name__, model.peft_config["default"].base_model_name_or_path)
"""


def test_model_reference_is_the_hub_id_for_hf_and_the_uri_otherwise() -> None:
    assert model_reference(ModelSpec(uri="hf://org/name")) == ("org/name", None)
    assert model_reference(ModelSpec(uri="hf://org/name@v2")) == ("org/name", "v2")
    assert model_reference(ModelSpec(uri="hf://org/name@v2", revision="abc")) == ("org/name", "abc")
    assert model_reference(ModelSpec(uri="s3://models/llama/7b")) == ("s3://models/llama/7b", None)
    assert model_reference(ModelSpec(uri="/mnt/models/llama")) == ("/mnt/models/llama", None)


def test_canonical_config_names_the_model_and_is_byte_stable() -> None:
    node_folder = "/var/scratch/node0/inputs/model"
    one = {"base_model_name_or_path": node_folder, "target_modules": ["v_proj", "q_proj"], "r": 8}
    two = {"r": 8, "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": node_folder}
    text = canonical_adapter_config(one, "org/name", "v2")
    assert text == canonical_adapter_config(two, "org/name", "v2")
    written = json.loads(text)
    assert written["base_model_name_or_path"] == "org/name" and written["revision"] == "v2"
    assert written["target_modules"] == ["q_proj", "v_proj"]
    assert node_folder not in text
    # Prompt tuning's text init records the tokenizer's path as well.
    prompt = {
        "base_model_name_or_path": node_folder,
        "tokenizer_name_or_path": node_folder,
        "peft_type": "PROMPT_TUNING",
    }
    assert json.loads(canonical_adapter_config(prompt, "s3://b/m", None))["tokenizer_name_or_path"] == "s3://b/m"
    assert json.loads(canonical_adapter_config(prompt, "s3://b/m", None)).get("revision") is None


def _python(script: str, *args: str, env: dict[str, str] | None = None, isolated: bool = False) -> str:
    flags = ["-I"] if isolated else []
    result = subprocess.run(
        [sys.executable, *flags, "-c", script, *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _hub_cache(cache: Path, repo_id: str, revision: str, model_dir: Path) -> None:
    """A Hugging Face hub cache holding ``repo_id`` at ``revision`` (what a download leaves)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_saved_adapter_is_stable_and_loads_from_the_hub_id(tmp_path: Path, tiny_model_dir: Path) -> None:
    modules = ",".join(LLAMA_MODULES)
    saved = []
    for seed in ("1", "2"):  # peft dumps target_modules in the hash order of the process
        out = tmp_path / f"adapter-{seed}"
        _python(SAVE_ADAPTER, str(tiny_model_dir), str(out), modules, env={"PYTHONHASHSEED": seed})
        assert str(tiny_model_dir) in (out / "adapter_config.json").read_text()
        describe_job_model(out, ModelSpec(uri="hf://kubepeft-test/tiny@v1"))
        saved.append(out)
    config_bytes = [(path / "adapter_config.json").read_bytes() for path in saved]
    assert config_bytes[0] == config_bytes[1]
    config = json.loads(config_bytes[0])
    assert config["base_model_name_or_path"] == "kubepeft-test/tiny" and config["revision"] == "v1"
    assert config["target_modules"] == sorted(LLAMA_MODULES)
    card = (saved[0] / "README.md").read_text()
    assert "base_model: kubepeft-test/tiny" in card and str(tiny_model_dir) not in card

    cache = tmp_path / "hub"
    _hub_cache(cache, "kubepeft-test/tiny", "v1", tiny_model_dir)
    loaded = _python(LOAD_ADAPTER, str(saved[0]), env={"HF_HUB_CACHE": str(cache)}, isolated=True)
    assert "loaded PeftModelForCausalLM kubepeft-test/tiny" in loaded


def _files_mentioning(folder: Path, text: str) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_trained_adapter_names_the_job_model_not_the_download_folder(
    tmp_path: Path, tiny_model_dir: Path, tiny_task_data: Path, s3_server: Any, lora_job: FinishedJob
) -> None:
    """Prompt tuning with text init, the base model fetched from S3: the config, its tokenizer
    path and the model card name ``s3://...``; the eval loss before training is the base model's
    (the LoRA job's, whose fresh adapter is a no-op), not that of the initialised soft prompt."""
    s3_server.create_bucket("adapters")
    model_uri = "s3://adapters/models/tiny"
    open_s3_store(s3_server, model_uri).upload_dir(tiny_model_dir, model_uri, metadata={"kind": "model"})
    spec = lora_job_spec(
        Path("/unused"),
        tiny_task_data,
        tmp_path / "out",
        model={"uri": model_uri, "dtype": "float32"},
        method="promptTuning",
        lora=None,
        promptTuning={"numVirtualTokens": 4, "init": "text", "initText": "a b c d"},
        training=lora_training(maxSteps=4),
        output={"uri": "s3://adapters/out", "merge": False},
        checkpointing={"everySteps": 4, "keep": 1},
    )
    run = run_train(write_trainer_config(tmp_path, spec, "pt", s3=s3_server), tmp_path / "run")
    assert run.returncodes == [0], run.log()[-6000:]
    adapter = tmp_path / "fetched"
    open_s3_store(s3_server, "s3://adapters/out/tests/pt").download_dir("adapter", adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == model_uri
    assert config["tokenizer_name_or_path"] == model_uri
    assert f"base_model: {model_uri}" in (adapter / "README.md").read_text()
    assert _files_mentioning(adapter, str(run.workdirs[0])) == []
    before = run.reports()[-1]["eval_loss_before"]
    assert before == pytest.approx(lora_job.run.reports()[-1]["eval_loss_before"], abs=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exported_adapter_loads_in_a_clean_process(lora_job: FinishedJob, tiny_model_dir: Path) -> None:
    """The local-folder case: the base model is where adapter_config.json says."""
    adapter = lora_job.root / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert config["target_modules"] == sorted(config["target_modules"])
    loaded = _python(LOAD_ADAPTER, str(adapter), isolated=True)
    assert f"loaded PeftModelForCausalLM {tiny_model_dir}" in loaded
