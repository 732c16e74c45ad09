"""Distributional regression: a softmax over bins of the standardised target (TabPFN / TabDPT / Mitra style).

The target is standardised on the training rows (z = (y - mean) / std); the head scores `n_bins` equal
bins on [-z_max, z_max] (values beyond are clamped into the edge bins). Training uses the HL-Gauss
histogram loss (Imani et al. 2024, "Stop regressing"): the target is a Gaussian of width `smoothing`
bin widths around z, integrated over each bin, so neighbouring bins share credit and the loss is smooth
in z. The point prediction is the mean of the predicted distribution (what R² rewards); quantiles come
from its piecewise-uniform CDF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ZBins:
    n_bins: int = 128
    z_max: float = 5.0
    smoothing: float = 0.75  # HL-Gauss sigma, in bin widths

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")
        if not self.z_max > 0:
            raise ValueError(f"z_max must be positive, got {self.z_max}")

    @property
    def width(self) -> float:
        return 2.0 * self.z_max / self.n_bins

    def edges(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[B + 1] bin edges."""
        return torch.linspace(-self.z_max, self.z_max, self.n_bins + 1, device=device, dtype=torch.float32)

    def centers(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[B] bin centres."""
        edges = self.edges(device)
        return 0.5 * (edges[1:] + edges[:-1])

    def soft_targets(self, z: torch.Tensor) -> torch.Tensor:
        """[N] standardised values -> [N, B] HL-Gauss target probabilities (rows sum to 1)."""
        z = z.detach().float().clamp(-self.z_max + 1e-4, self.z_max - 1e-4)
        edges = self.edges(z.device)
        sigma = self.smoothing * self.width
        cdf = torch.special.ndtr((edges.unsqueeze(0) - z.unsqueeze(-1)) / sigma)  # [N, B + 1]
        mass = cdf[:, 1:] - cdf[:, :-1]
        return mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)

    def loss(self, logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[N, B] logits vs [N] standardised truths -> [N] cross-entropy against the HL-Gauss target."""
        return -(self.soft_targets(z) * F.log_softmax(logits.float(), dim=-1)).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """[N, B] -> [N] expected standardised value (differentiable)."""
        return (torch.softmax(logits.float(), dim=-1) * self.centers(logits.device)).sum(-1)

    def quantiles(self, logits: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
        """[N, B] -> [N, Q] standardised quantiles, each bin's mass spread uniformly over the bin."""
        levels_t = torch.as_tensor(list(levels), dtype=torch.float32, device=logits.device)
        if levels_t.numel() == 0 or bool(((levels_t <= 0) | (levels_t >= 1)).any()):
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {list(levels)}")
        probs = torch.softmax(logits.float(), dim=-1)
        cdf = torch.cat([torch.zeros_like(probs[:, :1]), probs.cumsum(-1)], dim=-1)  # [N, B + 1]
        edges = self.edges(logits.device)
        q = levels_t.unsqueeze(0).expand(probs.shape[0], -1).contiguous()
        upper = torch.searchsorted(cdf, q).clamp(1, self.n_bins)  # first edge whose CDF >= q
        lower = upper - 1
        c_lo, c_hi = cdf.gather(1, lower), cdf.gather(1, upper)
        fraction = ((q - c_lo) / (c_hi - c_lo).clamp_min(1e-12)).clamp(0, 1)
        return edges[lower] + fraction * self.width


@dataclass(frozen=True)
class TargetScale:
    """The standardisation of one regression target, fitted on its training rows."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: Sequence[float] | torch.Tensor) -> "TargetScale":
        t = torch.as_tensor(values, dtype=torch.float64)
        t = t[torch.isfinite(t)]
        if t.numel() == 0:
            raise ValueError("cannot standardise a target with no finite values")
        mean = float(t.mean())
        std = float(t.std(unbiased=False)) if t.numel() > 1 else 0.0
        if not math.isfinite(mean) or not math.isfinite(std):
            raise ValueError(f"target values are too large to standardise (mean {mean}, std {std}); rescale the target")
        return cls(mean=mean, std=std if std > 0 else 1.0)

    def to_z(self, values: torch.Tensor) -> torch.Tensor:
        return (values.double() - self.mean) / self.std

    def from_z(self, z: torch.Tensor) -> torch.Tensor:
        return z.double() * self.std + self.mean
