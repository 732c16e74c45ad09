"""StringEmbedder: real MiniLM vectors, each unique string encoded once, a disk cache that a second run hits."""

from __future__ import annotations

import numpy as np
import pytest

from basisfm.encoding.text import EMBEDDING_DIM, StringEmbedder, document_idf, prune_text, word_forms
from basisfm.errors import InputTypeError


def test_second_embedder_reads_the_disk_cache_and_never_loads_the_model(tmp_path):
    strings = ["red", "green", "red", "a long description of a blue car", "green"]
    first = StringEmbedder(tmp_path / "cache")
    vectors = first.embed(strings)
    assert vectors.shape == (5, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert first.stats.encoded == 3, "duplicates are encoded once"
    assert np.array_equal(vectors[0], vectors[2])
    # all-MiniLM-L6-v2 ends in a normalisation layer: unit vectors, and distinct strings differ.
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(vectors[0], vectors[1])
    first.close()

    second = StringEmbedder(tmp_path / "cache")
    again = second.embed(["green", "red", "a long description of a blue car"])
    assert second.stats.encoded == 0 and second.stats.disk_hits == 3
    assert not second.model_loaded
    assert np.array_equal(again, vectors[[1, 0, 3]])

    second.embed(["red"])  # now from memory, not disk
    assert second.stats.memory_hits == 1 and second.stats.disk_hits == 3
    assert second.embed([]).shape == (0, EMBEDDING_DIM)


def test_embed_rejects_non_strings(tmp_path):
    embedder = StringEmbedder(tmp_path)
    with pytest.raises(InputTypeError, match="single str"):
        embedder.embed("red")
    with pytest.raises(InputTypeError, match="3.5"):
        embedder.embed(["red", 3.5])


def test_prune_text_keeps_the_opening_and_the_rarest_words_in_order():
    column = [
        "the patient reported the usual symptoms and a usual recovery",
        "the patient reported the usual symptoms and a rare arrhythmia",
        "the patient reported the usual symptoms and a usual recovery again",
    ]
    idf = document_idf(column)
    assert idf["arrhythmia"] > idf["usual"] > 0
    pruned = prune_text(column[1], top_k=8, idf=idf)
    words = pruned.split()
    assert len(words) == 8
    assert words[:6] == column[1].split()[:6], "3 * top_k // 4 opening words are always kept"
    assert "arrhythmia" in words and "rare" in words, "the remaining slots go to the rarest later words"
    assert pruned == "the patient reported the usual symptoms rare arrhythmia", "kept words stay in order"
    assert prune_text("short text", top_k=4, idf=idf) == "short text"
    assert word_forms("Hello, World!") == ["hello", "world"]


def test_pruned_and_full_vectors_are_cached_apart_and_stay_close(tmp_path):
    long_text = (
        "The committee reviewed the annual budget of the municipal water authority and approved new "
        "spending on pipeline maintenance, reservoir upgrades and a public awareness campaign about conservation"
    )
    column = [long_text, "a short note"]
    full = StringEmbedder(tmp_path).embed(column)
    pruning = StringEmbedder(tmp_path, text_top_k=8)
    pruned = pruning.embed(column)
    assert pruning.stats.pruned == 1 and pruning.stats.encoded == 1, "only the pruned long text is new"
    assert np.array_equal(pruned[1], full[1])
    cosine = float(pruned[0] @ full[0])
    assert 0.3 < cosine < 0.999, f"pruned text keeps the gist but is a different input (cosine {cosine:.3f})"


def test_loading_the_encoder_draws_no_progress_bar_and_leaves_transformers_setting_alone(tmp_path, capfd):
    from transformers.utils import logging as transformers_logging

    assert transformers_logging.is_progress_bar_enabled()
    embedder = StringEmbedder(tmp_path / "cache")
    embedder.embed(["a column name nobody embedded before"])
    assert embedder.model_loaded
    embedder.close()
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()  # on again for the caller's own models
