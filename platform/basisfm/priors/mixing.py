"""Interleave synthetic prior episodes with a worker's stream of real batches at `data.prior_fraction`.

Each worker draws its own seeded coin per batch (seed from `priors.seed`, the worker's rank and the step it
starts at), so ranks see different prior tasks and a restart from a checkpoint makes a fresh, reproducible
stream. With `priors.curriculum: linear` the prior's row and feature caps follow the training step,
estimated as `start_step + batches yielded // (train.micro_batch_tables * train.pack_tables)` (the tables one
optimizer step takes). Priors never read the corpus, so
the hold-out suites cannot leak into them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from basisfm.config import RunConfig
from basisfm.data.batch import TableBatch
from basisfm.priors.draws import mix_seed
from basisfm.priors.sampler import PriorSampler


class PriorMix:
    """Iterator over real batches and prior episodes; `sampler.stats` counts the prior's rejections and
    `prior_batches` / `real_batches` how many of each were yielded (for logging)."""

    def __init__(self, real_batches: Iterable[TableBatch], config: RunConfig, *, rank: int = 0,
                 device: torch.device | str = "cpu", start_step: int = 0):
        self.fraction = config.data.prior_fraction
        # Tables per optimizer step: micro-batches per step, each packing pack_tables tables.
        self.tables_per_step = config.train.micro_batch_tables * config.train.pack_tables
        self.start_step = start_step
        seed = mix_seed(config.priors.seed, "mix", rank, start_step)
        self._coin = np.random.default_rng(mix_seed(seed, "coin"))
        self.sampler = None
        if self.fraction > 0.0:
            self.sampler = PriorSampler(
                config.priors,
                seed=mix_seed(seed, "tasks"),
                text_dim=config.model.text_dim,
                device=device,
                max_cells=config.data.token_budget,
                id_prefix=f"prior/rank{rank}",
            )
        self._real = iter(real_batches)
        self.prior_batches = 0
        self.real_batches = 0

    def __iter__(self) -> "PriorMix":
        return self

    def __next__(self) -> TableBatch:
        produced = self.prior_batches + self.real_batches
        if self.sampler is not None and (self.fraction >= 1.0 or self._coin.random() < self.fraction):
            self.sampler.set_step(self.start_step + produced // self.tables_per_step)
            batch = next(self.sampler)
            self.prior_batches += 1
            return batch
        batch = next(self._real)  # StopIteration ends the mix with the real stream
        self.real_batches += 1
        return batch


def mix_prior_episodes(
    real_batches: Iterable[TableBatch],
    config: RunConfig,
    *,
    rank: int = 0,
    device: torch.device | str = "cpu",
    start_step: int = 0,
) -> PriorMix:
    """Real batches and prior episodes, each batch a prior one with probability `data.prior_fraction`.

    Ends when `real_batches` ends (a training loop's real stream is endless); with a fraction of 1 the real
    stream is never read and the prior stream is endless. Prior episodes are on `device`; real batches are
    passed through as they come. With a fraction of 0 it yields the real batches unchanged and builds no sampler.
    """
    return PriorMix(real_batches, config, rank=rank, device=device, start_step=start_step)
