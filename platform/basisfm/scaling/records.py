"""Scaling runs in MLflow: the tags that mark a finished pretraining run as a point of the scaling law, and reading
those points back (size, tasks, held-out ratio, wall time) for `basisfm.scaling.law`."""

from __future__ import annotations

import math

from basisfm.errors import ConfigError, TrackingError
from basisfm.scaling.law import ScalingPoint

SCALING_EXPERIMENT = "scaling"
ROLE_TAG = "basisfm.scaling.role"  # "grid" or "holdout": the run is a point of the scaling law
PARAMETERS_TAG = "basisfm.scaling.parameters"  # N: the trained model's parameter count
WALL_TAG = "basisfm.wall_s"  # written by every pretraining run (basisfm.train.trainer)
LOSS_METRIC = "val_prior_ratio"
TASKS_METRIC = "tasks_seen"
ROLES = ("grid", "holdout")


def tag_scaling_run(tracking_uri: str, run_id: str, *, role: str, parameters: int) -> None:
    """Mark a finished pretraining run as a scaling point (`role`: grid or holdout) with its parameter count."""
    from basisfm.tracking.mlflow_logger import make_client

    if role not in ROLES:
        raise ConfigError(f"scaling role {role!r} is not one of {', '.join(ROLES)}")
    client = make_client(tracking_uri)
    client.set_tag(run_id, ROLE_TAG, role)
    client.set_tag(run_id, PARAMETERS_TAG, str(int(parameters)))


def scaling_points(tracking_uri: str, experiment: str = SCALING_EXPERIMENT) -> list[ScalingPoint]:
    """Every finished run of `experiment` tagged as a scaling point that logged its held-out ratio, oldest first;
    the newest run of a name wins (a rerun replaces a point, it does not add one)."""
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.tracking.store import check_tracking_store

    check_tracking_store(tracking_uri, must_exist=True)  # reading: a mistyped path must not become an empty store
    client = make_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(f"the MLflow store {tracking_uri} has no experiment {experiment!r}: run the scaling grid "
                            "first (python -m jobs.scaling run), or pass the experiment it used (--experiment)")
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{ROLE_TAG}` != '' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)
    points: dict[str, ScalingPoint] = {}
    for run in runs:
        metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
        if LOSS_METRIC not in metrics or TASKS_METRIC not in metrics or PARAMETERS_TAG not in tags:
            continue
        name = run.info.run_name or run.info.run_id
        points[name] = ScalingPoint(
            run=name, parameters=int(tags[PARAMETERS_TAG]), tasks=float(metrics[TASKS_METRIC]),
            loss=float(metrics[LOSS_METRIC]), seconds=float(tags.get(WALL_TAG, math.nan)),
            device="gpu" if params.get("train.use_gpu", "False").lower() == "true" else "cpu")
    return list(points.values())


def roles(tracking_uri: str, experiment: str = SCALING_EXPERIMENT) -> dict[str, str]:
    """{run name: role} of the experiment's scaling runs (a page separates the grid from its held-out check)."""
    from basisfm.tracking.mlflow_logger import make_client
    from basisfm.tracking.store import check_tracking_store

    check_tracking_store(tracking_uri, must_exist=True)
    client = make_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{ROLE_TAG}` != ''", max_results=10_000)
    return {run.info.run_name or run.info.run_id: run.data.tags[ROLE_TAG] for run in runs}
