"""Dynamic column batching: cut one normalised table into `TableBatch`es that fit a token budget.

Each table's cells are tiled once per epoch: rows are shuffled and cut into chunks, and each
chunk is paired with every column subset of a (per-chunk, seeded) partition of the table's
columns, so wide tables are seen whole across batches while each batch stays under
`token_budget` cells and `max_columns` columns. Targets (masked cells for pretraining, a named
column for fine-tuning) are marked here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.encoding.name_embedding import embed_column_names
from basisfm.errors import ConfigError, TableError

if TYPE_CHECKING:
    from basisfm.data.batch import TableBatch

# Collation itself is numpy only (batches in `TableBatch.to_arrays()` layout): the Ray actors that
# run it never pay for importing torch. `table_to_batches` wraps the result in TableBatches.
BatchArrays = dict[str, Any]


class Embedder(Protocol):
    def embed(self, strings: Sequence[str]) -> np.ndarray: ...


def column_cap(data_config: DataConfig) -> int:
    """Most columns one batch may hold: `max_columns`, lowered so `min_rows` rows still fit the budget."""
    return max(1, min(data_config.max_columns, data_config.token_budget // data_config.min_rows))


def rows_per_batch(n_columns: int, data_config: DataConfig) -> int:
    """Rows for a batch `n_columns` wide: as many as the token budget allows, within [min_rows, max_rows]."""
    fit = data_config.token_budget // max(1, n_columns)
    return max(data_config.min_rows, min(data_config.max_rows, fit))


# --------------------------------------------------------------------------- column subsets


def partition_columns(n_columns: int, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded random partition of column positions into balanced groups of at most `group_size`."""
    n_groups = math.ceil(n_columns / group_size)
    return [np.sort(g) for g in np.array_split(rng.permutation(n_columns), n_groups)]


def group_columns_by_name(name_embeddings: np.ndarray, group_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Partition columns into clusters of related names, each at most `group_size` columns.

    Capacity-constrained k-means on the normalised name embeddings: farthest-point seeding from a
    seeded random start, then three rounds of greedy assignment (most similar column-centre pairs
    first, a centre taking no more than `group_size` columns) and centre updates.
    """
    n = len(name_embeddings)
    n_groups = math.ceil(n / group_size)
    if n_groups <= 1:
        return [np.arange(n)]
    x = name_embeddings / np.maximum(np.linalg.norm(name_embeddings, axis=1, keepdims=True), 1e-12)
    centres_idx = [int(rng.integers(n))]
    closest = x @ x[centres_idx[0]]
    while len(centres_idx) < n_groups:
        nxt = int(np.argmin(closest))
        centres_idx.append(nxt)
        closest = np.maximum(closest, x @ x[nxt])
    centres = x[centres_idx]
    assignment = np.full(n, -1)
    for _ in range(3):
        sims = x @ centres.T  # [n, k]
        order = np.argsort(-sims, axis=None, kind="stable")
        assignment[:] = -1
        load = np.zeros(n_groups, dtype=int)
        for flat in order:
            col, group = divmod(int(flat), n_groups)
            if assignment[col] < 0 and load[group] < group_size:
                assignment[col] = group
                load[group] += 1
        centres = np.stack([x[assignment == g].mean(axis=0) if load[g] else centres[g] for g in range(n_groups)])
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return [np.flatnonzero(assignment == g) for g in range(n_groups) if (assignment == g).any()]


# --------------------------------------------------------------------------- targets


def mask_targets(eligible: np.ndarray, mask_rate: float, rng: np.random.Generator) -> np.ndarray:
    """[R, C] bool: in each row, round(mask_rate x eligible cells) of its eligible cells, at least one."""
    n_eligible = eligible.sum(axis=1)
    k = np.where(n_eligible > 0, np.maximum(1, np.rint(mask_rate * n_eligible)), 0).astype(np.int64)
    scores = np.where(eligible, rng.random(eligible.shape), np.inf)
    # The k-th smallest score of each row is its threshold (one sort; float ties have probability 0).
    threshold = np.sort(scores, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]
    return (scores <= threshold[:, None]) & eligible & (k > 0)[:, None]


# --------------------------------------------------------------------------- table -> batches


@dataclass
class PreparedTable:
    """A table's cells as dense arrays, strings replaced by ids into one table-wide string list."""

    values: np.ndarray  # [N, C] float64, 0 where missing or string-like
    missing: np.ndarray  # [N, C] bool
    string_uids: np.ndarray  # [N, C] int64 into `strings`, -1 where missing or numeric-like
    strings: list[str]
    string_embeddings: np.ndarray  # [U, E] float32
    name_embeddings: np.ndarray  # [C, E] float32
    kinds: np.ndarray  # [C] int64
    abs_max: np.ndarray  # [C] float64
    min_nonzero: np.ndarray  # [C] float64
    row_index: np.ndarray | None = None  # [N] int64: each prepared row's index in the source table
    mean: np.ndarray | None = None  # [C] float64 over the table's present numeric-like cells (0 for strings)
    std: np.ndarray | None = None  # [C] float64, 1 where a column is constant, empty or string-like


def prepare_table(table: pa.Table, record: TableRecord, embedder: Embedder) -> PreparedTable:
    names = [c.name for c in record.columns]
    present = set(table.column_names)  # the property builds a fresh list on every access
    absent = [n for n in names if n not in present]
    if absent:
        raise TableError(
            f"manifest lists column(s) {absent} that shard {record.shard!r} lacks; re-run the corpus ingest",
            table=record.id,
            column=absent[0],
        )
    n_rows, n_cols = table.num_rows, len(names)
    values = np.zeros((n_rows, n_cols), dtype=np.float64)
    missing = np.zeros((n_rows, n_cols), dtype=bool)
    string_uids = np.full((n_rows, n_cols), -1, dtype=np.int64)
    strings: list[str] = []
    uid_of: dict[str, int] = {}
    embedding_rows: list[np.ndarray] = []

    for j, col in enumerate(record.columns):
        chunked = table.column(col.name)
        if col.column_kind.is_string:
            # Combine first: one dictionary for the whole column, whatever the shard's chunking.
            encoded = chunked.cast(pa.string()).combine_chunks().dictionary_encode()
            dictionary = encoded.dictionary.to_pylist()
            indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.float64)  # NaN for nulls
            col_missing = np.isnan(indices)
            uids = np.empty(len(dictionary), dtype=np.int64)
            new_strings = []
            for i, s in enumerate(dictionary):
                if s not in uid_of:
                    uid_of[s] = len(strings) + len(new_strings)
                    new_strings.append(s)
                uids[i] = uid_of[s]
            if new_strings:
                # One call per column: text pruning measures word rarity within this column.
                embedding_rows.append(embedder.embed(new_strings))
                strings.extend(new_strings)
            string_uids[~col_missing, j] = uids[indices[~col_missing].astype(np.int64)]
            missing[:, j] = col_missing
        else:
            try:
                numbers = pc.cast(chunked, pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TableError(
                    f"a {col.kind} column must hold numbers in the shard, got {chunked.type} ({exc}); re-run the corpus ingest",
                    table=record.id,
                    column=col.name,
                ) from exc
            bad = ~np.isfinite(numbers)
            values[:, j] = np.where(bad, 0.0, numbers)
            missing[:, j] = bad

    dim = embedding_rows[0].shape[1] if embedding_rows else None
    name_embeddings = embed_column_names(embedder, names)  # the form `data.column_name_embedding` chose
    dim = dim or name_embeddings.shape[1]
    string_embeddings = np.concatenate(embedding_rows).astype(np.float32) if embedding_rows else np.zeros((0, dim), np.float32)
    stats = [c.stats for c in record.columns]
    mean, std = column_moments(values, missing | (string_uids >= 0) | _string_columns(record, n_rows))
    return PreparedTable(
        mean=mean,
        std=std,
        values=values,
        missing=missing,
        string_uids=string_uids,
        strings=strings,
        string_embeddings=string_embeddings,
        name_embeddings=name_embeddings,
        kinds=np.asarray([int(c.column_kind) for c in record.columns], dtype=np.int64),
        abs_max=np.asarray([s.abs_max or 0.0 for s in stats], dtype=np.float64),
        min_nonzero=np.asarray([s.min_nonzero_abs or 0.0 for s in stats], dtype=np.float64),
    )


def _string_columns(record: TableRecord, n_rows: int) -> np.ndarray:
    is_string = np.asarray([c.column_kind.is_string for c in record.columns], dtype=bool)
    return np.broadcast_to(is_string, (n_rows, len(is_string)))


def column_moments(values: np.ndarray, absent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of `values` [N, C] over cells not `absent`; std 1 when
    a column has fewer than two distinct present values (nothing to scale by)."""
    present = ~absent
    count = present.sum(axis=0)
    safe = np.maximum(count, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.where(present, values, 0.0).sum(axis=0) / safe
        var = (np.where(present, values - mean, 0.0) ** 2).sum(axis=0) / safe
        std = np.sqrt(var)
    ok = (count > 1) & np.isfinite(std) & (std > 0) & np.isfinite(mean)
    return np.where(np.isfinite(mean), mean, 0.0), np.where(ok, std, 1.0)


def _target_positions(record: TableRecord, target_columns: Sequence[str], cap: int) -> np.ndarray:
    names = [c.name for c in record.columns]
    positions = []
    for name in target_columns:
        if name not in names:
            raise TableError(f"target column not found; the table has columns {names}", table=record.id, column=name)
        col = record.columns[names.index(name)]
        if col.column_kind == ColumnKind.TEXT:
            raise TableError(
                "text columns are inputs only and cannot be targets; pick a numeric, boolean or categorical column",
                table=record.id,
                column=name,
            )
        positions.append(names.index(name))
    if len(positions) >= cap and len(positions) < len(names):
        raise ConfigError(
            f"table {record.id!r}: {len(positions)} target columns leave no room for inputs within "
            f"{cap} columns per batch; raise data.max_columns or data.token_budget"
        )
    return np.asarray(positions, dtype=np.int64)


def table_to_batches(
    table: pa.Table,
    record: TableRecord,
    data_config: DataConfig,
    embedder: Embedder,
    *,
    seed: int,
    target_columns: Sequence[str] | None = None,
) -> list["TableBatch"]:
    """All batches of one table for one epoch: every cell once, each batch within the token budget.

    Pretraining (`target_columns` None) marks `mask_rate` of each row's non-missing, non-text cells
    as targets (at least one per row that has any); fine-tuning marks the present cells of the named
    columns, which every column subset then includes.
    """
    from basisfm.data.batch import TableBatch

    arrays = table_to_arrays(table, record, data_config, embedder, seed=seed, target_columns=target_columns)
    return [TableBatch.from_arrays(a) for a in arrays]


def table_to_arrays(
    table: pa.Table,
    record: TableRecord,
    data_config: DataConfig,
    embedder: Embedder,
    *,
    seed: int,
    target_columns: Sequence[str] | None = None,
) -> list[BatchArrays]:
    """`table_to_batches` without torch: each batch as plain arrays in `TableBatch.to_arrays()` layout."""
    if table.num_rows == 0 or not record.columns:
        return []
    rng = np.random.default_rng(seed)
    prepared = prepare_table(table, record, embedder)
    n_rows, n_cols = prepared.values.shape
    cap = column_cap(data_config)
    targets = _target_positions(record, target_columns, cap) if target_columns else np.zeros(0, dtype=np.int64)
    others = np.setdiff1d(np.arange(n_cols), targets)
    free = cap - len(targets)

    grouped = None
    if data_config.group_columns_by_name and len(others) > free:
        grouped = [others[g] for g in group_columns_by_name(prepared.name_embeddings[others], free, rng)]
    if grouped is not None:
        widest = len(targets) + max(len(g) for g in grouped)
    else:  # balanced random partition: the widest group of ceil(n / free) groups
        widest = len(targets) + math.ceil(len(others) / max(1, math.ceil(len(others) / free)))
    chunk_rows = rows_per_batch(widest, data_config)

    # Shuffle the rows once: each chunk is then a contiguous slice, cheap to cut and to hand to torch.
    row_order = rng.permutation(n_rows)
    prepared.row_index = row_order
    prepared.values = prepared.values[row_order]
    prepared.missing = prepared.missing[row_order]
    prepared.string_uids = prepared.string_uids[row_order]
    batches = []
    for start in range(0, n_rows, chunk_rows):
        rows = slice(start, start + chunk_rows)
        # A fresh partition per row chunk: each chunk still covers every column, and columns meet
        # different neighbours from chunk to chunk (the "rotation").
        if grouped is not None:
            subsets = grouped
        elif len(others) > free:
            subsets = [others[g] for g in partition_columns(len(others), free, rng)]
        else:
            subsets = [others]
        for subset in subsets:
            columns = np.sort(np.concatenate([targets, subset]))
            batches.append(batch_arrays(record, prepared, rows, columns, targets, data_config, rng))
    return batches


def batch_arrays(
    record: TableRecord,
    prepared: PreparedTable,
    rows: slice,
    columns: np.ndarray,
    targets: np.ndarray,
    data_config: DataConfig,
    rng: np.random.Generator,
) -> BatchArrays:
    if len(columns) == prepared.values.shape[1]:  # the whole width: views, no copies
        values, missing, uids = prepared.values[rows], prepared.missing[rows], prepared.string_uids[rows]
    else:
        values, missing, uids = (
            np.ascontiguousarray(a[rows][:, columns]) for a in (prepared.values, prepared.missing, prepared.string_uids)
        )
    kinds = prepared.kinds[columns]

    present = uids >= 0
    vocab_uids, inverse = np.unique(uids[present], return_inverse=True)
    string_ids = np.full(uids.shape, -1, dtype=np.int64)
    string_ids[present] = inverse

    if len(targets):
        target_mask = np.isin(columns, targets)[None, :] & ~missing
    else:
        eligible = ~missing & (kinds != int(ColumnKind.TEXT))[None, :]
        target_mask = mask_targets(eligible, data_config.mask_rate, rng)

    return {
        "table_id": record.id,
        "column_names": [record.columns[c].name for c in columns],
        "column_kinds": kinds,
        "column_name_embeddings": prepared.name_embeddings[columns],
        "column_abs_max": prepared.abs_max[columns],
        "column_min_nonzero": prepared.min_nonzero[columns],
        "values": values,
        "missing": missing,
        "string_ids": string_ids,
        "vocab": [prepared.strings[u] for u in vocab_uids],
        "vocab_embeddings": prepared.string_embeddings[vocab_uids],
        "target_mask": target_mask,
        "row_index": np.ascontiguousarray(prepared.row_index[rows], dtype=np.int64),
        "support": np.zeros(values.shape[0], dtype=bool),
        "column_mean": prepared.mean[columns],
        "column_std": prepared.std[columns],
    }
