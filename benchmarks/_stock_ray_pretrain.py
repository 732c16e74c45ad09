"""`jobs.pretrain` with Ray Train as it comes: the baseline row of `benchmarks.launcher_overhead`.

The same command with basisfm's trimming of its own local cluster undone (`trainer.ensure_ray`'s `_system_config`,
the preemption watcher's env var, `trainer.own_cluster_trainer`), so the benchmark measures what the trimming saves
side by side, under the same load. Run as `python -m benchmarks._stock_ray_pretrain <jobs.pretrain arguments>`.
"""

from __future__ import annotations

import functools


def undo_trimming() -> None:
    import ray
    from ray.train.torch import TorchTrainer

    from basisfm.train import trainer

    stock_init = ray.init

    @functools.wraps(stock_init)
    def init(*args, **kwargs):
        kwargs.pop("_system_config", None)
        env = dict(kwargs.get("runtime_env", {}).get("env_vars", {}))
        env.pop("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", None)
        if "runtime_env" in kwargs:
            kwargs["runtime_env"] = {**kwargs["runtime_env"], "env_vars": env}
        return stock_init(*args, **kwargs)

    ray.init = init
    trainer.own_cluster_trainer = lambda: TorchTrainer


if __name__ == "__main__":
    from jobs._cli import run_main
    from jobs.pretrain import main

    undo_trimming()
    run_main(main)
