"""Hostile tracking URIs (issue 37): a registry read from a path where there is none creates nothing and says
so; a server that accepts connections and never answers fails in seconds, with what to do.

The only server contacted is a socket on 127.0.0.1 started here, which accepts and never answers and closes
itself after at most a minute.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from basisfm.config import TrackingConfig
from basisfm.errors import CheckpointError, TrackingError
from basisfm.pretrained.checkpoints import resolve_checkpoint
from basisfm.tracking import TrackingLogger, download_checkpoint, promote
from basisfm.tracking.mlflow_logger import make_client
from basisfm.tracking.store import SERVER_ANSWER_SECONDS, local_store_path


@pytest.fixture
def silent_server():
    """`http://127.0.0.1:<port>` of a server that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    done = threading.Event()
    deadline = time.monotonic() + 60  # bounded even if the test never tears it down

    def accept_and_stay_silent():
        while not done.is_set() and time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
                accepted.append(connection)
            except (socket.timeout, OSError):
                continue
        for connection in accepted:
            connection.close()
        listener.close()

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join(timeout=5)


@pytest.fixture
def refused_uri():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_registry_uri_in_a_missing_folder_creates_nothing_and_says_there_is_no_registry(tmp_path):
    missing = tmp_path / "no-such-folder"
    uri = f"sqlite:///{missing / 'mlflow.db'}"
    with pytest.raises(CheckpointError, match="no MLflow registry at tracking URI") as caught:
        resolve_checkpoint("models:/basisfm@champion", download_dir=tmp_path / "dl", tracking_uri=uri)
    message = str(caught.value)
    assert "models:/basisfm@champion" in message and str(missing) in message and "nothing was created" in message
    assert "not found" not in message  # MLflow's answer after creating an empty store
    assert not missing.exists() and not (tmp_path / "dl").exists()


def test_a_registry_uri_with_no_tracking_uri_given_leaves_no_runs_folder_behind(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the embedded store is runs/mlflow.db under the working directory
    with pytest.raises(CheckpointError, match="no MLflow registry at tracking URI 'sqlite:///"):
        resolve_checkpoint("models:/basisfm@champion", download_dir=tmp_path / "dl")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_promote_and_download_from_a_missing_store_create_nothing(tmp_path):
    missing = tmp_path / "typo" / "runs"
    uri = f"sqlite:///{missing / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="no MLflow registry"):
        download_checkpoint("basisfm", "1", uri, tmp_path / "dl")
    with pytest.raises(TrackingError, match="no MLflow registry"):
        promote("1", lambda path: {"val_loss": 0.0}, tracking_uri=uri)
    from basisfm.evaluation.promotion import latest_version  # `jobs.promote` without --version

    with pytest.raises(TrackingError, match="no MLflow registry"):
        latest_version("basisfm", uri)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("uri, path", [
    ("sqlite:////abs/runs/mlflow.db", Path("/abs/runs/mlflow.db")),
    ("sqlite:///runs/mlflow.db?timeout=20", Path("runs/mlflow.db")),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("file:///abs/mlruns", Path("/abs/mlruns")),
    ("./mlruns", Path("mlruns")),
    ("http://127.0.0.1:5000", None),
    ("databricks", None),  # MLflow's name for a Databricks workspace, not a path
])
def test_the_local_store_of_a_tracking_uri(uri, path):
    assert local_store_path(uri) == path


def test_a_server_that_never_answers_fails_a_checkpoint_download_in_seconds(tmp_path, silent_server):
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="accepts connections but sent no answer") as caught:
        resolve_checkpoint("models:/basisfm@champion", download_dir=tmp_path / "dl", tracking_uri=silent_server)
    elapsed = time.monotonic() - started
    assert elapsed < SERVER_ANSWER_SECONDS + 4, elapsed  # was 33 s: three 10 s read timeouts and backoff
    assert "models:/basisfm@champion" in str(caught.value) and silent_server in str(caught.value)


def test_a_server_that_never_answers_fails_every_client_in_seconds(tmp_path, silent_server):
    started = time.monotonic()
    with pytest.raises(TrackingError, match="accepts connections but sent no answer"):
        make_client(silent_server)
    # Training keeps its promise: tracking down is one warning, and it costs seconds, not half a minute.
    config = TrackingConfig(local_dir=str(tmp_path / "runs"), experiment="e", tracking_uri=silent_server)
    with pytest.warns(RuntimeWarning, match="no answer within"):
        logger = TrackingLogger.start(config, "run", run_key="k")
    assert not logger.active
    assert time.monotonic() - started < 2 * SERVER_ANSWER_SECONDS + 6


def test_a_refused_connection_names_the_reason(tmp_path, refused_uri):
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"cannot reach the tracking server .*Connection refused"):
        resolve_checkpoint("models:/basisfm@champion", download_dir=tmp_path / "dl", tracking_uri=refused_uri)
    assert time.monotonic() - started < 3  # was 3.7 s of retries with backoff
