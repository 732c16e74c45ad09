"""The local launcher of the training loop: one process, no Ray (a single-GPU machine, or the CPU).

Same config, same loop (`loop.run_training`), same DeepSpeed engine and checkpoints as Ray Train's
launcher: a one-rank process group, the data source its config selects (`basisfm.train.data_source`: the corpus collated in a background
thread by the plan the Ray Data pipeline follows, `data.pipeline.plan_epochs` + `collate_record`; prior episodes;
or both), and checkpoints written to `<run dir>/step_NNNNNNN/` (the layout Ray Train uses), the newest of which a
rerun resumes from. Metrics go to `<run dir>/metrics.jsonl` always and to MLflow when a run is open, so a machine
without MLflow keeps a record `jobs.register` imports later.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from basisfm.config import RunConfig
from basisfm.train.checkpoint import TRAIN_STATE_FILE
from basisfm.train.startup import StartupClock

CHECKPOINT_PREFIX = "step_"


@dataclass
class LocalRun:
    final_checkpoint: Path  # the last step's checkpoint directory (holds consolidated/ and train_state.json)
    metrics: dict[str, float]  # the last reduced metrics ({} when the run was already complete)


class LocalReporter:
    """Moves each checkpoint into the run directory and keeps the newest `keep` of them."""

    def __init__(self, run_dir: Path, keep: int):
        self.run_dir = run_dir
        self.keep = keep
        self.metrics: dict[str, float] = {}

    def report(self, metrics: dict[str, float], step: int, checkpoint_dir: Path) -> None:
        target = self.run_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(checkpoint_dir, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # a checkpoint directory is complete or absent, never half-written
        self.metrics = dict(metrics)
        for old in checkpoints(self.run_dir)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoint directories, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / TRAIN_STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def init_single_process_group(use_gpu: bool) -> None:
    """A one-rank torch process group (DeepSpeed needs one), in memory: no port, no rendezvous."""
    import torch
    import torch.distributed as dist

    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ.setdefault(name, value)
    if use_gpu:
        torch.cuda.set_device(0)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo", store=dist.HashStore(), rank=0, world_size=1)


def local_batches(config: RunConfig, prefetch: int = 4) -> Iterator:
    """The training split's TableBatches, epoch after epoch, collated by a background thread.

    Collation (Parquet read, string embedding look-ups, numpy) runs beside the training step; `prefetch`
    bounds how far it runs ahead.
    """
    from basisfm.data.pipeline import collate_record, plan_epochs
    from basisfm.encoding.text import StringEmbedder

    plan = plan_epochs(config.corpus.out_dir, config.data, "train")
    embedder = StringEmbedder(Path(config.data.embedding_cache_dir), text_top_k=config.data.text_top_k)
    ready: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                produced = 0
                for record, seed in plan:
                    for batch in collate_record(config.corpus.out_dir, record, config.data, embedder, seed=seed):
                        produced += 1
                        while not stop.is_set():
                            try:
                                ready.put(batch, timeout=0.5)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                if produced == 0:
                    raise RuntimeError("the corpus's training split produced no batches; add tables or lower "
                                       "data.min_rows")
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, name="basisfm-collate", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def train_locally(config: RunConfig, run_dir: Path, *, tracking_uri: str | None = None,
                  mlflow_run_id: str | None = None, startup: StartupClock | None = None) -> LocalRun:
    """Train `config` in this process; resume from the newest checkpoint under `run_dir` if there is one.
    `startup` (the driver's start-up marks) gets this launcher's phases and the first step."""
    if startup is not None:
        startup.mark("loop_entered")
    train = config.train
    if not train.use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported
    import torch

    from basisfm.train.checkpoint import TrainState, restore_sharded
    from basisfm.train.deepspeed_config import build_engine
    from basisfm.train.evaluate import load_validation_batches
    from basisfm.train.loop import Worker, packed, run_training, say

    init_single_process_group(train.use_gpu)
    device = torch.device("cuda", 0) if train.use_gpu else torch.device("cpu")
    worker = Worker(0, 1, device)
    engine, scheduler = build_engine(config, device)
    if startup is not None:
        startup.mark("engine_ready")

    run_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState(step=0, mlflow_run_id=mlflow_run_id)
    existing = checkpoints(run_dir)
    if existing:
        state = restore_sharded(engine, existing[-1])
        state.resumed_from.append(state.step)
        say(0, f"resumed from {existing[-1]} at step {state.step}")
    from basisfm.tracking.run_directory import MetricFanOut, RunDirectoryLog
    from basisfm.train.data_source import needs_corpus, prior_validator, training_tables

    mlflow_logger = None
    if mlflow_run_id:
        from basisfm.tracking.mlflow_logger import TrackingLogger

        mlflow_logger = TrackingLogger(tracking_uri, mlflow_run_id)
        state.mlflow_run_id = mlflow_run_id
        mlflow_logger.skip_logged_steps("train_loss")
    logger = MetricFanOut(RunDirectoryLog(run_dir), mlflow_logger)

    validation = None
    if needs_corpus(config) and config.data.validation_tables > 0:
        validation = lambda: load_validation_batches(config, train.validation_batches)  # noqa: E731
    validators = [v for v in (prior_validator(config),) if v is not None]
    reporter = LocalReporter(run_dir, train.keep_checkpoints)
    opened: list = []

    def corpus_tables():
        opened.append(local_batches(config))
        return opened[-1]

    try:
        tables = training_tables(config, corpus_tables, rank=0, device=worker.device, start_step=state.step)
        metrics = run_training(config, engine, scheduler, packed(tables, train.pack_tables), reporter, state, worker,
                               run_dir, validation_batches=validation, logger=logger, validators=validators,
                               startup=startup)
    finally:
        for stream in opened:
            stream.close()
    final = checkpoints(run_dir)
    if not final:
        raise RuntimeError(f"local run in {run_dir} wrote no checkpoint")
    if not metrics:
        say(0, f"run already complete at step {state.step}; nothing to train")
    return LocalRun(final_checkpoint=final[-1], metrics=reporter.metrics or metrics)
