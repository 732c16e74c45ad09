"""Logs a finished leaderboard to MLflow: suite scores as metrics, the markdown, PNG and JSON as artifacts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from basisfm.evaluation.leaderboard import Leaderboard

DEFAULT_TRACKING_DB = Path("runs") / "mlflow.db"  # the embedded store all jobs share (TrackingConfig.local_dir)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else a sqlite store under runs/ (MLflow 3 deprecates the file store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    DEFAULT_TRACKING_DB.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_TRACKING_DB.resolve()}"


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

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    mlflow.set_experiment(experiment)
    summary = leaderboard.summary()
    per_task = leaderboard.task_scores()
    score_column = f"median {leaderboard.metric}"
    with mlflow.start_run(run_name=run_name or f"eval-{leaderboard.suite}") as run:
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
