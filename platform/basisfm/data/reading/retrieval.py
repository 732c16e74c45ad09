"""Retrieval (TabDPT-style): the training rows nearest to a chunk of queries as their context."""

from __future__ import annotations

import math

import numpy as np

from basisfm.data.collate import PreparedTable


def nearest_context(prepared: PreparedTable, features: np.ndarray, pool: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
    """[<= size] rows of `pool` nearest to the `queries` (positions in `prepared`): each query's
    ceil(size / Q) nearest first, by squared distance of standardised numeric-like features (a missing
    cell counts as the mean) plus 1 per differing string; filled up to `size` by overall nearness."""
    is_string = (prepared.string_uids[:, features] >= 0).any(axis=0)
    numeric, strings = features[~is_string], features[is_string]

    def standardised(rows: np.ndarray) -> np.ndarray:
        z = (prepared.values[np.ix_(rows, numeric)] - prepared.mean[numeric]) / prepared.std[numeric]
        return np.where(prepared.missing[np.ix_(rows, numeric)], 0.0, z)

    zp, zq = standardised(pool), standardised(queries)
    distance = ((zq[:, None, :] - zp[None, :, :]) ** 2).sum(-1)  # [Q, P]
    if len(strings):
        distance += (prepared.string_uids[np.ix_(queries, strings)][:, None, :] != prepared.string_uids[np.ix_(pool, strings)][None, :, :]).sum(-1)
    per_query = math.ceil(size / len(queries))
    chosen = np.unique(np.argsort(distance, axis=1, kind="stable")[:, :per_query])
    if len(chosen) > size:  # keep the overall nearest
        chosen = chosen[np.argsort(distance[:, chosen].min(axis=0), kind="stable")[:size]]
    return np.sort(pool[chosen])
