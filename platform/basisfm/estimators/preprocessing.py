"""Validates user frames and turns them into the corpus's typed table form, the same at fit and at predict.

What is fixed at fit (and saved with the estimator): the feature columns and their kinds (inferred with
the corpus's `infer_column_kind`), their statistics, and the target's name and statistics. Treatments,
all documented in the estimators' docstring and tested:
- numpy arrays get column names x0, x1, ...; non-string column names are used as `str(name)`;
- missing cells (NaN / None / NaT) are missing values (the model has a token for them); infinite feature
  cells become missing too, with a warning, as in the corpus;
- an all-missing column at fit carries no information and is dropped (with a warning);
- an object column mixing numbers and strings is categorical (every value as its text) unless 95% of it
  parses as numbers: then it is numeric and the rest are missing (with a warning, as for inf cells);
- at predict, column order does not matter (columns are matched by name), extra columns are ignored
  (with a warning), and unseen categories are embedded like any other string.
Everything else a user can get wrong raises `TableError` / `InputTypeError` naming column and value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from basisfm.corpus.manifest import ColumnKind, ColumnRecord, ColumnStats, TableRecord
from basisfm.errors import InputTypeError, TableError

DEFAULT_TABLE_ID = "user-table"
MAX_TEXT_CHARS = 2_000  # as the corpus: longer text cells are cut (the model keeps only the first tokens)


def as_frame(X: Any, table: str, what: str = "X") -> pd.DataFrame:
    """A DataFrame with string column names; numpy arrays are named x0, x1, ..."""
    if isinstance(X, pd.DataFrame):
        frame = X
    elif isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise InputTypeError(f"table {table!r}: {what} must be 2-dimensional (rows x columns), got an array of shape {X.shape}")
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    else:
        raise InputTypeError(f"table {table!r}: {what} must be a pandas DataFrame or a 2-d numpy array, got {type(X).__name__}")
    raw_names = list(frame.columns)
    names = [str(c) for c in raw_names]
    seen: dict[str, Any] = {}
    for raw, name in zip(raw_names, names):
        if name in seen:
            raise TableError(
                f"duplicate column name (columns {seen[name]!r} and {raw!r} are both named {name!r} as text); "
                "rename one of them: columns are matched and embedded by name", table=table, column=name)
        seen[name] = raw
    if frame.shape[1] == 0:
        raise TableError(f"{what} has no columns; pass at least one feature column", table=table)
    if frame.shape[0] == 0:
        raise TableError(f"{what} has no rows", table=table)
    frame = frame.copy()
    frame.columns = names
    return frame.reset_index(drop=True)


@dataclass
class FittedColumn:
    name: str
    kind: str  # ColumnKind name, lower case
    stats: ColumnStats = field(default_factory=ColumnStats)

    @property
    def column_kind(self) -> ColumnKind:
        return ColumnKind.parse(self.kind)


@dataclass
class TablePreprocessor:
    """Fit on (X, y) once; then `features(X)` / `to_arrow(...)` give the model's typed table at any time."""

    table_id: str = DEFAULT_TABLE_ID
    columns: list[FittedColumn] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    target: FittedColumn | None = None
    treatments: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, target_name: str, target_kind: ColumnKind, target_values: pd.Series) -> "TablePreprocessor":
        from basisfm.corpus.normalize import column_stats, infer_column_kind

        frame = as_frame(X, self.table_id)
        if target_name in frame.columns:
            raise TableError(f"a feature column has the target's name {target_name!r}; rename it or pass "
                             "target_name=... so the target is named differently", table=self.table_id, column=target_name)
        self.columns, self.dropped_columns, self.treatments = [], [], []
        for name in frame.columns:
            series = frame[name]
            if series.isna().all():
                self.dropped_columns.append(name)
                self._treat(f"column {name!r} is missing in every row: dropped (it carries no information)")
                continue
            kind = infer_column_kind(series)
            converted = convert_column(series, kind, self.table_id, name)
            stats = column_stats(converted.to_numpy(), kind)
            self.columns.append(FittedColumn(name=name, kind=kind.name.lower(), stats=stats))
        if not self.columns:
            raise TableError(f"every feature column is missing in every row ({self.dropped_columns}); nothing to learn from",
                             table=self.table_id)
        tvalues = target_values.to_numpy(dtype=object if target_kind.is_string else np.float64)
        self.target = FittedColumn(name=target_name, kind=target_kind.name.lower(), stats=column_stats(tvalues, target_kind))
        return self

    def _treat(self, note: str) -> None:
        self.treatments.append(note)
        warnings.warn(f"table {self.table_id!r}: {note}", UserWarning, stacklevel=4)

    # ------------------------------------------------------------------ transform

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def features(self, X: Any) -> pd.DataFrame:
        """Typed feature columns in the fitted order: float64 for numeric-like kinds, str/None for string kinds."""
        if self.target is None:
            raise TableError("the preprocessor is not fitted; call fit first", table=self.table_id)
        frame = as_frame(X, self.table_id)
        expected = self.feature_names + self.dropped_columns
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise TableError(f"columns {missing} were present at fit but are missing now; pass every fitted column "
                             f"(fitted: {self.feature_names})", table=self.table_id, column=missing[0])
        extra = [c for c in frame.columns if c not in expected]
        if extra:
            warnings.warn(f"table {self.table_id!r}: columns {extra} were not present at fit and are ignored",
                          UserWarning, stacklevel=3)
        return pd.DataFrame({c.name: convert_column(frame[c.name], c.column_kind, self.table_id, c.name) for c in self.columns})

    def record(self) -> TableRecord:
        """The manifest record of the fitted table (features then target): what collation reads stats from."""
        cols = [ColumnRecord(name=c.name, kind=c.kind, stats=c.stats) for c in [*self.columns, self.target]]
        return TableRecord(id=self.table_id, source="user", locator="in-memory", fingerprint="", shard="",
                           n_rows=0, columns=cols, candidate_targets=[self.target.name])

    def to_arrow(self, features: pd.DataFrame, target_values: pd.Series | None) -> pa.Table:
        """Features plus the target column (all null when `target_values` is None: at predict)."""
        n = len(features)
        arrays, names = [], []
        for col in [*self.columns, self.target]:
            if col is self.target:
                data = target_values if target_values is not None else pd.Series([None] * n, dtype=object)
            else:
                data = features[col.name]
            if col.column_kind.is_string:
                arrays.append(pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                                        for v in data], type=pa.string()))
            else:
                arrays.append(pa.array(pd.to_numeric(data, errors="coerce").to_numpy(dtype=np.float64), type=pa.float64(),
                                       from_pandas=True))
            names.append(col.name)
        return pa.Table.from_arrays(arrays, names=names)

    # ------------------------------------------------------------------ JSON state

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> "TablePreprocessor":
        def column(c: dict[str, Any]) -> FittedColumn:
            return FittedColumn(name=c["name"], kind=c["kind"], stats=ColumnStats(**c["stats"]))

        return cls(table_id=raw["table_id"], columns=[column(c) for c in raw["columns"]],
                   dropped_columns=list(raw["dropped_columns"]), target=column(raw["target"]),
                   treatments=list(raw["treatments"]))


def convert_column(series: pd.Series, kind: ColumnKind, table: str, column: str) -> pd.Series:
    """One column in the shard form of its kind, by the corpus's own cell conversion; its treatments warn."""
    from basisfm.corpus.normalize import convert_column as corpus_convert

    values, notes = corpus_convert(series, kind, MAX_TEXT_CHARS)
    for note in notes:
        example = _first_unconverted(series, values)
        warnings.warn(f"table {table!r}, column {column!r}: {note}" + (f" (e.g. {example!r})" if example is not None else ""),
                      UserWarning, stacklevel=4)
    return pd.Series(values, index=series.index, dtype=object if kind.is_string else np.float64)


def _first_unconverted(original: pd.Series, converted: np.ndarray):
    """A cell that was present but became missing (e.g. 'n/a' in a numeric column, or inf), for messages."""
    if converted.dtype == object:
        return None
    lost = original.notna().to_numpy() & np.isnan(converted)
    return original.iloc[int(np.flatnonzero(lost)[0])] if lost.any() else None
