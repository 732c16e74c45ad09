"""In-context members' episodes over a fitted table: each member's seed, feature order, context draw (or retrieval),
category coding and transforms, then support rows and hidden query rows scaled by the support rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.data.collate import batch_arrays, column_moments
from basisfm.data.reading.categories import coded_categories
from basisfm.data.reading.features import table_reading
from basisfm.data.reading.retrieval import nearest_context, neighbouring_chunks
from basisfm.data.reading.settings import InContextSettings
from basisfm.data.reading.table import InContextTable, labelled_rows
from basisfm.data.reading.transforms import ColumnTransform
from basisfm.errors import TableError
from basisfm.seeds import derive_seed


def member_episodes(ctx: InContextTable, settings: InContextSettings, *, shows_support: bool, numeric_targets: bool = False,
                    readable: np.ndarray | None = None):
    """Yield (member, query positions [Q] into the query table, TableBatch, the member's target transform or
    None) for every episode of every member. `numeric_targets`: apply `settings.target_transforms`. `readable`:
    the features `table_reading` lets these training rows' members read, when already computed. `shows_support`:
    whether the episodes show their context rows (a model that reads them: `basisfm.model.reads_context`)."""
    settings.validate()
    n_query = ctx.prepared.values.shape[0] - ctx.n_train
    labelled = labelled_rows(ctx)
    if len(labelled) == 0:
        raise TableError("no training row has a target value; nothing to learn from", table=ctx.record.id)
    n_features = max(1, settings.max_columns - len(ctx.targets) - len(ctx.always_read))
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
    in_table_order = [np.arange(start, min(n_query, start + settings.query_batch)) for start in range(0, n_query, settings.query_batch)]
    for member in range(settings.n_estimators):
        rng = np.random.default_rng(derive_seed("in_context", settings.seed, member))
        features = rng.permutation(readable)[:n_features]
        columns = np.concatenate([ctx.targets, ctx.always_read, features])
        fixed_context = labelled if len(labelled) <= settings.max_context else np.sort(rng.choice(labelled, settings.max_context, replace=False))
        transform = None
        view = replace(ctx, prepared=by_transform[member_kinds[member]])
        view = replace(view, prepared=coded_categories(view.prepared, view.features, settings.categorical_features, rng, rank_by))
        kind = settings.target_transforms[member % len(settings.target_transforms)]
        if numeric_targets and kind != "none":
            transform = ColumnTransform(kind, view.prepared, view.targets, labelled)
            view = replace(view, prepared=transform.apply(view.prepared))
        retrieves = settings.retrieval and len(labelled) > settings.max_context
        chunks = in_table_order
        if retrieves and member % 2 == 0:
            # Retrieval reads each chunk's nearest training rows. Even members cut the queries into chunks of
            # neighbours (a local context, many rows near each query), odd ones keep table order (a context spread
            # over the table, each query's few nearest): each kind wins on some large tables, their average is
            # within 0.005 of the better on each (benchmarks/results/large_tables.md).
            chunks = neighbouring_chunks(view.prepared, features, view.n_train + np.arange(n_query), settings.query_batch)
        for queries in chunks:
            context = fixed_context
            if retrieves:
                context = nearest_context(view.prepared, features, labelled, view.n_train + queries, settings.max_context)
            yield member, queries, episode(view, columns, context, view.n_train + queries, shows_support, rng), transform


def episode(ctx: InContextTable, columns: np.ndarray, context: np.ndarray, queries: np.ndarray, reads_context: bool,
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
    return reorder_columns(batch, torch.as_tensor(np.argsort(np.argsort(columns))))


def reorder_columns(batch: TableBatch, order: torch.Tensor) -> TableBatch:
    """The same episode with its columns in `order`."""
    return TableBatch(
        table_id=batch.table_id, column_names=[batch.column_names[i] for i in order.tolist()],
        column_kinds=batch.column_kinds[order], column_name_embeddings=batch.column_name_embeddings[order],
        column_abs_max=batch.column_abs_max[order], column_min_nonzero=batch.column_min_nonzero[order],
        values=batch.values[:, order], missing=batch.missing[:, order], string_ids=batch.string_ids[:, order],
        vocab=batch.vocab, vocab_embeddings=batch.vocab_embeddings, target_mask=batch.target_mask[:, order],
        row_index=batch.row_index, support=batch.support, column_mean=batch.column_mean[order], column_std=batch.column_std[order],
    )
