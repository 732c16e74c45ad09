"""Fixed, seeded banks of unit vectors that stand in for sentence-encoder embeddings in synthetic tasks.

Prior columns have meaningless names and their categories meaningless labels, so instead of running the
sentence encoder each name or label is an index into a bank of random unit vectors (the encoder's vectors
are unit-norm too). The banks are drawn on CPU from `bank_seed`, so they are the same on every machine.
"""

from __future__ import annotations

from functools import lru_cache

import torch

# Keeps the name bank and the category bank apart even when both use the same `bank_seed`.
_NAME_STREAM = 0x6E616D65
_CATEGORY_STREAM = 0x63617467


@lru_cache(maxsize=8)
def _unit_vectors(size: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vectors = torch.randn(size, dim, generator=generator, dtype=torch.float32)  # [size, dim]
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)


def name_bank(size: int, dim: int, seed: int) -> torch.Tensor:
    """[size, dim] float32 unit vectors used as column-name embeddings of prior tasks."""
    return _unit_vectors(size, dim, seed * 2 + _NAME_STREAM)


def category_bank(size: int, dim: int, seed: int) -> torch.Tensor:
    """[size, dim] float32 unit vectors used as embeddings of prior category labels."""
    return _unit_vectors(size, dim, seed * 2 + _CATEGORY_STREAM)


def name_string(index: int) -> str:
    """The column name a bank index stands for: meaningless, stable, distinct per index."""
    return f"p{index:04d}"


def category_string(index: int) -> str:
    """The category label a bank index stands for."""
    return f"c{index:04d}"
