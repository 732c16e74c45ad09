"""Losses: the pretraining objective, the shared regression loss and read-out (SMR bits or bins), task weighting."""

from __future__ import annotations

from basisfm.losses.objective import (
    LossResult,
    PretrainingObjective,
    bit_quantiles,
    build_objective,
    decode_numeric,
    numeric_targets,
    regression_loss,
)
from basisfm.losses.smr_loss import adaptive_weight, decode_bit_logits, relative_agreement, smr_bit_loss
from basisfm.losses.weighting import GradientNormWeighting, MGDAWeighting, UncertaintyWeighting, min_norm_weights

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
