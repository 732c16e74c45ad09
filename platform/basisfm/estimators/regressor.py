"""`BasisRegressor`: regression with a Basis model (parameters and treatments: `basisfm.estimators.base`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import RegressorMixin

from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError, TableError
from basisfm.estimators.base import _BasisEstimator, _target_series
from basisfm.estimators.finetune import REGRESSION_LOSSES, base_model
from basisfm.estimators.validation import check_regression_target
from basisfm.pretrained import IN_CONTEXT_NAME

OUTPUTS = ("mean", "quantiles")
PAPER_GAMMA = 0.1  # the paper's reweighting floor (eq. 3-4) for the SMR-bit loss, as pretraining's loss.gamma


class BasisRegressor(RegressorMixin, _BasisEstimator):
    """Regression with the Basis Transformer (see the module docstring for parameters and treatments).

    Several targets at once: `fit(X, Y)` with a DataFrame `Y` (or a 2-d array) fits one model that predicts
    every column of `Y` jointly (each row's targets hidden together); `predict` returns [n_rows, n_targets]
    and `target_mean_` / `target_scale_` / `constant_` hold one entry per target.
    """

    _task = "regression"
    _multi_target = True
    # Fine-tuned on the public suite's episodes, the in-context checkpoint scores higher than the per-row one on
    # most tasks (benchmarks/results/evaluate_public_icl_shipped_ft.md beside evaluate_public_champion_ft.md).
    _fine_tune_default = IN_CONTEXT_NAME

    def _target_kind(self) -> ColumnKind:
        return ColumnKind.NUMERIC

    def _check_target(self, y, n_rows, name, table) -> pd.Series:
        series = _target_series(y, n_rows, name, table)
        # A complex target would lose its imaginary part to a numpy warning: only real ones are read (as features are).
        imaginary = series.map(lambda v: isinstance(v, (complex, np.complexfloating)) and v.imag != 0).to_numpy(dtype=bool)
        if imaginary.any():
            row = int(np.flatnonzero(imaginary)[0])
            raise TableError(f"target row {row} is the complex number {complex(series.iloc[row])!r} ({int(imaginary.sum())} "
                             f"of {n_rows} rows have an imaginary part); Complex data not supported: a regression target "
                             "is one real number per row, fit its real and imaginary parts as two targets",
                             table=table, column=name)
        series = series.map(lambda v: v.real if isinstance(v, (complex, np.complexfloating)) else v)
        numbers = pd.to_numeric(series.map(lambda v: np.nan if v is None else v), errors="coerce").astype(np.float64)
        bad = ~np.isfinite(numbers.to_numpy())
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = series.iloc[row]
            value = value.item() if isinstance(value, np.generic) else value  # nan, not np.float64(nan)
            raise TableError(f"target row {row} is {value!r} ({int(bad.sum())} of {n_rows} rows are not finite "
                             "numbers); drop those rows or impute the target before fit", table=table, column=name)
        check_regression_target(numbers, table, name)
        return numbers

    def _fit_target_encoding(self, target: pd.Series | pd.DataFrame) -> None:
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ConfigError(f"regression_loss {self.regression_loss!r} is not one of {list(REGRESSION_LOSSES)}")
        frame = target.to_frame() if isinstance(target, pd.Series) else target
        means = [float(frame[c].mean()) for c in frame.columns]
        # finite: check_regression_target refused overflowing targets; a constant target gets scale 1
        scales = [float(frame[c].std(ddof=0)) or 1.0 for c in frame.columns]
        self._set_moments(means, scales)

    def _set_moments(self, means: list[float], scales: list[float]) -> None:
        single = len(means) == 1
        self.target_mean_ = means[0] if single else np.asarray(means)
        self.target_scale_ = scales[0] if single else np.asarray(scales)

    def _per_target(self, attribute: str) -> list:
        """A fitted per-target attribute as a list (one entry per target column)."""
        value = getattr(self, attribute)
        return list(np.atleast_1d(np.asarray(value, dtype=object))) if len(self.preprocessor_.targets) > 1 else [value]

    def _with_fitted_scale(self, batch: TableBatch) -> TableBatch:
        """The features' training scale (base) and the targets': their training rows' mean and spread, at fit
        and at predict alike (a prediction table has no target values to take them from)."""
        batch = super()._with_fitted_scale(batch)
        mean, std = batch.column_mean.clone(), batch.column_std.clone()
        for name, m, sd in zip(self.preprocessor_.target_names, self._per_target("target_mean_"), self._per_target("target_scale_")):
            col = batch.column_names.index(name)
            mean[col], std[col] = float(m), float(sd)
        return replace(batch, column_mean=mean, column_std=std)

    def _is_degenerate(self, target: pd.Series | pd.DataFrame) -> bool:
        """Constant target columns are predicted as their value (with a warning); the model is trained
        unless every target is constant."""
        frame = target.to_frame() if isinstance(target, pd.Series) else target
        constants = []
        for name in frame.columns:
            column = frame[name]
            constants.append(float(column.iloc[0]) if column.nunique() == 1 else None)
            if constants[-1] is not None:
                warnings.warn(f"target {name!r} is constant ({constants[-1]!r}): predicting that value; "
                              "nothing else can be learned", UserWarning, stacklevel=3)
        self.constant_ = constants[0] if len(constants) == 1 else constants
        return all(c is not None for c in constants)

    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        """The pretraining objective's regression loss (`losses.regression_loss`), from this step's one forward.

        Under the SMR-bit head, "bits+mse" adds the squared error of the expected value in target standard
        deviations (each target column's own, `batch.column_std`): bit cross-entropy alone treats the lowest
        bit like the sign bit, and the squared error is what R² scores. The binned head needs no such term:
        its loss is already on the standardised value.
        """
        from basisfm.losses import numeric_targets, regression_loss

        out = model(batch)
        loss = regression_loss(model, out, batch, gamma=PAPER_GAMMA).mean()
        if self.regression_loss == "bits+mse" and out.bit_logits is not None:
            keep = numeric_targets(out, batch)
            codec = base_model(model).codec
            expected = codec.expected_value(torch.sigmoid(out.bit_logits[keep].double()), out.window_top[keep], out.window_low[keep])
            truth = batch.values[out.target_rows[keep], out.target_columns[keep]].double()
            scale = batch.column_std[out.target_columns[keep]].double()
            loss = loss + (((expected - truth) / scale) ** 2).mean().to(loss.dtype)
        return loss

    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        """Mean squared error in target standard deviations (so several targets weigh alike)."""
        from basisfm.losses import decode_numeric

        errors = []
        with torch.no_grad():
            for batch in batches:
                out = model(batch)
                predicted, _ = decode_numeric(model, out, batch)
                truth = batch.values[out.target_rows, out.target_columns]
                errors.append((((predicted - truth) / batch.column_std[out.target_columns]) ** 2).cpu().numpy())
        return float(np.mean(np.concatenate(errors))) if errors else math.inf

    def _in_context_validation_loss(self, model, record, context, query, truth: np.ndarray, embedder, settings,
                                    readable) -> float:
        from basisfm.estimators.in_context import predict_numeric_in_context

        point, _ = predict_numeric_in_context(model, record, context, query, embedder, settings, readable=readable)
        scale = np.asarray(self._per_target("target_scale_"), dtype=np.float64)
        return float(np.mean(((point - truth.astype(np.float64).reshape(len(point), -1)) / scale) ** 2))

    def predict(self, X: Any, output: str = "mean", quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Predicted target values: float64 [n_rows] (`output="mean"`, the mean of the predicted
        distribution) or [n_rows, len(quantiles)] (`output="quantiles"`, each member's quantiles averaged).
        Fitted on several targets: [n_rows, n_targets] and [n_rows, n_targets, len(quantiles)], the targets in
        the order of Y's columns."""
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        levels = _quantile_levels(quantiles) if output == "quantiles" else None
        self._check_fitted()
        constants = self._per_target("constant_")
        if all(c is not None for c in constants):
            n_rows = len(self.preprocessor_.features(X))
            values = np.tile(np.asarray(constants, dtype=np.float64).reshape(1, -1, 1), (n_rows, 1, len(levels or [0])))
        else:
            values = self._predict_targets(X, levels)  # [n, T, Q or 1]
            for j, constant in enumerate(constants):
                if constant is not None:
                    values[:, j] = constant
        values = values[..., 0] if levels is None else values
        return values[:, 0] if len(constants) == 1 else values

    def _predict_targets(self, X: Any, levels: list[float] | None) -> np.ndarray:
        """[n_rows, n_targets, len(levels) or 1]: quantiles at `levels`, or the mean when `levels` is None."""
        return self.strategy_.predict_numeric(self, X, levels)

    def _choose_features_read(self) -> list[str]:
        """The features every in-context member reads, for all targets at once (chosen on the training rows)."""
        from basisfm.estimators.in_context import training_reading

        models, record, context, embedder, settings = self.strategy_.training_rows(self)
        return [record.columns[j].name for j in training_reading(models, record, context, embedder, settings)]

    def _fitted_state(self) -> dict[str, Any]:
        # Numbers with one target, lists (one entry per target) with several.
        as_json = lambda v: v.tolist() if isinstance(v, np.ndarray) else v  # noqa: E731
        return {"constant": self.constant_, "target_scale": as_json(self.target_scale_), "target_mean": as_json(self.target_mean_)}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.constant_ = state["constant"]
        scale, mean = state["target_scale"], state["target_mean"]
        self._set_moments(*((list(mean), list(scale)) if isinstance(scale, list) else ([mean], [scale])))


def _quantile_levels(quantiles: Sequence[float]) -> list[float]:
    levels = [float(q) for q in np.atleast_1d(np.asarray(quantiles, dtype=np.float64))]
    if not levels or not all(0.0 < q < 1.0 for q in levels):
        raise ConfigError(f"quantiles must lie strictly between 0 and 1, got {list(quantiles)}")
    return levels
