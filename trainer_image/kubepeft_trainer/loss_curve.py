"""The loss-curve PNG of a job (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_loss_curve(
    path: Path,
    losses: Sequence[tuple[int, float]],
    evals: Sequence[tuple[int, float]] = (),
    *,
    title: str = "training loss",
) -> Path:
    """Write training loss per step (and eval loss points) to ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display in pods; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if losses:
            steps, values = zip(*losses, strict=True)
            ax.plot(steps, values, label="train loss", linewidth=1.2)
        if evals:
            steps, values = zip(*evals, strict=True)
            ax.plot(steps, values, "o-", label="eval loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (mean per token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
