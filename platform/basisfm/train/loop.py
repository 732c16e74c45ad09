"""The per-worker training loop that Ray Train runs on every rank: DeepSpeed engine, data shard, validation,
sharded checkpoints, and (rank 0 only) MLflow metrics.

Read top to bottom: set up the process group and engine, restore the latest checkpoint if Ray hands one
over, then train step by step; every `validate_every` steps score the held-out tables, every
`checkpoint_every` steps save shards from all ranks and report them to Ray, and at the end write the
consolidated model into the final checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

FAULT_MARKER = "fault_injected.marker"
_FAULT_DELAY_S = 6.0


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point for `TorchTrainer(train_loop_per_worker=...)`. `loop_config` is plain data (see trainer.py)."""
    from basisfm.config import from_dict

    config = from_dict(loop_config["run_config"])
    if not config.train.use_gpu:
        # Before deepspeed is imported: DeepSpeed picks its accelerator once, from this variable.
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed
    import ray.train
    import torch

    from basisfm.losses import build_objective
    from basisfm.model import build_model
    from basisfm.train.checkpoint import CONSOLIDATED_DIR, TrainState, consolidate, restore_sharded, save_sharded
    from basisfm.train.deepspeed_config import build_deepspeed_config, build_optimizer, build_scheduler
    from basisfm.train.evaluate import evaluate_batches

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    train = config.train
    # Ray Train has already created the torch process group (gloo on CPU, NCCL on GPU); DeepSpeed adopts it.
    deepspeed.init_distributed(dist_backend="nccl" if train.use_gpu else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if train.use_gpu else torch.device("cpu")

    # Same seed on every rank: identical initial weights (DeepSpeed also broadcasts rank 0's).
    torch.manual_seed(train.seed)
    model = build_model(config.model)
    objective = build_objective(model, config.model, config.loss)
    optimizer = build_optimizer(objective.parameters(), train)
    engine, _, _, scheduler = deepspeed.initialize(
        model=objective,
        optimizer=optimizer,
        model_parameters=[p for p in objective.parameters() if p.requires_grad] if optimizer is None else None,
        lr_scheduler=lambda opt: build_scheduler(opt, train),
        config=build_deepspeed_config(train),
    )

    state = TrainState(step=0, mlflow_run_id=loop_config.get("mlflow_run_id"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = restore_sharded(engine, directory)
        state.resumed_from.append(state.step)
        _say(rank, f"resumed from {checkpoint.path} at step {state.step}")
    # Dropout and sampled attention draw from torch's RNG: seeded by rank and start step, so each (re)start is
    # reproducible. (Masks and batch order come from the data pipeline's own seeds. On a restart the data
    # stream begins again at the start of the training split rather than where the lost attempt was.)
    torch.manual_seed(train.seed + 1_000_003 * state.step + rank)

    logger = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        from basisfm.tracking import TrackingLogger

        logger = TrackingLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"])
        state.mlflow_run_id = loop_config["mlflow_run_id"]
        if logger.skip_logged_steps("train_loss") > state.step:
            _say(rank, f"MLflow already holds steps {state.step + 1}-{logger.logged_through} from an attempt whose "
                       "checkpoint was lost; they are redone but not logged twice")

    train_batches = _endless(ray.train.get_dataset_shard("train"))
    validation_shard = ray.train.get_dataset_shard("validation") if "validation" in loop_config["datasets"] else None
    validation_batches = None  # collated once, on first use: the same cells at every validation
    run_dir = Path(loop_config["run_dir"])

    progress = _progress(rank, state.step, train.steps)
    last_metrics: dict[str, float] = {}
    step_started = time.perf_counter()
    while state.step < train.steps:
        cells = 0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _ in range(train.micro_batch_tables):
            batch = next(train_batches).to(device)
            result = engine(batch)
            engine.backward(result.loss)
            engine.step()  # steps optimizer + schedule only at the accumulation boundary
            cells += batch.n_cells
            for name, value in {"loss": float(result.loss), **result.metrics}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
        state.step += 1
        _maybe_inject_fault(train.fail_at_step, state.step, rank, world_size, run_dir)

        # Wall time since the previous step's mark: data wait, compute, and the previous step's validation,
        # checkpoint and logging all count, so cells/s is what the run really achieves.
        elapsed = time.perf_counter() - step_started
        step_started = time.perf_counter()
        # Ranks saw different tables, so their metric names can differ (no categorical target, say).
        gathered = _gather_json({"sums": sums, "counts": counts, "cells": cells, "elapsed": elapsed})
        metrics = {f"train_{name}": value for name, value in _pooled_means(gathered).items()}
        step_cells = sum(g["cells"] for g in gathered)
        state.cells_seen += step_cells
        metrics["cells_per_s"] = step_cells / max(max(g["elapsed"] for g in gathered), 1e-9)
        metrics["lr"] = float(scheduler.get_last_lr()[0])

        final = state.step >= train.steps
        if validation_shard is not None and (state.step % train.validate_every == 0 or final):
            if validation_batches is None:
                validation_batches = _take(validation_shard, train.validation_batches)
            metrics.update(evaluate_batches(engine, validation_batches, device=device))
        if logger is not None:
            logger.buffer_metrics(metrics, state.step)
        state.record({k: v for k, v in metrics.items() if k.endswith("loss") or k in ("val_r2", "cells_per_s")}, state.step)
        last_metrics = metrics
        progress.update(metrics)

        if state.step % train.checkpoint_every == 0 or final:
            with tempfile.TemporaryDirectory(prefix="basisfm-ckpt-") as tmp:
                save_sharded(engine, tmp, state, rank)
                if final:
                    consolidate(engine, config.model, Path(tmp) / CONSOLIDATED_DIR, rank)
                ray.train.report(
                    {**metrics, "step": state.step},
                    checkpoint=ray.train.Checkpoint.from_directory(tmp),
                    checkpoint_dir_name=f"step_{state.step:07d}",
                )
            # Only now, with a checkpoint holding these steps, do their metrics reach MLflow.
            if logger is not None:
                logger.flush()
    progress.close()
    if not last_metrics:
        # A rerun of a finished run: its final checkpoint already holds the consolidated model.
        _say(rank, f"run already complete at step {state.step}; nothing to train")


def _gather_json(value: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's `value`, on every rank: JSON bytes through two all-gathers (lengths, then padded bytes)."""
    import torch
    import torch.distributed as dist

    payload = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8)
    world = dist.get_world_size()
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([len(payload)], dtype=torch.int64))
    longest = int(max(length.item() for length in lengths))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: len(payload)] = payload
    received = [torch.zeros(longest, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(received, padded)
    return [json.loads(bytes(r[: int(n.item())].tolist()).decode()) for r, n in zip(received, lengths)]


def _pooled_means(gathered: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over every micro-batch of every rank that reported it."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for part in gathered:
        for name, value in part["sums"].items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + part["counts"][name]
    return {name: sums[name] / counts[name] for name in sorted(sums)}


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


def _maybe_inject_fault(fail_at_step: int | None, step: int, rank: int, world_size: int, run_dir: Path) -> None:
    """Fault test: the last rank dies hard at `fail_at_step`, once per run (the marker survives restarts)."""
    if fail_at_step is None or step != fail_at_step or rank != world_size - 1:
        return
    marker = run_dir / FAULT_MARKER
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"rank {rank} killed itself at step {step}\n")
    # A crash some time after the last checkpoint, as in life: Ray's controller registers reported
    # checkpoints when it polls the workers (every 2 s), and a report still queued in a dead worker is lost.
    time.sleep(_FAULT_DELAY_S)
    print(f"[basisfm] fault injection: rank {rank} exits at step {step}", flush=True)
    os._exit(1)  # no cleanup, no exception: what a crashed or preempted worker looks like


def _say(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[basisfm] {message}", flush=True)


class _progress:
    """tqdm on rank 0 (other ranks stay quiet); a no-op elsewhere."""

    def __init__(self, rank: int, start: int, total: int):
        self.bar = None
        if rank == 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", mininterval=2.0)

    def update(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            shown = {k: f"{metrics[k]:.4g}" for k in ("train_loss", "val_loss", "cells_per_s") if k in metrics}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
