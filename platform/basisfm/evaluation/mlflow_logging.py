"""Logs a finished leaderboard to MLflow: suite scores as metrics, the markdown, PNG and JSON as artifacts."""

from __future__ import annotations

import re
from pathlib import Path

from basisfm.evaluation.leaderboard import Leaderboard


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

    from basisfm.config import TrackingConfig
    from basisfm.tracking import open_experiment, resolve_tracking_uri

    uri = tracking_uri or resolve_tracking_uri(TrackingConfig())
    _, experiment_id = open_experiment(uri, experiment)
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
