"""Hostile input to BasisRegressor / BasisClassifier (issue 15): parameters, targets, predict-time cells,
tampered saved estimators and checkpoints, MLflow downloads, and scikit-learn's `check_estimator`."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from basisfm.errors import CheckpointError, ConfigError, InputShapeError, InputTypeError, TableError
from basisfm.estimators import BasisClassifier, BasisRegressor


def _frame(n: int = 24, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({
        "size_m2": rng.uniform(20, 200, n),
        "garden": rng.choice([True, False], n),
        "built": pd.Timestamp("1990-01-01") + pd.to_timedelta(rng.integers(0, 10_000, n), unit="D"),
        "area": rng.choice(["north", "south", "east"], n),
    })
    y = pd.Series(1000 * x.size_m2 + rng.normal(0, 500, n), name="price")
    return x, y


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("embeddings"))


def _quiet(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture is not about warnings
        return estimator.fit(X, y)


def _regressor(cache_dir, **kw) -> BasisRegressor:
    return BasisRegressor(**{"strategy": "inference", "embedding_cache_dir": cache_dir, "progress": False, **kw})


def _classifier(cache_dir, **kw) -> BasisClassifier:
    return BasisClassifier(**{"strategy": "inference", "embedding_cache_dir": cache_dir, "progress": False, **kw})


@pytest.fixture(scope="module")
def fitted(cache_dir):
    x, y = _frame()
    return _quiet(_regressor(cache_dir), x, y)


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    "params, error, name",
    [
        ({"time_budget_s": -1}, ConfigError, "time_budget_s"),
        ({"time_budget_s": math.inf}, ConfigError, "time_budget_s"),
        ({"max_steps": 2.5}, InputTypeError, "max_steps"),
        ({"max_steps": True}, InputTypeError, "max_steps"),
        ({"n_estimators": 0}, ConfigError, "n_estimators"),
        ({"validate_every": 0}, ConfigError, "validate_every"),
        ({"device": 3}, InputTypeError, "device"),
        ({"random_state": -1}, ConfigError, "random_state"),
        ({"random_state": 2**32}, ConfigError, "random_state"),
        ({"random_state": "seed"}, InputTypeError, "random_state"),
        ({"weight_decay": -1}, ConfigError, "weight_decay"),
        ({"learning_rate": 1e308}, ConfigError, "learning_rate"),
        ({"learning_rate": float("nan")}, ConfigError, "learning_rate"),
        ({"learning_rate": 10**400}, ConfigError, "learning_rate"),
        ({"lora_dropout": 1.0}, ConfigError, "lora_dropout"),
        ({"validation_fraction": 0}, ConfigError, "validation_fraction"),
        ({"token_budget": 10**14}, ConfigError, "token_budget"),
        ({"max_columns": 1}, ConfigError, "max_columns"),
        ({"preset": "huge"}, ConfigError, "preset"),
        ({"regression_loss": "l1"}, ConfigError, "regression_loss"),
        ({"lora_target_modules": "q_proj"}, InputTypeError, "lora_target_modules"),
        ({"checkpoint": 5}, InputTypeError, "checkpoint"),
        ({"progress": "yes"}, InputTypeError, "progress"),
    ],
)
def test_bad_parameters_are_refused_at_fit_naming_the_parameter(cache_dir, params, error, name):
    x, y = _frame(8)
    started = time.monotonic()
    with pytest.raises(error, match=rf"parameter '{name}'"):
        BasisRegressor(**{"embedding_cache_dir": cache_dir, "progress": False, **params}).fit(x, y)
    assert time.monotonic() - started < 2  # before any model is built or embedding computed


# ------------------------------------------------------------------ targets


def test_a_regression_target_whose_squares_overflow_is_a_clear_error(cache_dir):
    x, y = _frame()
    for scale in (1e154, 1e200, -1e300):
        with pytest.raises(TableError, match=r"column 'price'.*target values reach .*overflow float64.*rescale"):
            _regressor(cache_dir).fit(x, y / y.abs().max() * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warning on the way
        warnings.filterwarnings("ignore", message="strategy='inference'")
        model = _regressor(cache_dir).fit(x, y / y.abs().max() * 1e100)
    assert math.isfinite(model.target_scale_) and np.isfinite(model.predict(x)).all()


@pytest.mark.parametrize(
    "labels, match",
    [
        ([1, "1"] * 12, r"class labels mix types: number 1 \(row 0\), string '1' \(row 1\)"),
        ([1, "a"] * 12, r"class labels mix types"),
        ([True, "yes"] * 12, r"class labels mix types"),
        (pd.Series(["a", "b"] * 11 + [pd.NA, "a"], dtype="string"), r"target row 22 is <NA>"),
        (pd.Series(["a", "b"] * 11 + [pd.NA, "a"], dtype=object), r"target row 22 is <NA>"),
        ([pd.NaT, pd.Timestamp("2020-01-01")] * 12, r"target row 0 is NaT"),
        ([b"\xff\xfe", b"ok"] * 12, r"target row 0 is b'\\xff\\xfe', bytes that are not UTF-8"),
        ([1j, 2j] * 12, r"Unknown label type.*complex"),
        ([0.5, 1.25, 2.0] * 8, r"Unknown label type: continuous"),
        ([[1, 2], [3]] * 12, r"a class label must be one value"),
    ],
)
def test_class_labels_that_cannot_be_classes_are_clear_errors(cache_dir, labels, match):
    x, _ = _frame()
    with pytest.raises(TableError, match=match):
        _classifier(cache_dir).fit(x, labels)


def test_classes_keep_their_type(cache_dir):
    x, _ = _frame()
    model = _quiet(_classifier(cache_dir), x, np.array([3, 7] * 12))
    assert model.classes_.dtype.kind == "i" and model.predict(x).dtype.kind == "i"


# ------------------------------------------------------------------ cells at predict


def test_a_boolean_feature_given_as_numbers_or_words_at_predict_is_read_not_lost(fitted):
    x, _ = _frame()
    expected = fitted.predict(x)
    for given in (x.garden.astype(int), x.garden.astype(float), x.garden.map({True: "yes", False: "no"}),
                  x.garden.map({True: "Y", False: "n"}), x.garden.map({True: "TRUE", False: "False"})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_allclose(fitted.predict(x.assign(garden=given)), expected)
    all_missing = fitted.predict(x.assign(garden=None))
    assert not np.allclose(all_missing, expected)  # the conversions above really were needed
    with pytest.warns(UserWarning, match=r"'garden'.*not booleans \(e.g. 'maybe'\)"):
        fitted.predict(x.assign(garden=["maybe"] + ["yes"] * (len(x) - 1)))


@pytest.mark.parametrize("unit", ["ns", "s", "ms"])
def test_a_datetime_feature_given_as_numbers_at_predict_is_refused_not_misread(fitted, unit):
    x, _ = _frame()
    numbers = x.built.astype("datetime64[ns]").astype("int64") // {"ns": 1, "s": 10**9, "ms": 10**6}[unit]
    with pytest.raises(TableError, match=r"column 'built': held dates at fit but got numbers.*unit"):
        fitted.predict(x.assign(built=numbers))
    with pytest.raises(TableError, match="held dates"):
        fitted.predict(x.assign(built=numbers.astype(object)))
    as_text = fitted.predict(x.assign(built=x.built.dt.strftime("%Y-%m-%d")))
    np.testing.assert_allclose(as_text, fitted.predict(x))


def test_complex_cells_are_refused_unless_real(cache_dir, fitted):
    x, y = _frame()
    with pytest.raises(TableError, match=r"column 'size_m2': row 0 is the complex number.*two columns"):
        fitted.predict(x.assign(size_m2=x.size_m2 + 1j))
    with pytest.raises(TableError, match=r"column 'z': row 3 is the complex number"):
        _regressor(cache_dir).fit(x.assign(z=[0j, 1 + 0j, 2.5 + 0j, 1 + 2j] * 6), y)
    with pytest.raises(TableError, match="complex number"):
        fitted.predict(x.assign(size_m2=[complex(v, 1) for v in x.size_m2]))  # object column of complex
    np.testing.assert_allclose(fitted.predict(x.assign(size_m2=x.size_m2 + 0j)), fitted.predict(x))


def test_pd_na_is_missing_in_every_dtype(fitted):
    x, _ = _frame()
    holes = x.astype({"garden": object})
    holes.loc[[1, 4], "size_m2"] = np.nan
    holes.loc[[2], "area"] = None
    holes.loc[[3], "garden"] = None
    expected = fitted.predict(holes)
    with_na = x.astype({"size_m2": "Float64", "area": "string", "garden": "boolean"})
    with_na.loc[[1, 4], "size_m2"] = pd.NA
    with_na.loc[[2], "area"] = pd.NA
    with_na.loc[[3], "garden"] = pd.NA
    np.testing.assert_allclose(fitted.predict(with_na), expected)
    as_objects = holes.astype(object)
    as_objects.loc[[1, 4], "size_m2"] = pd.NA
    np.testing.assert_allclose(fitted.predict(as_objects), expected)


def test_bytes_cells_are_text_when_utf8_and_an_error_otherwise(cache_dir, fitted):
    x, y = _frame()
    as_bytes = fitted.predict(x.assign(area=x.area.str.encode("utf-8")))
    np.testing.assert_allclose(as_bytes, fitted.predict(x))
    bad = x.assign(area=[b"caf\xe9"] + list(x.area.str.encode("utf-8"))[1:])
    with pytest.raises(TableError, match=r"column 'area': row 0 is b'caf\\xe9', bytes that are not UTF-8"):
        fitted.predict(bad)
    with pytest.raises(TableError, match="not UTF-8"):
        _regressor(cache_dir).fit(bad, y)


def test_array_inputs_sklearn_style(cache_dir):
    from scipy import sparse

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 3)), rng.normal(size=16)
    with pytest.raises(InputTypeError, match="sparse input is not supported"):
        _regressor(cache_dir).fit(sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="Reshape your data") as caught:
        _regressor(cache_dir).fit(X[:, 0], y)
    assert isinstance(caught.value, InputShapeError) and isinstance(caught.value, TypeError)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        _regressor(cache_dir).fit(X, None)
    model = _quiet(_regressor(cache_dir), X.tolist(), y.tolist())  # lists of rows are array-likes
    with pytest.raises(ValueError, match="X has 2 features, but basisfm is expecting 3 features as input"):
        model.predict(X[:, :2])
    with pytest.raises(InputShapeError, match="X has 4 features"):
        model.predict(np.hstack([X, X[:, :1]]))


# ------------------------------------------------------------------ estimator.json


@pytest.fixture(scope="module")
def saved(cache_dir, tmp_path_factory):
    """Directories of a saved regressor and a saved classifier (fitted once)."""
    x, y = _frame()
    root = tmp_path_factory.mktemp("saved")
    _quiet(_regressor(cache_dir), x, y).save(root / "regressor")
    _quiet(_classifier(cache_dir), x, (y > y.median()).map({True: "dear", False: "cheap"})).save(root / "classifier")
    return root


def _tampered(saved: Path, tmp_path: Path, which: str, change) -> Path:
    import shutil

    target = tmp_path / which
    shutil.copytree(saved / which, target)
    path = target / "estimator.json"
    text = path.read_text()
    changed = change(json.loads(text), text)
    path.write_bytes(changed if isinstance(changed, bytes) else
                     changed.encode() if isinstance(changed, str) else json.dumps(changed).encode())
    return target


def _set(*keys, value):
    def change(state, _):
        node = state
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        return state
    return change


def _drop(*keys):
    def change(state, _):
        node = state
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
        return state
    return change


_TAMPERINGS = [
    ("regressor", lambda s, text: text[: len(text) // 2], r"not valid JSON"),
    ("regressor", lambda s, text: b"\xff" + text.encode(), r"not valid JSON \(UnicodeDecodeError"),
    ("regressor", lambda s, text: "[1, 2]", r"must hold a JSON object"),
    ("regressor", lambda s, text: "[" * 100_000, r"not valid JSON"),
    ("regressor", _drop("params"), r"key 'params' is missing"),
    ("regressor", _drop("preprocessor", "columns"), r"key 'preprocessor.columns' is missing"),
    ("regressor", _drop("fitted", "target_scale"), r"key 'fitted.target_scale' is missing"),
    ("regressor", _set("format_version", value="1"), r"key 'format_version' must be an integer"),
    ("regressor", _set("params", "max_steps", value="many"), r"key 'params.max_steps' is refused"),
    ("regressor", _set("params", "max_steps", value=10**30), r"key 'params.max_steps' is refused"),
    ("regressor", _set("params", "learning_rate", value=1e308), r"key 'params.learning_rate' is refused"),
    ("regressor", _set("params", "evil", value=1), r"key 'params.evil' is not a parameter"),
    ("regressor", lambda s, text: text.replace('"target_scale": ', '"target_scale": 1e999, "x": '),
     r"key 'fitted.target_scale' must be a finite number"),
    ("regressor", lambda s, text: text.replace('"target_scale": ', '"target_scale": ' + "9" * 5000 + ', "x": '),
     r"not valid JSON"),
    ("regressor", _set("fitted", "target_scale", value=-1.0), r"key 'fitted.target_scale' must be positive"),
    ("regressor", _set("preprocessor", "columns", 0, "kind", value="weird"), r"key 'preprocessor.columns\[0\].kind' must be one of"),
    ("regressor", _set("preprocessor", "columns", 0, "stats", "missing_rate", value=7), r"missing_rate' must be in \[0, 1\]"),
    ("regressor", _set("preprocessor", "columns", 1, "name", value=["x"]), r"key 'preprocessor.columns\[1\].name' must be a string"),
    ("regressor", _set("preprocessor", "columns", value=[]), r"'preprocessor.columns' must list at least one"),
    ("regressor", _set("histories", 0, "steps", value=10**30), r"key 'histories\[0\].steps' must be in"),
    ("regressor", _set("histories", 0, "checks", value=[{"loss": "low"}]), r"key 'histories\[0\].checks\[0\]'"),
    ("regressor", _set("members", value=["../../elsewhere"]), r"key 'members\[0\]' must name a model directory"),
    ("regressor", _set("members", value=["model", "model-1"]), r"key 'members' must name one model directory per history"),
    ("classifier", _set("fitted", "classes", value=["only"]), r"key 'fitted.classes' must list two classes"),
    ("classifier", _set("fitted", "classes", value=[1, "1"]), r"key 'fitted.classes' mixes label types"),
    ("classifier", _set("fitted", "classes", value=[{"a": 1}, "b"]), r"key 'fitted.classes\[0\]' must be"),
    ("classifier", _set("estimator", value="BasisRegressor"), r"holds a saved BasisRegressor"),
    ("regressor", _set("features_read", value="price"), r"key 'features_read' must be a list"),
    ("regressor", _set("features_read", value={"dear": []}), r"key 'features_read' must be a list"),
    ("regressor", _set("features_read", value=["../../etc/passwd"]), r"key 'features_read' names '../../etc/passwd'"),
    ("classifier", _set("features_read", value=[]), r"key 'features_read' must be a mapping"),
    ("classifier", _set("features_read", value={"rich": []}), r"key 'features_read' names 'rich', not one of the classes"),
    ("classifier", _set("features_read", value={"dear": "x"}), r"key 'features_read.dear' must be a list"),
]


@pytest.mark.parametrize("which, change, match", _TAMPERINGS, ids=[f"{w}-{m[:40]}" for w, _, m in _TAMPERINGS])
def test_a_tampered_estimator_json_is_a_checkpoint_error_naming_file_and_key(saved, tmp_path, which, change, match):
    directory = _tampered(saved, tmp_path, which, change)
    cls = BasisRegressor if which == "regressor" else BasisClassifier
    with pytest.raises(CheckpointError, match=match) as caught:
        cls.load(directory)
    assert "estimator.json" in str(caught.value)


def test_an_untampered_save_still_loads(saved):
    assert BasisRegressor.load(saved / "regressor").target_scale_ > 0
    assert list(BasisClassifier.load(saved / "classifier").classes_) == ["cheap", "dear"]


# ------------------------------------------------------------------ model checkpoints


def _tiny_checkpoint(directory: Path) -> Path:
    from basisfm.config import ModelConfig, apply_model_preset
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained

    config = ModelConfig()
    apply_model_preset(config)
    torch.manual_seed(0)
    return save_pretrained(build_model(config), directory)


def test_absurd_config_shapes_are_refused_before_allocating(tmp_path, monkeypatch):
    from basisfm.model import checkpoint as checkpoint_module
    from basisfm.model.checkpoint import load_pretrained

    directory = _tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    config["model_config"].update(preset="custom", d_model=16384, n_heads=8, n_basis=4096)  # ~6e9 parameters
    (directory / "config.json").write_text(json.dumps(config))
    built_on: list[str] = []
    import basisfm.model as model_package

    real = model_package.build_model

    def spy(cfg):
        built_on.append(str(torch.get_default_device()))
        return real(cfg)

    monkeypatch.setattr(model_package, "build_model", spy)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor .* has shape .*config.json implies"):
        load_pretrained(directory)
    config["model_config"]["n_layers"] = 256  # ~800e9 parameters
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model.safetensors does not match config.json: missing tensor"):
        load_pretrained(directory)
    assert built_on == ["meta", "meta"] and time.monotonic() - started < 30  # nothing was allocated for real
    config["model_config"]["d_model"] = 10**9
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model_config.d_model"):
        load_pretrained(directory)


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from basisfm.model.checkpoint import load_pretrained

    directory = _tiny_checkpoint(tmp_path / "ckpt")
    state = load_file(str(directory / "model.safetensors"))
    name = sorted(n for n, t in state.items() if t.is_floating_point())[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' holds \d+ NaN or infinite"):
        load_pretrained(directory)


# ------------------------------------------------------------------ MLflow downloads


def _registered(tmp_path: Path) -> tuple[str, str]:
    """A sqlite tracking URI holding model 'm' with alias 'champion' -> a run artifact holding a checkpoint."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(_tiny_checkpoint(tmp_path / "ckpt")), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("m")
    version = client.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)
    return uri, "models:/m@champion"


def test_downloading_a_checkpoint_leaves_the_global_tracking_uri_alone(tmp_path, monkeypatch):
    import mlflow

    from basisfm.pretrained.checkpoints import resolve_checkpoint

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, model_uri = _registered(tmp_path)
    env_before = set(os.environ)  # registering above may set the tracking side's fail-fast settings
    users_own = f"sqlite:///{tmp_path / 'users-own.db'}"
    mlflow.set_tracking_uri(users_own)
    mlflow.set_registry_uri(users_own)
    try:
        found = resolve_checkpoint(model_uri, download_dir=tmp_path / "dl", tracking_uri=uri)
        assert (found / "model.safetensors").is_file()
        assert mlflow.get_tracking_uri() == users_own and mlflow.get_registry_uri() == users_own
        assert not any(k.startswith("MLFLOW_HTTP_REQUEST") for k in os.environ if k not in env_before)
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")




def test_an_unreachable_tracking_server_fails_in_seconds(tmp_path, monkeypatch):
    from basisfm.pretrained.checkpoints import resolve_checkpoint

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"models:/basisfm@champion.*127.0.0.1:9"):
        resolve_checkpoint("models:/basisfm@champion", download_dir=tmp_path, tracking_uri="http://127.0.0.1:9")
    assert time.monotonic() - started < 30  # was ~250 s of MLflow's default backoff
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


# ------------------------------------------------------------------ scikit-learn's check_estimator

# Checks basisfm fails on purpose, each with the reason. Everything else in check_estimator must pass.
SKIPPED_CHECKS = {
    "check_regressors_train": "asserts R^2 > 0.5 after fit; a from-scratch model at a test budget (2 steps) does not "
                              "get there (quality is what benchmarks/ measure); the rest of the check runs below "
                              "with the score assertion off",
    "check_classifiers_train": "asserts accuracy > 0.83 after fit; as check_regressors_train",
    "check_regressor_data_not_an_array": "compares predictions for X as an array (columns named x0, x1, ...) and as a "
                                         "DataFrame (columns named 0, 1, ...): column names are embedded, so predictions "
                                         "differ by design",
    "check_methods_subset_invariance": "predictions on subsets agree to about 3e-7 relative, 2e-7 absolute (float32 "
                                       "kernels sum in another order for another batch size), above the check's 1e-7 "
                                       "absolute; asserted below at 1e-5 relative, 1e-6 absolute",
}


def _tiny(cls, cache_dir):
    return cls(max_steps=2, progress=False, embedding_cache_dir=cache_dir)


@pytest.mark.parametrize("cls", [BasisRegressor, BasisClassifier])
def test_check_estimator_passes_all_but_the_listed_checks(cls, cache_dir):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(_tiny(cls, cache_dir), expected_failed_checks=SKIPPED_CHECKS, on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:300] for r in results if r["status"] == "failed"}
    assert failed == {}
    ran = {r["check_name"] for r in results if r["status"] == "passed"}
    assert len(ran) >= 40, sorted(ran)


@pytest.mark.parametrize("cls", [BasisRegressor, BasisClassifier])
def test_the_skipped_checks_pass_apart_from_their_stated_reason(cls, cache_dir):
    from sklearn.utils import estimator_checks

    class PoorScore(cls):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            if tags.regressor_tags is not None:
                tags.regressor_tags.poor_score = True
            if tags.classifier_tags is not None:
                tags.classifier_tags.poor_score = True
            return tags

    check = estimator_checks.check_regressors_train if cls is BasisRegressor else estimator_checks.check_classifiers_train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(cls.__name__, _tiny(PoorScore, cache_dir))
        rng = np.random.RandomState(0)
        X = 3 * rng.uniform(size=(20, 3))
        y = X[:, 0].astype(int)
        model = _tiny(cls, cache_dir).fit(X, y)
        method = model.predict if cls is BasisRegressor else model.predict_proba
        whole = method(X)
        by_row = np.concatenate([method(X[i: i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(by_row, whole, rtol=1e-5, atol=1e-6)
