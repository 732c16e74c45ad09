"""What `BasisRegressor` and `BasisClassifier` share: parameters, fit, members, prediction batches, save / load.

    from basisfm.estimators import BasisRegressor
    model = BasisRegressor().fit(X_train, y_train)  # fine-tunes the shipped in-context checkpoint on the table
    model.predict(X_test); model.save("my-model"); BasisRegressor.load("my-model")
    BasisRegressor(checkpoint="models:/basisfm@champion")  # or your own pretrained model

`checkpoint`: "default" (the default), a checkpoint shipped with the package (`basisfm.pretrained`, each
with a provenance.json that says how it was made): `strategy="inference"` predicts with the shipped in-context
model ("in_context", tab2d pretrained on the synthetic prior by `make icl-curriculum`), `BasisRegressor`
fine-tunes it too (on the public suite it fine-tunes to a higher median R² than the per-row model), and
`BasisClassifier` fine-tunes the per-row tiny model `make demo` pretrains ("per_row"; in-context
classification is not yet measured on a suite); "in_context" and "per_row" name them for any strategy; a directory holding
model.safetensors + config.json; a registry URI `models:/name@alias` (downloaded with MLflow from `tracking_uri`, else
$MLFLOW_TRACKING_URI, else runs/mlflow.db); or None: *from scratch*, a freshly initialised model of
`preset` with `regression_head` (seeded by `random_state`), which only makes sense with a fine-tuning
strategy. `preset` and `regression_head` describe a model built from scratch: set with a checkpoint
(whose config fixes both) they are an error rather than silently ignored.

`strategy`: `inference` predicts with the checkpoint as it is, the target identified by its column name
(`target_name`, else `y.name`, else "target": names carry meaning, they are embedded); `base-ft` fine-tunes
every weight; `peft` fine-tunes LoRA adapters (`lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`).

Fitting (see `basisfm.estimators.finetune`): the budget is `max_steps` optimizer steps (None: sized to
the table, 300-600 steps), never cut short by a pass count; `validation_fraction` of the rows (at least
`MIN_VALIDATION_ROWS`, at most `MAX_VALIDATION_ROWS`; all rows when the table is too small to spare them)
are held out, scored every `validate_every` steps (None: about 12 checks per budget), and the best
weights are kept, stopping after `patience` checks without improvement or after `time_budget_s` (off by
default: stopping on the clock is not reproducible). `n_estimators` members are fitted (None: one), each
with its own seed, validation split and column subsets, and averaged at predict; with `inference` they are
in-context members (None: four), which cost prediction time alone. `device="auto"` runs on CUDA
when present. Regression fine-tunes on `regression_loss`: "bits" is the pretraining SMR bit loss,
"bits+mse" (default) adds the squared error of the expected value in target standard deviations.
`predict(X, output="quantiles", quantiles=[...])` gives intervals from the predicted distribution.
In-context checkpoints (`basis_icl`, `tab2d`) keep the training rows as their context whatever the strategy;
`base-ft` / `peft` fine-tune them on episodes of the table (`EPISODE_ROWS` rows, half labelled support, half
hidden queries) and validate by predicting the held-out rows in context. Their members differ as TabPFN's
do (`basisfm.estimators.in_context`): `categorical_features` "ordinal" codes a categorical feature as the
numbers 0..m-1 in an order drawn per member, "sorted" in the strings' order, "target" in the order of each
value's smoothed mean target on the training rows, "text" embeds its strings (None: ordinal for `inference`,
the best measured on the public suite; text once fine-tuned, as its episodes were); `feature_transforms` (e.g. ["none", "quantile"]) and
`target_transforms` cycle transforms of the numeric features and targets over the members ("power":
Yeo-Johnson, "quantile": to a normal; None: no transform; transforming the features measured no better
on the public suite). A table with more than `max_columns` - 1 features gives every in-context member its
most relevant ones (`feature_selection="relevance"`: mutual information with the target on the training
rows) or, with "random", a random subset per member; "validated" (None: the `inference` default) reads the
most relevant too, as many of them (all, 16, 8 or 4) as predict held-out training rows best in context,
pruned and offered back one by one, at any table width (`in_context.validated_features`);
fine-tuning (None: "relevance") trains and predicts on the relevance-ranked features. Fit chooses from the
training rows alone and keeps the choice as `features_read_` (a regressor: the feature names; a classifier:
{class: names}, one list per class indicator with `inference`), which every predict reuses and a save keeps.

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
from basisfm.data.collate import column_cap, rows_per_batch
from basisfm.errors import ConfigError, InputTypeError, TableError
from basisfm.model import reads_context
from basisfm.pretrained.checkpoints import resolve_checkpoint
from basisfm.estimators.finetune import (
    MIN_VALIDATION_ROWS,
    FineTuneHistory,
    FineTuneSettings,
    copy_model,
    default_steps,
    fine_tune,
    resolve_device,
)
from basisfm.estimators.preprocessing import TablePreprocessor, as_frame
from basisfm.estimators.saved_files import CONTEXT_FILE, ESTIMATOR_FILE, FORMAT_VERSION, MODEL_DIR
from basisfm.estimators.validation import (
    prepare_target,
    read_estimator_state,
    validate_params,
)
from basisfm.pretrained import DEFAULT_NAME, IN_CONTEXT_NAME, PER_ROW_NAME
from basisfm.seeds import derive_seed

MAX_VALIDATION_ROWS = 2_000  # bounds the validation cost on big tables
MIN_ROWS_FOR_HOLDOUT = 3 * MIN_VALIDATION_ROWS // 2  # below this, validate on the training rows
# In-context architectures fine-tune on episodes (Mitra's guide: 128 support and 128 query rows each).
EPISODE_ROWS = 256
EPISODE_QUERY_FRACTION = 0.5
CHECKS_PER_BUDGET = 12  # validate_every=None: this many validation checks over the step budget


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
        retrieval: bool = False,
        categorical_features: str | None = None,
        feature_transforms: list[str] | None = None,
        target_transforms: list[str] | None = None,
        token_budget: int = 4096,
        max_columns: int = 32,
        feature_selection: str | None = None,
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
        self.token_budget = token_budget
        self.max_columns = max_columns
        self.feature_selection = feature_selection
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

    def _settings(self, n_train_rows: int, rows_per_batch: int, member: int) -> FineTuneSettings:
        steps = self.max_steps if self.max_steps is not None else default_steps(n_train_rows, rows_per_batch)
        every = self.validate_every if self.validate_every is not None else max(1, round(steps / CHECKS_PER_BUDGET))
        settings = FineTuneSettings(
            strategy=self.strategy, max_steps=steps, learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            patience=self.patience, validate_every=every,
            lora_r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
            lora_target_modules=self.lora_target_modules, seed=self._member_seed(member), progress=bool(self.progress),
            time_budget_s=self.time_budget_s, device=str(resolve_device(self.device)),
            description=f"member {member + 1}/{self._n_estimators()}" if self._n_estimators() > 1 else "",
        )
        settings.validate()
        return settings

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
        from basisfm.encoding.text import shared_embedder

        return shared_embedder(self._data_config().embedding_cache_dir, self.text_top_k_)

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
            from basisfm.model.checkpoint import load_pretrained, read_text_top_k

            self.text_top_k_ = read_text_top_k(resolved)
            return load_pretrained(resolved), f"checkpoint {checkpoint}"
        self.text_top_k_ = DataConfig.text_top_k  # as pretraining would prune it
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
        name = getattr(y, "name", None)
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
        """1. check inputs; 2. fit the preprocessing; 3. load the starting model; 4. fine-tune each member.

        `y`: one target (a Series, array or list), or for `BasisRegressor` several at once (a DataFrame, or a
        2-d array): one model predicts them all, jointly; `predict` then returns [n_rows, n_targets]."""
        validate_params(self)
        resolve_device(self.device)  # a device this machine lacks fails before any work
        table = "user-table"
        frame = as_frame(X, table)
        target = self._checked_targets(y, len(frame), table)
        if len(frame) < 2:
            raise TableError(f"fit needs at least 2 rows, got {len(frame)} sample(s)", table=table)

        preprocessor = TablePreprocessor(table_id=table).fit(frame, target, self._target_kind())
        features = preprocessor.features(frame)
        self.preprocessor_ = preprocessor
        self.feature_names_in_ = np.asarray(preprocessor.feature_names, dtype=object)
        self.n_features_in_ = len(preprocessor.feature_names)
        self.constant_ = None
        self.column_scale_ = _column_scale(features)
        self._fit_target_encoding(target)

        start, source = self._base_model()
        self.checkpoint_source_ = source
        if self._is_degenerate(target):
            self.members_ = [start.eval()]
            self.histories_ = [FineTuneHistory(stopped_because="constant target: nothing to learn")]
            return self

        # An in-context model keeps the training rows, whatever the strategy: they are its context at predict.
        self.context_ = preprocessor.to_arrow(features, target) if reads_context(start) else None
        if self.strategy == "inference":  # no gradient step
            self.members_ = [start.to(resolve_device(self.device)).eval()]
            self.histories_ = [FineTuneHistory(stopped_because="strategy='inference': no gradient step")]
        else:
            self.members_, self.histories_ = [], []
            n_members = self._n_estimators()
            for member in range(n_members):
                model, history = self._fit_member(start if member == n_members - 1 else copy_model(start),
                                                  features, target, member)
                self.members_.append(model)
                self.histories_.append(history)
        self.features_read_ = self._choose_features_read() if self.context_ is not None else None
        return self

    def _fit_member(self, model, features: pd.DataFrame, target: pd.Series | pd.DataFrame, member: int):
        """One member: its own seeded train/validation split and column subsets, fine-tuned from `model`."""
        seed = self._member_seed(member)
        order = np.random.default_rng(seed).permutation(len(features))
        if len(features) < MIN_ROWS_FOR_HOLDOUT:
            train_rows = val_rows = order
        else:
            n_val = min(MAX_VALIDATION_ROWS, max(MIN_VALIDATION_ROWS, round(self.validation_fraction * len(features))))
            val_rows, train_rows = order[:n_val], order[n_val:]
        data_config = self._data_config(seed)
        embedder = self._embedder()
        preprocessor = self.preprocessor_

        def arrow(rows: np.ndarray):
            return preprocessor.to_arrow(features.iloc[rows].reset_index(drop=True), target.iloc[rows].reset_index(drop=True))

        train_table = arrow(train_rows)
        if reads_context(model):
            val_features = preprocessor.to_arrow(features.iloc[val_rows].reset_index(drop=True), None)
            return self._fit_member_in_context(model, train_table, val_features, target.iloc[val_rows].to_numpy(),
                                               data_config, embedder, seed, member)
        val_batches = self._labelled_batches(arrow(val_rows), data_config, embedder, seed=seed)
        first = self._labelled_batches(train_table, data_config, embedder, seed=derive_seed(seed, 1))
        settings = self._settings(len(train_rows), first[0].n_rows if first else 1, member)
        device = torch.device(settings.device)
        val_batches = [b.to(device) for b in val_batches]

        def train_batches(epoch: int) -> list[TableBatch]:
            if epoch == 1:
                return first
            return self._labelled_batches(train_table, data_config, embedder, seed=derive_seed(seed, epoch))

        return fine_tune(model, train_batches, lambda m: self._validation_loss(m, val_batches), self._loss, settings)

    def _fit_member_in_context(self, model, train_table, val_features, val_truth: np.ndarray, data_config: DataConfig,
                               embedder, seed: int, member: int):
        """Episodic fine-tuning of an in-context model (Mitra's recipe), the episodes pretraining learns from:
        each step draws up to `EPISODE_ROWS` training rows, half of them queries whose targets are hidden and
        half labelled support rows, scaled by their support rows. The episodes read the table as predictions
        will: a table wider than an episode by its most relevant features (`table_reading`; "validated" reads
        as "relevance" here: there is no fine-tuned model yet to validate a shorter list with),
        categorical features coded as `categorical_features` says (with "ordinal", in an order drawn afresh
        each pass). Validation predicts the held-out rows in context, the training rows their context,
        exactly as `predict` will."""
        from basisfm.data.collate import prepare_table
        from basisfm.data.episodes import episodes_from_prepared
        from basisfm.data.reading import coded_categories, table_reading

        record = self.preprocessor_.record()
        names = [c.name for c in record.columns]
        targets = np.asarray([names.index(t) for t in record.candidate_targets], dtype=np.int64)  # all hidden: predicted jointly
        config = replace(data_config, task="episodes", max_rows=EPISODE_ROWS, query_fraction=EPISODE_QUERY_FRACTION,
                         max_episode_targets=len(targets), retrieval=bool(self.retrieval))
        rows = min(train_table.num_rows, rows_per_batch(min(len(record.columns), column_cap(config)), config))
        config.episodes_per_table = max(1, -(-train_table.num_rows // max(rows, 1)))  # a pass sees each row about once
        config.validate("estimator")
        settings = self._settings(train_table.num_rows, rows, member)
        context = self._in_context_settings(members=1, seed=seed)
        prepared = prepare_table(train_table.select(names), record, embedder)  # cells embedded once for every pass
        labelled = np.flatnonzero((~prepared.missing[:, targets]).any(axis=1))
        features, rank_by = table_reading(prepared, np.setdiff1d(np.arange(len(names)), targets), targets, labelled, context)

        def train_batches(epoch: int) -> list[TableBatch]:
            codes = np.random.default_rng(derive_seed(seed, epoch, "category_codes"))
            coded = coded_categories(prepared, features, context.categorical_features, codes, rank_by)
            return [TableBatch.from_arrays(a) for a in episodes_from_prepared(
                coded, record, config, seed=derive_seed(seed, epoch), target_positions=targets, feature_positions=features)]

        def validation(m) -> float:  # the training rows' readable features are the ones just ranked
            return self._in_context_validation_loss(m, record, train_table, val_features, val_truth, embedder, context,
                                                    features)

        return fine_tune(model, train_batches, validation, self._loss, settings)

    @abstractmethod
    def _in_context_validation_loss(self, model, record, context, query, truth: np.ndarray, embedder, settings,
                                    readable) -> float:
        """Lower-is-better score of the held-out rows `query` (targets null) predicted in context, against `truth`
        ([n] for one target, [n, n_targets] for several); `readable`: the features `in_context.table_reading` gives `context`."""

    def _labelled_batches(self, table, data_config, embedder, seed: int) -> list[TableBatch]:
        from basisfm.data.collate import table_to_batches

        record = self.preprocessor_.record()
        batches = table_to_batches(table, record, data_config, embedder, seed=seed, target_columns=record.candidate_targets)
        return [self._with_fitted_scale(b) for b in batches]

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

    def _prediction_batches(self, X: Any, member: int) -> tuple[list[tuple[TableBatch, int]], int]:
        """Batches over X with the target(s) hidden in every row, each with the (first) target's column index;
        rows are found again through `batch.row_index`. Wide tables give several batches per row (column
        subsets, drawn by the member's seed)."""
        from basisfm.data.collate import table_to_batches

        self._check_fitted()
        features = self.preprocessor_.features(X)
        record = self.preprocessor_.record()
        table = self.preprocessor_.to_arrow(features, None)
        seed = self._member_seed(member)
        batches = table_to_batches(table, record, self._data_config(seed), self._embedder(), seed=seed,
                                   target_columns=record.candidate_targets)
        out = []
        for batch in batches:
            cols = [batch.column_names.index(name) for name in record.candidate_targets]
            mask = torch.zeros_like(batch.target_mask)
            mask[:, cols] = True
            # The targets are unknown here (null columns): mark them as the cells to predict, not as missing.
            missing = batch.missing.clone()
            missing[:, cols] = False
            out.append((self._with_fitted_scale(replace(batch, target_mask=mask, missing=missing)), cols[0]))
        return out, len(features)

    def _average_over_members(self, X: Any, per_batch) -> np.ndarray:
        """Mean over members and column subsets of `per_batch(model, batch, col) -> [R, ...] array`, by row."""
        total, count = None, None
        for member, model in enumerate(self.members_):
            device = next(model.parameters()).device
            batches, n_rows = self._prediction_batches(X, member)
            with torch.no_grad():
                for batch, col in batches:
                    values = per_batch(model, batch.to(device), col)
                    if total is None:
                        total = np.zeros((n_rows, *values.shape[1:]))
                        count = np.zeros(n_rows)
                    rows = batch.row_index.cpu().numpy()
                    np.add.at(total, rows, values)
                    np.add.at(count, rows, 1)
        if count is None or (count == 0).any():
            raise RuntimeError("some rows were not predicted: basisfm.data.collate lost rows of the prediction table")
        return total / count.reshape(-1, *([1] * (total.ndim - 1)))

    def _in_context_inputs(self, X: Any):
        """(models, record, context table, query table, embedder, settings) for `estimators.in_context`."""
        query = self.preprocessor_.to_arrow(self.preprocessor_.features(X), None)
        models, record, context, embedder, settings = self._training_rows_inputs()
        return models, record, context, query, embedder, settings

    def _training_rows_inputs(self):
        """(models, record, context table, embedder, settings): `_in_context_inputs` without a query table."""
        settings = self._in_context_settings(members=self._n_estimators(), seed=int(self.random_state))
        # every fitted member predicts (member k of the in-context ensemble with model k), not the first alone
        return list(self.members_), self.preprocessor_.record(), self.context_, self._embedder(), settings

    def _features_read(self):
        """`features_read_`, chosen now for an estimator saved before it existed."""
        if getattr(self, "features_read_", None) is None:
            self.features_read_ = self._choose_features_read()
        return self.features_read_

    def _positions(self, names: list[str]) -> np.ndarray:
        """Positions of feature `names` among the fitted record's columns (what in-context reading takes)."""
        columns = [c.name for c in self.preprocessor_.record().columns]
        return np.asarray([columns.index(name) for name in names], dtype=np.int64)

    def _in_context_settings(self, members: int, seed: int):
        """`estimators.in_context` settings from this estimator's parameters, for `members` members (member k
        takes entry k % len of each transform cycle)."""
        from basisfm.data.reading import InContextSettings

        settings = InContextSettings(max_context=int(self.max_context), n_estimators=members, retrieval=bool(self.retrieval),
                                     max_columns=int(self.max_columns), feature_selection=self._feature_selection(),
                                     categorical_features=self._categorical_features(),
                                     feature_transforms=tuple(self.feature_transforms or ("none",)),
                                     target_transforms=tuple(self.target_transforms or ("none",)), seed=seed)
        settings.validate()
        return settings

    def _n_estimators(self) -> int:
        """`n_estimators`, else 4 in-context members for `inference` (they cost prediction time alone) and one
        fitted member for fine-tuning (each costs a fit)."""
        if self.n_estimators is not None:
            return int(self.n_estimators)
        return 4 if self.strategy == "inference" else 1

    def checkpoint_name(self) -> str | None:
        """The checkpoint `fit` starts from: `checkpoint`, where "default" names the shipped checkpoint made for
        the strategy: the in-context one for `inference` (the per-row checkpoint cannot read the training rows),
        `_fine_tune_default` to fine-tune."""
        if self.checkpoint == DEFAULT_NAME:
            return IN_CONTEXT_NAME if self.strategy == "inference" else self._fine_tune_default
        return self.checkpoint

    def _categorical_features(self) -> str:
        """How in-context prediction codes categorical features: `categorical_features`, else "ordinal" for
        `inference` (measured better on the public suite) and "text" once fine-tuned (its training episodes
        embed the strings, so prediction must too)."""
        if self.categorical_features is not None:
            return self.categorical_features
        return "ordinal" if self.strategy == "inference" else "text"

    def _feature_selection(self) -> str:
        """Which features in-context members read: `feature_selection`, else "validated" for `inference` (measured
        better on the public suite) and "relevance" once fine-tuned (the features its episodes trained on)."""
        if self.feature_selection is not None:
            return self.feature_selection
        return "validated" if self.strategy == "inference" else "relevance"

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
        from basisfm.model.checkpoint import save_pretrained

        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = [MODEL_DIR if k == 0 else f"{MODEL_DIR}-{k}" for k in range(len(self.members_))]
        for name, model in zip(names, self.members_):
            save_pretrained(model, directory / name, text_top_k=self.text_top_k_)
        if self.context_ is not None:  # an in-context model's training rows: Parquet, never a pickle
            import pyarrow.parquet as pq

            pq.write_table(self.context_, directory / CONTEXT_FILE)
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
            "histories": [asdict(h) for h in self.histories_],
            "fitted": self._fitted_state(),
        }
        atomic_write_text(directory / ESTIMATOR_FILE, json.dumps(state, indent=1, allow_nan=True, default=_json_default))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "_BasisEstimator":
        from basisfm.model.checkpoint import load_pretrained, read_text_top_k

        directory = Path(directory)
        state = read_estimator_state(directory, cls)  # every key checked: CheckpointError naming file and key
        # saved before feature_selection existed: such an estimator drew its wide tables' feature subsets at random
        estimator = cls(**{"feature_selection": "random", **state["params"]})
        estimator.preprocessor_ = TablePreprocessor.from_state(state["preprocessor"])
        estimator.feature_names_in_ = np.asarray(estimator.preprocessor_.feature_names, dtype=object)
        estimator.n_features_in_ = len(estimator.preprocessor_.feature_names)
        estimator.checkpoint_source_ = state["checkpoint_source"]
        estimator.histories_ = [FineTuneHistory(**h) for h in state["histories"]]
        estimator._load_fitted_state(state["fitted"])
        estimator.column_scale_ = {name: (float(m), float(sd)) for name, (m, sd) in state["column_scale"].items()}
        device = resolve_device(estimator.device)
        estimator.members_ = [load_pretrained(directory / name).to(device).eval() for name in state["members"]]
        estimator.text_top_k_ = read_text_top_k(directory / MODEL_DIR)
        estimator.context_ = None
        estimator.features_read_ = state.get("features_read")  # None when saved before it existed: chosen at predict
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

    @abstractmethod
    def _fitted_state(self) -> dict[str, Any]:
        """The task's fitted state for estimator.json."""

    @abstractmethod
    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore `_fitted_state`."""


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
