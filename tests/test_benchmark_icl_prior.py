"""benchmarks.icl_prior_pretrain: the torch-only in-context pretraining on the prior writes a checkpoint the estimators load."""

from __future__ import annotations

import contextlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import icl_prior_pretrain as bench


def test_a_short_run_saves_a_checkpoint_with_provenance_that_predicts_in_context(tmp_path):
    out = tmp_path / "model"
    assert bench.main(["--steps", "2", "--eval-every", "1", "--batch-tasks", "2", "--threads", "1", "--device", "cpu",
                       "--out", str(out), "--results", str(tmp_path / "results"), "--no-mlflow"]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["steps"] == 2 and provenance["tasks_seen"] == 4 and provenance["model_config"]["architecture"] == "tab2d"
    assert 0 < provenance["baselines"]["ridge"] < 1.5 and math.isfinite(provenance["held_out_ratio"])
    page = (tmp_path / "results" / "icl_prior_pretrain_cpu.md").read_text()
    assert "| 1 | 2 |" in page and "| 2 | 4 |" in page  # one row per check: step, tasks seen

    from basisfm.estimators import BasisRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    y = pd.Series(2 * X.a + rng.normal(size=40) * 0.1, name="y")
    model = BasisRegressor(checkpoint=str(out), strategy="inference", progress=False,
                           embedding_cache_dir=str(tmp_path / "cache")).fit(X, y)
    assert model.context_.num_rows == 40 and np.isfinite(model.predict(X.iloc[:5])).all()


def test_the_held_out_ratio_is_the_median_over_tasks_of_model_over_context_mean():
    per_task = [{"numeric_z_mse": 0.5, "numeric_mean_z_mse": 1.0, "numeric_targets": 10.0},
                {"numeric_z_mse": 9.0, "numeric_mean_z_mse": 1.0, "numeric_targets": 10.0},  # one bad task
                {"numeric_z_mse": 0.2, "numeric_mean_z_mse": 2.0, "numeric_targets": 10.0},
                {"categorical_accuracy": 0.75, "categorical_targets": 4.0}]
    queue = iter(per_task)

    class Objective:
        def __call__(self, episode):
            return SimpleNamespace(metrics=next(queue))

        def eval(self):
            return self

        def train(self):
            return self

    episodes = [SimpleNamespace(to=lambda device: None) for _ in per_task]
    ratio, accuracy = bench.evaluate(Objective(), episodes, "cpu", contextlib.nullcontext)
    assert ratio == pytest.approx(0.5) and accuracy == pytest.approx(0.75)


def test_a_stage_started_from_a_checkpoint_keeps_its_weights_and_counts_the_tasks_before_it(tmp_path):
    common = ["--eval-every", "1", "--batch-tasks", "2", "--threads", "1", "--device", "cpu", "--no-mlflow",
              "--max-rows", "32", "--max-features", "3", "--results", str(tmp_path / "results")]
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    assert bench.main(["--steps", "2", "--out", str(first), "--label", "stage1", *common]) == 0
    # the second stage reads its architecture from the checkpoint (basis_icl asked for here does not apply)
    assert bench.main(["--steps", "1", "--init", str(first), "--architecture", "basis_icl", "--lr", "0", "--warmup", "1",
                       "--prior", "curriculum=linear", "--prior", "curriculum_start_rows=32", "--prior", "curriculum_start_features=2", "--seed", "1", "--out", str(second), "--label", "stage2", *common]) == 0
    from safetensors.torch import load_file

    before, after = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # lr 0: unchanged
    provenance = json.loads((second / "provenance.json").read_text())
    assert provenance["model_config"]["architecture"] == "tab2d" and provenance["init"] == str(first)
    assert provenance["tasks_seen"] == 2 and provenance["total_tasks_seen"] == 4 + 2
    assert provenance["init_provenance"]["tasks_seen"] == 4
    pages = sorted(p.name for p in (tmp_path / "results").glob("*.md"))
    assert pages == ["icl_prior_pretrain_cpu_stage1.md", "icl_prior_pretrain_cpu_stage2.md"]
    page = (tmp_path / "results" / pages[1]).read_text()
    assert f"started from: {first}" in page
    # a stage's page starts with the checkpoint's own scores (step 0); lr 0 leaves them unchanged after its step
    rows = [line.split("|")[1:-1] for line in page.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert [r[0].strip() for r in rows] == ["0", "1"] and rows[0][4] == rows[1][4] and rows[0][3].strip() == "nan"


def test_a_stage_can_deepen_its_checkpoint_and_start_from_a_shipped_one(tmp_path):
    common = ["--eval-every", "1", "--batch-tasks", "2", "--threads", "1", "--device", "cpu", "--no-mlflow",
              "--max-rows", "32", "--max-features", "3", "--results", str(tmp_path / "results")]
    first, grown = tmp_path / "stage1", tmp_path / "grown"
    assert bench.main(["--steps", "1", "--out", str(first), *common]) == 0
    # a shipped checkpoint (jobs.ship_checkpoint) keeps this benchmark's provenance under "pretraining"
    own = json.loads((first / "provenance.json").read_text())
    (first / "provenance.json").write_text(json.dumps({"name": "in_context", "pretraining": own}))
    assert bench.main(["--steps", "1", "--init", str(first), "--grow-layers", "3", "--label", "grown",
                       "--out", str(grown), *common]) == 0
    provenance = json.loads((grown / "provenance.json").read_text())
    assert provenance["model_config"]["n_layers"] == 3 and provenance["grown_to_layers"] == 3
    assert provenance["total_tasks_seen"] == 2 + 2 and provenance["init_provenance"]["tasks_seen"] == 2
    assert "grown to 3 layers" in (tmp_path / "results" / "icl_prior_pretrain_cpu_grown.md").read_text()
    from basisfm.model.checkpoint import load_pretrained

    assert load_pretrained(grown).config.n_layers == 3
    with pytest.raises(SystemExit):
        bench.main(["--grow-layers", "3", "--out", str(tmp_path / "x"), *common])  # growing needs --init


def test_a_run_with_a_corpus_mixes_real_table_episodes_and_scores_held_out_tables(tmp_path, tiny_corpus):
    out = tmp_path / "model"
    assert bench.main(["--steps", "2", "--eval-every", "1", "--batch-tasks", "4", "--threads", "1", "--device", "cpu",
                       "--corpus", str(tiny_corpus), "--real-fraction", "1", "--corpus-max-columns", "6", "--max-rows", "64",
                       "--embedding-cache-dir", str(tmp_path / "cache"), "--out", str(out),
                       "--results", str(tmp_path / "results"), "--label", "real", "--no-mlflow"]) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    corpus = provenance["corpus"]
    assert corpus["real_fraction"] == 1 and corpus["training_tables"] >= 1 and corpus["held_out_tables"] >= 1
    assert corpus["fingerprint"].startswith("6 tables") and math.isfinite(corpus["held_out_ratio"])
    page = (tmp_path / "results" / "icl_prior_pretrain_cpu_real.md").read_text()
    assert "held-out corpus tables |" in page and "With real tables: 100% of each step's tasks" in page
