"""Reading a model's numeric predictions out: the predicted distribution's mean and quantiles in the target's own
units, for SMR bits or bins of the standardised target. The model's inference methods call these, and so do the
loss (`basisfm.losses`), fine-tuning and in-context prediction: decoding belongs to the model, which the losses
import, never the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from basisfm.data.batch import TableBatch
from basisfm.encoding.smr import SMRCodec, sanitize

if TYPE_CHECKING:  # table_model imports this module; the annotation alone needs ModelOutput
    from basisfm.model.table_model import ModelOutput


def unwrap_model(model: nn.Module) -> nn.Module:
    """The TableModel inside a peft / DeepSpeed wrapper (or the model itself)."""
    for attribute in ("get_base_model", "module"):
        inner = getattr(model, attribute, None)
        if inner is not None:
            model = inner() if callable(inner) and attribute == "get_base_model" else inner
    return model


def numeric_targets(out: "ModelOutput", batch: TableBatch) -> torch.Tensor:
    """[N] bool: target cells `regression_loss` scores (numeric-like column, finite truth)."""
    values, missing = sanitize(batch.values, batch.missing)
    return out.is_numeric & ~missing[out.target_rows, out.target_columns]


def truth_and_scale(out: "ModelOutput", batch: TableBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N] float64 true values (0 where missing), and the target columns' [N] mean and std."""
    values, _ = sanitize(batch.values, batch.missing)
    cols = out.target_columns
    return values[out.target_rows, cols], batch.column_mean[cols].double(), batch.column_std[cols].double().clamp_min(1e-300)

@torch.no_grad()
def decode_numeric(
    model: nn.Module, out: "ModelOutput", batch: TableBatch, quantiles: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(point predictions [N] float64, quantiles [N, Q] float64 or None) in the target's own units.

    The point prediction is the mean of the predicted distribution: the bins' mean mapped back with the
    batch's column mean / std, or the expected value under the SMR bit probabilities. Quantiles (levels
    in (0, 1)) come from the bins' piecewise-uniform CDF, or exactly from the bits (`bit_quantiles`).
    Non-numeric target cells are NaN.
    """
    base = unwrap_model(model)
    _, mean, std = truth_and_scale(out, batch)
    q = None
    if out.value_logits is not None:
        logits = out.value_logits.detach()
        point = base.bins.mean(logits).double() * std + mean
        if quantiles is not None:
            q = base.bins.quantiles(logits, quantiles).double() * std.unsqueeze(-1) + mean.unsqueeze(-1)
    else:
        probabilities = torch.sigmoid(out.bit_logits.detach().double())
        point = base.codec.expected_value(probabilities, out.window_top, out.window_low)
        if quantiles is not None:
            q = bit_quantiles(base.codec, probabilities, out.window_top, out.window_low, quantiles)
    nan = torch.full_like(point, float("nan"))
    point = torch.where(out.is_numeric, point, nan)
    if q is not None:
        q = torch.where(out.is_numeric.unsqueeze(-1), q, nan.unsqueeze(-1))
    return point, q


@torch.no_grad()
def threshold_decode(model: nn.Module, out: "ModelOutput") -> torch.Tensor:
    """[N] float64: the paper's decoding, each SMR bit rounded at 0.5 (smr_bits only)."""
    base = unwrap_model(model)
    return base.codec.decode(torch.sigmoid(out.bit_logits.detach().double()), out.window_top, out.window_low)


def bit_quantiles(codec: SMRCodec, probabilities: torch.Tensor, top: torch.Tensor, low: torch.Tensor,
                  levels: Sequence[float]) -> torch.Tensor:
    """[N, 1 + W] independent bit probabilities -> [N, Q] float64 quantiles of the decoded value.

    Exact up to the lowest bit: a higher bit outweighs all lower bits together (2^e > 2^e - 2^low), so
    magnitudes are ordered like their bit strings and the quantile is found by walking the bits from the
    top, choosing at each bit the branch that holds the remaining probability mass. The sign splits the
    mass first: negative values (sign bit 1, probability p_s) sit below the positive ones, mirrored.
    Within the last bit the mass is spread uniformly.
    """
    levels_t = torch.as_tensor(list(levels), dtype=torch.float64, device=probabilities.device)
    if levels_t.numel() == 0 or bool(((levels_t <= 0) | (levels_t >= 1)).any()):
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {list(levels)}")
    p = probabilities.double().clamp(1e-12, 1 - 1e-12)
    n = p.shape[0]
    q = levels_t.unsqueeze(0).expand(n, -1)  # [N, Q]
    p_negative = p[:, :1]
    negative = q < p_negative
    # The level within the magnitude's own distribution: a negative value at level q is -M at 1 - q / p_s.
    level = torch.where(negative, 1.0 - q / p_negative, (q - p_negative) / (1.0 - p_negative)).clamp(0.0, 1.0)
    exponents = top.unsqueeze(-1) - torch.arange(codec.width, device=p.device)  # [N, W]
    magnitude = torch.zeros_like(level)
    for j in range(codec.width):
        used = (exponents[:, j] >= low).unsqueeze(-1)  # [N, 1]
        one = p[:, 1 + j].unsqueeze(-1)
        zero_mass = 1.0 - one
        take_one = level >= zero_mass
        power = torch.exp2(exponents[:, j].double()).unsqueeze(-1)
        new_magnitude = magnitude + torch.where(take_one, power, torch.zeros_like(power))
        new_level = torch.where(take_one, (level - zero_mass) / one, level / zero_mass).clamp(0.0, 1.0)
        magnitude = torch.where(used, new_magnitude, magnitude)
        level = torch.where(used, new_level, level)
    magnitude = magnitude + level * torch.exp2(low.double()).unsqueeze(-1)
    return torch.where(negative, -magnitude, magnitude)
