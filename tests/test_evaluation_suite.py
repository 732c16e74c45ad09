"""Evaluation: splits, baselines (GBDTs, RandomForest), leaderboard output and the suite runner on a 2-task suite written here."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from basisfm.errors import ConfigError, TableError
from basisfm.evaluation import Baseline, Leaderboard, ScoreRecord, SplitProtocol, make_split, run_suite
from basisfm.evaluation.splits import rows_with_usable_target, split_seeds

BASELINES = ["xgboost", "lightgbm", "catboost", "hist_gbm", "random_forest"]


def _regression_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.uniform(20, 200, n)
    rooms = rng.integers(1, 6, n)
    area = rng.choice(["north", "south", "east", "west"], n)
    price = 1000 * size + 5000 * rooms + np.where(area == "north", 30_000, 0) + rng.normal(0, 5000, n)
    return pd.DataFrame({"row_id": np.arange(n), "size_m2": size, "rooms": rooms, "area": area, "price": price})


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    # One sqlite store for the module: creating its tables is the slowest part of an MLflow test.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def mini_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    _regression_frame(160, 0).to_csv(root / "houses.csv", index=False)
    frame = _regression_frame(120, 1).rename(columns={"price": "rent"})
    frame.loc[3, "rent"] = np.nan  # rows without a target are left out of every split
    frame.to_csv(root / "flats.csv", index=False)
    (root / "mini.yaml").write_text(
        "name: mini-suite\n"
        "protocol: {splits: 2, test_fraction: 0.25, max_train_rows: 80, max_test_rows: 30, metric: r2}\n"
        "tasks:\n"
        "  - {source: files, path: houses.csv, target: price, drop: [row_id]}\n"
        "  - {source: files, path: flats.csv, target: rent, drop: [row_id]}\n"
    )
    return root / "mini.yaml"


def test_splits_are_seeded_disjoint_and_capped():
    protocol = SplitProtocol(splits=3, test_fraction=0.2, max_train_rows=50, max_test_rows=10)
    a, b = make_split(100, 1, protocol), make_split(100, 1, protocol)
    assert np.array_equal(a.train_rows, b.train_rows) and np.array_equal(a.test_rows, b.test_rows)
    assert not set(a.train_rows) & set(a.test_rows)
    assert len(a.train_rows) == 50 and len(a.test_rows) == 10
    assert not np.array_equal(make_split(100, 2, protocol).test_rows, a.test_rows)
    assert split_seeds(protocol, [2, 0]) == [0, 2]
    with pytest.raises(ConfigError, match=r"\[7\]"):
        split_seeds(protocol, [7])


def test_rows_without_target_are_dropped_and_a_missing_target_column_is_named():
    frame = pd.DataFrame({"x": range(12), "y": [1.0, np.inf, None] + [2.0] * 9})
    assert len(rows_with_usable_target(frame, "y", "t")) == 10
    with pytest.raises(TableError, match="'nope'"):
        rows_with_usable_target(frame, "nope", "t")


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_fit_categoricals_with_unseen_and_many_levels(name):
    frame = _regression_frame(200, 3)
    x, y = frame.drop(columns=["price", "row_id"]), frame["price"]
    model = Baseline(name, seed=0).fit(x.iloc[:150], y.iloc[:150])
    test = x.iloc[150:].copy()
    test.loc[test.index[0], "area"] = "never seen"
    pred = model.predict(test)
    assert pred.shape == (50,) and np.isfinite(pred).all()
    assert np.corrcoef(pred, y.iloc[150:])[0, 1] > 0.8
    # 300 distinct levels: more than HistGradientBoosting's 255 categorical bins (it gets ordinal codes).
    x["street"] = [f"street {i % 300}" for i in range(200)]
    wide = Baseline(name, seed=0).fit(x.iloc[:150], y.iloc[:150])
    assert np.isfinite(wide.predict(x.iloc[150:])).all()


def test_random_forest_reads_few_levels_one_hot_and_many_as_codes():
    frame = _regression_frame(200, 5)
    x = frame.drop(columns=["price", "row_id"])
    x["street"] = [f"street {i % 300}" for i in range(200)]
    x.loc[0, "area"] = None
    features = Baseline("random_forest").fit(x, frame["price"])._features(x)
    assert [c for c in features.columns if c.startswith("area")] == [f"area={a}" for a in ("east", "north", "south", "west")]
    assert features.loc[0, [f"area={a}" for a in ("east", "north", "south", "west")]].sum() == 0  # missing: no level
    assert features["street"].dtype == np.float64 and features["street"].nunique() == 200
    assert (features["area=north"] == (x["area"] == "north")).all()


@pytest.mark.parametrize("name", ["lightgbm", "random_forest"])
def test_baseline_classification_returns_original_labels(name):
    frame = _regression_frame(150, 4)
    labels = np.where(frame.price > frame.price.median(), "dear", "cheap")
    model = Baseline(name, task="classification").fit(frame.drop(columns=["price"]), labels)
    pred = model.predict(frame.drop(columns=["price"]))
    assert set(pred) <= {"dear", "cheap"} and (pred == labels).mean() > 0.8


def test_unknown_baseline_is_a_config_error():
    with pytest.raises(ConfigError, match="randomforest"):
        Baseline("randomforest")


def test_leaderboard_marks_failed_runs_and_takes_the_median_over_tasks(tmp_path):
    records = [ScoreRecord(t, s, m, score, 1.0, 0.1, 10, 5) for t, s, m, score in [
        ("a", 0, "m1", 0.5), ("a", 1, "m1", 0.7), ("b", 0, "m1", 0.2), ("b", 1, "m1", 0.2),
        ("c", 0, "m1", 0.9), ("c", 1, "m1", 0.9), ("a", 0, "m2", 0.8), ("a", 1, "m2", 0.8)]]
    records.append(ScoreRecord("b", 0, "m2", math.nan, 0.0, 0.0, 10, 5, error="ValueError: boom"))
    board = Leaderboard("s", "r2", records)
    summary = board.summary().set_index("model")
    assert summary.loc["m1", "median r2"] == pytest.approx(0.6)  # median of task means 0.6, 0.2, 0.9
    assert summary.loc["m2", "tasks"] == "1/3" and summary.loc["m2", "failed runs"] == 1
    text = board.to_markdown()
    assert "failed" in text and "ValueError: boom" in text and "0.600 ± 0.100" in text
    assert "| c | 0.900 ± 0.000 | - |" in text  # m2 never ran on c: not run, not failed
    assert "| b | 0.200 ± 0.000 | failed |" in text
    paths = board.save(tmp_path)
    assert paths["png"].stat().st_size > 1000
    again = Leaderboard.from_json(paths["scores"].read_text())
    assert again.to_markdown() == text


def test_run_suite_scores_baselines_on_the_same_splits_and_logs_to_mlflow(mini_suite, mlflow_uri, tmp_path):
    uri = mlflow_uri
    result = run_suite(mini_suite, models=BASELINES, splits=[1], out_dir=tmp_path / "out",
                       tracking_uri=uri, experiment="eval-test", progress=False)
    board = result.leaderboard
    assert board.suite == "mini-suite" and board.models == BASELINES
    assert board.tasks == ["files/houses.csv", "files/flats.csv"]
    assert {r.split for r in board.records} == {1}
    # Same split for every model: equal train/test sizes per task, capped as the protocol says.
    sizes = {(r.task, r.n_train, r.n_test) for r in board.records}
    assert sizes == {("files/houses.csv", 80, 30), ("files/flats.csv", 80, 30)}
    assert all(r.error is None and r.score > 0.5 for r in board.records)
    text = result.paths["markdown"].read_text()
    assert "median r2" in text and "fit s" in text and "predict s" in text
    assert result.paths["png"].exists()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["xgboost/median_r2"] == pytest.approx(board.summary().set_index("model").loc["xgboost", "median r2"])
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"leaderboard.md", "leaderboard.png", "scores.json"} <= artifacts


def test_run_suite_rejects_unknown_tasks_and_models(mini_suite, tmp_path):
    with pytest.raises(ConfigError, match="no task"):
        run_suite(mini_suite, models=["lightgbm"], tasks=["missing.csv"], out_dir=tmp_path, log_to_mlflow=False)
    with pytest.raises(ConfigError, match="tabpfn"):
        run_suite(mini_suite, models=["tabpfn"], out_dir=tmp_path, log_to_mlflow=False)


def test_evaluate_job_selects_tasks_splits_and_models(mini_suite, tmp_path, monkeypatch, capsys):
    from jobs import evaluate

    monkeypatch.setattr(sys, "argv", ["evaluate", "--suite", str(mini_suite), "--tasks", "houses.csv", "--splits", "0",
                                      "--models", "lightgbm", "hist_gbm", "--out", str(tmp_path / "job"), "--no-mlflow"])
    assert evaluate.main() == 0
    out = capsys.readouterr().out
    assert "| lightgbm |" in out and "files/houses.csv" in out and "flats" not in out
    scores = json.loads((tmp_path / "job" / "scores.json").read_text())
    assert {r["model"] for r in scores["records"]} == {"lightgbm", "hist_gbm"}


@pytest.mark.slow
def test_basis_strategies_run_in_the_suite_from_the_registered_champion(mini_suite, mlflow_uri, tmp_path):
    import mlflow
    import torch

    from basisfm.config import ModelConfig
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained
    from basisfm.tracking.registry import log_checkpoint_model

    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig()), tmp_path / "ckpt")
    version = log_checkpoint_model(tmp_path / "ckpt", "basisfm-test", tracking_uri=mlflow_uri, experiment="registry-test")
    mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).set_registered_model_alias(
        "basisfm-test", "champion", version)

    basis = ["basis-inference", "basis-base-ft", "basis-peft"]
    result = run_suite(
        mini_suite, models=[*basis, "lightgbm"], tasks=["houses.csv"], splits=[0], out_dir=tmp_path / "out",
        checkpoint="models:/basisfm-test@champion", tracking_uri=mlflow_uri, experiment="eval-test", progress=False,
        basis_params={"max_steps": 6, "token_budget": 256,
                      "embedding_cache_dir": str(tmp_path / "embeddings")},
    )
    records = {r.model: r for r in result.leaderboard.records}
    assert all(records[m].error is None and np.isfinite(records[m].score) for m in [*basis, "lightgbm"]), records
    assert all(records[m].fit_seconds > 0 and records[m].predict_seconds > 0 for m in basis)
    # The registered weights were downloaded once and used: the note names the downloaded directory.
    from pathlib import Path

    (note,) = [n for n in result.notes if n.startswith("basis checkpoint: ")]
    downloaded = Path(note.removeprefix("basis checkpoint: "))
    assert (downloaded / "model.safetensors").read_bytes() == (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    with pytest.raises(Exception, match="nope"):
        run_suite(mini_suite, models=["basis-inference"], tasks=["houses.csv"], splits=[0], out_dir=tmp_path / "x",
                  checkpoint="models:/nope@champion", tracking_uri=mlflow_uri, log_to_mlflow=False, progress=False)


def test_a_basis_model_can_have_its_own_checkpoint(mini_suite, tmp_path):
    import torch

    from basisfm.config import ModelConfig
    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    torch.manual_seed(0)
    per_row = save_pretrained(build_model(ModelConfig()), tmp_path / "per_row")
    result = run_suite(mini_suite, models=["basis-inference", "basis-base-ft"], tasks=["houses.csv"], splits=[0],
                       out_dir=tmp_path / "out", checkpoint=str(per_row), model_checkpoints={"basis-inference": "in_context"},
                       basis_params={"max_steps": 2, "embedding_cache_dir": str(tmp_path / "embeddings")},
                       log_to_mlflow=False, progress=False)
    assert sorted(result.notes) == [f"basis checkpoint (basis-base-ft): {per_row}",
                                    f"basis checkpoint (basis-inference): {IN_CONTEXT_CHECKPOINT_DIR}"]
    assert all(r.error is None for r in result.leaderboard.records), result.leaderboard.records
    with pytest.raises(ConfigError, match=r"only Basis models take a checkpoint"):
        run_suite(mini_suite, models=["lightgbm"], model_checkpoints={"lightgbm": str(per_row)}, out_dir=tmp_path, log_to_mlflow=False)


@pytest.mark.filterwarnings("ignore:strategy=.inference. without a checkpoint:UserWarning")  # from scratch on purpose
def test_basis_models_start_from_their_estimators_default_checkpoint_unless_told_otherwise(mini_suite, tmp_path):
    """`python -m jobs.evaluate --models basis-inference` scores the shipped in-context model, as
    `BasisRegressor(strategy="inference")` would predict; `--checkpoint none` is what trains from scratch."""
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    common = dict(tasks=["houses.csv"], splits=[0], log_to_mlflow=False, progress=False,
                  basis_params={"max_steps": 2, "embedding_cache_dir": str(tmp_path / "embeddings")})
    shipped = run_suite(mini_suite, models=["basis-inference"], out_dir=tmp_path / "shipped", **common)
    assert shipped.notes == [f"basis checkpoint: {IN_CONTEXT_CHECKPOINT_DIR}"]
    scratch = run_suite(mini_suite, models=["basis-inference"], out_dir=tmp_path / "scratch", checkpoint=None, **common)
    assert scratch.notes == ["basis checkpoint: none (from scratch: a freshly initialised model of the preset)"]
    (trained,), (untrained,) = shipped.leaderboard.records, scratch.leaderboard.records
    assert trained.score > untrained.score  # the pretrained model reads the table; a random one does not


def test_the_evaluate_command_reads_none_as_from_scratch_and_defaults_to_the_estimators_checkpoints():
    from jobs.evaluate import build_parser

    assert build_parser().parse_args([]).checkpoint == "default"
    assert build_parser().parse_args(["--checkpoint", "none"]).checkpoint is None
    assert build_parser().parse_args(["--checkpoint", "in_context"]).checkpoint == "in_context"


def test_xgboost_reads_an_id_like_column_as_codes_so_it_cannot_memorise_rows():
    # A string column with a value per row (an id, free text) beside the real signal: XGBoost's native partition
    # splits isolate single training rows on it (test R² 0.26 here, 0.73 without the column); as ordinal codes
    # (it is wider than XGBoost's 64-category partition limit) 0.58.
    rng = np.random.default_rng(0)
    signal = rng.normal(size=800)
    x = pd.DataFrame({"signal": signal, "area": rng.choice(["east", "west"], size=800)})
    y = pd.Series(np.sin(2 * signal) + 0.3 * rng.normal(size=800))
    with_id = x.assign(ticket=[f"ticket {i}" for i in range(800)])

    def r2(frame):
        pred = Baseline("xgboost", seed=0).fit(frame.iloc[:600], y.iloc[:600]).predict(frame.iloc[600:])
        return 1 - np.mean((pred - y.iloc[600:]) ** 2) / np.var(y.iloc[600:])

    features = Baseline("xgboost").fit(with_id, y)._features(with_id)
    assert features["ticket"].dtype == np.float64 and isinstance(features["area"].dtype, pd.CategoricalDtype)
    assert r2(with_id) > 0.5
