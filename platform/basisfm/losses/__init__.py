"""Losses: the masked-cell pretraining objective, the SMR bit loss with the paper's reweighting, task weighting."""

from __future__ import annotations

from basisfm.losses.objective import LossResult, PretrainingObjective, build_objective
from basisfm.losses.smr_loss import adaptive_weight, decode_bit_logits, relative_agreement, smr_bit_loss
from basisfm.losses.weighting import GradientNormWeighting, MGDAWeighting, UncertaintyWeighting, min_norm_weights

__all__ = [
    "LossResult",
    "PretrainingObjective",
    "build_objective",
    "adaptive_weight",
    "decode_bit_logits",
    "relative_agreement",
    "smr_bit_loss",
    "GradientNormWeighting",
    "MGDAWeighting",
    "UncertaintyWeighting",
    "min_norm_weights",
]
