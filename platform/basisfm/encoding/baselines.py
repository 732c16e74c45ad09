"""Baseline numeric encoders the SMR family is benchmarked against: log bins, fixed point, periodic (PLR), digit tokens.

All share `NumericEncoder`'s interface. Where a baseline needs a per-column scale it takes it from the
manifest statistics, as a real deployment would (the batch never sees the whole column).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from basisfm.encoding.numeric_base import NumericEncoder
from basisfm.encoding.smr import SMRCodec


def column_scale(column_abs_max: torch.Tensor) -> torch.Tensor:
    """[C] float64 positive scale per column: its abs-max, or 1 where unknown or zero."""
    abs_max = column_abs_max.to(torch.float64)
    ok = torch.isfinite(abs_max) & (abs_max > 0)
    return torch.where(ok, abs_max, torch.ones_like(abs_max))


class LogBinsEncoder(NumericEncoder):
    """Sign and log2-magnitude bucketed into `n_bins` equal bins spanning each column's dynamic SMR window.

    Handles any range, loses precision inside a bin: the classic trade-off the benchmark measures.
    """

    def __init__(self, d_model: int, n_bins: int = 32, bit_budget: int = 32):
        super().__init__()
        self.n_bins = n_bins
        self.window = SMRCodec.adaptive(bit_budget, 16, 8)
        self.embed = nn.Embedding(2 * n_bins + 1, d_model)  # 0 = exact zero, then positive bins, then negative

    def bin_ids(self, values, column_abs_max, column_min_nonzero) -> torch.Tensor:
        top, low = self.window.windows(column_abs_max, column_min_nonzero)
        values = values.to(torch.float64)
        magnitude = values.abs()
        log_mag = torch.log2(torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude)))
        position = (log_mag - low.to(torch.float64)) / (top - low + 1).to(torch.float64)
        bins = (position.clamp(0.0, 1.0 - 1e-9) * self.n_bins).floor().to(torch.long)
        ids = 1 + bins + self.n_bins * (values < 0).to(torch.long)
        return torch.where(magnitude > 0, ids, torch.zeros_like(ids))

    def forward(self, values, column_abs_max, column_min_nonzero):
        return self.embed(self.bin_ids(values, column_abs_max, column_min_nonzero))


class FixedPointEncoder(NumericEncoder):
    """One global fixed-point format Q(h.l): round to 2^-l, saturate at 2^h, feed the scaled scalar and an overflow flag.

    No per-column scaling on purpose: that is the format's known weakness (sensitive to scale).
    """

    def __init__(self, high_bits: int, low_bits: int, d_model: int):
        super().__init__()
        self.high_bits, self.low_bits = high_bits, low_bits
        self.project = nn.Linear(2, d_model)

    def forward(self, values, column_abs_max, column_min_nonzero):
        values = values.to(torch.float64)
        limit = math.ldexp(1.0, self.high_bits) - math.ldexp(1.0, -self.low_bits)
        quantised = torch.round(values * math.ldexp(1.0, self.low_bits)) * math.ldexp(1.0, -self.low_bits)
        overflow = quantised.abs() > limit
        scaled = quantised.clamp(-limit, limit) / math.ldexp(1.0, self.high_bits)
        return self.project(torch.stack([scaled, overflow.to(torch.float64)], dim=-1).to(self.project.weight.dtype))


class PeriodicEncoder(NumericEncoder):
    """PLR embeddings (Gorishniy et al. 2022): x -> [sin(2 pi c x), cos(2 pi c x)] -> Linear -> ReLU.

    The paper learns frequencies per feature; columns here differ per table, so the k frequencies are
    shared and x is first divided by the column's abs-max.
    """

    def __init__(self, d_model: int, n_frequencies: int = 16, sigma: float = 1.0):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_frequencies) * sigma)
        self.project = nn.Linear(2 * n_frequencies, d_model)

    def forward(self, values, column_abs_max, column_min_nonzero):
        scaled = (values.to(torch.float64) / column_scale(column_abs_max)).clamp(-1.0, 1.0).to(torch.float32)
        angles = 2 * math.pi * scaled.unsqueeze(-1) * self.frequencies
        return torch.relu(self.project(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(self.project.weight.dtype)))


class DigitsEncoder(NumericEncoder):
    """The number as text tokens, the way a language model reads it: "+1.2346e+003" -> sign, `n_digits`
    mantissa digits, exponent sign, 3 exponent digits; a learned embedding per (position, token), summed.
    """

    TOKENS = 12  # 0-9, '+', '-'

    def __init__(self, d_model: int, n_digits: int = 5):
        super().__init__()
        self.n_digits = n_digits
        self.n_positions = n_digits + 5
        self.embed = nn.Embedding(self.n_positions * self.TOKENS, d_model)
        self.norm = nn.LayerNorm(d_model)

    def tokens(self, values: torch.Tensor) -> torch.Tensor:
        """[..., n_digits + 5] long token ids (before the position offset)."""
        values = values.to(torch.float64)
        magnitude = values.abs()
        nonzero = magnitude > 0
        exponent = torch.floor(torch.log10(torch.where(nonzero, magnitude, torch.ones_like(magnitude))))
        mantissa = torch.round(magnitude / torch.pow(10.0, exponent) * 10 ** (self.n_digits - 1))
        # Rounding 9.99996 up gives 10.0000: carry into the exponent like printf does.
        carry = mantissa >= 10**self.n_digits
        mantissa = torch.where(carry, torch.round(mantissa / 10), mantissa)
        exponent = torch.where(carry, exponent + 1, exponent)
        mantissa = torch.where(nonzero, mantissa, torch.zeros_like(mantissa))
        exponent = torch.where(nonzero, exponent, torch.zeros_like(exponent))
        powers = torch.pow(10.0, torch.arange(self.n_digits - 1, -1, -1, dtype=torch.float64, device=values.device))
        mantissa_digits = torch.remainder(torch.floor(mantissa.unsqueeze(-1) / powers), 10)
        exp_powers = torch.tensor([100.0, 10.0, 1.0], dtype=torch.float64, device=values.device)
        exponent_digits = torch.remainder(torch.floor(exponent.abs().clamp(max=999).unsqueeze(-1) / exp_powers), 10)
        plus, minus = 10.0, 11.0
        sign = torch.where(values < 0, minus, plus).unsqueeze(-1)
        exp_sign = torch.where(exponent < 0, minus, plus).unsqueeze(-1)
        return torch.cat([sign, mantissa_digits, exp_sign, exponent_digits], dim=-1).to(torch.long)

    def forward(self, values, column_abs_max, column_min_nonzero):
        ids = self.tokens(values) + self.TOKENS * torch.arange(self.n_positions, device=values.device)
        return self.norm(self.embed(ids).sum(-2))
