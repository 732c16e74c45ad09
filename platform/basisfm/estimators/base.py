"""`BasisRegressor` and `BasisClassifier`: scikit-learn estimators over a (pre)trained Basis Transformer.

    from basisfm.estimators import BasisRegressor
    model = BasisRegressor(checkpoint="models:/basisfm@champion", strategy="base-ft").fit(X_train, y_train)
    model.predict(X_test); model.save("my-model"); BasisRegressor.load("my-model")

`checkpoint`: a directory holding model.safetensors + config.json, a registry URI `models:/name@alias`
(downloaded with MLflow from `tracking_uri`, else $MLFLOW_TRACKING_URI, else runs/mlflow.db), or None: *from scratch*, a freshly initialised model of `preset` (seeded by
`random_state`), which only makes sense with a fine-tuning strategy.

`strategy`: `inference` predicts with the checkpoint as it is, the target identified by its column name
(`target_name`, else `y.name`, else "target": names carry meaning, they are embedded); `base-ft` fine-tunes
every weight; `peft` fine-tunes LoRA adapters (`lora_r`, `lora_alpha`, `lora_dropout`,
`lora_target_modules`). Fine-tuning holds out `validation_fraction` of the rows (all rows when fewer than
8) and keeps the weights with the best validation score (regression: mean squared error; classification:
log loss), checked every `validate_every` steps and at the end of the data, stopping after `patience`
checks without improvement, `max_epochs`, `max_steps`, or
`time_budget_s` (off by default: stopping on the clock is not reproducible). Regression fine-tunes on
`regression_loss`: "bits" is the pretraining SMR bit loss, "bits+mse" (default) adds the squared error
of the expected value in target standard deviations. The default budget (150 steps of up to 256 rows)
is sized for about a minute on a 10k-row table on 2 idle CPU cores.

Inputs: DataFrames with any column names and types (numpy arrays are named x0, x1, ...). Treatments
of awkward input are listed in `basisfm.estimators.preprocessing`; at fit the target must be present
in every row (NaN / inf / None raise naming the row), a constant regression target is predicted as
that constant (with a warning; nothing to learn), a classifier needs two classes or more.

`save(dir)` writes estimator.json (parameters, fitted preprocessing, classes, history) and
model/{model.safetensors, config.json}; `load(dir)` restores it. Nothing is pickled.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from basisfm.config import DataConfig, ModelConfig, apply_model_preset
from basisfm.corpus.manifest import ColumnKind, atomic_write_text
from basisfm.data.batch import TableBatch
from basisfm.errors import CheckpointError, ConfigError, InputTypeError, TableError
from basisfm.estimators.checkpoints import resolve_checkpoint
from basisfm.estimators.finetune import (
    FineTuneHistory,
    FineTuneSettings,
    category_logits,
    expected_values,
    fine_tune,
    target_bit_loss,
    target_bits_and_error_loss,
)
from basisfm.estimators.preprocessing import TablePreprocessor, as_frame
from basisfm.estimators.validation import (
    check_class_labels,
    check_regression_target,
    prepare_target,
    read_estimator_state,
    validate_params,
)

FORMAT_VERSION = 1
ESTIMATOR_FILE = "estimator.json"
MODEL_DIR = "model"
MAX_VALIDATION_ROWS = 2_000  # bounds the per-epoch validation cost on big tables
MIN_ROWS_FOR_HOLDOUT = 8  # fewer rows: validate on the training rows (nothing to spare)
_EMBEDDERS: dict[str, Any] = {}
REGRESSION_LOSSES = ("bits+mse", "bits")


class _BasisEstimator(BaseEstimator):
    _task = "regression"

    def __init__(
        self,
        checkpoint: str | None = None,
        strategy: str = "base-ft",
        preset: str = "tiny",
        target_name: str | None = None,
        max_epochs: int = 10,  # also caps steps: re-collating every epoch dominates fit time on small tables
        max_steps: int = 150,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        patience: int = 3,
        validate_every: int = 25,
        validation_fraction: float = 0.1,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | None = None,
        regression_loss: str = "bits+mse",
        token_budget: int = 4096,
        max_columns: int = 32,
        embedding_cache_dir: str | None = None,
        tracking_uri: str | None = None,
        time_budget_s: float | None = None,
        random_state: int = 0,
        progress: bool = True,
    ):
        self.checkpoint = checkpoint
        self.strategy = strategy
        self.preset = preset
        self.target_name = target_name
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.validate_every = validate_every
        self.validation_fraction = validation_fraction
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = lora_target_modules
        self.regression_loss = regression_loss
        self.token_budget = token_budget
        self.max_columns = max_columns
        self.embedding_cache_dir = embedding_cache_dir
        self.tracking_uri = tracking_uri
        self.time_budget_s = time_budget_s
        self.random_state = random_state
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are read as missing (the model has a token for them)
        tags.input_tags.string = True  # categorical and text columns are embedded by their text
        return tags

    # ------------------------------------------------------------------ configuration

    def _settings(self) -> FineTuneSettings:
        settings = FineTuneSettings(
            strategy=self.strategy, max_epochs=self.max_epochs, max_steps=self.max_steps,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, patience=self.patience,
            validate_every=self.validate_every,
            lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
            lora_target_modules=self.lora_target_modules, seed=int(self.random_state), progress=bool(self.progress),
            time_budget_s=self.time_budget_s,
        )
        settings.validate()
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        return settings

    def _data_config(self) -> DataConfig:
        config = DataConfig(token_budget=self.token_budget, max_columns=self.max_columns, min_rows=1,
                            group_columns_by_name=False, seed=int(self.random_state))
        if self.embedding_cache_dir is not None:
            config.embedding_cache_dir = str(self.embedding_cache_dir)
        config.validate("estimator")
        return config

    def _embedder(self):
        # Not a parameter and never saved: one sentence encoder per cache directory and process, so the
        # many estimators of an evaluation run load the model once.
        from basisfm.encoding.text import StringEmbedder

        cache_dir = str(Path(self._data_config().embedding_cache_dir).resolve())
        if cache_dir not in _EMBEDDERS:
            _EMBEDDERS[cache_dir] = StringEmbedder(cache_dir)
        return _EMBEDDERS[cache_dir]

    def _base_model(self):
        """The model fine-tuning starts from, and a description of where it came from."""
        from basisfm.model import build_model

        resolved = resolve_checkpoint(self.checkpoint, tracking_uri=self.tracking_uri)
        if resolved is not None:
            from basisfm.model.checkpoint import load_pretrained

            return load_pretrained(resolved), f"checkpoint {self.checkpoint}"
        if self.preset not in ("tiny", "small", "base"):
            raise ConfigError(f"preset {self.preset!r} is not one of ['tiny', 'small', 'base']")
        config = ModelConfig(preset=self.preset)
        apply_model_preset(config)
        torch.manual_seed(int(self.random_state))
        if self.strategy == "inference":
            warnings.warn("strategy='inference' without a checkpoint predicts with an untrained model (from scratch); "
                          "pass checkpoint=... or use strategy='base-ft'", UserWarning, stacklevel=3)
        return build_model(config), f"from scratch ({self.preset} preset, seed {self.random_state})"

    # ------------------------------------------------------------------ fit

    def _target_name_for(self, y: Any) -> str:
        if self.target_name is not None:
            return str(self.target_name)
        name = getattr(y, "name", None)
        return str(name) if name is not None and str(name) != "" else "target"

    def fit(self, X: Any, y: Any) -> "_BasisEstimator":
        validate_params(self)
        settings = self._settings()
        table = "user-table"
        frame = as_frame(X, table)
        target_name = self._target_name_for(y)
        target = self._check_target(y, len(frame), target_name, table)
        if len(frame) < 2:
            raise TableError(f"fit needs at least 2 rows, got {len(frame)} sample(s)", table=table)
        preprocessor = TablePreprocessor(table_id=table).fit(frame, target_name, self._target_kind(), target)
        features = preprocessor.features(frame)
        self.preprocessor_ = preprocessor
        self.feature_names_in_ = np.asarray(preprocessor.feature_names, dtype=object)
        self.n_features_in_ = len(preprocessor.feature_names)
        self.constant_ = None
        self._fit_target_encoding(target)

        model, source = self._base_model()
        self.checkpoint_source_ = source
        if self._is_degenerate(target):
            self.model_, self.history_ = model.eval(), FineTuneHistory(stopped_because="constant target: nothing to learn")
            return self

        rng = np.random.default_rng(int(self.random_state))
        order = rng.permutation(len(frame))
        if len(frame) < MIN_ROWS_FOR_HOLDOUT:
            train_rows = val_rows = order
        else:
            n_val = min(MAX_VALIDATION_ROWS, max(1, round(self.validation_fraction * len(frame))))
            val_rows, train_rows = order[:n_val], order[n_val:]
        data_config = self._data_config()
        embedder = self._embedder()
        train_table = preprocessor.to_arrow(features.iloc[train_rows].reset_index(drop=True), target.iloc[train_rows].reset_index(drop=True))
        val_batches = self._labelled_batches(preprocessor.to_arrow(features.iloc[val_rows].reset_index(drop=True),
                                                                     target.iloc[val_rows].reset_index(drop=True)),
                                             data_config, embedder, seed=int(self.random_state))
        record = preprocessor.record()

        def train_batches(epoch: int) -> list[TableBatch]:
            return self._labelled_batches(train_table, data_config, embedder, seed=int(self.random_state) * 1_000_003 + epoch,
                                          record=record)

        self.model_, self.history_ = fine_tune(
            model, train_batches, lambda m: self._validation_loss(m, val_batches), self._loss, settings)
        return self

    def _labelled_batches(self, table, data_config, embedder, seed: int, record=None) -> list[TableBatch]:
        from basisfm.data.collate import table_to_batches

        record = record or self.preprocessor_.record()
        return table_to_batches(table, record, data_config, embedder, seed=seed, target_columns=[record.candidate_targets[0]])

    # ------------------------------------------------------------------ predict

    def _prediction_batches(self, X: Any) -> tuple[list[tuple[TableBatch, np.ndarray, int]], int]:
        """Batches over X with the target hidden in every row; each with the X rows it holds and the
        target's column index. Wide tables give several batches per row (column subsets)."""
        from basisfm.data.collate import table_to_batches

        self._check_fitted()
        features = self.preprocessor_.features(X)
        record = self.preprocessor_.record()
        table = self.preprocessor_.to_arrow(features, None)
        seed = int(self.random_state)
        batches = table_to_batches(table, record, self._data_config(), self._embedder(), seed=seed,
                                   target_columns=[record.candidate_targets[0]])
        rows_of = _rows_of_batches(batches, len(features), seed)
        out = []
        target = self.preprocessor_.target.name
        for batch, rows in zip(batches, rows_of):
            _check_rows(batch, features, rows, target)
            col = batch.column_names.index(target)
            mask = torch.zeros_like(batch.target_mask)
            mask[:, col] = True
            # The target is unknown here (a null column): mark it as the cell to predict, not as missing.
            missing = batch.missing.clone()
            missing[:, col] = False
            out.append((replace(batch, target_mask=mask, missing=missing), rows, col))
        return out, len(features)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) or load(dir) first")

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> Path:
        """estimator.json + model/ (safetensors and config.json); the directory can be loaded anywhere."""
        from basisfm.model.checkpoint import save_pretrained

        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.model_, directory / MODEL_DIR)
        state = {
            "format_version": FORMAT_VERSION,
            "estimator": type(self).__name__,
            "params": {k: v for k, v in self.get_params(deep=False).items()},
            "preprocessor": self.preprocessor_.state(),
            "checkpoint_source": self.checkpoint_source_,
            "history": asdict(self.history_),
            "fitted": self._fitted_state(),
        }
        atomic_write_text(directory / ESTIMATOR_FILE, json.dumps(state, indent=1, allow_nan=True, default=_json_default))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "_BasisEstimator":
        from basisfm.model.checkpoint import load_pretrained

        directory = Path(directory)
        state = read_estimator_state(directory, cls)  # every key checked: CheckpointError naming file and key
        estimator = cls(**state["params"])
        estimator.preprocessor_ = TablePreprocessor.from_state(state["preprocessor"])
        estimator.feature_names_in_ = np.asarray(estimator.preprocessor_.feature_names, dtype=object)
        estimator.n_features_in_ = len(estimator.preprocessor_.feature_names)
        estimator.checkpoint_source_ = state["checkpoint_source"]
        estimator.history_ = FineTuneHistory(**state["history"])
        estimator._load_fitted_state(state["fitted"])
        estimator.model_ = load_pretrained(directory / MODEL_DIR).eval()
        return estimator

    # Each subclass supplies: _target_kind, _check_target, _fit_target_encoding, _is_degenerate, _loss,
    # _validation_loss, _fitted_state and _load_fitted_state (target typing, objective, saved state).


class BasisRegressor(RegressorMixin, _BasisEstimator):
    """Regression with the Basis Transformer (see the module docstring for parameters and treatments)."""

    def _target_kind(self) -> ColumnKind:
        return ColumnKind.NUMERIC

    def _check_target(self, y, n_rows, name, table) -> pd.Series:
        series = _target_series(y, n_rows, name, table)
        numbers = pd.to_numeric(series.map(lambda v: np.nan if v is None else v), errors="coerce").astype(np.float64)
        bad = ~np.isfinite(numbers.to_numpy())
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TableError(f"target row {row} is {series.iloc[row]!r} ({int(bad.sum())} of {n_rows} rows are not finite "
                             "numbers); drop those rows or impute the target before fit", table=table, column=name)
        check_regression_target(numbers, table, name)
        return numbers

    def _fit_target_encoding(self, target: pd.Series) -> None:
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ConfigError(f"regression_loss {self.regression_loss!r} is not one of {list(REGRESSION_LOSSES)}")
        self.target_scale_ = float(target.std(ddof=0)) or 1.0

    def _is_degenerate(self, target: pd.Series) -> bool:
        if target.nunique() == 1:
            self.constant_ = float(target.iloc[0])
            warnings.warn(f"target {target.name!r} is constant ({self.constant_!r}): predicting that value; "
                          "nothing else can be learned", UserWarning, stacklevel=3)
            return True
        return False

    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        if self.regression_loss == "bits":
            return target_bit_loss(model, batch)
        return target_bits_and_error_loss(model, batch, self.target_scale_)

    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        errors = []
        with torch.no_grad():
            for batch in batches:
                out_pred = expected_values(model, batch)
                truth = batch.values[batch.target_mask]
                errors.append(((out_pred - truth) ** 2).cpu().numpy())
        return float(np.mean(np.concatenate(errors))) if errors else math.inf

    def predict(self, X: Any) -> np.ndarray:
        """Predicted target values, float64 [n_rows] (the expectation of the predicted bits)."""
        batches, n_rows = self._prediction_batches(X)
        if self.constant_ is not None:
            return np.full(n_rows, self.constant_, dtype=np.float64)
        total, count = np.zeros(n_rows), np.zeros(n_rows)
        with torch.no_grad():
            for batch, rows, col in batches:
                values = expected_values(self.model_, batch).cpu().numpy()
                # Row-major target order with one target per row: values line up with the batch rows.
                np.add.at(total, rows, values)
                np.add.at(count, rows, 1)
        return total / np.maximum(count, 1)

    def _fitted_state(self) -> dict[str, Any]:
        return {"constant": self.constant_, "target_scale": self.target_scale_}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.constant_ = state["constant"]
        self.target_scale_ = state["target_scale"]


class BasisClassifier(ClassifierMixin, _BasisEstimator):
    """Classification with the Basis Transformer: class labels are embedded by their text, so their
    names matter (e.g. "approved"/"rejected" say more than 0/1)."""

    _task = "classification"

    def _target_kind(self) -> ColumnKind:
        return ColumnKind.CATEGORICAL

    def _check_target(self, y, n_rows, name, table) -> pd.Series:
        series = check_class_labels(_target_series(y, n_rows, name, table), table, name)
        bad = series.map(lambda v: v is None or (isinstance(v, float) and not math.isfinite(v))).to_numpy(dtype=bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TableError(f"target row {row} is {series.iloc[row]!r} ({int(bad.sum())} of {n_rows} rows have no class); "
                             "drop those rows before fit", table=table, column=name)
        return series

    def _fit_target_encoding(self, target: pd.Series) -> None:
        self.classes_ = np.unique(target.to_numpy())
        self._class_text = [str(c) for c in self.classes_]
        if len(set(self._class_text)) != len(self._class_text):
            raise TableError(f"classes {list(self.classes_)} are not distinct as text; they are embedded by their text",
                             table="user-table", column=str(target.name))

    def _is_degenerate(self, target: pd.Series) -> bool:
        if len(self.classes_) < 2:
            raise TableError(f"the target has a single class {self.classes_[0]!r}; a classifier needs two or more",
                             table="user-table", column=str(target.name))
        return False

    def _label_embeddings(self) -> torch.Tensor:
        return torch.from_numpy(self._embedder().embed(self._class_text))

    def _label_ids(self, batch: TableBatch, col: int) -> torch.Tensor:
        index = {text: i for i, text in enumerate(self._class_text)}
        ids = batch.string_ids[:, col]
        return torch.tensor([index[batch.vocab[i]] for i in ids.tolist()], dtype=torch.long)

    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        col = batch.column_names.index(self.preprocessor_.target.name)
        logits = category_logits(model, batch, col, self._label_embeddings())
        return torch.nn.functional.cross_entropy(logits, self._label_ids(batch, col))

    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        with torch.no_grad():
            losses = [float(self._loss(model, b)) * b.n_rows for b in batches]
        return sum(losses) / max(sum(b.n_rows for b in batches), 1)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n_rows, n_classes] probabilities, columns in the order of `classes_`."""
        batches, n_rows = self._prediction_batches(X)
        labels = self._label_embeddings()
        total, count = np.zeros((n_rows, len(self.classes_))), np.zeros(n_rows)
        with torch.no_grad():
            for batch, rows, col in batches:
                probs = torch.softmax(self.model_.predict_category_scores(batch, col, labels).double(), dim=-1).cpu().numpy()
                np.add.at(total, rows, probs)
                np.add.at(count, rows, 1)
        return total / np.maximum(count, 1)[:, None]

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _fitted_state(self) -> dict[str, Any]:
        return {"classes": [c.item() if hasattr(c, "item") else c for c in self.classes_]}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.classes_ = np.asarray(state["classes"])
        self._class_text = [str(c) for c in self.classes_]


# ---------------------------------------------------------------------------- helpers


def _target_series(y: Any, n_rows: int, name: str, table: str) -> pd.Series:
    y = prepare_target(y, table)
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise InputTypeError(f"table {table!r}: y must be one column, got a DataFrame with columns {list(y.columns)}")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        series = y.reset_index(drop=True)
    elif isinstance(y, (np.ndarray, list, tuple)):
        array = np.asarray(y, dtype=object)
        if array.ndim != 1:
            raise InputTypeError(f"table {table!r}: y must be 1-dimensional, got shape {array.shape}")
        series = pd.Series(array, dtype=object)
    else:
        raise InputTypeError(f"table {table!r}: y must be a pandas Series, numpy array or list, got {type(y).__name__}")
    if len(series) != n_rows:
        raise TableError(f"y has {len(series)} values but X has {n_rows} rows; they must match", table=table, column=name)
    if n_rows == 0:
        raise TableError("X and y have no rows", table=table, column=name)
    return series.rename(name)


def _rows_of_batches(batches: list[TableBatch], n_rows: int, seed: int) -> list[np.ndarray]:
    """The X rows each batch holds. `table_to_batches` shuffles rows with `default_rng(seed).permutation`
    (its first draw when columns are not grouped by name), cuts them into equal chunks and emits one batch
    per column subset of each chunk; `_check_rows` verifies the result against the cells themselves."""
    if not batches:
        return []
    order = np.random.default_rng(seed).permutation(n_rows)
    chunk = batches[0].n_rows
    n_chunks = math.ceil(n_rows / chunk)
    if len(batches) % n_chunks:
        raise RuntimeError(f"{len(batches)} prediction batches do not split into {n_chunks} row chunks: "
                           "basisfm.data.collate changed how it cuts tables")
    per_chunk = len(batches) // n_chunks
    return [order[(b // per_chunk) * chunk: (b // per_chunk) * chunk + batch.n_rows] for b, batch in enumerate(batches)]


def _check_rows(batch: TableBatch, features: pd.DataFrame, rows: np.ndarray, target: str) -> None:
    for j, name in enumerate(batch.column_names):
        if name == target or name not in features.columns or features[name].dtype == object:
            continue
        expected = features[name].to_numpy(dtype=np.float64)[rows]
        got = batch.values[:, j].numpy()
        present = ~batch.missing[:, j].numpy()
        if len(expected) != len(got) or not np.array_equal(np.isnan(expected), ~present) or \
                not np.allclose(expected[present], got[present], rtol=0, atol=0, equal_nan=False):
            raise RuntimeError("prediction rows do not line up with basisfm.data.collate's batches "
                               f"(column {name!r}); the collation's row order changed")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
