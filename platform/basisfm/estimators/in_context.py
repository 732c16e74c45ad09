"""In-context prediction for the estimators: a fitted table's training rows are the context, no gradient step.

    from basisfm.estimators.in_context import InContextSettings, predict_numeric_in_context
    point, q = predict_numeric_in_context(model, record, train_table, query_table, embedder,
                                          InContextSettings(max_context=512, n_estimators=4), quantiles=[0.1, 0.9])

`record` is the fitted table's manifest record (`TablePreprocessor.record()`: feature columns, then the
target column(s), listed in `candidate_targets`); `train_table` holds the training rows with their targets
and `query_table` the rows to predict, their target column(s) null (`TablePreprocessor.to_arrow`). Cells are
embedded once for both. Each of `n_estimators` members builds its own episodes:
  - its own seed and feature order; a table wider than `max_columns` gives every member its most relevant
    features (`feature_selection="relevance"`: by mutual information with the target(s) on the training
    rows, `feature_relevance`) or, with "random", a random subset of its own;
  - a context of up to `max_context` training rows: all of them when they fit, else a random draw per
    member (a query's prediction then never depends on the other queries), or with `retrieval` the
    training rows nearest to each chunk of `query_batch` queries (TabDPT-style);
  - the target's scale (column_mean / column_std) from its context rows, as in pretraining;
  - optionally (TabPFN's member preprocessing) its own coding of categorical features
    (`categorical_features="ordinal"`: a column's values become the numbers 0..m-1 in an order drawn per
    member; "target": in the order of their smoothed mean target on the training rows), its own transform of the numeric features (`feature_transforms`, cycled over members: "power"
    is Yeo-Johnson, "quantile" maps a column's training values to a normal) and its own target transform
    (`target_transforms`, the same kinds; the member's quantiles are mapped back, its point is the mean of
    `TRANSFORM_LEVELS` mapped-back quantiles).
Members' predictions are averaged: numeric means and quantiles (in the target's own units), or label
probabilities. `model` may be a list (an estimator's members, each fine-tuned on its own): member k then
predicts with model k (cycling when there are fewer models than members). Works for every architecture;
the per-row `basis` model reads no context rows (it cannot use them) but still takes the target's scale
from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, ColumnStats, TableRecord
from basisfm.data.batch import TableBatch
from basisfm.data.collate import Embedder, PreparedTable, batch_arrays, column_moments, prepare_table
from basisfm.model import reads_context
from basisfm.seeds import derive_seed
from basisfm.errors import ConfigError, TableError


CATEGORICAL_FEATURES = ("text", "ordinal", "sorted", "target")
FEATURE_SELECTIONS = ("relevance", "validated", "random")
# "validated" selection: the relevance-ranked feature counts tried besides all a member may read (those below it).
VALIDATED_COUNTS = (16, 8, 4)
# ... on at most this many held-out training rows per fold (two folds: each half of the labelled rows predicted
# from the other), with at least this many labelled rows (fewer and the choice is noise: every feature is read).
VALIDATION_QUERIES = 256
MIN_VALIDATION_ROWS = 64
# A smaller feature count replaces all of them, and a feature is pruned from a short list, only when the held-out
# squared error is lower by this fraction.
VALIDATION_MARGIN = 0.02
# A chosen list of at most this many features is pruned one feature at a time, then the this many most relevant
# are offered back one at a time (each costs a validation pass).
PRUNED_FEATURES = 16
# Labelled rows (at most) the relevance of a wide table's features is measured on: mutual information's
# nearest-neighbour estimate costs about a second per 2,000 rows x 50 features at 1 thread.
RELEVANCE_ROWS = 2_000
# "target" coding: a categorical value's mean target is shrunk toward the overall mean by this many pseudo-rows
# (LightGBM's cat_smooth default), so a value seen once ranks near the middle, not at its own row's target.
TARGET_ORDER_SMOOTHING = 10.0
TRANSFORMS = ("none", "power", "quantile")
# Quantile levels whose mapped-back values average to a transformed member's point prediction.
TRANSFORM_LEVELS = tuple((k + 0.5) / 64 for k in range(64))


@dataclass
class InContextSettings:
    max_context: int = 512  # training rows a query reads (its support rows)
    n_estimators: int = 4  # members averaged; each has its own seed, feature order / subset and context draw
    retrieval: bool = False  # context = the training rows nearest to each query chunk, instead of a random draw
    query_batch: int = 128  # query rows per episode (bounds memory; predictions do not depend on it without retrieval)
    max_columns: int = 64  # feature + target columns per episode; wider tables give each member a feature subset
    # which features a member of a too-wide table reads: "relevance" the most informative (mutual information
    # with the target), "random" a random subset per member; "validated": the most relevant, as many of them as
    # predict held-out training rows best in context, pruned (`validated_features`; numeric targets, any width)
    feature_selection: str = "relevance"
    # numbers 0..m-1, order drawn per member; "sorted": in the strings' order; "target": in the order of the
    # value's mean target on the training rows; "text": embedded strings
    categorical_features: str = "ordinal"
    feature_transforms: tuple[str, ...] = ("none",)  # member k's numeric features go through entry k % len
    target_transforms: tuple[str, ...] = ("none",)  # member k's numeric targets go through entry k % len
    seed: int = 0

    def validate(self) -> None:
        for name in ("max_context", "n_estimators", "query_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_columns < 2:
            raise ConfigError(f"max_columns must be at least 2, got {self.max_columns!r}")
        if self.feature_selection not in FEATURE_SELECTIONS:
            raise ConfigError(f"feature_selection must be one of {FEATURE_SELECTIONS}, got {self.feature_selection!r}")
        if self.categorical_features not in CATEGORICAL_FEATURES:
            raise ConfigError(f"categorical_features must be one of {CATEGORICAL_FEATURES}, got {self.categorical_features!r}")
        for name in ("feature_transforms", "target_transforms"):
            kinds = getattr(self, name)
            if isinstance(kinds, str) or not kinds:
                raise ConfigError(f"{name} must be a non-empty list drawn from {TRANSFORMS}, got {kinds!r}")
            unknown = [t for t in kinds if t not in TRANSFORMS]
            if unknown:
                raise ConfigError(f"{name} may hold {TRANSFORMS}, got {unknown[0]!r}")


# How every member reads a fitted table (`table_reading`): the feature positions it may read, and what "target"
# coding ranks categories by (None for the other codings).
Reading = tuple[np.ndarray, "np.ndarray | None"]


@dataclass
class _Context:
    prepared: PreparedTable  # training rows 0..n_train-1, then the query rows
    record: TableRecord
    n_train: int
    targets: np.ndarray  # [T] positions of the target columns
    features: np.ndarray  # [F] positions of the feature columns


def _context(record: TableRecord, train_table: pa.Table, query_table: pa.Table, embedder: Embedder,
             targets: Sequence[str] | None) -> _Context:
    names = [c.name for c in record.columns]
    targets = list(targets) if targets is not None else list(record.candidate_targets)
    if not targets:
        raise TableError("the record names no target column (candidate_targets is empty); pass targets=[...]", table=record.id)
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise TableError(f"target column(s) {unknown} are not columns of the table {names}", table=record.id, column=unknown[0])
    if train_table.num_rows < 1:
        raise TableError("in-context prediction needs at least one training row", table=record.id)
    table = pa.concat_tables([train_table.select(names), query_table.select(names).cast(train_table.select(names).schema)])
    prepared = prepare_table(table, record, embedder)
    target_positions = np.asarray([names.index(t) for t in targets], dtype=np.int64)
    return _Context(prepared=prepared, record=record, n_train=train_table.num_rows, targets=target_positions,
                    features=np.setdiff1d(np.arange(len(names)), target_positions))


def _members(model: torch.nn.Module, ctx: _Context, settings: InContextSettings, *, numeric_targets: bool = False,
             readable: np.ndarray | None = None):
    """Yield (member, query positions [Q] into the query table, TableBatch, the member's target transform or
    None) for every episode of every member. `numeric_targets`: apply `settings.target_transforms`. `readable`:
    the features `table_reading` lets these training rows' members read, when already computed."""
    settings.validate()
    n_query = ctx.prepared.values.shape[0] - ctx.n_train
    labelled = _labelled(ctx)
    if len(labelled) == 0:
        raise TableError("no training row has a target value; nothing to learn from", table=ctx.record.id)
    shows_support = reads_context(model)
    n_features = max(1, settings.max_columns - len(ctx.targets))
    numeric = ctx.features[(ctx.prepared.kinds[ctx.features] == int(ColumnKind.NUMERIC))
                           & (ctx.prepared.string_uids[:, ctx.features] < 0).all(axis=0)]
    # A feature transform is fitted on all training rows, the same for every member of its kind: once per kind.
    member_kinds = [settings.feature_transforms[m % len(settings.feature_transforms)] for m in range(settings.n_estimators)]
    by_transform = {"none": ctx.prepared}
    for kind in member_kinds:
        if kind not in by_transform:
            by_transform[kind] = (ColumnTransform(kind, ctx.prepared, numeric, np.arange(ctx.n_train)).apply(ctx.prepared)
                                  if len(numeric) else ctx.prepared)
    # every member reads the same features (in its own order); "target" coding's ranking is computed once
    readable, rank_by = table_reading(ctx.prepared, ctx.features, ctx.targets, labelled, settings, readable)
    for member in range(settings.n_estimators):
        rng = np.random.default_rng(derive_seed("in_context", settings.seed, member))
        features = rng.permutation(readable)[:n_features]
        columns = np.concatenate([ctx.targets, features])
        fixed_context = labelled if len(labelled) <= settings.max_context else np.sort(rng.choice(labelled, settings.max_context, replace=False))
        transform = None
        view = replace(ctx, prepared=by_transform[member_kinds[member]])
        view = replace(view, prepared=coded_categories(view.prepared, view.features, settings.categorical_features, rng, rank_by))
        kind = settings.target_transforms[member % len(settings.target_transforms)]
        if numeric_targets and kind != "none":
            transform = ColumnTransform(kind, view.prepared, view.targets, labelled)
            view = replace(view, prepared=transform.apply(view.prepared))
        for start in range(0, n_query, settings.query_batch):
            queries = np.arange(start, min(n_query, start + settings.query_batch))
            context = fixed_context
            if settings.retrieval and len(labelled) > settings.max_context:
                context = nearest_context(view.prepared, features, labelled, view.n_train + queries, settings.max_context)
            yield member, queries, _episode(view, columns, context, view.n_train + queries, shows_support, rng), transform


def _labelled(ctx: _Context) -> np.ndarray:
    """Positions of the training rows with at least one target value (the rows a context may hold); sets the
    table's row index, which episodes carry."""
    ctx.prepared.row_index = np.arange(ctx.prepared.values.shape[0], dtype=np.int64)
    return np.flatnonzero((~ctx.prepared.missing[: ctx.n_train][:, ctx.targets]).any(axis=1))


@torch.no_grad()
def validated_features(model: torch.nn.Module, ctx: _Context, settings: InContextSettings) -> np.ndarray:
    """The features every member reads with `feature_selection="validated"`: the training rows' features ranked
    by relevance (`feature_relevance`), as many of them as `model` predicts held-out training rows best with,
    less those it predicts better without.

    Validation (`_held_out_error`): each half of the labelled training rows predicted in context from the
    other, the same rows and contexts for every feature list. First the count: all a member may read
    (`max_columns` less the targets) or the `VALIDATED_COUNTS` below that; a smaller count replaces all only
    when it errs `VALIDATION_MARGIN` less, the lowest such wins. Then, when the list holds at most
    `PRUNED_FEATURES`, each feature in turn, the least relevant first, is dropped when predicting without it
    errs `VALIDATION_MARGIN` less; last, each of the `PRUNED_FEATURES` most relevant features the list lacks,
    the most relevant first, joins it when predicting with it errs `VALIDATION_MARGIN` less (a feature that
    did not help beside noise can help once the noise is gone). Under `MIN_VALIDATION_ROWS` labelled rows, or with no smaller count to try,
    this is `most_relevant`'s choice. Numeric targets only (a class indicator is one).

    Why: the model reads every feature it is given, and where the target depends on a few of many features
    the rest cost it accuracy. Public suite, 3 splits (`benchmarks/results/evaluate_public_icl_validated.md`):
    median R² 0.637 reading up to 31 most relevant features, 0.662 with the count validated (loans_full_schema
    0.553 -> 0.642), 0.677 pruned too (loans 0.678, Carseats 0.745), 0.698 with features offered back (loans
    0.720: on one 80% split, three payment columns, then `balance` back); four folds instead of two measured
    lower (0.654)."""
    labelled = _labelled(ctx)
    limit = max(1, settings.max_columns - len(ctx.targets))
    full = min(len(ctx.features), limit)
    counts = [full] + [c for c in VALIDATED_COUNTS if c < full]
    relevance = None
    if len(counts) > 1 and len(labelled) >= MIN_VALIDATION_ROWS:
        relevance = feature_relevance(ctx.prepared, ctx.features, ctx.targets, labelled, settings.seed)
    if relevance is None:
        return most_relevant(ctx.prepared, ctx.features, ctx.targets, labelled, limit, settings.seed)
    ranked = ctx.features[np.argsort(-relevance, kind="stable")]
    return _search_features(ranked, counts, _held_out_error(model, ctx, labelled, settings), limit)


def _search_features(ranked: np.ndarray, counts: list[int], error_of, limit: int) -> np.ndarray:
    """`validated_features`' search over lists of the `ranked` features (most relevant first), given
    `error_of(list) -> float`: the best of the first `counts` (counts[0] is all; a shorter one only when it
    errs `VALIDATION_MARGIN` less), pruned when it holds at most `PRUNED_FEATURES`, then offered back the
    `PRUNED_FEATURES` most relevant it lacks, one at a time, up to `limit` features."""
    errors = [error_of(ranked[:count]) for count in counts]
    best = 0
    for i in range(1, len(counts)):
        if errors[i] < errors[0] * (1 - VALIDATION_MARGIN) and errors[i] < errors[best]:
            best = i
    chosen, error = ranked[: counts[best]], errors[best]
    if len(chosen) <= PRUNED_FEATURES:
        for feature in chosen[::-1].copy():  # the least relevant first
            if len(chosen) == 1:
                break
            without = chosen[chosen != feature]
            error_without = error_of(without)
            if error_without < error * (1 - VALIDATION_MARGIN):
                chosen, error = without, error_without
    for feature in ranked[:PRUNED_FEATURES]:  # then back, the most relevant first: one pruned early may now help
        if feature in chosen or len(chosen) >= limit:
            continue
        with_it = np.concatenate([chosen, [feature]])
        error_with = error_of(with_it)
        if error_with < error * (1 - VALIDATION_MARGIN):
            chosen, error = with_it, error_with
    return chosen


def _held_out_error(model: torch.nn.Module, ctx: _Context, labelled: np.ndarray, settings: InContextSettings):
    """`validated_features`' yardstick: a function of a feature list that returns `model`'s squared error on
    two folds of the `labelled` rows predicted in context (up to `VALIDATION_QUERIES` rows of one random half
    from up to `max_context` rows of the other, then the other way round; categorical features coded as
    `settings` says, no transform), summed over the targets in units of each target's variance. The folds are
    drawn once from the settings' seed, so every list is measured on the same rows and contexts."""
    from basisfm.losses.objective import decode_numeric

    rng = np.random.default_rng(derive_seed("validated_features", settings.seed))
    folds = []  # (the table coded for the fold, its context rows, its held-out rows)
    halves = np.array_split(rng.permutation(labelled), 2)
    for pool, held in ((halves[0], halves[1]), (halves[1], halves[0])):
        context = pool if len(pool) <= settings.max_context else rng.choice(pool, settings.max_context, replace=False)
        queries = held if len(held) <= VALIDATION_QUERIES else rng.choice(held, VALIDATION_QUERIES, replace=False)
        rank_by = target_signal(ctx.prepared, ctx.targets[0], pool) if settings.categorical_features == "target" else None
        view = replace(ctx, prepared=coded_categories(ctx.prepared, ctx.features, settings.categorical_features, rng, rank_by))
        folds.append((view, np.sort(context), np.sort(queries)))
    held_rows = np.concatenate([queries for _, _, queries in folds])
    truth = np.where(ctx.prepared.missing[np.ix_(held_rows, ctx.targets)], np.nan, ctx.prepared.values[np.ix_(held_rows, ctx.targets)])
    scale = np.nanvar(truth, axis=0) * np.isfinite(truth).sum(axis=0)  # [T] each target's total squared deviation
    scale = np.where(scale > 0, scale, np.inf)  # a constant target says nothing about the features
    slot = {ctx.record.columns[t].name: j for j, t in enumerate(ctx.targets)}
    shows_support = reads_context(model)

    def error_of(features: np.ndarray) -> float:
        columns = np.concatenate([ctx.targets, features])
        squared = np.zeros(len(ctx.targets))
        for view, context, queries in folds:
            for start in range(0, len(queries), settings.query_batch):
                chunk = queries[start: start + settings.query_batch]
                batch = _episode(view, columns, context, chunk, shows_support, rng).to(_device(model))
                out = model(batch)
                values, _ = decode_numeric(model, out, batch, None)
                rows, cols = _predicted_cells(out, batch, slot)
                rows = chunk[rows]
                known = ~ctx.prepared.missing[rows, ctx.targets[cols]]
                error = (values.cpu().numpy().astype(np.float64) - ctx.prepared.values[rows, ctx.targets[cols]]) ** 2
                np.add.at(squared, cols[known], error[known])
        return float((squared / scale).sum())

    return error_of


@torch.no_grad()
def training_reading(model: torch.nn.Module | Sequence[torch.nn.Module], record: TableRecord, train_table: pa.Table,
                     embedder: Embedder, settings: InContextSettings | None = None, *,
                     targets: Sequence[str] | None = None) -> np.ndarray:
    """The features every member reads from `train_table`'s rows (positions into `record.columns`): those
    `table_reading` allows, cut by `validated_features` with `model` (the first of a list) under
    `feature_selection="validated"` when the targets are numeric. From the training rows alone, so an estimator
    chooses once, at fit, and passes the choice to every prediction as `readable` (`predict_numeric_in_context`
    without it chooses again, from the training rows coded beside its query rows)."""
    settings = settings or InContextSettings()
    ctx = _context(record, train_table, train_table.slice(0, 0), embedder, targets)
    numeric = not any(ColumnKind(int(k)).is_string for k in ctx.prepared.kinds[ctx.targets])
    if settings.feature_selection == "validated" and numeric:
        return validated_features(_as_models(model)[0], ctx, settings)
    readable, _ = table_reading(ctx.prepared, ctx.features, ctx.targets, _labelled(ctx), settings)
    return readable


def table_reading(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                  settings: InContextSettings, readable: np.ndarray | None = None) -> Reading:
    """How every member reads a fitted table, the same for in-context prediction and episodic fine-tuning:
    (the features it may read: a table too wide for one episode, `max_columns` less its targets, gives its
    most relevant with `feature_selection="relevance"` or "validated", which `validated_features` then cuts
    where a model predicts; what "target" coding ranks categories by, None for the other codings). Computed on
    the `labelled` training rows, once per table; `readable`: the first part when already computed for these
    training rows (the relevance ranking takes about a second on a wide table)."""
    if readable is None:
        readable = features
        if settings.feature_selection in ("relevance", "validated"):
            readable = most_relevant(prepared, features, targets, labelled, max(1, settings.max_columns - len(targets)), settings.seed)
    rank_by = target_signal(prepared, targets[0], labelled) if settings.categorical_features == "target" else None
    return readable, rank_by


def most_relevant(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                  n: int, seed: int) -> np.ndarray:
    """The `n` of `features` most relevant to the target(s) (`feature_relevance`), in that order; all of
    `features` when they are no more than `n` or too few rows are labelled to tell."""
    if len(features) <= n:
        return features
    relevance = feature_relevance(prepared, features, targets, labelled, seed)
    return features if relevance is None else features[np.argsort(-relevance, kind="stable")[:n]]


def feature_relevance(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                      seed: int) -> np.ndarray | None:
    """[F] how much each of `features` tells about the target(s): its mutual information with each target
    (scikit-learn's nearest-neighbour estimate; a classifier's target as classes), summed over the targets,
    on up to `RELEVANCE_ROWS` of the `labelled` training rows. String columns count as discrete (a missing
    cell is a value of its own), a numeric column's missing cells take its median. None when there are too
    few labelled rows to estimate it (under 2 x the estimate's 3 neighbours)."""
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    rng = np.random.default_rng(derive_seed("relevance", seed))
    rows = labelled if len(labelled) <= RELEVANCE_ROWS else np.sort(rng.choice(labelled, RELEVANCE_ROWS, replace=False))
    if len(rows) < 6:
        return None
    x = np.zeros((len(rows), len(features)))
    discrete = (prepared.string_uids[:, features] >= 0).any(axis=0)
    for i, j in enumerate(features):
        if discrete[i]:
            x[:, i] = np.unique(prepared.string_uids[rows, j], return_inverse=True)[1]
        else:
            column = np.where(prepared.missing[rows, j], np.nan, prepared.values[rows, j])
            present = np.isfinite(column)
            x[:, i] = np.where(present, column, np.median(column[present]) if present.any() else 0.0)
    relevance = np.zeros(len(features))
    for t in targets:
        known = ~prepared.missing[rows, t]
        if known.sum() < 6:
            continue
        # A string column whose every value is its own (an id, an address) tells nothing a new row can use, and
        # scikit-learn's estimate fails on it for a numeric target (no value seen twice): it scores 0.
        repeats = np.array([not discrete[i] or len(np.unique(x[known, i])) < known.sum() for i in range(len(features))])
        if not repeats.any():
            continue
        random_state = derive_seed("relevance", seed, int(t)) % 2**32
        if (prepared.string_uids[:, t] >= 0).any():
            relevance[repeats] += mutual_info_classif(x[known][:, repeats], prepared.string_uids[rows[known], t],
                                                      discrete_features=discrete[repeats], random_state=random_state)
        else:
            relevance[repeats] += mutual_info_regression(x[known][:, repeats], prepared.values[rows[known], t],
                                                         discrete_features=discrete[repeats], random_state=random_state)
    return relevance


def _with_numeric_columns(prepared: PreparedTable, columns: np.ndarray, values: np.ndarray) -> PreparedTable:
    """A copy of `prepared` whose `columns` hold the numbers `values` [N, len(columns)] (NaN = missing),
    their kind, scale window and moments recomputed from the present cells."""
    present = np.isfinite(values)
    new_values, missing, uids, kinds = prepared.values.copy(), prepared.missing.copy(), prepared.string_uids.copy(), prepared.kinds.copy()
    new_values[:, columns] = np.where(present, values, 0.0)
    missing[:, columns] = ~present
    uids[:, columns] = -1
    kinds[columns] = int(ColumnKind.NUMERIC)
    magnitude = np.where(present, np.abs(values), 0.0)
    abs_max, min_nonzero = prepared.abs_max.copy(), prepared.min_nonzero.copy()
    abs_max[columns] = magnitude.max(axis=0, initial=0.0)
    min_nonzero[columns] = np.where(magnitude > 0, magnitude, np.inf).min(axis=0, initial=np.inf)
    min_nonzero[columns] = np.where(np.isfinite(min_nonzero[columns]), min_nonzero[columns], 0.0)
    mean, std = prepared.mean.copy(), prepared.std.copy()
    mean[columns], std[columns] = column_moments(np.where(present, values, 0.0), ~present)
    return replace(prepared, values=new_values, missing=missing, string_uids=uids, kinds=kinds,
                   abs_max=abs_max, min_nonzero=min_nonzero, mean=mean, std=std)


def coded_categories(prepared: PreparedTable, features: np.ndarray, coding: str, rng: np.random.Generator,
                     rank_by: np.ndarray | None = None) -> PreparedTable:
    """`prepared` with its categorical `features` coded as `coding` says (`InContextSettings.categorical_features`):
    "text" leaves the embedded strings, "ordinal" numbers them in an order drawn from `rng`, "sorted" in the
    strings' order, "target" in the order of `rank_by` (`target_signal`)."""
    if coding == "text":
        return prepared
    return ordinal_features(prepared, features, rng if coding == "ordinal" else None, rank_by=rank_by if coding == "target" else None)


def ordinal_features(prepared: PreparedTable, features: np.ndarray, rng: np.random.Generator | None,
                     rank_by: np.ndarray | None = None) -> PreparedTable:
    """Categorical feature columns coded as numbers (TabPFN's encoding): a column's m distinct values become
    0..m-1 in an order drawn from `rng` (so members disagree on it), or with `rng=None` in the strings'
    sorted order (which keeps grades "A" < "B" and levels "1-2" < "3-4" in order), or with `rank_by` (one
    number per row, NaN where unknown: `target_signal`) in the order of its smoothed mean over a value's rows
    (how LightGBM and CatBoost order categories; a grade's codes then rise with the target it predicts, a
    relation the model reads as it reads a numeric feature). Missing cells stay missing. Text columns (free
    text, not categories) keep their embedded strings."""
    columns = features[prepared.kinds[features] == int(ColumnKind.CATEGORICAL)]
    if len(columns) == 0:
        return prepared
    codes = np.full((prepared.values.shape[0], len(columns)), np.nan)
    for i, j in enumerate(columns):
        uids = prepared.string_uids[:, j]
        present = uids >= 0
        distinct, inverse = np.unique(uids[present], return_inverse=True)
        if rank_by is not None:
            key = smoothed_means(inverse, rank_by[present], len(distinct))
            order = np.argsort(np.argsort(key, kind="stable"), kind="stable")
        elif rng is None:
            order = np.argsort(np.argsort([prepared.strings[u] for u in distinct], kind="stable"))
        else:
            order = rng.permutation(len(distinct))
        codes[present, i] = order[inverse]
    return _with_numeric_columns(prepared, columns, codes)


def target_signal(prepared: PreparedTable, target: int, labelled: np.ndarray) -> np.ndarray:
    """What "target" coding ranks categories by: per row, the target's value (a numeric target) or whether it
    is the training rows' most common class (a categorical one; for two classes, the class rate); NaN on
    every row outside `labelled` (query rows and unlabelled ones never inform a code)."""
    signal = np.full(prepared.values.shape[0], np.nan)
    uids = prepared.string_uids[labelled, target]
    if (uids >= 0).any():
        classes, counts = np.unique(uids[uids >= 0], return_counts=True)
        signal[labelled] = np.where(uids >= 0, (uids == classes[np.argmax(counts)]).astype(float), np.nan)
    else:
        signal[labelled] = np.where(prepared.missing[labelled, target], np.nan, prepared.values[labelled, target])
    return signal


def smoothed_means(groups: np.ndarray, signal: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the mean of its finite `signal` values shrunk toward their overall mean by
    `TARGET_ORDER_SMOOTHING` pseudo-rows (a group with no known value gets the overall mean)."""
    known = np.isfinite(signal)
    prior = float(signal[known].mean()) if known.any() else 0.0
    sums = np.bincount(groups[known], weights=signal[known], minlength=n_groups)
    counts = np.bincount(groups[known], minlength=n_groups)
    return (sums + TARGET_ORDER_SMOOTHING * prior) / (counts + TARGET_ORDER_SMOOTHING)


class NormalScores:
    """The "quantile" transform: a value's quantile u among the training values, squeezed into
    [0.5/n, 1 - 0.5/n], becomes the standard normal's quantile of it (sklearn's normal output would send
    the training minimum and maximum to +-5.2, outliers the model never saw in pretraining)."""

    def fit(self, y: np.ndarray) -> "NormalScores":
        from sklearn.preprocessing import QuantileTransformer

        self.uniform = QuantileTransformer(n_quantiles=max(2, min(1000, len(y))), output_distribution="uniform").fit(y)
        self.edge = 0.5 / len(y)
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        from scipy.stats import norm

        return norm.ppf(self.edge + (1 - 2 * self.edge) * self.uniform.transform(y))

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        from scipy.stats import norm

        return self.uniform.inverse_transform(np.clip((norm.cdf(z) - self.edge) / (1 - 2 * self.edge), 0.0, 1.0))


class ColumnTransform:
    """A member's monotone transform of numeric `columns` ("power": Yeo-Johnson, "quantile": `NormalScores`),
    fitted per column on the training rows `fit_rows`: `apply` returns the table with the columns
    transformed, `inverse` maps predicted target quantiles back. Quantiles survive a monotone map, means
    do not: a point prediction is the mean of the mapped-back `TRANSFORM_LEVELS` quantiles. A column the
    transform cannot fit (no training value, or a constant Yeo-Johnson cannot scale) stays as it is."""

    def __init__(self, kind: str, prepared: PreparedTable, columns: np.ndarray, fit_rows: np.ndarray):
        from sklearn.preprocessing import PowerTransformer

        self.kind, self.columns = kind, columns
        self.fitted, self.bounds = [], []
        for c in columns:
            y = prepared.values[fit_rows, c][~prepared.missing[fit_rows, c]].reshape(-1, 1)
            transformer, bounds = None, None
            if len(y):
                if kind == "power":
                    transformer = PowerTransformer(method="yeo-johnson", standardize=True)
                else:
                    transformer = NormalScores()
                with np.errstate(all="ignore"):
                    z = transformer.fit(y).transform(y)[:, 0]
                if np.isfinite(z).all():
                    span = float(np.ptp(z))
                    # Predictions far outside the training range would map back through the transform's asymptote.
                    bounds = (float(z.min()) - 0.25 * span, float(z.max()) + 0.25 * span, float(y.min()), float(y.max()))
                else:
                    transformer = None
            self.fitted.append(transformer)
            self.bounds.append(bounds)

    def apply(self, prepared: PreparedTable) -> PreparedTable:
        values = np.where(prepared.missing[:, self.columns], np.nan, prepared.values[:, self.columns])
        for i, transformer in enumerate(self.fitted):
            present = np.isfinite(values[:, i])
            if transformer is not None and present.any():
                with np.errstate(all="ignore"):
                    values[present, i] = transformer.transform(values[present, i].reshape(-1, 1))[:, 0]
        return _with_numeric_columns(prepared, self.columns, values)

    def inverse(self, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`values` [N, ...] in the transformed space of column `slot[n]` -> the column's own units."""
        out = np.asarray(values, dtype=np.float64).copy()
        for i, transformer in enumerate(self.fitted):
            rows = slot == i
            if transformer is None or not rows.any():
                continue
            low, high, y_min, y_max = self.bounds[i]
            z = np.clip(values[rows], low, high)
            with np.errstate(all="ignore"):
                y = transformer.inverse_transform(z.reshape(-1, 1)).reshape(z.shape)
            out[rows] = np.nan_to_num(y, nan=(y_min + y_max) / 2, posinf=y_max, neginf=y_min)
        return out


def nearest_context(prepared: PreparedTable, features: np.ndarray, pool: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
    """[<= size] rows of `pool` nearest to the `queries` (positions in `prepared`): each query's
    ceil(size / Q) nearest first, by squared distance of standardised numeric-like features (a missing
    cell counts as the mean) plus 1 per differing string; filled up to `size` by overall nearness."""
    is_string = (prepared.string_uids[:, features] >= 0).any(axis=0)
    numeric, strings = features[~is_string], features[is_string]

    def standardised(rows: np.ndarray) -> np.ndarray:
        z = (prepared.values[np.ix_(rows, numeric)] - prepared.mean[numeric]) / prepared.std[numeric]
        return np.where(prepared.missing[np.ix_(rows, numeric)], 0.0, z)

    zp, zq = standardised(pool), standardised(queries)
    distance = ((zq[:, None, :] - zp[None, :, :]) ** 2).sum(-1)  # [Q, P]
    if len(strings):
        distance += (prepared.string_uids[np.ix_(queries, strings)][:, None, :] != prepared.string_uids[np.ix_(pool, strings)][None, :, :]).sum(-1)
    per_query = math.ceil(size / len(queries))
    chosen = np.unique(np.argsort(distance, axis=1, kind="stable")[:, :per_query])
    if len(chosen) > size:  # keep the overall nearest
        chosen = chosen[np.argsort(distance[:, chosen].min(axis=0), kind="stable")[:size]]
    return np.sort(pool[chosen])


def _episode(ctx: _Context, columns: np.ndarray, context: np.ndarray, queries: np.ndarray, reads_context: bool,
             rng: np.random.Generator) -> TableBatch:
    """Support rows (the context, shown only to models that read it) then the query rows (positions in
    `ctx.prepared`: query-table rows, or held-out training rows when validating), targets hidden."""
    support = context if reads_context else context[:0]
    rows = np.concatenate([support, queries])
    arrays = batch_arrays(ctx.record, ctx.prepared, rows, np.sort(columns), ctx.targets, DataConfig(), rng)
    n_support = len(support)
    target_column = np.isin(np.sort(columns), ctx.targets)
    arrays["target_mask"][n_support:] = target_column[None, :]  # every query's targets, unknown (null) cells
    arrays["missing"][n_support:] &= ~target_column[None, :]
    arrays["support"] = np.arange(len(rows)) < n_support
    # The target's scale from the context rows (even when the model does not read them).
    sorted_columns = np.sort(columns)
    values = ctx.prepared.values[np.ix_(context, sorted_columns)]
    absent = ctx.prepared.missing[np.ix_(context, sorted_columns)] | (ctx.prepared.string_uids[np.ix_(context, sorted_columns)] >= 0)
    absent |= np.isin(ctx.prepared.kinds[sorted_columns], [int(ColumnKind.CATEGORICAL), int(ColumnKind.TEXT)])[None, :]
    arrays["column_mean"], arrays["column_std"] = column_moments(values, absent)
    batch = TableBatch.from_arrays(arrays)
    # Collation lists columns in table order; the member's order puts column columns[j] at position j.
    return _reorder_columns(batch, torch.as_tensor(np.argsort(np.argsort(columns))))


def _reorder_columns(batch: TableBatch, order: torch.Tensor) -> TableBatch:
    """The same episode with its columns in `order`."""
    return TableBatch(
        table_id=batch.table_id, column_names=[batch.column_names[i] for i in order.tolist()],
        column_kinds=batch.column_kinds[order], column_name_embeddings=batch.column_name_embeddings[order],
        column_abs_max=batch.column_abs_max[order], column_min_nonzero=batch.column_min_nonzero[order],
        values=batch.values[:, order], missing=batch.missing[:, order], string_ids=batch.string_ids[:, order],
        vocab=batch.vocab, vocab_embeddings=batch.vocab_embeddings, target_mask=batch.target_mask[:, order],
        row_index=batch.row_index, support=batch.support, column_mean=batch.column_mean[order], column_std=batch.column_std[order],
    )


def _predicted_cells(out, batch: TableBatch, slot: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each target cell the model predicted: its query row (0 = the episode's first query) and its target's
    index in `slot` (target column name -> index)."""
    rows = (out.target_rows - batch.n_support).cpu().numpy()
    cols = np.asarray([slot[batch.column_names[c]] for c in out.target_columns.tolist()], dtype=np.int64)
    return rows, cols


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_models(model: torch.nn.Module | Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    """One model, or one per fitted member (an ensemble fine-tuned member by member): member k of the
    in-context ensemble reads its own context draw with models[k % len(models)]."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("no model to predict with")
    for m in models:
        m.eval()
    return models


@torch.no_grad()
def predict_numeric_in_context(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    record: TableRecord,
    train_table: pa.Table,
    query_table: pa.Table,
    embedder: Embedder,
    settings: InContextSettings | None = None,
    *,
    targets: Sequence[str] | None = None,
    quantiles: Sequence[float] | None = None,
    readable: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(point [n, T] float64, quantiles [n, T, Q] float64 or None) for the query rows' numeric targets.

    `targets` default to `record.candidate_targets` (all predicted at once: multi-target regression);
    they must be numeric-like columns. The point is the mean of the predicted distribution; both are
    averaged over the members and come in the target's own units. `readable`: the features `table_reading`
    gives `train_table`, when the caller has them (episodic fine-tuning validates against the same training rows
    again and again).
    """
    from basisfm.losses.objective import decode_numeric

    settings = settings or InContextSettings()
    ctx = _context(record, train_table, query_table, embedder, targets)
    kinds = ctx.prepared.kinds[ctx.targets]
    strings = [record.columns[t].name for t, k in zip(ctx.targets, kinds) if ColumnKind(int(k)).is_string]
    if strings:
        raise TableError("these targets are categorical: use predict_label_scores_in_context", table=record.id, column=strings[0])
    n_query, n_targets = query_table.num_rows, len(ctx.targets)
    point = np.zeros((n_query, n_targets))
    q = np.zeros((n_query, n_targets, len(quantiles))) if quantiles is not None else None
    models = _as_models(model)
    if readable is None and settings.feature_selection == "validated":
        readable = validated_features(models[0], ctx, settings)
    slot = {name: j for j, name in enumerate(record.columns[t].name for t in ctx.targets)}
    for member, queries, batch, transform in _members(models[0], ctx, settings, numeric_targets=True, readable=readable):
        model = models[member % len(models)]
        batch = batch.to(_device(model))
        out = model(batch)
        rows, cols = _predicted_cells(out, batch, slot)
        if transform is None:
            values, levels = decode_numeric(model, out, batch, quantiles)
            values, levels = values.cpu().numpy(), None if levels is None else levels.cpu().numpy()
        else:
            asked = list(TRANSFORM_LEVELS) + list(quantiles or [])
            _, mapped = decode_numeric(model, out, batch, asked)
            mapped = transform.inverse(cols, mapped.cpu().numpy())
            values = mapped[:, : len(TRANSFORM_LEVELS)].mean(axis=1)
            levels = mapped[:, len(TRANSFORM_LEVELS):] if quantiles is not None else None
        point[queries[rows], cols] += values
        if q is not None:
            q[queries[rows], cols] += levels
    point /= settings.n_estimators
    if q is not None:
        q /= settings.n_estimators
    return point, q


def _class_target(record: TableRecord, target: str | None) -> str:
    """The categorical target a classification reads: `target`, else the record's first candidate target."""
    target = target if target is not None else (record.candidate_targets[0] if record.candidate_targets else None)
    if target is None:
        raise TableError("the record names no target column; pass target=...", table=record.id)
    names = [c.name for c in record.columns]
    if target not in names:
        raise TableError(f"target column {target!r} is not a column of the table {names}", table=record.id, column=target)
    return target


def predict_class_indicators_in_context(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    record: TableRecord,
    train_table: pa.Table,
    query_table: pa.Table,
    embedder: Embedder,
    labels: Sequence[str],
    settings: InContextSettings | None = None,
    *,
    target: str | None = None,
    readings: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """[n, L] probabilities of each query row's categorical `target` over `labels`, read as numbers: the target
    column becomes a 0/1 indicator of one class (under its own name) and the model predicts it in context as it
    predicts any numeric target; the mean of that prediction estimates P(class | row). Two classes take one
    indicator (the second label's), more take one each, the clipped estimates normalised to sum to 1. The same
    arguments as `predict_label_scores_in_context`, but `readings`: the features read for each indicator
    (`class_indicator_readings`), when the caller has them.

    Why: the shipped in-context checkpoint learned numeric targets from its prior (suite median R² 0.64) but not
    to score labels (its prior's categorical accuracy stayed at the majority rate), and label scoring in context
    fell below always predicting the majority class on half of the classification screen."""
    settings = settings or InContextSettings()
    target = _class_target(record, target)
    numeric_record, indicator_tables = _class_indicators(record, train_table, labels, target)
    queries = query_table.set_column(query_table.column_names.index(target), target, pa.nulls(query_table.num_rows, pa.float64()))
    estimates = []
    for label, train in indicator_tables.items():
        point, _ = predict_numeric_in_context(model, numeric_record, train, queries, embedder, settings, targets=[target],
                                              readable=None if readings is None else readings[label])
        estimates.append(np.clip(point[:, 0], 0.0, 1.0))
    if len(labels) == 2:
        return np.stack([1.0 - estimates[0], estimates[0]], axis=1)
    scores = np.stack(estimates, axis=1)
    total = scores.sum(axis=1, keepdims=True)
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), 1.0 / len(labels))


def class_indicator_readings(model: torch.nn.Module | Sequence[torch.nn.Module], record: TableRecord, train_table: pa.Table,
                             embedder: Embedder, labels: Sequence[str], settings: InContextSettings | None = None, *,
                             target: str | None = None) -> dict[str, np.ndarray]:
    """{label: the features read to predict its indicator} for `predict_class_indicators_in_context`'s
    `readings`: `training_reading` of each indicator's training rows (two classes: the second label alone)."""
    target = _class_target(record, target)
    numeric_record, indicator_tables = _class_indicators(record, train_table, labels, target)
    return {label: training_reading(model, numeric_record, train, embedder, settings, targets=[target])
            for label, train in indicator_tables.items()}


def _class_indicators(record: TableRecord, train_table: pa.Table, labels: Sequence[str], target: str
                      ) -> tuple[TableRecord, dict[str, pa.Table]]:
    """(`record` with `target` a numeric 0/1 column, {label: `train_table` with `target` that label's indicator})
    for each label an indicator is predicted for: the second of two, else every one."""
    position = [c.name for c in record.columns].index(target)
    indicator_column = replace(record.columns[position], kind="numeric",
                               stats=ColumnStats(min=0.0, max=1.0, abs_max=1.0, min_nonzero_abs=1.0, cardinality=2,
                                                 missing_rate=record.columns[position].stats.missing_rate))
    numeric_record = replace(record, columns=[indicator_column if j == position else c for j, c in enumerate(record.columns)],
                             candidate_targets=[target])
    observed = train_table.column(target).cast(pa.string()).to_pylist()
    tables = {}
    for label in (labels[1:] if len(labels) == 2 else labels):
        indicator = pa.array([None if v is None else float(v == label) for v in observed], pa.float64())
        tables[label] = train_table.set_column(train_table.column_names.index(target), target, indicator)
    return numeric_record, tables


@torch.no_grad()
def predict_label_scores_in_context(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    record: TableRecord,
    train_table: pa.Table,
    query_table: pa.Table,
    embedder: Embedder,
    labels: Sequence[str],
    settings: InContextSettings | None = None,
    *,
    target: str | None = None,
    readable: np.ndarray | None = None,
) -> np.ndarray:
    """[n, L] probabilities of each query row's `target` (default: the record's first candidate target)
    over `labels` (the classes, as strings), the members' softmax probabilities averaged. `readable` as for
    `predict_numeric_in_context`."""
    settings = settings or InContextSettings()
    target = _class_target(record, target)
    ctx = _context(record, train_table, query_table, embedder, [target])
    label_embeddings = torch.as_tensor(np.asarray(embedder.embed(list(labels)), dtype=np.float32))
    scores = np.zeros((query_table.num_rows, len(labels)))
    models = _as_models(model)
    for member, queries, batch, _ in _members(models[0], ctx, settings, readable=readable):
        model = models[member % len(models)]
        device = _device(model)
        batch = batch.to(device)
        logits = model.predict_category_scores(batch, batch.column_names.index(target), label_embeddings.to(device))
        scores[queries] += torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return scores / settings.n_estimators
