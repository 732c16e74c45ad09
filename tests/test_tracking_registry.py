"""The registry: a checkpoint logged as a pyfunc version, and promotion that moves `champion` only on a win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from basisfm.config import TrackingConfig
from basisfm.errors import CheckpointError
from basisfm.tracking import download_checkpoint, log_checkpoint_model, promote, resolve_tracking_uri
from basisfm.tracking.mlflow_logger import make_client


def _checkpoint(directory: Path, quality: float) -> Path:
    """A stand-in consolidated checkpoint: real safetensors + JSON files; `quality` is what the test suite scores."""
    directory.mkdir(parents=True)
    save_file({"weight": torch.full((2, 2), quality)}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"quality": quality}))
    return directory


def _suite_reading_quality(checkpoint_dir: Path) -> dict[str, float]:
    """A validation suite double: reads the loss the checkpoint was built to have (the real one is in basisfm.train)."""
    quality = json.loads((checkpoint_dir / "config.json").read_text())["quality"]
    return {"val_loss": quality, "val_r2": 1.0 - quality}


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_tracking_uri(TrackingConfig(local_dir=str(tmp_path / "runs")))


def test_register_then_promote_only_on_a_strict_win(tmp_path, tracking_uri, capsys):
    name = "basisfm-test"
    versions = [log_checkpoint_model(_checkpoint(tmp_path / f"ckpt{i}", q), name, tracking_uri=tracking_uri,
                                     experiment="registry-test", tags={"origin": "test"})
                for i, q in enumerate((0.5, 0.7, 0.3))]
    assert versions == ["1", "2", "3"]
    restored = download_checkpoint(name, "1", tracking_uri, tmp_path / "dl")
    assert json.loads((restored / "config.json").read_text()) == {"quality": 0.5}
    downloaded = tmp_path / "dl"
    assert list(downloaded.rglob("MLmodel")) and not list(downloaded.rglob("*.pkl"))  # models-from-code, no pickle

    first = promote("1", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    assert first.promoted and first.champion_version is None

    worse = promote("2", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    assert not worse.promoted and worse.champion_version == "1"
    assert worse.champion_scores["val_loss"] == pytest.approx(0.5)
    assert "| val_loss (decides) | 0.7 | 0.5 |" in worse.comparison_table()

    better = promote("3", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    assert better.promoted and "NOT" not in better.summary()

    client = make_client(tracking_uri)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    tags = client.get_model_version(name, "2").tags
    assert tags["val.val_loss"] == "0.7" and tags["origin"] == "test"

    again = promote("3", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    assert not again.promoted and "already holds" in again.reason


def test_promote_with_r2_maximised_and_errors_named(tmp_path, tracking_uri):
    name = "basisfm-r2"
    for i, q in enumerate((0.4, 0.6)):
        log_checkpoint_model(_checkpoint(tmp_path / f"c{i}", q), name, tracking_uri=tracking_uri, experiment="r2")
    promote("1", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    decision = promote("2", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri,
                       metric="val_r2", mode="max")
    assert not decision.promoted  # r2 0.4 < 0.6
    with pytest.raises(CheckpointError, match="no version 9"):
        promote("9", _suite_reading_quality, registered_name=name, tracking_uri=tracking_uri)
    with pytest.raises(CheckpointError, match="config.json"):
        incomplete = tmp_path / "incomplete"
        incomplete.mkdir()
        save_file({"w": torch.zeros(1)}, str(incomplete / "model.safetensors"))
        log_checkpoint_model(incomplete, name, tracking_uri=tracking_uri)


def test_a_training_run_registers_whatever_experiment_the_process_set_before(tmp_path, tracking_uri):
    # An earlier mlflow.set_experiment in the process (a user's, or a previous job's) made MLflow refuse to resume
    # the training run of another experiment, and the checkpoint went unregistered with only a warning.
    import mlflow

    client = make_client(tracking_uri)
    training = client.create_run(client.create_experiment("training", artifact_location=str(tmp_path / "art"))).info.run_id
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=client.create_experiment("something else", artifact_location=str(tmp_path / "b")))
    version = log_checkpoint_model(_checkpoint(tmp_path / "ckpt", 0.4), "basisfm-run-test", tracking_uri=tracking_uri,
                                   run_id=training)
    assert client.get_model_version("basisfm-run-test", version).run_id == training
