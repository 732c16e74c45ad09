"""Validates user frames and turns them into the corpus's typed table form, the same at fit and at predict.

What is fixed at fit (and saved with the estimator): the feature columns and their kinds (inferred with
the corpus's `infer_column_kind`), their statistics, and the target's (or targets': a DataFrame y holds
several, predicted at once) names and statistics. Treatments,
all documented in the estimators' docstring and tested:
- numpy arrays get column names x0, x1, ...; non-string column names are used as `str(name)`;
- missing cells (NaN / None / NaT) are missing values (the model has a token for them); infinite feature
  cells become missing too, with a warning, as in the corpus;
- an all-missing column at fit carries no information and is dropped (with a warning);
- an object column mixing numbers and strings is categorical (every value as its text) unless 95% of it
  parses as numbers: then it is numeric and the rest are missing (with a warning, as for inf cells);
- at predict, column order does not matter (columns are matched by name), extra columns are ignored
  (with a warning), and unseen categories are embedded like any other string;
- bytes cells are text when they are UTF-8 (other bytes raise, naming column, row and value);
- pd.NA, None, NaN and NaT are all missing, whatever the column's dtype;
- a column that was boolean at fit takes booleans, 0/1 and the words true/false, yes/no, y/n, t/f, on/off
  at predict (any case); other cells become missing with a warning;
- a column that was datetime at fit takes datetimes or date strings at predict; plain numbers raise (their
  unit, seconds to nanoseconds since 1970, cannot be told apart);
- a duration (timedelta) column is read in days, as the corpus reads it; one that held durations at fit takes
  durations at predict and refuses plain numbers (seconds would be read as days: 86,400 times too large);
- complex numbers are kept when every imaginary part is 0, and raise otherwise (no silent loss of a part).
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
from basisfm.errors import InputShapeError, InputTypeError, TableError

DEFAULT_TABLE_ID = "user-table"
MAX_TEXT_CHARS = 2_000  # as the corpus: longer text cells are cut (the model keeps only the first tokens)


def as_frame(X: Any, table: str, what: str = "X") -> pd.DataFrame:
    """A DataFrame with string column names; arrays and other array-likes (lists of rows, objects with
    `__array__`) are named x0, x1, ... by position. Sparse matrices are refused (densify them first)."""
    if isinstance(X, pd.DataFrame):
        frame = X
    else:
        frame = _array_like_frame(X, table, what)
    raw_names = list(frame.columns)
    names = [str(c) for c in raw_names]
    seen: dict[str, Any] = {}
    for raw, name in zip(raw_names, names):
        if name in seen:
            raise TableError(
                f"duplicate column name (columns {seen[name]!r} and {raw!r} are both named {name!r} as text); "
                "rename one of them: columns are matched and embedded by name", table=table, column=name)
        seen[name] = raw
    # The "N feature(s) / sample(s) (shape=...) while a minimum of 1 is required" wording is scikit-learn's.
    if frame.shape[1] == 0:
        raise TableError(f"{what} has no columns: 0 feature(s) (shape={frame.shape}) while a minimum of 1 is required; "
                         "pass at least one feature column", table=table)
    if frame.shape[0] == 0:
        raise TableError(f"{what} has no rows: 0 sample(s) (shape={frame.shape}) while a minimum of 1 is required",
                         table=table)
    frame = frame.copy()
    frame.columns = names
    return frame.reset_index(drop=True)


def _array_like_frame(X: Any, table: str, what: str) -> pd.DataFrame:
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise InputTypeError(f"table {table!r}: {what} is a sparse {type(X).__name__}; sparse input is not supported: "
                             "pass X.toarray() or a DataFrame")
    if isinstance(X, (pd.Series, str, bytes, dict)) or X is None:
        raise InputTypeError(f"table {table!r}: {what} must be a pandas DataFrame, a 2-d numpy array or a list of rows, "
                             f"got {type(X).__name__}")
    if isinstance(X, np.ndarray):
        array = X
    else:
        try:
            array = np.asarray(X, dtype=object)  # object: a list row [1, "a"] keeps its number a number
        except (TypeError, ValueError) as exc:  # ragged rows and objects numpy cannot read
            raise InputTypeError(f"table {table!r}: {what} must be a pandas DataFrame, a 2-d numpy array or a list of "
                                 f"equally long rows, got {type(X).__name__} ({exc})") from None
    if array.ndim != 2:
        hint = "; Reshape your data: X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one row" if array.ndim == 1 else ""
        raise InputShapeError(f"table {table!r}: {what} must be 2-dimensional (rows x columns), got an array of shape "
                              f"{array.shape}{hint}")
    frame = pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])
    return frame if isinstance(X, np.ndarray) else frame.infer_objects()


@dataclass
class FittedColumn:
    name: str
    kind: str  # ColumnKind name, lower case
    stats: ColumnStats = field(default_factory=ColumnStats)
    duration: bool = False  # held timedeltas at fit (read in days): numbers at predict are refused

    @property
    def column_kind(self) -> ColumnKind:
        return ColumnKind.parse(self.kind)


@dataclass
class TablePreprocessor:
    """Fit on (X, y) once; then `features(X)` / `to_arrow(...)` give the model's typed table at any time."""

    table_id: str = DEFAULT_TABLE_ID
    columns: list[FittedColumn] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    targets: list[FittedColumn] = field(default_factory=list)
    treatments: list[str] = field(default_factory=list)

    @property
    def target(self) -> FittedColumn:
        """The first (with one target, the only) target column."""
        if not self.targets:
            raise TableError("the preprocessor is not fitted; call fit first", table=self.table_id)
        return self.targets[0]

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, targets: pd.Series | pd.DataFrame, target_kind: ColumnKind) -> "TablePreprocessor":
        """Fix the feature columns of X and the target column(s): a named Series, or a DataFrame of several."""
        from basisfm.corpus.normalize import column_stats, infer_column_kind

        frame = as_frame(X, self.table_id)
        targets = targets.to_frame() if isinstance(targets, pd.Series) else targets
        for target_name in targets.columns:
            if target_name in frame.columns:
                raise TableError(f"a feature column has the target's name {target_name!r}; rename it or pass "
                                 "target_name=... so the target is named differently", table=self.table_id, column=target_name)
        self.columns, self.dropped_columns, self.treatments = [], [], []
        for name in frame.columns:
            series = plain_cells(frame[name], self.table_id, name)
            if series.isna().all():
                self.dropped_columns.append(name)
                self._treat(f"column {name!r} is missing in every row: dropped (it carries no information)")
                continue
            kind = infer_column_kind(series)
            converted = convert_column(series, kind, self.table_id, name)
            stats = column_stats(converted.to_numpy(), kind)
            self.columns.append(FittedColumn(name=name, kind=kind.name.lower(), stats=stats,
                                             duration=bool(pd.api.types.is_timedelta64_dtype(series.dtype))))
        if not self.columns:
            raise TableError(f"every feature column is missing in every row ({self.dropped_columns}); nothing to learn from",
                             table=self.table_id)
        dtype = object if target_kind.is_string else np.float64
        self.targets = [FittedColumn(name=str(name), kind=target_kind.name.lower(),
                                     stats=column_stats(targets[name].to_numpy(dtype=dtype), target_kind))
                        for name in targets.columns]
        return self

    def _treat(self, note: str) -> None:
        self.treatments.append(note)
        warnings.warn(f"table {self.table_id!r}: {note}", UserWarning, stacklevel=4)

    # ------------------------------------------------------------------ transform

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def numeric_feature_names(self) -> list[str]:
        """The feature columns of kind numeric (what an imputer fills)."""
        return [c.name for c in self.columns if c.column_kind == ColumnKind.NUMERIC]

    def features(self, X: Any) -> pd.DataFrame:
        """Typed feature columns in the fitted order: float64 for numeric-like kinds, str/None for string kinds."""
        if not self.targets:
            raise TableError("the preprocessor is not fitted; call fit first", table=self.table_id)
        frame = as_frame(X, self.table_id)
        expected = self.feature_names + self.dropped_columns
        if not isinstance(X, pd.DataFrame) and frame.shape[1] != len(expected):
            # Columns without names are matched by position: another width is another table. (The wording is
            # scikit-learn's n_features_in_ message.)
            raise InputShapeError(f"table {self.table_id!r}: X has {frame.shape[1]} features, but basisfm is expecting "
                                  f"{len(expected)} features as input (the width at fit); columns of an array are matched "
                                  "by position, pass a DataFrame to match them by name")
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise TableError(f"columns {missing} were present at fit but are missing now; pass every fitted column "
                             f"(fitted: {self.feature_names})", table=self.table_id, column=missing[0])
        extra = [c for c in frame.columns if c not in expected]
        if extra:
            warnings.warn(f"table {self.table_id!r}: columns {extra} were not present at fit and are ignored",
                          UserWarning, stacklevel=3)
        return pd.DataFrame({c.name: convert_column(frame[c.name], c.column_kind, self.table_id, c.name, duration=c.duration)
                             for c in self.columns})

    def record(self) -> TableRecord:
        """The manifest record of the fitted table (features then targets): what collation reads stats from."""
        cols = [ColumnRecord(name=c.name, kind=c.kind, stats=c.stats) for c in [*self.columns, *self.targets]]
        return TableRecord(id=self.table_id, source="user", locator="in-memory", fingerprint="", shard="",
                           n_rows=0, columns=cols, candidate_targets=self.target_names)

    def to_arrow(self, features: pd.DataFrame, target_values: pd.Series | pd.DataFrame | None) -> pa.Table:
        """Features plus the target column(s) (all null when `target_values` is None: at predict)."""
        n = len(features)
        if target_values is None:
            target_values = pd.DataFrame({t.name: pd.Series([None] * n, dtype=object) for t in self.targets})
        elif isinstance(target_values, pd.Series):
            target_values = target_values.to_frame(self.target.name)
        arrays, names = [], []
        cells = [(col, features[col.name]) for col in self.columns] + [(t, target_values[t.name]) for t in self.targets]
        for col, data in cells:
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
            # saved before durations were told apart: such a column takes numbers as it did
            return FittedColumn(name=c["name"], kind=c["kind"], stats=ColumnStats(**c["stats"]), duration=bool(c.get("duration", False)))

        # Format 2 saved one "target"; format 3 saves the list "targets".
        targets = [column(t) for t in raw["targets"]] if "targets" in raw else [column(raw["target"])]
        return cls(table_id=raw["table_id"], columns=[column(c) for c in raw["columns"]],
                   dropped_columns=list(raw["dropped_columns"]), targets=targets,
                   treatments=list(raw["treatments"]))


def convert_column(series: pd.Series, kind: ColumnKind, table: str, column: str, duration: bool = False) -> pd.Series:
    """One column in the shard form of its kind, by the corpus's own cell conversion; its treatments warn.
    `duration`: the column held timedeltas at fit, so numbers (of an unknown unit) are refused."""
    from basisfm.corpus.normalize import convert_column as corpus_convert

    series = plain_cells(series, table, column)
    if duration:
        _refuse_numbers_as_durations(series, table, column)
    if kind == ColumnKind.BOOLEAN:
        series = _as_flags(series, table, column)
    elif kind == ColumnKind.DATETIME:
        _refuse_numbers_as_dates(series, table, column)
    values, notes = corpus_convert(series, kind, MAX_TEXT_CHARS)
    for note in notes:
        example = _first_unconverted(series, values)
        warnings.warn(f"table {table!r}, column {column!r}: {note}" + (f" (e.g. {example!r})" if example is not None else ""),
                      UserWarning, stacklevel=4)
    return pd.Series(values, index=series.index, dtype=object if kind.is_string else np.float64)


_FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "y": True, "n": False, "t": True, "f": False,
               "on": True, "off": False, "1": True, "0": False, "1.0": True, "0.0": False}


def plain_cells(series: pd.Series, table: str, column: str) -> pd.Series:
    """Cells the corpus conversion reads right: UTF-8 bytes as text, complex numbers only when real.

    Anything that would be read wrong raises `TableError` naming the column, row and value: bytes that are
    not UTF-8 (there is no right way to embed them), complex numbers with an imaginary part (the model
    reads one real number per cell: pass the parts as two columns).
    """
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        imaginary = np.imag(series.to_numpy())
        lossy = np.flatnonzero(imaginary != 0)  # NaN parts count: they would vanish too
        if len(lossy):
            row = int(lossy[0])
            raise TableError(f"row {row} is the complex number {series.iloc[row]!r}: Complex data not supported, cells "
                             "are real numbers; pass the real and imaginary parts as two columns (e.g. x.real and x.imag)",
                             table=table, column=column)
        return pd.Series(np.real(series.to_numpy()), index=series.index, name=series.name)
    if dtype != object:
        return series
    values = series.to_numpy()
    odd = [i for i, v in enumerate(values) if isinstance(v, (bytes, bytearray, memoryview, complex, np.complexfloating))]
    if not odd:
        return series
    values = values.copy()
    for row in odd:
        value = values[row]
        if isinstance(value, (complex, np.complexfloating)):
            if value.imag != 0:
                raise TableError(f"row {row} is the complex number {value!r}: Complex data not supported, cells are "
                                 "real numbers; pass the real and imaginary parts as two columns", table=table, column=column)
            values[row] = float(value.real)
            continue
        try:
            values[row] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TableError(f"row {row} is {bytes(value)[:40]!r}, bytes that are not UTF-8 text; decode the column "
                             "in its real encoding first (e.g. X[col].str.decode('latin-1'))", table=table, column=column) from None
    return pd.Series(values, index=series.index, name=series.name, dtype=object)


def _as_flags(series: pd.Series, table: str, column: str) -> pd.Series:
    """A boolean column's cells as True / False / None: booleans, the numbers 0 and 1, and the words in
    `_FLAG_WORDS`; any other present cell becomes missing with a warning naming it."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series

    def flag(value):
        if value is None or (np.ndim(value) == 0 and not isinstance(value, str) and pd.isna(value)):
            return None
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
            return bool(value)
        return _FLAG_WORDS.get(str(value).strip().lower())

    flags = pd.Series([flag(v) for v in series.to_numpy(dtype=object)], index=series.index, dtype=object)
    lost = series.notna().to_numpy() & flags.isna().to_numpy()
    if lost.any():
        example = series[lost].iloc[0]
        warnings.warn(f"table {table!r}, column {column!r}: {int(lost.sum())} cells are not booleans (e.g. {example!r}); "
                      "set to missing (booleans, 0/1, true/false and yes/no are read)", UserWarning, stacklevel=4)
    return flags


def _holds_numbers(series: pd.Series) -> bool:
    """Whether the column holds plain numbers (a numeric dtype, or numbers among an object column's cells)."""
    dtype = series.dtype
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if not numeric and dtype == object:
        numeric = any(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                      and not pd.isna(v) for v in series.to_numpy())
    return numeric


def _refuse_numbers_as_durations(series: pd.Series, table: str, column: str) -> None:
    """Durations are read in days; a number could be seconds, minutes or days, and read in the wrong unit it
    is silently wrong by a factor of 60 to 86,400, so numbers are refused where durations were fitted."""
    if _holds_numbers(series):
        raise TableError(f"held durations at fit but got numbers ({series.dtype}); their unit cannot be told: pass "
                         "timedeltas, e.g. pd.to_timedelta(X[col], unit='s')", table=table, column=column)


def _refuse_numbers_as_dates(series: pd.Series, table: str, column: str) -> None:
    """Numbers in a datetime column could be seconds, milliseconds, microseconds or nanoseconds since 1970;
    read in the wrong unit they are silently wrong by a factor of 1000 or more, so they are refused."""
    if _holds_numbers(series):
        raise TableError(f"held dates at fit but got numbers ({series.dtype}); their unit (s, ms, us or ns since 1970) cannot "
                         "be told: pass datetimes, e.g. pd.to_datetime(X[col], unit='s')", table=table, column=column)


def _first_unconverted(original: pd.Series, converted: np.ndarray):
    """A cell that was present but became missing (e.g. 'n/a' in a numeric column, or inf), for messages."""
    if converted.dtype == object:
        return None
    lost = original.notna().to_numpy() & np.isnan(converted)
    return original.iloc[int(np.flatnonzero(lost)[0])] if lost.any() else None
