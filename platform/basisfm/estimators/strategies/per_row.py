"""Per-row prediction (a per-row `basis` checkpoint): each row is predicted from its own cells, the training rows
kept by no one. `base-ft` / `peft` fine-tune each member on batches of labelled rows first (validated on held-out
rows, `strategy.validation_split`); `inference` predicts with the checkpoint as it is.

Settings it reads: the fine-tuning ones (`max_steps`, `learning_rate`, `weight_decay`, `patience`, `validate_every`,
`validation_fraction`, `lora_*`, `time_budget_s`, `n_estimators`: None is one member), `token_budget` and
`max_columns` (how rows are batched, a too-wide table in column subsets drawn per member), `random_state`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch

from basisfm.data.batch import TableBatch
from basisfm.estimators.finetune import FineTuneHistory, default_steps, fine_tune, resolve_device
from basisfm.estimators.strategies.strategy import Strategy, fine_tune_settings, fit_each_member, validation_split
from basisfm.seeds import derive_seed


class PerRowFineTuning(Strategy):
    name = "per-row fine-tuning"
    keeps_context = False

    def __init__(self, fine_tunes: bool = True):
        self.fine_tunes = fine_tunes  # False: `inference` with a per-row checkpoint, no gradient step

    def __repr__(self) -> str:
        return f"PerRowFineTuning(fine_tunes={self.fine_tunes})"

    # ------------------------------------------------------------------ fit

    def fit_members(self, estimator, start, features, target):
        if not self.fine_tunes:
            return ([start.to(resolve_device(estimator.device)).eval()],
                    [FineTuneHistory(stopped_because="strategy='inference': no gradient step")])
        return fit_each_member(estimator, start, lambda model, member: self._fit_member(estimator, model, features, target, member))

    def _fit_member(self, estimator, model, features, target, member: int):
        """One member: its own seeded train/validation split and column subsets, fine-tuned from `model`."""
        seed = estimator._member_seed(member)
        train_rows, val_rows = validation_split(len(features), estimator.validation_fraction, seed)
        data_config = estimator._data_config(seed)
        embedder = estimator._embedder()
        preprocessor = estimator.preprocessor_

        def arrow(rows: np.ndarray):
            return preprocessor.to_arrow(features.iloc[rows].reset_index(drop=True), target.iloc[rows].reset_index(drop=True))

        train_table = arrow(train_rows)
        val_batches = labelled_batches(estimator, arrow(val_rows), data_config, embedder, seed=seed)
        first = labelled_batches(estimator, train_table, data_config, embedder, seed=derive_seed(seed, 1))
        settings = fine_tune_settings(estimator, default_steps(len(train_rows), first[0].n_rows if first else 1), member)
        device = torch.device(settings.device)
        val_batches = [b.to(device) for b in val_batches]

        def train_batches(epoch: int) -> list[TableBatch]:
            if epoch == 1:
                return first
            return labelled_batches(estimator, train_table, data_config, embedder, seed=derive_seed(seed, epoch))

        return fine_tune(model, train_batches, lambda m: estimator._validation_loss(m, val_batches), estimator._loss, settings)

    # ------------------------------------------------------------------ predict

    def predict_numeric(self, estimator, X, levels):
        from basisfm.model.decoding import decode_numeric

        slot = {name: j for j, name in enumerate(estimator.preprocessor_.target_names)}

        def per_batch(model, batch: TableBatch, col: int) -> np.ndarray:
            out = model(batch)
            point, q = decode_numeric(model, out, batch, levels)
            values = point[:, None] if levels is None else q
            cols = torch.as_tensor([slot[batch.column_names[c]] for c in out.target_columns.tolist()], dtype=torch.long,
                                   device=values.device)
            result = torch.zeros((batch.n_rows, len(slot), values.shape[1]), dtype=torch.float64, device=values.device)
            result[out.target_rows, cols] = values.double()
            return result.cpu().numpy()

        return average_over_members(estimator, X, per_batch)

    def predict_proba(self, estimator, X):
        labels = estimator._label_embeddings()

        def per_batch(model, batch: TableBatch, col: int) -> np.ndarray:
            scores = model.predict_category_scores(batch, col, labels.to(batch.values.device))
            return torch.softmax(scores.double(), dim=-1).cpu().numpy()

        return average_over_members(estimator, X, per_batch)


def labelled_batches(estimator, table, data_config, embedder, seed: int) -> list[TableBatch]:
    """Batches of labelled rows (targets hidden and scored), each scaled by the training rows' statistics."""
    from basisfm.data.collate import table_to_batches

    record = estimator.preprocessor_.record()
    batches = table_to_batches(table, record, data_config, embedder, seed=seed, target_columns=record.candidate_targets)
    return [estimator._with_fitted_scale(b) for b in batches]


def prediction_batches(estimator, X: Any, member: int) -> tuple[list[tuple[TableBatch, int]], int]:
    """Batches over X with the target(s) hidden in every row, each with the (first) target's column index;
    rows are found again through `batch.row_index`. Wide tables give several batches per row (column
    subsets, drawn by the member's seed)."""
    from basisfm.data.collate import table_to_batches

    features = estimator._features(X)
    record = estimator.preprocessor_.record()
    table = estimator.preprocessor_.to_arrow(features, None)
    seed = estimator._member_seed(member)
    batches = table_to_batches(table, record, estimator._data_config(seed), estimator._embedder(), seed=seed,
                               target_columns=record.candidate_targets)
    out = []
    for batch in batches:
        cols = [batch.column_names.index(name) for name in record.candidate_targets]
        mask = torch.zeros_like(batch.target_mask)
        mask[:, cols] = True
        # The targets are unknown here (null columns): mark them as the cells to predict, not as missing.
        missing = batch.missing.clone()
        missing[:, cols] = False
        out.append((estimator._with_fitted_scale(replace(batch, target_mask=mask, missing=missing)), cols[0]))
    return out, len(features)


def average_over_members(estimator, X: Any, per_batch: Callable) -> np.ndarray:
    """Mean over members and column subsets of `per_batch(model, batch, col) -> [R, ...] array`, by row."""
    total, count = None, None
    for member, model in enumerate(estimator.members_):
        device = next(model.parameters()).device
        batches, n_rows = prediction_batches(estimator, X, member)
        with torch.no_grad():
            for batch, col in batches:
                values = per_batch(model, batch.to(device), col)
                if total is None:
                    total = np.zeros((n_rows, *values.shape[1:]))
                    count = np.zeros(n_rows)
                rows = batch.row_index.cpu().numpy()
                np.add.at(total, rows, values)
                np.add.at(count, rows, 1)
    if count is None or (count == 0).any():
        raise RuntimeError("some rows were not predicted: basisfm.data.collate lost rows of the prediction table")
    return total / count.reshape(-1, *([1] * (total.ndim - 1)))
