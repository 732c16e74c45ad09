"""Losses: the pretraining objective, the shared regression loss (SMR bits or bins), task weighting."""

from __future__ import annotations

from basisfm.losses.objective import LossResult, PretrainingObjective, build_objective, regression_loss
from basisfm.losses.smr_loss import adaptive_weight, decode_bit_logits, relative_agreement, smr_bit_loss
from basisfm.losses.weighting import GradientNormWeighting, MGDAWeighting, UncertaintyWeighting, min_norm_weights

# The read-out lives with the model (`basisfm.model.decoding`); listed here beside the loss it mirrors.
from basisfm.model.decoding import bit_quantiles, decode_numeric, numeric_targets

__all__ = [
    "LossResult",
    "PretrainingObjective",
    "build_objective",
    "bit_quantiles",
    "decode_numeric",
    "numeric_targets",
    "regression_loss",
    "adaptive_weight",
    "decode_bit_logits",
    "relative_agreement",
    "smr_bit_loss",
    "GradientNormWeighting",
    "MGDAWeighting",
    "UncertaintyWeighting",
    "min_norm_weights",
]
