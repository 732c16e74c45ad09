"""The Ray Train launcher of the training loop: what every Ray Train worker runs (`train_loop_per_worker`).

The driver (`trainer.build_trainer`) hands each worker a `LoopSpec`; the worker builds its DeepSpeed engine
in the process group Ray Train made, restores the checkpoint Ray hands over, reads its shard of the Ray
Data pipeline and reports checkpoints through `ray.train.report`. The loop itself is `loop.run_training`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from basisfm.config import RunConfig
from basisfm.train.startup import StartupClock


@dataclass(frozen=True)
class LoopSpec:
    """Everything a worker needs from the driver: typed, so a misspelt key fails on the driver."""

    config: RunConfig
    run_dir: str  # where the fault-injection marker lives (Ray's run directory)
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    datasets: tuple[str, ...] = ("train",)  # the Ray Data datasets the trainer was given
    startup: StartupClock | None = None  # the driver's start-up marks; each worker adds its own to a copy


class RayReporter:
    """Hands a written checkpoint (and its metrics) to Ray Train, which copies it to storage."""

    def report(self, metrics: dict[str, float], step: int, checkpoint_dir: Path) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)),
                         checkpoint_dir_name=f"step_{step:07d}")


def train_loop_per_worker(spec: LoopSpec) -> None:
    """Entry point for `TorchTrainer(functools.partial(train_loop_per_worker, spec))`."""
    config = spec.config
    startup = spec.startup
    if startup is not None:
        startup.mark("loop_entered")
    if not config.train.use_gpu:
        # Before deepspeed is imported: DeepSpeed picks its accelerator once, from this variable.
        os.environ["DS_ACCELERATOR"] = "cpu"
    import ray.train
    import torch

    from basisfm.train.checkpoint import TrainState, restore_sharded
    from basisfm.train.deepspeed_config import build_engine
    from basisfm.train.loop import Worker, packed, run_training, say

    context = ray.train.get_context()
    train = config.train
    # Ray Train has already created the torch process group (gloo on CPU, NCCL on GPU) and set the
    # worker's CUDA device; DeepSpeed adopts both.
    device = torch.device("cuda", torch.cuda.current_device()) if train.use_gpu else torch.device("cpu")
    worker = Worker(context.get_world_rank(), context.get_world_size(), device)
    engine, scheduler = build_engine(config, device)
    if startup is not None:
        startup.mark("engine_ready")

    state = TrainState(step=0, mlflow_run_id=spec.mlflow_run_id)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = restore_sharded(engine, directory)
        state.resumed_from.append(state.step)
        say(worker.rank, f"resumed from {checkpoint.path} at step {state.step}")

    logger = None
    if worker.rank == 0 and spec.mlflow_run_id:
        from basisfm.tracking import TrackingLogger

        logger = TrackingLogger(spec.tracking_uri, spec.mlflow_run_id)
        state.mlflow_run_id = spec.mlflow_run_id
        if logger.skip_logged_steps("train_loss") > state.step:
            say(worker.rank, f"MLflow already holds steps {state.step + 1}-{logger.logged_through} from an attempt "
                             "whose checkpoint was lost; they are redone but not logged twice")

    validation = None
    if "validation" in spec.datasets:
        shard = ray.train.get_dataset_shard("validation")
        validation = lambda: _take(shard, train.validation_batches)  # noqa: E731
    from basisfm.train.data_source import prior_validator, training_tables

    # data.prior_fraction of the batches are synthetic prior episodes generated here, on this worker's device;
    # a prior-only run has no "train" dataset and never asks for its shard.
    tables = training_tables(config, lambda: _endless(ray.train.get_dataset_shard("train")), rank=worker.rank,
                             device=worker.device, start_step=state.step)
    validators = [v for v in (prior_validator(config),) if v is not None]
    last = run_training(config, engine, scheduler, packed(tables, train.pack_tables), RayReporter(), state, worker,
                        Path(spec.run_dir), validation_batches=validation, logger=logger, validators=validators,
                        startup=startup)
    if not last:
        # A rerun of a finished run: its final checkpoint already holds the consolidated model.
        say(worker.rank, f"run already complete at step {state.step}; nothing to train")


def _endless(shard) -> Iterator:
    """Batches of the shard, epoch after epoch. Every rank's shard holds equally many batches (Ray Train's
    equal split), so ranks run out together and no collective is left waiting."""
    from basisfm.data.pipeline import iter_table_batches

    while True:
        produced = 0
        for batch in iter_table_batches(shard):
            produced += 1
            yield batch
        if produced == 0:
            raise RuntimeError("the training shard produced no batches; the corpus's training split is empty or "
                               "smaller than the number of workers (lower train.num_workers or add tables)")


def _take(shard, limit: int) -> list:
    from basisfm.data.pipeline import iter_table_batches

    batches = []
    for batch in iter_table_batches(shard):
        batches.append(batch)
        if len(batches) >= limit:
            break
    return batches
