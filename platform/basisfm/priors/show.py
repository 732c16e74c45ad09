"""Look at what the prior makes: sample tasks written as CSV files plus a one-page PNG of y against its
strongest feature for a few of them (`python -m jobs.priors --show N`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from basisfm.config import RunConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch

_PLOTTED = 12  # tasks on the one-page figure


@dataclass
class SampleReport:
    out_dir: Path
    csv_files: list[Path] = field(default_factory=list)
    png: Path | None = None
    lines: list[str] = field(default_factory=list)  # one summary line per task
    rejections: dict[str, int] = field(default_factory=dict)


def episode_frame(episode: TableBatch):
    """The episode as a DataFrame: features `x0..`, targets `y0..` (true values, query rows too), a `split`
    column (support / query); categories as their labels, missing cells empty."""
    import pandas as pd

    values = episode.values.cpu().numpy()
    missing = episode.missing.cpu().numpy()
    ids = episode.string_ids.cpu().numpy()
    kinds = episode.column_kinds.cpu().numpy()
    is_target = episode.target_mask.cpu().numpy().any(0)
    vocab = np.asarray(episode.vocab + [""], dtype=object)
    columns, n_x, n_y = {}, 0, 0
    for j in range(episode.n_columns):
        if is_target[j]:
            name, n_y = f"y{n_y}", n_y + 1
        else:
            name, n_x = f"x{n_x}", n_x + 1
        if kinds[j] == ColumnKind.CATEGORICAL:
            column = pd.Series(vocab[ids[:, j]], dtype=object)
            column[missing[:, j]] = None
        else:
            column = pd.Series(np.where(missing[:, j], np.nan, values[:, j]))
        columns[name] = column
    frame = pd.DataFrame(columns)
    frame["split"] = np.where(episode.support.cpu().numpy(), "support", "query")
    return frame


def _numeric(episode: TableBatch, j: int) -> np.ndarray:
    """Column j as floats for plotting: values, or category ids; NaN where missing."""
    column = episode.string_ids[:, j] if episode.column_kinds[j] == ColumnKind.CATEGORICAL else episode.values[:, j]
    out = column.double().cpu().numpy().copy()
    out[episode.missing[:, j].cpu().numpy()] = np.nan
    return out


def strongest_feature(episode: TableBatch, target: int) -> tuple[int, float]:
    """(column, |Pearson r|) of the feature most correlated with column `target` over rows where both exist."""
    y = _numeric(episode, target)
    is_target = episode.target_mask.any(0).cpu().numpy()
    best, best_r = -1, -1.0
    for j in range(episode.n_columns):
        if is_target[j]:
            continue
        x = _numeric(episode, j)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3 or x[ok].std() == 0 or y[ok].std() == 0:
            r = 0.0
        else:
            r = abs(float(np.corrcoef(x[ok], y[ok])[0, 1]))
        if r > best_r:
            best, best_r = j, r
    return best, best_r


def describe(episode: TableBatch) -> str:
    """One line: id, shape, support rows, column kinds, target kinds, missing share."""
    kinds = [ColumnKind(int(k)).name.lower() for k in episode.column_kinds.tolist()]
    is_target = episode.target_mask.any(0).tolist()
    features = [k for k, t in zip(kinds, is_target) if not t]
    targets = [k for k, t in zip(kinds, is_target) if t]
    named = "named" if any(episode.column_names) else "unnamed"
    return (f"{episode.table_id}: {episode.n_rows} rows ({episode.n_support} support) x {len(features)} features "
            f"[{', '.join(f'{features.count(k)} {k}' for k in sorted(set(features)))}], targets {targets}, "
            f"missing {float(episode.missing.float().mean()):.1%}, {named}")


def write_samples(config: RunConfig, n: int, out_dir: str | Path, seed: int | None = None) -> SampleReport:
    """Write `n` prior tasks (seeded by `priors.seed`, or `seed`) as CSV files and a one-page PNG into `out_dir`."""
    from basisfm.priors.sampler import PriorSampler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampler = PriorSampler(config.priors, seed=seed, text_dim=config.model.text_dim)
    episodes = sampler.sample(n)
    report = SampleReport(out_dir=out, rejections=sampler.stats.as_dict())
    for i, episode in enumerate(episodes):
        path = out / f"task_{i:03d}.csv"
        episode_frame(episode).to_csv(path, index=False)
        report.csv_files.append(path)
        report.lines.append(f"{path.name}: {describe(episode)}")
    if episodes:
        report.png = plot_tasks(episodes[:_PLOTTED], out / "tasks.png")
    return report


def plot_tasks(episodes: list[TableBatch], path: Path) -> Path:
    """A grid of scatters: each task's first target against its strongest feature, support vs query rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(episodes))
    rows = math.ceil(len(episodes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(episodes):]:
        ax.axis("off")
    for ax, episode in zip(axes.flat, episodes):
        target = int(np.flatnonzero(episode.target_mask.any(0).cpu().numpy())[0])
        feature, r = strongest_feature(episode, target)
        y = _numeric(episode, target)
        x = _numeric(episode, feature) if feature >= 0 else np.zeros_like(y)
        support = episode.support.cpu().numpy()
        for rows_, label, colour in ((support, "support", "tab:blue"), (~support, "query", "tab:orange")):
            ax.scatter(x[rows_], y[rows_], s=6, alpha=0.6, label=label, color=colour)
        generator = episode.table_id.split("/")[-3]
        y_kind = ColumnKind(int(episode.column_kinds[target])).name.lower()
        x_kind = ColumnKind(int(episode.column_kinds[feature])).name.lower() if feature >= 0 else "-"
        ax.set_title(f"{generator} {episode.n_rows}x{episode.n_columns}  |r|={r:.2f}", fontsize=8)
        ax.set_xlabel(f"strongest feature ({x_kind})", fontsize=7)
        ax.set_ylabel(f"y ({y_kind})", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, loc="best")
    fig.suptitle("Prior tasks: first target against its most correlated feature (category ids as numbers)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
