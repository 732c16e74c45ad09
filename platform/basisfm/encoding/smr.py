"""Sign-magnitude representation (SMR) maths: exact float64 <-> bit-vector conversion over a window of powers of two.

A number x becomes `[sign, b_0, ..., b_{W-1}]` with b_j the coefficient of 2^(top - j). The paper's SMR(h, l)
is the window top = h-1, low = -l; the dynamic codec picks (top, low) per column from its statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Windows are clamped here so that decoding a saturated vector can never overflow float64 (max ~2^1024).
MAX_EXPONENT = 1000
MIN_EXPONENT = -1070
# Dynamic windows reach far enough below a column's smallest non-zero magnitude that even that value
# keeps this many significant bits (when the bit budget allows; magnitude wins when it does not).
MIN_SIGNIFICANT_BITS = 16


def _pow2(exponent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2^e as two float64 factors: one factor alone under/overflows for |e| > 1023, their product is exact."""
    exponent = exponent.to(torch.float64)
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.exp2(half), torch.exp2(exponent - half)


def sanitize(values: torch.Tensor, missing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 values with non-finite cells zeroed, and the missing mask extended to them (inf never reaches the model)."""
    values = values.to(torch.float64)
    finite = torch.isfinite(values)
    bad = ~finite if missing is None else (missing | ~finite)
    return torch.where(finite, values, torch.zeros_like(values)), bad


def floor_log2(magnitude: torch.Tensor) -> torch.Tensor:
    """floor(log2(m)) exactly (via frexp) for m > 0; 0 where m is 0 or not finite."""
    magnitude = magnitude.to(torch.float64)
    ok = torch.isfinite(magnitude) & (magnitude > 0)
    _, exponent = torch.frexp(torch.where(ok, magnitude, torch.ones_like(magnitude)))
    return torch.where(ok, exponent.to(torch.long) - 1, torch.zeros_like(exponent, dtype=torch.long))


@dataclass(frozen=True)
class SMRCodec:
    """Converts float64 values to `1 + width` bits and back, for windows given per column.

    `dynamic=False` is the paper's fixed SMR(high_bits, low_bits): width = h + l, every column shares the
    window [2^(h-1) .. 2^-l]. `dynamic=True` aligns the window's top bit with each column's abs-max and
    reaches down to its smallest non-zero magnitude (capped at `width` bits): a per-column exponent
    shift, so 1e10 and 1e-10 columns both keep `width` bits of precision.
    """

    width: int
    dynamic: bool
    high_bits: int
    low_bits: int

    @classmethod
    def fixed(cls, high_bits: int, low_bits: int) -> "SMRCodec":
        return cls(width=high_bits + low_bits, dynamic=False, high_bits=high_bits, low_bits=low_bits)

    @classmethod
    def adaptive(cls, bit_budget: int, default_high_bits: int, default_low_bits: int) -> "SMRCodec":
        return cls(width=bit_budget, dynamic=True, high_bits=default_high_bits, low_bits=default_low_bits)

    @property
    def n_bits(self) -> int:
        """Length of an encoded vector: the sign bit plus `width` magnitude bits."""
        return 1 + self.width

    def windows(self, abs_max: torch.Tensor, min_nonzero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per column (top, low): the exponents of the window's highest and lowest bit, long [C] each."""
        abs_max = abs_max.to(torch.float64)
        if not self.dynamic:
            top = torch.full(abs_max.shape, self.high_bits - 1, dtype=torch.long, device=abs_max.device)
            return top, top - self.width + 1
        known_max = torch.isfinite(abs_max) & (abs_max > 0)
        top = torch.where(known_max, floor_log2(abs_max), torch.full_like(abs_max, self.high_bits - 1, dtype=torch.long))
        top = top.clamp(MIN_EXPONENT + self.width, MAX_EXPONENT)
        min_nonzero = min_nonzero.to(torch.float64)
        known_min = torch.isfinite(min_nonzero) & (min_nonzero > 0)
        # Unknown smallest magnitude: use the whole budget.
        smallest = torch.where(known_min, torch.minimum(floor_log2(min_nonzero), top), top - self.width)
        low = torch.maximum(smallest - MIN_SIGNIFICANT_BITS + 1, top - self.width + 1)
        return top, low

    def encode(self, values: torch.Tensor, top: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """values [..., C] float64 -> (bits [..., C, 1 + width] float32, overflow [..., C] bool).

        Exact for values the window represents; |x| >= 2^(top+1) saturates to all ones and sets overflow
        (never wraps around); bits below 2^low are dropped. Non-finite values encode as 0 with overflow set.
        """
        values = values.to(torch.float64)
        finite = torch.isfinite(values)
        magnitude = torch.where(finite, values.abs(), torch.zeros_like(values))
        hi_a, hi_b = _pow2(top + 1)
        overflow = (magnitude >= hi_a * hi_b) | ~finite
        # Clamp before scaling so huge out-of-window values cannot overflow the scaled product.
        magnitude = torch.minimum(magnitude, hi_a * hi_b)
        exponents = top.unsqueeze(-1) - torch.arange(self.width, device=values.device)  # [C, W]
        scale_a, scale_b = _pow2(-exponents)
        scaled = magnitude.unsqueeze(-1) * scale_a * scale_b  # exact: multiplying by powers of two
        bits = torch.remainder(torch.floor(scaled), 2.0)
        bits = torch.where(exponents >= low.unsqueeze(-1), bits, torch.zeros_like(bits))
        bits = torch.where(overflow.unsqueeze(-1) & (exponents >= low.unsqueeze(-1)), torch.ones_like(bits), bits)
        sign = (values < 0) & finite
        out = torch.cat([sign.unsqueeze(-1).to(torch.float64), bits], dim=-1)
        return out.to(torch.float32), overflow

    def decode(self, bits: torch.Tensor, top: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """bits [..., 1 + width] (0/1, or probabilities thresholded at 0.5) -> float64 [...].

        `top` / `low` broadcast against bits[..., 0] (one window per decoded value).
        """
        hard = (bits > 0.5).to(torch.float64)
        exponents = top.unsqueeze(-1) - torch.arange(self.width, device=bits.device)
        pow_a, pow_b = _pow2(exponents)
        used = exponents >= low.unsqueeze(-1)
        magnitude = (hard[..., 1:] * pow_a * pow_b * used).sum(-1)
        return torch.where(hard[..., 0] > 0, -magnitude, magnitude)

    def expected_value(self, probabilities: torch.Tensor, top: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """The mean of the decoded value when bits are independent with these probabilities [..., 1 + width].

        Thresholding (`decode`) turns one uncertain high bit into an error of half the range; the
        expectation is the squared-error-minimising read-out (what R2 scores).
        """
        probabilities = probabilities.to(torch.float64)
        exponents = top.unsqueeze(-1) - torch.arange(self.width, device=probabilities.device)
        pow_a, pow_b = _pow2(exponents)
        used = exponents >= low.unsqueeze(-1)
        magnitude = (probabilities[..., 1:] * pow_a * pow_b * used).sum(-1)
        return (1.0 - 2.0 * probabilities[..., 0]) * magnitude

    def window_features(self, top: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """[C, 2] float32 summary of each column's scale for the model (the exponent shift is otherwise invisible)."""
        return torch.stack([top.to(torch.float32) / 64.0, (top - low + 1).to(torch.float32) / self.width], dim=-1)
