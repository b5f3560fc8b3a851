"""Turn one record into ``input_ids`` and ``labels`` (``-100`` where no loss is taken).

* ``text``: the text and an EOS; loss on every token.
* ``promptResponse``: prompt tokens (the tokenizer's own special tokens, e.g. BOS, included) then
  response tokens and an EOS; loss on the response and the EOS only.
* ``chat``: the messages through the tokenizer's chat template; loss on the assistant turns. The
  template's ``{% generation %}`` markers give the assistant spans when it has them; otherwise
  each assistant turn is located by rendering the conversation up to it (which works for every
  template whose rendering of a prefix is a prefix of the whole). When neither works, loss is
  taken on every token.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from kubepeft.api.models import DatasetSpec

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
Example = dict[str, list[int]]
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


def tokenize_record(record: dict[str, Any], ds: DatasetSpec, tokenizer: Any) -> Example:
    """``{"input_ids": [...], "labels": [...]}`` for one validated record, before truncation."""
    if ds.template == "text":
        ids = _with_eos(tokenizer(record[ds.text_field])["input_ids"], tokenizer)
        return {"input_ids": ids, "labels": list(ids)}
    if ds.template == "promptResponse":
        prompt = tokenizer(record[ds.prompt_field])["input_ids"]
        response = _with_eos(tokenizer(record[ds.response_field], add_special_tokens=False)["input_ids"], tokenizer)
        return {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response}
    return _tokenize_chat(record[ds.messages_field], tokenizer)


def _with_eos(ids: list[int], tokenizer: Any) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None or (ids and ids[-1] == eos):
        return list(ids)
    return [*ids, eos]


def _render(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)


def _tokenize_chat(messages: list[dict[str, str]], tokenizer: Any) -> Example:
    if tokenizer.chat_template is None:
        from kubepeft_trainer.errors import PermanentTrainerError

        raise PermanentTrainerError("dataset.template chat: the model's tokenizer has no chat template")
    if GENERATION_TAG.search(str(tokenizer.chat_template)):
        encoded = _render(tokenizer, messages, return_assistant_tokens_mask=True)
        mask = encoded["assistant_masks"]
        if any(mask):
            ids = list(encoded["input_ids"])
            return {"input_ids": ids, "labels": [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]}
    ids = list(_render(tokenizer, messages)["input_ids"])
    labels = _assistant_labels_by_prefix(messages, ids, tokenizer)
    if labels is None:
        log.warning("chat template is not prefix-stable: loss is taken on every token, not only the assistant turns")
        labels = list(ids)
    return {"input_ids": ids, "labels": labels}


def _assistant_labels_by_prefix(messages: list[dict[str, str]], ids: list[int], tokenizer: Any) -> list[int] | None:
    labels = [IGNORE_INDEX] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = list(_render(tokenizer, messages[:i], add_generation_prompt=True)["input_ids"]) if i else []
        through = list(_render(tokenizer, messages[: i + 1])["input_ids"])
        if ids[: len(before)] != before or ids[: len(through)] != through or len(through) <= len(before):
            return None
        labels[len(before) : len(through)] = ids[len(before) : len(through)]
    return labels
