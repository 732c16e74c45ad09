"""End to end: a 4-trial Optuna + ASHA search on the tiny corpus where every trial fits a real TorchTrainer
(1 worker, DeepSpeed on CPU), recorded in MLflow as a parent run with one child run per trial, the best
trial's model registered; then the same command again resumes the finished search instead of rerunning it."""

from __future__ import annotations

from pathlib import Path

import pytest

from basisfm.config import load_config

pytestmark = pytest.mark.slow

TUNE_TINY = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "tune_tiny.yaml"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # Two trials side by side: each holds 1 worker CPU + 0.25 for its data actor. Logical CPUs exceed
    # CI's 2 cores; trials spend most of their time starting processes, which the OS interleaves.
    ray.init(address="local", num_cpus=3, include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def test_search_runs_trials_tracks_them_in_mlflow_registers_the_best_and_resumes(tiny_corpus, tmp_path, ray_cluster,
                                                                                  monkeypatch):
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.tune import run_search

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(TUNE_TINY, [
        f"corpus.out_dir={tiny_corpus}",
        f"data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
        "data.validation_tables=1",
        "data.token_budget=512",
        "data.cpus_per_actor=0.25",
        f"train.storage_path={tmp_path / 'ray'}",
        f"tracking.local_dir={tmp_path / 'mlflow'}",
        "tracking.tracking_uri=null",
        "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=2", "train.validate_every=2",
        "train.validation_batches=2",
        "tune.num_samples=4", "tune.name=search-e2e",
    ])
    result = run_search(config)

    assert result.max_concurrent_trials == 2  # floor(3 CPUs / 1.25 per trial)
    assert len(result.trials) == 4 and all(t.status == "TERMINATED" for t in result.trials), result.trials
    assert len({(t.params["loss.weighting"], t.params["loss.gamma"]) for t in result.trials}) == 4
    for trial in result.trials:  # ASHA saw validation scores at steps 2 and 4 (or stopped the trial at 2)
        assert trial.iterations == (1 if trial.stopped_early else 2) and trial.metric is not None and trial.metric > 0
    best = result.best
    assert best.metric == min(t.metric for t in result.trials) and not best.stopped_early
    assert result.best_config.loss.weighting == best.params["loss.weighting"]
    assert result.best_config.loss.gamma == pytest.approx(best.params["loss.gamma"])
    assert result.best_config_path.is_file()

    table = result.table_path.read_text()
    assert all(t.trial_id in table for t in result.trials) and "loss.weighting" in table
    assert result.plot_path.read_bytes()[:4] == b"\x89PNG"

    # MLflow: the parent run holds the table and plot; each trial's child run its params and the trainer's curves.
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    client = make_client(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["basisfm.best_trial_id"] == best.trial_id
    assert {"trials.md", "trials.png", "best_config.yaml"} <= {a.path for a in client.list_artifacts(result.parent_run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert sorted(c.data.tags["basisfm.trial_id"] for c in children) == sorted(t.trial_id for t in result.trials)
    for child in children:
        trial = next(t for t in result.trials if t.trial_id == child.data.tags["basisfm.trial_id"])
        assert child.data.params["search.loss.weighting"] == trial.params["loss.weighting"]
        assert child.data.params["loss.weighting"] == trial.params["loss.weighting"]  # the trial's full config
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_loss"))
        if trial.stopped_early:
            # Tune stops listening at ASHA's decision; the trainer may log a little more before its trial ends.
            assert set(steps) <= {2, 4} and child.info.status == "KILLED"
            assert child.data.tags["basisfm.tune_outcome"] == "stopped_by_asha"
        else:
            assert steps == [2, 4] and child.info.status == "FINISHED"

    # The best trial's consolidated model is registered, pointing at the best trial's child run.
    assert result.registered_version == "1"
    version = client.get_model_version("basisfm", "1")
    best_child = next(c for c in children if c.data.tags["basisfm.trial_id"] == best.trial_id)
    assert version.run_id == best_child.info.run_id
    model = load_pretrained(result.best_model_dir)
    assert sorted(p.name for p in result.best_model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert model.config.d_model == config.model.d_model

    # Same command again: Tune restores the finished search; no trial is rerun, no new MLflow runs appear,
    # and the registered model is not registered a second time.
    again = run_search(config)
    assert sorted(t.trial_id for t in again.trials) == sorted(t.trial_id for t in result.trials)
    assert all(t.status == "TERMINATED" for t in again.trials)
    finished = {t.trial_id: t.metric for t in result.trials if not t.stopped_early}
    assert {t.trial_id: t.metric for t in again.trials if t.trial_id in finished} == finished
    assert again.parent_run_id == result.parent_run_id and again.best.trial_id == best.trial_id
    assert len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")) == 4
    assert again.registered_version == "1"
