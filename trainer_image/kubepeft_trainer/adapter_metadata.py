"""Make an exported adapter describe the job, not the node that trained it.

peft writes the base model's *load path* into ``adapter_config.json``
(``base_model_name_or_path``, and ``tokenizer_name_or_path`` for text-initialised prompt tuning)
and into the README model card (``base_model``). On a node that path is a temporary download
folder, useless to anyone loading the adapter later; here it becomes the job's model: the hub id
for ``hf://org/name`` (``AutoPeftModelForCausalLM`` then fetches it, at the job's revision), the
URI as written otherwise.

peft also writes set-valued fields (``target_modules``) in hash order, which changes from one
process to the next: the file is rewritten canonically (sorted keys, sorted sets) so its sha256
is the same in every attempt and a resumed export skips it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubepeft.api.models import ModelSpec
from kubepeft.storage.uri import HF_SCHEME, scheme_of

ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"
# Fields peft holds as Python sets and dumps in hash order.
SET_FIELDS = ("target_modules", "exclude_modules")
PATH_FIELDS = ("base_model_name_or_path", "tokenizer_name_or_path")


def model_reference(model: ModelSpec) -> tuple[str, str | None]:
    """Pure: (name to record, hub revision or None). ``hf://org/name@rev`` -> ``org/name``, ``rev``;
    any other URI is recorded as written."""
    if scheme_of(model.uri) != "hf":
        return model.uri, None
    repo, _, at_revision = model.uri[len(HF_SCHEME) :].partition("@")
    return repo.strip("/"), model.revision or at_revision or None


def canonical_adapter_config(config: dict[str, Any], name: str, revision: str | None) -> str:
    """Pure: the ``adapter_config.json`` text naming ``name``, byte-identical for equal content."""
    out = dict(config)
    for field in PATH_FIELDS:
        if out.get(field):
            out[field] = name
    out["base_model_name_or_path"] = name
    if revision is not None:
        out["revision"] = revision
    for field in SET_FIELDS:
        value = out.get(field)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            out[field] = sorted(set(value))
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def rewrite_model_card(path: Path, name: str, old: str | None) -> None:
    """Set the card's ``base_model`` (the hub's metadata field) to ``name``, and replace the old
    load path wherever peft repeated it (the ``base_model:adapter:<path>`` tag)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    card.data.base_model = name
    if old and old != name:
        card.data.tags = [tag.replace(old, name) for tag in card.data.tags or []] or None
        card.text = card.text.replace(old, name)
    card.save(path)


def describe_job_model(adapter_dir: Path, model: ModelSpec) -> None:
    """Rewrite ``adapter_dir``'s config and model card to name the job's model (idempotent)."""
    name, revision = model_reference(model)
    config_path = adapter_dir / ADAPTER_CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8"))
    old = config.get("base_model_name_or_path")
    config_path.write_text(canonical_adapter_config(config, name, revision), encoding="utf-8")
    card = adapter_dir / MODEL_CARD_FILE
    if card.is_file():
        rewrite_model_card(card, name, old if isinstance(old, str) else None)
