"""The regression loss on SMR bits and the paper's adaptive reweighting (Basis Transformers, eq. 3-4).

A numeric target is predicted as 1 + W independent bits (one sigmoid each) trained with binary
cross-entropy; its decoded value drives a per-sample weight that favours relatively large errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from basisfm.encoding.smr import SMRCodec


def smr_bit_loss(bit_logits: torch.Tensor, target_bits: torch.Tensor) -> torch.Tensor:
    """[N, n_bits] logits vs 0/1 bits -> [N] mean binary cross-entropy over each target's bits."""
    return F.binary_cross_entropy_with_logits(bit_logits, target_bits.to(bit_logits.dtype), reduction="none").mean(-1)


def decode_bit_logits(codec: SMRCodec, bit_logits: torch.Tensor, top: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """[N, n_bits] logits -> [N] float64 values (each bit thresholded at probability 0.5), no gradient."""
    with torch.no_grad():
        return codec.decode(torch.sigmoid(bit_logits.detach().double()), top, low)


def relative_agreement(y: torch.Tensor, y_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The paper's g(y, y_hat) = (min(|y|, |y_hat|) + eps) / (max(|y|, |y_hat|) + eps), in (0, 1].

    1 when the magnitudes agree, towards 0 as they drift apart: a relative, scale-free error.
    """
    a, b = y.abs().double(), y_hat.abs().double()
    return (torch.minimum(a, b) + eps) / (torch.maximum(a, b) + eps)


def adaptive_weight(y: torch.Tensor, y_hat: torch.Tensor, gamma: float, eps: float = 1e-6) -> torch.Tensor:
    """The paper's per-sample weight (1 - g)(1 - 2 gamma) + gamma, in [gamma, 1 - gamma]; gamma in [0, 0.5]."""
    if not 0.0 <= gamma <= 0.5:
        raise ValueError(f"gamma must be in [0, 0.5], got {gamma}")
    g = relative_agreement(y, y_hat, eps)
    return (1.0 - g) * (1.0 - 2.0 * gamma) + gamma
