"""basisfm.data.reading.corpus_tasks: pretraining episodes from real corpus tables, read as in-context inference reads a table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from basisfm.corpus.manifest import ColumnKind, read_manifest
from basisfm.errors import ConfigError
from basisfm.data.reading.corpus_tasks import CorpusTasks, CorpusTaskSettings, held_out_ids


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    from basisfm.encoding.text import StringEmbedder

    return StringEmbedder(tmp_path_factory.mktemp("embedding_cache"), text_top_k=32)


def test_held_out_tables_are_a_fixed_function_of_their_ids_and_never_none_or_all():
    ids = [f"t{i}" for i in range(200)]
    held = held_out_ids(ids, 0.1)
    assert held == held_out_ids(list(reversed(ids)), 0.1)  # order does not matter
    assert 5 < len(held) < 40  # about a tenth
    assert len(held_out_ids(["a", "b"], 0.001)) == 1 and len(held_out_ids(["a", "b"], 0.999)) == 1


def test_episodes_read_a_table_as_inference_does_one_target_support_and_hidden_queries(tiny_corpus, embedder):
    settings = CorpusTaskSettings(max_rows=64, max_columns=6, max_cells=2048, min_rows=20, held_out_fraction=0.3)
    tasks = CorpusTasks(tiny_corpus, embedder, settings, seed=0)
    train_ids = {r.id for r in tasks.train_records}
    held_ids = {r.id for r in tasks.held_out_records}
    assert train_ids and held_ids and not train_ids & held_ids
    records = {r.id: r for r in read_manifest(tiny_corpus)}

    episodes = tasks.sample(12)
    assert len(episodes) == 12 and {e.table_id for e in episodes} <= train_ids
    for e in episodes:
        targets = e.target_mask[0]
        assert int(targets.sum()) == 1 and bool(e.target_mask.all(0).eq(targets).all())
        assert e.n_rows <= 64 and len(e.column_names) <= 6 and e.n_rows * len(e.column_names) <= 2048
        assert 0 < int(e.support.sum()) < e.n_rows  # labelled support rows and hidden queries
        target = e.column_names[int(torch.nonzero(targets))]
        assert target in records[e.table_id].candidate_targets
        # categorical features are numbers (ordinal codes), as inference reads them; free text keeps its strings
        features = ~targets
        assert not bool((e.column_kinds[features] == int(ColumnKind.CATEGORICAL)).any())
        with_strings = (e.string_ids >= 0).any(0) & features
        assert bool((e.column_kinds[with_strings] == int(ColumnKind.TEXT)).all())

    again = CorpusTasks(tiny_corpus, embedder, settings, seed=0).held_out(4, seed=5)
    first = tasks.held_out(4, seed=5)
    assert {e.table_id for e in first} <= held_ids
    assert [e.table_id for e in first] == [e.table_id for e in again]
    assert all(torch.equal(a.values, b.values) and torch.equal(a.support, b.support) for a, b in zip(first, again))


def test_the_shipped_in_context_model_scores_corpus_episodes(tiny_corpus, embedder):
    from basisfm.config import LossConfig
    from basisfm.losses.objective import build_objective
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained import shipped_checkpoint

    model = load_pretrained(shipped_checkpoint("in_context"))
    objective = build_objective(model, model.config, LossConfig(weighting="none"))
    tasks = CorpusTasks(tiny_corpus, embedder, CorpusTaskSettings(min_rows=20, held_out_fraction=0.3), seed=1)
    with torch.no_grad():
        losses = [objective(e).loss for e in tasks.sample(4)]
    assert all(torch.isfinite(loss) for loss in losses)


def test_bad_settings_and_an_empty_corpus_are_named(tmp_path, embedder):
    with pytest.raises(ConfigError, match="query_fraction"):
        CorpusTaskSettings(query_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="max_columns"):
        CorpusTaskSettings(max_columns=1).validate()
    with pytest.raises(ConfigError, match="jobs.ingest"):
        CorpusTasks(tmp_path, embedder)
