"""Held-out synthetic tasks as a validation set: does the model read a table's labelled rows?

`val_prior_ratio` is the model's squared error on the numeric query targets (in target standard deviations) over
that of the context-mean predictor (the best predictor that reads only the context's targets), median over the
held-out tasks; below 1 the model uses the features. Categorical targets give `val_prior_accuracy`, pooled over
every target. The held-out tasks come from the run's own prior config under a seed no training run draws from,
at the curriculum's step 0, so one stage's tasks are the same at every check and in `benchmarks.icl_heldout`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from basisfm.config import PriorConfig
from basisfm.data.batch import TableBatch

HELD_OUT_SEED = 999_983  # never a training seed: the training streams derive theirs from priors.seed


def held_out_prior_tasks(priors: PriorConfig, n_tasks: int, *, text_dim: int, max_cells: int | None,
                         seed: int = HELD_OUT_SEED) -> list[TableBatch]:
    """`n_tasks` episodes of the prior `priors` describes (on CPU), the same for the same arguments."""
    from basisfm.priors import PriorSampler

    sampler = PriorSampler(priors, seed=seed, text_dim=text_dim, max_cells=max_cells, id_prefix="prior/held-out")
    return sampler.sample(n_tasks)


@torch.no_grad()
def held_out_ratio(objective, episodes: list[TableBatch], device: torch.device | str = "cpu",
                   prefix: str = "val_prior_") -> dict[str, float]:
    """{prefix+"ratio": median over tasks of model z-MSE / context-mean z-MSE, prefix+"accuracy": categorical
    accuracy pooled over targets}. NaN where no task has such targets. `objective` is the loss module or a
    DeepSpeed engine around it (eval mode for the pass, restored after)."""
    was_training = objective.training
    objective.eval()
    ratios, correct, counted = [], 0.0, 0
    try:
        for episode in episodes:
            metrics = objective(episode.to(device)).metrics
            if metrics.get("numeric_mean_z_mse", 0.0) > 0:
                ratios.append(metrics["numeric_z_mse"] / metrics["numeric_mean_z_mse"])
            if "categorical_accuracy" in metrics:
                correct += metrics["categorical_accuracy"] * metrics["categorical_targets"]
                counted += int(metrics["categorical_targets"])
    finally:
        objective.train(was_training)
    return {f"{prefix}ratio": float(np.median(ratios)) if ratios else math.nan,
            f"{prefix}accuracy": correct / counted if counted else math.nan}
