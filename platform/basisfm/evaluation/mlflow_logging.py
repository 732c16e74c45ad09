"""Logs a finished leaderboard to MLflow: suite scores as metrics, the markdown, PNG and JSON as artifacts."""

from __future__ import annotations

import re
from pathlib import Path

from basisfm.evaluation.leaderboard import Leaderboard


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else the sqlite store under runs/ that every job shares."""
    from basisfm.config import TrackingConfig
    from basisfm.tracking.mlflow_logger import resolve_tracking_uri

    return resolve_tracking_uri(TrackingConfig())


def _artifact_location(tracking_uri: str) -> str | None:
    # A sqlite store keeps artifacts next to its database file (runs/mlartifacts for the shared store),
    # never in ./mlruns of whatever directory the job ran from.
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).absolute().parent / "mlartifacts").as_uri()
    return None


def _metric_key(text: str) -> str:
    # MLflow keys allow alphanumerics, _ - . / and space only.
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def log_leaderboard(
    leaderboard: Leaderboard,
    artifact_paths: dict[str, Path],
    *,
    params: dict[str, object] | None = None,
    tracking_uri: str | None = None,
    experiment: str = "basisfm-eval",
    run_name: str | None = None,
) -> str:
    """One MLflow run holding the leaderboard; returns its run id."""
    import mlflow

    from basisfm.tracking.mlflow_logger import ensure_experiment, make_client

    uri = tracking_uri or default_tracking_uri()
    experiment_id = ensure_experiment(make_client(uri), experiment, _artifact_location(uri))
    mlflow.set_tracking_uri(uri)
    summary = leaderboard.summary()
    per_task = leaderboard.task_scores()
    score_column = f"median {leaderboard.metric}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"eval-{leaderboard.suite}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in (params or {}).items()})
        for row in summary.to_dict("records"):
            model = _metric_key(row["model"])
            for key, name in ((score_column, f"median_{leaderboard.metric}"), ("fit s", "fit_seconds"), ("predict s", "predict_seconds")):
                value = row[key]
                if value == value:  # NaN is not logged: a failed model has no score
                    mlflow.log_metric(f"{model}/{name}", float(value))
        for task in per_task.index:
            for model in per_task.columns:
                value = per_task.loc[task, model]
                if value == value:
                    mlflow.log_metric(_metric_key(f"{model}/{task}/{leaderboard.metric}"), float(value))
        for path in artifact_paths.values():
            mlflow.log_artifact(str(path))
        return run.info.run_id
