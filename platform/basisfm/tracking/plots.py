"""Loss-curve figures logged with each run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


def plot_loss_curves(series: Mapping[str, Sequence[tuple[int, float]]], path: str | Path,
                     title: str = "Pretraining loss") -> Path:
    """One line per metric name, x = step. Loss-like series share a log-scale axis when all are positive."""
    import matplotlib

    matplotlib.use("Agg")  # workers and CI have no display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    all_positive = True
    for name, points in sorted(series.items()):
        if not points:
            continue
        steps, values = zip(*sorted(points))
        all_positive &= min(values) > 0
        ax.plot(steps, values, label=name, marker="o" if len(points) < 20 else None, markersize=3)
    if series and all_positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if any(series.values()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
