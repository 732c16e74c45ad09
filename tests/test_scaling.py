"""jobs.scaling's maths and its MLflow side: the fit recovers a known law, the plan's arithmetic matches the
closed form, finished tagged runs are read back from a store, and the grid schedules each run for its budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from basisfm.scaling import (CostModel, GridRun, LossLaw, ScalingPoint, bootstrap_laws, compute_optimal, fit_cost,
                             fit_law, grid_config, held_out_check, scaling_points, select_form, tag_scaling_run)

TRUE = LossLaw("chinchilla", E=0.3, A=40.0, alpha=0.4, B=25.0, beta=0.55)
SIZES = (20_000, 60_000, 180_000, 540_000)
BUDGETS = (500, 1_500, 4_500, 13_500)


def _points(law: LossLaw = TRUE, noise: float = 0.0, seed: int = 0, grid: int = 4) -> list[ScalingPoint]:
    """grid x grid runs of the law, log-normal noise of relative size `noise` on L."""
    rng = np.random.default_rng(seed)
    return [ScalingPoint(f"d{n}-t{d}", n, d, float(law.predict(n, d)) * math.exp(noise * rng.standard_normal()),
                         seconds=d * (2e-3 + 1e-8 * n))
            for n in SIZES[:grid] for d in BUDGETS[:grid]]


def test_the_fit_recovers_a_known_law_and_the_bootstrap_brackets_it():
    law = fit_law(_points(), "chinchilla")
    for name, tolerance in (("E", 0.01), ("alpha", 0.02), ("beta", 0.02)):
        assert getattr(law, name) == pytest.approx(getattr(TRUE, name), abs=tolerance), name
    noisy = _points(noise=0.01)
    fitted = fit_law(noisy, "chinchilla")
    laws = bootstrap_laws(noisy, fitted, samples=40)
    low, high = np.percentile([l.beta for l in laws], [2.5, 97.5])
    assert low <= TRUE.beta <= high and high - low < 0.5


def test_leave_one_out_prefers_the_data_only_form_when_size_does_not_matter():
    flat = LossLaw("data", E=0.5, A=0.0, alpha=0.0, B=10.0, beta=0.5)
    form, errors = select_form(_points(flat, noise=0.02, grid=3))
    assert form == "data" and set(errors) == {"chinchilla", "shared", "data"}
    assert select_form(_points(noise=0.002, grid=3))[0] in ("chinchilla", "shared")


def test_the_cost_model_and_the_compute_optimal_size_match_the_closed_form():
    cost = fit_cost(_points())
    assert cost.per_task == pytest.approx(2e-3, rel=1e-6) and cost.per_task_parameter == pytest.approx(1e-8, rel=1e-6)
    # With cost proportional to N * D (no per-task overhead), minimising E + A/N^a + B/D^b subject to N * D = C / c1
    # gives N* = G (C / c1)^(b / (a + b)), G = (a A / (b B))^(1 / (a + b)) (Hoffmann et al., eq. 4).
    proportional = CostModel(0.0, 1e-8, "cpu")
    seconds = 3600.0
    compute = seconds / proportional.per_task_parameter
    g = (TRUE.alpha * TRUE.A / (TRUE.beta * TRUE.B)) ** (1 / (TRUE.alpha + TRUE.beta))
    expected = g * compute ** (TRUE.beta / (TRUE.alpha + TRUE.beta))
    plan = compute_optimal(TRUE, proportional, seconds, (1e3, 1e9))
    assert plan.parameters == pytest.approx(expected, rel=0.03) and not plan.at_edge
    assert plan.tasks * plan.parameters * 1e-8 == pytest.approx(seconds, rel=1e-9)  # the budget is spent exactly
    assert plan.loss == pytest.approx(float(TRUE.predict(plan.parameters, plan.tasks)))
    # A larger budget buys a larger model and more tasks; a budget too small for the range sits at its edge.
    bigger = compute_optimal(TRUE, proportional, 4 * seconds, (1e3, 1e9))
    assert bigger.parameters > plan.parameters and bigger.tasks > plan.tasks and bigger.loss < plan.loss
    assert compute_optimal(TRUE, proportional, seconds, (1e8, 1e9)).at_edge
    with pytest.raises(ValueError, match="at least 2 finished GPU runs"):
        fit_cost(_points(), "gpu")


def test_a_held_out_run_is_predicted_from_the_others():
    points = _points(noise=0.005)
    check = held_out_check(points, "d180000-t4500", "chinchilla")
    assert abs(check["relative_error"]) < 0.03 and check["observed"] == points[10].loss
    with pytest.raises(ValueError, match="not among the scaling runs"):
        held_out_check(points, "no-such-run")


def test_fit_reads_finished_tagged_runs_from_an_mlflow_store(tmp_path):
    from mlflow.tracking import MlflowClient

    from basisfm.scaling.report import fit_summary, plan_summary

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("scaling", artifact_location=(tmp_path / "artifacts").as_uri())
    written = _points(noise=0.005, grid=3)
    for point in written:
        run = client.create_run(experiment, run_name=point.run)
        client.log_metric(run.info.run_id, "val_prior_ratio", 9.0, step=1)  # an early validation: the last one counts
        client.log_metric(run.info.run_id, "val_prior_ratio", point.loss, step=2)
        client.log_metric(run.info.run_id, "tasks_seen", point.tasks, step=2)
        client.log_param(run.info.run_id, "train.use_gpu", "False")
        client.set_tag(run.info.run_id, "basisfm.wall_s", f"{point.seconds:.1f}")
        tag_scaling_run(uri, run.info.run_id, role="grid", parameters=point.parameters)
        client.set_terminated(run.info.run_id)
    untagged = client.create_run(experiment, run_name="not-a-scaling-run")
    client.log_metric(untagged.info.run_id, "val_prior_ratio", 0.1)
    client.set_terminated(untagged.info.run_id)
    unfinished = client.create_run(experiment, run_name="still-running")
    tag_scaling_run(uri, unfinished.info.run_id, role="grid", parameters=1000)

    points = scaling_points(uri, "scaling")
    assert sorted(p.run for p in points) == sorted(p.run for p in written)
    first = next(p for p in points if p.run == "d20000-t500")
    assert first.parameters == 20_000 and first.tasks == 500 and first.device == "cpu"
    assert first.loss == pytest.approx(written[0].loss)
    assert first.seconds == pytest.approx(500 * (2e-3 + 1e-8 * 20_000), abs=0.1)

    summary = fit_summary(uri, "scaling", form="chinchilla", holdout="d60000-t1500", bootstrap=10)
    assert "held out d60000-t1500" in summary and "(within 10%)" in summary and "law:   L = " in summary
    plan = plan_summary(uri, "scaling", 3600.0, form="chinchilla", bootstrap=10)
    assert "parameters:" in plan and "expected held-out ratio" in plan
    from basisfm.errors import TrackingError

    with pytest.raises(TrackingError, match="no experiment 'other'"):
        scaling_points(uri, "other")
    with pytest.raises(TrackingError, match="does not exist"):  # a mistyped store is not created by looking
        scaling_points(f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}")
    assert not (tmp_path / "typo").exists()


def test_the_grid_schedules_each_run_for_exactly_its_budget():
    from basisfm.config import load_config

    base = load_config(Path(__file__).resolve().parents[1] / "jobs" / "configs" / "icl" / "stage1.yaml")
    config = grid_config(base, GridRun(32, 1600))
    assert (config.model.d_model, config.model.n_heads, config.model.n_layers) == (32, 2, base.model.n_layers)
    assert config.train.steps == 200 and config.train.validate_every == 200 and config.train.warmup_steps == 10
    assert config.train.run_name == "scaling-d32-t1600" and config.tracking.experiment == "scaling"
    assert config.priors == base.priors  # the same prior at every size and budget
    with pytest.raises(ValueError, match="multiple of 16"):
        grid_config(base, GridRun(40, 1600))
