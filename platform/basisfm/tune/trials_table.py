"""The table of a search's trials: one row per trial, as markdown and as a parallel-coordinates PNG.

Both are what the parent MLflow run shows at the end of a search, so a reader sees at a glance
which settings won and how far apart the trials ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: searches run on cluster nodes and CI without a display
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class TrialRow:
    """One finished (or stopped, or failed) trial as the search saw it."""

    trial_id: str
    status: str  # TERMINATED (ran to the end or stopped early by ASHA) or ERROR
    params: dict[str, Any]  # the sampled dotted config keys
    metric: float | None  # the search metric at the trial's last report
    iterations: int  # reports Tune received (validation rounds)
    stopped_early: bool = False
    checkpoint_path: str | None = None
    error: str | None = None
    extra: dict[str, float] = field(default_factory=dict)  # other last-reported metrics worth a column


def rank_trials(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first; trials with no metric (failed before reporting) go last.

    Ties (e.g. two MGDA trials differing only in γ, which MGDA ignores) go to the trial that trained
    further, then to the smaller trial id, so a resumed search names the same best trial.
    """
    sign = 1.0 if mode == "min" else -1.0

    def key(row: TrialRow) -> tuple[int, float, int, str]:
        usable = row.metric is not None and math.isfinite(row.metric)
        return (0, sign * row.metric, -row.iterations, row.trial_id) if usable else (1, 0.0, 0, row.trial_id)

    return sorted(rows, key=key)


def trials_markdown(rows: list[TrialRow], metric: str, mode: str) -> str:
    """A markdown table, best trial first, with every sampled key as a column."""
    ranked = rank_trials(rows, mode)
    param_keys = sorted({key for row in rows for key in row.params})
    extra_keys = sorted({key for row in rows for key in row.extra})
    header = ["rank", "trial", "status", f"{metric} ({mode})", "reports", *param_keys, *extra_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(ranked, start=1):
        status = row.status + (" (ASHA stop)" if row.stopped_early else "")
        cells = [str(rank), row.trial_id, status, _fmt(row.metric), str(row.iterations)]
        cells += [_fmt(row.params.get(key)) for key in param_keys]
        cells += [_fmt(row.extra.get(key)) for key in extra_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_trials(rows: list[TrialRow], metric: str, mode: str, path: str | Path) -> Path:
    """Parallel coordinates: one axis per sampled key plus the metric, one line per trial coloured by it."""
    path = Path(path)
    ranked = [row for row in rank_trials(rows, mode) if row.metric is not None and math.isfinite(row.metric)]
    param_keys = sorted({key for row in rows for key in row.params})
    axes_keys = [*param_keys, metric]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(axes_keys)), 4.5))
    if not ranked:
        ax.text(0.5, 0.5, f"no trial reported {metric}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        columns = {key: [row.params.get(key) for row in ranked] for key in param_keys}
        columns[metric] = [row.metric for row in ranked]
        scaled, tick_labels = {}, {}
        for key, values in columns.items():
            scaled[key], tick_labels[key] = _scale_axis(values)
        metric_values = columns[metric]
        low, high = min(metric_values), max(metric_values)
        cmap = plt.get_cmap("viridis")  # yellow = best, purple = worst, whichever the mode
        xs = list(range(len(axes_keys)))
        # Worst first so the best trial's line is drawn on top.
        for index in reversed(range(len(ranked))):
            value = metric_values[index]
            goodness = 1.0 if high == low else ((high - value) if mode == "min" else (value - low)) / (high - low)
            ys = [scaled[key][index] for key in axes_keys]
            ax.plot(xs, ys, color=cmap(goodness), linewidth=2.5 if index == 0 else 1.4, alpha=0.9, marker="o",
                    markersize=3)
        for x, key in enumerate(axes_keys):
            ax.axvline(x, color="0.75", linewidth=0.8, zorder=0)
            for y, label in tick_labels[key]:
                ax.text(x + 0.03, y, label, fontsize=7, va="center", color="0.25")
        ax.set_xticks(xs)
        ax.set_xticklabels(axes_keys, rotation=20, ha="right", fontsize=8)
        ax.set_yticks([])
        ax.set_ylim(-0.08, 1.08)
        ax.set_xlim(-0.2, len(axes_keys) - 0.6)
        ax.set_title(f"{len(ranked)} trials; best {metric} = {metric_values[0]:.4g} (thick line)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _scale_axis(values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Map an axis's values to [0, 1]: numbers linearly, anything else as evenly spaced categories."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        scaled = [0.5 if high == low else (v - low) / span for v in values]
        ticks = [(0.0 if high != low else 0.5, _fmt(low))] + ([(1.0, _fmt(high))] if high != low else [])
        return scaled, ticks
    categories = sorted({str(v) for v in values})
    position = {c: (0.5 if len(categories) == 1 else i / (len(categories) - 1)) for i, c in enumerate(categories)}
    return [position[str(v)] for v in values], [(position[c], c) for c in categories]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
