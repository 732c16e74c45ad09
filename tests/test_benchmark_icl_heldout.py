"""benchmarks.icl_heldout measures a checkpoint on the held-out tasks training validates on; it trains nothing."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmarks import icl_heldout as bench

STAGE1 = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "icl" / "stage1.yaml"


def test_the_held_out_ratio_is_the_median_over_tasks_of_model_over_context_mean_and_accuracy_is_pooled():
    from basisfm.train.prior_validation import held_out_ratio

    per_task = [{"numeric_z_mse": 0.5, "numeric_mean_z_mse": 1.0},
                {"numeric_z_mse": 9.0, "numeric_mean_z_mse": 1.0},  # one bad task does not move a median
                {"numeric_z_mse": 0.2, "numeric_mean_z_mse": 2.0},
                {"categorical_accuracy": 0.75, "categorical_targets": 4.0},
                {"categorical_accuracy": 0.0, "categorical_targets": 4.0}]
    queue = iter(per_task)

    class Objective:
        training = True

        def __call__(self, episode):
            return SimpleNamespace(metrics=next(queue))

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    objective = Objective()
    scores = held_out_ratio(objective, [SimpleNamespace(to=lambda device: None) for _ in per_task])
    assert scores == {"val_prior_ratio": pytest.approx(0.5), "val_prior_accuracy": pytest.approx(0.375)}
    assert objective.training  # restored


def test_a_checkpoint_is_scored_beside_ridge_and_knn_on_the_stage_configs_held_out_tasks(tmp_path):
    from basisfm.config import ModelConfig, apply_model_preset, load_config
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained
    from basisfm.train.prior_validation import held_out_prior_tasks

    config = ModelConfig(architecture="tab2d", regression_head="binned", n_bins=16)
    apply_model_preset(config)
    torch.manual_seed(0)
    save_pretrained(build_model(config), tmp_path / "model")
    overrides = ["--set", "train.prior_validation_tasks=6", "--set", "priors.tasks_per_chunk=6"]
    assert bench.main(["--checkpoint", str(tmp_path / "model"), "--config", str(STAGE1), *overrides,
                       "--results", str(tmp_path / "results"), "--label", "t", "--no-mlflow"]) == 0
    page = (tmp_path / "results" / "icl_heldout_t.md").read_text()
    assert "| held-out prior tasks | 6 |" in page
    result = bench.measure(str(tmp_path / "model"), load_config(STAGE1, [o for o in overrides if o != "--set"]))
    prior = result["prior"]
    assert math.isfinite(prior["ratio"]) and 0 < prior["ridge"] < 1 and result["real"] is None  # the easy prior is linear-ish
    stage = load_config(STAGE1, [o for o in overrides if o != "--set"])
    a = held_out_prior_tasks(stage.priors, 3, text_dim=384, max_cells=stage.data.token_budget)
    b = held_out_prior_tasks(stage.priors, 3, text_dim=384, max_cells=stage.data.token_budget)
    assert all(torch.equal(x.values, y.values) for x, y in zip(a, b))  # the same tasks at every check
