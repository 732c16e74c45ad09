"""The scaling grid: pretraining runs of several model widths, each for several task budgets (a cosine schedule
spanning exactly its budget, as Hoffmann et al. do), on one prior, each tagged in MLflow as a scaling point."""

from __future__ import annotations

import math
from dataclasses import dataclass

from basisfm.config import RunConfig, with_overrides
from basisfm.errors import ConfigError
from basisfm.scaling.law import ScalingPoint
from basisfm.scaling.records import SCALING_EXPERIMENT, tag_scaling_run

HEAD_WIDTH = 16  # d_model / n_heads for every width, as in the tiny preset (64 / 4)


@dataclass(frozen=True)
class GridRun:
    d_model: int
    tasks: int  # the budget D: prior tasks to train on
    role: str = "grid"  # or "holdout": a run the fit leaves out and predicts

    @property
    def run_name(self) -> str:
        return f"scaling-d{self.d_model}-t{self.tasks}"


def grid_config(base: RunConfig, run: GridRun, experiment: str = SCALING_EXPERIMENT) -> RunConfig:
    """`base` (a prior-only stage config) resized to `run.d_model` and scheduled for exactly `run.tasks` tasks."""
    if run.d_model % HEAD_WIDTH:
        raise ConfigError(f"scaling grid width {run.d_model} must be a multiple of {HEAD_WIDTH} (the head width)")
    per_step = base.train.pack_tables * base.train.micro_batch_tables * base.train.num_workers
    steps = max(1, math.ceil(run.tasks / per_step))
    return with_overrides(base, {
        "model.d_model": run.d_model, "model.n_heads": run.d_model // HEAD_WIDTH,
        "train.steps": steps, "train.warmup_steps": max(1, steps // 20), "train.max_minutes": None,
        "train.validate_every": steps, "train.checkpoint_every": steps, "train.log_every": min(100, steps),
        "train.run_name": run.run_name, "tracking.experiment": experiment, "tracking.register": False,
    })


def parameter_count(checkpoint_dir) -> int:
    from basisfm.model.checkpoint import load_pretrained

    return sum(p.numel() for p in load_pretrained(checkpoint_dir).parameters())


def run_grid(base: RunConfig, runs: list[GridRun], experiment: str = SCALING_EXPERIMENT) -> list[ScalingPoint]:
    """Pretrain each run (a finished one is found again by name and not retrained), tag it, return its point."""
    from basisfm.train import pretrain

    points = []
    for i, run in enumerate(runs, 1):
        config = grid_config(base, run, experiment)
        print(f"[scaling] {i}/{len(runs)} {run.run_name}: d_model {run.d_model}, {run.tasks:,} tasks "
              f"({config.train.steps} steps), {run.role}", flush=True)
        result = pretrain(config)
        if result.run_id is None:
            raise RuntimeError(f"{run.run_name} has no MLflow run (tracking unreachable at {result.tracking_uri}); "
                               "the scaling fit reads its points from MLflow")
        n = parameter_count(result.checkpoint_dir)
        tag_scaling_run(result.tracking_uri, result.run_id, role=run.role, parameters=n)
        points.append(ScalingPoint(run.run_name, n, result.metrics.get("tasks_seen", float(run.tasks)),
                                   result.metrics.get("val_prior_ratio", math.nan), result.metrics.get("wall_s", math.nan)))
        print(f"[scaling] {run.run_name}: N={n:,}, ratio {points[-1].loss:.4f}, {points[-1].seconds:.0f} s", flush=True)
    return points
