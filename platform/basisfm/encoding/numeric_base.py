"""The interface every numeric cell encoder implements; the SMR family (`numeric`) and the baselines share it.

Its own module so that `encoding.numeric` (which builds any encoder by name) can import the baselines
while the baselines import only this interface: one direction, no cycle.
"""

from __future__ import annotations

import torch
from torch import nn


class NumericEncoder(nn.Module):
    """values [R, C] float64 (finite), column_abs_max [C], column_min_nonzero [C] -> [R, C, d_model]."""

    def forward(self, values: torch.Tensor, column_abs_max: torch.Tensor, column_min_nonzero: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract: each subclass is one encoding
