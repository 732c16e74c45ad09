"""In-context prediction for the estimators: shapes and units, members, query independence, retrieval, labels, several targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from basisfm.config import CorpusConfig, ModelConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.corpus.normalize import normalise_table
from basisfm.errors import ConfigError, TableError
from basisfm.estimators.in_context import (
    InContextSettings,
    nearest_context,
    predict_label_scores_in_context,
    predict_numeric_in_context,
)
from basisfm.estimators.preprocessing import TablePreprocessor
from basisfm.model import build_model
from test_model_support import HashEmbedder, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n) * 100, "colour": rng.choice(["red", "blue"], n)})
    y = pd.Series(5000 + 300 * X["x0"] + 2 * X["x1"], name="price")
    return X, y


def _fitted(n_train: int = 60, n_query: int = 12, kind=ColumnKind.NUMERIC, y=None):
    X, y_default = _frame(n_train + n_query)
    y = y_default if y is None else y
    pre = TablePreprocessor().fit(X.iloc[:n_train], y.iloc[:n_train], kind)
    train = pre.to_arrow(pre.features(X.iloc[:n_train]), y.iloc[:n_train].reset_index(drop=True))
    query = pre.to_arrow(pre.features(X.iloc[n_train:]), None)
    return pre.record(), train, query, y


@pytest.mark.parametrize("architecture", ["basis_icl", "tab2d", "basis"])
def test_numeric_predictions_in_the_targets_units_with_quantiles(architecture):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, regression_head="binned"))
    record, train, query, y = _fitted()
    settings = InContextSettings(max_context=32, n_estimators=2, query_batch=5)
    point, q = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings, quantiles=[0.1, 0.5, 0.9])
    assert point.shape == (12, 1) and q.shape == (12, 1, 3)
    assert np.isfinite(point).all() and (np.diff(q, axis=-1) >= 0).all()
    # an untrained model predicts near the context's scale, in the target's units (thousands), not in z
    assert abs(point.mean() - y.iloc[:60].mean()) < 3 * y.iloc[:60].std()
    again, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings)
    assert np.array_equal(point, again)  # reproducible from the seed
    one, _ = predict_numeric_in_context(model, record, train, query.slice(0, 1), HashEmbedder(), settings)
    assert np.allclose(one[0], point[0])  # a query's prediction does not depend on the other queries
    other, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(),
                                          InContextSettings(max_context=32, n_estimators=2, seed=1))
    if architecture != "basis":
        assert not np.allclose(other, point)  # members draw their context and feature order from the seed


def test_label_scores_are_probabilities_over_the_given_labels():
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="basis_icl"))
    X, _ = _frame(50)
    label = pd.Series(np.where(X["x0"] > 0, "high", "low"), name="level")
    pre = TablePreprocessor().fit(X.iloc[:40], label.iloc[:40], ColumnKind.CATEGORICAL)
    train = pre.to_arrow(pre.features(X.iloc[:40]), label.iloc[:40].reset_index(drop=True))
    query = pre.to_arrow(pre.features(X.iloc[40:]), None)
    scores = predict_label_scores_in_context(model, pre.record(), train, query, HashEmbedder(), ["high", "low", "other"],
                                             InContextSettings(max_context=16, n_estimators=3))
    assert scores.shape == (10, 3) and np.allclose(scores.sum(1), 1.0)
    with pytest.raises(TableError, match="categorical"):
        predict_numeric_in_context(model, pre.record(), train, query, HashEmbedder())


def test_several_numeric_targets_at_once():
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="basis_icl", regression_head="binned"))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=40), "y1": rng.normal(size=40) * 10, "y2": rng.normal(size=40) + 100})
    normalised = normalise_table(frame, "multi", CorpusConfig())
    table, columns = normalised.table, normalised.records
    record = TableRecord(id="multi", source="test", locator="multi", fingerprint="", shard="", n_rows=40, columns=columns,
                         candidate_targets=["y1", "y2"])
    query = table.slice(30).set_column(1, "y1", pa.nulls(10, pa.float64())).set_column(2, "y2", pa.nulls(10, pa.float64()))
    point, _ = predict_numeric_in_context(model, record, table.slice(0, 30), query, HashEmbedder(), InContextSettings(n_estimators=1))
    assert point.shape == (10, 2) and np.isfinite(point).all()
    assert abs(point[:, 1].mean() - 100) < abs(point[:, 0].mean() - 100)  # each target in its own units


def test_retrieval_reads_each_query_chunks_nearest_training_rows():
    from basisfm.data.collate import _prepare

    record, train, query, _ = _fitted(n_train=200, n_query=4)
    table = pa.concat_tables([train, query.cast(train.schema)])
    prepared = _prepare(table, record, HashEmbedder())
    features = np.asarray([0])  # x0 alone
    chosen = nearest_context(prepared, features, np.arange(200), np.asarray([200]), 10)
    x0 = prepared.values[:, 0]
    assert set(chosen) == set(np.argsort(np.abs(x0[:200] - x0[200]))[:10])
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="basis_icl", regression_head="binned"))
    point, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(),
                                          InContextSettings(max_context=20, retrieval=True, n_estimators=2))
    assert point.shape == (4, 1) and np.isfinite(point).all()
    with pytest.raises(ConfigError, match="max_context"):
        predict_numeric_in_context(model, record, train, query, HashEmbedder(), InContextSettings(max_context=0))
