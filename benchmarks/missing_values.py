"""Missing values (research question 2): which way of handling a missing cell predicts best when 10, 30 or 60% of
the feature cells of the training and test rows are removed MCAR, MAR or MNAR, in context and fine-tuned, beside
CatBoost.

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

The fine-tuned part (`--fine-tuned`, its own run: a fine-tune costs tens of seconds where an in-context fit costs
one or two) fine-tunes `BasisRegressor()` at its defaults (base-ft from the shipped checkpoint, which reads a missing
cell as its learned token) capped at `FINE_TUNE_MAX_STEPS` steps, beside mean and diffusion imputation fine-tuned
the same way and CatBoost, at 30% of cells removed under each mechanism on `FINE_TUNED_TABLES`, split 0. Its scores
carry `part="fine-tuned"`; a page written with `--from-scores` of both parts shows both.

    python -m benchmarks.missing_values            # the in-context part (about 40 CPU-minutes at one thread)
    python -m benchmarks.missing_values --quick    # two tables, 30% MCAR and MNAR: a few minutes
    python -m benchmarks.missing_values --fine-tuned --from-scores IN_CONTEXT.jsonl   # about 20 CPU-minutes
    python -m benchmarks.missing_values --fine-tuned --quick   # one table, 30% MCAR and MNAR: a few minutes
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
IN_CONTEXT, FINE_TUNED = "in context", "fine-tuned"  # Score.part
# Five of the six (concrete, the largest, left out). Each table costs 10 fine-tunes (clean, then 3 arms x 3 mechanisms
# at 30%) of 10-40 CPU-seconds at the 60-step cap: about 20 CPU-minutes in all.
FINE_TUNED_TABLES = [("public_suite.yaml", "Boston"), ("public_suite.yaml", "Carseats"),
                     ("regression_screen.yaml", "Hitters"), ("regression_screen.yaml", "Auto"),
                     ("regression_screen.yaml", "Housing")]
FINE_TUNED_QUICK_TABLES = [("regression_screen.yaml", "Hitters")]
FINE_TUNED_RATE = 0.3
# The default budget is 300-600 steps (`finetune.default_steps`): 230 s on Boston at one thread, so 30 fine-tunes
# would be two hours. 60 steps (every arm the same; early stopping still on, checks every 5 steps) measured 0.916 test
# R² on clean Boston split 0 against the default's 0.933 and in context's 0.818: most of what fine-tuning buys.
FINE_TUNE_MAX_STEPS = 60


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
    "budget. Fine-tuned arms cost tens of seconds a fit, so they are a run of their own on fewer tables and conditions "
    "(the section below).",
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
    part: str = IN_CONTEXT  # the scores of the in-context run predate this field
    cpu_seconds: float | None = None  # this process's CPU time for the fit + predict (wall `seconds` drift with load)


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


def fine_tuned_arms() -> dict[str, dict | None]:
    """arm name -> `BasisRegressor` parameters on top of its defaults (None for CatBoost)."""
    return {"learnable token": {}, **{f"{kind} imputation": {"missing_imputation": kind} for kind in IMPUTED},
            "catboost": None}


def fine_tuned_conditions(quick: bool) -> list[tuple[float, str]]:
    mechanisms = ("mcar", "mnar") if quick else MECHANISMS
    return [(0.0, "none"), *((FINE_TUNED_RATE, mechanism) for mechanism in mechanisms)]


def fine_tuned_estimator(params: dict, seed: int, max_steps: int):
    from basisfm.estimators import BasisRegressor

    return BasisRegressor(max_steps=max_steps, random_state=seed, progress=False, **params)


def in_context_estimator(params: dict, seed: int):
    from basisfm.estimators import BasisRegressor

    return BasisRegressor(strategy="inference", n_estimators=1, feature_selection="relevance", random_state=seed,
                          progress=False, **params)


def run(args) -> list[Score]:
    """The in-context part, or with `args.fine_tuned` the fine-tuned one; each score appended to the work dir's
    scores.jsonl (fine_tuned_scores.jsonl) as it lands."""
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import protocol_of, select_tasks
    from basisfm.evaluation.splits import make_split, rows_with_usable_target

    if args.fine_tuned:
        chosen, conds, part = fine_tuned_arms(), fine_tuned_conditions(args.quick), FINE_TUNED
        tables = FINE_TUNED_QUICK_TABLES if args.quick else FINE_TUNED_TABLES
        make = lambda params, seed: fine_tuned_estimator(params, seed, args.max_steps)  # noqa: E731
    else:
        chosen, conds, part = arms(Path(args.arms_dir)), conditions(args.quick), IN_CONTEXT
        tables = QUICK_TABLES if args.quick else TABLES
        make = in_context_estimator
    tables = [(suite, name) for suite, name in tables if not args.tables or name in args.tables]
    scores: list[Score] = []
    partial = Path(args.work_dir) / ("fine_tuned_scores.jsonl" if args.fine_tuned else "scores.jsonl")
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
            scores += score_split(chosen, conds, make, part, name, suite_file, split_seed, x_train, y_train, x_test,
                                  y_test, partial)
    return scores


def score_split(chosen, conds, make, part, name, suite_file, split_seed, x_train, y_train, x_test, y_test,
                partial: Path) -> list[Score]:
    """Every arm of `chosen` under every condition of `conds` on one split; `make(params, seed)` builds a Basis arm.
    A clean condition runs only the arms that do not fill cells: with none missing, filling changes nothing."""
    from basisfm.encoding.missingness import remove_cells
    from basisfm.evaluation.baselines import Baseline
    from basisfm.evaluation.protocol import score
    from basisfm.seeds import derive_seed

    scores = []
    for rate, mechanism in conds:
        if rate > 0:
            parts = (NAME, name, int(rate * 100), mechanism) + ((split_seed,) if split_seed else ())
            seed = derive_seed(*parts) % 2**31
            holey_train = remove_cells(x_train, rate, mechanism, seed=seed)
            holey_test = remove_cells(x_test, rate, mechanism, seed=seed + 1)
        else:
            holey_train, holey_test = x_train, x_test
        for arm, params in chosen.items():
            if rate == 0 and part == FINE_TUNED and params and params.get("missing_imputation"):
                continue  # in context the clean imputation runs are kept: the page of that part predates this rule
            began, cpu_began = time.perf_counter(), time.process_time()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an all-missing column dropped at 60% is expected here
                    if params is None:
                        model = Baseline("catboost", task="regression", seed=split_seed, n_jobs=1)
                    else:
                        model = make(params, split_seed)
                    predicted = np.asarray(model.fit(holey_train, y_train).predict(holey_test), dtype=np.float64)
                value, error = score("r2", y_test, predicted), None
            except Exception as exc:  # noqa: BLE001 - a failed arm is a row of the table, not a dead run
                value, error = float("nan"), f"{type(exc).__name__}: {str(exc)[:200]}"
            result = Score(name, suite_file.removesuffix(".yaml"), arm, rate, mechanism, float(value),
                           time.perf_counter() - began, error, split_seed, part, time.process_time() - cpu_began)
            scores.append(result)
            with partial.open("a") as f:
                f.write(json.dumps(asdict(result)) + "\n")
            print(f"[{NAME}] {part} {name} split {split_seed} {mechanism} {rate:.0%} {arm}: R2 {value:.4f} "
                  f"({result.seconds:.1f}s, {result.cpu_seconds:.1f} CPU-s)" + (f" FAILED {error}" if error else ""),
                  flush=True)
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


def headline_of(mean_missing: dict[str, float], n_conditions: int, n_tables: int) -> str:
    """Each arm's mean over the missing conditions, best first, and which arms are level with the best."""
    arm_names = list(mean_missing)
    best = max(mean_missing, key=mean_missing.get)
    return (f"mean over the {n_conditions} missing conditions of the median test R² over {n_tables} tables: "
            + ", ".join(f"{a} {mean_missing[a]:.3f}" for a in sorted(arm_names, key=lambda a: -mean_missing[a]))
            + (f"; best {best}" if mean_missing[best] - second_best(mean_missing) >= LEVEL else
               f"; {', '.join(a for a in arm_names if mean_missing[best] - mean_missing[a] < LEVEL)} within "
               f"{LEVEL} of the best: level"))


def label(rate: float, mechanism: str) -> str:
    return "clean" if rate == 0 else f"{mechanism.upper()} {rate:.0%}"


def cell(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "–"


def in_context_section(scores: list[Score], args) -> tuple[str, list[str], dict]:
    arm_names = list(dict.fromkeys(s.arm for s in scores))
    conds = list(dict.fromkeys((s.rate, s.mechanism) for s in scores))
    tables = list(dict.fromkeys(s.table for s in scores))
    mean_missing = {arm: float(np.mean([median_r2(scores, arm, r, m) for r, m in conds if r > 0])) for arm in arm_names}
    shipped = "shipped (learnable)"
    headline = headline_of(mean_missing, sum(r > 0 for r, _ in conds), len(tables))
    lines = [*PROTOCOL, "",
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
    metrics = {f"{arm.split(' ')[0].rstrip(',')}_{'continued_' if 'continued' in arm else ''}mean_missing_r2": v
               for arm, v in mean_missing.items()}
    metrics[f"{shipped.split(' ')[0]}_clean_r2"] = median_r2(scores, shipped, 0.0, "none")
    return headline, lines, metrics


def fine_tuned_section(scores: list[Score], in_context: list[Score], max_steps: int) -> tuple[str, list[str], dict]:
    """The fine-tuned arms' table; beside them the in-context shipped arm on the same tables, split and conditions
    when its scores are on the page."""
    order = list(fine_tuned_arms())
    arm_names = sorted(dict.fromkeys(s.arm for s in scores), key=lambda a: order.index(a) if a in order else len(order))
    conds = list(dict.fromkeys((s.rate, s.mechanism) for s in scores))
    tables = list(dict.fromkeys(s.table for s in scores))
    splits = sorted({s.split for s in scores})
    missing = [(r, m) for r, m in conds if r > 0]
    mean_missing = {arm: float(np.mean([median_r2(scores, arm, r, m) for r, m in missing])) for arm in arm_names}
    headline = headline_of(mean_missing, len(missing), len(tables))
    same = [s for s in in_context if s.arm == "shipped (learnable)" and s.table in tables and s.split in splits
            and (s.rate, s.mechanism) in conds]
    beside = {}
    if len(same) == len(tables) * len(splits) * len(conds):
        beside["in context: shipped (learnable), same tables and split"] = same
    steps = [s for s in scores if s.arm == "learnable token"]
    lines = [f"## Fine-tuned, at {max(r for r, _ in conds):.0%} of cells removed", "",
             "`BasisRegressor()` at its defaults (base-ft: every weight of the shipped in-context checkpoint fine-tuned "
             "on episodes of the table, early stopping on held-out training rows) except `max_steps="
             f"{max_steps}` for every arm (the default budget, 300-600 steps, took 230 s on clean Boston at one thread; "
             f"{FINE_TUNE_MAX_STEPS} steps measured 0.916 test R² there against the default's 0.933 and in context's "
             "0.818, split 0). `learnable token`: the checkpoint reads a missing cell as its learned [MISSING] token, the "
             "default; `mean` / `diffusion imputation`: `missing_imputation=` fills numeric cells before it reads "
             "them, at fit and predict. CatBoost as above. The cells removed are the in-context part's (same seeds), "
             "so the in-context row beside them reads the very same rows. Clean tables run only the arms that do "
             "not fill (no cell to fill: `–`).", "",
             f"Tables ({len(tables)}, split {', '.join(map(str, splits))}): "
             + ", ".join(f"{t} ({next(s.suite for s in scores if s.table == t)})" for t in tables)
             + ". Median test R² over the tables:", "",
             "| arm | " + " | ".join(label(r, m) for r, m in conds) + " | mean of missing |",
             "| --- | " + " | ".join("---:" for _ in conds) + " | ---: |"]
    rows = {**{arm: [s for s in scores if s.arm == arm] for arm in arm_names}, **beside}
    for arm, arm_scores in rows.items():
        mean = float(np.mean([median_r2(arm_scores, arm_scores[0].arm, r, m) for r, m in missing]))
        lines.append(f"| {arm} | " + " | ".join(cell(median_r2(arm_scores, arm_scores[0].arm, r, m)) for r, m in conds)
                     + f" | {mean:.3f} |")
    lines += ["", f"Per table, test R² ({', '.join(label(r, m) for r, m in conds)}):", "",
              "| arm | " + " | ".join(tables) + " |", "| --- | " + " | ".join("---" for _ in tables) + " |"]
    for arm, arm_scores in rows.items():
        lines.append(f"| {arm} | " + " | ".join(" / ".join(cell(median_r2([s for s in arm_scores if s.table == t],
                                                                             arm_scores[0].arm, r, m)) for r, m in conds)
                                               for t in tables) + " |")
    lines += ["", "Paired against `learnable token` over every (table, missing condition): " + "; ".join(
        "{} {:+.3f} mean R², higher on {} of {}".format(arm, *paired_against(scores, arm, "learnable token"))
        for arm in arm_names if arm != "learnable token") + "."]
    cpu = {arm: [s.cpu_seconds for s in scores if s.arm == arm and s.cpu_seconds is not None] for arm in arm_names}
    lines += ["", "CPU-seconds per fit + predict, mean over runs (one thread): "
              + ", ".join(f"{a} {np.mean(v):.1f}" for a, v in cpu.items() if v)
              + f"; {sum(map(sum, cpu.values())) / 60:.1f} CPU-minutes in all."]
    metrics = {f"ft_{arm.split(' ')[0]}_mean_missing_r2": v for arm, v in mean_missing.items()}
    metrics["ft_learnable_clean_r2"] = median_r2(steps, "learnable token", 0.0, "none")
    return headline, lines, metrics


def paired_against(scores: list[Score], arm: str, base: str) -> tuple[float, int, int]:
    """(mean R² of `arm` minus `base` over the (table, split, condition) cells with cells removed where both ran,
    cells where `arm` is higher, cells)."""
    key = lambda s: (s.table, s.split, s.rate, s.mechanism)  # noqa: E731
    reference = {key(s): s.r2 for s in scores if s.arm == base and s.rate > 0}
    deltas = [s.r2 - reference[key(s)] for s in scores if s.arm == arm and key(s) in reference]
    return float(np.mean(deltas)) if deltas else float("nan"), int(sum(d > 0 for d in deltas)), len(deltas)


def page(scores: list[Score], args, began: float) -> tuple[list[str], dict, dict]:
    in_context = [s for s in scores if s.part == IN_CONTEXT]
    fine_tuned = [s for s in scores if s.part == FINE_TUNED]
    headlines, body, metrics = [], [], {}
    if in_context:
        headline, lines, part_metrics = in_context_section(in_context, args)
        headlines.append(("In context: " if fine_tuned else "") + headline)
        body += lines
        metrics.update(part_metrics)
    if fine_tuned:
        headline, lines, part_metrics = fine_tuned_section(fine_tuned, in_context, args.max_steps)
        headlines.append(f"{'Fine-tuned' if in_context else 'fine-tuned'} ({args.max_steps} steps, "
                         f"{FINE_TUNED_RATE:.0%} removed): {headline}")
        body += ([""] if body else []) + lines
        metrics.update(part_metrics)
    title = ("# Missing values in context and fine-tuned: tokens, masking, imputation and CatBoost with 10-60% of "
             "cells removed" if in_context and fine_tuned else
             "# Missing values fine-tuned: the token, imputation and CatBoost with cells removed" if fine_tuned else
             "# Missing values in context: tokens, masking, imputation and CatBoost with 10-60% of cells removed")
    lines = [title, "", "Headline: " + ". ".join(headlines), "", *body]
    failures = [s for s in scores if s.error]
    if failures:
        lines += ["", "Failed runs: " + "; ".join(f"{s.part} {s.arm} on {s.table} {s.mechanism} {s.rate:.0%}: {s.error}"
                                                  for s in failures)]
    arm_names = list(dict.fromkeys((s.part, s.arm) for s in scores))
    seconds = {arm: float(np.mean([s.seconds for s in scores if (s.part, s.arm) == arm])) for arm in arm_names}
    lines += ["", "Wall seconds per fit + predict (mean over runs; the machine is shared, compare within the run): "
              + ", ".join((f"{a} {v:.1f}" if part == IN_CONTEXT else f"{a} ({part}) {v:.1f}")
                          for (part, a), v in seconds.items()), ""]
    context = {
        "command": "python -m benchmarks.missing_values " + shlex.join(args.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "total minutes": f"{(time.perf_counter() - began) / 60:.1f}" + (
            f" (scores of earlier runs read from {' '.join(args.from_scores)})" if getattr(args, "from_scores", None)
            else ""),
        "fit + predict minutes, summed over the runs": f"{sum(s.seconds for s in scores) / 60:.1f}",
        "continued arms": f"{Path(args.arms_dir).resolve()} (train runs, MLflow under track/)",
        "scores": " ".join([*(getattr(args, "from_scores", None) or ()), *(
            [str(Path(args.work_dir) / ("fine_tuned_scores.jsonl" if getattr(args, "fine_tuned", False) else "scores.jsonl"))]
            if getattr(args, "fine_tuned", False) or not getattr(args, "from_scores", None) else [])]),
        "commit": commit(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return lines, context, metrics


def render(scores: list[Score], path: Path) -> Path:
    """R² against the share of cells removed per mechanism, in context; with fine-tuned scores a last panel of
    them per mechanism (one rate)."""
    plt = pyplot()
    in_context = [s for s in scores if s.part == IN_CONTEXT]
    fine_tuned = [s for s in scores if s.part == FINE_TUNED]
    mechanisms = [m for m in MECHANISMS if any(s.mechanism == m for s in in_context)]
    panels = len(mechanisms) + bool(fine_tuned)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    for ax, mechanism in zip(axes[0], mechanisms):
        for i, arm in enumerate(dict.fromkeys(s.arm for s in in_context)):
            rates = [0.0, *sorted({s.rate for s in in_context if s.mechanism == mechanism})]
            values = [median_r2(in_context, arm, r, mechanism if r > 0 else "none") for r in rates]
            ax.plot([100 * r for r in rates], values, marker="o", color=f"C{i}", label=arm,
                    linestyle="--" if arm == "catboost" else "-")
        ax.set_title(f"in context, {mechanism.upper()}")
        ax.set_xlabel("% of feature cells removed (train and test rows)")
        ax.set_ylabel("median test R² over the tables")
    if mechanisms:
        axes[0][len(mechanisms) - 1].legend(fontsize=7)
    if fine_tuned:
        ax = axes[0][-1]
        conds = list(dict.fromkeys((s.rate, s.mechanism) for s in fine_tuned))
        order = list(fine_tuned_arms())
        arm_names = sorted(dict.fromkeys(s.arm for s in fine_tuned), key=lambda a: order.index(a) if a in order else 9)
        width = 0.8 / len(arm_names)
        for i, arm in enumerate(arm_names):
            ax.bar(np.arange(len(conds)) + (i - (len(arm_names) - 1) / 2) * width,
                   [median_r2(fine_tuned, arm, r, m) for r, m in conds], width, label=arm, color=f"C{i + 7}")
        ax.set_xticks(np.arange(len(conds)), [label(r, m) for r, m in conds])
        ax.set_title(f"fine-tuned ({len({s.table for s in fine_tuned})} tables, split "
                     f"{', '.join(map(str, sorted({s.split for s in fine_tuned})))})")
        ax.set_ylabel("median test R² over the tables")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two tables, 30%% MCAR and MNAR only: a few minutes")
    p.add_argument("--fine-tuned", action="store_true",
                   help="run the fine-tuned part instead of the in-context one (its own run; add the in-context "
                        "part's scores with --from-scores to put both on the page)")
    p.add_argument("--max-steps", type=int, default=FINE_TUNE_MAX_STEPS,
                   help=f"the fine-tuned arms' step cap, the same for every arm (default {FINE_TUNE_MAX_STEPS})")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--arms-dir", default="runs/missing-pretrain",
                   help="the continued arms' training runs (<dir>/missing-<strategy>/model); absent ones are left out")
    p.add_argument("--splits", nargs="+", type=int, default=[SPLIT], metavar="SEED",
                   help="the suites' split seeds to score (default: 0)")
    p.add_argument("--tables", nargs="+", default=None, metavar="NAME",
                   help="only these of the part's tables (a run cut in two: write the page from both runs' scores)")
    p.add_argument("--work-dir", default="runs/missing-values", help="where each run's score is appended as it lands")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    p.add_argument("--from-scores", nargs="+", default=None, metavar="JSONL",
                   help="scores.jsonl files of earlier runs (either part) to write the page from; nothing is run "
                        "unless --fine-tuned is given too, whose scores are then added")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    began = time.perf_counter()
    scores = [Score(**json.loads(line)) for path in args.from_scores or () for line in Path(path).read_text().splitlines()
              if line.strip()]
    if args.fine_tuned or not args.from_scores:
        scores += run(args)
    lines, context, metrics = page(scores, args, began)
    publish(NAME, markdown_page(lines, context), lambda path: render(scores, path), out_dir=args.out,
            log=not args.no_mlflow, params={"quick": args.quick, "tables": len({s.table for s in scores}),
                                            "splits": ",".join(map(str, sorted({s.split for s in scores}))),
                                            "arms": ",".join(dict.fromkeys(s.arm for s in scores)),
                                            "parts": ",".join(dict.fromkeys(s.part for s in scores)),
                                            "fine_tune_max_steps": args.max_steps},
            metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
