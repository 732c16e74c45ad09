"""The rank-0 MLflow logger: where runs go, buffering to checkpoints (no duplicated steps), resume, server down."""

from __future__ import annotations

import socket
import time

import pytest

from basisfm.config import TrackingConfig
from basisfm.tracking import TrackingLogger, resolve_tracking_uri, ui_command
from basisfm.tracking.mlflow_logger import make_client


def _config(tmp_path, **kw) -> TrackingConfig:
    return TrackingConfig(local_dir=str(tmp_path / "runs"), experiment="test-logger", **kw)


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    embedded = resolve_tracking_uri(_config(tmp_path))
    assert embedded == f"sqlite:///{(tmp_path / 'runs').absolute() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri(_config(tmp_path)) == "http://tracking.example:5000"
    assert resolve_tracking_uri(_config(tmp_path, tracking_uri="sqlite:///elsewhere.db")) == "sqlite:///elsewhere.db"
    assert "mlflow ui --backend-store-uri sqlite:" in ui_command(embedded)


def test_metrics_reach_mlflow_only_when_flushed_and_resume_reuses_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = _config(tmp_path)
    logger = TrackingLogger.start(config, "run-a", run_key="storage/run-a")
    assert logger.active and not logger.resumed
    logger.log_params({"train.lr": 0.001, "model.d_model": 64})
    for step in range(1, 5):
        logger.buffer_metrics({"train_loss": 1.0 / step, "val_r2": float("nan")}, step)
    client = make_client(logger.tracking_uri)
    assert client.get_metric_history(logger.run_id, "train_loss") == []  # nothing before a checkpoint
    assert logger.flush()
    # A worker dies after step 6; steps 5-6 were never flushed, so the resumed run re-logs them once.
    logger.buffer_metrics({"train_loss": 0.2}, 5)
    logger.buffer_metrics({"train_loss": 0.1}, 6)

    again = TrackingLogger.start(config, "run-a", run_key="storage/run-a")
    assert again.resumed and again.run_id == logger.run_id
    other = TrackingLogger.start(config, "run-b", run_key="storage/run-b")
    assert other.run_id != logger.run_id
    for step in (5, 6):
        again.buffer_metrics({"train_loss": 0.5 / step}, step)
    again.end()
    steps = [m.step for m in client.get_metric_history(logger.run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert client.get_metric_history(logger.run_id, "val_r2") == []  # NaN is dropped, not sent
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.lr"] == "0.001"


def test_tracking_server_down_warns_and_training_goes_on(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _config(tmp_path, tracking_uri=f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="training continues"):
        logger = TrackingLogger.start(config, "run-down", run_key="k")
    assert not logger.active and logger.run_id is None
    logger.buffer_metrics({"train_loss": 1.0}, 1)
    logger.flush()
    logger.log_artifact(tmp_path)
    logger.end()
    assert time.perf_counter() - started < 60  # fail-fast HTTP retries, not MLflow's multi-minute default


def test_flush_failure_keeps_metrics_for_the_next_flush(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = TrackingLogger.start(_config(tmp_path), "run-c", run_key="c")
    logger.buffer_metrics({"train_loss": 1.0}, 1)
    real = logger._client

    class UnreachableClient:
        def log_batch(self, *args, **kwargs):
            raise OSError("connection refused")

    monkeypatch.setattr(logger, "_client", UnreachableClient())
    with pytest.warns(RuntimeWarning):
        assert not logger.flush()
    monkeypatch.setattr(logger, "_client", real)
    assert logger.flush()
    assert [m.step for m in real.get_metric_history(logger.run_id, "train_loss")] == [1]
