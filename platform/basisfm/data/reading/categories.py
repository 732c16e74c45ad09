"""How a member codes categorical features (TabPFN's member preprocessing): embedded strings, or numbers in an
order drawn per member, in the strings' order, or in the order of each value's smoothed mean target (every
column, or with "auto" the columns with enough values for an order to matter)."""

from __future__ import annotations

import numpy as np

from basisfm.corpus.manifest import ColumnKind
from basisfm.data.collate import PreparedTable
from basisfm.data.reading.table import with_numeric_columns

# "target" coding: a categorical value's mean target is shrunk toward the overall mean by this many pseudo-rows
# (LightGBM's cat_smooth default), so a value seen once ranks near the middle, not at its own row's target.
TARGET_ORDER_SMOOTHING = 10.0
# "auto" coding ranks a column by its target when it has at least this many values, and draws a member's order
# for a narrower one: two to four values take few orders, and members that disagree on them average out, while a
# grade or a place with many values read in a random order is a jagged feature the model must untangle from
# 512 context rows (benchmarks/results/categorical_coding.md).
TARGET_ORDER_MIN_LEVELS = 5


def ranks_by_target(coding: str) -> bool:
    """Whether `coding` needs `target_signal` (the order of some categories follows the target)."""
    return coding in ("target", "auto")


def coded_categories(prepared: PreparedTable, features: np.ndarray, coding: str, rng: np.random.Generator,
                     rank_by: np.ndarray | None = None) -> PreparedTable:
    """`prepared` with its categorical `features` coded as `coding` says (`InContextSettings.categorical_features`):
    "text" leaves the embedded strings, "ordinal" numbers them in an order drawn from `rng`, "sorted" in the
    strings' order, "target" in the order of `rank_by` (`target_signal`), "auto" as "target" a column of at least
    `TARGET_ORDER_MIN_LEVELS` values and as "ordinal" a narrower one."""
    if coding == "text":
        return prepared
    if coding == "auto":
        return ordinal_features(prepared, features, rng, rank_by=rank_by, min_ranked_levels=TARGET_ORDER_MIN_LEVELS)
    return ordinal_features(prepared, features, rng if coding == "ordinal" else None, rank_by=rank_by if coding == "target" else None)


def ordinal_features(prepared: PreparedTable, features: np.ndarray, rng: np.random.Generator | None,
                     rank_by: np.ndarray | None = None, min_ranked_levels: int = 0) -> PreparedTable:
    """Categorical feature columns coded as numbers (TabPFN's encoding): a column's m distinct values become
    0..m-1 in an order drawn from `rng` (so members disagree on it), or with `rng=None` in the strings'
    sorted order (which keeps grades "A" < "B" and levels "1-2" < "3-4" in order), or with `rank_by` (one
    number per row, NaN where unknown: `target_signal`) in the order of its smoothed mean over a value's rows
    (how LightGBM and CatBoost order categories; a grade's codes then rise with the target it predicts, a
    relation the model reads as it reads a numeric feature); `min_ranked_levels`: a column with fewer distinct
    values is ordered by `rng` instead. Missing cells stay missing. Text columns (free text, not categories) keep
    their embedded strings."""
    columns = features[prepared.kinds[features] == int(ColumnKind.CATEGORICAL)]
    if len(columns) == 0:
        return prepared
    codes = np.full((prepared.values.shape[0], len(columns)), np.nan)
    for i, j in enumerate(columns):
        uids = prepared.string_uids[:, j]
        present = uids >= 0
        distinct, inverse = np.unique(uids[present], return_inverse=True)
        if rank_by is not None and (len(distinct) >= min_ranked_levels or rng is None):
            key = smoothed_means(inverse, rank_by[present], len(distinct))
            order = np.argsort(np.argsort(key, kind="stable"), kind="stable")
        elif rng is None:
            order = np.argsort(np.argsort([prepared.strings[u] for u in distinct], kind="stable"))
        else:
            order = rng.permutation(len(distinct))
        codes[present, i] = order[inverse]
    return with_numeric_columns(prepared, columns, codes)


def target_signal(prepared: PreparedTable, target: int, labelled: np.ndarray) -> np.ndarray:
    """What "target" coding ranks categories by: per row, the target's value (a numeric target) or whether it
    is the training rows' most common class (a categorical one; for two classes, the class rate); NaN on
    every row outside `labelled` (query rows and unlabelled ones never inform a code)."""
    signal = np.full(prepared.values.shape[0], np.nan)
    uids = prepared.string_uids[labelled, target]
    if (uids >= 0).any():
        classes, counts = np.unique(uids[uids >= 0], return_counts=True)
        signal[labelled] = np.where(uids >= 0, (uids == classes[np.argmax(counts)]).astype(float), np.nan)
    else:
        signal[labelled] = np.where(prepared.missing[labelled, target], np.nan, prepared.values[labelled, target])
    return signal


def smoothed_means(groups: np.ndarray, signal: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the mean of its finite `signal` values shrunk toward their overall mean by
    `TARGET_ORDER_SMOOTHING` pseudo-rows (a group with no known value gets the overall mean)."""
    known = np.isfinite(signal)
    prior = float(signal[known].mean()) if known.any() else 0.0
    sums = np.bincount(groups[known], weights=signal[known], minlength=n_groups)
    counts = np.bincount(groups[known], minlength=n_groups)
    return (sums + TARGET_ORDER_SMOOTHING * prior) / (counts + TARGET_ORDER_SMOOTHING)
