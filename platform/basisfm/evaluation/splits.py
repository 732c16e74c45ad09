"""Train/test splits of one suite task: seeded, identical for every model that runs on the task.

Seed s of a task permutes its rows with `numpy.random.default_rng(s)`; the first `test_fraction` of the
permutation is the test set, the rest the train set, each then capped at the protocol's row limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from basisfm.errors import ConfigError, TableError


@dataclass(frozen=True)
class SplitProtocol:
    """How a suite splits its tables (the `protocol:` block of a suite file)."""

    splits: int = 3
    test_fraction: float = 0.2
    max_train_rows: int = 10_000
    max_test_rows: int = 5_000
    metric: str = "r2"


@dataclass(frozen=True)
class Split:
    seed: int
    train_rows: np.ndarray  # positional row indices into the task frame
    test_rows: np.ndarray


def rows_with_usable_target(frame: pd.DataFrame, target: str, table: str) -> pd.DataFrame:
    """The frame without rows whose target is missing or non-finite: no model can be scored on them."""
    if target not in frame.columns:
        raise TableError(f"has no target column {target!r}; columns are {list(frame.columns)[:20]}", table=table)
    y = frame[target]
    usable = y.notna()
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        usable &= np.isfinite(y.astype("float64").fillna(np.nan))
    kept = frame.loc[usable].reset_index(drop=True)
    if len(kept) < 10:
        raise TableError(
            f"only {len(kept)} rows have a usable target value (of {len(frame)}); a task needs at least 10",
            table=table, column=target,
        )
    return kept


def make_split(n_rows: int, seed: int, protocol: SplitProtocol) -> Split:
    """Split `n_rows` rows for seed `seed`; at least one row lands on each side."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_rows)
    n_test = min(max(1, math.ceil(protocol.test_fraction * n_rows)), n_rows - 1)
    test_rows = np.sort(order[:n_test][: protocol.max_test_rows])
    train_rows = np.sort(order[n_test:][: protocol.max_train_rows])
    return Split(seed=seed, train_rows=train_rows, test_rows=test_rows)


def split_seeds(protocol: SplitProtocol, selected: list[int] | None = None) -> list[int]:
    """Seeds 0..splits-1, or the selected subset of them (an unknown seed is a user error)."""
    seeds = list(range(protocol.splits))
    if not selected:
        return seeds
    unknown = [s for s in selected if s not in seeds]
    if unknown:
        raise ConfigError(f"split seeds {unknown} are not in this suite's protocol; valid seeds: {seeds}")
    return sorted(set(selected))
