"""A fitted table's training rows and the rows to predict, prepared (embedded, standardised) together once,
with the positions of its targets and features: what every other reading step indexes into."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pyarrow as pa

from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.data.collate import Embedder, PreparedTable, column_moments, prepare_table
from basisfm.errors import TableError


@dataclass
class InContextTable:
    prepared: PreparedTable  # training rows 0..n_train-1, then the query rows
    record: TableRecord
    n_train: int
    targets: np.ndarray  # [T] positions of the target columns
    features: np.ndarray  # [F] positions of the feature columns
    # [A] positions of derived columns every member reads beside the features it chooses (`linear_fit`)
    always_read: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def in_context_table(record: TableRecord, train_table: pa.Table, query_table: pa.Table, embedder: Embedder,
                     targets: Sequence[str] | None, prepared_train: PreparedTable | None = None) -> InContextTable:
    """The training rows, then the query rows, prepared as one table. `prepared_train`: the training rows already
    prepared (`prepare_training_rows`, kept by a fitted estimator), so only the query rows are read and embedded
    here; the result is the same table but in one case: a query string the training rows lack takes its id after
    theirs (not among them), and long text new to the queries is pruned by the queries' word rarity alone."""
    names = [c.name for c in record.columns]
    targets = list(targets) if targets is not None else list(record.candidate_targets)
    if not targets:
        raise TableError("the record names no target column (candidate_targets is empty); pass targets=[...]", table=record.id)
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise TableError(f"target column(s) {unknown} are not columns of the table {names}", table=record.id, column=unknown[0])
    if train_table.num_rows < 1:
        raise TableError("in-context prediction needs at least one training row", table=record.id)
    query = query_table.select(names).cast(train_table.select(names).schema)
    if prepared_train is None:
        prepared = prepare_table(pa.concat_tables([train_table.select(names), query]), record, embedder)
    else:
        if prepared_train.values.shape[0] != train_table.num_rows:
            raise ValueError(f"prepared_train holds {prepared_train.values.shape[0]} rows, the training table "
                             f"{train_table.num_rows}: it was prepared from other rows")
        prepared = stacked(prepared_train, prepare_table(query, record, embedder), record)
    target_positions = np.asarray([names.index(t) for t in targets], dtype=np.int64)
    return InContextTable(prepared=prepared, record=record, n_train=train_table.num_rows, targets=target_positions,
                          features=np.setdiff1d(np.arange(len(names)), target_positions))


def prepare_training_rows(record: TableRecord, train_table: pa.Table, embedder: Embedder) -> PreparedTable:
    """`train_table`'s rows prepared once (cells read, strings embedded), for `in_context_table(...,
    prepared_train=)` to reuse at every prediction."""
    return prepare_table(train_table.select([c.name for c in record.columns]), record, embedder)


def stacked(first: PreparedTable, second: PreparedTable, record: TableRecord) -> PreparedTable:
    """`first`'s rows, then `second`'s, as one prepared table: `second`'s strings take `first`'s ids where
    `first` has them (and its embeddings), new ids after them otherwise; the column moments are those of all
    rows, as `prepare_table` computes them."""
    uid_of = {text: uid for uid, text in enumerate(first.strings)}
    new_strings = [text for text in second.strings if text not in uid_of]
    for text in new_strings:
        uid_of[text] = len(uid_of)
    remap = np.asarray([uid_of[text] for text in second.strings], dtype=np.int64)
    second_uids = np.where(second.string_uids >= 0, remap[np.maximum(second.string_uids, 0)] if len(remap) else -1, -1)
    position = {text: row for row, text in enumerate(second.strings)}
    new_rows = np.asarray([position[text] for text in new_strings], dtype=np.int64)
    values = np.concatenate([first.values, second.values])
    missing = np.concatenate([first.missing, second.missing])
    string_uids = np.concatenate([first.string_uids, second_uids])
    is_string = np.asarray([c.column_kind.is_string for c in record.columns], dtype=bool)[None, :]
    mean, std = column_moments(values, missing | (string_uids >= 0) | is_string)
    return replace(first, values=values, missing=missing, string_uids=string_uids, strings=first.strings + new_strings,
                   string_embeddings=np.concatenate([first.string_embeddings, second.string_embeddings[new_rows]]),
                   row_index=None, mean=mean, std=std)


def labelled_rows(ctx: InContextTable) -> np.ndarray:
    """Positions of the training rows with at least one target value (the rows a context may hold); sets the
    table's row index, which episodes carry."""
    ctx.prepared.row_index = np.arange(ctx.prepared.values.shape[0], dtype=np.int64)
    return np.flatnonzero((~ctx.prepared.missing[: ctx.n_train][:, ctx.targets]).any(axis=1))


def with_numeric_columns(prepared: PreparedTable, columns: np.ndarray, values: np.ndarray) -> PreparedTable:
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
