"""Missing cells made on purpose (`encoding.missingness`) and filled before the model reads them
(`encoding.imputation`, the estimators' `missing_imputation`)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from basisfm.encoding.imputation import DiffusionImputer, DiffusionSettings, MeanImputer, fit_imputer
from basisfm.encoding.missingness import remove_cells
from basisfm.errors import CheckpointError, ConfigError
from basisfm.estimators import BasisClassifier, BasisRegressor
from test_model_support import single_thread  # noqa: F401 (fixture)


def _independent(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "count": rng.integers(0, 50, n),
                         "kind": rng.choice(["x", "y", "z"], n)})


def _correlated(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Five numeric columns driven by two latent ones: each column is predictable from the others."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    noise = 0.1 * rng.normal(size=(n, 3))
    return pd.DataFrame({"a": z[:, 0], "b": 2 * z[:, 0] + noise[:, 0], "c": z[:, 1],
                         "d": z[:, 0] - z[:, 1] + noise[:, 1], "e": np.exp(0.5 * z[:, 1]) + noise[:, 2]})


def _corr(mask: np.ndarray, values: pd.Series) -> float:
    ranks = values.rank().to_numpy(dtype=np.float64)
    return float(np.corrcoef(mask.astype(np.float64), ranks)[0, 1])


# ------------------------------------------------------------------ injection


@pytest.mark.parametrize("mechanism", ["mcar", "mar", "mnar"])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_removes_the_asked_share_of_every_column(mechanism, rate):
    frame = _independent()
    holey = remove_cells(frame, rate, mechanism, seed=1)
    assert holey.shape == frame.shape and frame.notna().all().all()  # a copy: the input keeps its cells
    shares = holey.isna().mean()
    assert (shares - rate).abs().max() < 0.035, shares.to_dict()
    kept = holey.notna().to_numpy()
    assert (holey.to_numpy()[kept] == frame.to_numpy()[kept]).all()  # the rest is untouched


def test_mechanisms_differ_in_what_the_removal_depends_on():
    frame = _independent()
    mcar, mar, mnar = (remove_cells(frame, 0.3, m, seed=2) for m in ("mcar", "mar", "mnar"))
    mask = {name: h["a"].isna().to_numpy() for name, h in (("mcar", mcar), ("mar", mar), ("mnar", mnar))}
    # MNAR: high values of a go missing (self-masking); MCAR and MAR: a's own value does not matter
    assert _corr(mask["mnar"], frame["a"]) > 0.4
    assert abs(_corr(mask["mcar"], frame["a"])) < 0.06 and abs(_corr(mask["mar"], frame["a"])) < 0.06
    # MAR: a's cells depend on one other column's value, strongly; MCAR's on none
    assert max(abs(_corr(mask["mar"], frame[c])) for c in ("b", "count", "kind")) > 0.4
    assert max(abs(_corr(mask["mcar"], frame[c])) for c in ("b", "count", "kind")) < 0.06


def test_removal_is_seeded_and_keeps_cells_already_missing():
    frame = _independent(500)
    frame.loc[:9, "a"] = np.nan
    first, again, other = (remove_cells(frame, 0.3, "mar", seed=s) for s in (5, 5, 6))
    pd.testing.assert_frame_equal(first, again)
    assert not first.isna().equals(other.isna())
    assert first.loc[:9, "a"].isna().all()
    assert remove_cells(frame, 0.3, "mcar", seed=0, columns=["b"])[["a", "count", "kind"]].equals(frame[["a", "count", "kind"]])


@pytest.mark.parametrize("kwargs, words", [
    ({"rate": 0.3, "mechanism": "random"}, "mechanism 'random'"),
    ({"rate": 1.0, "mechanism": "mcar"}, "rate 1.0"),
    ({"rate": 0.3, "mechanism": "mcar", "columns": ["nope"]}, "['nope']"),
])
def test_removal_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        remove_cells(_independent(50), seed=0, **kwargs)


# ------------------------------------------------------------------ imputers


def _reconstruction_error(imputer_kind: str, mechanism: str) -> float:
    truth = _correlated()
    holey = remove_cells(truth, 0.3, mechanism, seed=3)
    filled = fit_imputer(imputer_kind, holey, list(truth.columns), seed=0).fill(holey)
    removed = holey.isna().to_numpy()
    assert filled.notna().all().all()
    assert (filled.to_numpy()[~removed] == truth.to_numpy()[~removed]).all()  # observed cells are kept
    scale = truth.std().to_numpy()
    return float(np.sqrt(((((filled - truth).to_numpy() / scale) ** 2)[removed]).mean()))


@pytest.mark.parametrize("mechanism", ["mcar", "mnar"])
def test_diffusion_imputer_reconstructs_correlated_cells_better_than_the_mean(mechanism, single_thread):
    mean_error = _reconstruction_error("mean", mechanism)
    diffusion_error = _reconstruction_error("diffusion", mechanism)
    assert diffusion_error < 0.7 * mean_error, (diffusion_error, mean_error)


def test_imputers_fill_only_the_columns_they_were_fitted_on_and_are_deterministic(single_thread):
    frame = remove_cells(_independent(300), 0.3, "mcar", seed=0)
    settings = DiffusionSettings(train_steps=20)
    diffusion = DiffusionImputer.fit(frame, ["a", "b"], settings)
    filled = diffusion.fill(frame)
    assert filled[["a", "b"]].notna().all().all()
    assert filled["count"].isna().equals(frame["count"].isna()) and filled["kind"].isna().equals(frame["kind"].isna())
    pd.testing.assert_frame_equal(filled, diffusion.fill(frame))  # sampling is seeded: predict twice, same cells
    assert MeanImputer.fit(frame, ["count"]).fill(frame)["count"].notna().all()


# ------------------------------------------------------------------ the estimator option


def _table(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    size = rng.uniform(20, 200, n)
    x = pd.DataFrame({"size_m2": size, "rooms": np.round(size / 40 + rng.normal(0, 0.3, n)),
                      "area": rng.choice(["north", "south"], n)})
    y = pd.Series(1000 * x.size_m2 + rng.normal(0, 500, n), name="price")
    return remove_cells(x, 0.3, "mcar", seed=seed), y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


@pytest.mark.parametrize("imputation", ["mean", "diffusion"])
def test_imputation_round_trips_through_save_and_load(imputation, cache_dir, tmp_path, single_thread):
    x, y = _table()
    model = BasisRegressor(strategy="inference", n_estimators=1, missing_imputation=imputation,
                           embedding_cache_dir=cache_dir, progress=False).fit(x[:45], y[:45])
    before = model.predict(x[45:])
    model.save(tmp_path / "saved")
    loaded = BasisRegressor.load(tmp_path / "saved")
    assert loaded.missing_imputation == imputation and type(loaded.imputer_) is type(model.imputer_)
    np.testing.assert_array_equal(loaded.predict(x[45:]), before)
    # the context the model reads holds the filled cells: no numeric cell of the training rows is missing
    assert model.context_.column("size_m2").null_count == 0 and model.context_.column("area").null_count > 0


def test_imputation_changes_what_the_model_reads(cache_dir, single_thread):
    x, y = _table()
    kw = dict(strategy="inference", n_estimators=1, embedding_cache_dir=cache_dir, progress=False)
    plain = BasisRegressor(**kw).fit(x[:45], y[:45])
    filled = BasisRegressor(missing_imputation="mean", **kw).fit(x[:45], y[:45])
    assert plain.imputer_ is None and plain.context_.column("size_m2").null_count > 0
    assert not np.allclose(plain.predict(x[45:]), filled.predict(x[45:]))


@pytest.mark.parametrize("cls", [BasisRegressor, BasisClassifier])
@pytest.mark.parametrize("value", ["median", "Diffusion", 1])
def test_unknown_imputation_is_refused_by_name(cls, value):
    x, y = _table(20)
    with pytest.raises(ConfigError, match="missing_imputation"):
        cls(strategy="inference", missing_imputation=value).fit(x, y > y.median())


@pytest.mark.parametrize("key, value", [("means", [1.0]), ("columns", ["size_m2", "elsewhere"]), ("kind", "median")])
def test_a_damaged_saved_imputer_is_refused_naming_the_file(key, value, cache_dir, tmp_path, single_thread):
    x, y = _table()
    BasisRegressor(strategy="inference", n_estimators=1, missing_imputation="mean", embedding_cache_dir=cache_dir,
                   progress=False).fit(x, y).save(tmp_path / "saved")
    path = tmp_path / "saved" / "estimator.json"
    state = json.loads(path.read_text())
    state["imputer"][key] = value
    path.write_text(json.dumps(state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="estimator.json.*imputer"):
            BasisRegressor.load(tmp_path / "saved")
