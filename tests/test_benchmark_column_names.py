"""benchmarks.column_names' pieces: the checkpoint copy that reads names another way (same weights), and the
paired comparisons that decide whether names changed the scores."""

from __future__ import annotations

import json

from benchmarks.column_names import named_checkpoint, names_matter, paired_delta, wins


def test_named_checkpoint_keeps_the_weights_and_changes_only_how_names_are_read(tmp_path):
    from basisfm.config import ModelConfig
    from basisfm.model import build_model
    from basisfm.model.checkpoint import load_pretrained, read_name_embedding, save_pretrained

    source = save_pretrained(build_model(ModelConfig(preset="tiny")), tmp_path / "source")
    copy = named_checkpoint(source, tmp_path / "copy", embedding="none", symbolic=False)
    assert read_name_embedding(copy) == ("none", None) and read_name_embedding(source) == ("sentence", None)
    assert json.loads((copy / "config.json").read_text())["model_config"]["symbolic_name_features"] is False
    a, b = load_pretrained(source).state_dict(), load_pretrained(copy).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert load_pretrained(copy).columns.symbolic_features is False


def _rows(scores):
    return [{"suite": "public", "table": f"t{i}", "split": 0, "r2": s} for i, s in enumerate(scores)]


def test_paired_delta_and_the_thresholds_that_call_a_change():
    base = _rows([0.5, 0.6, 0.7])
    delta, lower, total = paired_delta(_rows([0.4, 0.5, 0.6]), base)
    assert abs(delta + 0.1) < 1e-12 and (lower, total) == (3, 3)
    assert names_matter(paired_delta(_rows([0.4, 0.5, 0.6]), base))
    assert not names_matter(paired_delta(_rows([0.4, 0.65, 0.75]), base))  # lower on 1 of 3 only
    assert not names_matter(paired_delta(_rows([0.499, 0.599, 0.699]), base))  # too small to call
    assert wins(paired_delta(_rows([0.55, 0.65, 0.69]), base)) and not wins(paired_delta(_rows([0.55, 0.55, 0.69]), base))
