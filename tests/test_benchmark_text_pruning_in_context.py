"""benchmarks.text_pruning_in_context: each variant is the shipped checkpoint with only data.text_top_k changed, and
its scores are read the usual way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.text_pruning_in_context import checkpoint_with_top_k, log_loss


@pytest.mark.parametrize("top_k", [16, None])
def test_a_variant_checkpoint_differs_from_the_shipped_one_only_in_text_top_k(tmp_path, top_k):
    from basisfm.model.checkpoint import read_model_config, read_text_top_k
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    copy = checkpoint_with_top_k(IN_CONTEXT_CHECKPOINT_DIR, top_k, tmp_path / "variant")
    assert read_text_top_k(copy) == top_k
    assert read_model_config(copy) == read_model_config(IN_CONTEXT_CHECKPOINT_DIR)
    assert (copy / "model.safetensors").read_bytes() == (IN_CONTEXT_CHECKPOINT_DIR / "model.safetensors").read_bytes()
    shipped = json.loads((IN_CONTEXT_CHECKPOINT_DIR / "config.json").read_text())
    changed = json.loads((copy / "config.json").read_text())
    assert {k: v for k, v in changed.items() if k != "data"} == {k: v for k, v in shipped.items() if k != "data"}


def test_log_loss_reads_each_rows_true_class():
    classes = np.array(["great", "other"])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert log_loss(probabilities, np.array(["great", "other"]), classes) == pytest.approx(-np.log([0.9, 0.8]).mean())
