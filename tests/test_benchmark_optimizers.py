"""benchmarks.optimizers' comparison: validation curves read from a run directory, and the equal-steps and
equal-time points, where time is steps x each optimizer's interleaved cost per step (not the run's own clock)."""

from __future__ import annotations

from benchmarks.optimizers import Arm, compare, table, validation_curve


def test_a_run_directorys_validations_become_the_curve_and_training_only_steps_are_skipped(tmp_path):
    from basisfm.tracking.run_directory import RunDirectoryLog

    log = RunDirectoryLog(tmp_path)
    log.buffer_metrics({"train_loss": 3.0, "wall_minutes": 0.1, "tasks_seen": 80}, step=10)  # no validation
    log.buffer_metrics({"val_prior_ratio": 0.99, "wall_minutes": 0.2, "tasks_seen": 160}, step=20)
    log.buffer_metrics({"val_prior_ratio": 0.90, "wall_minutes": 0.4, "tasks_seen": 320}, step=40)
    log.flush()
    assert validation_curve(tmp_path) == [(20, 0.2, 160.0, 0.99), (40, 0.4, 320.0, 0.90)]


def test_equal_time_uses_the_measured_step_cost_so_a_slower_step_is_compared_earlier():
    cost = {"adamw": 1.0, "muon": 2.0}  # seconds per step
    adamw = Arm(1, "adamw", 3e-3, "a", curve=[(50, 9.0, 400, 0.99), (100, 1.0, 800, 0.95)])  # the run's clock is ignored
    muon = Arm(1, "muon", 1e-2, "m", curve=[(50, 1.0, 400, 0.90), (100, 2.0, 800, 0.80)])
    steps, seconds = compare([adamw, muon], cost)
    assert (steps, seconds) == (100, 100.0)  # AdamW's 100 steps cost 100 s; Muon's cost 200 s
    assert muon.ratio_at_seconds(seconds, cost) == 0.90  # in 100 s Muon made 50 steps
    assert adamw.ratio_at_seconds(seconds, cost) == 0.95 and muon.ratio_at_step(steps) == 0.80
    rows = table(1, [adamw, muon], steps, seconds, cost)
    assert rows[2].startswith("| 1 | muon | 0.01 | 100 | 2.000 |") and rows[2].endswith("| 0.800 | 0.900 | 0.800 |")
