"""Bad and awkward input to BasisRegressor / BasisClassifier: each gets a clear error or its documented treatment."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from basisfm.errors import CheckpointError, ConfigError, InputTypeError, TableError
from basisfm.estimators import BasisClassifier, BasisRegressor


def _frame(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({
        "size_m2": rng.uniform(20, 200, n),
        "rooms": rng.integers(1, 6, n),
        "area": rng.choice(["north", "south", "east"], n),
    })
    y = pd.Series(1000 * x.size_m2 + 5000 * x.rooms + rng.normal(0, 500, n), name="price")
    return x, y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def _regressor(cache_dir, **kw) -> BasisRegressor:
    return BasisRegressor(strategy="inference", embedding_cache_dir=cache_dir, progress=False, **kw)


@pytest.fixture(scope="module")
def fitted(cache_dir):
    x, y = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture is not about warnings
        return _regressor(cache_dir).fit(x, y)


# ------------------------------------------------------------------ targets at fit


@pytest.mark.parametrize("bad", [np.nan, np.inf, None])
def test_non_finite_or_missing_regression_target_names_column_row_and_value(cache_dir, bad):
    x, y = _frame()
    y = y.astype(object)
    y.iloc[3] = bad
    with pytest.raises(TableError, match=r"column 'price'.*row 3 is (nan|inf|None)"):
        _regressor(cache_dir).fit(x, y)


def test_missing_class_label_and_single_class_are_errors(cache_dir):
    x, _ = _frame()
    labels = pd.Series(["cheap"] * 20 + ["dear"] * 20, name="band", dtype=object)
    labels.iloc[5] = None
    with pytest.raises(TableError, match=r"column 'band'.*row 5 is None"):
        BasisClassifier(strategy="inference", embedding_cache_dir=cache_dir).fit(x, labels)
    with pytest.raises(TableError, match="single class 'cheap'"):
        BasisClassifier(strategy="inference", embedding_cache_dir=cache_dir).fit(x, pd.Series(["cheap"] * 40, name="band"))


def test_constant_target_is_predicted_as_that_constant(cache_dir):
    x, _ = _frame()
    # checkpoint=None keeps the test fast; the estimator says so (untrained), and the constant target is the subject.
    with pytest.warns(UserWarning, match="untrained model"), pytest.warns(UserWarning, match="constant"):
        model = _regressor(cache_dir, checkpoint=None).fit(x, pd.Series(7.5, index=x.index, name="price"))
    assert np.all(model.predict(x.head(3)) == 7.5)


def test_y_length_and_type_mismatches(cache_dir):
    x, y = _frame()
    with pytest.raises(TableError, match="39 values but X has 40 rows"):
        _regressor(cache_dir).fit(x, y.iloc[:-1])
    with pytest.raises(InputTypeError, match="y must be"):
        _regressor(cache_dir).fit(x, {"a": 1})
    with pytest.raises(TableError, match="'size_m2'.*rename"):
        _regressor(cache_dir, target_name="size_m2").fit(x, y)


# ------------------------------------------------------------------ frames at fit


def test_empty_frame_and_single_row_at_fit(cache_dir):
    x, y = _frame()
    with pytest.raises(TableError, match="no rows"):
        _regressor(cache_dir).fit(x.iloc[:0], y.iloc[:0])
    with pytest.raises(TableError, match="no columns"):
        _regressor(cache_dir).fit(x[[]], y)
    with pytest.raises(TableError, match="at least 2 rows, got 1"):
        _regressor(cache_dir).fit(x.iloc[:1], y.iloc[:1])


def test_duplicate_column_names_are_named(cache_dir):
    x, y = _frame()
    dup = pd.concat([x, x[["rooms"]]], axis=1)
    with pytest.raises(TableError, match="column 'rooms'.*duplicate"):
        _regressor(cache_dir).fit(dup, y)
    # 1 and "1" are the same name once embedded as text.
    clash = pd.DataFrame({1: [1.0, 2.0], "1": [3.0, 4.0]})
    with pytest.raises(TableError, match="duplicate"):
        _regressor(cache_dir).fit(clash, [1.0, 2.0])


def test_wrong_x_types(cache_dir):
    # Lists of rows are array-likes, as in scikit-learn (issue 15: check_estimator); strings and 1-d are not.
    with pytest.raises(InputTypeError, match="DataFrame, a 2-d numpy array or a list of rows, got str"):
        _regressor(cache_dir).fit("x.csv", [1.0, 2.0])
    with pytest.raises(InputTypeError, match="2-dimensional"):
        _regressor(cache_dir).fit(np.arange(5.0), np.arange(5.0))


def test_all_nan_column_is_dropped_with_a_warning(cache_dir):
    x, y = _frame()
    x["empty"] = np.nan
    with pytest.warns(UserWarning, match="'empty' is missing in every row: dropped"):
        model = _regressor(cache_dir).fit(x, y)
    assert "empty" not in model.feature_names_in_
    assert np.isfinite(model.predict(x.head(4))).all()


def test_mixed_type_object_column_is_categorical(cache_dir):
    x, y = _frame()
    x["code"] = pd.Series([1, "a", 2.5, "b"] * 10, dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _regressor(cache_dir).fit(x, y)
    kinds = {c.name: c.kind for c in model.preprocessor_.columns}
    assert kinds["code"] == "categorical"
    with pytest.warns(UserWarning, match="column 'code': mixed types"):  # said again for the rows predicted
        assert np.isfinite(model.predict(x.head(4))).all()


def test_huge_and_tiny_magnitudes_stay_finite(cache_dir):
    x, y = _frame()
    x["huge"] = x.size_m2 * 1e12
    x["tiny"] = x.rooms * 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _regressor(cache_dir).fit(x, y * 1e12)
    pred = model.predict(x.head(5))
    # Untrained, so only the scale is checked: the target's bit window tops out below 2^(log2(max)+1).
    assert np.isfinite(pred).all() and np.abs(pred).max() < 2 * np.abs(y * 1e12).max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = _regressor(cache_dir).fit(x, y * 1e-12)
    assert np.abs(small.predict(x.head(5))).max() < 2 * np.abs(y * 1e-12).max()


def test_non_string_unicode_and_numpy_column_names(cache_dir):
    x, y = _frame()
    odd = x.rename(columns={"size_m2": 0, "rooms": ("a", 1), "area": "Fläche 面积 📐"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _regressor(cache_dir).fit(odd, y)
        assert list(model.feature_names_in_) == ["0", "('a', 1)", "Fläche 面积 📐"]
        assert np.isfinite(model.predict(odd.head(3))).all()
        arrays = _regressor(cache_dir).fit(x[["size_m2", "rooms"]].to_numpy(), y.to_numpy())
    assert list(arrays.feature_names_in_) == ["x0", "x1"]
    assert arrays.predict(x[["size_m2", "rooms"]].to_numpy()[:2]).shape == (2,)


# ------------------------------------------------------------------ frames at predict


def test_column_order_does_not_matter(fitted):
    x, _ = _frame(12, seed=1)
    np.testing.assert_array_equal(fitted.predict(x), fitted.predict(x[["area", "rooms", "size_m2"]]))


def test_missing_columns_fail_and_extra_columns_are_ignored(fitted):
    x, _ = _frame(6, seed=2)
    with pytest.raises(TableError, match=r"column 'rooms'.*missing now"):
        fitted.predict(x.drop(columns=["rooms"]))
    with pytest.warns(UserWarning, match=r"\['colour'\] were not present at fit"):
        extra = fitted.predict(x.assign(colour="red"))
    np.testing.assert_array_equal(extra, fitted.predict(x))


def test_unseen_categories_missing_cells_and_one_row_predict(fitted):
    x, _ = _frame(5, seed=3)
    x["area"] = x["area"].astype(object)
    x.loc[0, "area"] = "a district never seen at fit"
    x.loc[1, "size_m2"] = np.nan
    pred = fitted.predict(x)
    assert pred.shape == (5,) and np.isfinite(pred).all()
    assert fitted.predict(x.iloc[[2]]).shape == (1,)
    with pytest.raises(TableError, match="no rows"):
        fitted.predict(x.iloc[:0])


def test_infinite_feature_cells_become_missing_with_a_warning(fitted):
    x, _ = _frame(5, seed=4)
    x.loc[2, "size_m2"] = np.inf
    with pytest.warns(UserWarning, match=r"'size_m2'.*infinite"):
        pred = fitted.predict(x)
    assert np.isfinite(pred).all()


def test_a_numeric_column_given_text_at_predict_warns_and_treats_it_as_missing(fitted):
    x, _ = _frame(4, seed=5)
    x["rooms"] = x["rooms"].astype(object)
    x.loc[1, "rooms"] = "three"
    with pytest.warns(UserWarning, match=r"'rooms'.*non-numeric.*'three'"):
        assert np.isfinite(fitted.predict(x)).all()


def test_predict_before_fit_and_bad_settings(cache_dir, tmp_path):
    x, y = _frame()
    with pytest.raises(NotFittedError):
        _regressor(cache_dir).predict(x)
    with pytest.raises(ConfigError, match="parameter 'strategy'.*'lora'"):
        BasisRegressor(strategy="lora").fit(x, y)
    with pytest.raises(ConfigError, match="validation_fraction"):
        BasisRegressor(validation_fraction=1.5).fit(x, y)
    with pytest.raises(ConfigError, match="parameter 'categorical_features'.*'onehot'"):
        BasisRegressor(categorical_features="onehot").fit(x, y)
    with pytest.raises(ConfigError, match="parameter 'target_transforms'.*'log'"):
        BasisRegressor(target_transforms=["none", "log"]).fit(x, y)
    with pytest.raises(TypeError, match="parameter 'target_transforms'"):
        BasisRegressor(target_transforms="power").fit(x, y)
    with pytest.raises(ConfigError, match="parameter 'feature_transforms'.*'rank'"):
        BasisRegressor(feature_transforms=["quantile", "rank"]).fit(x, y)
    with pytest.raises(CheckpointError, match="does not exist"):
        _regressor(cache_dir, checkpoint=str(tmp_path / "nowhere")).fit(x, y)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="config.json"):
        _regressor(cache_dir, checkpoint=str(tmp_path / "half")).fit(x, y)
