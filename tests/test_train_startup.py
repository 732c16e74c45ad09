"""A run's start-up, timed from its command (`basisfm.train.startup`), and the lean local Ray cluster a run starts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from basisfm.train.startup import PHASES, StartupClock

STAGE1 = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "icl" / "stage1.yaml"


def test_the_clock_keeps_each_phase_once_in_phase_order_and_refuses_an_unknown_one(monkeypatch):
    import types

    from basisfm.train import startup

    now = iter([105.0, 101.0, 103.0, 120.0])
    monkeypatch.setattr(startup, "time", types.SimpleNamespace(time=lambda: next(now)))
    clock = StartupClock(job_started=100.0)
    clock.mark("first_step")
    clock.mark("tracking_ready")
    clock.mark("engine_ready")
    clock.mark("first_step")  # a second first step (a restarted attempt's) does not move the first
    assert clock.seconds() == {"tracking_ready": 1.0, "engine_ready": 3.0, "first_step": 5.0}
    assert clock.metrics() == {"startup_tracking_ready_s": 1.0, "startup_engine_ready_s": 3.0, "startup_first_step_s": 5.0}
    assert clock.summary() == "first step 5.0 s after the command (tracking ready 1.0, engine ready 3.0)"
    with pytest.raises(ValueError, match="unknown start-up phase 'ray_started'"):
        clock.mark("ray_started")


def test_a_local_run_logs_its_start_up_once_with_the_first_window(tmp_path, capsys):
    from basisfm.config import load_config
    from basisfm.tracking.run_directory import read_metrics
    from basisfm.train import pretrain

    config = load_config(STAGE1, [
        f"train.storage_path={tmp_path / 'runs'}", f"tracking.local_dir={tmp_path / 'mlflow'}", "tracking.register=false",
        "train.steps=4", "train.warmup_steps=1", "train.pack_tables=2", "train.validate_every=4", "train.log_every=2",
        "train.checkpoint_every=4", "train.prior_validation_tasks=4", "priors.tasks_per_chunk=4"])
    started = time.time() - 30.0  # as if the command had started 30 s before pretrain was called
    result = pretrain(config, startup=StartupClock(job_started=started))

    logged = [(name, value, step) for name, value, step in read_metrics(result.run_dir) if name.startswith("startup_")]
    assert {step for _, _, step in logged} == {2}  # the first window only
    seconds = {name[len("startup_"):-len("_s")]: value for name, value, _ in logged}
    assert set(seconds) == {"tracking_ready", "loop_entered", "engine_ready", "first_step"}  # no ray_ready: no Ray
    ordered = [seconds[p] for p in PHASES if p in seconds]
    assert ordered == sorted(ordered) and 30.0 <= ordered[0] and ordered[-1] < 30.0 + 600
    history = json.loads((result.run_dir / "artifacts" / "train_state.json").read_text())["history"]
    assert history["startup_first_step_s"] == [[2, seconds["first_step"]]]
    assert f"[basisfm] first step {seconds['first_step']:.1f} s after the command" in capsys.readouterr().out


def test_a_cluster_of_our_own_starts_no_idle_workers_and_no_preemption_watcher(monkeypatch):
    import ray

    from basisfm.config import RunConfig
    from basisfm.train import trainer

    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: calls.append(kwargs))
    assert trainer.ensure_ray(RunConfig()) is True
    (kwargs,) = calls
    assert kwargs["address"] == "local" and kwargs["include_dashboard"] is False
    assert kwargs["_system_config"] == {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
    assert kwargs["runtime_env"]["env_vars"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"

    monkeypatch.setenv("RAY_ADDRESS", "auto")  # `ray job submit`: the cluster is someone else's, left as it is
    assert trainer.ensure_ray(RunConfig()) is False
    assert calls[-1] == {}


def test_the_trainer_for_a_cluster_of_our_own_leaves_out_only_the_placement_group_cleaner(tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from basisfm.train.trainer import own_cluster_trainer

    kwargs = {"scaling_config": ray.train.ScalingConfig(num_workers=1),
              "run_config": ray.train.RunConfig(name="callbacks", storage_path=str(tmp_path))}
    stock = [type(c).__name__ for c in TorchTrainer(lambda: None, **kwargs)._create_default_callbacks()]
    ours = [type(c).__name__ for c in own_cluster_trainer()(lambda: None, **kwargs)._create_default_callbacks()]
    assert "PlacementGroupCleanerCallback" in stock  # if Ray renames it, this test says so
    assert ours == [name for name in stock if name != "PlacementGroupCleanerCallback"]
