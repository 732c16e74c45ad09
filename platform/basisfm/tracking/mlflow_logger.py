"""MLflow logging for training: resolve where runs go, and a logger that never stops training.

Only rank 0 holds a `TrackingLogger`. Step metrics are buffered and written at checkpoints, so a run that
fails and resumes from its last checkpoint never logs a step twice.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

from basisfm.config import TrackingConfig

log = logging.getLogger(__name__)

# MLflow retries an unreachable server with exponential backoff for minutes by default; a training job
# would stall at every log call. A few quick retries are enough to ride out a blip.
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

RUN_KEY_TAG = "basisfm.run_key"  # "<storage>/<run name>": one MLflow run per Ray Train run, across resumes
HARDWARE_TAG = "basisfm.hardware"  # where a pretraining run trained (`describe_hardware`)
CORPUS_TAG = "basisfm.corpus_fingerprint"  # the corpus it read (`corpus.manifest.corpus_fingerprint`)
_MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_CHARS = 6000


def describe_hardware(num_workers: int, use_gpu: bool) -> str:
    """One line for the hardware tag: the workers and what they run on, and the machine that launched them."""
    import platform

    device = "CPU"
    if use_gpu:
        import torch

        device = f"GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "GPU"
    return (f"{num_workers} worker(s) on {device}; launched from {platform.node() or 'a host'} "
            f"({platform.machine()}, {os.cpu_count()} cores)")


def resolve_tracking_uri(config: TrackingConfig, *, create_local_dir: bool = True) -> str:
    """`tracking.tracking_uri`, else $MLFLOW_TRACKING_URI, else the embedded sqlite file under `local_dir`
    (created for writers; a reader passes `create_local_dir=False` so that looking leaves no folder behind)."""
    if config.tracking_uri:
        return config.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    local = Path(config.local_dir).absolute()
    if create_local_dir:
        local.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local / 'mlflow.db'}"


def open_experiment(tracking_uri: str, name: str):
    """The one MLflow set-up every writer uses: a fail-fast client for `tracking_uri` and the id of
    experiment `name`, created when missing. Returns `(client, experiment_id)`.

    A new experiment in an sqlite store keeps its artifacts next to the database file (the embedded
    store: `<local_dir>/mlartifacts`), never in ./mlruns of whatever directory the job ran from; the
    path is absolute because Ray workers run in another directory. A server decides its own.
    """
    client = make_client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return client, experiment.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:///"):
        artifact_location = (Path(tracking_uri[len("sqlite:///"):]).absolute().parent / "mlartifacts").as_uri()
    return client, client.create_experiment(name, artifact_location=artifact_location)


def make_client(tracking_uri: str):
    """An `MlflowClient` for `tracking_uri` with the fail-fast HTTP settings; a server that does not answer
    is a `TrackingError` in seconds (`store.check_tracking_store`), not after MLflow's timed-out retries."""
    from basisfm.tracking.store import check_tracking_store

    check_tracking_store(tracking_uri)
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)
    # mlflow is imported here, not at module level, so importing basisfm.tracking stays cheap.
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ui_command(tracking_uri: str) -> str:
    """How a user opens the MLflow UI for this tracking URI."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000   # then open http://127.0.0.1:5000"


class TrackingLogger:
    """A handle on one MLflow run. Every call swallows tracking failures with one warning; training goes on.

    Metrics are held in memory until `flush()`; callers flush right after a checkpoint is saved, so
    what MLflow holds always matches a checkpoint the run can resume from.
    """

    def __init__(self, tracking_uri: str, run_id: str | None):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client = None
        self._pending: list[tuple[str, float, int]] = []
        self._warned = False
        self.resumed = False  # start() reopened an existing run
        self.logged_through = 0  # steps up to this one are already in MLflow: never send them again
        if run_id is not None:
            self._client = self._call("connect", lambda: make_client(tracking_uri))

    @property
    def active(self) -> bool:
        return self._client is not None and self.run_id is not None

    @classmethod
    def start(cls, config: TrackingConfig, run_name: str, *, run_key: str,
              tags: dict[str, str] | None = None) -> "TrackingLogger":
        """Open the MLflow run for a training run, or reopen the one tagged with the same `run_key`
        (a rerun that resumes). Tracking down: an inactive logger, and one warning."""
        uri = resolve_tracking_uri(config)
        logger = cls(uri, None)

        def open_run() -> str:
            client, experiment_id = open_experiment(uri, config.experiment)
            key = run_key.replace("'", "\\'")
            found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
            if found:
                client.update_run(found[0].info.run_id, status="RUNNING")
                logger.resumed = True
                return found[0].info.run_id
            run = client.create_run(experiment_id, run_name=run_name, tags={**(tags or {}), RUN_KEY_TAG: run_key})
            return run.info.run_id

        run_id = logger._call("open a run", open_run)
        if run_id is not None:
            logger.run_id = run_id
            logger._client = make_client(uri)
        return logger

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
        # Re-logging identical params is allowed; a resumed run re-sends them and MLflow accepts it.
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            chunk = items[start:start + _MAX_PARAMS_PER_BATCH]
            self._call("log params", lambda: self._client.log_batch(self.run_id, params=chunk))

    def skip_logged_steps(self, metric: str) -> int:
        """Find the last step of `metric` MLflow already holds and never send steps up to it again.

        Metrics are flushed only after a checkpoint, but a worker that dies within Ray's polling interval
        of a checkpoint can lose that checkpoint's registration, and the restart then redoes flushed steps.
        """
        if self.active:
            history = self._call("read metric history", lambda: self._client.get_metric_history(self.run_id, metric))
            self.logged_through = max((m.step for m in history or []), default=0)
        return self.logged_through

    def buffer_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Hold metrics for `step` until the next flush (non-finite values are dropped: MLflow rejects NaN)."""
        if step <= self.logged_through:
            return
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self._pending.append((key, value, int(step)))

    def flush(self) -> bool:
        """Write buffered metrics. On failure they stay buffered and are retried at the next flush."""
        if not self.active or not self._pending:
            return not self._pending
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        pending = list(self._pending)
        for start in range(0, len(pending), _MAX_METRICS_PER_BATCH):
            chunk = [Metric(k, v, now, s) for k, v, s in pending[start:start + _MAX_METRICS_PER_BATCH]]
            if self._call("log metrics", lambda: self._client.log_batch(self.run_id, metrics=chunk), ok=True) is None:
                self._pending = pending[start:]
                return False
        self._pending = []
        return True

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self._call("log an artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            for key, value in tags.items():
                self._call("set a tag", lambda: self._client.set_tag(self.run_id, key, str(value)))

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        if self.active:
            self._call("end the run", lambda: self._client.set_terminated(self.run_id, status=status))

    def _call(self, what: str, fn, ok: Any = None):
        try:
            result = fn()
            return ok if ok is not None else result
        except Exception as exc:  # noqa: BLE001 - any tracking failure must leave training running
            if not self._warned:
                message = (f"MLflow tracking at {self.tracking_uri} failed to {what} ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); training continues, metrics stay buffered and are retried")
                warnings.warn(message, RuntimeWarning, stacklevel=3)
                log.warning(message)
                self._warned = True
            return None


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
