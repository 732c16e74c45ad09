"""One object per way of predicting, chosen once at `fit` from `strategy` and the starting model (`choose_strategy`):

  - `InContextPrediction` (`inference`, an in-context checkpoint): no gradient step, the training rows as context;
  - `EpisodicFineTuning` (`base-ft` / `peft`, an in-context checkpoint): members fine-tuned on episodes of the
    table, then predicting in context;
  - `PerRowFineTuning` (a per-row checkpoint): members fine-tuned on row batches (none with `inference`), each
    row predicted from its own cells.

Each lives in its own module with the settings it reads; the estimators (`BasisRegressor`, `BasisClassifier`) are
the scikit-learn face and the task (targets, losses), and call `strategy_.fit_members` / `strategy_.predict_*`.
"""

from __future__ import annotations

from basisfm.estimators.strategies.episodic import EpisodicFineTuning
from basisfm.estimators.strategies.in_context import InContextPrediction
from basisfm.estimators.strategies.per_row import PerRowFineTuning
from basisfm.estimators.strategies.strategy import Strategy
from basisfm.model import reads_context


def choose_strategy(strategy: str, model) -> Strategy:
    """The way `model` (the starting checkpoint, or a fitted member) predicts under `strategy`."""
    if reads_context(model):
        return InContextPrediction() if strategy == "inference" else EpisodicFineTuning()
    return PerRowFineTuning(fine_tunes=strategy != "inference")


__all__ = ["EpisodicFineTuning", "InContextPrediction", "PerRowFineTuning", "Strategy", "choose_strategy"]
