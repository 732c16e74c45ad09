"""Missing values in context (research question 2): which way of handling a missing cell predicts best when 10, 30
or 60% of the feature cells of the training and test rows are removed MCAR, MAR or MNAR, beside CatBoost.

Arms, every one `BasisRegressor(strategy="inference")` reading the training rows in context, except CatBoost:
  - shipped: the shipped in-context checkpoint, which was pretrained with the `learnable` [MISSING] token;
  - learnable / type_aware / attention_mask, continued: that checkpoint with its missing strategy swapped
    (`benchmarks._missing_values_arms`: the new tokens start at the learned one) and pretrained on the prior the same
    50 steps, every task with missing cells (`jobs.pretrain` commands on the page); `learnable, continued` is the
    control for the other two;
  - mean / diffusion imputation: the shipped checkpoint reading numeric cells filled before it reads them
    (`missing_imputation`, `basisfm.encoding.imputation`);
  - CatBoost at its defaults, one thread, reading NaN natively.
Cells are removed by `basisfm.encoding.missingness.remove_cells` from every feature column of the training and the
test rows (separately seeded); the target is never touched. The score is test R² on the suite's split 0.

    python -m benchmarks.missing_values            # the full run (about 40 CPU-minutes at one thread)
    python -m benchmarks.missing_values --quick    # two tables, 30% MCAR and MNAR: a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, commit, markdown_page, publish, pyplot, save_figure

NAME = "missing_values"
ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "jobs" / "configs" / "suites"
# Small tables whose in-context fit and predict take seconds, each suite numeric-only and mixed ones.
TABLES = [("public_suite.yaml", "concrete"), ("public_suite.yaml", "Boston"), ("public_suite.yaml", "Carseats"),
          ("regression_screen.yaml", "Hitters"), ("regression_screen.yaml", "Auto"), ("regression_screen.yaml", "Housing")]
QUICK_TABLES = [("public_suite.yaml", "Boston"), ("regression_screen.yaml", "Hitters")]
RATES = (0.1, 0.3, 0.6)
MECHANISMS = ("mcar", "mar", "mnar")
CONTINUED = ("learnable", "type_aware", "attention_mask")
IMPUTED = ("mean", "diffusion")
SPLIT = 0
LEVEL = 0.005  # arms whose mean R² over the missing conditions is this close to the best are called level with it


# What the page says about how the arms were made and read (the numbers are the run's).
PROTOCOL = [
    "Scored by `python -m benchmarks.missing_values` (the runs behind this page are listed under the tables). "
    "Protocol. A missing-value strategy other than `learnable` must be learned before it can be compared, and the "
    "shipped in-context checkpoint learned `learnable`. So every strategy arm is the shipped checkpoint with its "
    "strategy swapped (`benchmarks/_missing_values_arms.py`: the new per-kind tokens start at the learned "
    "[MISSING] token, so at step 0 `type_aware` predicts exactly as the control; `attention_mask` has no token and "
    "leaves missing cells out of attention) and then pretrained on the prior the same 50 steps of 8 tasks (400 "
    "tasks), seed 7, lr 1.3e-4 (where the shipped run's schedule ended) on a 50-step cosine, every task with "
    "missing cells (`priors.missing_task_fraction=1.0`, rates up to 60%, half of them MNAR), one thread:",
    "",
    "    python -m jobs.pretrain --config jobs/configs/icl/stage7.yaml --launcher local \\",
    "      --set train.init_from=runs/missing-arms/STRATEGY-init --set train.grow_layers=null --set train.steps=50 \\",
    "      --set train.schedule_steps=50 --set train.warmup_steps=5 --set train.lr=1.3e-4 \\",
    "      --set priors.missing_task_fraction=1.0 --set priors.max_missing_rate=0.6 \\",
    "      --set train.validate_every=1000 --set train.checkpoint_every=1000 \\",
    "      --set train.storage_path=runs/missing-pretrain --set tracking.local_dir=runs/missing-pretrain/track \\",
    "      --run-name missing-STRATEGY",
    "",
    "`learnable, continued` is the control: it had the same 50 steps. `per_column` (a token per hashed column name) "
    "was not continued: on the prior a column's name is a meaningless bank index (`priors.banks.name_string`), so its "
    "tokens could learn nothing about a real table's names; that needs pretraining on real tables (corpus "
    "episodes), beyond this budget. The imputation arms use the shipped checkpoint as it is, reading filled numeric "
    "cells (`missing_imputation`; categorical cells stay missing for its token). The diffusion imputer is fitted "
    "per table, on its training rows' observed cells (about 3 s a fit here), not once on the corpus as the issue "
    "sketched: a denoiser that reads one row cannot know which column of a new table is which, so across tables it "
    "could learn only the shrinkage to the mean that mean imputation already gives. Every Basis arm predicts with "
    "`strategy=\"inference\"`, one member (`n_estimators=1`) and `feature_selection=\"relevance\"` (the "
    "default is 4 members with validated features: 4-10 times the cost), so the 420 runs fit the 40 CPU-minute "
    "budget; fine-tuned arms were not run (a fine-tune costs minutes per table: 60 conditions x 6 tables is "
    "hours).",
]


@dataclass
class Score:
    table: str
    suite: str
    arm: str
    rate: float
    mechanism: str
    r2: float
    seconds: float
    error: str | None = None
    split: int = 0


def arms(arms_dir: Path) -> dict[str, dict]:
    """arm name -> estimator parameters (None for CatBoost); continued arms only where their checkpoint exists."""
    chosen: dict[str, dict | None] = {"shipped (learnable)": {"checkpoint": "in_context"}}
    for strategy in CONTINUED:
        model = arms_dir / f"missing-{strategy}" / "model"
        if (model / "model.safetensors").is_file():
            chosen[f"{strategy}, continued"] = {"checkpoint": str(model)}
        else:
            print(f"[{NAME}] no {model}: arm '{strategy}, continued' left out", flush=True)
    for kind in IMPUTED:
        chosen[f"{kind} imputation"] = {"checkpoint": "in_context", "missing_imputation": kind}
    chosen["catboost"] = None
    return chosen


def continued_prior_ratios(arms_dir: Path) -> dict[str, float]:
    """Each continued arm's last `val_prior_ratio`, from its training run's metrics (absent runs left out)."""
    from basisfm.tracking.run_directory import read_metrics

    ratios = {}
    for strategy in CONTINUED:
        values = [value for name, value, _ in read_metrics(arms_dir / f"missing-{strategy}") if name == "val_prior_ratio"]
        if values:
            ratios[strategy] = values[-1]
    return ratios


def token_drift(arms_dir: Path) -> dict[str, float]:
    """How far each continued token arm's [MISSING] token(s) moved from the shipped learned token in its 50 steps:
    the largest distance over its tokens, relative to the learned token's norm."""
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained.checkpoints import resolve_checkpoint

    learned = load_pretrained(resolve_checkpoint("in_context")).state_dict()["missing.token"]
    drift = {}
    for strategy in ("learnable", "type_aware"):
        model = arms_dir / f"missing-{strategy}" / "model"
        if (model / "model.safetensors").is_file():
            state = load_pretrained(model).state_dict()
            tokens = state["missing.token"].unsqueeze(0) if strategy == "learnable" else state["missing.tokens.weight"]
            drift[strategy] = float((tokens - learned).norm(dim=-1).max() / learned.norm())
    return drift


def conditions(quick: bool) -> list[tuple[float, str]]:
    if quick:
        return [(0.0, "none"), (0.3, "mcar"), (0.3, "mnar")]
    return [(0.0, "none"), *((rate, mechanism) for mechanism in MECHANISMS for rate in RATES)]


def run(args) -> list[Score]:
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import protocol_of, select_tasks
    from basisfm.evaluation.splits import make_split, rows_with_usable_target

    chosen = arms(Path(args.arms_dir))
    tables = QUICK_TABLES if args.quick else TABLES
    scores: list[Score] = []
    partial = Path(args.work_dir) / "scores.jsonl"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("")
    for suite_file, name in tables:
        suite = load_suite(SUITES / suite_file)
        task = select_tasks(suite, [name])[0]
        frame = rows_with_usable_target(load_task_frame(task), task.target, table=name)
        features, target = frame.drop(columns=[task.target]), frame[task.target]
        for split_seed in args.splits:
            split = make_split(len(frame), split_seed, protocol_of(suite))
            x_train, x_test = features.iloc[split.train_rows], features.iloc[split.test_rows]
            y_train, y_test = target.iloc[split.train_rows].to_numpy(), target.iloc[split.test_rows].to_numpy()
            scores += _score_split(args, chosen, name, suite_file, split_seed, x_train, y_train, x_test, y_test, partial)
    return scores


def _score_split(args, chosen, name, suite_file, split_seed, x_train, y_train, x_test, y_test, partial) -> list[Score]:
    from basisfm.encoding.missingness import remove_cells
    from basisfm.estimators import BasisRegressor
    from basisfm.evaluation.baselines import Baseline
    from basisfm.evaluation.protocol import score
    from basisfm.seeds import derive_seed

    scores = []
    for rate, mechanism in conditions(args.quick):
        if rate > 0:
            parts = (NAME, name, int(rate * 100), mechanism) + ((split_seed,) if split_seed else ())
            seed = derive_seed(*parts) % 2**31
            holey_train = remove_cells(x_train, rate, mechanism, seed=seed)
            holey_test = remove_cells(x_test, rate, mechanism, seed=seed + 1)
        else:
            holey_train, holey_test = x_train, x_test
        for arm, params in chosen.items():
            began = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an all-missing column dropped at 60% is expected here
                    if params is None:
                        model = Baseline("catboost", task="regression", seed=split_seed, n_jobs=1)
                    else:
                        model = BasisRegressor(strategy="inference", n_estimators=1, feature_selection="relevance",
                                               random_state=split_seed, progress=False, **params)
                    predicted = np.asarray(model.fit(holey_train, y_train).predict(holey_test), dtype=np.float64)
                value, error = score("r2", y_test, predicted), None
            except Exception as exc:  # noqa: BLE001 - a failed arm is a row of the table, not a dead run
                value, error = float("nan"), f"{type(exc).__name__}: {str(exc)[:200]}"
            result = Score(name, suite_file.removesuffix(".yaml"), arm, rate, mechanism, float(value),
                           time.perf_counter() - began, error, split_seed)
            scores.append(result)
            with partial.open("a") as f:
                f.write(json.dumps(asdict(result)) + "\n")
            print(f"[{NAME}] {name} split {split_seed} {mechanism} {rate:.0%} {arm}: R2 {value:.4f} ({result.seconds:.1f}s)"
                  + (f" FAILED {error}" if error else ""), flush=True)
    return scores


def median_r2(scores: list[Score], arm: str, rate: float, mechanism: str, suite: str | None = None) -> float:
    """The median over tables of each table's mean test R² over its splits (NaN when a run is missing or failed)."""
    per_table: dict[str, list[float]] = {}
    for s in scores:
        if s.arm == arm and s.rate == rate and s.mechanism == mechanism and (suite is None or s.suite == suite):
            per_table.setdefault(s.table, []).append(s.r2)
    values = [float(np.mean(v)) for v in per_table.values()]
    return float(np.median(values)) if values and np.isfinite(values).all() else float("nan")


def second_best(values: dict[str, float]) -> float:
    ordered = sorted(values.values(), reverse=True)
    return ordered[1] if len(ordered) > 1 else float("-inf")


def page(scores: list[Score], args, began: float) -> tuple[list[str], dict, dict]:
    arm_names = list(dict.fromkeys(s.arm for s in scores))
    conds = list(dict.fromkeys((s.rate, s.mechanism) for s in scores))
    tables = list(dict.fromkeys(s.table for s in scores))
    label = lambda rate, mech: "clean" if rate == 0 else f"{mech.upper()} {rate:.0%}"  # noqa: E731
    mean_missing = {arm: float(np.mean([median_r2(scores, arm, r, m) for r, m in conds if r > 0])) for arm in arm_names}
    best = max(mean_missing, key=mean_missing.get)
    shipped = "shipped (learnable)"
    headline = (f"mean over the {sum(r > 0 for r, _ in conds)} missing conditions of the median test R² over "
                f"{len(tables)} tables: " + ", ".join(f"{a} {mean_missing[a]:.3f}" for a in
                                                      sorted(arm_names, key=lambda a: -mean_missing[a]))
                + (f"; best {best}" if mean_missing[best] - second_best(mean_missing) >= LEVEL else
                   f"; {', '.join(a for a in arm_names if mean_missing[best] - mean_missing[a] < LEVEL)} within "
                   f"{LEVEL} of the best: level"))
    lines = ["# Missing values in context: tokens, masking, imputation and CatBoost with 10-60% of cells removed", "",
             f"Headline: {headline}", "", *PROTOCOL, "",
             f"Tables ({len(tables)}; splits {', '.join(map(str, sorted({s.split for s in scores})))} of each suite's "
             "protocol, each table's score the mean over them): "
             + ", ".join(f"{t} ({next(s.suite for s in scores if s.table == t)})" for t in tables)
             + ". Median test R² over the tables per arm and condition (cells removed from every feature column of "
               "train and test rows; `clean`: none removed):", "",
             "| arm | " + " | ".join(label(r, m) for r, m in conds) + " | mean of missing |",
             "| --- | " + " | ".join("---:" for _ in conds) + " | ---: |"]
    for arm in arm_names:
        lines.append(f"| {arm} | " + " | ".join(f"{median_r2(scores, arm, r, m):.3f}" for r, m in conds)
                     + f" | {mean_missing[arm]:.3f} |")
    lines += ["", "Per table, the mean test R² over the missing conditions (the clean score in brackets):", "",
              "| arm | " + " | ".join(tables) + " |", "| --- | " + " | ".join("---:" for _ in tables) + " |"]
    for arm in arm_names:
        cells = []
        for t in tables:
            held = [s.r2 for s in scores if s.arm == arm and s.table == t and s.rate > 0]
            clean = [s.r2 for s in scores if s.arm == arm and s.table == t and s.rate == 0]
            cells.append(f"{np.mean(held):.3f} ({np.mean(clean):.3f})" if held and clean else "n/a")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    ratios = continued_prior_ratios(Path(args.arms_dir))
    if ratios:
        lines += ["", "Held-out prior ratio after the 50 steps (model / context-mean squared error on the prior's 64 "
                  "validation tasks, lower is better; the runs' metrics.jsonl): "
                  + ", ".join(f"{arm} {value:.4f}" for arm, value in ratios.items())]
    drift = token_drift(Path(args.arms_dir))
    if drift:
        lines += ["", "How far the tokens moved in those steps (largest distance from the shipped learned token, relative "
                  "to its norm): " + ", ".join(f"{arm} {value:.2%}" for arm, value in drift.items())]
    failures = [s for s in scores if s.error]
    if failures:
        lines += ["", "Failed runs: " + "; ".join(f"{s.arm} on {s.table} {s.mechanism} {s.rate:.0%}: {s.error}" for s in failures)]
    seconds = {arm: float(np.mean([s.seconds for s in scores if s.arm == arm])) for arm in arm_names}
    lines += ["", "Seconds per fit + predict (mean over runs; the machine is shared, compare within the run): "
              + ", ".join(f"{a} {v:.1f}" for a, v in seconds.items()), ""]
    context = {
        "command": "python -m benchmarks.missing_values " + shlex.join(args.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "total minutes": (f"{(time.perf_counter() - began) / 60:.1f}" if not getattr(args, "from_scores", None) else
                          f"the page was written from {args.from_scores}, the scores of `python -m benchmarks.missing_values`"),
        "fit + predict minutes, summed over the runs": f"{sum(s.seconds for s in scores) / 60:.1f}",
        "continued arms": f"{Path(args.arms_dir).resolve()} (train runs, MLflow under track/)",
        "scores": f"{Path(args.work_dir).resolve() / 'scores.jsonl'}",
        "commit": commit(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    metrics = {f"{arm.split(' ')[0].rstrip(',')}_{'continued_' if 'continued' in arm else ''}mean_missing_r2": v
               for arm, v in mean_missing.items()}
    metrics[f"{shipped.split(' ')[0]}_clean_r2"] = median_r2(scores, shipped, 0.0, "none")
    return lines, context, metrics


def render(scores: list[Score], path: Path) -> Path:
    plt = pyplot()
    arm_names = list(dict.fromkeys(s.arm for s in scores))
    mechanisms = [m for m in MECHANISMS if any(s.mechanism == m for s in scores)]
    fig, axes = plt.subplots(1, len(mechanisms), figsize=(5 * len(mechanisms), 4), squeeze=False, sharey=True)
    for ax, mechanism in zip(axes[0], mechanisms):
        for i, arm in enumerate(arm_names):
            rates = [0.0, *sorted({s.rate for s in scores if s.mechanism == mechanism})]
            values = [median_r2(scores, arm, r, mechanism if r > 0 else "none") for r in rates]
            ax.plot([100 * r for r in rates], values, marker="o", color=f"C{i}", label=arm,
                    linestyle="--" if arm == "catboost" else "-")
        ax.set_title(mechanism.upper())
        ax.set_xlabel("% of feature cells removed (train and test rows)")
    axes[0][0].set_ylabel("median test R² over the tables")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two tables, 30%% MCAR and MNAR only: a few minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--arms-dir", default="runs/missing-pretrain",
                   help="the continued arms' training runs (<dir>/missing-<strategy>/model); absent ones are left out")
    p.add_argument("--splits", nargs="+", type=int, default=[SPLIT], metavar="SEED",
                   help="the suites' split seeds to score (default: 0)")
    p.add_argument("--work-dir", default="runs/missing-values", help="where each run's score is appended as it lands")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    p.add_argument("--from-scores", default=None, metavar="JSONL",
                   help="write the page from a run's scores.jsonl (e.g. one cut short) instead of running")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    began = time.perf_counter()
    if args.from_scores:
        scores = [Score(**json.loads(line)) for line in Path(args.from_scores).read_text().splitlines() if line.strip()]
    else:
        scores = run(args)
    lines, context, metrics = page(scores, args, began)
    publish(NAME, markdown_page(lines, context), lambda path: render(scores, path), out_dir=args.out,
            log=not args.no_mlflow, params={"quick": args.quick, "tables": len({s.table for s in scores}),
                                            "splits": ",".join(map(str, sorted({s.split for s in scores}))), "arms": ",".join(dict.fromkeys(s.arm for s in scores))},
            metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
