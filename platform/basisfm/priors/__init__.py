"""Synthetic priors: millions of seeded tabular tasks made where they are trained, in the episode contract.

    from basisfm.priors import PriorSampler, mix_prior_episodes
    sampler = PriorSampler(config.priors, seed=0, device="cuda")   # endless TableBatch episodes
    batches = mix_prior_episodes(real_batches, config, rank=rank, device=device, start_step=step)

Tasks come from random MLP structural causal models and random tree-ensemble ones (`scm`), are turned into
columns (`columns`: categorical by quantising and relabelling, skewed / heavy-tailed / integer numerics,
MCAR and MNAR missing cells, regression or classification targets, one or several per task), screened
(`filters`: non-finite, constant or unlearnable targets are rejected and counted), and handed out as
`TableBatch` episodes (`episodes`) whose names and category labels come from fixed random banks (`banks`),
so nothing here runs the sentence encoder.

Reproducibility: a chunk is a function of its seed. With `priors.device: cpu` (the default) every draw comes
from numpy's and torch's CPU generators (the same numbers on every machine) and every operation runs on CPU:
the task structure is identical everywhere, the cell values bit-identical on the same instruction set and
torch build and equal to float rounding across instruction sets (docs/priors.md says what that can flip).
With `priors.device: worker` tasks are made on the worker's device with a generator on that device:
reproducible run to run on the same kind of device, but a GPU's random stream differs from the CPU's.
"""

from basisfm.priors.columns import TaskChunk
from basisfm.priors.filters import RejectionCounts
from basisfm.priors.mixing import PriorMix, mix_prior_episodes
from basisfm.priors.sampler import GENERATORS, ChunkShape, PriorSampler, draw_shape, generate_chunk

__all__ = [
    "GENERATORS",
    "ChunkShape",
    "PriorMix",
    "PriorSampler",
    "RejectionCounts",
    "TaskChunk",
    "draw_shape",
    "generate_chunk",
    "mix_prior_episodes",
]
