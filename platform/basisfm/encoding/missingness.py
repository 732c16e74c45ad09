"""Missing cells made on purpose: remove a share of a frame's cells completely at random (MCAR), depending on
another column's value (MAR) or on the cell's own value (MNAR), seeded, to measure missing-value handling.

    holey = remove_cells(X_train, rate=0.3, mechanism="mnar", seed=0)

Each chosen column loses about `rate` of its cells that were present (so `rate` is also the share of the frame's
present cells removed). Under MAR and MNAR a cell's chance of removal is a logistic function of a rank:
`MISSINGNESS_SLOPE * (rank - 0.5)`, shifted per column so that the chances average `rate`; MAR ranks the cell's
row by a *driver* column (another column, drawn per column from the seed; its own cells may be removed too, so
the driver's value is the one before removal), MNAR by the cell's own value: high values go missing more often.
A categorical column ranks its values by their text, which is arbitrary but fixed.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import pandas as pd

from basisfm.errors import ConfigError

Mechanism = Literal["mcar", "mar", "mnar"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)
# logit slope over a rank in [0, 1]: the top row is e^5 ~ 150 times likelier (in odds) to lose a cell than the bottom
MISSINGNESS_SLOPE = 5.0


def remove_cells(frame: pd.DataFrame, rate: float, mechanism: str, seed: int,
                 columns: list[str] | None = None) -> pd.DataFrame:
    """A copy of `frame` with about `rate` of the present cells of `columns` (default: all) set missing
    (NaN; None in object columns) by `mechanism` ("mcar", "mar" or "mnar"), drawn from `seed`."""
    if mechanism not in MECHANISMS:
        raise ConfigError(f"missingness mechanism {mechanism!r} is not one of {list(MECHANISMS)}")
    if not (isinstance(rate, (int, float)) and 0.0 <= float(rate) < 1.0):
        raise ConfigError(f"missingness rate {rate!r} must be a number in [0, 1)")
    names = list(frame.columns) if columns is None else list(columns)
    unknown = [c for c in names if c not in frame.columns]
    if unknown:
        raise ConfigError(f"remove_cells: columns {unknown} are not in the frame (its columns: {list(frame.columns)})")
    out = frame.copy()
    if rate == 0.0 or not names:
        return out
    rng = np.random.default_rng(seed)
    ranks = {name: _rank(frame[name]) for name in frame.columns}
    others = list(frame.columns)
    for name in names:
        present = frame[name].notna().to_numpy()
        if mechanism == "mcar":
            chance = np.full(len(frame), float(rate))
        else:
            if mechanism == "mar" and len(others) > 1:
                driver = rng.choice([c for c in others if c != name])
                score = ranks[driver]
            else:  # MNAR, or MAR in a one-column frame (nothing else to depend on: its own value, MNAR)
                score = ranks[name]
            chance = _calibrated_chance(MISSINGNESS_SLOPE * (score - 0.5), present, float(rate))
        removed = present & (rng.random(len(frame)) < chance)
        if removed.any():
            column = out[name]
            if column.dtype.kind in "iub":  # integers and booleans cannot hold NaN: widen as pandas reads a hole
                column = column.astype("float64") if column.dtype.kind != "b" else column.astype(object)
            column = column.copy()
            column[removed] = None if column.dtype == object else np.nan
            out[name] = column
    return out


def _rank(column: pd.Series) -> np.ndarray:
    """Each row's rank in [0, 1] by the column's value (categoricals by their text); missing cells rank 0.5."""
    values = column if column.dtype.kind in "iufb" else column.map(lambda v: None if pd.isna(v) else str(v))
    ranked = values.rank(method="average", pct=True).to_numpy(dtype=np.float64)
    return np.where(np.isfinite(ranked), ranked, 0.5)


def _calibrated_chance(logit: np.ndarray, present: np.ndarray, rate: float) -> np.ndarray:
    """sigmoid(logit + shift), the shift found by bisection so the present cells' chances average `rate`."""
    if not present.any():
        return np.zeros_like(logit)
    low, high = -60.0, 60.0
    for _ in range(80):
        shift = 0.5 * (low + high)
        if (1.0 / (1.0 + np.exp(-(logit[present] + shift)))).mean() < rate:
            low = shift
        else:
            high = shift
    return 1.0 / (1.0 + np.exp(-(logit + 0.5 * (low + high))))
