"""Episodes from corpus tables: labelled support rows and query rows, the unit in-context models learn from.

Per table and epoch, `data.episodes_per_table` episodes, each drawn with its own seeded choices:
  1. target column(s): 1..`max_episode_targets` of the table's candidate targets (numeric, boolean,
     datetime or categorical; text is never a target), or the named `target_columns`;
  2. feature columns: the others (or the given `feature_positions`), a random subset when they exceed
     `data.max_columns` (the token budget then fixes how many rows fit);
  3. rows: a random draw of the table's rows that hold a target (large tables are subsampled this way),
     or with `data.retrieval` an anchor row and its nearest rows (TabDPT-style: a query's context is
     made of rows that resemble it); a `query_fraction` of them become queries, the rest support rows;
  4. `column_mean` / `column_std` from the support rows only, so the scale a numeric target is
     standardised with never looks at a query's truth.
Arrays come out in `TableBatch.to_arrays()` layout (numpy only: the Ray actors that run this never import
torch); `table_to_episodes` wraps them as TableBatches. Support rows come first in every episode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.data.collate import (
    BatchArrays,
    Embedder,
    batch_arrays,  # one table's cells -> batch arrays: shared with masked-cell collation, not copied
    prepare_table,
    PreparedTable,
    _target_positions,
    column_cap,
    column_moments,
    rows_per_batch,
)
from basisfm.errors import TableError

if TYPE_CHECKING:
    from basisfm.data.batch import TableBatch


def candidate_target_positions(record: TableRecord, target_columns: Sequence[str] | None) -> np.ndarray:
    """Column positions an episode may predict: the named columns, else the manifest's candidate targets,
    else every non-text column (a table without declared candidates still teaches)."""
    cap = 1 << 30  # the width check is per episode here
    if target_columns:
        return _target_positions(record, target_columns, cap)
    names = [c.name for c in record.columns]
    declared = [n for n in record.candidate_targets if n in names and record.columns[names.index(n)].column_kind != ColumnKind.TEXT]
    if declared:
        return np.asarray([names.index(n) for n in declared], dtype=np.int64)
    return np.asarray([j for j, c in enumerate(record.columns) if c.column_kind != ColumnKind.TEXT], dtype=np.int64)


def nearest_rows(prepared: PreparedTable, features: np.ndarray, anchor: int, pool: np.ndarray, n: int) -> np.ndarray:
    """The `n` rows of `pool` nearest to row `anchor` (itself first): squared distance of standardised
    numeric-like features (a missing cell counts as the column mean) plus 1 per differing string."""
    is_string = (prepared.string_uids[:, features] >= 0).any(axis=0)
    numeric = features[~is_string]
    strings = features[is_string]
    z = (prepared.values[np.ix_(pool, numeric)] - prepared.mean[numeric]) / prepared.std[numeric]
    z = np.where(prepared.missing[np.ix_(pool, numeric)], 0.0, z)
    z_anchor = (prepared.values[anchor, numeric] - prepared.mean[numeric]) / prepared.std[numeric]
    z_anchor = np.where(prepared.missing[anchor, numeric], 0.0, z_anchor)
    distance = ((z - z_anchor) ** 2).sum(axis=1)
    distance += (prepared.string_uids[np.ix_(pool, strings)] != prepared.string_uids[anchor, strings]).sum(axis=1)
    distance = np.where(pool == anchor, -1.0, distance)
    return pool[np.argsort(distance, kind="stable")[:n]]


def table_to_episode_arrays(
    table: pa.Table,
    record: TableRecord,
    data_config: DataConfig,
    embedder: Embedder,
    *,
    seed: int,
    target_columns: Sequence[str] | None = None,
) -> list[BatchArrays]:
    """One epoch's episodes of a table, deterministic for `seed`; [] when the table cannot make one
    (fewer than 2 rows holding a target, or no column that can be a target)."""
    if table.num_rows < 2 or not record.columns:
        return []
    prepared = prepare_table(table, record, embedder)
    return episodes_from_prepared(prepared, record, data_config, seed=seed, target_positions=candidate_target_positions(record, target_columns))


def episodes_from_prepared(
    prepared: PreparedTable,
    record: TableRecord,
    data_config: DataConfig,
    *,
    seed: int,
    target_positions: np.ndarray,
    feature_positions: np.ndarray | None = None,
) -> list[BatchArrays]:
    """`table_to_episode_arrays` after the table's cells are prepared (embedded once, reused per episode);
    `feature_positions`: the only columns an episode reads beside its targets (default: all the others)."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = prepared.values.shape
    prepared.row_index = np.arange(n_rows, dtype=np.int64)
    if len(target_positions) == 0:
        return []
    cap = column_cap(data_config)
    # At least one feature column stays an input: a one-column table makes no episode.
    most = min(data_config.max_episode_targets, len(target_positions), n_cols - 1)
    if most < 1:
        return []
    if most >= cap:
        raise TableError(f"{most} target columns per episode leave no room for features within {cap} columns per batch; "
                         "lower data.max_episode_targets or raise data.max_columns / data.token_budget", table=record.id)
    episodes = []
    for _ in range(data_config.episodes_per_table):
        n_targets = int(rng.integers(1, most + 1))
        targets = np.sort(rng.choice(target_positions, n_targets, replace=False))
        others = np.setdiff1d(np.arange(n_cols) if feature_positions is None else feature_positions, targets)
        free = cap - n_targets
        if len(others) > free:
            others = np.sort(rng.choice(others, free, replace=False))
        columns = np.sort(np.concatenate([targets, others]))
        usable = np.flatnonzero((~prepared.missing[:, targets]).any(axis=1))
        if len(usable) < 2:
            continue
        n_episode = min(len(usable), rows_per_batch(len(columns), data_config))
        if data_config.retrieval and len(others):
            rows = nearest_rows(prepared, others, int(rng.choice(usable)), usable, n_episode)
            rows = rng.permutation(rows)  # which rows are queries stays random
        else:
            rows = rng.choice(usable, n_episode, replace=False)
        n_query = min(n_episode - 1, max(1, int(round(data_config.query_fraction * n_episode))))
        n_support = n_episode - n_query
        # support first, each part in table order (row_index maps predictions back)
        rows = np.concatenate([np.sort(rows[n_query:]), np.sort(rows[:n_query])])
        arrays = batch_arrays(record, prepared, rows, columns, targets, data_config, rng)
        arrays["support"] = np.arange(n_episode) < n_support
        support_values = arrays["values"][:n_support]
        absent = arrays["missing"][:n_support] | (arrays["string_ids"][:n_support] >= 0) | np.isin(arrays["column_kinds"], [int(ColumnKind.CATEGORICAL), int(ColumnKind.TEXT)])[None, :]
        arrays["column_mean"], arrays["column_std"] = column_moments(support_values, absent)
        episodes.append(arrays)
    return episodes


def table_to_episodes(
    table: pa.Table,
    record: TableRecord,
    data_config: DataConfig,
    embedder: Embedder,
    *,
    seed: int,
    target_columns: Sequence[str] | None = None,
) -> list["TableBatch"]:
    """`table_to_episode_arrays` as TableBatches."""
    from basisfm.data.batch import TableBatch

    return [TableBatch.from_arrays(a) for a in table_to_episode_arrays(table, record, data_config, embedder, seed=seed,
                                                                        target_columns=target_columns)]
