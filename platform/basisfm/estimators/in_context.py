"""In-context prediction for the estimators: a fitted table's training rows are the context, no gradient step.

    from basisfm.estimators.in_context import InContextSettings, predict_numeric_in_context
    point, q = predict_numeric_in_context(model, record, train_table, query_table, embedder,
                                          InContextSettings(max_context=512, n_estimators=4), quantiles=[0.1, 0.9])

`record` is the fitted table's manifest record (`TablePreprocessor.record()`: feature columns, then the
target column(s), listed in `candidate_targets`); `train_table` holds the training rows with their targets
and `query_table` the rows to predict, their target column(s) null (`TablePreprocessor.to_arrow`). Cells are
embedded once for both. Each of `n_estimators` members builds its own episodes:
  - its own seed, feature order and (for tables wider than `max_columns`) feature subset;
  - a context of up to `max_context` training rows: all of them when they fit, else a random draw per
    member (a query's prediction then never depends on the other queries), or with `retrieval` the
    training rows nearest to each chunk of `query_batch` queries (TabDPT-style);
  - the target's scale (column_mean / column_std) from its context rows, as in pretraining.
Members' predictions are averaged: numeric means and quantiles (in the target's own units), or label
probabilities. `model` may be a list (an estimator's members, each fine-tuned on its own): member k then
predicts with model k (cycling when there are fewer models than members). Works for every architecture;
the per-row `basis` model reads no context rows (it cannot use them) but still takes the target's scale
from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.data.batch import TableBatch
from basisfm.data.collate import Embedder, _make_arrays, _prepare, _PreparedTable, column_moments
from basisfm.seeds import derive_seed
from basisfm.errors import ConfigError, TableError


@dataclass
class InContextSettings:
    max_context: int = 512  # training rows a query reads (its support rows)
    n_estimators: int = 4  # members averaged; each has its own seed, feature order / subset and context draw
    retrieval: bool = False  # context = the training rows nearest to each query chunk, instead of a random draw
    query_batch: int = 128  # query rows per episode (bounds memory; predictions do not depend on it without retrieval)
    max_columns: int = 64  # feature + target columns per episode; wider tables give each member a feature subset
    seed: int = 0

    def validate(self) -> None:
        for name in ("max_context", "n_estimators", "query_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_columns < 2:
            raise ConfigError(f"max_columns must be at least 2, got {self.max_columns!r}")


@dataclass
class _Context:
    prepared: _PreparedTable  # training rows 0..n_train-1, then the query rows
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
    prepared = _prepare(table, record, embedder)
    target_positions = np.asarray([names.index(t) for t in targets], dtype=np.int64)
    return _Context(prepared=prepared, record=record, n_train=train_table.num_rows, targets=target_positions,
                    features=np.setdiff1d(np.arange(len(names)), target_positions))


def _members(model: torch.nn.Module, ctx: _Context, settings: InContextSettings):
    """Yield (member, query positions [Q] into the query table, TableBatch) for every episode of every member."""
    settings.validate()
    prepared = ctx.prepared
    n_query = prepared.values.shape[0] - ctx.n_train
    prepared.row_index = np.arange(prepared.values.shape[0], dtype=np.int64)
    labelled = np.flatnonzero((~prepared.missing[: ctx.n_train][:, ctx.targets]).any(axis=1))
    if len(labelled) == 0:
        raise TableError("no training row has a target value; nothing to learn from", table=ctx.record.id)
    reads_context = getattr(getattr(model, "config", None), "architecture", "basis") != "basis"
    n_features = max(1, settings.max_columns - len(ctx.targets))
    for member in range(settings.n_estimators):
        rng = np.random.default_rng(derive_seed("in_context", settings.seed, member))
        features = rng.permutation(ctx.features)[:n_features]
        columns = np.concatenate([ctx.targets, features])
        fixed_context = labelled if len(labelled) <= settings.max_context else np.sort(rng.choice(labelled, settings.max_context, replace=False))
        for start in range(0, n_query, settings.query_batch):
            queries = np.arange(start, min(n_query, start + settings.query_batch))
            context = fixed_context
            if settings.retrieval and len(labelled) > settings.max_context:
                context = nearest_context(prepared, features, labelled, ctx.n_train + queries, settings.max_context)
            yield member, queries, _episode(ctx, columns, context, queries, reads_context, rng)


def nearest_context(prepared: _PreparedTable, features: np.ndarray, pool: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
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
    """Support rows (the context, shown only to models that read it) then the query rows, targets hidden."""
    support = context if reads_context else context[:0]
    rows = np.concatenate([support, ctx.n_train + queries])
    arrays = _make_arrays(ctx.record, ctx.prepared, rows, np.sort(columns), ctx.targets, DataConfig(), rng)
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
) -> tuple[np.ndarray, np.ndarray | None]:
    """(point [n, T] float64, quantiles [n, T, Q] float64 or None) for the query rows' numeric targets.

    `targets` default to `record.candidate_targets` (all predicted at once: multi-target regression);
    they must be numeric-like columns. The point is the mean of the predicted distribution; both are
    averaged over the members and come in the target's own units.
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
    for member, queries, batch in _members(models[0], ctx, settings):
        model = models[member % len(models)]
        batch = batch.to(_device(model))
        out = model(batch)
        values, levels = decode_numeric(model, out, batch, quantiles)
        slot = {name: j for j, name in enumerate(record.columns[t].name for t in ctx.targets)}
        n_support = batch.n_support
        rows = (out.target_rows - n_support).cpu().numpy()
        cols = np.asarray([slot[batch.column_names[c]] for c in out.target_columns.tolist()], dtype=np.int64)
        point[queries[rows], cols] += values.cpu().numpy()
        if q is not None:
            q[queries[rows], cols] += levels.cpu().numpy()
    point /= settings.n_estimators
    if q is not None:
        q /= settings.n_estimators
    return point, q


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
) -> np.ndarray:
    """[n, L] probabilities of each query row's `target` (default: the record's first candidate target)
    over `labels` (the classes, as strings), the members' softmax probabilities averaged."""
    settings = settings or InContextSettings()
    target = target if target is not None else (record.candidate_targets[0] if record.candidate_targets else None)
    if target is None:
        raise TableError("the record names no target column; pass target=...", table=record.id)
    ctx = _context(record, train_table, query_table, embedder, [target])
    label_embeddings = torch.as_tensor(np.asarray(embedder.embed(list(labels)), dtype=np.float32))
    scores = np.zeros((query_table.num_rows, len(labels)))
    models = _as_models(model)
    for member, queries, batch in _members(models[0], ctx, settings):
        model = models[member % len(models)]
        device = _device(model)
        batch = batch.to(device)
        logits = model.predict_category_scores(batch, batch.column_names.index(target), label_embeddings.to(device))
        scores[queries] += torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return scores / settings.n_estimators
