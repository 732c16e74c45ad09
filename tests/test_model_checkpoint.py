"""Checkpoint io: safetensors + JSON round trip, and clear CheckpointErrors for every way a directory can be wrong."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from basisfm.config import ModelConfig
from basisfm.errors import CheckpointError
from basisfm.model import build_model
from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, save_pretrained
from test_model_support import single_thread, synthetic_batch  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _saved(tmp_path, **settings):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**settings)).eval()
    save_pretrained(model, tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_round_trip_gives_identical_predictions(tmp_path):
    model, directory = _saved(tmp_path, numeric_encoding="hybrid_smr", missing="per_column", attention="block_sparse")
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = load_pretrained(directory)
    assert loaded.config == model.config and not loaded.training
    batch = synthetic_batch()
    assert torch.equal(model.predict_numeric(batch).nan_to_num(-1), loaded.predict_numeric(batch).nan_to_num(-1))
    stored = json.loads((directory / CONFIG_NAME).read_text())
    assert stored["format_version"] == 1 and stored["model_config"]["numeric_encoding"] == "hybrid_smr"


def test_missing_files_are_named(tmp_path):
    _, directory = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    (directory / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_pretrained(directory)
    (directory / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=CONFIG_NAME):
        load_pretrained(directory)


def test_bad_config_json_is_reported_by_key(tmp_path):
    _, directory = _saved(tmp_path)
    path = directory / CONFIG_NAME
    good = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained(directory)
    path.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version"):
        load_pretrained(directory)
    path.write_text(json.dumps({**good, "model_config": {**good["model_config"], "n_dragons": 3}}))
    with pytest.raises(CheckpointError, match="n_dragons"):
        load_pretrained(directory)
    path.write_text(json.dumps({**good, "model_config": {**good["model_config"], "d_model": 30}}))
    with pytest.raises(CheckpointError, match="d_model"):
        load_pretrained(directory)


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    _, directory = _saved(tmp_path)
    weights = directory / WEIGHTS_NAME
    state = load_file(str(weights))
    state["heads.bit_head.weight"] = torch.zeros(3, 3)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="heads.bit_head.weight"):
        load_pretrained(directory)
    del state["heads.bit_head.weight"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="missing tensor.*bit_head.weight"):
        load_pretrained(directory)
    weights.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_pretrained(directory)


def test_a_checkpoint_written_with_the_retired_model_text_top_k_still_loads(tmp_path):
    # Every checkpoint before data.text_top_k became the only knob stored model_config.text_top_k.
    model, directory = _saved(tmp_path)
    path = directory / CONFIG_NAME
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "model_config": {**stored["model_config"], "text_top_k": 32}}))
    loaded = load_pretrained(directory)
    assert loaded.config == model.config


def test_a_basis_icl_checkpoint_from_before_the_column_identity_loads_without_it(tmp_path):
    # Written before model_config.icl_column_identity existed: the model then had no identity weights.
    model, directory = _saved(tmp_path, architecture="basis_icl", icl_column_identity=False)
    path = directory / CONFIG_NAME
    stored = json.loads(path.read_text())
    del stored["model_config"]["icl_column_identity"]
    path.write_text(json.dumps(stored))
    loaded = load_pretrained(directory)
    assert loaded.config == model.config and loaded.column_identity is None
    batch = synthetic_batch()
    assert torch.equal(model.predict_numeric(batch).nan_to_num(-1), loaded.predict_numeric(batch).nan_to_num(-1))
    # a new basis_icl checkpoint keeps its identity
    _, fresh = _saved(tmp_path / "new", architecture="basis_icl")
    assert load_pretrained(fresh).config.icl_column_identity


def test_the_checkpoint_records_how_its_text_was_pruned(tmp_path):
    from basisfm.config import DataConfig
    from basisfm.model.checkpoint import read_text_top_k

    model, directory = _saved(tmp_path)
    assert read_text_top_k(directory) == DataConfig.text_top_k
    save_pretrained(model, directory, text_top_k=None)
    assert read_text_top_k(directory) is None
    path = directory / CONFIG_NAME
    stored = json.loads(path.read_text())
    del stored["data"]  # written before config.json recorded it: pretraining used the default
    path.write_text(json.dumps(stored))
    assert read_text_top_k(directory) == DataConfig.text_top_k
    path.write_text(json.dumps({**stored, "data": {"text_top_k": 2}}))
    with pytest.raises(CheckpointError, match="text_top_k"):
        read_text_top_k(directory)
    path.write_text(json.dumps({**stored, "data": {"text_top_k": "many"}}))
    with pytest.raises(CheckpointError, match="text_top_k"):
        read_text_top_k(directory)


def test_the_checkpoint_inside_a_downloaded_model_is_found_once_or_named(tmp_path):
    from basisfm.model.checkpoint import find_checkpoint_dir

    model, directory = _saved(tmp_path)
    assert find_checkpoint_dir(directory, origin="here") == directory
    nested = tmp_path / "download" / "artifacts" / "checkpoint"
    save_pretrained(model, nested)
    assert find_checkpoint_dir(tmp_path / "download", origin="models:/m/1") == nested
    save_pretrained(model, tmp_path / "download" / "other")
    with pytest.raises(CheckpointError, match="holds 2 checkpoint directories"):
        find_checkpoint_dir(tmp_path / "download", origin="models:/m/1")
    (nested / CONFIG_NAME).unlink()
    (tmp_path / "download" / "other" / CONFIG_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"models:/m/1.*has no {CONFIG_NAME}"):
        find_checkpoint_dir(tmp_path / "download", origin="models:/m/1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"has no {WEIGHTS_NAME}"):
        find_checkpoint_dir(tmp_path / "empty", origin="x")


def test_a_checkpoint_from_before_the_shared_heads_loads_and_predicts_as_it_did(tmp_path):
    """Version-1 checkpoints name the heads `bit_head.*` and lack the scale paths: they load under today's
    names, with the new paths' output layers at zero, so predictions are unchanged."""
    model, directory = _saved(tmp_path)
    with torch.no_grad():  # what an old model computes: the new paths add nothing
        model.column_scale.weight.zero_()
        model.standardized[2].weight.zero_()
        model.standardized[2].bias.zero_()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("column_scale.", "standardized."))}
    state = {(k[len("heads."):] if k.startswith("heads.") else k): v.contiguous() for k, v in state.items()}
    save_file(state, str(directory / WEIGHTS_NAME))
    loaded = load_pretrained(directory)
    batch = synthetic_batch()
    assert torch.equal(model.eval().predict_numeric(batch).nan_to_num(-1), loaded.predict_numeric(batch).nan_to_num(-1))
