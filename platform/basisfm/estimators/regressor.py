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
from basisfm.estimators.base import REGRESSION_LOSSES, _BasisEstimator, _target_series
from basisfm.estimators.finetune import base_model
from basisfm.estimators.validation import check_regression_target

OUTPUTS = ("mean", "quantiles")
PAPER_GAMMA = 0.1  # the paper's reweighting floor (eq. 3-4) for the SMR-bit loss, as pretraining's loss.gamma


class BasisRegressor(RegressorMixin, _BasisEstimator):
    """Regression with the Basis Transformer (see the module docstring for parameters and treatments)."""

    _task = "regression"

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
        scale = float(target.std(ddof=0))  # finite: check_regression_target refused overflowing targets
        self.target_scale_ = scale or 1.0
        self.target_mean_ = float(target.mean())

    def _with_fitted_scale(self, batch: TableBatch) -> TableBatch:
        """The features' training scale (base) and the target's: its training rows' mean and spread, at fit
        and at predict alike (a prediction table has no target values to take them from)."""
        batch = super()._with_fitted_scale(batch)
        col = batch.column_names.index(self.preprocessor_.target.name)
        mean, std = batch.column_mean.clone(), batch.column_std.clone()
        mean[col], std[col] = self.target_mean_, self.target_scale_
        return replace(batch, column_mean=mean, column_std=std)

    def _is_degenerate(self, target: pd.Series) -> bool:
        if target.nunique() == 1:
            self.constant_ = float(target.iloc[0])
            warnings.warn(f"target {target.name!r} is constant ({self.constant_!r}): predicting that value; "
                          "nothing else can be learned", UserWarning, stacklevel=3)
            return True
        return False

    def _loss(self, model, batch: TableBatch) -> torch.Tensor:
        """The pretraining objective's regression loss (`losses.regression_loss`), from this step's one forward.

        Under the SMR-bit head, "bits+mse" adds the squared error of the expected value in target standard
        deviations: bit cross-entropy alone treats the lowest bit like the sign bit, and the squared error is
        what R² scores. The binned head needs no such term: its loss is already on the standardised value.
        """
        from basisfm.losses import numeric_targets, regression_loss

        out = model(batch)
        loss = regression_loss(model, out, batch, gamma=PAPER_GAMMA).mean()
        if self.regression_loss == "bits+mse" and out.bit_logits is not None:
            keep = numeric_targets(out, batch)
            codec = base_model(model).codec
            expected = codec.expected_value(torch.sigmoid(out.bit_logits[keep].double()), out.window_top[keep], out.window_low[keep])
            truth = batch.values[out.target_rows[keep], out.target_columns[keep]].double()
            loss = loss + (((expected - truth) / self.target_scale_) ** 2).mean().to(loss.dtype)
        return loss

    def _validation_loss(self, model, batches: list[TableBatch]) -> float:
        from basisfm.losses import decode_numeric

        errors = []
        with torch.no_grad():
            for batch in batches:
                out = model(batch)
                predicted, _ = decode_numeric(model, out, batch)
                truth = batch.values[out.target_rows, out.target_columns]
                errors.append(((predicted - truth) ** 2).cpu().numpy())
        return float(np.mean(np.concatenate(errors))) if errors else math.inf

    def _in_context_validation_loss(self, model, record, context, query, truth: np.ndarray, embedder, settings) -> float:
        from basisfm.estimators.in_context import predict_numeric_in_context

        point, _ = predict_numeric_in_context(model, record, context, query, embedder, settings)
        return float(np.mean((point[:, 0] - truth.astype(np.float64)) ** 2))

    def predict(self, X: Any, output: str = "mean", quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Predicted target values: float64 [n_rows] (`output="mean"`, the mean of the predicted
        distribution) or [n_rows, len(quantiles)] (`output="quantiles"`, each member's quantiles averaged)."""
        from basisfm.losses import decode_numeric

        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        levels = _quantile_levels(quantiles) if output == "quantiles" else None
        self._check_fitted()
        if self.constant_ is not None:
            n_rows = len(self.preprocessor_.features(X))
            shape = (n_rows,) if levels is None else (n_rows, len(levels))
            return np.full(shape, self.constant_, dtype=np.float64)

        if self.context_ is not None:
            from basisfm.estimators.in_context import predict_numeric_in_context

            model, record, context, query, embedder, settings = self._in_context_inputs(X)
            point, q = predict_numeric_in_context(model, record, context, query, embedder, settings, quantiles=levels)
            return point[:, 0] if levels is None else q[:, 0, :]

        def per_batch(model, batch: TableBatch, col: int) -> np.ndarray:
            out = model(batch)
            point, q = decode_numeric(model, out, batch, levels)
            values = point if levels is None else q
            result = torch.zeros((batch.n_rows, *values.shape[1:]), dtype=torch.float64, device=values.device)
            result[out.target_rows] = values
            return result.cpu().numpy()

        return self._average_over_members(X, per_batch)

    def _fitted_state(self) -> dict[str, Any]:
        return {"constant": self.constant_, "target_scale": self.target_scale_, "target_mean": self.target_mean_}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.constant_ = state["constant"]
        self.target_scale_ = state["target_scale"]
        self.target_mean_ = state["target_mean"]


def _quantile_levels(quantiles: Sequence[float]) -> list[float]:
    levels = [float(q) for q in np.atleast_1d(np.asarray(quantiles, dtype=np.float64))]
    if not levels or not all(0.0 < q < 1.0 for q in levels):
        raise ConfigError(f"quantiles must lie strictly between 0 and 1, got {list(quantiles)}")
    return levels
