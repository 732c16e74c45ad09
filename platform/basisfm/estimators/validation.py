"""Estimator-level checks: constructor parameters, the target (class labels, regression magnitudes), and a
saved `estimator.json` read back. Every failure names the parameter, column or JSON key at fault.

`base.py` calls these at the start of `fit` (`validate_params`), on the target (`check_class_labels`,
`check_regression_target`) and in `load` (`read_estimator_state`), so it stays about fitting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from basisfm.config import MAX_LEARNING_RATE
from basisfm.corpus.manifest import ColumnKind, ColumnStats
from basisfm.errors import CheckpointError, ConfigError, InputShapeError, InputTypeError, TableError
from basisfm.estimators.finetune import MAX_STEPS, REGRESSION_LOSSES, STRATEGIES
from basisfm.estimators.saved_files import ESTIMATOR_FILE, FORMAT_VERSION, READABLE_FORMATS

MAX_SEED = 2**32 - 1  # numpy's and torch's seeding both take [0, 2**32)
# The largest target magnitude a fit can leave in estimator.json: `check_regression_target` refuses targets whose
# doubled squares overflow float64 (about 6.7e153 for one row), so a mean, spread or constant beyond this was
# written by someone else, and predictions decoded with it would be wrong (or inf).
MAX_TARGET_MAGNITUDE = 1e154
PRESETS = ("tiny", "small", "base")
REGRESSION_HEADS = ("smr_bits", "binned")

# ---------------------------------------------------------------------------- parameters

# name -> (smallest, largest) for integer parameters
_INTEGER_PARAMS = {
    "n_estimators": (1, 1_024),
    "max_context": (1, 10**7),
    "max_steps": (1, MAX_STEPS),
    "patience": (1, MAX_STEPS),
    "validate_every": (1, MAX_STEPS),
    "lora_r": (1, 65_536),
    "lora_alpha": (1, 65_536),
    "token_budget": (16, 1 << 24),
    "max_columns": (2, 100_000),
    "random_state": (0, MAX_SEED),
}
# integer parameters that may also be None (None: sized to the table, or chosen by the strategy)
_OPTIONAL_INTEGER_PARAMS = ("max_steps", "validate_every", "n_estimators")
# name -> (lowest, highest, lowest allowed, highest allowed, what) for float parameters
_FLOAT_PARAMS = {
    "learning_rate": (0.0, MAX_LEARNING_RATE, False, True, f"in (0, {MAX_LEARNING_RATE}]"),
    "weight_decay": (0.0, MAX_LEARNING_RATE, True, True, f"in [0, {MAX_LEARNING_RATE}]"),
    "lora_dropout": (0.0, 1.0, True, False, "in [0, 1)"),
    "validation_fraction": (0.0, 1.0, False, False, "in (0, 1)"),
}


def validate_params(estimator: Any) -> None:
    """Every constructor parameter of a Basis estimator, checked before any work; errors name the parameter.

    Wrong types raise `InputTypeError` (a `TypeError`), out-of-range values `ConfigError` (a `ValueError`),
    as scikit-learn estimators do.
    """
    params = estimator.get_params(deep=False)
    for name, (low, high) in _INTEGER_PARAMS.items():
        if name in params and not (name in _OPTIONAL_INTEGER_PARAMS and params[name] is None):
            _check_integer(name, params[name], low, high)
    for name, (low, high, low_ok, high_ok, what) in _FLOAT_PARAMS.items():
        if name in params:
            _check_float(name, params[name], low, high, low_ok, high_ok, what)
    budget = params.get("time_budget_s")
    if budget is not None:
        _check_float("time_budget_s", budget, 0.0, math.inf, False, False, "None or a positive number of seconds")
    _check_choice("strategy", params.get("strategy"), STRATEGIES)
    _check_choice("preset", params.get("preset"), PRESETS)
    if getattr(estimator, "_task", None) == "regression":
        _check_choice("regression_loss", params.get("regression_loss"), REGRESSION_LOSSES)
    _check_choice("regression_head", params.get("regression_head", "smr_bits"), REGRESSION_HEADS)
    from basisfm.data.reading import CATEGORICAL_FEATURES, FEATURE_SELECTIONS, TRANSFORMS

    if params.get("categorical_features") is not None:
        _check_choice("categorical_features", params["categorical_features"], CATEGORICAL_FEATURES)
    if params.get("feature_selection") is not None:
        _check_choice("feature_selection", params["feature_selection"], FEATURE_SELECTIONS)
    if params.get("missing_imputation") is not None:
        from basisfm.encoding.imputation import IMPUTATIONS

        _check_choice("missing_imputation", params["missing_imputation"], IMPUTATIONS)
    for name in ("feature_transforms", "target_transforms"):
        transforms = params.get(name)
        if transforms is None:
            continue
        if isinstance(transforms, str) or not isinstance(transforms, (list, tuple)) or not transforms:
            raise _refused(InputTypeError, name, f"must be None or a non-empty list drawn from {TRANSFORMS}, got {transforms!r}")
        for t in transforms:
            _check_choice(name, t, TRANSFORMS)
    linear = params.get("linear_feature")
    if linear is not None and not isinstance(linear, (bool, np.bool_)):
        raise _refused(InputTypeError, "linear_feature", f"must be None, True or False, got {linear!r}")
    if linear and params.get("strategy") != "inference":
        raise _refused(ConfigError, "linear_feature", "applies to strategy='inference' (fine-tuning trains on episodes "
                       f"without the column), got strategy={params.get('strategy')!r}")
    if params.get("retrieval") is not None and not isinstance(params["retrieval"], (bool, np.bool_)):
        raise _refused(InputTypeError, "retrieval", f"must be None, True or False, got {params.get('retrieval')!r}")
    device = params.get("device", "auto")
    if not isinstance(device, str):
        raise _refused(InputTypeError, "device", f"must be 'auto', 'cpu' or a CUDA device name, got {device!r}")
    for name in ("checkpoint", "tracking_uri", "embedding_cache_dir", "target_name"):
        value = params.get(name)
        if value is not None and not isinstance(value, (str, Path)):
            raise _refused(InputTypeError, name, f"must be None or a string, got {type(value).__name__} {value!r}")
    modules = params.get("lora_target_modules")
    if modules is not None and (isinstance(modules, str) or not all(isinstance(m, str) for m in modules)):
        raise _refused(InputTypeError, "lora_target_modules", f"must be None or a list of module names, got {modules!r}")
    if not isinstance(params.get("progress", True), (bool, np.bool_)):
        raise _refused(InputTypeError, "progress", f"must be True or False, got {params.get('progress')!r}")


def _refused(error: type, name: str, message: str) -> Exception:
    exc = error(f"parameter {name!r} {message}")
    exc.parameter = name
    return exc


def _check_integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise _refused(InputTypeError, name, f"must be an integer, got {type(value).__name__} {value!r}")
    if not low <= int(value) <= high:
        raise _refused(ConfigError, name, f"must be in [{low}, {high:,}], got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float, low_ok: bool, high_ok: bool, what: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _refused(InputTypeError, name, f"must be a number {what}, got {type(value).__name__} {value!r}")
    number = float(value) if abs(value) < 1e308 else math.inf
    above = number > low or (low_ok and number == low)
    below = number < high or (high_ok and number == high)
    if not (math.isfinite(number) and above and below):
        raise _refused(ConfigError, name, f"must be {what}, got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _refused(ConfigError, name, f"must be one of {list(allowed)}, got {value!r}")


# ---------------------------------------------------------------------------- targets


def _label_type(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    return type(value).__name__


def prepare_target(y: Any, table: str) -> Any:
    """y as given, except: None is refused (scikit-learn's wording), and a one-column 2-d array is
    flattened with scikit-learn's `DataConversionWarning`, as its estimators do."""
    if y is None:
        raise TableError("this estimator requires y to be passed, but the target y is None", table=table)
    if isinstance(y, (list, tuple)) and y and all(isinstance(row, (list, tuple, np.ndarray)) for row in y):
        y = np.asarray(y, dtype=object)
    elif not isinstance(y, (pd.Series, pd.DataFrame, np.ndarray, list, tuple)) and hasattr(y, "__array__"):
        y = np.asarray(y)  # array-likes: what scikit-learn accepts as y
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] == 1:
        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; it is flattened with ravel()",
                      DataConversionWarning, stacklevel=4)
        return y.ravel()
    if isinstance(y, np.ndarray) and y.ndim != 1:
        raise InputShapeError(f"table {table!r}: y should be a 1d array, got an array of shape {y.shape}")
    return y


def check_class_labels(labels: pd.Series, table: str, column: str) -> pd.Series:
    """Class labels a classifier can keep apart and give back, as a Series of their natural dtype (int,
    float, bool or object), so `classes_` and predictions keep the labels' type.

    Labels must be present in every row (None, NaN, NaT and pd.NA are all missing), of one type (`[1, "1"]`
    would be one class as text and two as values), real (complex labels have no order), discrete (floats
    with fractions are a regression target: "Unknown label type: continuous"), and bytes only when they
    are UTF-8 (labels are embedded by their text)."""
    values = labels.to_numpy(dtype=object)
    for row, value in enumerate(values):
        if value is None or (not isinstance(value, (str, bytes)) and np.ndim(value) == 0 and pd.isna(value)):
            missing = sum(1 for v in values if v is None or (not isinstance(v, (str, bytes)) and np.ndim(v) == 0 and pd.isna(v)))
            raise TableError(f"target row {row} is {value!r} ({missing} of {len(values)} rows have no class); "
                             "drop those rows before fit", table=table, column=column)
        if np.ndim(value) != 0:
            raise TableError(f"target row {row} is {value!r}: a class label must be one value, not a "
                             f"{type(value).__name__}", table=table, column=column)
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise TableError(f"target row {row} is {value!r}, bytes that are not UTF-8 text; labels are embedded "
                                 "by their text: decode them (e.g. y.str.decode('latin-1')) before fit",
                                 table=table, column=column) from None
    kinds: dict[str, int] = {}
    for row, value in enumerate(values):
        kinds.setdefault(_label_type(value), row)
    if len(kinds) > 1:
        examples = ", ".join(f"{kind} {values[row]!r} (row {row})" for kind, row in kinds.items())
        raise TableError(f"class labels mix types: {examples}; use one type for every label "
                         "(e.g. y.astype(str)), so that equal-looking labels are one class", table=table, column=column)
    if "number" in kinds:
        for row, value in enumerate(values):
            if isinstance(value, (complex, np.complexfloating)):
                raise TableError(f"Unknown label type: target row {row} is the complex number {value!r} (Complex data "
                                 "not supported); class labels are strings, integers or booleans", table=table, column=column)
            if not float(value).is_integer():
                raise TableError(f"Unknown label type: continuous (target row {row} is {value!r}); a classifier needs "
                                 "discrete labels: use BasisRegressor for a numeric target, or pass the labels as "
                                 "strings", table=table, column=column)
    natural = pd.Series(values.tolist(), name=labels.name, index=labels.index)  # ints stay ints, strings object
    return natural


def check_regression_target(target: pd.Series, table: str, column: str) -> None:
    """A numeric target whose scale float64 can hold: its spread and squared errors are computed in float64,
    and values around 1e154 or beyond overflow when squared (std -> inf, losses -> inf)."""
    values = target.to_numpy(dtype=np.float64)
    peak = float(np.max(np.abs(values))) if len(values) else 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(np.square(values * 2.0)))  # x2: room for errors up to twice the largest value
    if not math.isfinite(total):
        exponent = max(0, int(math.floor(math.log10(peak))) - 3)
        raise TableError(f"target values reach {peak:.3g}: squared, they overflow float64 (the target's spread and "
                         f"the fitting loss are computed from squares); rescale it, e.g. fit on y / 1e{exponent} and "
                         f"multiply the predictions by 1e{exponent}", table=table, column=column)


# ---------------------------------------------------------------------------- estimator.json


class _StateReader:
    """Typed access to a parsed estimator.json; every failure is a CheckpointError naming the file and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: key {key!r} {message}; the file was changed or damaged after save, "
                               "save the estimator again")

    def get(self, mapping: dict, key: str, where: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        full = f"{where}.{key}" if where else key
        if key not in mapping:
            if optional:
                return None
            raise self.fail(full, "is missing")
        value = mapping[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(full, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(full, f"must be {_kind_name(kind)}, got {type(value).__name__} {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(full, f"must be a finite number, got {value!r}")
        return value


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_estimator_state(directory: str | Path, cls: type) -> dict[str, Any]:
    """The validated contents of `<directory>/estimator.json` for estimator class `cls`.

    Broken JSON, a missing or mistyped key, a non-finite or absurd number, an unknown parameter or a
    parameter `validate_params` refuses: each raises `CheckpointError` naming the file and the key.
    """
    directory = Path(directory)
    path = directory / ESTIMATOR_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(directory)!r} holds no {ESTIMATOR_FILE}; save a fitted estimator there with .save(dir)")
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: not valid JSON ({type(exc).__name__}: {first}); the file is damaged, "
                              "save the estimator again") from None
    reader = _StateReader(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(state).__name__}")
    saved_as = reader.get(state, "estimator", "", str)
    if saved_as != cls.__name__:
        raise CheckpointError(f"{path}: holds a saved {saved_as}, not a {cls.__name__}; load it with {saved_as}.load")
    version = reader.get(state, "format_version", "", int)
    if version not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: key 'format_version' is {version}, this basisfm reads "
                              f"{' and '.join(map(str, READABLE_FORMATS))} (it writes {FORMAT_VERSION})")
    _check_params(reader, reader.get(state, "params", "", dict), cls)
    n_targets = _check_preprocessor(reader, reader.get(state, "preprocessor", "", dict))
    reader.get(state, "checkpoint_source", "", str)
    histories = reader.get(state, "histories", "", list)
    for i, history in enumerate(histories):
        if not isinstance(history, dict):
            raise reader.fail(f"histories[{i}]", f"must be a mapping, got {_short(history)}")
        _check_history(reader, history, f"histories[{i}]")
    context = reader.get(state, "context", "", str, optional=True)
    if context is not None and (context != "context.parquet" or not (directory / context).is_file()):
        raise reader.fail("context", f"must be null or 'context.parquet' beside {ESTIMATOR_FILE}, got {_short(context)}")
    column_scale = reader.get(state, "column_scale", "", dict)
    for name, pair in column_scale.items():
        ok = isinstance(pair, list) and len(pair) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
        if not ok or not pair[1] > 0:
            raise reader.fail(f"column_scale.{name}", f"must be [mean, std] with a positive std, got {_short(pair)}")
    members = reader.get(state, "members", "", list)
    if not members or len(members) != len(histories):
        raise reader.fail("members", f"must name one model directory per history ({len(histories)}), got {_short(members)}")
    for i, name in enumerate(members):
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or not (directory / name).is_dir():
            raise reader.fail(f"members[{i}]", f"must name a model directory beside {ESTIMATOR_FILE}, got {_short(name)}")
    fitted = reader.get(state, "fitted", "", dict)
    classification = getattr(cls, "_task", None) == "classification"
    if classification:
        _check_classes(reader, fitted)
    else:
        _check_regression_fit(reader, fitted, n_targets)
    classes = [str(c) for c in fitted["classes"]] if classification else None
    _check_features_read(reader, state, [c["name"] for c in state["preprocessor"]["columns"]], classes)
    return state


def _check_features_read(reader: _StateReader, state: dict, features: list[str], classes: list[str] | None) -> None:
    """features_read: null (saved before it existed, or no in-context model), a regressor's list of feature names,
    or a classifier's mapping of some of its `classes` (as text) to such lists; every name a fitted feature column."""
    read = reader.get(state, "features_read", "", list if classes is None else dict, optional=True)
    if read is None:
        return
    if classes is not None:
        strangers = [label for label in read if label not in classes]
        if strangers:
            raise reader.fail("features_read", f"names {_short(strangers[0])}, not one of the classes {_short(classes)}")
    lists = read.items() if classes is not None else [("", read)]
    for label, names in lists:
        where = f"features_read.{label}" if label else "features_read"
        if not isinstance(names, list):
            raise reader.fail(where, f"must be a list of feature names, got {_short(names)}")
        unknown = [n for n in names if n not in features]
        if unknown:
            raise reader.fail(where, f"names {_short(unknown[0])}, not a fitted feature column")


def _check_regression_fit(reader: _StateReader, fitted: dict, n_targets: int) -> None:
    """constant / target_scale / target_mean: numbers with one target, lists of one per target with several."""
    def values(key: str, optional: bool) -> list:
        if n_targets == 1:
            return [reader.get(fitted, key, "fitted", (int, float), optional=optional)]
        items = reader.get(fitted, key, "fitted", list)
        if len(items) != n_targets:
            raise reader.fail(f"fitted.{key}", f"must list one value per target ({n_targets}), got {_short(items)}")
        for i, item in enumerate(items):
            ok = (item is None and optional) or (isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item))
            if not ok:
                raise reader.fail(f"fitted.{key}[{i}]", f"must be a finite number{' or null' if optional else ''}, got {_short(item)}")
        return items

    def within_bound(key: str, items: list) -> None:
        for i, item in enumerate(items):
            if item is not None and abs(item) > MAX_TARGET_MAGNITUDE:
                raise reader.fail(f"fitted.{key}" + (f"[{i}]" if n_targets > 1 else ""),
                                  f"must be within +-{MAX_TARGET_MAGNITUDE:g} (what a fit can produce), got {item!r}")

    within_bound("constant", values("constant", optional=True))
    scales = values("target_scale", optional=False)
    for i, scale in enumerate(scales):
        if not scale > 0:
            raise reader.fail("fitted.target_scale" + (f"[{i}]" if n_targets > 1 else ""), f"must be positive, got {scale!r}")
    within_bound("target_scale", scales)
    within_bound("target_mean", values("target_mean", optional=False))


def _check_params(reader: _StateReader, params: dict, cls: type) -> None:
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise reader.fail(f"params.{unknown[0]}", f"is not a parameter of {cls.__name__} (parameters: {sorted(known)})")
    try:
        validate_params(cls(**params))
    except (ConfigError, InputTypeError) as exc:
        raise reader.fail(f"params.{getattr(exc, 'parameter', '?')}", f"is refused ({exc})") from None


def _check_preprocessor(reader: _StateReader, raw: dict) -> int:
    """Checks the fitted preprocessing; returns its number of target columns."""
    reader.get(raw, "table_id", "preprocessor", str)
    columns = reader.get(raw, "columns", "preprocessor", list)
    if not columns:
        raise reader.fail("preprocessor.columns", "must list at least one feature column")
    names = set()
    for i, column in enumerate(columns):
        _check_column(reader, column, f"preprocessor.columns[{i}]")
        if column["name"] in names:
            raise reader.fail(f"preprocessor.columns[{i}].name", f"repeats column {column['name']!r}")
        names.add(column["name"])
    dropped = reader.get(raw, "dropped_columns", "preprocessor", list)
    treatments = reader.get(raw, "treatments", "preprocessor", list)
    for key, items in (("dropped_columns", dropped), ("treatments", treatments)):
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise reader.fail(f"preprocessor.{key}[{i}]", f"must be a string, got {_short(item)}")
    if "target" in raw and "targets" not in raw:  # format 2: one target
        targets, where = [reader.get(raw, "target", "preprocessor", dict)], ["preprocessor.target"]
    else:
        targets = reader.get(raw, "targets", "preprocessor", list)
        if not targets:
            raise reader.fail("preprocessor.targets", "must list at least one target column")
        where = [f"preprocessor.targets[{i}]" for i in range(len(targets))]
    for target, at in zip(targets, where):
        _check_column(reader, target, at)
        if target["name"] in names:
            raise reader.fail(f"{at}.name", f"is also a feature column or an earlier target ({target['name']!r})")
        names.add(target["name"])
    return len(targets)


def _check_column(reader: _StateReader, column: Any, where: str) -> None:
    if not isinstance(column, dict):
        raise reader.fail(where, f"must be a mapping, got {_short(column)}")
    reader.get(column, "name", where, str)
    kind = reader.get(column, "kind", where, str)
    if kind.upper() not in ColumnKind.__members__ or kind != kind.lower():
        raise reader.fail(f"{where}.kind", f"must be one of {[k.name.lower() for k in ColumnKind]}, got {kind!r}")
    reader.get(column, "duration", where, bool, optional=True)
    stats = reader.get(column, "stats", where, dict)
    fields = {f.name for f in dataclasses.fields(ColumnStats)}
    unknown = sorted(set(stats) - fields)
    if unknown:
        raise reader.fail(f"{where}.stats.{unknown[0]}", f"is not a column statistic ({sorted(fields)})")
    for name in ("min", "max", "abs_max", "min_nonzero_abs"):
        reader.get(stats, name, f"{where}.stats", (int, float), optional=True)
    rate = reader.get(stats, "missing_rate", f"{where}.stats", (int, float), optional=True)
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise reader.fail(f"{where}.stats.missing_rate", f"must be in [0, 1], got {rate!r}")
    cardinality = reader.get(stats, "cardinality", f"{where}.stats", int, optional=True)
    if cardinality is not None and cardinality < 0:
        raise reader.fail(f"{where}.stats.cardinality", f"must be 0 or more, got {cardinality!r}")


def _check_history(reader: _StateReader, history: dict, where: str) -> None:
    from basisfm.estimators.finetune import FineTuneHistory

    fields = {f.name: f for f in dataclasses.fields(FineTuneHistory)}
    unknown = sorted(set(history) - set(fields))
    if unknown:
        raise reader.fail(f"{where}.{unknown[0]}", f"is not a fine-tuning history field ({sorted(fields)})")
    for name in ("best_step", "steps", "trainable_parameters"):
        value = reader.get(history, name, where, int, optional=True)
        if value is not None and not 0 <= value <= 10**15:
            raise reader.fail(f"{where}.{name}", f"must be in [0, 1e15], got {value!r}")
    reader.get(history, "seconds", where, (int, float), optional=True)
    reader.get(history, "stopped_because", where, str, optional=True)
    checks = reader.get(history, "checks", where, list, optional=True) or []
    for i, entry in enumerate(checks):
        if not isinstance(entry, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry.values()):
            raise reader.fail(f"{where}.checks[{i}]", f"must map names to numbers, got {_short(entry)}")


def _check_classes(reader: _StateReader, fitted: dict) -> None:
    classes = reader.get(fitted, "classes", "fitted", list)
    if len(classes) < 2:
        raise reader.fail("fitted.classes", f"must list two classes or more, got {_short(classes)}")
    for i, label in enumerate(classes):
        if not isinstance(label, (str, int, float, bool)) or (isinstance(label, float) and not math.isfinite(label)):
            raise reader.fail(f"fitted.classes[{i}]", f"must be a string, number or boolean, got {_short(label)}")
    if len({_label_type(c) for c in classes}) > 1:
        raise reader.fail("fitted.classes", f"mixes label types: {_short(classes)}")
    if len({str(c) for c in classes}) != len(classes):
        raise reader.fail("fitted.classes", f"repeats a class (as text): {_short(classes)}")
