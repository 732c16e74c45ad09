"""How many trials fit on the cluster at once: per-trial resources against `ray.cluster_resources()`.

A Ray Train run starts only when all its workers can be placed, so launching more Tune trials than the
limiting resource allows just leaves drivers waiting (Ray's Train+Tune guide); we cap concurrency here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from basisfm.config import RunConfig
from basisfm.errors import ConfigError


def trial_resources(config: RunConfig) -> dict[str, float]:
    """Logical resources one trial holds: its workers' CPUs (and GPUs), plus the CPUs of the Ray Data
    actors that collate its batches, which need their own or never start.

    The Tune function itself only drives the trainer and requests no CPU (see `DRIVER_RESOURCES`).
    """
    train = config.train
    data_cpus = config.data.embed_actors * config.data.cpus_per_actor
    resources = {"CPU": float(train.num_workers * train.cpus_per_worker + data_cpus)}
    if train.use_gpu:
        resources["GPU"] = float(train.num_workers)
    return resources


# The Tune function only waits on `trainer.fit()`: a whole CPU for it would halve the trials a laptop
# runs at once. Tune refuses an all-zero request, so it asks for a little logical memory instead.
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0.0, "memory": float(256 * 1024**2)}


def max_concurrent_trials(config: RunConfig, cluster: Mapping[str, float]) -> int:
    """Trials that can run side by side: the limiting resource's total over one trial's need.

    An explicit `tune.max_concurrent_trials` wins; the result is never above `tune.num_samples`
    and never below 1 (a trial that cannot fit at all is reported by `check_fits` instead).
    """
    if config.tune.max_concurrent_trials is not None:
        return max(1, min(config.tune.max_concurrent_trials, config.tune.num_samples))
    fits = [
        math.floor(cluster.get(name, 0.0) / need + 1e-9)
        for name, need in trial_resources(config).items()
        if need > 0
    ]
    return max(1, min([config.tune.num_samples, *fits]))


def check_fits(config: RunConfig, cluster: Mapping[str, float]) -> None:
    """Raise when even one trial cannot be placed, instead of letting Tune wait forever."""
    for name, need in trial_resources(config).items():
        have = float(cluster.get(name, 0.0))
        if need > have:
            raise ConfigError(
                f"one trial needs {need:g} {name} (train.num_workers={config.train.num_workers} x "
                f"train.cpus_per_worker={config.train.cpus_per_worker}"
                f"{' with train.use_gpu' if name == 'GPU' else f' + data.embed_actors={config.data.embed_actors} x data.cpus_per_actor={config.data.cpus_per_actor:g}'})"
                f" but the Ray cluster has {have:g}; lower those keys or add nodes"
            )
