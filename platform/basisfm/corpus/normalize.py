"""Normalisation of one raw table: column names, kinds, cell conversion, statistics and candidate targets.

Cells become what the shard format fixes (manifest.py): numeric, boolean and datetime columns float64
(booleans 0/1, datetimes days since 1970-01-01), categorical and text columns strings, nulls for missing.
Everything unusual a table holds is either converted with a treatment recorded next to it, or the
table is rejected with a `TableError` whose message becomes the skip reason in the ingest report.

Treatments (TableRecord.treatments for tables, ColumnRecord.treatment for columns):
  no columns, no rows, a single row, nothing usable left  -> table skipped
  non-string / empty / duplicate column names              -> str(name), column_<position>, name.2 ...
  more than max_rows_per_table rows                        -> seeded row sample, original order kept
  row ids (`rownames`, `Unnamed: 0`, an `id` counting 1..n) -> column dropped
  all-missing columns (also: emptied by conversion)        -> column dropped
  more than max_columns columns                            -> first max_columns kept
  object column with >= 95% numbers                        -> numeric, the other cells missing
  other mixed-type object columns                          -> strings ("1", "a", "2.5", "True")
  +-inf                                                    -> missing (stats stay finite)
  magnitudes beyond 1e100 or below 1e-100                  -> kept exactly, noted (stats carry them)
  strings longer than max_text_chars                       -> truncated
  dates before 1677 / after 2262                           -> kept (days are computed in seconds)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from basisfm.config import CorpusConfig
from basisfm.corpus.manifest import ColumnKind, ColumnRecord, ColumnStats
from basisfm.errors import TableError
from basisfm.seeds import derive_seed

# Names that only ever label rows (R's write.csv / pandas index dumps): dropped whenever their values are unique.
_ROW_LABEL_NAMES = {"rownames", "row.names", "row_names", "unnamed: 0", "...1", "rowid", "row_id", "index"}
# Names that are sometimes row counters and sometimes real variables: dropped only when they count 1..n or 0..n-1.
_COUNTER_NAMES = {"x", "id", "obs", "row", "case", "caseid", "n", "no", "number", "seq"}
_ID_NAME = re.compile(r"(^|[._\s])(id|ids|uid|uuid|key|code)$|^id[._]|rownames", re.IGNORECASE)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_BOOL_STRINGS = {"true": 1.0, "false": 0.0}
_PADDED_CODE = re.compile(r"^\s*0\d+\s*$")

NUMERIC_PARSE_SHARE = 0.95  # an object column is numeric when this share of its present cells parse as numbers
DATE_PARSE_SHARE = 0.95
TARGET_MIN_DISTINCT_NUMERIC = 10
TARGET_MAX_CATEGORIES = 20
TARGET_MAX_MISSING = 0.5


@dataclass
class NormalisedColumn:
    """One column in shard form: `values` is float64 for numeric-like kinds, object (str or None) otherwise."""

    name: str
    kind: ColumnKind
    values: np.ndarray
    treatment: str | None = None

    def to_arrow(self) -> pa.Array:
        if self.kind.is_string:
            return pa.array(self.values, type=pa.string())
        return pa.array(self.values, type=pa.float64(), from_pandas=True)  # NaN -> null


# --------------------------------------------------------------------------- kinds


def infer_column_kind(series: pd.Series) -> ColumnKind:
    """The kind of one column, from its dtype and (for object columns) its present values."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return ColumnKind.BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return ColumnKind.DATETIME
    if isinstance(dtype, pd.CategoricalDtype):
        return ColumnKind.CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return ColumnKind.NUMERIC
    present = series.dropna()
    if len(present) == 0:
        return ColumnKind.NUMERIC  # all missing: nothing to say; normalisation drops it
    inferred = pd.api.types.infer_dtype(present, skipna=True)
    if inferred == "boolean":
        return ColumnKind.BOOLEAN
    if inferred in ("datetime", "datetime64", "date"):
        return ColumnKind.DATETIME
    # Everything below looks at distinct values weighted by how often they occur: long columns repeat a lot.
    plain = inferred in ("string", "integer", "floating", "mixed-integer-float", "decimal")
    # Other object columns may hold unhashable or oddly-typed cells (lists, bytes, mixtures): compare their text.
    counts = present.value_counts(sort=False) if plain else present.astype(str).value_counts(sort=False)
    distinct, weights = counts.index.to_numpy(dtype=object), counts.to_numpy(dtype=np.float64)
    # Zero-padded digit strings ("02134", "007") are codes: as numbers they would lose what identifies them.
    padded_codes = inferred == "string" and any(isinstance(v, str) and _PADDED_CODE.match(v) for v in distinct)
    if not padded_codes and inferred in ("integer", "floating", "mixed-integer-float", "decimal", "string", "mixed-integer", "mixed"):
        numbers = pd.to_numeric(pd.Series([_number_or_none(v) for v in distinct], dtype=object), errors="coerce")
        if weights[numbers.notna().to_numpy()].sum() >= NUMERIC_PARSE_SHARE * weights.sum():
            return ColumnKind.NUMERIC
    strings = pd.Series([str(v).strip() for v in distinct], dtype=object)
    lowered = strings.str.lower()
    if lowered.isin(list(_BOOL_STRINGS)).all():
        return ColumnKind.BOOLEAN
    if weights[strings.str.match(_ISO_DATE).to_numpy(dtype=bool)].sum() >= DATE_PARSE_SHARE * weights.sum():
        return ColumnKind.DATETIME
    return _text_or_categorical(strings, weights, n_present=len(present))


def _number_or_none(value):
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    try:
        return float(str(value))
    except ValueError:
        return None


def _text_or_categorical(distinct: pd.Series, weights: np.ndarray, n_present: int) -> ColumnKind:
    """Free text when values are mostly unique multi-word strings, or long; categories otherwise."""
    total = weights.sum()
    mean_length = float((distinct.str.len().to_numpy() * weights).sum() / total)
    mean_words = float(((distinct.str.count(r"\s+").to_numpy() + 1) * weights).sum() / total)
    unique_share = len(distinct) / max(n_present, 1)
    if mean_length >= 50 or (unique_share > 0.5 and mean_words >= 3):
        return ColumnKind.TEXT
    return ColumnKind.CATEGORICAL


# --------------------------------------------------------------------------- cells


def convert_column(series: pd.Series, kind: ColumnKind, max_text_chars: int) -> tuple[np.ndarray, list[str]]:
    """Cells of `series` in shard form for `kind`, and what had to be done to them (the treatments)."""
    notes: list[str] = []
    if kind.is_string:
        return _to_strings(series, max_text_chars, notes), notes
    if kind == ColumnKind.BOOLEAN:
        values = _to_booleans(series, notes)
    elif kind == ColumnKind.DATETIME:
        values = _to_days(series, notes)
    else:
        values = _to_floats(series, notes)
    infinite = np.isinf(values)
    if infinite.any():
        # The shard format has no infinity; a sentinel would poison scale statistics, so these become missing.
        notes.append(f"{int(infinite.sum())} infinite cells set to missing")
        values = np.where(infinite, np.nan, values)
    return values, notes


def _to_floats(series: pd.Series, notes: list[str]) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_timedelta64_dtype(dtype):
        notes.append("durations stored as days")
        return series.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan) / 86400.0
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        return np.asarray(series.to_numpy(), dtype=np.float64)  # plain NumPy storage: NaN already marks missing
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    present = series.notna()
    parsed = pd.to_numeric(series.map(_number_or_none, na_action="ignore"), errors="coerce")
    lost = int((present & parsed.isna()).sum())
    if lost:
        notes.append(f"{lost} non-numeric cells set to missing (mixed-type column)")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)


def _to_booleans(series: pd.Series, notes: list[str]) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)

    def as_flag(value):
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        return _BOOL_STRINGS.get(str(value).strip().lower(), np.nan)

    return series.map(as_flag, na_action="ignore").to_numpy(dtype=np.float64, na_value=np.nan)


def _to_days(series: pd.Series, notes: list[str]) -> np.ndarray:
    present = series.notna()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series
    else:
        raw = series.astype(object).where(present, None)
        stamps = pd.to_datetime(raw.map(lambda v: v if not isinstance(v, str) else v.strip(), na_action="ignore"),
                                errors="coerce", utc=True, format="mixed")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    missing = stamps.isna().to_numpy()
    lost = int((present.to_numpy() & missing).sum())
    if lost:
        notes.append(f"{lost} unparseable dates set to missing")
    # Seconds, not nanoseconds: historical dates (year 1182 in stevedata/recessions) overflow a ns clock.
    seconds = stamps.to_numpy().astype("datetime64[s]").astype(np.int64).astype(np.float64)
    return np.where(missing, np.nan, seconds / 86_400.0)


def _to_strings(series: pd.Series, max_text_chars: int, notes: list[str]) -> np.ndarray:
    # Work on distinct values and scatter back through the codes: long columns repeat a lot.
    present = series.notna().to_numpy()
    cells = series.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(cells, skipna=True) not in ("string", "empty"):
        # Format cell by cell first: hashing alone would merge True with 1 and 1.0 with 1.
        kinds = {type(v) for v in cells[present]}
        if len(kinds) > 1:
            notes.append(f"mixed types ({', '.join(sorted(t.__name__ for t in kinds))}) stored as strings")
        cells = np.array([_format_cell(v) if ok else None for v, ok in zip(cells, present)], dtype=object)
    codes, distinct = pd.factorize(cells, use_na_sentinel=True)
    strings = list(distinct)
    lengths = np.array([len(s) for s in strings], dtype=np.int64)
    too_long = lengths > max_text_chars
    if too_long.any():
        # Keeps shards and embedding inputs bounded; the model keeps only the first tokens of a cell anyway.
        truncated = int(np.isin(codes, np.flatnonzero(too_long)).sum())
        notes.append(f"{truncated} cells truncated to {max_text_chars} characters")
        strings = [s[:max_text_chars] for s in strings]
    lookup = np.array(strings + [None], dtype=object)  # code -1 (missing) picks the trailing None
    return lookup[codes]


def _format_cell(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # R factors of numbers arrive as floats: "3", not "3.0"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# --------------------------------------------------------------------------- statistics


def column_stats(values: np.ndarray, kind: ColumnKind) -> ColumnStats:
    n = len(values)
    if kind.is_string:
        present = pd.Series(values, dtype=object).dropna()
        return ColumnStats(missing_rate=_rate(n - len(present), n), cardinality=int(present.nunique()))
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return ColumnStats(missing_rate=1.0 if n else 0.0)
    magnitudes = np.abs(present)
    nonzero = magnitudes[magnitudes > 0]
    return ColumnStats(
        min=float(present.min()),
        max=float(present.max()),
        abs_max=float(magnitudes.max()),
        min_nonzero_abs=float(nonzero.min()) if len(nonzero) else None,
        missing_rate=_rate(n - len(present), n),
        cardinality=int(len(np.unique(present))),
    )


def _rate(count: int, total: int) -> float:
    return round(count / total, 6) if total else 0.0


# --------------------------------------------------------------------------- names, ids, targets


def clean_column_names(columns: list, table_id: str) -> tuple[list[str], list[str]]:
    """Unique, non-empty string names; returns them and the treatments applied."""
    notes: list[str] = []
    names: list[str] = []
    converted = [c for c in columns if not isinstance(c, str)]
    if converted:
        notes.append(f"{len(converted)} non-string column names converted to strings (e.g. {converted[0]!r})")
    for position, column in enumerate(columns):
        name = ("" if column is None else str(column)).strip()
        names.append(name or f"column_{position}")
    if any(not (str(c).strip() if c is not None else "") for c in columns):
        notes.append("empty column names replaced by column_<position>")
    seen: dict[str, int] = {}
    taken = set(names)
    renamed = []
    for i, name in enumerate(names):
        if name in seen:
            k = seen[name] + 1
            while f"{name}.{k}" in taken:
                k += 1
            seen[name] = k
            names[i] = f"{name}.{k}"
            taken.add(names[i])
            renamed.append(names[i])
        else:
            seen[name] = 1
    if renamed:
        notes.append(f"duplicate column names made unique: {', '.join(renamed[:5])}{' ...' if len(renamed) > 5 else ''}")
    return names, notes


def _could_be_row_id(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in _ROW_LABEL_NAMES or lowered in _COUNTER_NAMES


def is_row_id(name: str, series: pd.Series) -> bool:
    """A column that only labels rows: `rownames` and the like, or a counter 1..n / 0..n-1 with an id-ish name."""
    lowered = name.strip().lower()
    n = len(series)
    if n == 0 or series.isna().any():
        return False
    if lowered in _ROW_LABEL_NAMES:
        return bool(series.is_unique)
    if lowered in _COUNTER_NAMES and pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        counter = np.arange(n, dtype=np.float64)
        return bool(np.array_equal(values, counter + 1) or np.array_equal(values, counter))
    return False


def candidate_targets(columns: list[NormalisedColumn], stats: list[ColumnStats], n_rows: int) -> list[str]:
    """Columns worth predicting: varied numeric columns and small-cardinality categoricals, never ids."""
    chosen = []
    for column, stat in zip(columns, stats):
        if stat.missing_rate > TARGET_MAX_MISSING or _ID_NAME.search(column.name):
            continue
        if column.kind == ColumnKind.NUMERIC:
            if stat.cardinality < TARGET_MIN_DISTINCT_NUMERIC:
                continue
            present = column.values[~np.isnan(column.values)]
            # A strictly increasing integer run covering every row is a counter, not a quantity.
            if stat.cardinality == n_rows and np.all(present == np.round(present)) and np.all(np.diff(present) == 1):
                continue
            chosen.append(column.name)
        elif column.kind == ColumnKind.CATEGORICAL and 2 <= stat.cardinality <= min(TARGET_MAX_CATEGORIES, max(2, n_rows // 2)):
            chosen.append(column.name)
    return chosen


# --------------------------------------------------------------------------- tables


@dataclass
class NormalisedTable:
    table: pa.Table
    columns: list[NormalisedColumn]
    records: list[ColumnRecord]
    treatments: list[str]
    candidate_targets: list[str]
    fingerprint: str

    @property
    def n_rows(self) -> int:
        return self.table.num_rows


def normalise_table(frame: pd.DataFrame, table_id: str, config: CorpusConfig, seed: int = 0) -> NormalisedTable:
    """Normalise one raw frame; raises `TableError` when nothing usable is left (the caller skips the table)."""
    treatments: list[str] = []
    if frame.shape[1] == 0:
        raise TableError("has no columns; nothing to ingest", table=table_id)
    if frame.shape[0] == 0:
        raise TableError("has no rows; nothing to ingest", table=table_id)
    if frame.shape[0] < 2:
        raise TableError("has a single row; a table needs at least 2 rows to learn anything across rows", table=table_id)

    names, notes = clean_column_names(list(frame.columns), table_id)
    treatments += notes
    frame = frame.copy(deep=False)
    frame.columns = names

    if len(frame) > config.max_rows_per_table:
        # A seeded sample, kept in original order, represents the table better than its first rows.
        rng = np.random.default_rng(derive_seed("sample_rows", seed, table_id))
        keep = np.sort(rng.choice(len(frame), size=config.max_rows_per_table, replace=False))
        treatments.append(f"sampled {config.max_rows_per_table} of {len(frame)} rows (seed {seed})")
        frame = frame.iloc[keep]
    frame = frame.reset_index(drop=True)

    dropped_ids = [name for name in names if _could_be_row_id(name) and is_row_id(name, frame[name])]
    if dropped_ids:
        treatments.append(f"dropped row-id columns: {', '.join(dropped_ids)}")
        frame = frame.drop(columns=dropped_ids)

    has_value = frame.notna().any(axis=0).to_numpy()
    all_missing = [name for name, present in zip(frame.columns, has_value) if not present]
    if all_missing:
        treatments.append(f"dropped {len(all_missing)} all-missing columns: {_short_list(all_missing)}")
        frame = frame.drop(columns=all_missing)

    if frame.shape[1] > config.max_columns:
        treatments.append(f"kept the first {config.max_columns} of {frame.shape[1]} columns")
        frame = frame.iloc[:, : config.max_columns]
    if frame.shape[1] == 0:
        raise TableError("has no usable columns (all were row ids or entirely missing)", table=table_id)

    columns: list[NormalisedColumn] = []
    for name, series in frame.items():
        kind = infer_column_kind(series)
        values, notes = convert_column(series, kind, config.max_text_chars)
        columns.append(NormalisedColumn(name, kind, values, "; ".join(notes) or None))

    stats = [column_stats(c.values, c.kind) for c in columns]
    # Conversion can empty a column (every cell unparseable or infinite): drop those too.
    emptied = [c.name for c, s in zip(columns, stats) if s.missing_rate >= 1.0]
    if emptied:
        treatments.append(f"dropped {len(emptied)} columns with no usable cells after conversion: {_short_list(emptied)}")
        keep = [i for i, c in enumerate(columns) if c.name not in set(emptied)]
        columns, stats = [columns[i] for i in keep], [stats[i] for i in keep]
        if not columns:
            raise TableError("has no usable cells after conversion", table=table_id)

    for c, s in zip(columns, stats):
        if c.kind.is_string or s.abs_max is None:
            continue
        if s.abs_max >= 1e100 or (s.min_nonzero_abs is not None and s.min_nonzero_abs <= 1e-100):
            note = f"extreme magnitudes kept exactly (abs max {s.abs_max:.3g}, smallest non-zero {s.min_nonzero_abs:.3g})"
            c.treatment = f"{c.treatment}; {note}" if c.treatment else note

    records = [ColumnRecord(c.name, c.kind.name.lower(), s, c.treatment) for c, s in zip(columns, stats)]
    table = pa.table({c.name: c.to_arrow() for c in columns})
    return NormalisedTable(
        table=table,
        columns=columns,
        records=records,
        treatments=treatments,
        candidate_targets=candidate_targets(columns, stats, table.num_rows),
        fingerprint=content_fingerprint(columns, table.num_rows),
    )


def content_fingerprint(columns: list[NormalisedColumn], n_rows: int) -> str:
    """A hash of cell contents only: equal tables share it whatever the table or its columns are called,
    and in whatever order the columns come."""
    column_digests = sorted(_column_digest(c) for c in columns)
    outer = hashlib.sha256(f"rows={n_rows}".encode())
    for digest in column_digests:
        outer.update(digest)
    return outer.hexdigest()


def _column_digest(column: NormalisedColumn) -> bytes:
    h = hashlib.sha256(column.kind.name.encode())
    if column.kind.is_string:
        hashed = pd.util.hash_array(np.asarray(["\x00<NA>" if v is None else v for v in column.values], dtype=object))
        h.update(hashed.tobytes())
    else:
        canonical = np.where(np.isnan(column.values), np.nan, column.values + 0.0)  # one NaN bit pattern, no -0.0
        h.update(canonical.astype("<f8").tobytes())
    return h.digest()


def _short_list(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
