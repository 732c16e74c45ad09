"""Attention building blocks: multi-head attention with key masks, pre-norm blocks, and the cell-level variants.

Cell-level attention mixes a row's cell tokens before basis compression. Its cost grows with the number
of columns C, so it comes in three variants: `dense` (C x C), `block_sparse` (attention inside blocks of
`block_size` columns: C x b) and `sampled` (every cell attends to ceil(keep_ratio * C) columns).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from basisfm.errors import ConfigError


def ensure_some_key(attend: torch.Tensor) -> torch.Tensor:
    """A query with no key to attend would softmax over nothing (NaN): let such queries see every key."""
    return attend | ~attend.any(dim=-1, keepdim=True)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, attend: torch.Tensor | None = None) -> torch.Tensor:
        """queries [B, Lq, d], keys [B, Lk, d], attend [B, Lq, Lk] or [B, 1, Lk] bool (True = may attend)."""
        b, lq, d = queries.shape
        lk = keys.shape[1]
        h = self.n_heads
        q = self.query(queries).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.key_value(keys).view(b, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if attend is None else ensure_some_key(attend).unsqueeze(1)  # broadcast over heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.0, expansion: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, expansion * d_model), nn.GELU(), nn.Linear(expansion * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block. With `keys` it is a cross-attention block (queries read keys)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, cross: bool = False):
        super().__init__()
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_key = nn.LayerNorm(d_model) if cross else None
        self.attention = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None, attend: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_query(x)
        k = q if self.norm_key is None else self.norm_key(keys)
        x = x + self.attention(q, k, attend)
        return x + self.feed_forward(self.norm_ff(x))


class CellAttention(nn.Module):
    """Mixes a row's cell tokens: cells [R, C, d], attend [R, C] (None = all) -> [R, C, d].

    `column_order` [C] is a score per column computed from its name only (not its position), so the
    variants that must pick columns (blocks, samples) pick the same ones however the table is ordered.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.block = Block(d_model, n_heads, dropout)

    def forward(self, cells: torch.Tensor, attend: torch.Tensor | None, column_order: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # abstract: each subclass is one variant


class DenseCellAttention(CellAttention):
    def forward(self, cells, attend, column_order):
        return self.block(cells, attend=None if attend is None else attend.unsqueeze(1))


class BlockSparseCellAttention(CellAttention):
    """Columns sorted by their name score (similar names land together), cut into blocks of `block_size`;
    attention only inside a block. Memory O(C * block_size) instead of O(C^2)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, block_size: int):
        super().__init__(d_model, n_heads, dropout)
        self.block_size = block_size

    def forward(self, cells, attend, column_order):
        r, c, d = cells.shape
        b = min(self.block_size, c)
        order = torch.argsort(column_order, stable=True)
        n_blocks = math.ceil(c / b)
        pad = n_blocks * b - c
        x = F.pad(cells[:, order], (0, 0, 0, pad))
        keys_ok = torch.ones(r, c, dtype=torch.bool, device=cells.device) if attend is None else attend[:, order]
        keys_ok = F.pad(keys_ok, (0, pad), value=False)  # padding columns are never attended
        y = self.block(x.view(r * n_blocks, b, d), attend=keys_ok.view(r * n_blocks, 1, b))
        y = y.view(r, n_blocks * b, d)[:, :c]
        return y[:, torch.argsort(order)]


class SampledCellAttention(CellAttention):
    """Every cell attends to one shared subset of ceil(keep_ratio * C) columns: a fresh random subset per
    training step, the highest-scoring columns by name in eval (reproducible predictions)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, keep_ratio: float):
        super().__init__(d_model, n_heads, dropout)
        self.keep_ratio = keep_ratio

    def forward(self, cells, attend, column_order):
        c = cells.shape[1]
        n_keep = max(1, math.ceil(self.keep_ratio * c))
        if self.training:
            keep = torch.randperm(c, device=cells.device)[:n_keep]
        else:
            keep = torch.argsort(column_order, descending=True, stable=True)[:n_keep]
        q = self.block.norm_query(cells)
        keys_ok = None if attend is None else attend[:, keep].unsqueeze(1)
        x = cells + self.block.attention(q, q[:, keep], keys_ok)
        return x + self.block.feed_forward(self.block.norm_ff(x))


def build_cell_attention(variant: str, d_model: int, n_heads: int, dropout: float, block_size: int, keep_ratio: float) -> CellAttention:
    if variant == "dense":
        return DenseCellAttention(d_model, n_heads, dropout)
    if variant == "block_sparse":
        return BlockSparseCellAttention(d_model, n_heads, dropout, block_size)
    if variant == "sampled":
        return SampledCellAttention(d_model, n_heads, dropout, keep_ratio)
    raise ConfigError(f"config key 'model.attention': unknown attention variant {variant!r}; choose dense, block_sparse or sampled")


def support_attention(support: torch.Tensor) -> torch.Tensor:
    """[R, R] bool: row i may read row j when j is a support row (queries never read each other, nor
    themselves: a query's own token would outweigh the context it should read). A batch without support
    rows (masked cells) lets each row read itself alone."""
    r = support.shape[0]
    alone = torch.eye(r, dtype=torch.bool, device=support.device) & ~support.any()
    return support.unsqueeze(0).expand(r, r) | alone
