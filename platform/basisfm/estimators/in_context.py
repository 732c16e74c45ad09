"""In-context prediction for the estimators: a fitted table's training rows are the context, no gradient step.
How the table is read (features, category codes, transforms, retrieval, episodes) is `basisfm.data.reading`;
this module runs the model over its episodes, and validates which features to read with it.

    from basisfm.data.reading import InContextSettings
    from basisfm.estimators.in_context import predict_numeric_in_context
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
    training rows nearest to each chunk of `query_batch` queries (TabDPT-style; `data.reading.retrieval`),
    the queries cut into chunks of neighbours in even members and in table order in odd ones;
  - the target's scale (column_mean / column_std) from its context rows, as in pretraining;
  - optionally (TabPFN's member preprocessing) its own coding of categorical features
    (`categorical_features="ordinal"`: a column's values become the numbers 0..m-1 in an order drawn per
    member; "target": in the order of their smoothed mean target on the training rows; "auto": "target" for a
    column of 5+ values, "ordinal" for a narrower one), its own transform of the numeric features (`feature_transforms`, cycled over members: "power"
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

from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from basisfm.corpus.manifest import ColumnKind, ColumnStats, TableRecord
from basisfm.data.batch import TableBatch
from basisfm.data.collate import Embedder, PreparedTable
from basisfm.data.reading import (
    TRANSFORM_LEVELS,
    InContextSettings,
    InContextTable,
    coded_categories,
    episode,
    feature_relevance,
    in_context_table,
    labelled_rows,
    member_episodes,
    most_relevant,
    prepare_training_rows,
    ranks_by_target,
    table_reading,
    target_signal,
)
from basisfm.data.reading.linear_fit import with_linear_fit
from basisfm.errors import TableError
from basisfm.estimators.finetune import MIN_VALIDATION_ROWS
from basisfm.model import query_rows_per_episode, reads_context
from basisfm.model.decoding import decode_numeric
from basisfm.seeds import derive_seed

# "validated" selection: the relevance-ranked feature counts tried besides all a member may read (those below it).
VALIDATED_COUNTS = (16, 8, 4)
# ... on at most this many held-out training rows per fold (two folds: each half of the labelled rows predicted
# from the other), with at least `MIN_VALIDATION_ROWS` labelled rows (fewer and the choice is noise: every
# feature is read).
VALIDATION_QUERIES = 256
# A smaller feature count replaces all of them, and a feature is pruned from a short list, only when the held-out
# squared error is lower by this fraction.
VALIDATION_MARGIN = 0.02
# A chosen list of at most this many features is pruned one feature at a time, then the this many most relevant
# are offered back one at a time (each costs a validation pass).
PRUNED_FEATURES = 16


@torch.no_grad()
def _settings_for(model: torch.nn.Module, settings: InContextSettings) -> InContextSettings:
    """`settings` with as many query rows per episode as `model` reads at once (`query_rows_per_episode`). With
    retrieval a chunk's queries share their nearest training rows, so the chunk stays the settings' size."""
    if settings.retrieval:
        return settings
    return replace(settings, query_batch=query_rows_per_episode(model, settings.query_batch))


def validated_features(model: torch.nn.Module, ctx: InContextTable, settings: InContextSettings) -> np.ndarray:
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
    the rest cost it accuracy. What each step (count, pruning, add-back, folds) was measured to give:
    `benchmarks/results/evaluate_public_icl_validated.md` and `evaluate_regression_screen.md`."""
    labelled = labelled_rows(ctx)
    limit = max(1, settings.max_columns - len(ctx.targets) - len(ctx.always_read))
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


def _held_out_error(model: torch.nn.Module, ctx: InContextTable, labelled: np.ndarray, settings: InContextSettings):
    """`validated_features`' yardstick: a function of a feature list that returns `model`'s squared error on
    two folds of the `labelled` rows predicted in context (up to `VALIDATION_QUERIES` rows of one random half
    from up to `max_context` rows of the other, then the other way round; categorical features coded as
    `settings` says, no transform), summed over the targets in units of each target's variance. The folds are
    drawn once from the settings' seed, so every list is measured on the same rows and contexts."""
    settings = _settings_for(model, settings)
    rng = np.random.default_rng(derive_seed("validated_features", settings.seed))
    folds = []  # (the table coded for the fold, its context rows, its held-out rows)
    halves = np.array_split(rng.permutation(labelled), 2)
    for pool, held in ((halves[0], halves[1]), (halves[1], halves[0])):
        context = pool if len(pool) <= settings.max_context else rng.choice(pool, settings.max_context, replace=False)
        queries = held if len(held) <= VALIDATION_QUERIES else rng.choice(held, VALIDATION_QUERIES, replace=False)
        rank_by = target_signal(ctx.prepared, ctx.targets[0], pool) if ranks_by_target(settings.categorical_features) else None
        view = replace(ctx, prepared=coded_categories(ctx.prepared, ctx.features, settings.categorical_features, rng, rank_by))
        folds.append((view, np.sort(context), np.sort(queries)))
    held_rows = np.concatenate([queries for _, _, queries in folds])
    truth = np.where(ctx.prepared.missing[np.ix_(held_rows, ctx.targets)], np.nan, ctx.prepared.values[np.ix_(held_rows, ctx.targets)])
    scale = np.nanvar(truth, axis=0) * np.isfinite(truth).sum(axis=0)  # [T] each target's total squared deviation
    scale = np.where(scale > 0, scale, np.inf)  # a constant target says nothing about the features
    slot = {ctx.record.columns[t].name: j for j, t in enumerate(ctx.targets)}
    shows_support = reads_context(model)

    def error_of(features: np.ndarray) -> float:
        columns = np.concatenate([ctx.targets, ctx.always_read, features])
        squared = np.zeros(len(ctx.targets))
        for view, context, queries in folds:
            for start in range(0, len(queries), settings.query_batch):
                chunk = queries[start: start + settings.query_batch]
                batch = episode(view, columns, context, chunk, shows_support, rng).to(_device(model))
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
    ctx = in_context_table(record, train_table, train_table.slice(0, 0), embedder, targets)
    numeric = not any(ColumnKind(int(k)).is_string for k in ctx.prepared.kinds[ctx.targets])
    if settings.linear_feature and numeric:
        ctx = with_linear_fit(ctx, embedder, settings.seed)
    if settings.feature_selection == "validated" and numeric:
        return validated_features(_as_models(model)[0], ctx, settings)
    readable, _ = table_reading(ctx.prepared, ctx.features, ctx.targets, labelled_rows(ctx), settings)
    return readable


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
    prepared_train: PreparedTable | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(point [n, T] float64, quantiles [n, T, Q] float64 or None) for the query rows' numeric targets.

    `targets` default to `record.candidate_targets` (all predicted at once: multi-target regression);
    they must be numeric-like columns. The point is the mean of the predicted distribution; both are
    averaged over the members and come in the target's own units. `readable`: the features `table_reading`
    gives `train_table`, when the caller has them (episodic fine-tuning validates against the same training rows
    again and again). `prepared_train`: `train_table` already prepared (`data.reading.prepare_training_rows`), so
    only the query rows are read and embedded (a fitted estimator prepares its training rows once, at fit).
    """
    settings = settings or InContextSettings()
    ctx = in_context_table(record, train_table, query_table, embedder, targets, prepared_train)
    kinds = ctx.prepared.kinds[ctx.targets]
    strings = [record.columns[t].name for t, k in zip(ctx.targets, kinds) if ColumnKind(int(k)).is_string]
    if strings:
        raise TableError("these targets are categorical: use predict_label_scores_in_context", table=record.id, column=strings[0])
    if settings.linear_feature:
        ctx = with_linear_fit(ctx, embedder, settings.seed)
    n_query, n_targets = query_table.num_rows, len(ctx.targets)
    point = np.zeros((n_query, n_targets))
    q = np.zeros((n_query, n_targets, len(quantiles))) if quantiles is not None else None
    models = _as_models(model)
    settings = _settings_for(models[0], settings)
    if readable is None and settings.feature_selection == "validated":
        readable = validated_features(models[0], ctx, settings)
    slot = {name: j for j, name in enumerate(record.columns[t].name for t in ctx.targets)}
    episodes = member_episodes(ctx, settings, shows_support=reads_context(models[0]), numeric_targets=True, readable=readable)
    for member, queries, batch, transform in episodes:
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
    prepared: Mapping[str, PreparedTable] | None = None,
) -> np.ndarray:
    """[n, L] probabilities of each query row's categorical `target` over `labels`, read as numbers: the target
    column becomes a 0/1 indicator of one class (under its own name) and the model predicts it in context as it
    predicts any numeric target; the mean of that prediction estimates P(class | row). Two classes take one
    indicator (the second label's), more take one each, the clipped estimates normalised to sum to 1. The same
    arguments as `predict_label_scores_in_context`, but `readings`: the features read for each indicator
    (`class_indicator_readings`), when the caller has them, and `prepared`: each indicator's training rows
    already prepared (`class_indicator_rows`).

    Why: the shipped in-context checkpoint learned numeric targets from its prior but not to score labels (its
    prior's categorical accuracy stayed at the majority rate), and label scoring in context fell below always
    predicting the majority class on half of the classification screen
    (`benchmarks/results/evaluate_classification_screen.md`)."""
    settings = settings or InContextSettings()
    target = _class_target(record, target)
    numeric_record, indicator_tables = _class_indicators(record, train_table, labels, target)
    queries = query_table.set_column(query_table.column_names.index(target), target, pa.nulls(query_table.num_rows, pa.float64()))
    estimates = []
    for label, train in indicator_tables.items():
        point, _ = predict_numeric_in_context(model, numeric_record, train, queries, embedder, settings, targets=[target],
                                              readable=None if readings is None else readings[label],
                                              prepared_train=None if prepared is None else prepared[label])
        estimates.append(np.clip(point[:, 0], 0.0, 1.0))
    if len(labels) == 2:
        return np.stack([1.0 - estimates[0], estimates[0]], axis=1)
    scores = np.stack(estimates, axis=1)
    total = scores.sum(axis=1, keepdims=True)
    return np.where(total > 0, scores / np.where(total > 0, total, 1.0), 1.0 / len(labels))


# Held-out training rows per fold that `held_out_class_estimates` predicts (two folds).
CALIBRATION_QUERIES = 256


def held_out_class_estimates(model: torch.nn.Module | Sequence[torch.nn.Module], record: TableRecord, train_table: pa.Table,
                             embedder: Embedder, labels: Sequence[str], settings: InContextSettings, *,
                             readings: Mapping[str, np.ndarray], target: str | None = None
                             ) -> tuple[np.ndarray, list]:
    """([n, L] class-indicator estimates, [n] true labels) of held-out training rows: the rows split in two halves
    (drawn from the settings' seed), up to `CALIBRATION_QUERIES` rows of each predicted in context from the other
    half, as `predict_class_indicators_in_context` predicts (the same members, features, retrieval rule). What
    `calibration.fit_indicator_calibration` fits on."""
    target = _class_target(record, target)
    rng = np.random.default_rng(derive_seed("held_out_class_estimates", settings.seed))
    halves = np.array_split(rng.permutation(train_table.num_rows), 2)
    estimates, truth = [], []
    for pool, held in ((halves[0], halves[1]), (halves[1], halves[0])):
        held = np.sort(held if len(held) <= CALIBRATION_QUERIES else rng.choice(held, CALIBRATION_QUERIES, replace=False))
        queries = train_table.take(held)
        estimates.append(predict_class_indicators_in_context(model, record, train_table.take(np.sort(pool)), queries, embedder,
                                                             labels, settings, target=target, readings=readings))
        truth.extend(queries.column(target).cast(pa.string()).to_pylist())
    return np.concatenate(estimates), truth


def class_indicator_readings(model: torch.nn.Module | Sequence[torch.nn.Module], record: TableRecord, train_table: pa.Table,
                             embedder: Embedder, labels: Sequence[str], settings: InContextSettings | None = None, *,
                             target: str | None = None) -> dict[str, np.ndarray]:
    """{label: the features read to predict its indicator} for `predict_class_indicators_in_context`'s
    `readings`: `training_reading` of each indicator's training rows (two classes: the second label alone)."""
    target = _class_target(record, target)
    numeric_record, indicator_tables = _class_indicators(record, train_table, labels, target)
    return {label: training_reading(model, numeric_record, train, embedder, settings, targets=[target])
            for label, train in indicator_tables.items()}


def class_indicator_rows(record: TableRecord, train_table: pa.Table, embedder: Embedder, labels: Sequence[str], *,
                         target: str | None = None) -> dict[str, PreparedTable]:
    """{label: its indicator's training rows, prepared} for `predict_class_indicators_in_context`'s `prepared`."""
    numeric_record, indicator_tables = _class_indicators(record, train_table, labels, _class_target(record, target))
    return {label: prepare_training_rows(numeric_record, train, embedder) for label, train in indicator_tables.items()}


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
    prepared_train: PreparedTable | None = None,
) -> np.ndarray:
    """[n, L] probabilities of each query row's `target` (default: the record's first candidate target)
    over `labels` (the classes, as strings), the members' softmax probabilities averaged. `readable` as for
    `predict_numeric_in_context`."""
    settings = settings or InContextSettings()
    target = _class_target(record, target)
    ctx = in_context_table(record, train_table, query_table, embedder, [target], prepared_train)
    label_embeddings = torch.as_tensor(np.asarray(embedder.embed(list(labels)), dtype=np.float32))
    scores = np.zeros((query_table.num_rows, len(labels)))
    models = _as_models(model)
    settings = _settings_for(models[0], settings)
    for member, queries, batch, _ in member_episodes(ctx, settings, shows_support=reads_context(models[0]), readable=readable):
        model = models[member % len(models)]
        device = _device(model)
        batch = batch.to(device)
        logits = model.predict_category_scores(batch, batch.column_names.index(target), label_embeddings.to(device))
        scores[queries] += torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return scores / settings.n_estimators
