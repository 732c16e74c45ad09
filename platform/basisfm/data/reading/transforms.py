"""A member's monotone transform of numeric features or targets ("power": Yeo-Johnson, "quantile": to a normal),
fitted on the training rows, and its inverse for predicted target quantiles."""

from __future__ import annotations

import numpy as np

from basisfm.data.collate import PreparedTable
from basisfm.data.reading.table import with_numeric_columns

# Quantile levels whose mapped-back values average to a transformed member's point prediction.
TRANSFORM_LEVELS = tuple((k + 0.5) / 64 for k in range(64))


class NormalScores:
    """The "quantile" transform: a value's quantile u among the training values, squeezed into
    [0.5/n, 1 - 0.5/n], becomes the standard normal's quantile of it (sklearn's normal output would send
    the training minimum and maximum to +-5.2, outliers the model never saw in pretraining)."""

    def fit(self, y: np.ndarray) -> "NormalScores":
        from sklearn.preprocessing import QuantileTransformer

        self.uniform = QuantileTransformer(n_quantiles=max(2, min(1000, len(y))), output_distribution="uniform").fit(y)
        self.edge = 0.5 / len(y)
        return self

    def transform(self, y: np.ndarray) -> np.ndarray:
        from scipy.stats import norm

        return norm.ppf(self.edge + (1 - 2 * self.edge) * self.uniform.transform(y))

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        from scipy.stats import norm

        return self.uniform.inverse_transform(np.clip((norm.cdf(z) - self.edge) / (1 - 2 * self.edge), 0.0, 1.0))


class ColumnTransform:
    """A member's monotone transform of numeric `columns` ("power": Yeo-Johnson, "quantile": `NormalScores`),
    fitted per column on the training rows `fit_rows`: `apply` returns the table with the columns
    transformed, `inverse` maps predicted target quantiles back. Quantiles survive a monotone map, means
    do not: a point prediction is the mean of the mapped-back `TRANSFORM_LEVELS` quantiles. A column the
    transform cannot fit (no training value, or a constant Yeo-Johnson cannot scale) stays as it is."""

    def __init__(self, kind: str, prepared: PreparedTable, columns: np.ndarray, fit_rows: np.ndarray):
        from sklearn.preprocessing import PowerTransformer

        self.kind, self.columns = kind, columns
        self.fitted, self.bounds = [], []
        for c in columns:
            y = prepared.values[fit_rows, c][~prepared.missing[fit_rows, c]].reshape(-1, 1)
            transformer, bounds = None, None
            if len(y):
                if kind == "power":
                    transformer = PowerTransformer(method="yeo-johnson", standardize=True)
                else:
                    transformer = NormalScores()
                with np.errstate(all="ignore"):
                    z = transformer.fit(y).transform(y)[:, 0]
                if np.isfinite(z).all():
                    span = float(np.ptp(z))
                    # Predictions far outside the training range would map back through the transform's asymptote.
                    bounds = (float(z.min()) - 0.25 * span, float(z.max()) + 0.25 * span, float(y.min()), float(y.max()))
                else:
                    transformer = None
            self.fitted.append(transformer)
            self.bounds.append(bounds)

    def apply(self, prepared: PreparedTable) -> PreparedTable:
        values = np.where(prepared.missing[:, self.columns], np.nan, prepared.values[:, self.columns])
        for i, transformer in enumerate(self.fitted):
            present = np.isfinite(values[:, i])
            if transformer is not None and present.any():
                with np.errstate(all="ignore"):
                    values[present, i] = transformer.transform(values[present, i].reshape(-1, 1))[:, 0]
        return with_numeric_columns(prepared, self.columns, values)

    def inverse(self, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
        """`values` [N, ...] in the transformed space of column `slot[n]` -> the column's own units."""
        out = np.asarray(values, dtype=np.float64).copy()
        for i, transformer in enumerate(self.fitted):
            rows = slot == i
            if transformer is None or not rows.any():
                continue
            low, high, y_min, y_max = self.bounds[i]
            z = np.clip(values[rows], low, high)
            with np.errstate(all="ignore"):
                y = transformer.inverse_transform(z.reshape(-1, 1)).reshape(z.shape)
            out[rows] = np.nan_to_num(y, nan=(y_min + y_max) / 2, posinf=y_max, neginf=y_min)
        return out
