"""A tiny Llama-style model and tokenizer, built offline in seconds, for tests and the demo.

A randomly initialised base barely learns under LoRA (its output head is frozen noise), so the
model is first pretrained (all parameters) on a small letter-counting language:

* ``up f =``   -> `` g h i ... z``   (count up to ``z``)
* ``down f =`` -> `` e d c b a``     (count down to ``a``)
* ``f =``      -> `` g h i ... z``   (no instruction: the default is up)

each as prompt + response + EOS and, for a quarter of the examples, through the chat template.
Every response token follows from the previous token and the instruction word, and the stop is
decided by content (``a``/``z``), so a 2-layer model learns the language in a few hundred steps;
copying tasks, which need position-matching attention heads, did not learn in that budget.

The fine-tuning task of :func:`kubepeft.tiny_task.tiny_training_records` changes the default to counting down. The
base already knows both directions, so LoRA (or a learned soft prompt, which can play the part of
the word ``down``) only flips a mode, which takes a few dozen steps, and greedy decoding then
reproduces the response exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from kubepeft.tiny_task import LETTERS, count

VOCAB_SIZE = 384
CHAT_FRACTION = 0.25

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK, *ROLE_TOKENS]

# The assistant turn is wrapped in {% generation %} so that transformers can return the assistant
# token mask (loss on assistant turns only).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '</s>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '</s>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _pretraining_pair(rng: random.Random) -> tuple[str, str]:
    op = rng.choice(("up", "down", ""))
    direction = op or "up"
    start = rng.choice(LETTERS[:-1] if direction == "up" else LETTERS[1:])
    return (f"{op} " if op else "") + f"{start} =", count(start, direction)


def _build_tokenizer(texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=256,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _pretraining_sequences(tokenizer: Any, rng: random.Random, n: int) -> list[list[int]]:
    sequences = []
    for _ in range(n):
        prompt, response = _pretraining_pair(rng)
        if rng.random() < CHAT_FRACTION:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
            sequences.append(list(ids))
        else:
            sequences.append(
                tokenizer(prompt + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            )
    return sequences


def build_tiny_model(out_dir: Path, *, seed: int = 0, pretrain_steps: int = 300) -> Path:
    """Build, pretrain and save the tiny model + tokenizer into ``out_dir``; deterministic per seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    rng = random.Random(f"tiny-model-{seed}")
    corpus = []
    for _ in range(2000):
        prompt, response = _pretraining_pair(rng)
        corpus.append(prompt + response)
    tokenizer = _build_tokenizer(corpus)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same bytes on every machine, whatever OMP_NUM_THREADS says
    try:
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dtype="float32",
        )
        model = LlamaForCausalLM(config)
        _pretrain(model, tokenizer, rng, steps=pretrain_steps)
        model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(threads)
    return out_dir


def _pretrain(model: Any, tokenizer: Any, rng: random.Random, *, steps: int, batch_size: int = 16) -> None:
    import torch

    if steps <= 0:
        return
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps, pct_start=0.1)
    model.train()
    pad = tokenizer.pad_token_id
    for _ in range(steps):
        seqs = _pretraining_sequences(tokenizer, rng, batch_size)
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = (ids != pad).long()
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
