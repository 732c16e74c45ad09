"""The prediction heads every architecture shares: a query state in, a numeric target's distribution or label scores out.

Numeric targets are read out by the configured `model.regression_head`:
- `smr_bits`: the paper's 1 + W sign/magnitude bits of the raw value, one sigmoid each;
- `binned`: a softmax over `n_bins` bins of the standardised value z = (y - column_mean) / column_std
  (`model.distribution.ZBins`), the scale coming with the batch (the support / training rows' statistics).
Either way the target column's own token adds a direct path to the logits (a learned per-column prior),
so a column's typical value is learned in a few steps instead of through every layer.
Categorical targets score a query state against the projected embeddings of candidate strings, so label
sets never seen in training work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from basisfm.config import ModelConfig
from basisfm.encoding.smr import SMRCodec
from basisfm.errors import ConfigError
from basisfm.model.distribution import ZBins


def value_bins(config: ModelConfig) -> ZBins:
    """The bins the `binned` head predicts over (its shape comes from the model config)."""
    return ZBins(n_bins=config.n_bins, z_max=config.z_max)


class PredictionHeads(nn.Module):
    """hidden [N, d] query states and [N, d] their target columns' tokens -> regression logits; label scores."""

    def __init__(self, config: ModelConfig, codec: SMRCodec):
        super().__init__()
        d = config.d_model
        self.kind = config.regression_head
        if self.kind == "smr_bits":
            self.bit_head = nn.Linear(d, codec.n_bits)
            self.bit_prior = nn.Linear(d, codec.n_bits)
        elif self.kind == "binned":
            self.value_head = nn.Linear(d, config.n_bins)
            self.value_prior = nn.Linear(d, config.n_bins)
            # z is standardised on the context's rows, so a standard normal is the right prior: starting
            # there, training spends its steps on what the features say, not on learning a bell curve
            # through small logit updates (from flat logits that took hundreds of steps).
            centres = value_bins(config).centers()
            with torch.no_grad():
                self.value_prior.bias.copy_(-0.5 * centres**2 - torch.logsumexp(-0.5 * centres**2, dim=0))
        else:
            raise ConfigError(f"config key 'model.regression_head': unknown head {self.kind!r}; choose smr_bits or binned")
        self.category_head = nn.Linear(d, d)

    def regression(self, hidden: torch.Tensor, target_columns: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(bit_logits [N, 1 + W] or None, value_logits [N, n_bins] or None): exactly one is set, by the head kind."""
        if self.kind == "smr_bits":
            return self.bit_head(hidden) + self.bit_prior(target_columns), None
        return None, self.value_head(hidden) + self.value_prior(target_columns)

    def score_strings(self, hidden: torch.Tensor, strings: torch.Tensor) -> torch.Tensor:
        """[N, d] query states x [V, d] projected strings -> [N, V] logits."""
        return self.category_head(hidden) @ strings.T / math.sqrt(hidden.shape[-1])
