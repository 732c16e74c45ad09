"""BasisRegressor.fit(X, Y) with several target columns: one model predicts them all, per-row and in context."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import r2_score

from basisfm.config import ModelConfig
from basisfm.errors import CheckpointError, ConfigError, InputTypeError, TableError
from basisfm.estimators import BasisClassifier, BasisRegressor
from basisfm.model import build_model
from basisfm.model.checkpoint import save_pretrained


def _houses(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two targets on very different scales: price (~1e3-1e4) and energy use (~1-10), from different features."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"size_m2": rng.uniform(20, 200, n), "insulation": rng.uniform(0, 1, n),
                      "area": rng.choice(["north", "south"], n)})
    y = pd.DataFrame({
        "price": 40 * x.size_m2 + np.where(x.area == "north", 1500, 0) + rng.normal(0, 50, n),
        "energy": 8 - 6 * x.insulation + rng.normal(0, 0.2, n),
    })
    return x, y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def _fast(cache_dir, **kw) -> dict:
    return {**dict(embedding_cache_dir=cache_dir, progress=False, token_budget=256, learning_rate=3e-3,
                   patience=100, random_state=0), **kw}


@pytest.mark.slow
def test_per_row_model_learns_two_targets_at_once_and_round_trips(cache_dir, tmp_path):
    x, y = _houses(300)
    model = BasisRegressor(checkpoint="per_row", max_steps=150, validate_every=25, **_fast(cache_dir)).fit(x.iloc[:240], y.iloc[:240])
    predicted = model.predict(x.iloc[240:])
    assert predicted.shape == (60, 2)
    assert model.target_mean_.shape == (2,) and model.target_scale_[0] > 100 * model.target_scale_[1]
    # Both targets learned, each in its own units (a scale mix-up would wreck the small one).
    for j, name in enumerate(y.columns):
        assert r2_score(y[name].iloc[240:], predicted[:, j]) > 0.8, name
    assert model.score(x.iloc[240:], y.iloc[240:]) > 0.8  # scikit-learn's uniform average over targets
    q = model.predict(x.iloc[240:250], output="quantiles", quantiles=[0.1, 0.9])
    assert q.shape == (10, 2, 2) and (q[..., 0] <= q[..., 1]).all()

    loaded = BasisRegressor.load(model.save(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.predict(x.iloc[240:]), predicted, rtol=1e-5, atol=1e-6)
    state = json.loads((tmp_path / "saved" / "estimator.json").read_text())
    assert [t["name"] for t in state["preprocessor"]["targets"]] == ["price", "energy"]
    assert len(state["fitted"]["target_scale"]) == 2


def test_in_context_model_reads_several_targets_from_its_context(cache_dir, tmp_path):
    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    x, y = _houses(80)
    model = BasisRegressor(checkpoint=str(tmp_path / "icl"), strategy="inference", max_context=64, **_fast(cache_dir))
    model.fit(x.iloc[:60], y.iloc[:60])
    predicted = model.predict(x.iloc[60:])
    assert predicted.shape == (20, 2) and np.isfinite(predicted).all()
    # An untrained model still predicts in each target's own units: near its context's mean, not the other's.
    for j, name in enumerate(y.columns):
        spread = y[name].iloc[:60].std()
        assert abs(predicted[:, j].mean() - y[name].iloc[:60].mean()) < 3 * spread, name
    loaded = BasisRegressor.load(model.save(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.predict(x.iloc[60:]), predicted, rtol=1e-5, atol=1e-6)


def test_a_two_column_array_names_its_targets_y0_y1(cache_dir):
    x, y = _houses(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not about warnings here
        model = BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, y.to_numpy())
    assert model.preprocessor_.target_names == ["y0", "y1"]
    assert model.predict(x.head(5)).shape == (5, 2)


def test_a_constant_target_beside_a_learnable_one_is_predicted_as_its_value(cache_dir):
    x, y = _houses(40)
    y["energy"] = 3.25
    with pytest.warns(UserWarning, match="'energy' is constant"):
        model = BasisRegressor(max_steps=4, validate_every=2, **_fast(cache_dir)).fit(x, y)
    predicted = model.predict(x.head(6))
    assert (predicted[:, 1] == 3.25).all() and np.isfinite(predicted[:, 0]).all()
    assert model.constant_ == [None, 3.25]


def test_several_targets_are_refused_clearly_where_they_cannot_work(cache_dir):
    x, y = _houses(40)
    with pytest.raises(InputTypeError, match=r"2 columns \['price', 'energy'\].*BasisRegressor predicts several"):
        BasisClassifier(strategy="inference", embedding_cache_dir=cache_dir).fit(x, y)
    with pytest.raises(ConfigError, match="target_name='price' names one target"):
        BasisRegressor(strategy="inference", target_name="price", **_fast(cache_dir)).fit(x, y)
    with pytest.raises(TableError, match=r"column 'energy'.*row 2 is nan"):
        BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, y.assign(energy=y.energy.where(y.index != 2)))
    with pytest.raises(TableError, match=r"\['a'\] appear more than once"):
        BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, pd.DataFrame(y.to_numpy(), columns=["a", "a"]))
    with pytest.raises(TableError, match="'size_m2'.*rename"):
        BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, y.rename(columns={"energy": "size_m2"}))


def test_a_saved_single_target_estimator_of_format_2_still_loads(cache_dir, tmp_path):
    x, y = _houses(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, y["price"])
    path = model.save(tmp_path / "saved") / "estimator.json"
    state = json.loads(path.read_text())
    assert isinstance(state["fitted"]["target_scale"], float)
    state["format_version"] = 2
    state["preprocessor"]["target"] = state["preprocessor"].pop("targets")[0]
    path.write_text(json.dumps(state))
    np.testing.assert_allclose(BasisRegressor.load(tmp_path / "saved").predict(x.head(4)), model.predict(x.head(4)))
    state["format_version"] = 1
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="'format_version' is 1, this basisfm reads 2 and 3"):
        BasisRegressor.load(tmp_path / "saved")


def test_an_estimator_saved_before_feature_selection_keeps_its_random_feature_subsets(cache_dir, tmp_path):
    x, y = _houses(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BasisRegressor(strategy="inference", **_fast(cache_dir)).fit(x, y["price"])
        with pytest.raises(ConfigError, match="feature_selection"):
            BasisRegressor(strategy="inference", feature_selection="best", **_fast(cache_dir)).fit(x, y["price"])
    assert model.feature_selection is None and model._feature_selection() == "validated"  # inference's default
    path = model.save(tmp_path / "saved") / "estimator.json"
    state = json.loads(path.read_text())
    del state["params"]["feature_selection"]
    path.write_text(json.dumps(state))
    assert BasisRegressor.load(tmp_path / "saved").feature_selection == "random"
