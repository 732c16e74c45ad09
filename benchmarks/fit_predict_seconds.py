"""Fit and predict seconds on a 10,000-row table, for the estimators' strategies, with the test R² beside them.

The table is ggplot2/diamonds from the public suite (9 features: 3 categorical, 6 numeric; target price):
10,000 training rows and 2,000 test rows drawn with `--seed`. Timing a table is not training on it; nothing
here is kept. Rows (each a fresh estimator, one process, the machine's threads):
  - `per-row base-ft`: `BasisRegressor(checkpoint="per_row")`, the shipped per-row checkpoint fine-tuned on the
    table, row by row (`BasisClassifier`'s default);
  - `in-context inference`: `BasisRegressor(strategy="inference")`, the shipped in-context checkpoint (or
    `--icl-checkpoint DIR`) with the estimator's defaults: no gradient step, each test row reads `max_context`
    training rows in every member; by default (`retrieval=None`) on this many rows the training rows nearest to
    each chunk of queries (`estimators.strategies.in_context.retrieval_choice`), and with `retrieval=False` a
    random draw per member (the default before 2026-12-07); with `linear_feature=False` without ridge's
    prediction as a column (the default before 2026-12-08);
  - `in-context base-ft` (with `--icl-finetune`): episodic fine-tuning of that checkpoint, then in context
    (`BasisRegressor()`'s default with the shipped checkpoint).
Run with `python -m benchmarks.fit_predict_seconds [--icl-checkpoint runs/curriculum/stage4] [--icl-finetune]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks._report import commit, markdown_page, publish, pyplot, save_figure, timed_fit_predict

NAME = "fit_predict_seconds"
TASK = "ggplot2/diamonds"
ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "jobs" / "configs" / "suites" / "public_suite.yaml"


def shown(path: str) -> str:
    """A path as the page prints it: relative to the repository when inside it (no machine's directories)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def load_rows(n_train: int, n_test: int, seed: int):
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import select_tasks
    from basisfm.evaluation.splits import rows_with_usable_target

    (task,) = select_tasks(load_suite(SUITE), [TASK.split("/")[-1]])
    frame = rows_with_usable_target(load_task_frame(task), task.target, table=TASK)
    order = np.random.default_rng(seed).permutation(len(frame))
    train, test = frame.iloc[order[:n_train]], frame.iloc[order[n_train:n_train + n_test]]
    return train.drop(columns=[task.target]), train[task.target], test.drop(columns=[task.target]), test[task.target]


def time_one(label: str, make, x_train, y_train, x_test, y_test) -> dict:
    from sklearn.metrics import r2_score

    model = make()
    predicted, fit_s, predict_s = timed_fit_predict(model, x_train, y_train, x_test)
    steps = getattr(model.history_, "steps", 0)
    row = {"model": label, "fit_s": fit_s, "predict_s": predict_s, "steps": steps,
           "predict_rows_per_s": len(x_test) / predict_s, "r2": float(r2_score(y_test, predicted))}
    print(f"{label}: fit {fit_s:.1f} s ({steps} steps), predict {predict_s:.1f} s, test R2 {row['r2']:.3f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000, help="training rows (default 10,000)")
    p.add_argument("--test-rows", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--icl-checkpoint", metavar="DIR",
                   help="the in-context checkpoint (basis_icl or tab2d) to time (default: the shipped in-context one)")
    p.add_argument("--icl-finetune", action="store_true", help="also time episodic fine-tuning of --icl-checkpoint")
    p.add_argument("--in-context-only", action="store_true", help="skip the per-row checkpoint's fine-tuning (minutes)")
    p.add_argument("--max-context", type=int, default=512)
    p.add_argument("--max-steps", type=int, help="cap the fine-tuning steps (default: the estimator's budget for the table)")
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)

    from basisfm.estimators import BasisRegressor

    x_train, y_train, x_test, y_test = load_rows(args.rows, args.test_rows, args.seed)
    common = dict(progress=False, random_state=args.seed)
    steps = dict(max_steps=args.max_steps)
    from basisfm.model.checkpoint import read_model_config
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR, PER_ROW_NAME, shipped_checkpoint

    per_row = read_model_config(shipped_checkpoint(PER_ROW_NAME)).architecture
    icl_checkpoint = args.icl_checkpoint or str(IN_CONTEXT_CHECKPOINT_DIR)
    icl = dict(checkpoint=icl_checkpoint, max_context=args.max_context, **common)
    runs = [] if args.in_context_only else [
        (f"per-row checkpoint, base-ft ({per_row})", lambda: BasisRegressor(checkpoint=PER_ROW_NAME, **steps, **common))]
    runs += [("in-context, inference (default)", lambda: BasisRegressor(strategy="inference", **icl)),
             ("in-context, inference, linear_feature=False", lambda: BasisRegressor(strategy="inference", linear_feature=False, **icl)),
             ("in-context, inference, retrieval=False", lambda: BasisRegressor(strategy="inference", retrieval=False, **icl))]
    if args.icl_finetune:
        runs += [("in-context, base-ft (episodic)", lambda: BasisRegressor(strategy="base-ft", **steps, **icl))]
    load_before = os.getloadavg()[0]
    rows = [time_one(label, make, x_train, y_train, x_test, y_test) for label, make in runs]
    load_after = os.getloadavg()[0]

    lines = [f"# Fit and predict seconds: {args.rows:,} training rows of {TASK}, {args.test_rows:,} test rows", "",
             "| estimator | fit s | optimizer steps | predict s | predicted rows/s | test R2 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['fit_s']:.1f} | {r['steps']} | {r['predict_s']:.1f} | {r['predict_rows_per_s']:,.0f} | "
              f"{r['r2']:.3f} |" for r in rows]
    lines += ["", "Fit includes preprocessing, loading the checkpoint and embedding the text cells (cached after the first "
              "run in a process); an in-context `inference` fit stores the rows and chooses the features to read (`features_read_`), the rest is at predict."]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} thread(s)"
    context = {
        "command": "python -m benchmarks.fit_predict_seconds " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}; "
                   f"load average {load_before:.1f} before, {load_after:.1f} after",
        "in-context checkpoint": shown(icl_checkpoint),
        "commit": commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(rows)))
        labels = [r["model"] for r in rows]
        ax.barh(labels, [r["fit_s"] for r in rows], label="fit")
        ax.barh(labels, [r["predict_s"] for r in rows], left=[r["fit_s"] for r in rows], label="predict")
        ax.set_xlabel(f"seconds ({args.rows:,} training rows, {args.test_rows:,} predicted)")
        ax.invert_yaxis()
        ax.legend()
        return save_figure(fig, path)

    publish(NAME, markdown_page(lines, context), render, out_dir=args.out_dir, log=not args.no_mlflow,
            params={"rows": args.rows, "test_rows": args.test_rows, "seed": args.seed, "icl_checkpoint": icl_checkpoint,
                    "max_steps": args.max_steps},
            metrics={f"{k}_{i}": r[k] for i, r in enumerate(rows) for k in ("fit_s", "predict_s", "r2")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
