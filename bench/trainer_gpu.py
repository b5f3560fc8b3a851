"""LoRA and QLoRA training steps on a real-size model shape, on one CUDA GPU.

A Llama-3-8B-shaped model (hidden 4096, 32 layers, GQA 32/8 heads, MLP 14336, vocab 128256) with
random weights -- no download -- trained with LoRA (bf16 base) and QLoRA (NF4 base, bf16
compute), through the same token-weighted loss as the kubepeft loop (``evaluation.token_loss_sum``).
Use ``--layers`` to shrink the depth on smaller GPUs (the per-layer cost is what matters).

Printed per method: tokens/s, MFU and peak GPU memory. MFU uses the 6N basis: a step costs about
6 FLOPs per parameter per token (forward 2N, backward 4N: LoRA still back-propagates activation
gradients through every frozen layer, it only skips the frozen weights' own gradients, ~2N, so
the true work is nearer 4N; both numbers are printed) plus the attention term
``12 * layers * hidden * seq`` per token, divided by the GPU's dense bf16 peak (``--peak-tflops``,
default 989 for H100/H200 SXM).

Exits 0 with a message where no GPU exists.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer_image"))
sys.path.insert(0, str(REPO))


def build(method: str, layers: int, seq: int) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=max(8192, seq),
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    config.dtype = torch.bfloat16
    with torch.device("cuda"):  # built directly on the GPU in bf16: no 32 GB fp32 copy in host memory
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    if method == "qlora":
        # Quantize the random bf16 weights in place with bitsandbytes (what from_pretrained does).
        import bitsandbytes as bnb

        def quantize(module: torch.nn.Module) -> None:
            for name, child in module.named_children():
                if isinstance(child, torch.nn.Linear) and name != "lm_head":
                    q = bnb.nn.Linear4bit(
                        child.in_features,
                        child.out_features,
                        bias=child.bias is not None,
                        compute_dtype=torch.bfloat16,
                        quant_type="nf4",
                        compress_statistics=True,
                    )
                    q.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
                    q = q.cuda()
                    setattr(module, name, q)
                    del child
                else:
                    quantize(child)

        quantize(model)
        torch.cuda.empty_cache()
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), config


def run(method: str, args: argparse.Namespace) -> dict[str, float]:
    import torch
    from kubepeft_trainer.evaluation import token_loss_sum

    torch.cuda.reset_peak_memory_stats()
    model, config = build(method, args.layers, args.seq)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    n_total = sum(p.numel() for p in model.parameters())
    if method == "qlora":
        # 4-bit Params store 2 values per byte: count logical parameters from the config instead.
        h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        kv = h // config.num_attention_heads * config.num_key_value_heads
        n_total = layers * (2 * h * h + 2 * h * kv + 3 * h * i) + 2 * config.vocab_size * h
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")
    mask = torch.ones_like(ids)
    model.train()
    times = []
    for step in range(args.steps + args.warmup):
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = token_loss_sum(logits, ids) / (args.batch * (args.seq - 1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    tokens_per_s = args.batch * args.seq / (sum(times) / len(times))
    attention = 12 * config.num_hidden_layers * config.hidden_size * args.seq
    flops_6n = (6 * n_total + attention) * tokens_per_s
    flops_4n = (4 * n_total + attention) * tokens_per_s
    peak = args.peak_tflops * 1e12
    result = {
        "tokens_per_s": tokens_per_s,
        "mfu_6n": flops_6n / peak,
        "mfu_4n": flops_4n / peak,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "params_b": n_total / 1e9,
        "loss": float(loss.item()),
    }
    del model, optimizer
    torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    parser.add_argument("--methods", default="lora,qlora")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("trainer_gpu: torch is not installed; nothing to measure")
        return 0
    if not torch.cuda.is_available():
        print("trainer_gpu: no CUDA GPU on this machine; run it on a GPU node (nothing measured)")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(
        f"GPU: {torch.cuda.get_device_name(0)}; Llama-3-8B shape with {args.layers} layers, "
        f"batch {args.batch} x seq {args.seq}, LoRA r=16 all-linear, gradient checkpointing"
    )
    for method in args.methods.split(","):
        r = run(method, args)
        print(
            f"RESULT trainer_gpu method={method} params_b={r['params_b']:.2f} tokens_per_s={r['tokens_per_s']:.0f} "
            f"mfu_6n={r['mfu_6n']:.3f} mfu_4n={r['mfu_4n']:.3f} peak_mem_gib={r['peak_mem_gib']:.1f} "
            f"loss={r['loss']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
