"""What every way of predicting provides (`Strategy`), and what the two fine-tuning ones share: the budget and
validation split a member is fitted with, from the estimator's parameters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pandas as pd

from basisfm.estimators.finetune import MIN_VALIDATION_ROWS, FineTuneSettings, copy_model, resolve_device

MAX_VALIDATION_ROWS = 2_000  # bounds the validation cost on big tables (a strategy may bound it lower)
MIN_ROWS_FOR_HOLDOUT = 3 * MIN_VALIDATION_ROWS // 2  # below this, validate on the training rows
CHECKS_PER_BUDGET = 12  # validate_every=None: this many validation checks over the step budget


class Strategy(ABC):
    """One way of predicting, chosen once at `fit` (`choose_strategy`): how members are fitted from the starting
    model, whether the training rows are kept as context, and how a table's rows are predicted. It holds no
    fitted state: that is the estimator's (`members_`, `context_`, `features_read_`, ...), so a saved estimator
    chooses its strategy again at load."""

    name: str  # what `strategy_` says in a repr and in errors
    keeps_context: bool  # whether the training rows are the context every predict reads (`context_`)

    @abstractmethod
    def fit_members(self, estimator, start, features: pd.DataFrame, target) -> tuple[list, list]:
        """(members, histories) fitted from `start` on the preprocessed training rows."""

    @abstractmethod
    def predict_numeric(self, estimator, X: Any, levels: list[float] | None) -> np.ndarray:
        """[n_rows, n_targets, len(levels) or 1]: quantiles at `levels`, or the mean when `levels` is None."""

    @abstractmethod
    def predict_proba(self, estimator, X: Any) -> np.ndarray:
        """[n_rows, n_classes] probabilities in the order of the estimator's classes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def fine_tune_settings(estimator, default_budget: int, member: int, checks: int = CHECKS_PER_BUDGET) -> FineTuneSettings:
    """A member's fine-tuning settings from the estimator's parameters: `max_steps` (None: `default_budget`, the
    strategy's budget sized to the table, e.g. `default_steps`), a validation check every `validate_every` steps
    (None: `checks` per budget)."""
    steps = estimator.max_steps if estimator.max_steps is not None else default_budget
    every = estimator.validate_every if estimator.validate_every is not None else max(1, round(steps / checks))
    members = estimator._n_estimators()
    settings = FineTuneSettings(
        strategy=estimator.strategy, max_steps=steps, learning_rate=estimator.learning_rate,
        weight_decay=estimator.weight_decay, patience=estimator.patience, validate_every=every,
        lora_r=estimator.lora_r, lora_alpha=estimator.lora_alpha, lora_dropout=estimator.lora_dropout,
        lora_target_modules=estimator.lora_target_modules, seed=estimator._member_seed(member),
        progress=bool(estimator.progress), time_budget_s=estimator.time_budget_s,
        device=str(resolve_device(estimator.device)),
        description=f"member {member + 1}/{members}" if members > 1 else "",
    )
    settings.validate()
    return settings


def validation_split(n_rows: int, validation_fraction: float, seed: int,
                     max_rows: int = MAX_VALIDATION_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a member, drawn by its seed: `validation_fraction` of the rows, at least
    `MIN_VALIDATION_ROWS` and at most `max_rows`; every row both ways under `MIN_ROWS_FOR_HOLDOUT`."""
    order = np.random.default_rng(seed).permutation(n_rows)
    if n_rows < MIN_ROWS_FOR_HOLDOUT:
        return order, order
    n_val = min(max(max_rows, MIN_VALIDATION_ROWS), max(MIN_VALIDATION_ROWS, round(validation_fraction * n_rows)))
    return order[n_val:], order[:n_val]


def fit_each_member(estimator, start, fit_member) -> tuple[list, list]:
    """(members, histories): `n_estimators` members, member k fitted by `fit_member(model, k)` from its own copy
    of `start` (the last one from `start` itself: no copy left to keep)."""
    members, histories = [], []
    n_members = estimator._n_estimators()
    for member in range(n_members):
        model, history = fit_member(start if member == n_members - 1 else copy_model(start), member)
        members.append(model)
        histories.append(history)
    return members, histories
