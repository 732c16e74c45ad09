"""Prior learnability: is the prior neither trivial nor noise? Ridge and RandomForest on 200 held-out prior tasks.

The tasks come from the default `PriorConfig` with a seed no training stream uses (training streams derive
theirs from `priors.seed`, the worker's rank and its start step). Each task's first target is predicted from
its features: fitted on the support rows, scored on the query rows, R² for regression and accuracy for
classification (with the majority-class accuracy beside it). `--checkpoint DIR` also scores an in-context
model through the public estimator API: `BasisRegressor` / `BasisClassifier(checkpoint=DIR, strategy="inference")`.
Run with `python -m benchmarks.prior_learnability`.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from basisfm.config import PriorConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.priors import PriorSampler
from basisfm.priors.show import episode_frame

from benchmarks._report import publish, pyplot, save_figure

RESULTS_DIR = Path(__file__).parent / "results"
NAME = "prior_learnability"
HELD_OUT_SEED = 20_261_130  # no training stream draws this seed (they are hashes of priors.seed, rank and step)


@dataclass
class TaskScore:
    table_id: str
    generator: str
    kind: str  # regression / classification
    rows: int
    features: int
    scores: dict[str, float] = field(default_factory=dict)  # model -> R² or accuracy


def split_task(episode: TableBatch) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series, str]:
    """(X_support, y_support, X_query, y_query, kind) for the episode's first target."""
    frame = episode_frame(episode)
    support = frame.pop("split").to_numpy() == "support"
    targets = [c for c in frame.columns if c.startswith("y")]
    y = frame[targets[0]]
    x = frame.drop(columns=targets)
    first = int(np.flatnonzero(episode.target_mask.any(0).cpu().numpy())[0])
    kind = "classification" if episode.column_kinds[first] == ColumnKind.CATEGORICAL else "regression"
    return x[support], y[support], x[~support], y[~support], kind


def _baselines(kind: str, x_train: pd.DataFrame, seed: int) -> dict:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    categorical = [c for c in x_train.columns if x_train[c].dtype == object]
    numeric = [c for c in x_train.columns if c not in categorical]
    impute = SimpleImputer(strategy="constant", fill_value="missing")
    linear_inputs = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), numeric),
        ("cat", make_pipeline(impute, OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    tree_inputs = ColumnTransformer([
        ("num", SimpleImputer(strategy="median", keep_empty_features=True), numeric),
        ("cat", make_pipeline(impute, OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)), categorical),
    ])
    if kind == "regression":
        return {"ridge": make_pipeline(linear_inputs, Ridge(alpha=1.0)),
                "random_forest": make_pipeline(tree_inputs, RandomForestRegressor(100, random_state=seed, n_jobs=1))}
    return {"ridge": make_pipeline(linear_inputs, RidgeClassifier(alpha=1.0)),
            "random_forest": make_pipeline(tree_inputs, RandomForestClassifier(100, random_state=seed, n_jobs=1))}


def score_task(episode: TableBatch, checkpoint: str | None, seed: int) -> TaskScore:
    from sklearn.metrics import accuracy_score, r2_score

    x_train, y_train, x_test, y_test, kind = split_task(episode)
    result = TaskScore(episode.table_id, episode.table_id.split("/")[-3], kind, episode.n_rows, x_train.shape[1])
    metric = r2_score if kind == "regression" else accuracy_score
    if kind == "classification":
        result.scores["majority"] = float((y_test == y_train.mode().iloc[0]).mean())
    models = _baselines(kind, x_train, seed)
    if checkpoint is not None:
        from basisfm.estimators import BasisClassifier, BasisRegressor

        estimator = BasisRegressor if kind == "regression" else BasisClassifier
        models["in_context"] = estimator(checkpoint=checkpoint, strategy="inference")
    for name, model in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_train, y_train)
            result.scores[name] = float(metric(y_test, model.predict(x_test)))
    return result


def summarise(scores: list[TaskScore]) -> list[dict]:
    rows = []
    for kind in ("regression", "classification"):
        for generator in ("all", "mlp", "tree"):
            group = [s for s in scores if s.kind == kind and generator in ("all", s.generator)]
            if not group:
                continue
            for model in group[0].scores:
                values = np.asarray([s.scores[model] for s in group])
                # One wild extrapolation (R² of -1000 on a heavy-tailed query row) would swamp a plain mean.
                clipped = np.clip(values, -1.0, None) if kind == "regression" else values
                rows.append({"kind": kind, "generator": generator, "model": model, "tasks": len(group),
                             "median": float(np.median(values)), "mean": float(clipped.mean()),
                             "p10": float(np.quantile(values, 0.1)), "p90": float(np.quantile(values, 0.9))})
    return rows


def render_markdown(summary: list[dict], scores: list[TaskScore], context: dict[str, str]) -> str:
    reg = [s for s in scores if s.kind == "regression"]
    cls = [s for s in scores if s.kind == "classification"]
    lines = [
        "# Prior learnability: ridge and RandomForest on held-out prior tasks",
        "",
        "Each task's first target, fitted on its support rows and scored on its query rows: R² for regression, "
        "accuracy for classification (`majority`: always predicting the support rows' most frequent class); regression "
        "means clip each task's R² at -1. Tasks are "
        "those the prior accepted (its own screen rejects constant and unlearnable targets; counts below).",
        "",
        "| target | generator | model | tasks | median | mean | p10 | p90 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary:
        lines.append(f"| {r['kind']} | {r['generator']} | {r['model']} | {r['tasks']} | {r['median']:.3f} | {r['mean']:.3f} | "
                     f"{r['p10']:.3f} | {r['p90']:.3f} |")
    if reg:
        rf = np.asarray([s.scores["random_forest"] for s in reg])
        best = np.asarray([max(s.scores["ridge"], s.scores["random_forest"]) for s in reg])
        lines += ["", f"- regression tasks where the better of ridge / RandomForest reaches R² > 0.9 (near-trivial): "
                      f"{(best > 0.9).mean():.0%}; below 0 (noise to both): {(best < 0).mean():.0%}; RandomForest beats "
                      f"ridge on {np.mean([s.scores['random_forest'] > s.scores['ridge'] for s in reg]):.0%} "
                      f"(median RF R² {np.median(rf):.3f})"]
    if cls:
        lift = np.asarray([max(s.scores["ridge"], s.scores["random_forest"]) - s.scores["majority"] for s in cls])
        lines += [f"- classification tasks where the better model beats the majority class: {(lift > 0).mean():.0%} "
                  f"(median lift {np.median(lift):+.3f})"]
    lines.append("")
    lines += [f"- {key}: {value}" for key, value in context.items()]
    return "\n".join(lines) + "\n"


def render_png(scores: list[TaskScore], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind, label in ((axes[0], "regression", "held-out R² (clipped at -1)"), (axes[1], "classification", "held-out accuracy")):
        group = [s for s in scores if s.kind == kind]
        if not group:
            ax.axis("off")
            continue
        for model in group[0].scores:
            values = np.clip([s.scores[model] for s in group], -1, 1)
            ax.hist(values, bins=20, range=(-1 if kind == "regression" else 0, 1), histtype="step", linewidth=1.5, label=model)
        ax.set_xlabel(label)
        ax.set_ylabel("tasks")
        ax.set_title(f"{kind} ({len(group)} tasks)", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Learnability of held-out prior tasks", fontsize=11)
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> list[TaskScore]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="held-out prior tasks (default 200)")
    parser.add_argument("--checkpoint", metavar="DIR", help="also score an in-context model (strategy='inference')")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="prior seed of the held-out tasks")
    parser.add_argument("--out", default=str(RESULTS_DIR), metavar="DIR", help="where the .md and .png go")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = PriorConfig()
    started = time.perf_counter()
    sampler = PriorSampler(config, seed=args.seed)
    episodes = sampler.sample(args.tasks)
    scores = []
    for i, episode in enumerate(episodes):
        scores.append(score_task(episode, args.checkpoint, seed=i))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(episodes)} tasks scored ({time.perf_counter() - started:.0f}s)")
    summary = summarise(scores)
    counts = sampler.stats
    context = {
        "tasks": f"{len(scores)} accepted of {counts.generated} generated (rejected: {counts.constant_target} constant target, "
                 f"{counts.unlearnable} unlearnable, {counts.non_finite} non-finite; screen threshold "
                 f"min_learnability={config.min_learnability})",
        "prior": f"default PriorConfig ({config.min_rows}-{config.max_rows} rows, {config.min_features}-{config.max_features} "
                 f"features, mlp:tree = {config.mlp_weight}:{config.tree_weight}), seed {args.seed}",
        "models": "sklearn Ridge(alpha=1) / RidgeClassifier on standardised numerics + one-hot categories; "
                  "RandomForest (100 trees) on median-imputed numerics + ordinal categories"
                  + (f"; in-context: checkpoint {args.checkpoint}" if args.checkpoint else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load average "
                   f"{os.getloadavg()[0]:.1f} at the end (other jobs share the machine)",
        "wall time": f"{time.perf_counter() - started:.0f}s",
        "command": "python -m benchmarks.prior_learnability" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""),
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    metrics = {f"{r['kind']}_{r['generator']}_{r['model']}_median": r["median"] for r in summary}
    publish(NAME, render_markdown(summary, scores, context), lambda path: render_png(scores, path),
            params={"tasks": len(scores), "seed": args.seed, "checkpoint": args.checkpoint}, metrics=metrics,
            out_dir=args.out, log=not args.no_mlflow)
    return scores


if __name__ == "__main__":
    main()
