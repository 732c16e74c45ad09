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


def test_a_checkpoint_is_registered_once_and_found_again_by_its_weights(tmp_path, tracking_uri):
    from basisfm.tracking.registry import WEIGHTS_DIGEST_TAG, champion_version, register_checkpoint_once

    name = "basisfm-once"
    shipped = _checkpoint(tmp_path / "shipped", 0.4)
    first = register_checkpoint_once(shipped, name, tracking_uri=tracking_uri, experiment="registry-test")
    assert first == ("1", True)
    copy = tmp_path / "copy"  # the same weights elsewhere (a download, another clone): the same version
    copy.mkdir()
    for f in shipped.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert register_checkpoint_once(copy, name, tracking_uri=tracking_uri) == ("1", False)
    other = register_checkpoint_once(_checkpoint(tmp_path / "other", 0.6), name, tracking_uri=tracking_uri)
    assert other == ("2", True)
    tags = make_client(tracking_uri).get_model_version(name, "1").tags
    assert len(tags[WEIGHTS_DIGEST_TAG]) == 64
    assert champion_version(name, "champion", tracking_uri) is None


def test_the_demo_registers_its_starting_checkpoint_as_champion_when_there_is_none(tmp_path, tracking_uri):
    from basisfm.config import RunConfig
    from basisfm.tracking.registry import champion_version
    from basisfm.workflow import register_starting_point

    config = RunConfig()
    config.tracking.registered_model = "basisfm-icl-test"
    config.train.init_from = str(_checkpoint(tmp_path / "start", 0.4))
    line = register_starting_point(config, tracking_uri)
    assert "is basisfm-icl-test version 1 (registered now); it is @champion (there was none)" in line
    assert champion_version("basisfm-icl-test", "champion", tracking_uri) == "1"
    # A rerun (the demo run twice on one store) registers nothing new and leaves a promoted champion where it is.
    make_client(tracking_uri).set_registered_model_alias("basisfm-icl-test", "champion", "1")
    again = register_starting_point(config, tracking_uri)
    assert again.endswith("is basisfm-icl-test version 1; @champion is version 1")
    config.train.init_from = None
    assert "from scratch" in register_starting_point(config, tracking_uri)
