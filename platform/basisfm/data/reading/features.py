"""Which features a table's in-context members read: a table too wide for one episode gives its most relevant
(mutual information with the target on the training rows) or a random subset per member."""

from __future__ import annotations

import numpy as np

from basisfm.data.collate import PreparedTable
from basisfm.data.reading.categories import ranks_by_target, target_signal
from basisfm.data.reading.settings import InContextSettings, Reading
from basisfm.seeds import derive_seed

# Labelled rows (at most) the relevance of a wide table's features is measured on: mutual information's
# nearest-neighbour estimate costs about a second per 2,000 rows x 50 features at 1 thread.
RELEVANCE_ROWS = 2_000


def table_reading(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                  settings: InContextSettings, readable: np.ndarray | None = None) -> Reading:
    """How every member reads a fitted table, the same for in-context prediction and episodic fine-tuning:
    (the features it may read: a table too wide for one episode, `max_columns` less its targets, gives its
    most relevant with `feature_selection="relevance"` or "validated", which `validated_features` then cuts
    where a model predicts; what "target" coding ranks categories by, None for the other codings). Computed on
    the `labelled` training rows, once per table; `readable`: the first part when already computed for these
    training rows (the relevance ranking takes about a second on a wide table)."""
    if readable is None:
        readable = features
        if settings.feature_selection in ("relevance", "validated"):
            readable = most_relevant(prepared, features, targets, labelled, max(1, settings.max_columns - len(targets)), settings.seed)
    rank_by = target_signal(prepared, targets[0], labelled) if ranks_by_target(settings.categorical_features) else None
    return readable, rank_by


def most_relevant(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                  n: int, seed: int) -> np.ndarray:
    """The `n` of `features` most relevant to the target(s) (`feature_relevance`), in that order; all of
    `features` when they are no more than `n` or too few rows are labelled to tell."""
    if len(features) <= n:
        return features
    relevance = feature_relevance(prepared, features, targets, labelled, seed)
    return features if relevance is None else features[np.argsort(-relevance, kind="stable")[:n]]


def feature_relevance(prepared: PreparedTable, features: np.ndarray, targets: np.ndarray, labelled: np.ndarray,
                      seed: int) -> np.ndarray | None:
    """[F] how much each of `features` tells about the target(s): its mutual information with each target
    (scikit-learn's nearest-neighbour estimate; a classifier's target as classes), summed over the targets,
    on up to `RELEVANCE_ROWS` of the `labelled` training rows. String columns count as discrete (a missing
    cell is a value of its own), a numeric column's missing cells take its median. None when there are too
    few labelled rows to estimate it (under 2 x the estimate's 3 neighbours)."""
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    rng = np.random.default_rng(derive_seed("relevance", seed))
    rows = labelled if len(labelled) <= RELEVANCE_ROWS else np.sort(rng.choice(labelled, RELEVANCE_ROWS, replace=False))
    if len(rows) < 6:
        return None
    x = np.zeros((len(rows), len(features)))
    discrete = (prepared.string_uids[:, features] >= 0).any(axis=0)
    for i, j in enumerate(features):
        if discrete[i]:
            x[:, i] = np.unique(prepared.string_uids[rows, j], return_inverse=True)[1]
        else:
            column = np.where(prepared.missing[rows, j], np.nan, prepared.values[rows, j])
            present = np.isfinite(column)
            x[:, i] = np.where(present, column, np.median(column[present]) if present.any() else 0.0)
    relevance = np.zeros(len(features))
    for t in targets:
        known = ~prepared.missing[rows, t]
        if known.sum() < 6:
            continue
        # A string column whose every value is its own (an id, an address) tells nothing a new row can use, and
        # scikit-learn's estimate fails on it for a numeric target (no value seen twice): it scores 0.
        repeats = np.array([not discrete[i] or len(np.unique(x[known, i])) < known.sum() for i in range(len(features))])
        if not repeats.any():
            continue
        random_state = derive_seed("relevance", seed, int(t)) % 2**32
        if (prepared.string_uids[:, t] >= 0).any():
            relevance[repeats] += mutual_info_classif(x[known][:, repeats], prepared.string_uids[rows[known], t],
                                                      discrete_features=discrete[repeats], random_state=random_state)
        else:
            relevance[repeats] += mutual_info_regression(x[known][:, repeats], prepared.values[rows[known], t],
                                                         discrete_features=discrete[repeats], random_state=random_state)
    return relevance
