"""End to end on the tiny corpus: 2 Ray Train workers, ZeRO-2, DeepSpeed sharded checkpoints, a worker that dies
mid-run (the run resumes and MLflow holds every step once), the consolidated checkpoint, registry and promotion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basisfm.config import load_config

pytestmark = pytest.mark.slow

TINY_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # 2 workers + 1 data actor: 3 logical CPUs, shared by the OS on CI's 2 cores.
    ray.init(address="local", num_cpus=3, include_dashboard=False, runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}})
    yield
    ray.shutdown()


def _config(tiny_corpus, tmp_path, **train):
    overrides = [
        f"corpus.out_dir={tiny_corpus}",
        f"data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
        "data.validation_tables=1",
        "data.token_budget=512",
        f"train.storage_path={tmp_path / 'ray'}",
        f"tracking.local_dir={tmp_path / 'mlflow'}",
        "tracking.tracking_uri=null",
        "train.num_workers=2",
        "train.zero_stage=2",
        "train.warmup_steps=1",
        "train.log_every=1",  # the assertions below read every step's train_loss
    ] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(TINY_CONFIG, overrides)


def _steps_logged(tracking_uri: str, run_id: str, metric: str) -> list[int]:
    from basisfm.tracking.mlflow_logger import make_client

    return sorted(m.step for m in make_client(tracking_uri).get_metric_history(run_id, metric))


def test_pretrain_survives_a_worker_death_registers_a_loadable_checkpoint_and_promotes_it(tiny_corpus, tmp_path,
                                                                                        ray_cluster, monkeypatch):
    # One run covers both the happy path and the fault (each Ray Train run costs a minute or more on CI's 2 cores).
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.evaluation.promotion import promote_registered
    from basisfm.train import pretrain
    from basisfm.train.loop import FAULT_MARKER

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = _config(tiny_corpus, tmp_path, run_name="e2e", steps=5, checkpoint_every=2, validate_every=2,
                     fail_at_step=3, max_failures=1)
    result = pretrain(config)

    # The fault fired once (the marker stops a second), and the run resumed from the step-2 checkpoint.
    assert (result.run_dir / FAULT_MARKER).is_file()
    state = json.loads((result.run_dir / "artifacts" / "train_state.json").read_text())
    assert state["resumed_from"] == [2]
    assert [int(s) for s, _ in state["history"]["train_loss"]] == [1, 2, 3, 4, 5]
    # Steps 1-2 reached MLflow with their checkpoint; 3 was lost with the worker and redone: each step once.
    assert _steps_logged(result.tracking_uri, result.run_id, "train_loss") == [1, 2, 3, 4, 5]
    assert _steps_logged(result.tracking_uri, result.run_id, "val_loss") == [2, 4, 5]

    assert result.metrics["step"] == 5 and result.metrics["cells_per_s"] > 0
    assert result.metrics["val_batches"] >= 1 and "val_loss" in result.metrics
    model = load_pretrained(result.checkpoint_dir)  # safetensors + config.json, and how it was made (no pickle)
    assert sorted(p.name for p in result.checkpoint_dir.iterdir()) == ["config.json", "model.safetensors", "provenance.json"]
    made = json.loads((result.checkpoint_dir / "provenance.json").read_text())
    assert made["mlflow"]["run_id"] == result.run_id and made["steps"] == 5 and made["launcher"] == "ray"
    assert model.config.d_model == config.model.d_model
    shards = sorted(p.name for p in (result.run_dir / "step_0000005" / "deepspeed").iterdir())
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in shards and "zero_pp_rank_1_mp_rank_00_optim_states.pt" in shards

    client = make_client(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["train.zero_stage"] == "2" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"loss_curves.png", "config.yaml", "train_state.json", "ingest_report.json", "provenance.json"} <= artifacts
    assert result.registered_version == "1"
    assert client.get_model_version("basisfm", "1").run_id == result.run_id  # the version points at its evidence

    decision = promote_registered(config)
    assert decision.promoted and decision.candidate_version == "1" and decision.champion_version is None
    assert decision.candidate_scores["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=0.05)
    assert str(client.get_model_version_by_alias("basisfm", "champion").version) == "1"
