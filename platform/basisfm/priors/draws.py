"""Random sources of one generated chunk of tasks, and the seed arithmetic that makes every chunk a function of a seed.

A chunk draws two kinds of randomness: small per-task structure (depths, widths, which activation, which
columns turn categorical) from a numpy generator, which never touches the device and never syncs it; and
cell-sized tensors (causes, weights, noise, thresholds) from a torch generator on the generation device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


def mix_seed(*parts: object) -> int:
    """A stable 63-bit seed from any mix of ints and strings (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Draws:
    """The two random streams of one chunk, both derived from `seed`."""

    seed: int
    device: torch.device
    rng: np.random.Generator  # per-task structure: tiny arrays, host side
    gen: torch.Generator  # cell-sized tensors, on `device`

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> "Draws":
        device = torch.device(device)
        gen = torch.Generator(device=device)
        gen.manual_seed(mix_seed(seed, "tensors") % (2**63))
        return cls(seed=seed, device=device, rng=np.random.default_rng(mix_seed(seed, "structure")), gen=gen)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.device)

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, device=self.device)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=self.gen, device=self.device)

    def tensor(self, array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A host-side structural draw as a tensor on the device (one small copy, no sync)."""
        return torch.as_tensor(np.asarray(array), dtype=dtype).to(self.device)
