"""The training loop, launcher-free: data iterator, DeepSpeed engine and reporter in; the same code for every rank.

Read top to bottom: `run_training` steps the engine over micro-batches (each a list of `train.pack_tables`
tables); every `log_every` steps it reduces the window's metrics across ranks on the device (the only
host sync of the loop besides validation and checkpoints); every `validate_every` steps it scores the
held-out tables and runs the other validators (held-out prior tasks: `val_prior_ratio`); every
`checkpoint_every` steps it saves shards from all ranks and hands the directory to the reporter; at the end
(`train.steps`, or `train.max_minutes` on the clock) it writes the consolidated model into the final checkpoint. The launchers
(`ray_launcher.train_loop_per_worker`, `local_launcher.train_locally`) build the engine, the data iterator
and the reporter. Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import torch

from basisfm.config import RunConfig
from basisfm.data.batch import TableBatch
from basisfm.train.checkpoint import CONSOLIDATED_DIR, TrainState, consolidate, save_sharded
from basisfm.train.startup import METRIC_PREFIX as STARTUP_METRIC_PREFIX
from basisfm.train.startup import StartupClock

FAULT_MARKER = "fault_injected.marker"
_FAULT_DELAY_S = 6.0


class Reporter(Protocol):
    """Where a launcher takes metrics and checkpoints: Ray Train's `report`, or the local run directory."""

    def report(self, metrics: dict[str, float], step: int, checkpoint_dir: Path) -> None:
        """Called on every rank with a checkpoint every rank has just written (a temporary directory)."""


@dataclasses.dataclass
class Worker:
    """Who this process is: rank, world size and the device its engine lives on."""

    rank: int
    world_size: int
    device: torch.device


def run_training(config: RunConfig, engine, scheduler, batches: Iterator[list[TableBatch]], reporter: Reporter,
                 state: TrainState, worker: Worker, run_dir: Path,
                 validation_batches: Callable[[], list[TableBatch]] | None = None, logger=None,
                 validators: Sequence[Callable[[object, torch.device], dict[str, float]]] = (),
                 startup: StartupClock | None = None) -> dict[str, float]:
    """Train from `state.step` to `train.steps` (or until `train.max_minutes` have passed); returns the last
    reduced metrics ({} if nothing was left).

    `batches` yields micro-batches (lists of tables) forever; `validation_batches` returns the held-out
    batches (every rank the same ones: ZeRO-3's forward is collective); `validators` score the engine on other
    held-out sets (`validate(engine, device) -> metrics`, every rank the same); `logger` is rank 0's metric sink
    (MLflow, the run directory, or both: `buffer_metrics` and `flush`). `startup` (the launcher's start-up marks)
    gets its first step marked; rank 0 says the summary and logs the marks with the first window's metrics.
    """
    train = config.train
    # Dropout and sampled attention draw from torch's RNG: seeded by rank and start step, so each (re)start is
    # reproducible. (Masks and batch order come from the data's own seeds. On a restart the data stream
    # begins again at the start of the training split rather than where the lost attempt was.)
    torch.manual_seed(train.seed + 1_000_003 * state.step + worker.rank)
    validation: list[TableBatch] | None = None  # collated once, on first use: the same cells every time
    progress = _Progress(worker.rank, state.step, train.steps)
    window = MetricWindow(worker.device)
    window_start_step = state.step
    last: dict[str, float] = {}
    clock = _Clock(train.max_minutes, worker.device)
    pending_startup: dict[str, float] = {}  # the start-up marks, logged once with the first window
    while state.step < train.steps:
        for _ in range(train.micro_batch_tables):
            tables = next(batches)
            losses = []
            for table in tables:
                result = engine(to_device(table, worker.device))
                losses.append(result.loss)
                window.add(result.loss, result.metrics, table.n_cells)
                state.tables_seen += 1
            # One backward per micro-batch: with ZeRO-2/3 each backward reduces gradients across ranks.
            engine.backward(losses[0] if len(losses) == 1 else torch.stack(losses).mean())
            engine.step()  # steps optimizer + schedule only at the accumulation boundary
        state.step += 1
        if startup is not None and "first_step" not in startup.marks:
            startup.mark("first_step")
            say(worker.rank, startup.summary())
            pending_startup = startup.metrics()
        _maybe_inject_fault(train.fail_at_step, state.step, worker, run_dir)

        final = state.step >= train.steps or clock.out_of_time()
        validate = (validation_batches is not None or bool(validators)) and (state.step % train.validate_every == 0 or final)
        checkpoint = state.step % train.checkpoint_every == 0 or final
        if not (state.step % train.log_every == 0 or validate or checkpoint):
            progress.update(None)
            continue
        metrics = window.reduce(steps=state.step - window_start_step)
        window_start_step = state.step
        state.cells_seen += int(metrics.pop("cells"))
        metrics["lr"] = float(scheduler.get_last_lr()[0])
        metrics["tasks_seen"] = float(state.tables_seen * worker.world_size)  # ranks step in lockstep
        metrics["wall_minutes"] = clock.minutes()
        metrics.update(pending_startup)
        pending_startup = {}
        if validate:
            if validation_batches is not None:
                if validation is None:
                    validation = validation_batches()
                from basisfm.train.evaluate import evaluate_batches

                metrics.update(evaluate_batches(engine, validation, device=worker.device))
                if config.data.task == "episodes":  # held-out corpus tables read in context: the prior's ratio on real data
                    from basisfm.train.prior_validation import held_out_ratio

                    metrics.update(held_out_ratio(engine, validation, worker.device, prefix="val_real_"))
            for validator in validators:
                metrics.update(validator(engine, worker.device))
        if logger is not None:
            logger.buffer_metrics(metrics, state.step)
        state.record({k: v for k, v in metrics.items() if k.endswith(("loss", "_ratio"))
                      or k in ("val_r2", "cells_per_s", "steps_per_s", "tasks_seen", "wall_minutes")
                      or k.startswith(STARTUP_METRIC_PREFIX)}, state.step)
        last = metrics
        progress.update(metrics)

        if checkpoint:
            with tempfile.TemporaryDirectory(prefix="basisfm-ckpt-") as tmp:
                save_sharded(engine, tmp, state, worker.rank)
                if final:
                    consolidate(engine, config.model, Path(tmp) / CONSOLIDATED_DIR, worker.rank, data=config.data)
                reporter.report({**metrics, "step": state.step}, state.step, Path(tmp))
            # Only now, with a checkpoint holding these steps, do their metrics reach MLflow.
            if logger is not None:
                logger.flush()
        if final:
            break
    progress.close()
    return last


class _Clock:
    """`train.max_minutes` as a stop signal every rank agrees on: rank 0's clock decides, broadcast each step when
    there are several ranks (their clocks differ by a step's skew; a rank that stopped alone would hang the rest)."""

    def __init__(self, max_minutes: float | None, device: torch.device):
        self.device = device
        self.started = time.perf_counter()
        self.deadline = self.started + 60.0 * max_minutes if max_minutes is not None else None

    def minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60.0

    def out_of_time(self) -> bool:
        if self.deadline is None:
            return False
        import torch.distributed as dist

        late = time.perf_counter() >= self.deadline
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([1.0 if late else 0.0], device=self.device)  # NCCL broadcasts device tensors
            dist.broadcast(flag, src=0)
            late = bool(flag.item())
        return late


class MetricWindow:
    """Training metrics since the last reduction, kept where they are made.

    The loss stays a device tensor (summing it costs no sync); the objective's other metrics are host
    floats already. `reduce` is collective: every rank calls it at the same steps.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.tables = 0
        self.cells = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, metrics: dict[str, float], cells: int) -> None:
        self.loss_sum += loss.detach().to(torch.float64)
        self.tables += 1
        self.cells += cells
        for name, value in metrics.items():
            if name != "loss":
                self.sums[name] = self.sums.get(name, 0.0) + float(value)
                self.counts[name] = self.counts.get(name, 0) + 1

    def reduce(self, steps: int = 0) -> dict[str, float]:
        """{"train_<name>": mean over every table of every rank that reported it, "cells": all ranks' cells,
        "cells_per_s": those cells over this window's wall time, "steps_per_s": `steps` optimizer steps over
        it}; starts a new window. Wall time counts everything since the last reduction (data wait, compute,
        validation, checkpoints), so the rates are what the run really achieves."""
        import torch.distributed as dist

        # Ranks saw different tables, so their metric names can differ (no categorical target, say).
        names = sorted(self.sums)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            every: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(every, names)
            names = sorted({name for part in every for name in part})
        host = [float(self.tables), float(self.cells)]
        host += [self.sums.get(name, 0.0) for name in names] + [float(self.counts.get(name, 0)) for name in names]
        vector = torch.cat([self.loss_sum.reshape(1), torch.tensor(host, dtype=torch.float64).to(self.device)])
        if distributed:
            dist.all_reduce(vector)
        values = vector.tolist()  # the one device-to-host read of the window
        elapsed = time.perf_counter() - self.started
        loss_sum, tables, cells = values[0], values[1], values[2]
        sums, counts = values[3:3 + len(names)], values[3 + len(names):]
        out = {"train_loss": loss_sum / max(tables, 1.0)}
        out.update({f"train_{name}": s / c for name, s, c in zip(names, sums, counts) if c > 0})
        out["cells"] = cells
        out["cells_per_s"] = cells / max(elapsed, 1e-9)
        out["steps_per_s"] = steps / max(elapsed, 1e-9)
        self._reset()
        return out


def packed(tables: Iterable[TableBatch], pack: int) -> Iterator[list[TableBatch]]:
    """Consecutive tables in lists of `pack` (the micro-batches of `train.pack_tables`)."""
    group: list[TableBatch] = []
    for table in tables:
        group.append(table)
        if len(group) == pack:
            yield group
            group = []
    if group:
        yield group


def to_device(batch: TableBatch, device: torch.device) -> TableBatch:
    """`batch` on `device`; on CUDA through pinned memory, so the copies queue behind compute instead of
    waiting for it."""
    if device.type != "cuda":
        return batch.to(device)
    from basisfm.data.batch import TENSOR_FIELDS

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor.pin_memory() if tensor.device.type == "cpu" else tensor).to(device, non_blocking=True)

    return dataclasses.replace(batch, **{name: move(getattr(batch, name)) for name in TENSOR_FIELDS})


def _maybe_inject_fault(fail_at_step: int | None, step: int, worker: Worker, run_dir: Path) -> None:
    """Fault test: the last rank dies hard at `fail_at_step`, once per run (the marker survives restarts)."""
    if fail_at_step is None or step != fail_at_step or worker.rank != worker.world_size - 1:
        return
    marker = run_dir / FAULT_MARKER
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"rank {worker.rank} killed itself at step {step}\n")
    # A crash some time after the last checkpoint, as in life: Ray's controller registers reported
    # checkpoints when it polls the workers (every 2 s), and a report still queued in a dead worker is lost.
    time.sleep(_FAULT_DELAY_S)
    print(f"[basisfm] fault injection: rank {worker.rank} exits at step {step}", flush=True)
    os._exit(1)  # no cleanup, no exception: what a crashed or preempted worker looks like


def say(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[basisfm] {message}", flush=True)


class _Progress:
    """A progress bar on rank 0 (other ranks stay quiet; `basisfm.progress`: it redraws only on a terminal)."""

    def __init__(self, rank: int, start: int, total: int):
        self.bar = None
        if rank == 0:
            from basisfm.progress import progress_bar

            self.bar = progress_bar(total=total, initial=start, desc="pretrain", unit="step", mininterval=2.0)

    def update(self, metrics: dict[str, float] | None) -> None:
        if self.bar is not None:
            if metrics:
                shown = {k: f"{metrics[k]:.4g}" for k in ("train_loss", "val_loss", "cells_per_s") if k in metrics}
                self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
