"""The leaderboard: per-split scores of every model on every task, aggregated as the suite prescribes.

Suite score = median over tasks of the mean score over splits. Seconds are means over the
(task, split) runs a model completed. A run that failed counts as missing, never as a number.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from basisfm.corpus.manifest import atomic_write_text


@dataclass
class ScoreRecord:
    """One model on one split of one task."""

    task: str
    split: int
    model: str
    score: float  # NaN when the run failed
    fit_seconds: float
    predict_seconds: float
    n_train: int
    n_test: int
    error: str | None = None


@dataclass
class Leaderboard:
    suite: str
    metric: str
    records: list[ScoreRecord] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.records))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.records))

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.records])

    def task_scores(self) -> pd.DataFrame:
        """Mean score over splits, one row per task and one column per model (NaN: failed or not run)."""
        frame = self._frame()
        if frame.empty:
            return pd.DataFrame()
        table = frame.pivot_table(index="task", columns="model", values="score", aggfunc="mean", dropna=False)
        return table.reindex(index=self.tasks, columns=self.models)

    def summary(self) -> pd.DataFrame:
        """One row per model: suite score (median over tasks), tasks scored, mean fit / predict seconds."""
        frame = self._frame()
        per_task = self.task_scores()
        rows = []
        for model in self.models:
            mine = frame[frame.model == model]
            ok = mine[mine.error.isna()]
            scores = per_task[model].dropna()
            rows.append({
                "model": model,
                f"median {self.metric}": float(scores.median()) if len(scores) else math.nan,
                "tasks": f"{len(scores)}/{len(per_task)}",
                "fit s": float(ok.fit_seconds.mean()) if len(ok) else math.nan,
                "predict s": float(ok.predict_seconds.mean()) if len(ok) else math.nan,
                "failed runs": int(mine.error.notna().sum()),
            })
        summary = pd.DataFrame(rows)
        higher_is_better = self.metric in ("r2", "accuracy")
        return summary.sort_values(f"median {self.metric}", ascending=not higher_is_better, na_position="last").reset_index(drop=True)

    def to_markdown(self) -> str:
        summary = self.summary()
        per_task = self.task_scores()
        frame = self._frame()
        lines = [f"## {self.suite}: median {self.metric} over tasks (mean over splits per task)", ""]
        lines += _markdown_table(summary)
        lines += ["", f"### Per task ({self.metric}, mean ± std over splits)", ""]
        if not per_task.empty:
            cells = []
            for task in per_task.index:
                row = {"task": task}
                for model in per_task.columns:
                    scores = frame[(frame.task == task) & (frame.model == model)].score
                    row[model] = _mean_std(scores)
                cells.append(row)
            lines += _markdown_table(pd.DataFrame(cells))
        failures = frame[frame.error.notna()] if not frame.empty else frame
        if len(failures):
            lines += ["", "### Failed runs", ""]
            lines += [f"- {r.model} on {r.task} split {r.split}: {r.error}" for r in failures.itertuples()]
        return "\n".join(lines) + "\n"

    def save_png(self, path: str | Path) -> Path:
        """Grouped bars of per-task scores; R² below -1 is drawn at -1 (the markdown has the true value)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        per_task = self.task_scores()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n_tasks, n_models = max(len(per_task), 1), max(len(per_task.columns), 1)
        fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * n_tasks + 3.5), 4.5))
        width = 0.8 / n_models
        x = np.arange(n_tasks)
        floor = -1.0 if self.metric == "r2" else None
        for i, model in enumerate(per_task.columns):
            values = per_task[model].to_numpy(dtype=float)
            if floor is not None:
                values = np.maximum(values, floor)
            ax.bar(x + (i - (n_models - 1) / 2) * width, values, width, label=model)
        ax.set_xticks(x)
        ax.set_xticklabels([t.split("/")[-1] for t in per_task.index], rotation=30, ha="right")
        ax.set_ylabel(self.metric + (" (floored at -1)" if floor is not None else ""))
        ax.set_title(f"{self.suite}: per-task {self.metric}")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never hides a bar
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def to_json(self) -> str:
        records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(r).items()}
                   for r in self.records]
        return json.dumps({"suite": self.suite, "metric": self.metric, "records": records}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Leaderboard":
        raw = json.loads(text)
        records = [ScoreRecord(**{**r, "score": math.nan if r["score"] is None else r["score"]}) for r in raw["records"]]
        return cls(suite=raw["suite"], metric=raw["metric"], records=records)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write leaderboard.md, leaderboard.png and scores.json under `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "leaderboard.md", "png": out / "leaderboard.png", "scores": out / "scores.json"}
        atomic_write_text(paths["markdown"], self.to_markdown())
        atomic_write_text(paths["scores"], self.to_json())
        self.save_png(paths["png"])
        return paths


def _mean_std(scores: pd.Series) -> str:
    """A task's cell: "-" where the model was not run on it (a merged leaderboard of partial runs), "failed"
    where every run failed, else the mean ± std over the splits that finished."""
    if len(scores) == 0:
        return "-"
    values = scores.dropna().to_numpy(dtype=float)
    if len(values) == 0:
        return "failed"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    def fmt(v) -> str:
        if isinstance(v, float):
            return "n/a" if not math.isfinite(v) else f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
        return str(v)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return [header, rule, *body]
