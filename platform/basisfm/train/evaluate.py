"""Validation: the masked-cell objective on held-out tables — total and per-task loss, and R² of decoded numbers.

The same scoring serves periodic validation inside training and `jobs.promote`'s comparison of registered
versions (`ValidationSuite`), so a champion is judged exactly as training reported it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from basisfm.config import RunConfig
from basisfm.data.batch import TableBatch


class NumericR2:
    """R² per (table, column) of decoded numeric predictions, combined as the median over columns.

    Per column, because columns live on unrelated scales: pooling raw values would let the column with the
    largest numbers decide. The median, because R² is unbounded below: one column whose few masked cells
    happen to be nearly constant scores -1e4 and would swamp any mean (the suite's score is a median too).
    Columns with fewer than 2 scored cells or no variance are left out.
    """

    def __init__(self) -> None:
        # (table, column) -> [n, sum y, sum y^2, sum (y - y_hat)^2]
        self.sums: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(4))

    def update(self, table_id: str, columns: list[str], predicted: torch.Tensor, true: torch.Tensor) -> None:
        pred = predicted.detach().double().cpu().numpy()
        truth = true.detach().double().cpu().numpy()
        keep = np.isfinite(pred) & np.isfinite(truth)
        for column, p, t in zip(np.asarray(columns, dtype=object)[keep], pred[keep], truth[keep]):
            self.sums[(table_id, str(column))] += (1.0, t, t * t, (t - p) ** 2)

    def per_column(self) -> dict[tuple[str, str], float]:
        out = {}
        for key, (n, s, ss, sse) in self.sums.items():
            total = ss - s * s / n if n else 0.0
            if n >= 2 and total > 1e-12 * max(1.0, ss):
                out[key] = 1.0 - sse / total
        return out

    def value(self) -> float:
        scores = self.per_column()
        if not scores:
            return float("nan")
        return float(np.median(np.array(list(scores.values()))))


@torch.no_grad()
def evaluate_batches(objective: torch.nn.Module, batches: Iterable[TableBatch], device: torch.device | str = "cpu",
                     prefix: str = "val_") -> dict[str, float]:
    """Mean loss and per-task metrics over `batches` (equal weight per batch) and the numeric R².

    `objective` is the loss module (or a DeepSpeed engine wrapping it); it is put in eval mode for the
    pass and restored after.
    """
    was_training = objective.training
    objective.eval()
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    r2 = NumericR2()
    n_batches = 0
    cells = 0
    try:
        for batch in batches:
            result = objective(batch.to(device))
            n_batches += 1
            cells += batch.n_cells
            for name, value in {"loss": float(result.loss), **result.metrics}.items():
                if math.isfinite(float(value)):
                    totals[name] += float(value)
                    counts[name] += 1
            if result.numeric_pred.numel():
                r2.update(batch.table_id, list(result.numeric_column), result.numeric_pred, result.numeric_true)
    finally:
        objective.train(was_training)
    out = {f"{prefix}{name}": totals[name] / counts[name] for name in totals}
    out[f"{prefix}r2"] = r2.value()
    out[f"{prefix}batches"] = float(n_batches)
    out[f"{prefix}cells"] = float(cells)
    return out


class ValidationSuite:
    """Scores a consolidated checkpoint on the corpus's held-out validation tables (`split_tables`).

    Callable as `suite(checkpoint_dir) -> {"val_loss": ..., "val_r2": ..., ...}`: what
    `basisfm.tracking.promote` expects. The validation batches (and their masks) are fixed by the data
    seed, so every version is scored on the same cells.
    """

    def __init__(self, config: RunConfig, max_batches: int | None = None):
        self.config = config
        self.max_batches = max_batches if max_batches is not None else config.train.validation_batches
        self._batches: list[TableBatch] | None = None

    def batches(self) -> list[TableBatch]:
        if self._batches is None:
            self._batches = load_validation_batches(self.config, self.max_batches)
        return self._batches

    def __call__(self, checkpoint_dir: str | Path) -> dict[str, float]:
        from basisfm.losses import build_objective
        from basisfm.model.checkpoint import load_pretrained

        torch.manual_seed(self.config.train.seed)
        model = load_pretrained(checkpoint_dir)
        objective = build_objective(model, model.config, self.config.loss)
        return evaluate_batches(objective, self.batches())


def load_validation_batches(config: RunConfig, max_batches: int) -> list[TableBatch]:
    """The first `max_batches` validation batches, collated in this process (no Ray needed): the plan
    `build_dataset(split="validation")` follows, so these are the cells training validated on."""
    from basisfm.data.pipeline import collate_record, plan_epochs
    from basisfm.encoding.text import StringEmbedder

    embedder = StringEmbedder(Path(config.data.embedding_cache_dir), text_top_k=config.data.text_top_k)
    batches: list[TableBatch] = []
    for record, seed in plan_epochs(config.corpus.out_dir, config.data, "validation"):
        batches.extend(collate_record(config.corpus.out_dir, record, config.data, embedder, seed=seed))
        if len(batches) >= max_batches:
            break
    return batches[:max_batches]
