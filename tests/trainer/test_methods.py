"""PEFT methods on the tiny model: the right parameters train, training works, adapters reload exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kubepeft_trainer.data import build_datasets, collate
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.methods import get_method
from kubepeft_trainer.model_loading import load_base_model, load_tokenizer

from kubepeft.tiny_task import LETTERS, count, tiny_training_records
from tests.fixtures.trainer import make_spec, train_steps

torch.set_num_threads(1)

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# (in, out) of each linear layer of the tiny Llama: hidden 64, 2 KV heads x 16, intermediate 128.
SHAPES = {
    "q_proj": (64, 64),
    "k_proj": (64, 32),
    "v_proj": (64, 32),
    "o_proj": (64, 64),
    "gate_proj": (64, 128),
    "up_proj": (64, 128),
    "down_proj": (128, 64),
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(tiny_model_dir, trust_remote_code=False)


@pytest.fixture(scope="module")
def examples(tiny_model_dir: Path, tokenizer: Any) -> list[dict[str, list[int]]]:
    spec = make_spec(tiny_model_dir, dataset={"validationSplit": 0.0})
    train, _ = build_datasets(spec.dataset, spec.training, tokenizer, tiny_training_records(96), seed=0)
    return train.examples


def trainable(model: Any) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def apply(model_dir: Path, tokenizer: Any, **overrides: Any) -> Any:
    spec = make_spec(model_dir, **overrides)
    torch.manual_seed(0)  # adapter initialisation
    return get_method(spec).apply(load_base_model(model_dir, spec), tokenizer, spec)


def logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def greedy(model: Any, tokenizer: Any, prompt: str, *, use_cache: bool = True) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(
        input_ids=ids,
        max_new_tokens=30,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :]))


def exact_answers(model: Any, tokenizer: Any) -> int:
    """How many of the task's 25 distinct prompts (``b =`` ... ``z =``) greedy decoding answers exactly."""
    model.eval()
    # With the KV cache, peft 0.21 + transformers 5.24 generate wrongly after prompt tuning's virtual
    # tokens (measured: 0 of 20 exact with the cache, 16 of 20 without): decode those without it.
    use_cache = not model.active_peft_config.is_prompt_learning
    answers = (greedy(model, tokenizer, f"{c} =", use_cache=use_cache) for c in LETTERS[1:])
    return sum(answer == count(c, "down") + "</s>" for c, answer in zip(LETTERS[1:], answers, strict=True))


# --- registry ----------------------------------------------------------------------------------


def test_registry_finds_each_method(tiny_model_dir: Path) -> None:
    lora = get_method(make_spec(tiny_model_dir))
    qlora = get_method(make_spec(tiny_model_dir, method="qlora", quantization={"bits": 4}))
    prompt = get_method(make_spec(tiny_model_dir, method="promptTuning"))
    assert (lora.name, qlora.name, prompt.name) == ("lora", "qlora", "promptTuning")
    assert lora.supports_merge and qlora.supports_merge and not prompt.supports_merge


# --- LoRA --------------------------------------------------------------------------------------


def test_lora_all_linear_covers_every_projection_but_not_the_head(tiny_model_dir: Path, tokenizer: Any) -> None:
    model = apply(tiny_model_dir, tokenizer, lora={"r": 4, "alpha": 8})
    params = trainable(model)
    adapted = {n.split(".")[-4] for n in params}
    assert adapted == set(LINEAR)
    assert not any("lm_head" in n or "embed" in n for n in params)
    assert sum(params.values()) == 2 * sum(4 * (i + o) for i, o in SHAPES.values())
    assert model.peft_config["default"].lora_alpha == 8 and model.peft_config["default"].r == 4


def test_lora_named_targets_and_bad_targets(tiny_model_dir: Path, tokenizer: Any) -> None:
    model = apply(tiny_model_dir, tokenizer, lora={"r": 2, "targetModules": ["q_proj", "v_proj"]})
    assert {n.split(".")[-4] for n in trainable(model)} == {"q_proj", "v_proj"}
    with pytest.raises(PermanentTrainerError, match=r"spec\.lora: .*nope"):
        apply(tiny_model_dir, tokenizer, lora={"targetModules": ["nope"]})
    with pytest.raises(PermanentTrainerError, match=r"spec\.lora\.targetModules"):
        apply(tiny_model_dir, tokenizer, lora={"targetModules": ["all-linear", "q_proj"]})


def test_dora_adds_trainable_magnitudes(tiny_model_dir: Path, tokenizer: Any) -> None:
    model = apply(tiny_model_dir, tokenizer, lora={"r": 4, "useDora": True})
    params = trainable(model)
    magnitudes = {n: v for n, v in params.items() if "lora_magnitude_vector" in n}
    assert len(magnitudes) == 2 * len(LINEAR)
    assert sum(magnitudes.values()) == 2 * sum(o for _, o in SHAPES.values())


@pytest.mark.parametrize(("bias", "expected"), [("none", set()), ("lora_only", {"q_proj", "v_proj"}), ("all", None)])
def test_lora_bias_options(tiny_model_dir: Path, tokenizer: Any, bias: str, expected: set[str] | None) -> None:
    from kubepeft_trainer.methods.lora import lora_config
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    spec = make_spec(tiny_model_dir, lora={"r": 2, "targetModules": ["q_proj", "v_proj"], "bias": bias})
    # The tiny Llama has no biases; give it some (initialised fresh) to see which ones train.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_bias=True, mlp_bias=True)
    all_biased = {n.split(".")[-2] for n, _ in base.named_parameters() if n.endswith(".bias")}
    assert all_biased == set(LINEAR)
    model = get_peft_model(base, lora_config(spec.effective_lora()))
    biases = {n.replace(".base_layer", "").split(".")[-2] for n in trainable(model) if n.endswith(".bias")}
    assert biases == (all_biased if expected is None else expected)


def test_lora_trains_fast_and_adapter_reloads_exactly(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]], tmp_path: Path
) -> None:
    from peft import PeftModel

    model = apply(tiny_model_dir, tokenizer)
    before = exact_answers(model, tokenizer)
    losses = train_steps(model, examples, steps=30, lr=1e-2, pad_token_id=tokenizer.pad_token_id)
    assert losses[-1] < 0.1 * losses[0]
    assert before == 0 and exact_answers(model, tokenizer) >= 22  # measured 23 of 25
    model.save_pretrained(str(tmp_path / "adapter"))
    batch = collate(examples[:8], tokenizer.pad_token_id)
    spec = make_spec(tiny_model_dir)
    reloaded = PeftModel.from_pretrained(load_base_model(tiny_model_dir, spec), tmp_path / "adapter")
    assert (logits(model, batch) - logits(reloaded, batch)).abs().max().item() == 0.0


def test_training_continues_from_an_existing_adapter(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]], tmp_path: Path
) -> None:
    model = apply(tiny_model_dir, tokenizer, lora={"r": 4})
    train_steps(model, examples, steps=3, lr=1e-2, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(tmp_path / "start"))
    spec = make_spec(tiny_model_dir, lora={"r": 8})  # the adapter's own config (r=4) wins
    resumed = get_method(spec).apply(
        load_base_model(tiny_model_dir, spec), tokenizer, spec, adapter_path=tmp_path / "start"
    )
    assert trainable(resumed) == trainable(model)
    saved, loaded = dict(model.named_parameters()), dict(resumed.named_parameters())
    assert all(torch.equal(saved[n], loaded[n]) for n in trainable(model))
    prompt_spec = make_spec(tiny_model_dir, method="promptTuning")
    with pytest.raises(
        PermanentTrainerError, match="a LORA adapter cannot be trained further with method promptTuning"
    ):
        get_method(prompt_spec).apply(
            load_base_model(tiny_model_dir, prompt_spec), tokenizer, prompt_spec, adapter_path=tmp_path / "start"
        )


# --- QLoRA -------------------------------------------------------------------------------------


def qlora_spec(model_dir: Path, **quant: Any) -> Any:
    return make_spec(
        model_dir, method="qlora", quantization={"bits": 4, "computeDtype": "float32", **quant}, lora={"r": 8}
    )


def test_qlora_4bit_nf4_double_quant_trains_and_reloads_exactly(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]], tmp_path: Path
) -> None:
    import bitsandbytes as bnb
    from kubepeft_trainer.methods.qlora import disable_cpu_inference_repack
    from peft import PeftModel

    spec = qlora_spec(tiny_model_dir, quantType="nf4", doubleQuant=True)
    base = load_base_model(tiny_model_dir, spec)
    quantized = {n.split(".")[-1]: m for n, m in base.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert set(quantized) == set(LINEAR) and not isinstance(base.lm_head, bnb.nn.Linear4bit)
    state = base.model.layers[0].self_attn.q_proj.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # nested = double quantization
    assert base.model.layers[0].mlp.up_proj.weight.dtype == torch.uint8

    # Train first: no eval-mode forward through the 4-bit layers before training (environment guide).
    model = get_method(spec).apply(base, tokenizer, spec)
    assert all("lora_" in n for n in trainable(model))
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    losses = train_steps(model, examples, steps=15, lr=1e-2, pad_token_id=tokenizer.pad_token_id)
    assert losses[-1] < 0.2 * losses[0]
    model.save_pretrained(str(tmp_path / "adapter"))

    fresh = load_base_model(tiny_model_dir, spec)
    disable_cpu_inference_repack(fresh)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    batch = collate(examples[:8], tokenizer.pad_token_id)
    assert (logits(model, batch) - logits(reloaded, batch)).abs().max().item() == 0.0


def test_qlora_8bit_and_fp4_load_and_take_a_step(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]]
) -> None:
    import bitsandbytes as bnb

    spec8 = make_spec(tiny_model_dir, method="qlora", quantization={"bits": 8, "doubleQuant": False})
    model = get_method(spec8).apply(load_base_model(tiny_model_dir, spec8), tokenizer, spec8)
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    assert all(torch.isfinite(torch.tensor(train_steps(model, examples, steps=2, lr=1e-3, pad_token_id=0))))

    spec4 = qlora_spec(tiny_model_dir, quantType="fp4", doubleQuant=False)
    base = load_base_model(tiny_model_dir, spec4)
    state = base.model.layers[1].mlp.down_proj.weight.quant_state
    assert state.quant_type == "fp4" and not state.nested


def test_qlora_needs_a_quantized_base(tiny_model_dir: Path, tokenizer: Any) -> None:
    spec = qlora_spec(tiny_model_dir)
    plain = load_base_model(tiny_model_dir, make_spec(tiny_model_dir))
    with pytest.raises(PermanentTrainerError, match=r"spec\.quantization"):
        get_method(spec).apply(plain, tokenizer, spec)


# --- prompt tuning -----------------------------------------------------------------------------


def test_prompt_tuning_random_init_trains_only_virtual_tokens(tiny_model_dir: Path, tokenizer: Any) -> None:
    model = apply(tiny_model_dir, tokenizer, method="promptTuning", promptTuning={"numVirtualTokens": 6})
    assert trainable(model) == {"prompt_encoder.default.embedding.weight": 6 * 64}


def test_prompt_tuning_text_init_copies_the_text_embeddings(tiny_model_dir: Path, tokenizer: Any) -> None:
    model = apply(
        tiny_model_dir,
        tokenizer,
        method="promptTuning",
        promptTuning={"numVirtualTokens": 3, "init": "text", "initText": "down"},
    )
    text_ids = tokenizer("down")["input_ids"]
    wanted = (text_ids * 3)[:3]  # peft repeats the text to fill the virtual tokens
    embeddings = model.get_input_embeddings().weight[wanted]
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, embeddings)


def test_prompt_tuning_reloads_exactly_after_slicing_virtual_tokens(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]], tmp_path: Path
) -> None:
    from peft import PeftModel

    n_virtual = 4
    overrides: dict[str, Any] = {"method": "promptTuning", "promptTuning": {"numVirtualTokens": n_virtual}}
    model = apply(tiny_model_dir, tokenizer, **overrides)
    losses = train_steps(model, examples, steps=10, lr=1e-1, pad_token_id=tokenizer.pad_token_id)
    assert losses[-1] < losses[0]
    model.save_pretrained(str(tmp_path / "prompt"))
    spec = make_spec(tiny_model_dir, **overrides)
    reloaded = PeftModel.from_pretrained(load_base_model(tiny_model_dir, spec), tmp_path / "prompt")
    batch = collate(examples[:8], tokenizer.pad_token_id)
    trained_logits, reloaded_logits = logits(model, batch), logits(reloaded, batch)
    assert trained_logits.shape[1] == batch["input_ids"].shape[1] + n_virtual
    # The logits include the virtual-token positions: compare the real tokens only.
    diff = (trained_logits[:, n_virtual:] - reloaded_logits[:, n_virtual:]).abs().max().item()
    assert diff == 0.0


@pytest.mark.slow
def test_prompt_tuning_learns_the_task(
    tiny_model_dir: Path, tokenizer: Any, examples: list[dict[str, list[int]]]
) -> None:
    model = apply(tiny_model_dir, tokenizer, method="promptTuning", promptTuning={"numVirtualTokens": 4})
    assert exact_answers(model, tokenizer) <= 2  # measured 0; random virtual tokens could tip one or two
    losses = train_steps(model, examples, steps=120, lr=1e-1, pad_token_id=tokenizer.pad_token_id)
    assert sum(losses[-10:]) / 10 < 0.1 * losses[0]
    assert exact_answers(model, tokenizer) >= 14  # measured 17 of 25: a 4-token soft prompt is weaker than LoRA
