"""benchmarks.launcher_overhead: its steady-state rate, its ratios and the commands it times (no run: they take minutes)."""

from __future__ import annotations

import math

import pytest

from benchmarks.launcher_overhead import Run, render_markdown, run_command, steady_rate, summarise


def _run(label: str, workers: int, rates: list[float], first_step: float, wall: float = 60.0) -> Run:
    return Run(label=label, launcher="local" if label == "local" else "ray", workers=workers, steps=40,
               samples_per_step=8 * workers, window_steps_per_s=rates,
               startup_s={"tracking_ready": 5.0, "engine_ready": first_step - 1.0, "first_step": first_step},
               last_step_s=wall - 5.0, wall_s=wall)


def test_the_steady_rate_leaves_out_the_first_and_last_windows_and_weighs_windows_by_their_time():
    # Windows of equal steps at 2 and 4 steps/s take 1/2 and 1/4 of the time per step: 2 steps in 0.75 -> 2.667.
    assert steady_rate([0.1, 2.0, 4.0, 100.0]) == pytest.approx(2 / 0.75)
    with pytest.raises(ValueError, match="at least 3 log windows"):
        steady_rate([1.0, 2.0])


def test_the_ratios_compare_the_best_steady_run_of_each_configuration_and_the_median_start():
    runs = {"local": [_run("local", 1, [1, 5, 5, 1], 10.0), _run("local", 1, [1, 4, 4, 1], 12.0)],
            "ray_1": [_run("ray_1", 1, [1, 4.5, 4.5, 1], 30.0), _run("ray_1", 1, [1, 4, 4, 1], 20.0)],
            "ray_2": [_run("ray_2", 2, [1, 3, 3, 1], 40.0)]}
    summary = summarise(runs)
    assert summary["ray_1_over_local"] == pytest.approx(4.5 / 5)
    assert summary["ray_start_s"] == 25.0 and summary["local_start_s"] == 11.0
    assert summary["ray_2_over_ray_1"] == pytest.approx(3 * 16 / (4.5 * 8))
    page = render_markdown(runs, summary, {"arguments": "--steps 40"}, ["## Findings"])
    assert "Headline: one Ray worker 0.90x the local launcher's steady steps/s" in page
    assert "| first step | 11.0 | 25.0 | 40.0 |" in page and page.splitlines()[2] == "Status: current"
    assert math.isclose(summary["ray_1_teardown_s"], 5.0)


def test_each_configuration_runs_jobs_pretrain_on_the_prior_stage_and_the_stock_row_undoes_only_the_trimming(
        tmp_path, monkeypatch):
    command = run_command("ray_2", "ray_2-0", "ray", 2, 200, 20, tmp_path)
    assert command[1:3] == ["-m", "jobs.pretrain"] and command[command.index("--config") + 1].endswith("icl/stage1.yaml")
    assert command[command.index("--workers") + 1] == "2" and command[command.index("--run-name") + 1] == "ray_2-0"
    assert f"train.storage_path={tmp_path}" in command and "train.checkpoint_every=200" in command
    assert run_command("ray_1_stock", "s", "ray", 1, 200, 20, tmp_path)[2] == "benchmarks._stock_ray_pretrain"

    import ray
    from ray.train.torch import TorchTrainer

    from basisfm.train import trainer
    from benchmarks._stock_ray_pretrain import undo_trimming

    calls = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(trainer, "own_cluster_trainer", trainer.own_cluster_trainer)  # restored after the test
    undo_trimming()
    ray.init(address="local", _system_config={"enable_worker_prestart": False},
             runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "DS_ACCELERATOR": "cpu"},
                          "worker_process_setup_hook": "hook"})
    assert calls == [{"address": "local", "runtime_env": {"env_vars": {"DS_ACCELERATOR": "cpu"},
                                                          "worker_process_setup_hook": "hook"}}]
    assert trainer.own_cluster_trainer() is TorchTrainer


def test_the_pair_of_local_runs_is_the_ceiling_two_workers_are_measured_against(tmp_path, monkeypatch):
    import json
    import subprocess

    from benchmarks import launcher_overhead

    class FakePopen:  # each command writes the record jobs.pretrain leaves: its window rates and start-up marks
        def __init__(self, command, **kwargs):
            name = command[command.index("--run-name") + 1]
            rates = [1.0, 3.0, 3.0, 1.0] if name.endswith("-a") else [1.0, 2.0, 2.0, 1.0]
            run = tmp_path / name
            (run / "artifacts").mkdir(parents=True)
            history = {"steps_per_s": [[10 * (i + 1), r] for i, r in enumerate(rates)],
                       "startup_first_step_s": [[1, 9.0 if name.endswith("-a") else 11.0]]}
            (run / "artifacts" / "train_state.json").write_text(json.dumps({"history": history}))
            (run / "params.json").write_text(json.dumps({"train.micro_batch_tables": 1, "train.pack_tables": 8}))
            self.args, self.returncode = command, 0

        def communicate(self):
            return "", None

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    pair = launcher_overhead.measure_pair("local_pair", "local_pair-0", 40, 10, tmp_path)
    assert pair.window_steps_per_s == [2.0, 5.0, 5.0, 2.0] and pair.samples_per_step == 8
    assert pair.steady_samples_per_s == pytest.approx(40.0) and pair.first_step_s == 11.0
    runs = {"local": [_run("local", 1, [1, 3, 3, 1], 10.0)], "ray_1": [_run("ray_1", 1, [1, 3, 3, 1], 20.0)],
            "ray_2": [_run("ray_2", 2, [1, 2, 2, 1], 21.0)], "local_pair": [pair]}
    summary = summarise(runs)
    assert summary["local_pair_over_local"] == pytest.approx(40 / 24)
    assert summary["ray_2_over_local_pair"] == pytest.approx(32 / 40)
    assert "two Ray workers reach 0.80 of it" in render_markdown(runs, summary, {"arguments": ""}, [])
