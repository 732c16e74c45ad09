"""A fitted in-context estimator prepares its training rows once, at fit (after a load: at the first predict),
and each predict prepares its query rows alone; the table it reads is the one preparing both together gave."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import basisfm.data.reading.table as reading_table
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.collate import prepare_table
from basisfm.data.reading import in_context_table, prepare_training_rows
from basisfm.estimators import BasisClassifier, BasisRegressor
from basisfm.estimators.preprocessing import TablePreprocessor
from test_model_support import HashEmbedder


def _frame(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "colour": rng.choice(["red", "green", "blue"], n),
                      "b": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))})
    y = pd.Series(2 * x.a + (x.colour == "red") + rng.normal(0, 0.1, n), name="y")
    return x, y


def test_stacked_preparation_is_the_joint_one():
    x, y = _frame(60)
    pre = TablePreprocessor().fit(x, y, ColumnKind.NUMERIC)
    record = pre.record()
    train = pre.to_arrow(pre.features(x.iloc[:40]), y.iloc[:40].reset_index(drop=True))
    query = pre.to_arrow(pre.features(x.iloc[40:]), None)
    embedder = HashEmbedder()
    joint = in_context_table(record, train, query, embedder, None).prepared
    reused = in_context_table(record, train, query, embedder, None, prepare_training_rows(record, train, embedder)).prepared
    for field in ("values", "missing", "string_uids", "string_embeddings", "name_embeddings", "mean", "std", "abs_max"):
        np.testing.assert_array_equal(getattr(reused, field), getattr(joint, field), err_msg=field)
    assert reused.strings == joint.strings
    # A query string the training rows lack takes a new id after theirs, with its own embedding.
    unseen = pre.to_arrow(pre.features(x.iloc[40:].assign(colour="violet")), None)
    stacked = in_context_table(record, train, unseen, embedder, None, prepare_training_rows(record, train, embedder)).prepared
    column = list(x.columns).index("colour")
    violet = stacked.strings.index("violet")
    assert stacked.strings == prepare_training_rows(record, train, embedder).strings + ["violet"]
    assert (stacked.string_uids[40:, column] == violet).all()
    np.testing.assert_array_equal(stacked.string_embeddings[violet], embedder.embed(["violet"])[0])
    with pytest.raises(ValueError, match="prepared from other rows"):
        in_context_table(record, train, query, embedder, None, prepare_training_rows(record, train.slice(0, 5), embedder))


@pytest.mark.parametrize("cls", [BasisRegressor, BasisClassifier])
def test_each_predict_prepares_its_query_rows_alone(cls, tmp_path, monkeypatch):
    x, y = _frame(150)
    target = y if cls is BasisRegressor else (y > y.median()).map({True: "high", False: "low"})
    model = cls(strategy="inference", n_estimators=2, progress=False, embedding_cache_dir=str(tmp_path / "cache"))
    model.fit(x.iloc[:120], target.iloc[:120])
    expected = model.predict(x.iloc[120:])
    prepared_rows = []
    real = reading_table.prepare_table

    def counting(table: pa.Table, *args, **kwargs):
        prepared_rows.append(table.num_rows)
        return real(table, *args, **kwargs)

    monkeypatch.setattr(reading_table, "prepare_table", counting)
    np.testing.assert_array_equal(model.predict(x.iloc[120:]), expected)
    model.predict(x.iloc[125:130])
    indicators = 1  # two classes: one indicator, as one numeric target
    assert prepared_rows == [30] * indicators + [5] * indicators  # never the 120 training rows again
    model.save(tmp_path / "saved")
    loaded = cls.load(tmp_path / "saved")
    prepared_rows.clear()
    np.testing.assert_array_equal(loaded.predict(x.iloc[120:]), expected)
    loaded.predict(x.iloc[120:])
    assert prepared_rows == [120, 30, 30]  # the training rows once, at the first predict after load


def test_prepare_table_is_what_the_reading_module_calls():
    # The counting above patches the reading module's name for it: it must be the collation's function.
    assert reading_table.prepare_table is prepare_table
