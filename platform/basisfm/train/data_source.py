"""What a run trains on, chosen from its config: corpus tables, corpus episodes, prior episodes, or a mix.

| data.task      | data.prior_fraction | source            | needs a corpus on disk |
| masked_cells   | 0                   | corpus_tables     | yes (the per-row model) |
| episodes       | 0                   | corpus_episodes   | yes                     |
| either         | 1                   | prior_episodes    | no                      |
| either         | in (0, 1)           | mix               | yes                     |

Both launchers build their stream here, so a stage behaves the same under Ray Train and in one local process.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Literal

import torch

from basisfm.config import RunConfig
from basisfm.data.batch import TableBatch

DataSource = Literal["corpus_tables", "corpus_episodes", "prior_episodes", "mix"]


def data_source(config: RunConfig) -> DataSource:
    fraction = config.data.prior_fraction
    if fraction >= 1.0:
        return "prior_episodes"
    if fraction > 0.0:
        return "mix"
    return "corpus_episodes" if config.data.task == "episodes" else "corpus_tables"


def needs_corpus(config: RunConfig) -> bool:
    """A prior-only run reads no table: it needs no ingested corpus, and validates on held-out prior tasks only."""
    return data_source(config) != "prior_episodes"


def training_tables(config: RunConfig, real_tables: Callable[[], Iterable[TableBatch]], *, rank: int,
                    device: torch.device | str, start_step: int) -> Iterator[TableBatch]:
    """The endless stream of training tables (episodes) for this rank. `real_tables` is called only when the
    source reads the corpus, so a prior-only run never opens it."""
    from basisfm.priors import mix_prior_episodes

    real = iter(()) if not needs_corpus(config) else real_tables()
    return mix_prior_episodes(real, config, rank=rank, device=device, start_step=start_step)


def prior_validator(config: RunConfig) -> Callable | None:
    """`validate(objective, device) -> {"val_prior_ratio", "val_prior_accuracy"}` on `train.prior_validation_tasks`
    held-out prior tasks (made on first use), or None when the run trains on no prior episodes."""
    n_tasks = config.train.prior_validation_tasks
    if config.data.prior_fraction <= 0.0 or n_tasks == 0:
        return None
    from basisfm.train.prior_validation import held_out_prior_tasks, held_out_ratio

    tasks: list[TableBatch] = []

    def validate(objective, device) -> dict[str, float]:
        if not tasks:
            tasks.extend(held_out_prior_tasks(config.priors, n_tasks, text_dim=config.model.text_dim,
                                              max_cells=config.data.token_budget))
        return held_out_ratio(objective, tasks, device)

    return validate
