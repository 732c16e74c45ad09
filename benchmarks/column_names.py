"""Column names (Q3): does the in-context model read names at all, and what would a better name embedding gain?

Three parts, seeded, side by side on the same tables and splits (a subset of the public suite and of the
regression screen, named on the page):

1. The shipped in-context checkpoint with the tables' real names, the names scrambled across columns (a
   derangement over features and target), synonyms (`evaluation.name_variants.SYNONYMS`, a hand-written word
   map) and no names (the checkpoint read with zero name vectors and no parsed name features, as the prior's
   unnamed tasks show them). CatBoost with real and scrambled names beside it: a sanity line (names mean
   nothing to it, so the two must agree).
2. Name forms on their own: held-out pairs of corpus columns that hold the same quantity under different
   names (`corpus.column_matches`), recall@1 of sentence embeddings, parsed (symbolic) features, both, and
   the contrastive projection (`jobs.name_projection`), over three splits of the pairs.
3. Equal short continued-pretraining runs from the shipped checkpoint on corpus episodes (real tables, names
   shown; suite tables and their copies left out), one per name form: sentence+symbolic (today's model),
   sentence alone, symbolic alone, contrastive+symbolic; then each in context on the part-1 tables with real
   and scrambled names.
4. Fine-tuned (`--fine-tuned`, a run of its own: a fine-tune costs tens of seconds where an in-context fit costs
   one or two): `BasisRegressor()` at its defaults (base-ft from the shipped checkpoint) capped at
   `FINE_TUNE_MAX_STEPS` steps, with real, scrambled and no names, on `FINE_TUNED_TABLES`, split 0; CatBoost beside
   it. With `--reuse-scores` of a parts 1-3 run the page shows all four parts, without it part 4 alone.

    python -m benchmarks.column_names [--quick] [--out DIR]
    python -m benchmarks.column_names --fine-tuned --reuse-scores runs/column_names/scores.json   # part 4 added
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, commit, markdown_page, publish, pyplot, save_figure

NAME = "column_names"
PUBLIC_SUITE = "jobs/configs/suites/public_suite.yaml"
SCREEN_SUITE = "jobs/configs/suites/regression_screen.yaml"
# Small tables whose names are words (not x1..x100): names can only matter where they say something.
FULL_TABLES = {PUBLIC_SUITE: ["Boston", "Carseats", "concrete", "Sacramento", "SaratogaHouses", "Wage"],
               SCREEN_SUITE: ["Hitters", "Salaries", "Auto", "ncbirths", "TeachingRatings", "CASchools"]}
QUICK_TABLES = {PUBLIC_SUITE: ["Boston", "Carseats"], SCREEN_SUITE: ["Salaries", "Auto"]}
# Two in-context members, features by relevance: the name question at a fifth of the default's fit cost
# (the default validates feature subsets at fit with several in-context passes).
ESTIMATOR = {"strategy": "inference", "n_estimators": 2, "feature_selection": "relevance"}
VARIANTS = ("real", "scrambled", "synonyms", "none")
# Part 4: the six smallest of the twelve, three per suite (each fine-tune 20-60 CPU-seconds at one thread); three name
# variants each, 18 fine-tunes: about 15 CPU-minutes. Synonyms are left out: in context they moved less than the rest.
FINE_TUNED_TABLES = {PUBLIC_SUITE: ["Boston", "Carseats", "concrete"], SCREEN_SUITE: ["Hitters", "Salaries", "Auto"]}
FINE_TUNED_QUICK_TABLES = {SCREEN_SUITE: ["Salaries"]}
FINE_TUNED_VARIANTS = ("real", "scrambled", "none")
# Real names fine-tuned again with another seed: how far two fine-tunes of the same table differ by chance alone, the
# floor a name variant's difference must clear before part 4 calls it.
SEED_CONTROL, CONTROL_SEED = "real, another seed", 1
# The default budget is 300-600 steps (`finetune.default_steps`), 230 s on Boston at one thread: 18 of them would be an
# hour. 60 steps for every variant (early stopping still on) measured 0.916 test R² on Boston split 0 against the
# default's 0.933 and in context's 0.818 (benchmarks/results/missing_values.md, clean Boston).
FINE_TUNE_MAX_STEPS = 60


@dataclass(frozen=True)
class Arm:
    """One name form for continued pretraining: how names are embedded, and whether parsed features are read."""

    name: str
    embedding: str  # data.column_name_embedding
    symbolic: bool  # model.symbolic_name_features


ARMS = (Arm("sentence+symbolic", "sentence", True), Arm("sentence", "sentence", False),
        Arm("symbolic", "none", True), Arm("contrastive+symbolic", "contrastive", True))


# ----------------------------------------------------------------------------- checkpoints


def named_checkpoint(source: Path, out: Path, *, embedding: str, symbolic: bool, projection: Path | None = None) -> Path:
    """A copy of the checkpoint `source` whose model reads names as asked (same weights)."""
    from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, write_name_embedding

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(source / WEIGHTS_NAME, out / WEIGHTS_NAME)
    raw = json.loads((source / CONFIG_NAME).read_text())
    raw["model_config"]["symbolic_name_features"] = symbolic
    (out / CONFIG_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    write_name_embedding(out, embedding, projection if embedding == "contrastive" else None)
    return out


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Task:
    suite: str  # "public" or "screen"
    table: str
    features: object  # pd.DataFrame
    target: object  # pd.Series
    protocol: object


def load_tasks(tables: dict[str, list[str]]) -> list[Task]:
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import protocol_of
    from basisfm.evaluation.splits import rows_with_usable_target

    tasks = []
    for path, names in tables.items():
        suite = load_suite(path)
        by_table = {t.id.split("/")[-1]: t for t in suite.tasks}
        for name in names:
            task = by_table[name]
            frame = rows_with_usable_target(load_task_frame(task), task.target, table=task.id)
            tasks.append(Task("public" if path == PUBLIC_SUITE else "screen", name, frame.drop(columns=[task.target]),
                              frame[task.target], protocol_of(suite)))
    return tasks


def evaluate(model: str, checkpoint: Path | None, tasks: list[Task], seeds: list[int], variant: str,
             cache_dir: str, estimator_params: dict | None = None) -> list[dict]:
    """One row per (table, split): test R2 of `model` ("basis" from `checkpoint`, or "catboost") on the names of
    `variant` (`none` is the checkpoint's business, see `named_checkpoint`); the Basis arm is
    `BasisRegressor(**estimator_params)` (default `ESTIMATOR`, in context)."""
    from basisfm.estimators import BasisRegressor
    from basisfm.evaluation.baselines import Baseline
    from basisfm.evaluation.name_variants import renamed
    from basisfm.evaluation.protocol import score
    from basisfm.evaluation.splits import make_split

    rows = []
    for task in tasks:
        for seed in seeds:
            split = make_split(len(task.features), seed, task.protocol)
            x, y, changed = renamed(task.features, task.target, "real" if variant == "none" else variant, seed=seed)
            x_train, x_test = x.iloc[split.train_rows], x.iloc[split.test_rows]
            y_train, y_test = y.iloc[split.train_rows], y.iloc[split.test_rows]
            started, cpu_started = time.perf_counter(), time.process_time()
            if model == "catboost":
                estimator = Baseline("catboost", task="regression", seed=seed, n_jobs=1)
            else:
                estimator = BasisRegressor(checkpoint=str(checkpoint), progress=False, embedding_cache_dir=cache_dir,
                                           **{"random_state": seed, **(estimator_params or ESTIMATOR)})
            prediction = estimator.fit(x_train, y_train).predict(x_test)
            rows.append({"suite": task.suite, "table": task.table, "split": seed, "variant": variant,
                         "r2": score("r2", np.asarray(y_test), np.asarray(prediction)), "changed": changed,
                         "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started})
    return rows


# ----------------------------------------------------------------------------- continued pretraining


def pretrain_arm(arm: Arm, start: Path, args, work: Path) -> tuple[Path, dict[str, float]]:
    """`jobs.pretrain` from `start` on corpus episodes with the arm's names; returns its checkpoint (stamped with
    how it reads names) and the run's final metrics."""
    from basisfm.model.checkpoint import write_name_embedding

    run = f"names-{arm.name.replace('+', '-')}"
    command = [sys.executable, "-m", "jobs.pretrain", "--config", "jobs/configs/demo.yaml", "--launcher", "local",
               "--run-name", run]
    overrides = {
        "train.init_from": str(start), "train.steps": args.steps, "train.warmup_steps": max(1, args.steps // 10),
        "train.max_minutes": args.max_minutes, "train.num_workers": 1, "train.zero_stage": 0, "train.seed": 0,
        "train.validate_every": 100_000, "train.checkpoint_every": 100_000, "train.log_every": max(1, args.steps // 4),
        "train.storage_path": str(work / "runs"), "tracking.local_dir": str(work / "track"), "tracking.register": "false",
        "tracking.experiment": NAME, "corpus.out_dir": args.corpus, "data.embedding_cache_dir": args.embedding_cache_dir,
        "data.column_name_embedding": arm.embedding,
    }
    if arm.embedding == "contrastive":
        overrides["data.name_projection"] = str(args.projection)
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    shutil.rmtree(work / "runs" / run, ignore_errors=True)  # the same run name would resume an earlier run, not start
    log = work / f"{run}.log"
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"{run}: jobs.pretrain exited with {done.returncode}; see {log}:\n{text[-2000:]}")
    found = re.search(r"metrics:\s+(.*)", text)
    metrics = {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.e+]+)", found.group(1))} if found else {}
    checkpoint = work / "runs" / run / "model"
    write_name_embedding(checkpoint, arm.embedding, args.projection if arm.embedding == "contrastive" else None)
    return checkpoint, metrics


# ----------------------------------------------------------------------------- name forms on their own


def held_out_pair_counts(corpus: str, seeds: list[int]) -> list[int]:
    """Held-out pairs per seed, as `train_name_projection` counts them (no training)."""
    from basisfm.config import NameProjectionConfig
    from basisfm.corpus.column_matches import positive_pairs, same_quantity_groups, split_groups
    from basisfm.corpus.manifest import read_manifest

    groups = same_quantity_groups(read_manifest(corpus))
    counts = []
    for seed in seeds:
        train, held = split_groups(groups, NameProjectionConfig.holdout_fraction, seed)
        seen = {frozenset(pair) for pair in positive_pairs(train)}
        counts.append(sum(frozenset(pair) not in seen for pair in positive_pairs(held)))
    return counts


def name_form_recall(args, seeds: list[int]) -> tuple[dict[str, list[float]], list[int]]:
    from basisfm.config import NameProjectionConfig
    from basisfm.encoding.name_projection import train_name_projection

    recall: dict[str, list[float]] = {}
    held = []
    for seed in seeds:
        out = args.projection if seed == seeds[0] else Path(args.work_dir) / f"projection-seed{seed}.safetensors"
        report = train_name_projection(NameProjectionConfig(corpus_dir=args.corpus, out=str(out), seed=seed,
                                                            embedding_cache_dir=args.embedding_cache_dir), progress=False)
        held.append(report.held_out_pairs)
        for form, value in report.recall_at_1.items():
            recall.setdefault(form, []).append(value)
    return recall, held


# ----------------------------------------------------------------------------- page


def table_means(rows: list[dict]) -> dict[tuple[str, str], float]:
    """(suite, table) -> mean R2 over splits."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        out.setdefault((r["suite"], r["table"]), []).append(r["r2"])
    return {k: float(np.mean(v)) for k, v in out.items()}


def suite_mean(rows: list[dict], suite: str) -> float:
    values = [v for (s, _), v in table_means(rows).items() if s == suite]
    return float(np.mean(values)) if values else float("nan")


def paired_delta(rows: list[dict], base: list[dict]) -> tuple[float, int, int]:
    """(mean R2 difference over (table, split) pairs, pairs lower, pairs in all) against `base`."""
    key = lambda r: (r["suite"], r["table"], r["split"])  # noqa: E731
    reference = {key(r): r["r2"] for r in base}
    deltas = [r["r2"] - reference[key(r)] for r in rows if key(r) in reference]
    return float(np.mean(deltas)), int(sum(d < -1e-9 for d in deltas)), len(deltas)


def names_matter(delta: tuple[float, int, int]) -> bool:
    """A variant changed the scores: mean R2 down by over 0.005 and lower on at least two thirds of table-splits."""
    mean, lower, total = delta
    return mean < -0.005 and lower * 3 >= 2 * total


def wins(delta: tuple[float, int, int]) -> bool:
    """An arm beat the default arm: mean R2 up by over 0.005 and lower on at most a third of table-splits."""
    mean, lower, total = delta
    return mean > 0.005 and lower * 3 <= total



# ----------------------------------------------------------------------------- part 4: fine-tuned


def fine_tuned_part(tasks: list[Task], shipped: Path, unnamed: Path, args,
                    done: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """variant (or "catboost", or `SEED_CONTROL`) -> one row per table of split 0: `BasisRegressor()` at its defaults
    but for the step cap, fine-tuned from the shipped checkpoint (no names: from its copy that reads none), on the
    variant's names. Variants in `done` (an earlier run's, same settings) are kept, not run again."""
    params = {"max_steps": args.max_steps}
    rows = dict(done or {})
    for v in FINE_TUNED_VARIANTS:
        if v not in rows:
            rows[v] = evaluate("basis", unnamed if v == "none" else shipped, tasks, [0], v, args.embedding_cache_dir,
                               params)
    if "catboost" not in rows:
        rows["catboost"] = evaluate("catboost", None, tasks, [0], "real", args.embedding_cache_dir)
    if SEED_CONTROL not in rows:
        rows[SEED_CONTROL] = evaluate("basis", shipped, tasks, [0], "real", args.embedding_cache_dir,
                                      {**params, "random_state": CONTROL_SEED})
    return rows


def fine_tuned_section(fine: dict[str, list[dict]], in_context_real: list[dict], max_steps: int
                       ) -> tuple[str, list[str], str, dict[str, float]]:
    """Part 4's headline, table, decision sentence and metrics; `in_context_real` (part 1's real-name rows, may be
    empty) gives the in-context column on the same tables and split."""
    key = lambda r: (r["suite"], r["table"], r["split"])  # noqa: E731
    real = fine["real"]
    keys = [key(r) for r in real]
    beside = [r for r in in_context_real if key(r) in set(keys)]
    reads = {v: paired_delta(fine[v], real) for v in FINE_TUNED_VARIANTS[1:]}
    # older runs' scores lack the control: then nothing sets a floor but names_matter's own threshold
    control = paired_delta(fine[SEED_CONTROL], real) if SEED_CONTROL in fine else None
    floor = float(np.mean([abs(a["r2"] - b["r2"]) for a, b in zip(fine[SEED_CONTROL], real)])) if control else 0.0
    called = any(names_matter(d) and abs(d[0]) > floor for d in reads.values())
    by = {v: {key(r): r["r2"] for r in rows} for v, rows in fine.items()}
    in_context = {key(r): r["r2"] for r in beside}
    columns = ([*FINE_TUNED_VARIANTS] + ([SEED_CONTROL] if control else []) + ["catboost"]
               + (["in context, real"] if len(beside) == len(keys) else []))
    value = lambda column, k: by[column][k] if column in by else in_context[k]  # noqa: E731
    cpu = [r.get("cpu_seconds", 0.0) for v in fine if v != "catboost" for r in fine[v]]
    lines = [f"## 4. Fine-tuned, real vs scrambled vs no names (split 0)", "",
             "`BasisRegressor()` at its defaults (base-ft: every weight of the shipped in-context checkpoint fine-tuned "
             "on episodes of the table, early stopping on held-out training rows) except `max_steps="
             f"{max_steps}` for every variant (the default budget, 300-600 steps, took 230 s on Boston at one thread; "
             f"{FINE_TUNE_MAX_STEPS} steps measured 0.916 test R² there against the default's 0.933 and in context's "
             "0.818). Names as in part 1: scrambled is a derangement over features and target, seeded by the split; "
             "no names fine-tunes the checkpoint copy that reads none. Within one table a fine-tune can learn any "
             "fixed name as a column's identity, so what it could gain from real names over scrambled ones is what "
             f"their meaning adds. `{SEED_CONTROL}`: real names fine-tuned with `random_state={CONTROL_SEED}` "
             "(the others 0), the difference chance alone makes (at the cap a validation check comes every 5 steps and "
             "early stopping gives up after 4 without a better score, so a fine-tune can end on its starting weights, "
             "which predict as in context). CatBoost with real names beside it"
             + ("; `in context, real`: part 1's shipped checkpoint on the same tables and split." if "in context, real"
                in columns else "."), "",
             "| table | " + " | ".join(columns) + " |", "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    for k in keys:
        lines.append(f"| {k[1]} ({k[0]}) | " + " | ".join(f"{value(c, k):.4f}" for c in columns) + " |")
    for suite in ("public", "screen"):
        ks = [k for k in keys if k[0] == suite]
        if ks:
            lines.append(f"| **mean, {suite}** | " + " | ".join(f"{np.mean([value(c, k) for k in ks]):.4f}"
                                                                for c in columns) + " |")
    lines += ["", "Against real names, per table: " + "; ".join(
        f"{v} {d:+.4f} mean R2, lower on {lo} of {n}" for v, (d, lo, n) in reads.items())
        + (f"; {SEED_CONTROL} {control[0]:+.4f} mean R2, lower on {control[1]} of {control[2]}, "
           f"{floor:.4f} apart per table on average: a variant is called only beyond that" if control else "")
        + f". {len(cpu)} fine-tunes, {sum(cpu) / 60:.1f} CPU-minutes (one thread; mean {np.mean(cpu):.0f} s each)."]
    against = {"in context": beside if len(beside) == len(keys) else [], "CatBoost": fine["catboost"]}
    lines += ["", "Fine-tuned with real names against " + "; ".join(
        f"{name} {paired_delta(real, rows)[0]:+.4f} mean R2, lower on {paired_delta(real, rows)[1]} of {len(rows)}"
        for name, rows in against.items() if rows) + "."]
    headline = (f"the fine-tuned model {'reads names' if called else 'does not measurably read names'} ({max_steps} steps, "
                f"{len(keys)} tables, split 0): scrambled {reads['scrambled'][0]:+.4f}, none {reads['none'][0]:+.4f} "
                f"mean R2 against real names ({np.mean([by['real'][k] for k in keys]):.4f})"
                + (f"; another seed of real names {control[0]:+.4f}" if control else ""))
    decision = ("Fine-tuned (part 4), " + ("the model's scores move with its names: "
                if called else f"the model's scores do not move with its names{' either' if beside else ''}: ")
                + f"scrambled {reads['scrambled'][0]:+.4f} (lower on {reads['scrambled'][1]} of {reads['scrambled'][2]}), "
                f"none {reads['none'][0]:+.4f} (lower on {reads['none'][1]} of {reads['none'][2]}) mean R2"
                + (f", against {floor:.4f} between two seeds of the same names per table" if control else "")
                + "; it tests "
                "whether names are read, not which name form to read them with, so it changes no default.")
    metrics = {f"ft_{re.sub(r'[^a-z]+', '_', v)}_r2": float(np.mean([by[v][k] for k in keys])) for v in fine}
    return headline, lines, decision, metrics

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 tables, split 0, 8-step arms: under 10 minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--work-dir", default="runs/column_names", help="checkpoints, training runs and their MLflow store")
    p.add_argument("--corpus", default="runs/corpus_no_suites",
                   help="an ingested corpus with the public suite and the regression screen (and copies) left out")
    p.add_argument("--embedding-cache-dir", default="runs/embedding_cache")
    p.add_argument("--steps", type=int, default=None, help="continued-pretraining steps per arm (default 40; --quick 8)")
    p.add_argument("--max-minutes", type=float, default=30.0,
                   help="safety cap per arm; an arm it stops runs fewer steps (the table shows steps done). At 8 the "
                        "2026-12-07 run's arms stopped at 20-odd of 40 steps under the shared machine's load")
    p.add_argument("--splits", type=int, nargs="+", default=None, help="split seeds (default 0 1 2; --quick 0)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    p.add_argument("--reuse-scores", metavar="FILE", help="a scores.json of an earlier run with the same settings: "
                   "parts 1-2 and its arms are taken from it, only the arms named by --arms are run again")
    p.add_argument("--arms", nargs="+", default=[], choices=[a.name for a in ARMS], help="with --reuse-scores: arms to rerun")
    p.add_argument("--fine-tuned", action="store_true",
                   help="run part 4 (fine-tuned, split 0) instead of parts 1-3; with --reuse-scores the page shows "
                        "those parts too")
    p.add_argument("--max-steps", type=int, default=FINE_TUNE_MAX_STEPS,
                   help=f"part 4's step cap, the same for every variant (default {FINE_TUNE_MAX_STEPS})")
    args = p.parse_args(argv)
    args.steps = args.steps or (8 if args.quick else 40)
    seeds = args.splits or ([0] if args.quick else [0, 1, 2])
    tables = QUICK_TABLES if args.quick else FULL_TABLES
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.projection = work / "name_projection.safetensors"
    began = time.perf_counter()

    from basisfm.pretrained.checkpoints import resolve_checkpoint

    shipped = Path(resolve_checkpoint("in_context"))
    tasks = load_tasks(tables) if not (args.fine_tuned and args.reuse_scores is None) else []  # parts 1-3
    say = lambda text: print(f"[{NAME}] {text} ({(time.perf_counter() - began) / 60:.1f} min)", flush=True)  # noqa: E731

    reused = json.loads(Path(args.reuse_scores).read_text()) if args.reuse_scores else None
    in_context = not (args.fine_tuned and reused is None)
    lines, decision, metrics = [], "", {}
    if in_context:
        # 1. the shipped model under name variants; CatBoost beside it
        unnamed = named_checkpoint(shipped, work / "shipped_no_names", embedding="none", symbolic=False)
        part1: dict[str, list[dict]] = reused["part1"] if reused else {}
        for variant in VARIANTS if reused is None else ():
            part1[variant] = evaluate("basis", unnamed if variant == "none" else shipped, tasks, seeds, variant,
                                      args.embedding_cache_dir)
            say(f"shipped, {variant} names: public {suite_mean(part1[variant], 'public'):.3f}, "
                f"screen {suite_mean(part1[variant], 'screen'):.3f}")
        catboost = reused["catboost"] if reused else {
            v: evaluate("catboost", None, tasks, seeds, v, args.embedding_cache_dir) for v in ("real", "scrambled")}
        say(f"catboost real {suite_mean(catboost['real'], 'public'):.3f} / scrambled {suite_mean(catboost['scrambled'], 'public'):.3f}")

        # 2. the name forms on held-out same-quantity pairs (also writes the projection the contrastive arm reads)
        recall, held_pairs = (reused["recall"], held_out_pair_counts(args.corpus, [0, 1, 2])) if reused else \
            name_form_recall(args, [0, 1, 2])
        say("recall@1 " + ", ".join(f"{f} {np.mean(v):.3f}" for f, v in recall.items()))

        # 3. equal continued-pretraining runs, one per name form
        arm_rows: dict[str, dict[str, list[dict]]] = dict(reused["arms"]) if reused else {}
        arm_metrics: dict[str, dict[str, float]] = dict(reused["arm_metrics"]) if reused else {}
        for arm in ARMS:
            if reused is not None and arm.name in arm_rows and arm.name not in args.arms:
                continue
            start = named_checkpoint(shipped, work / f"start-{arm.name.replace('+', '-')}", embedding=arm.embedding,
                                     symbolic=arm.symbolic, projection=args.projection)
            checkpoint, arm_metrics[arm.name] = pretrain_arm(arm, start, args, work)
            arm_rows[arm.name] = {v: evaluate("basis", checkpoint, tasks, seeds, v, args.embedding_cache_dir)
                                  for v in ("real", "scrambled")}
            say(f"arm {arm.name}: {arm_metrics[arm.name]}; real public {suite_mean(arm_rows[arm.name]['real'], 'public'):.3f}")

        # ------------------------------------------------------------------ the page
        real = part1["real"]
        shipped_reads = {v: paired_delta(part1[v], real) for v in VARIANTS[1:]}
        default_arm = arm_rows[ARMS[0].name]["real"]
        best_arm = max(ARMS, key=lambda a: np.mean([r["r2"] for r in arm_rows[a.name]["real"]]))
        best_delta = paired_delta(arm_rows[best_arm.name]["real"], default_arm)
        noise = max(abs(paired_delta(arm_rows[a.name]["real"], default_arm)[0]) for a in ARMS[1:])
        reads = names_matter(shipped_reads["scrambled"]) or names_matter(shipped_reads["none"])
        arm_wins = best_arm != ARMS[0] and wins(best_delta)
        headline = (f"the shipped in-context model {'reads names' if reads else 'does not measurably read names'}: "
                    f"scrambled {shipped_reads['scrambled'][0]:+.4f}, synonyms {shipped_reads['synonyms'][0]:+.4f}, "
                    f"none {shipped_reads['none'][0]:+.4f} mean R2 against real names; contrastive name projection "
                    f"recall@1 {np.mean(recall['contrastive']):.3f} vs sentence {np.mean(recall['sentence']):.3f}; after "
                    f"{args.steps} continued steps per arm the best arm ({best_arm.name}) is {best_delta[0]:+.4f} against "
                    f"sentence+symbolic: {'a candidate, not yet the default' if arm_wins else 'the default stays'}")
        table_names = ", ".join(f"{t.table} ({t.suite})" for t in tasks)
        lines = [f"# Column names: does the in-context model read them, and which name embedding helps", "",
                 f"Headline: {headline}", "",
                 "Question (issue 35, Q3): real names, scrambled names, synonyms, no names; sentence embeddings vs "
                 "parsed (symbolic) name features vs both vs a contrastively pretrained name projection. The shipped "
                 "in-context model was pretrained on the synthetic prior alone, whose tasks carry either random name "
                 "vectors (`p0001`...) or no names (`prior.named_fraction`): it has never seen a meaningful name.", "",
                 f"Tables: {table_names}; split seeds {seeds} of each suite's protocol. In context: "
                 f"`BasisRegressor({', '.join(f'{k}={v!r}' for k, v in ESTIMATOR.items())})` (two members, features "
                 "by relevance: the default validates feature subsets at fit, five times the cost); scores are test R2.", "",
                 "## 1. The shipped checkpoint under name variants", "",
                 "| table | real | scrambled | synonyms (share renamed) | none | CatBoost real | CatBoost scrambled |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        means = {v: table_means(part1[v]) for v in VARIANTS}
        cat_means = {v: table_means(catboost[v]) for v in catboost}
        renamed_share = {(r["suite"], r["table"]): r["changed"] for r in part1["synonyms"]}
        for key in means["real"]:
            lines.append(f"| {key[1]} ({key[0]}) | {means['real'][key]:.4f} | {means['scrambled'][key]:.4f} | "
                         f"{means['synonyms'][key]:.4f} ({renamed_share[key]:.0%}) | {means['none'][key]:.4f} | "
                         f"{cat_means['real'][key]:.4f} | {cat_means['scrambled'][key]:.4f} |")
        for suite in ("public", "screen"):
            lines.append(f"| **mean, {suite}** | " + " | ".join(f"{suite_mean(part1[v], suite):.4f}" for v in VARIANTS)
                         + f" | {suite_mean(catboost['real'], suite):.4f} | {suite_mean(catboost['scrambled'], suite):.4f} |")
        lines += ["", "Against real names, per (table, split): " + "; ".join(
            f"{v} {d:+.4f} mean R2, lower on {lo} of {n}" for v, (d, lo, n) in shipped_reads.items()) + ". CatBoost "
            f"real vs scrambled: {paired_delta(catboost['scrambled'], catboost['real'])[0]:+.4f} (the sanity line).", "",
            "## 2. Name forms on held-out same-quantity column pairs", "",
            "Pairs: numeric columns of different corpus tables with the same rows and every manifest statistic equal "
            "(renamed copies of one dataset: `Hitters.AtBat` / `Baseball.atbat86`), names differing (suite tables and "
            "their copies left out). A fifth of the groups is held out per seed; recall@1: the partner is the nearest "
            "name (cosine) among all held-out names. The projection: residual linear map of MiniLM space, InfoNCE, "
            "400 steps (`jobs.name_projection` defaults, not tuned on these pairs).", "",
            "| name form | recall@1, seeds 0 / 1 / 2 | mean |", "| --- | --- | ---: |"]
        for form, values in recall.items():
            lines.append(f"| {form} | {' / '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} |")
        lines += ["", f"Held-out pairs per seed: {held_pairs}.", "",
                  f"## 3. Continued pretraining per name form ({args.steps} steps each from the shipped checkpoint)", "",
                  "Each arm: `jobs.pretrain --config jobs/configs/demo.yaml --launcher local` (corpus episodes, real "
                  f"tables only, 4 episodes a step, lr 2e-4, same seed and episode stream), corpus `{args.corpus}` "
                  "(public suite and regression screen tables and their copies left out). `val_real_ratio`: the run's "
                  "own held-out corpus tables (model / context-mean squared error, lower is better).", "",
                  "| arm | steps | val_real_ratio | public real | screen real | public scrambled | screen scrambled | "
                  "vs sentence+symbolic (real), lower on |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for arm in ARMS:
            rows = arm_rows[arm.name]
            d, lo, n = paired_delta(rows["real"], default_arm)
            m = arm_metrics[arm.name]
            lines.append(f"| {arm.name} | {m.get('step', float('nan')):.0f} | {m.get('val_real_ratio', float('nan')):.3f} | "
                         f"{suite_mean(rows['real'], 'public'):.4f} | {suite_mean(rows['real'], 'screen'):.4f} | "
                         f"{suite_mean(rows['scrambled'], 'public'):.4f} | {suite_mean(rows['scrambled'], 'screen'):.4f} | "
                         f"{d:+.4f}, {lo} of {n} |")
        reads_after = {a.name: paired_delta(arm_rows[a.name]["scrambled"], arm_rows[a.name]["real"])[0] for a in ARMS}
        steps_done = {int(m.get("step", 0)) for m in arm_metrics.values()}
        if steps_done != {args.steps}:
            done = ", ".join(f"{a}: {m.get('step', 0):.0f}" for a, m in arm_metrics.items())
            lines += ["", f"Arms stopped by the {args.max_minutes:g}-minute cap ran fewer than {args.steps} steps ({done}). "
                      f"The cosine schedule is {args.steps} steps long in every arm and the episode stream is the same, so "
                      "up to the shortest arm's last step every arm had the same learning rate and saw the same episodes."]
        lines += ["", "Scrambled minus real after continued pretraining: " + ", ".join(
            f"{a} {d:+.4f}" for a, d in reads_after.items()) + "."]
        decision = ("The default stays: sentence embeddings + parsed name features (`data.column_name_embedding=sentence`, "
             "`model.symbolic_name_features=true`), the form the shipped checkpoint was trained with. "
             + (f"{best_arm.name} led the arms by {best_delta[0]:+.4f} mean R2 (lower on {best_delta[1]} of "
                f"{best_delta[2]} table-splits): a candidate for the next curriculum stage, which alone can make it the "
                "default (a checkpoint reads names the way it was trained to). " if arm_wins else
                f"No arm beat it: the largest arm difference is {noise:.4f} mean R2 after {args.steps} steps. ")
             + ("The shipped model's scores move with its names, " if reads else
                "The shipped model's scores barely move with its names (it never saw a meaningful one), ")
             + "and the contrastive projection's gain on same-quantity pairs (part 2) is kept as an option "
             "(`data.column_name_embedding=contrastive`, `data.name_projection=FILE`). Showing what names are worth in "
             "context would need a stage of thousands of steps per arm on named real tables (hours at 1 thread), every "
             "suite table and all three splits: beyond this page's 40 CPU-minutes.")

    # 4. fine-tuned, split 0, beside CatBoost
    fine = (reused or {}).get("fine_tuned")
    if args.fine_tuned:
        fine_tasks = load_tasks(FINE_TUNED_QUICK_TABLES if args.quick else FINE_TUNED_TABLES)
        fine = fine_tuned_part(fine_tasks, shipped,
                               named_checkpoint(shipped, work / "shipped_no_names", embedding="none", symbolic=False),
                               args, done=fine)
        tasks = tasks if in_context else fine_tasks
        say("fine-tuned " + ", ".join(f"{v} {np.mean([r['r2'] for r in rows]):.3f}" for v, rows in fine.items()))
    if fine:
        fine_headline, fine_lines, fine_decision, fine_metrics = fine_tuned_section(
            fine, part1["real"] if in_context else [], args.max_steps)
        if in_context:
            headline_at = next(i for i, line in enumerate(lines) if line.startswith("Headline: "))
            lines[headline_at] += f". Fine-tuned: {fine_headline}"
            lines += ["", *fine_lines]
            decision += " " + fine_decision
        else:
            lines = ["# Column names fine-tuned: real, scrambled and no names", "", f"Headline: {fine_headline}", "",
                     *fine_lines]
            decision = fine_decision
        metrics.update(fine_metrics)
    lines += ["", "## Decision", "", decision, ""]
    context = {
        "command": "python -m benchmarks.column_names " + shlex.join(sys.argv[1:] if argv is None else argv),
        **({"reused": f"parts 1-2 and the arms not rerun ({', '.join(a.name for a in ARMS if a.name not in args.arms)}) "
                      f"from {args.reuse_scores}, an earlier run of this benchmark"
                      + ("; part 4 run here" if args.fine_tuned else "") + "; total minutes count this run only"}
           if reused else {}),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "total minutes": f"{(time.perf_counter() - began) / 60:.1f}",
        "training runs": f"{work}/track (MLflow experiment {NAME!r})",
        "commit": commit(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }

    def render(path: Path) -> Path:
        plt = pyplot()
        panels = 3 * in_context + bool(fine)
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
        axes = axes[0]
        if in_context:
            x = np.arange(2)
            for i, v in enumerate(VARIANTS):
                axes[0].bar(x + i * 0.2 - 0.3, [suite_mean(part1[v], s) for s in ("public", "screen")], 0.2, label=v)
            axes[0].set_xticks(x, ["public", "screen"])
            axes[0].set_ylabel("mean test R2")
            axes[0].set_title("shipped checkpoint: name variants")
            axes[0].legend(fontsize=8)
            forms = list(recall)
            axes[1].bar(forms, [np.mean(recall[f]) for f in forms], yerr=[np.std(recall[f]) for f in forms])
            axes[1].set_ylabel("held-out pair recall@1")
            axes[1].set_title("name forms: same-quantity pairs")
            axes[1].tick_params(axis="x", labelsize=7)
            for i, v in enumerate(("real", "scrambled")):
                axes[2].bar(np.arange(len(ARMS)) + i * 0.35 - 0.175,
                            [np.mean([r["r2"] for r in arm_rows[a.name][v]]) for a in ARMS], 0.35, label=f"{v} names")
            axes[2].set_xticks(np.arange(len(ARMS)), [a.name for a in ARMS], fontsize=7)
            axes[2].set_ylabel("mean test R2 (all tables)")
            axes[2].set_title(f"after {args.steps} continued steps per arm")
            axes[2].legend(fontsize=8)
        if fine:
            ax, x, arms = axes[-1], np.arange(2), list(fine)
            for i, v in enumerate(arms):
                ax.bar(x + (i - (len(arms) - 1) / 2) * 0.8 / len(arms), [suite_mean(fine[v], s) for s in ("public", "screen")],
                       0.8 / len(arms), label=v if v in ("catboost", SEED_CONTROL) else f"{v} names", color="C7" if v == "catboost" else f"C{i}")
            ax.set_xticks(x, ["public", "screen"])
            ax.set_ylabel("mean test R2")
            ax.set_title(f"fine-tuned ({args.max_steps} steps), split 0")
            ax.legend(fontsize=8)
        return save_figure(fig, path)

    if in_context:
        metrics.update({f"shipped_{v}_{s}": suite_mean(part1[v], s) for v in VARIANTS for s in ("public", "screen")})
        metrics.update({f"recall_{f.replace('+', '_')}": float(np.mean(v)) for f, v in recall.items()})
        metrics.update({f"arm_{a.name.replace('+', '_')}_real": float(np.mean([r["r2"] for r in arm_rows[a.name]["real"]]))
                        for a in ARMS})
        (work / "scores.json").write_text(json.dumps({"part1": part1, "catboost": catboost, "recall": recall,
                                                       "arms": arm_rows, "arm_metrics": arm_metrics,
                                                       **({"fine_tuned": fine} if fine else {})}, indent=1))
    elif fine:
        (work / "fine_tuned_scores.json").write_text(json.dumps({"fine_tuned": fine}, indent=1))
    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"quick": args.quick, "steps": args.steps, "splits": ",".join(map(str, seeds)),
                    "tables": ",".join(t.table for t in tasks), "fine_tuned": bool(fine),
                    "fine_tune_max_steps": args.max_steps}, metrics=metrics)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
