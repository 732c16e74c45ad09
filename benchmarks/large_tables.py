"""In context on the suites' large tables: retrieval, context size and members, R² and seconds beside CatBoost.

The tables: every table of the public suite, the regression screen and the classification screen with at least
`--min-train-rows` (5,000) training rows in the protocol's split (found from the suite files, not listed here).
On each, one split (`--split`, seed 0) and up to `--queries` of its test rows (a fixed random subset): the shipped
in-context checkpoint (`strategy="inference"`) is fitted once with the estimator's defaults (features chosen,
training rows prepared), then predicts the same queries under each reading below (prediction-time parameters:
`max_context`, `retrieval`, `n_estimators`), timed one after another in one process; CatBoost (the suites' baseline,
`basisfm.evaluation.baselines`) is fitted and scored on the same rows.

    python -m benchmarks.large_tables --quick --out /tmp/large     # 300 queries, 3 readings: under 10 minutes
    python -m benchmarks.large_tables                              # 1,000 queries, every reading below

Seconds are predict seconds at the machine's torch threads, read as ratios to the first reading's (the
estimator's default before retrieval: a random draw of 512 rows per member, 4 members).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "large_tables"
ROOT = Path(__file__).resolve().parents[1]
SUITES = {name: ROOT / "jobs" / "configs" / "suites" / f"{name}.yaml"
          for name in ("public_suite", "regression_screen", "classification_screen")}
# (label, prediction-time parameters): the first is what every other reading's seconds are divided by.
READINGS = [
    ("random 512 x4", dict(max_context=512, retrieval=False, n_estimators=4)),
    ("retrieval 512 x4", dict(max_context=512, retrieval=True, n_estimators=4)),
    ("random 1024 x4", dict(max_context=1024, retrieval=False, n_estimators=4)),
    ("retrieval 1024 x4", dict(max_context=1024, retrieval=True, n_estimators=4)),
    ("random 2048 x2", dict(max_context=2048, retrieval=False, n_estimators=2)),
    ("retrieval 512 x2", dict(max_context=512, retrieval=True, n_estimators=2)),
    ("retrieval 512 x8", dict(max_context=512, retrieval=True, n_estimators=8)),
]
QUICK_READINGS = ("random 512 x4", "retrieval 512 x4", "random 1024 x4")


def large_tasks(min_train_rows: int, split: int):
    """[(suite name, task, metric, x_train, y_train, x_test, y_test)] for every suite table whose split has at least
    `min_train_rows` training rows."""
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import protocol_of, task_id
    from basisfm.evaluation.splits import make_split, rows_with_usable_target

    found = []
    for suite_name, path in SUITES.items():
        suite = load_suite(path)
        protocol = protocol_of(suite)
        for task in suite.tasks:
            frame = rows_with_usable_target(load_task_frame(task), task.target, table=task_id(task))
            rows = make_split(len(frame), split, protocol)
            if len(rows.train_rows) < min_train_rows:
                continue
            x, y = frame.drop(columns=[task.target]), frame[task.target]
            found.append((suite_name, task_id(task), protocol.metric, x.iloc[rows.train_rows], y.iloc[rows.train_rows],
                          x.iloc[rows.test_rows], y.iloc[rows.test_rows]))
    return found


def measure_task(task, readings, n_queries: int, seed: int) -> list[dict]:
    """One row per reading (and CatBoost) for one table: its score on the chosen queries and its seconds."""
    from basisfm.estimators import BasisClassifier, BasisRegressor
    from basisfm.evaluation.baselines import Baseline
    from basisfm.evaluation.protocol import score

    suite_name, tid, metric, x_train, y_train, x_test, y_test = task
    pick = np.sort(np.random.default_rng(seed).permutation(len(x_test))[:n_queries])
    x_query, y_query = x_test.iloc[pick], np.asarray(y_test.iloc[pick])
    classify = metric == "accuracy"
    kind = BasisClassifier if classify else BasisRegressor
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        model = kind(strategy="inference", progress=False, random_state=seed, retrieval=False).fit(x_train, y_train)
        fit_s = time.perf_counter() - began
        for label, params in readings:
            model.set_params(**params)
            began = time.perf_counter()
            predicted = model.predict(x_query)
            seconds = time.perf_counter() - began
            rows.append(dict(suite=suite_name, task=tid, metric=metric, reading=label, score=score(metric, y_query, predicted),
                             predict_s=seconds, fit_s=fit_s, n_train=len(x_train), n_query=len(pick)))
            print(f"{tid} {label}: {metric} {rows[-1]['score']:.4f}, predict {seconds:.1f} s", flush=True)
        began = time.perf_counter()
        baseline = Baseline("catboost", task="classification" if classify else "regression", seed=seed).fit(x_train, y_train)
        fit_s = time.perf_counter() - began
        began = time.perf_counter()
        predicted = baseline.predict(x_query)
        seconds = time.perf_counter() - began
    rows.append(dict(suite=suite_name, task=tid, metric=metric, reading="catboost", score=score(metric, y_query, predicted),
                     predict_s=seconds, fit_s=fit_s, n_train=len(x_train), n_query=len(pick)))
    print(f"{tid} catboost: {metric} {rows[-1]['score']:.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="300 queries and three readings: under 10 minutes")
    p.add_argument("--queries", type=int, help="test rows predicted per table (default 1,000; --quick 300)")
    p.add_argument("--min-train-rows", type=int, default=5_000)
    p.add_argument("--split", type=int, default=0, help="the protocol's split seed")
    p.add_argument("--tasks", nargs="+", help="only these tables (by name, e.g. diamonds)")
    p.add_argument("--readings", nargs="+", metavar="LABEL", help=f"only these readings, from {[label for label, _ in READINGS]}")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    n_queries = args.queries or (300 if args.quick else 1_000)
    readings = [r for r in READINGS if r[0] in QUICK_READINGS] if args.quick else READINGS
    if args.readings:
        unknown = sorted(set(args.readings) - {label for label, _ in READINGS})
        if unknown:
            p.error(f"unknown readings {unknown}; choose from {[label for label, _ in READINGS]}")
        readings = [r for r in READINGS if r[0] in args.readings]

    tasks = large_tasks(args.min_train_rows, args.split)
    if args.tasks:
        tasks = [t for t in tasks if t[1].split("/")[-1] in args.tasks or t[1] in args.tasks]
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    rows = [row for task in tasks for row in measure_task(task, readings, n_queries, args.split)]
    wall = time.perf_counter() - began
    load_after = os.getloadavg()[0]

    labels = [label for label, _ in readings]
    by = {(r["task"], r["reading"]): r for r in rows}
    task_ids = list(dict.fromkeys(r["task"] for r in rows))
    lines = [f"# In context on the suites' tables with {args.min_train_rows:,}+ training rows: retrieval, context, members", "",
             f"Score on {n_queries:,} test rows of split {args.split} (R², accuracy for the classification screen); "
             f"in brackets each reading's predict seconds over `{labels[0]}`'s, the same fitted estimator.", "",
             "| table | training rows | " + " | ".join(labels) + " | catboost |",
             "| --- | ---: | " + " | ".join("---:" for _ in labels) + " | ---: |"]
    for tid in task_ids:
        first = by[(tid, labels[0])]
        cells = [f"{by[(tid, label)]['score']:.3f} ({by[(tid, label)]['predict_s'] / first['predict_s']:.2f}x)" for label in labels]
        lines.append(f"| {tid} | {first['n_train']:,} | " + " | ".join(cells) + f" | {by[(tid, 'catboost')]['score']:.3f} |")
    lines += ["", f"`{labels[0]}` predict seconds per table: "
              + ", ".join(f"{tid.split('/')[-1]} {by[(tid, labels[0])]['predict_s']:.1f}" for tid in task_ids)
              + f"; fit (features chosen, rows prepared) " + ", ".join(f"{by[(tid, labels[0])]['fit_s']:.1f}" for tid in task_ids) + "."]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    context = page_context("large_tables", argv, machine=f"{device}; load average {load_before:.1f} before, "
                                                        f"{load_after:.1f} after; {wall / 60:.1f} minutes in all")

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.45 * len(task_ids) * (len(labels) + 1) / 3))
        height = 0.8 / len(labels)
        for i, label in enumerate(labels):
            gaps = [by[(tid, label)]["score"] - by[(tid, "catboost")]["score"] for tid in task_ids]
            ax.barh(np.arange(len(task_ids)) + i * height, gaps, height=height, label=label)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.axvline(-0.02, color="grey", linestyle=":", linewidth=0.8)
        ax.set_yticks(np.arange(len(task_ids)) + 0.4 - height / 2, [t.split("/")[-1] for t in task_ids])
        ax.invert_yaxis()
        ax.set_xlabel("score minus CatBoost's (dotted: the goal's -0.02)")
        ax.legend(fontsize=7)
        return save_figure(fig, path)

    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"queries": n_queries, "split": args.split, "min_train_rows": args.min_train_rows,
                    "readings": ",".join(labels), "tasks": ",".join(task_ids)},
            metrics={f"{r['task'].split('/')[-1]}.{r['reading'].replace(' ', '_')}.{k}": r[k]
                     for r in rows for k in ("score", "predict_s")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
