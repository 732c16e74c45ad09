"""Missing-value strategies: what a missing cell's value embedding becomes, and whether attention may see it.

All take value embeddings [R, C, d] and the missing mask [R, C] and return (embeddings, attend [R, C]
bool or None). None means "attend to every cell"; `attention_mask` returns which cells may be attended.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from basisfm.corpus.manifest import ColumnKind
from basisfm.errors import ConfigError


def stable_name_bucket(name: str, n_buckets: int) -> int:
    """A column name's bucket, identical across processes and runs (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode("utf-8")) % n_buckets


class MissingValueStrategy(nn.Module):
    def forward(
        self, values: torch.Tensor, missing: torch.Tensor, column_kinds: torch.Tensor, column_names: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError  # abstract: each subclass is one strategy


class LearnableMissingToken(MissingValueStrategy):
    """The paper's choice: every missing cell gets one learned [MISSING] vector."""

    def __init__(self, d_model: int):
        super().__init__()
        self.token = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, values, missing, column_kinds, column_names):
        return torch.where(missing.unsqueeze(-1), self.token, values), None


class TypeAwareMissingToken(MissingValueStrategy):
    """One learned token per column kind: a missing category is not the same absence as a missing number."""

    def __init__(self, d_model: int):
        super().__init__()
        self.tokens = nn.Embedding(len(ColumnKind), d_model)
        nn.init.normal_(self.tokens.weight, std=0.02)

    def forward(self, values, missing, column_kinds, column_names):
        per_column = self.tokens(column_kinds)  # [C, d]
        return torch.where(missing.unsqueeze(-1), per_column, values), None


class PerColumnMissingToken(MissingValueStrategy):
    """One learned token per column name, hashed into `n_buckets` (names are open-ended across tables)."""

    def __init__(self, d_model: int, n_buckets: int):
        super().__init__()
        self.n_buckets = n_buckets
        self.tokens = nn.Embedding(n_buckets, d_model)
        nn.init.normal_(self.tokens.weight, std=0.02)

    def forward(self, values, missing, column_kinds, column_names):
        buckets = torch.tensor([stable_name_bucket(n, self.n_buckets) for n in column_names], dtype=torch.long, device=values.device)
        return torch.where(missing.unsqueeze(-1), self.tokens(buckets), values), None


class AttentionMaskMissing(MissingValueStrategy):
    """Missing cells are left out of attention altogether: nothing stands in for them."""

    def forward(self, values, missing, column_kinds, column_names):
        return torch.where(missing.unsqueeze(-1), torch.zeros_like(values), values), ~missing


def build_missing_strategy(strategy: str, d_model: int, n_buckets: int = 256) -> MissingValueStrategy:
    if strategy == "learnable":
        return LearnableMissingToken(d_model)
    if strategy == "type_aware":
        return TypeAwareMissingToken(d_model)
    if strategy == "per_column":
        return PerColumnMissingToken(d_model, n_buckets)
    if strategy == "attention_mask":
        return AttentionMaskMissing()
    raise ConfigError(f"config key 'model.missing': unknown missing-value strategy {strategy!r}; choose learnable, type_aware, per_column or attention_mask")
