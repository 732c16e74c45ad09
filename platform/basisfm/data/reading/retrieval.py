"""Retrieval (TabDPT-style): the training rows nearest to a chunk of queries as their context, the queries grouped
into chunks of neighbours so that a chunk's context is near every query in it."""

from __future__ import annotations

import math

import numpy as np

from basisfm.data.collate import PreparedTable


def _split_features(prepared: PreparedTable, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(numeric-like features, string features) of `features`: a column holding any string is compared by string."""
    is_string = (prepared.string_uids[:, features] >= 0).any(axis=0)
    return features[~is_string], features[is_string]


def standardised(prepared: PreparedTable, numeric: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows), len(numeric)] the rows' numeric features in standard deviations from the column mean (a missing
    cell counts as the mean): the space retrieval measures nearness in."""
    z = (prepared.values[np.ix_(rows, numeric)] - prepared.mean[numeric]) / prepared.std[numeric]
    return np.where(prepared.missing[np.ix_(rows, numeric)], 0.0, z)


def nearest_context(prepared: PreparedTable, features: np.ndarray, pool: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
    """[<= size] rows of `pool` nearest to the `queries` (positions in `prepared`), by squared distance of
    standardised numeric-like features (`standardised`) plus 1 per differing string: every query's nearest row,
    then every query's second nearest, and so on until `size` distinct rows are chosen (so each query reads as
    many of its own neighbours as the chunk allows: ceil(size / Q) at least, more where the queries share them)."""
    numeric, strings = _split_features(prepared, features)
    zp, zq = standardised(prepared, numeric, pool), standardised(prepared, numeric, queries)
    # |q - p|^2 = |q|^2 + |p|^2 - 2 q.p: one matrix product instead of a [Q, P, F] difference tensor
    distance = (zq ** 2).sum(1)[:, None] + (zp ** 2).sum(1)[None, :] - 2.0 * zq @ zp.T  # [Q, P]
    for j in strings:
        distance += prepared.string_uids[queries, j][:, None] != prepared.string_uids[pool, j][None, :]
    if size >= len(pool):
        return np.sort(pool)
    nearest = np.argpartition(distance, size - 1, axis=1)[:, :size]  # [Q, size] each query's `size` nearest, unordered
    ranked = np.take_along_axis(nearest, np.argsort(np.take_along_axis(distance, nearest, axis=1), axis=1, kind="stable"), axis=1)
    by_rank = ranked.T.ravel()  # every query's nearest, then every query's second nearest, ...
    _, first = np.unique(by_rank, return_index=True)
    chosen = by_rank[np.sort(first)][:size]
    return np.sort(pool[chosen])


def neighbouring_chunks(prepared: PreparedTable, features: np.ndarray, queries: np.ndarray, chunk: int) -> list[np.ndarray]:
    """The `queries` (positions in `prepared`) cut into ceil(Q / chunk) chunks of at most `chunk` rows that lie near
    each other: a group is ordered along the standardised numeric feature it spreads most along and cut where
    each side holds whole chunks' worth of queries, until a group is one chunk (a k-d tree's leaves). Each chunk's positions in `queries`, sorted.

    Why: retrieval gives a chunk of queries one context, the rows nearest to any of them. Chunks of arbitrary
    queries get ceil(max_context / chunk) neighbours each (4 of 512 rows for 128 queries); chunks of neighbours
    share most of theirs, so each query reads many more rows near it, at the same number of episodes."""
    n_chunks = max(1, math.ceil(len(queries) / chunk))
    numeric, _ = _split_features(prepared, features)
    z = standardised(prepared, numeric, queries) if len(numeric) else np.zeros((len(queries), 0))
    leaves: list[np.ndarray] = []

    def split(members: np.ndarray, parts: int) -> None:
        if parts <= 1 or z.shape[1] == 0:  # (rounding can leave a group a row over: cut it in two)
            leaves.extend(np.array_split(members, max(parts, math.ceil(len(members) / chunk))))
            return
        axis = int(np.argmax(z[members].var(axis=0)))
        order = members[np.argsort(z[members, axis], kind="stable")]
        left_parts = parts // 2
        cut = round(len(members) * left_parts / parts)
        split(order[:cut], left_parts)
        split(order[cut:], parts - left_parts)

    split(np.arange(len(queries)), n_chunks)
    return [np.sort(leaf) for leaf in leaves if len(leaf)]
