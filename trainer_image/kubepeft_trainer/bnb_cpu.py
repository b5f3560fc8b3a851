"""The one bitsandbytes-on-CPU trap, handled in one place: 4-bit weight repacking.

On CPUs with AVX512-BF16, an eval-mode, no-grad forward through a bitsandbytes ``Linear4bit``
converts its weights to a packed, inference-only layout; gradients computed afterwards are
silently wrong (see the environment guide). Each such layer carries a switch attribute:
QLoRA turns it off for good before training (:func:`disable_cpu_inference_repack`), and the
evaluation turns it off around its forwards (:func:`no_cpu_weight_repacking`) for any other
quantized model it is handed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

REPACK_SWITCH = "support_avx512bf16_for_cpu"
"""bitsandbytes' per-layer attribute that allows the repacking."""


def disable_cpu_inference_repack(model: Any) -> int:
    """Switch the repacking off on every layer that has the switch; returns how many."""
    layers = [m for m in model.modules() if hasattr(m, REPACK_SWITCH)]
    _set_switch(layers, False)
    return len(layers)


@contextlib.contextmanager
def no_cpu_weight_repacking(model: Any) -> Iterator[None]:
    """Switch the repacking off for the duration of the block on the layers where it is on."""
    layers = [m for m in model.modules() if getattr(m, REPACK_SWITCH, False)]
    _set_switch(layers, False)
    try:
        yield
    finally:
        _set_switch(layers, True)


def _set_switch(layers: list[Any], value: bool) -> None:
    for layer in layers:
        setattr(layer, REPACK_SWITCH, value)
