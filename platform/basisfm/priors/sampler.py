"""`PriorSampler`: an endless, seeded stream of synthetic episodes, made a chunk of tasks at a time.

Chunk `k` of a sampler seeded `s` is `generate_chunk(config, mix_seed(s, k), ...)`: its generator family,
shape and every random draw follow from that seed alone, so the same seed gives the same tasks (see
`basisfm.priors` for exactly what is reproducible where). Rejected tasks are dropped and counted in
`stats`; the curriculum (`set_step`) only changes the row and feature caps of chunks not yet made.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from basisfm.config import PriorConfig
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError
from basisfm.priors.banks import category_bank, name_bank
from basisfm.priors.columns import TaskChunk, build_columns
from basisfm.priors.draws import Draws, mix_seed
from basisfm.priors.episodes import chunk_to_episodes
from basisfm.priors.filters import RejectionCounts, screen
from basisfm.priors.scm import SCM_GENERATORS, select_nodes, with_additive_targets, with_noise_features

GENERATORS = tuple(SCM_GENERATORS)
_MAX_EMPTY_CHUNKS = 50  # chunks in a row with nothing accepted before the config is declared hopeless


@dataclass(frozen=True)
class ChunkShape:
    """What one chunk's tasks share."""

    generator: str
    n_rows: int
    n_features: int
    n_targets: int


def generate_chunk(
    config: PriorConfig, seed: int, shape: ChunkShape, n_tasks: int, device: torch.device | str = "cpu"
) -> TaskChunk:
    """`n_tasks` tasks of `shape` from one SCM family: a pure function of (config, seed, shape, n_tasks, device)."""
    if shape.generator not in SCM_GENERATORS:
        raise ConfigError(f"prior generator {shape.generator!r} is not one of {list(SCM_GENERATORS)}")
    draws = Draws.from_seed(seed, device)
    n_columns = shape.n_features + shape.n_targets
    nodes, layer = SCM_GENERATORS[shape.generator](draws, config, n_tasks, shape.n_rows, n_columns)
    features, targets = select_nodes(draws, nodes, layer, shape.n_features, shape.n_targets)
    targets = with_additive_targets(draws, config, features, targets)
    features = with_noise_features(draws, config, features)
    return build_columns(draws, config, shape.generator, features, targets)


def draw_shape(config: PriorConfig, rng: np.random.Generator, progress: float, max_cells: int | None) -> ChunkShape:
    """A chunk's generator and size: rows and features uniform up to the curriculum's current caps."""
    weights = np.asarray([config.mlp_weight, config.tree_weight], dtype=float)
    generator = GENERATORS[int(rng.choice(len(GENERATORS), p=weights / weights.sum()))]
    if config.curriculum == "linear":
        p = min(max(progress, 0.0), 1.0)
        rows_cap = round(config.curriculum_start_rows + p * (config.max_rows - config.curriculum_start_rows))
        features_cap = round(config.curriculum_start_features + p * (config.max_features - config.curriculum_start_features))
    else:
        rows_cap, features_cap = config.max_rows, config.max_features
    n_targets = int(rng.integers(2, config.max_targets + 1)) if config.max_targets > 1 and rng.random() < config.multi_target_fraction else 1
    n_rows = int(rng.integers(config.min_rows, rows_cap + 1))
    n_features = int(rng.integers(config.min_features, features_cap + 1))
    if max_cells is not None:
        # Fit the batch budget real batches obey: fewer features first, then fewer rows.
        n_features = max(1, min(n_features, max_cells // config.min_rows - n_targets))
        n_rows = max(config.min_rows, min(n_rows, max_cells // (n_features + n_targets)))
    return ChunkShape(generator, n_rows, n_features, n_targets)


class PriorSampler:
    """Synthetic episodes (`TableBatch`) on `device`, chunk after chunk, with curriculum and rejection counts.

    `text_dim` must match the model's (`model.text_dim`); `max_cells` caps rows x columns of a task
    (pass `data.token_budget` to keep prior episodes within the budget real batches obey).
    """

    def __init__(
        self,
        config: PriorConfig,
        *,
        seed: int | None = None,
        text_dim: int = 384,
        device: torch.device | str = "cpu",
        max_cells: int | None = None,
        id_prefix: str = "prior",
    ):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.device = torch.device(device)
        # Where the tasks are made: on CPU (identical everywhere) or on the worker's own device.
        self.generation_device = torch.device("cpu") if config.device == "cpu" else self.device
        self.max_cells = max_cells
        self.id_prefix = id_prefix
        self.stats = RejectionCounts()
        self.chunks_made = 0
        self.step = 0
        self._names = name_bank(config.name_bank_size, text_dim, config.bank_seed).to(self.generation_device)
        self._categories = category_bank(config.category_bank_size, text_dim, config.bank_seed).to(self.generation_device)
        self._ready: deque[TableBatch] = deque()

    @property
    def progress(self) -> float:
        """Curriculum progress in [0, 1]: the training step over `curriculum_steps`."""
        return min(1.0, self.step / self.config.curriculum_steps)

    def set_step(self, step: int) -> None:
        """Tell the curriculum which training step it is; chunks made from now on use its caps."""
        self.step = max(0, int(step))

    def next_chunk(self, shape: ChunkShape | None = None) -> list[TableBatch]:
        """Make one chunk and return its accepted episodes (possibly none); counts go to `stats`."""
        chunk_seed = mix_seed(self.seed, "chunk", self.chunks_made)
        self.chunks_made += 1
        if shape is None:
            shape = draw_shape(self.config, np.random.default_rng(mix_seed(chunk_seed, "shape")), self.progress, self.max_cells)
        with torch.no_grad():
            chunk = generate_chunk(self.config, chunk_seed, shape, self.config.tasks_per_chunk, self.generation_device)
            keep, counts = screen(chunk, self.config.min_learnability)
            episodes = chunk_to_episodes(chunk, keep, self._names, self._categories, id_prefix=self.id_prefix)
        self.stats.add(counts)
        if self.generation_device != self.device:
            episodes = [e.to(self.device) for e in episodes]
        return episodes

    def __iter__(self) -> "PriorSampler":
        return self

    def __next__(self) -> TableBatch:
        empty = 0
        while not self._ready:
            episodes = self.next_chunk()
            self._ready.extend(episodes)
            empty = 0 if episodes else empty + 1
            if empty >= _MAX_EMPTY_CHUNKS:
                raise ConfigError(
                    f"the prior rejected every task of {empty} chunks in a row ({self.stats.as_dict()}); lower "
                    "priors.min_learnability or widen priors.min_features / priors.max_noise_std"
                )
        return self._ready.popleft()

    def sample(self, n: int) -> list[TableBatch]:
        """The next `n` episodes."""
        return [next(self) for _ in range(n)]

