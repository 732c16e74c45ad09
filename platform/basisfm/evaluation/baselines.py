"""The baselines at their libraries' default settings: four GBDTs (XGBoost, LightGBM, CatBoost,
HistGradientBoosting) and scikit-learn's RandomForest, the in-context goal's yardstick.

Each library gets categoricals the way it expects them: XGBoost, LightGBM and HistGradientBoosting read pandas
`category` columns natively up to the width their categorical splits are built for (HistGradientBoosting bins at
most 255 levels; XGBoost's partition splits consider at most `max_cat_threshold` = 64 categories, and a wider
column such as an id or free text lets them memorise the training rows), so wider ones become ordinal codes;
CatBoost takes string columns listed in `cat_features`, and RandomForest, which reads numbers only, gets each
categorical one-hot when it has at most 32 training levels and as ordinal codes when it has more (missing stays
NaN, which its trees route natively). Only the seed and thread count are set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from basisfm.errors import ConfigError

GBDT_NAMES = ("xgboost", "lightgbm", "catboost", "hist_gbm")
BASELINE_NAMES = (*GBDT_NAMES, "random_forest")
# The widest categorical each library reads natively; wider columns are passed as ordinal codes. HistGradient-
# Boosting bins categories into at most 255 bins. XGBoost's partition splits consider at most 64 categories
# (its max_cat_threshold default); given a wider column natively (an id, free text), its splits isolate single
# training rows: on the public suite's loans_full_schema (emp_title, 3,952 levels) test R² 0.776 natively, 0.909
# with the wide columns as codes, where LightGBM and CatBoost score 0.93-0.94.
_MAX_NATIVE_CATEGORIES = {"hist_gbm": 255, "xgboost": 64}
# RandomForest reads a categorical with at most this many training levels one-hot, a wider one as ordinal codes.
_FOREST_ONE_HOT_MAX_LEVELS = 32


@dataclass
class CategoricalFrameEncoder:
    """Fixes, at fit time, which columns are categorical and their levels, so test frames encode alike.

    Numeric and boolean columns become float64, datetimes float days since 1970-01-01, everything else
    a pandas Categorical over the train levels (unseen test levels become missing, as every baseline library
    handle missing values natively).
    """

    categorical_columns: list[str] = field(default_factory=list)
    levels: dict[str, list[str]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)

    def fit(self, frame: pd.DataFrame) -> "CategoricalFrameEncoder":
        self.columns = [str(c) for c in frame.columns]
        self.categorical_columns, self.levels = [], {}
        for name in frame.columns:
            col = frame[name]
            if _is_numeric_like(col):
                continue
            self.categorical_columns.append(str(name))
            present = col.dropna().astype(str)
            self.levels[str(name)] = sorted(present.unique().tolist())
        return self

    def transform(self, frame: pd.DataFrame, *, as_strings: bool = False) -> pd.DataFrame:
        """Encoded copy; `as_strings` gives CatBoost's form (strings, missing as the level "nan")."""
        out = {}
        for name in frame.columns:
            key = str(name)
            col = frame[name]
            if key in self.levels:
                text = col.astype(object).where(col.notna(), None).map(lambda v: None if v is None else str(v))
                if as_strings:
                    out[key] = text.fillna("nan").astype(str)
                else:
                    known = text.where(text.isin(self.levels[key]), None)
                    out[key] = pd.Categorical(known, categories=self.levels[key])
            else:
                out[key] = _to_float(col)
        return pd.DataFrame(out, index=frame.index)[self.columns]


def _ordinal_codes(col: pd.Series) -> pd.Series:
    """A Categorical's codes as floats, missing (code -1) as NaN."""
    codes = col.cat.codes.astype("float64")
    return codes.where(codes >= 0, np.nan)


def _numbers_only(features: pd.DataFrame, levels: dict[str, list[str]]) -> pd.DataFrame:
    """An encoded frame as numbers alone (RandomForest's input): a categorical with at most
    `_FOREST_ONE_HOT_MAX_LEVELS` training `levels` one-hot, one column per level so train and test frames line
    up and missing is all zeros; a wider one as ordinal codes."""
    columns = {}
    for name in features.columns:
        col = features[name]
        if name not in levels:
            columns[name] = col
        elif len(levels[name]) <= _FOREST_ONE_HOT_MAX_LEVELS:
            columns.update({f"{name}={level}": (col == level).astype("float64") for level in levels[name]})
        else:
            columns[name] = _ordinal_codes(col)
    return pd.DataFrame(columns, index=features.index)


def _is_numeric_like(col: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(col)
        or pd.api.types.is_bool_dtype(col)
        or pd.api.types.is_datetime64_any_dtype(col)
    )


def _to_float(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        days = (col - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86_400.0
        return days.astype("float64")
    return col.astype("float64")


class Baseline:
    """One baseline library behind fit(frame, y) / predict(frame); `task` is "regression" or "classification"."""

    def __init__(self, name: str, task: str = "regression", seed: int = 0, n_jobs: int = 2):
        if name not in BASELINE_NAMES:
            raise ConfigError(f"unknown baseline model {name!r}; choose from {list(BASELINE_NAMES)}")
        if task not in ("regression", "classification"):
            raise ConfigError(f"baseline task must be 'regression' or 'classification', got {task!r}")
        self.name, self.task, self.seed, self.n_jobs = name, task, seed, n_jobs
        self.encoder = CategoricalFrameEncoder()
        self.model = None
        self._label_values: np.ndarray | None = None

    def fit(self, frame: pd.DataFrame, y: pd.Series | np.ndarray) -> "Baseline":
        self.encoder.fit(frame)
        y_arr = np.asarray(y)
        if self.task == "classification":
            # Every library takes 0..K-1 labels; the original values come back in predict.
            self._label_values, y_arr = np.unique(y_arr.astype(str), return_inverse=True)
        self.model = self._build()
        if self.name == "catboost":
            self.model.fit(self.encoder.transform(frame, as_strings=True), y_arr,
                           cat_features=list(self.encoder.categorical_columns))
        else:
            self.model.fit(self._features(frame), y_arr)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise ConfigError(f"baseline {self.name!r} must be fit before predict")
        if self.name == "catboost":
            pred = self.model.predict(self.encoder.transform(frame, as_strings=True))
        else:
            pred = self.model.predict(self._features(frame))
        pred = np.asarray(pred)
        if self.task == "classification":
            # CatBoost answers [n, 1]; the others [n].
            return self._label_values[pred.reshape(len(frame), -1)[:, 0].astype(np.int64)]
        return pred.astype(np.float64).ravel()

    def _features(self, frame: pd.DataFrame) -> pd.DataFrame:
        features = self.encoder.transform(frame)
        widest = _MAX_NATIVE_CATEGORIES.get(self.name)
        if widest is not None:
            for name in self.encoder.categorical_columns:
                if len(self.encoder.levels[name]) > widest:
                    features[name] = _ordinal_codes(features[name])
        if self.name == "random_forest":
            features = _numbers_only(features, self.encoder.levels)
        return features

    def _build(self):
        regression = self.task == "regression"
        if self.name == "xgboost":
            import xgboost

            cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
            return cls(enable_categorical=True, tree_method="hist", random_state=self.seed, n_jobs=self.n_jobs)
        if self.name == "lightgbm":
            import lightgbm

            cls = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
            return cls(random_state=self.seed, n_jobs=self.n_jobs, verbose=-1)
        if self.name == "catboost":
            import catboost

            cls = catboost.CatBoostRegressor if regression else catboost.CatBoostClassifier
            return cls(random_seed=self.seed, thread_count=self.n_jobs, verbose=False, allow_writing_files=False)
        if self.name == "random_forest":
            from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

            cls = RandomForestRegressor if regression else RandomForestClassifier
            return cls(random_state=self.seed, n_jobs=self.n_jobs)
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls(random_state=self.seed, categorical_features="from_dtype")
