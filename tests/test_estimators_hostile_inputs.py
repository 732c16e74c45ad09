"""Hostile input to the estimators (issue 37): a tampered estimator.json's cache folder and target moments, a
one-column DataFrame y, a duration feature given as numbers, a complex regression target, save() onto a file."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from basisfm.errors import CheckpointError, InputTypeError, TableError
from basisfm.estimators import BasisRegressor

# The fitted estimator these tests share has a duration column on purpose; every predict says how durations are
# read (a UserWarning users should see), which here is expected, not news.
pytestmark = pytest.mark.filterwarnings("ignore:.*durations stored as days:UserWarning")


def _frame(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"size_m2": rng.uniform(20, 200, n), "area": rng.choice(["north", "south"], n),
                      "wait": pd.to_timedelta(rng.integers(60, 7_200, n), unit="s")})
    y = pd.Series(1000 * x.size_m2 + 2 * x.wait.dt.total_seconds() + rng.normal(0, 500, n), name="price")
    return x, y


def _regressor(cache_dir, **kw) -> BasisRegressor:
    return BasisRegressor(**{"strategy": "inference", "n_estimators": 1, "embedding_cache_dir": cache_dir,
                             "progress": False, **kw})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def fitted(cache_dir):
    x, y = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _regressor(cache_dir).fit(x, y)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    return fitted.save(tmp_path_factory.mktemp("saved") / "regressor")


def _tampered(saved, tmp_path, changes: dict):
    target = tmp_path / "tampered"
    shutil.copytree(saved, target)
    path = target / "estimator.json"
    state = json.loads(path.read_text())
    for (section, key), value in changes.items():
        state[section][key] = value
    path.write_text(json.dumps(state))
    return target


@pytest.mark.parametrize("where", ["../..", "absolute"])
def test_a_saved_embedding_cache_folder_is_not_where_a_loaded_estimator_writes(saved, tmp_path, monkeypatch, where):
    # A tampered estimator.json pointed the cache at ../.. or an absolute folder; predict then created it and wrote
    # string_embeddings.sqlite there. A loaded estimator uses the default cache unless its user names one.
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    elsewhere = tmp_path / "elsewhere" if where == "absolute" else tmp_path / "escaped"
    value = str(elsewhere) if where == "absolute" else "../../escaped"
    directory = _tampered(saved, tmp_path, {("params", "embedding_cache_dir"): value})
    with pytest.warns(UserWarning, match=r"embedding_cache_dir .* holds no embedding cache here, so it is not restored"):
        loaded = BasisRegressor.load(directory)
    assert loaded.embedding_cache_dir is None
    x, _ = _frame()
    assert np.isfinite(loaded.predict(x.iloc[:3])).all()
    assert not elsewhere.exists()


def test_a_saved_embedding_cache_that_is_there_is_restored(saved, fitted):
    # The machine that saved it: its cached vectors keep the loaded estimator's predictions identical.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = BasisRegressor.load(saved)
    assert loaded.embedding_cache_dir == fitted.embedding_cache_dir
    x, _ = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the duration column's "stored as days" note
        np.testing.assert_array_equal(loaded.predict(x.iloc[:5]), fitted.predict(x.iloc[:5]))


@pytest.mark.parametrize("key, value", [("target_mean", 1e308), ("target_scale", 1e300), ("constant", -1e308)])
def test_target_moments_a_fit_could_not_produce_are_refused_at_load(saved, tmp_path, key, value):
    directory = _tampered(saved, tmp_path, {("fitted", key): value})
    with pytest.raises(CheckpointError, match=rf"key 'fitted.{key}' must be within"):
        BasisRegressor.load(directory)


def test_a_one_column_dataframe_target_keeps_its_name(fitted, cache_dir):
    # The target's name is embedded: renaming it "target" moved in-context predictions by up to 4.6% of y's spread.
    x, y = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        framed = _regressor(cache_dir).fit(x, y.to_frame())
    assert framed.preprocessor_.target_names == ["price"] == fitted.preprocessor_.target_names
    np.testing.assert_allclose(framed.predict(x.iloc[:8]), fitted.predict(x.iloc[:8]))


def test_a_duration_feature_given_as_numbers_at_predict_is_refused_not_misread(fitted):
    x, _ = _frame()
    with pytest.raises(TableError, match=r"column 'wait': held durations at fit but got numbers.*to_timedelta"):
        fitted.predict(x.assign(wait=x.wait.dt.total_seconds()))
    with pytest.raises(TableError, match="held durations"):
        fitted.predict(x.assign(wait=x.wait.dt.total_seconds().astype(object)))
    np.testing.assert_allclose(fitted.predict(x.assign(wait=x.wait.astype("timedelta64[ms]"))), fitted.predict(x))


def test_a_complex_regression_target_is_refused_unless_real(cache_dir):
    x, y = _frame()
    with pytest.raises(TableError, match=r"column 'price': target row 0 is the complex number"):
        _regressor(cache_dir).fit(x, y + 1j)
    with pytest.raises(TableError, match="complex number"):
        _regressor(cache_dir).fit(x, pd.Series([complex(v, 1) for v in y], name="price", dtype=object))


def test_save_onto_a_file_is_a_clear_error(fitted, tmp_path):
    path = tmp_path / "model.bin"
    path.write_text("not a folder")
    with pytest.raises(InputTypeError, match=r"save\(.*model.bin.*is a file, not a folder"):
        fitted.save(path)
    with pytest.raises(InputTypeError, match="is a file, not a folder"):
        fitted.save(path / "inside")
    assert path.read_text() == "not a folder"
