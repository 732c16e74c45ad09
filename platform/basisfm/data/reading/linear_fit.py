"""A linear model's prediction of each numeric target as one more feature every member reads (stacking).

An in-context model does least squares across its layers from a few hundred context rows and falls short of the
closed form: on Carseats, whose sales add up from price, advertising and a shelf grade, ridge regression scores
0.85 test R² where the shipped checkpoint in context scores 0.75. Given ridge's prediction as a column, the model
reads that column and corrects it where the table is not linear (benchmarks/results/linear_feature.md).

The column of a training row is cross-fitted (`FOLDS` folds: its value never saw its own target), so the column
means on the context rows what it means on the query rows, whose value comes from a ridge fitted on every
labelled training row.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from basisfm.corpus.manifest import ColumnKind, ColumnRecord
from basisfm.data.collate import Embedder
from basisfm.data.reading.table import InContextTable, with_numeric_columns
from basisfm.encoding.name_embedding import embed_column_names
from basisfm.seeds import derive_seed

FOLDS = 5
MAX_LEVELS = 30  # one-hot columns of a categorical feature in the ridge's design: its commonest training values
ALPHAS = np.logspace(-3, 3, 13)  # ridge penalties `RidgeCV` chooses from (generalised cross-validation)


def linear_fit_name(target: str) -> str:
    return f"linear fit of {target}"


def design(ctx: InContextTable, training: np.ndarray) -> np.ndarray:
    """[N, P] the ridge's inputs for every row of `ctx.prepared`, from its features: a numeric one as it is, a
    missing cell at the `training` rows' mean; a categorical or text one as indicators of its `MAX_LEVELS`
    commonest values on the `training` rows; every column standardised by the `training` rows, constant ones
    dropped."""
    prepared = ctx.prepared
    blocks = []
    for j in ctx.features:
        uids = prepared.string_uids[:, j]
        if (uids >= 0).any() or ColumnKind(int(prepared.kinds[j])).is_string:
            seen, counts = np.unique(uids[training][uids[training] >= 0], return_counts=True)
            levels = seen[np.argsort(-counts, kind="stable")[:MAX_LEVELS]]
            blocks.append((uids[:, None] == levels[None, :]).astype(np.float64))
        else:
            present = ~prepared.missing[:, j]
            known = present[training]
            fill = prepared.values[training, j][known].mean() if known.any() else 0.0
            blocks.append(np.where(present, prepared.values[:, j], fill)[:, None])
    x = np.hstack(blocks) if blocks else np.zeros((prepared.values.shape[0], 0))
    mean, std = x[training].mean(axis=0), x[training].std(axis=0)
    keep = std > 1e-12
    return (x[:, keep] - mean[keep]) / std[keep]


def ridge_column(x: np.ndarray, y: np.ndarray, labelled: np.ndarray, seed: int) -> np.ndarray:
    """[N] ridge's prediction of `y` (known on the `labelled` rows) for every row of `x`: cross-fitted over
    `FOLDS` folds on the labelled rows, fitted on all of them for the rest. NaN when too few rows to fit."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    out = np.full(x.shape[0], np.nan)
    if len(labelled) < 2 * FOLDS or x.shape[1] == 0:
        return out
    ridge = RidgeCV(alphas=ALPHAS)
    out[labelled] = cross_val_predict(ridge, x[labelled], y[labelled], cv=KFold(FOLDS, shuffle=True, random_state=seed))
    others = np.setdiff1d(np.arange(x.shape[0]), labelled)
    if len(others):
        out[others] = ridge.fit(x[labelled], y[labelled]).predict(x[others])
    return out


def with_linear_fit(ctx: InContextTable, embedder: Embedder, seed: int) -> InContextTable:
    """`ctx` with one more numeric column per numeric target, `linear_fit_name(target)`: ridge's prediction of it
    from the features (`design`, `ridge_column`), appended after the table's columns and listed in `always_read`
    (every member reads it beside the features it chooses; feature selection never drops it). Unchanged when
    the table has no numeric target or too few labelled rows."""
    prepared = ctx.prepared
    training = np.arange(ctx.n_train)
    columns, names = [], []
    x = None
    for t in ctx.targets:
        if ColumnKind(int(prepared.kinds[t])).is_string:
            continue
        labelled = training[~prepared.missing[training, t]]
        if x is None:
            x = design(ctx, training)
        fit = ridge_column(x, prepared.values[:, t], labelled, derive_seed("linear_fit", seed, int(t)) % 2**32)
        if np.isfinite(fit).any():
            columns.append(fit)
            names.append(linear_fit_name(ctx.record.columns[t].name))
    if not columns:
        return ctx
    fits = np.stack(columns, axis=1)  # [N, K]
    n_rows, n_columns = prepared.values.shape
    k = fits.shape[1]
    # room for the new columns (empty, numeric), then `with_numeric_columns` fills them and their scale and moments
    room = replace(
        prepared,
        values=np.hstack([prepared.values, np.zeros((n_rows, k))]),
        missing=np.hstack([prepared.missing, np.ones((n_rows, k), dtype=bool)]),
        string_uids=np.hstack([prepared.string_uids, np.full((n_rows, k), -1, dtype=prepared.string_uids.dtype)]),
        name_embeddings=np.vstack([prepared.name_embeddings, embed_column_names(embedder, names)]).astype(np.float32),
        kinds=np.concatenate([prepared.kinds, np.full(k, int(ColumnKind.NUMERIC), dtype=prepared.kinds.dtype)]),
        abs_max=np.concatenate([prepared.abs_max, np.zeros(k)]),
        min_nonzero=np.concatenate([prepared.min_nonzero, np.zeros(k)]),
        mean=np.concatenate([prepared.mean, np.zeros(k)]),
        std=np.concatenate([prepared.std, np.ones(k)]),
    )
    added = np.arange(n_columns, n_columns + k, dtype=np.int64)
    extended = with_numeric_columns(room, added, fits)
    record = replace(ctx.record, columns=[*ctx.record.columns, *(ColumnRecord(name=n, kind="numeric") for n in names)])
    return replace(ctx, prepared=extended, record=record, always_read=np.concatenate([ctx.always_read, added]))
