"""Pretraining tasks from real corpus tables, read the way the in-context estimators read a user's table.

TabDPT pretrains on real tables; our synthetic prior alone leaves the shipped in-context checkpoint behind
the GBDTs on the tables people bring (skewed prices, many weak or irrelevant columns, categories). A
`CorpusTasks` draws in-context episodes from the ingested corpus (`runs/corpus`, public-suite tables already
excluded by the ingest's hold-out index) exactly as `strategy="inference"` reads a table at predict time:
one target column drawn from the table's candidate targets, the features a member may read
(`table_reading`: a table wider than an episode by its most relevant features), categorical features
coded as numbers in an order drawn per episode ("ordinal"; inference defaults to "auto", which differs only on
columns of 5+ values), then labelled support rows and hidden query rows scaled by the support rows (`data.episodes.episodes_from_prepared`). The episodes
are `TableBatch`es, the same contract as the prior's, so one step can mix both.

Tables are split once, by a hash of their id, into training tables and held-out tables (`held_out`), so a
run can report how well the model predicts tables it never trained on. Each table is read from its shard
and embedded on first use (at most `max_table_rows` of its rows, drawn once) and kept in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from basisfm.config import DataConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord, read_manifest
from basisfm.data.batch import TableBatch
from basisfm.data.collate import PreparedTable, prepare_table
from basisfm.data.episodes import episodes_from_prepared
from basisfm.data.pipeline import read_shard
from basisfm.errors import ConfigError
from basisfm.data.reading import InContextSettings, coded_categories, table_reading
from basisfm.seeds import derive_seed


@dataclass
class CorpusTaskSettings:
    max_rows: int = 512  # rows per episode (support + query)
    max_columns: int = 24  # target + feature columns per episode
    max_cells: int = 8192  # rows x columns per episode
    query_fraction: float = 0.25
    min_rows: int = 32  # tables with fewer rows make no task
    max_table_rows: int = 4096  # rows of a table kept in memory (a fixed random draw)
    classification_fraction: float = 0.2  # share of tasks with a categorical target, where the table has one
    held_out_fraction: float = 0.05  # tables (by id hash) kept out of training, for `held_out`

    def validate(self) -> None:
        for name in ("max_rows", "max_columns", "max_cells", "min_rows", "max_table_rows"):
            if getattr(self, name) < 2:
                raise ConfigError(f"corpus tasks: {name} must be at least 2, got {getattr(self, name)!r}")
        for name in ("query_fraction", "held_out_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"corpus tasks: {name} must be in (0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.classification_fraction <= 1.0:
            raise ConfigError(f"corpus tasks: classification_fraction must be in [0, 1], got {self.classification_fraction!r}")


@dataclass
class _Table:
    record: TableRecord
    prepared: PreparedTable
    numeric_targets: np.ndarray
    categorical_targets: np.ndarray
    readings: dict = field(default_factory=dict)  # target position -> (readable features, rank_by): computed once


def held_out_ids(table_ids: list[str], fraction: float) -> set[str]:
    """The held-out tables: those whose id hashes below `fraction` (a fixed function of the id, the same in every
    run and corpus), at least one and never all of them."""
    def position(table_id: str) -> float:
        return int(hashlib.sha256(table_id.encode()).hexdigest()[:12], 16) / 16**12

    ranked = sorted(table_ids, key=position)
    n = min(len(ranked) - 1, max(1, sum(position(t) < fraction for t in ranked)))
    return set(ranked[:n])


class CorpusTasks:
    """Episodes from the corpus at `corpus_dir`; `sample(n)` draws from training tables, `held_out(n)` from the others."""

    def __init__(self, corpus_dir: str | Path, embedder, settings: CorpusTaskSettings | None = None, *, seed: int = 0):
        self.settings = settings or CorpusTaskSettings()
        self.settings.validate()
        self.corpus_dir = Path(corpus_dir)
        self.embedder = embedder
        records = [r for r in read_manifest(self.corpus_dir) if self._usable(r)]
        if not records:
            raise ConfigError(f"corpus tasks: no table of {self.corpus_dir} has {self.settings.min_rows}+ rows, "
                              "a candidate target and a feature; run `python -m jobs.ingest` first")
        if len(records) < 2:
            raise ConfigError(f"corpus tasks: {self.corpus_dir} has {len(records)} usable table; training and held-out "
                              "tables need at least 2")
        held = held_out_ids([r.id for r in records], self.settings.held_out_fraction)
        self.train_records = [r for r in records if r.id not in held]
        self.held_out_records = [r for r in records if r.id in held]
        self._tables: dict[str, _Table | None] = {}
        self._rng = np.random.default_rng(derive_seed("corpus_tasks", seed))
        self.config = DataConfig(task="episodes", max_rows=self.settings.max_rows, min_rows=2,
                                 max_columns=self.settings.max_columns, token_budget=self.settings.max_cells,
                                 query_fraction=self.settings.query_fraction, max_episode_targets=1, episodes_per_table=1)
        self.config.validate("corpus_tasks")

    def _usable(self, record: TableRecord) -> bool:
        names = {c.name for c in record.columns}
        return record.n_rows >= self.settings.min_rows and len(record.columns) >= 2 and any(t in names for t in record.candidate_targets)

    def sample(self, n: int) -> list[TableBatch]:
        """`n` episodes from training tables (a table drawn uniformly, then its target and rows)."""
        return self._episodes(self.train_records, n, self._rng)

    def held_out(self, n: int, seed: int = 999_983) -> list[TableBatch]:
        """`n` episodes from held-out tables, the same ones for the same seed."""
        return self._episodes(self.held_out_records, n, np.random.default_rng(derive_seed("corpus_tasks_held_out", seed)))

    def _episodes(self, records: list[TableRecord], n: int, rng: np.random.Generator) -> list[TableBatch]:
        episodes: list[TableBatch] = []
        tries = 0
        while len(episodes) < n:
            tries += 1
            if tries > 20 * n + 100:
                raise ConfigError(f"corpus tasks: {tries} draws from {len(records)} tables gave only {len(episodes)} episodes")
            table = self._table(records[int(rng.integers(len(records)))])
            if table is None:
                continue
            episode = self._episode(table, rng)
            if episode is not None:
                episodes.append(episode)
        return episodes

    def _table(self, record: TableRecord) -> _Table | None:
        """The record's rows read, subsampled and embedded once (None when nothing usable is left)."""
        if record.id not in self._tables:
            table = read_shard(self.corpus_dir, record)
            names = [c.name for c in record.columns]
            if table.num_rows > self.settings.max_table_rows:
                rows = np.random.default_rng(derive_seed("corpus_rows", record.id)).choice(
                    table.num_rows, self.settings.max_table_rows, replace=False)
                table = table.take(np.sort(rows))
            prepared = prepare_table(table.select(names), record, self.embedder)
            kinds = {c.name: c.column_kind for c in record.columns}
            targets = [names.index(t) for t in record.candidate_targets if t in kinds]  # `_usable`: at least one
            numeric = [j for j in targets if kinds[names[j]] == ColumnKind.NUMERIC]
            categorical = [j for j in targets if kinds[names[j]] == ColumnKind.CATEGORICAL]
            self._tables[record.id] = (_Table(record, prepared, np.asarray(numeric, dtype=np.int64), np.asarray(categorical, dtype=np.int64))
                                       if numeric or categorical else None)
        return self._tables[record.id]

    def _episode(self, table: _Table, rng: np.random.Generator) -> TableBatch | None:
        use_categorical = len(table.categorical_targets) and (not len(table.numeric_targets) or rng.random() < self.settings.classification_fraction)
        pool = table.categorical_targets if use_categorical else table.numeric_targets
        target = np.asarray([int(rng.choice(pool))], dtype=np.int64)
        prepared = table.prepared
        labelled = np.flatnonzero(~prepared.missing[:, target[0]])
        if len(labelled) < 4:
            return None
        features = np.setdiff1d(np.arange(prepared.values.shape[1]), target)
        if not len(features):
            return None
        reading = InContextSettings(max_columns=self.settings.max_columns)
        if int(target[0]) not in table.readings:  # mutual information on a wide table takes about a second
            table.readings[int(target[0])] = table_reading(prepared, features, target, labelled, reading)
        readable, rank_by = table.readings[int(target[0])]
        coded = coded_categories(prepared, readable, reading.categorical_features, rng, rank_by)
        arrays = episodes_from_prepared(coded, table.record, self.config, seed=int(rng.integers(2**31)),
                                        target_positions=target, feature_positions=readable)
        return TableBatch.from_arrays(arrays[0]) if arrays else None
