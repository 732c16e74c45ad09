"""What `BasisRegressor` and `BasisClassifier` share: parameters, fit, members, prediction batches, save / load.

    from basisfm.estimators import BasisRegressor
    model = BasisRegressor().fit(X_train, y_train)  # fine-tunes the shipped in-context checkpoint on the table
    model.predict(X_test); model.save("my-model"); BasisRegressor.load("my-model")
    BasisRegressor(checkpoint="models:/basisfm@champion")  # or your own pretrained model

`checkpoint`: "default" (the default), a checkpoint shipped with the package (`basisfm.pretrained`, each
with a provenance.json that says how it was made): `strategy="inference"` predicts with the shipped in-context
model ("in_context", tab2d pretrained on the synthetic prior by `make icl-curriculum`), `BasisRegressor`
fine-tunes it too (on the public suite it fine-tunes better than the per-row model:
`benchmarks/results/evaluate_public_icl_shipped_ft.md`), and `BasisClassifier` fine-tunes the per-row tiny
model `make demo` pretrains ("per_row"); "in_context" and "per_row" name them for any strategy; a directory holding
model.safetensors + config.json; a registry URI `models:/name@alias` (downloaded with MLflow from `tracking_uri`, else
$MLFLOW_TRACKING_URI, else runs/mlflow.db); or None: *from scratch*, a freshly initialised model of
`preset` with `regression_head` (seeded by `random_state`), which only makes sense with a fine-tuning
strategy. `preset` and `regression_head` describe a model built from scratch: set with a checkpoint
(whose config fixes both) they are an error rather than silently ignored.

`strategy`: `inference` predicts with the checkpoint as it is, the target identified by its column name
(`target_name`, else `y.name`, else "target": names carry meaning, they are embedded); `base-ft` fine-tunes
every weight; `peft` fine-tunes LoRA adapters (`lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`).

Fitting (`basisfm.estimators.strategies`, which way is chosen at fit; `finetune`, the loop): the budget is
`max_steps` optimizer steps (None: sized to the table, 300-600 steps; fine-tuning an in-context checkpoint on
`episodic.LARGE_TABLE_ROWS` (7,000) training rows or more, 200 steps, its steps drawing fresh rows:
`benchmarks/results/finetune_seconds.md`), never cut short by a pass count; `validation_fraction` of the rows
(at least `MIN_VALIDATION_ROWS`, at most `MAX_VALIDATION_ROWS`, 2,000, or `episodic.VALIDATION_ROWS`, 512, for an
in-context checkpoint, which predicts each held-out row in context; all rows when the table is too small to spare
them) are held out, scored every `validate_every` steps (None: about 12 checks per budget, 8 in those 200 steps),
and the best weights are kept, stopping after `patience` checks without improvement or after `time_budget_s` (off by
default: stopping on the clock is not reproducible). `n_estimators` members are fitted (None: one), each
with its own seed, validation split and column subsets, and averaged at predict; with `inference` they are
in-context members (None: four), which cost prediction time alone. In context each query reads `max_context`
training rows in every member: a random draw per member, or with `retrieval` the training rows nearest to its
chunk of queries (None: on for `inference` once the training rows number more than
`strategies.in_context.RETRIEVAL_CONTEXTS` x `max_context`, off once fine-tuned, whose episodes drew at random;
`benchmarks/results/large_tables.md`). `device="auto"` runs on CUDA
when present. Regression fine-tunes on `regression_loss`: "bits" is the pretraining SMR bit loss,
"bits+mse" (default) adds the squared error of the expected value in target standard deviations.
`predict(X, output="quantiles", quantiles=[...])` gives intervals from the predicted distribution.
In-context checkpoints (`basis_icl`, `tab2d`) keep the training rows as their context whatever the strategy;
`base-ft` / `peft` fine-tune them on episodes of the table (`EPISODE_ROWS` rows, half labelled support, half
hidden queries) and validate by predicting the held-out rows in context. Their members differ as TabPFN's
do (`basisfm.estimators.in_context`): `categorical_features` "ordinal" codes a categorical feature as the
numbers 0..m-1 in an order drawn per member, "sorted" in the strings' order, "target" in the order of each
value's smoothed mean target on the training rows, "auto" as "target" a column of 5+ values and as "ordinal" a
narrower one, "text" embeds its strings (None: auto for `inference`; text once fine-tuned, as its episodes were); `feature_transforms` (e.g. ["none", "quantile"]) and
`target_transforms` cycle transforms of the numeric features and targets over the members ("power":
Yeo-Johnson, "quantile": to a normal; None: no transform; transforming the features measured no better
on the public suite). `linear_feature` (in context; None: on for a regressor's `inference`) gives every member one
more feature per target: ridge regression's prediction of it from the features, cross-fitted on the training rows
(`data.reading.linear_fit`; `benchmarks/results/linear_feature.md`). A table with more than `max_columns` - 1
features gives every in-context member its most relevant ones (`feature_selection="relevance"`: mutual information with the target on the training
rows) or, with "random", a random subset per member; "validated" (None: the `inference` default) reads the
most relevant too, as many of them (all, 16, 8 or 4) as predict held-out training rows best in context,
pruned and offered back one by one, at any table width (`in_context.validated_features`);
fine-tuning (None: "relevance") trains and predicts on the relevance-ranked features. Fit chooses from the
training rows alone and keeps the choice as `features_read_` (a regressor: the feature names; a classifier:
{class: names}, one list per class indicator with `inference`), which every predict reuses and a save keeps.

`missing_imputation`: None (the default) lets the model read a missing cell as missing (its checkpoint's
`model.missing` strategy); "mean" fills the missing cells of numeric feature columns with their training-row
mean, "diffusion" with a small denoising diffusion model fitted on the training rows' observed cells at fit
(`basisfm.encoding.imputation`), training and predicted rows alike, before the model reads them; categorical,
text and boolean cells stay missing. Measured in context: `benchmarks/results/missing_values.md`.

Inputs: DataFrames with any column names and types (numpy arrays are named x0, x1, ...). Treatments
of awkward input are listed in `basisfm.estimators.preprocessing`; at fit the target must be present
in every row (NaN / inf / None raise naming the row), a constant regression target is predicted as
that constant (with a warning; nothing to learn), a classifier needs two classes or more.

`save(dir)` writes estimator.json (parameters, fitted preprocessing, classes, history) and one
directory of {model.safetensors, config.json} per member; `load(dir)` restores it. Nothing is pickled.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from basisfm.config import DataConfig, ModelConfig, apply_model_preset
from basisfm.corpus.manifest import ColumnKind, atomic_write_text
from basisfm.data.batch import TableBatch
from basisfm.encoding.text import CACHE_FILE as EMBEDDING_CACHE_FILE
from basisfm.errors import CheckpointError, ConfigError, InputTypeError, TableError
from basisfm.pretrained.checkpoints import resolve_checkpoint
from basisfm.estimators.finetune import FineTuneHistory, FineTuneSettings, resolve_device
from basisfm.estimators.preprocessing import TablePreprocessor, as_frame
from basisfm.encoding.imputation import fit_imputer
from basisfm.estimators.saved_files import CONTEXT_FILE, ESTIMATOR_FILE, FORMAT_VERSION, IMPUTER_WEIGHTS_FILE, MODEL_DIR
from basisfm.estimators.strategies import choose_strategy
from basisfm.estimators.strategies.in_context import categorical_coding, feature_choice, in_context_settings, member_count
from basisfm.estimators.validation import (
    prepare_target,
    read_estimator_state,
    validate_params,
)
from basisfm.pretrained import DEFAULT_NAME, IN_CONTEXT_NAME, PER_ROW_NAME
from basisfm.seeds import derive_seed



class _BasisEstimator(BaseEstimator, ABC):
    # Fine-tuning defaults have one source, `FineTuneSettings`; the step budget's is `finetune.default_steps`.
    def __init__(
        self,
        checkpoint: str | None = "default",
        strategy: str = "base-ft",
        preset: str = "tiny",
        target_name: str | None = None,
        n_estimators: int | None = None,
        max_steps: int | None = None,
        learning_rate: float = FineTuneSettings.learning_rate,
        weight_decay: float = FineTuneSettings.weight_decay,
        patience: int = FineTuneSettings.patience,
        validate_every: int | None = None,
        validation_fraction: float = 0.2,
        lora_r: int = FineTuneSettings.lora_r,
        lora_alpha: int = FineTuneSettings.lora_alpha,
        lora_dropout: float = FineTuneSettings.lora_dropout,
        lora_target_modules: list[str] | None = None,
        regression_loss: str = "bits+mse",
        regression_head: str = "smr_bits",
        max_context: int = 512,
        retrieval: bool | None = None,
        categorical_features: str | None = None,
        feature_transforms: list[str] | None = None,
        target_transforms: list[str] | None = None,
        linear_feature: bool | None = None,
        token_budget: int = 4096,
        max_columns: int = 32,
        feature_selection: str | None = None,
        missing_imputation: str | None = None,
        device: str = "auto",
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
        self.n_estimators = n_estimators
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
        self.regression_head = regression_head
        self.max_context = max_context
        self.retrieval = retrieval
        self.categorical_features = categorical_features
        self.feature_transforms = feature_transforms
        self.target_transforms = target_transforms
        self.linear_feature = linear_feature
        self.token_budget = token_budget
        self.max_columns = max_columns
        self.feature_selection = feature_selection
        self.missing_imputation = missing_imputation
        self.device = device
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

    def _member_seed(self, member: int) -> int:
        # Member 0 keeps the user's seed; the others derive theirs from it (stable across processes).
        return int(self.random_state) if member == 0 else derive_seed("member", int(self.random_state), member) % 2**31

    def _data_config(self, seed: int | None = None) -> DataConfig:
        config = DataConfig(token_budget=self.token_budget, max_columns=self.max_columns, min_rows=1,
                            group_columns_by_name=False, seed=int(self.random_state if seed is None else seed))
        if self.embedding_cache_dir is not None:
            config.embedding_cache_dir = str(self.embedding_cache_dir)
        config.validate("estimator")
        return config

    def _embedder(self):
        # Text is pruned as the model's pretraining pruned it (`text_top_k_`, from the checkpoint), so
        # fine-tuning and prediction see the text the model learned from.
        from basisfm.encoding.name_embedding import ColumnNameEmbedder
        from basisfm.encoding.text import shared_embedder

        strings = shared_embedder(self._data_config().embedding_cache_dir, self.text_top_k_)
        # Names, too, take the form the model was trained on (`data.column_name_embedding`, from the checkpoint).
        mode, projection = getattr(self, "column_name_embedding_", ("sentence", None))
        return strings if mode == "sentence" else ColumnNameEmbedder(strings, mode, projection)

    def _base_model(self):
        """The model fine-tuning starts from, and a description of where it came from."""
        from basisfm.model import build_model

        checkpoint = self.checkpoint_name()
        resolved = resolve_checkpoint(checkpoint, tracking_uri=self.tracking_uri)
        if resolved is not None and (self.preset != "tiny" or self.regression_head != "smr_bits"):
            raise ConfigError(f"preset={self.preset!r} and regression_head={self.regression_head!r} choose a model built "
                              f"from scratch, but checkpoint={self.checkpoint!r} gives a pretrained one (its config fixes "
                              "both); pass checkpoint=None to build that model from scratch")
        if resolved is not None:
            from basisfm.model.checkpoint import load_pretrained, read_name_embedding, read_text_top_k

            self.text_top_k_ = read_text_top_k(resolved)
            self.column_name_embedding_ = read_name_embedding(resolved)
            return load_pretrained(resolved), f"checkpoint {checkpoint}"
        self.text_top_k_ = DataConfig.text_top_k  # as pretraining would prune it
        self.column_name_embedding_ = ("sentence", None)
        if self.preset not in ("tiny", "small", "base"):
            raise ConfigError(f"preset {self.preset!r} is not one of ['tiny', 'small', 'base']")
        config = ModelConfig(preset=self.preset, regression_head=self.regression_head)
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
        # A one-column DataFrame names its target by its column, as a Series by its name (the name is embedded).
        name = y.columns[0] if isinstance(y, pd.DataFrame) and y.shape[1] == 1 else getattr(y, "name", None)
        return str(name) if name is not None and str(name) != "" else "target"

    def _checked_targets(self, y: Any, n_rows: int, table: str) -> pd.Series | pd.DataFrame:
        """y checked: a Series named as the target, or for several target columns (a DataFrame, or a 2-d
        array whose columns are named y0, y1, ...) a DataFrame of them, each column checked as one target."""
        if isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] > 1:
            y = pd.DataFrame(y, columns=[f"y{j}" for j in range(y.shape[1])])
        if not (isinstance(y, pd.DataFrame) and y.shape[1] > 1):
            return self._check_target(y, n_rows, self._target_name_for(y), table)
        if not self._multi_target:
            raise InputTypeError(f"table {table!r}: y must be one column, got {y.shape[1]} columns {list(y.columns)}; "
                                 f"{type(self).__name__} predicts one target (BasisRegressor predicts several at once)")
        if self.target_name is not None:
            raise ConfigError(f"target_name={self.target_name!r} names one target, but y has {y.shape[1]} columns: "
                              "their names are the targets' names; leave target_name=None")
        names = [str(c) for c in y.columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TableError(f"target columns {repeated} appear more than once in y; give each target its own name",
                             table=table, column=repeated[0])
        if len(y) != n_rows:
            raise TableError(f"y has {len(y)} rows but X has {n_rows}; they must match", table=table, column=names[0])
        return pd.DataFrame({name: self._check_target(y.iloc[:, j], n_rows, name, table) for j, name in enumerate(names)})

    def fit(self, X: Any, y: Any) -> "_BasisEstimator":
        """1. check inputs; 2. fit the preprocessing; 3. load the starting model; 4. choose the strategy
        (`estimators.strategies`) from `strategy` and the model; 5. fit its members (no step for `inference`);
        6. choose the features in-context members read; 7. a classifier in context checks its class estimates on
        held-out training rows (`estimators.calibration`).

        `y`: one target (a Series, array or list), or for `BasisRegressor` several at once (a DataFrame, or a
        2-d array): one model predicts them all, jointly; `predict` then returns [n_rows, n_targets]."""
        # 1. check the parameters and inputs
        validate_params(self)
        resolve_device(self.device)  # a device this machine lacks fails before any work
        table = "user-table"
        frame = as_frame(X, table)
        target = self._checked_targets(y, len(frame), table)
        if len(frame) < 2:
            raise TableError(f"fit needs at least 2 rows, got {len(frame)} sample(s)", table=table)

        # 2. the preprocessing and the target's encoding
        preprocessor = TablePreprocessor(table_id=table).fit(frame, target, self._target_kind())
        features = preprocessor.features(frame)
        self.preprocessor_ = preprocessor
        self.feature_names_in_ = np.asarray(preprocessor.feature_names, dtype=object)
        self.n_features_in_ = len(preprocessor.feature_names)
        self.constant_ = None
        self.column_scale_ = _column_scale(features)  # the observed cells' scale, before any are filled
        self.imputer_ = fit_imputer(self.missing_imputation, features, preprocessor.numeric_feature_names(),
                                    seed=int(self.random_state))
        features = self._imputed(features)
        self._fit_target_encoding(target)

        # 3. load the starting model; 4. choose the way of predicting, once
        start, source = self._base_model()
        self.checkpoint_source_ = source
        self.strategy_ = choose_strategy(self.strategy, start)
        if self._is_degenerate(target):
            self.members_ = [start.eval()]
            self.histories_ = [FineTuneHistory(stopped_because="constant target: nothing to learn")]
            return self

        # 5. keep the training rows when the strategy reads them as context, fit the members
        self.context_ = preprocessor.to_arrow(features, target) if self.strategy_.keeps_context else None
        self.members_, self.histories_ = self.strategy_.fit_members(self, start, features, target)
        # 6. choose, from the training rows alone, the features every in-context predict reads, and prepare those
        # rows once for every predict
        self.features_read_ = self._choose_features_read() if self.context_ is not None else None
        self._prepared_training_rows = None
        if self.context_ is not None:
            self.strategy_.prepare(self)
        # 7. a classifier predicting class indicators in context checks them on held-out training rows
        self._fit_calibration()
        return self

    def _imputed(self, features: pd.DataFrame) -> pd.DataFrame:
        """`features` with their missing numeric cells filled by the fitted imputer (unchanged without one)."""
        imputer = getattr(self, "imputer_", None)
        return features if imputer is None else imputer.fill(features)

    def _features(self, X: Any) -> pd.DataFrame:
        """The fitted preprocessing's typed feature columns of X, filled as the training rows were."""
        return self._imputed(self.preprocessor_.features(X))

    @abstractmethod
    def _in_context_validation_loss(self, model, record, context, query, truth: np.ndarray, embedder, settings,
                                    readable) -> float:
        """Lower-is-better score of the held-out rows `query` (targets null) predicted in context, against `truth`
        ([n] for one target, [n, n_targets] for several); `readable`: the features `in_context.table_reading` gives `context`."""

    def _with_fitted_scale(self, batch: TableBatch) -> TableBatch:
        """Every column standardised with the training rows' statistics (the model reads standardised cells):
        collation would use each batch's own table, so a row's prediction would depend on the rows predicted
        with it. The regressor adds the target's scale."""
        mean, std = batch.column_mean.clone(), batch.column_std.clone()
        for j, name in enumerate(batch.column_names):
            if name in self.column_scale_:
                mean[j], std[j] = self.column_scale_[name]
        return replace(batch, column_mean=mean, column_std=std)

    # ------------------------------------------------------------------ predict

    # The defaults of the in-context settings are the strategies' (`strategies.in_context`); these name them here.

    def _in_context_settings(self, members: int, seed: int):
        return in_context_settings(self, members, seed)

    def _n_estimators(self) -> int:
        return member_count(self.strategy, self.n_estimators)

    def checkpoint_name(self) -> str | None:
        """The checkpoint `fit` starts from: `checkpoint`, where "default" names the shipped checkpoint made for
        the strategy: the in-context one for `inference` (the per-row checkpoint cannot read the training rows),
        `_fine_tune_default` to fine-tune."""
        if self.checkpoint == DEFAULT_NAME:
            return IN_CONTEXT_NAME if self.strategy == "inference" else self._fine_tune_default
        return self.checkpoint

    def _categorical_features(self) -> str:
        return categorical_coding(self.strategy, self.categorical_features)

    def _feature_selection(self) -> str:
        return feature_choice(self.strategy, self.feature_selection)

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) or load(dir) first")

    @property
    def model_(self):
        """The first member's model (the only one when n_estimators=1)."""
        self._check_fitted()
        return self.members_[0]

    @property
    def history_(self) -> FineTuneHistory:
        """The first member's fine-tuning history (`histories_` has every member's)."""
        self._check_fitted()
        return self.histories_[0]

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> Path:
        """estimator.json + one model directory per member (safetensors and config.json); loadable anywhere."""
        from basisfm.model.checkpoint import save_pretrained, write_name_embedding

        self._check_fitted()
        directory = Path(directory)
        blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise InputTypeError(f"save({str(directory)!r}): {str(blocking)!r} is a file, not a folder; save writes a "
                                 "folder (estimator.json and the model weights): pass a new or existing folder's path")
        directory.mkdir(parents=True, exist_ok=True)
        names = [MODEL_DIR if k == 0 else f"{MODEL_DIR}-{k}" for k in range(len(self.members_))]
        mode, projection = getattr(self, "column_name_embedding_", ("sentence", None))
        for name, model in zip(names, self.members_):
            save_pretrained(model, directory / name, text_top_k=self.text_top_k_)
            if mode != "sentence":
                write_name_embedding(directory / name, mode, projection)
        if self.context_ is not None:  # an in-context model's training rows: Parquet, never a pickle
            import pyarrow.parquet as pq

            pq.write_table(self.context_, directory / CONTEXT_FILE)
        imputer = getattr(self, "imputer_", None)
        if imputer is not None and imputer.tensors():
            from safetensors.torch import save_file

            save_file(imputer.tensors(), str(directory / IMPUTER_WEIGHTS_FILE))
        state = {
            "format_version": FORMAT_VERSION,
            "estimator": type(self).__name__,
            "params": {k: v for k, v in self.get_params(deep=False).items()},
            "preprocessor": self.preprocessor_.state(),
            "checkpoint_source": self.checkpoint_source_,
            "members": names,
            "column_scale": self.column_scale_,
            "context": CONTEXT_FILE if self.context_ is not None else None,
            "features_read": getattr(self, "features_read_", None),
            "imputer": None if imputer is None else imputer.state(),
            "histories": [asdict(h) for h in self.histories_],
            "fitted": self._fitted_state(),
        }
        atomic_write_text(directory / ESTIMATOR_FILE, json.dumps(state, indent=1, allow_nan=True, default=_json_default))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "_BasisEstimator":
        from basisfm.model.checkpoint import load_pretrained, read_name_embedding, read_text_top_k

        directory = Path(directory)
        state = read_estimator_state(directory, cls)  # every key checked: CheckpointError naming file and key
        params = dict(state["params"])
        # A saved embedding_cache_dir is where predict would create a folder and write string_embeddings.sqlite: a
        # tampered file could name "../.." or any absolute folder. It is restored only where an embedding cache
        # already is (the machine that saved it; its vectors keep predictions identical), else the default is used.
        saved_cache = params.get("embedding_cache_dir")
        if saved_cache is not None and not (Path(saved_cache).expanduser() / EMBEDDING_CACHE_FILE).is_file():
            params["embedding_cache_dir"] = None
            warnings.warn(f"{directory / ESTIMATOR_FILE}: embedding_cache_dir {saved_cache!r} holds no embedding cache here, "
                          "so it is not restored; the loaded estimator caches embeddings in the default folder (choose "
                          "one with set_params(embedding_cache_dir=...))", UserWarning, stacklevel=2)
        # saved before feature_selection existed: such an estimator drew its wide tables' feature subsets at random
        # ... and before linear_feature existed: its features were chosen, and its predictions made, without the column
        estimator = cls(**{"feature_selection": "random", "linear_feature": False, **params})
        estimator.preprocessor_ = TablePreprocessor.from_state(state["preprocessor"])
        estimator.feature_names_in_ = np.asarray(estimator.preprocessor_.feature_names, dtype=object)
        estimator.n_features_in_ = len(estimator.preprocessor_.feature_names)
        estimator.checkpoint_source_ = state["checkpoint_source"]
        estimator.histories_ = [FineTuneHistory(**h) for h in state["histories"]]
        estimator._load_fitted_state(state["fitted"])
        estimator.column_scale_ = {name: (float(m), float(sd)) for name, (m, sd) in state["column_scale"].items()}
        device = resolve_device(estimator.device)
        estimator.members_ = [load_pretrained(directory / name).to(device).eval() for name in state["members"]]
        estimator.strategy_ = choose_strategy(estimator.strategy, estimator.members_[0])
        estimator.text_top_k_ = read_text_top_k(directory / MODEL_DIR)
        estimator.column_name_embedding_ = read_name_embedding(directory / MODEL_DIR)
        estimator.context_ = None
        estimator.features_read_ = state.get("features_read")  # None when saved before it existed: chosen at predict
        # None: saved without one, or before imputation existed
        estimator.imputer_ = _load_imputer(directory, state.get("imputer"), list(estimator.preprocessor_.feature_names))
        if state.get("context") is not None:
            import pyarrow.parquet as pq

            estimator.context_ = pq.read_table(directory / CONTEXT_FILE)
        return estimator

    # ------------------------------------------------------------------ what each task supplies

    _multi_target = False  # whether fit takes several target columns at once
    # The shipped checkpoint `checkpoint="default"` fine-tunes (base-ft, peft): the per-row one, unless the task
    # has measured another better on the public suite (the regressor: the in-context one).
    _fine_tune_default = PER_ROW_NAME

    @abstractmethod
    def _target_kind(self) -> ColumnKind:
        """The target's column kind in the fitted table (numeric or categorical)."""

    @abstractmethod
    def _check_target(self, y: Any, n_rows: int, name: str, table: str) -> pd.Series:
        """`y` as a Series of valid targets, or an error naming the first bad row."""

    @abstractmethod
    def _fit_target_encoding(self, target: pd.Series) -> None:
        """Fit what the task needs of the target (its scale, its classes)."""

    @abstractmethod
    def _is_degenerate(self, target: pd.Series) -> bool:
        """True when there is nothing to learn (the model is then not trained)."""

    @abstractmethod
    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        """The training loss of one batch, from one forward."""

    @abstractmethod
    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        """Lower-is-better score on the held-out batches."""

    @abstractmethod
    def _choose_features_read(self):
        """`features_read_` from the fitted training rows (`context_`): the features in-context members read."""

    def _fit_calibration(self) -> None:
        """Fit's last step: what the task's predictions are mapped through (`BasisClassifier`: its class-indicator
        estimates, `estimators.calibration`); a regressor's are not."""

    @abstractmethod
    def _fitted_state(self) -> dict[str, Any]:
        """The task's fitted state for estimator.json."""

    @abstractmethod
    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore `_fitted_state`."""


def _load_imputer(directory: Path, state: dict[str, Any] | None, features: list[str]):
    if state is None:
        return None
    from basisfm.encoding.imputation import imputer_from_state

    if not isinstance(state, dict):
        raise CheckpointError(f"{directory / ESTIMATOR_FILE}: key 'imputer' must be null or a mapping, got {type(state).__name__}")
    strangers = [c for c in state.get("columns", []) if c not in features]
    if strangers:
        raise CheckpointError(f"{directory / ESTIMATOR_FILE}: key 'imputer.columns' names {strangers[0]!r}, not a fitted "
                              "feature column; the file was changed after saving, save the estimator again")

    tensors = {}
    weights = directory / IMPUTER_WEIGHTS_FILE
    if state.get("kind") == "diffusion":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{weights}: the diffusion imputer's weights cannot be read ({type(exc).__name__}); "
                                  "save the estimator again") from None
    return imputer_from_state(state, tensors, str(directory / ESTIMATOR_FILE))


def _column_scale(features: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """{column: (mean, std)} of the numeric-like feature columns over the training rows (std 1 when constant)."""
    scale = {}
    for name in features.columns:
        column = features[name]
        if column.dtype == object:
            continue
        values = column.to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        std = float(values.std())
        scale[str(name)] = (float(values.mean()), std if std > 0 and np.isfinite(std) else 1.0)
    return scale


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


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
