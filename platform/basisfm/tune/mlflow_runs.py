"""MLflow for a search: one parent run per search, one nested child run per trial with its params and curves.

The trial opens its child run itself and hands its id to the trainer, whose rank-0 logger writes the
trial's per-step curves there (flushed at checkpoints, so a restarted trial never logs a step twice).
Child runs are found again by the trial id tag, so a restarted trial or a resumed search keeps writing
to the same runs; the parent's id is kept in the experiment folder for the same reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray.tune import Callback

from basisfm.config import RunConfig, flatten
from basisfm.tracking.mlflow_logger import make_client, open_experiment, resolve_tracking_uri

log = logging.getLogger(__name__)

_RUN_IDS_FILE = "mlflow_parent_run.json"
TRIAL_ID_TAG = "basisfm.trial_id"


class SearchRuns:
    """The parent run of one search (created once, reopened when the search resumes)."""

    def __init__(self, config: RunConfig, experiment_dir: str | Path):
        # The same store and artifact root as training runs, so jobs.promote sees what the search registers.
        self.tracking_uri = resolve_tracking_uri(config.tracking)
        self.client, self.experiment_id = open_experiment(self.tracking_uri, config.tracking.experiment)
        ids_path = Path(experiment_dir) / _RUN_IDS_FILE
        saved = json.loads(ids_path.read_text()).get("parent") if ids_path.is_file() else None
        if saved is not None and _run_exists(self.client, saved):
            self.parent_run_id = saved
            self.client.update_run(saved, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=config.tune.name,
                                         tags={"basisfm.job": "tune", "basisfm.space": config.tune.space})
            self.parent_run_id = run.info.run_id
            log_params(self.client, self.parent_run_id, {f"base.{k}": v for k, v in flatten(config).items()})
            ids_path.parent.mkdir(parents=True, exist_ok=True)
            ids_path.write_text(json.dumps({"parent": self.parent_run_id, "tracking_uri": self.tracking_uri}))

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.parent_run_id, str(path))

    def log_summary(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.parent_run_id, key, float(value))
        for key, value in tags.items():
            self.client.set_tag(self.parent_run_id, key, str(value))

    def end(self, failed: bool = False) -> None:
        self.client.set_terminated(self.parent_run_id, status=RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))


def open_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, trial_name: str,
                   config: RunConfig, sample: dict[str, Any]) -> str:
    """The trial's child run: found by its trial id when the trial restarts, else created with its params."""
    client = make_client(tracking_uri)
    existing = find_trial_run(client, experiment_id, parent_run_id, trial_id)
    if existing is not None:
        client.update_run(existing, status="RUNNING")
        return existing
    run = client.create_run(experiment_id, run_name=trial_name, tags={
        MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: trial_name, "basisfm.job": "tune-trial", TRIAL_ID_TAG: trial_id,
    })
    log_params(client, run.info.run_id, {**flatten(config), **{f"search.{k}": v for k, v in sample.items()}})
    return run.info.run_id


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    # MLflow caps a param value at 6000 characters and a batch at 100 params.
    items = [Param(key, str(value)[:6000]) for key, value in sorted(params.items())]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False


class CloseTrialRuns(Callback):
    """Tune callback on the driver: marks a trial's child run finished, stopped early or failed.

    A trial stopped by ASHA is killed mid-`fit()`, so the trial itself cannot close its run. Holds
    plain data only: Tune saves its callbacks with the experiment for resumes.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, total_steps: int):
        self.total_steps = total_steps
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, failed=True)

    def _close(self, trial, failed: bool) -> None:
        try:
            client = make_client(self.tracking_uri)
            run_id = find_trial_run(client, self.experiment_id, self.parent_run_id, trial.trial_id)
            if run_id is None:
                return
            trained_to_end = (trial.last_result or {}).get("step", 0) >= self.total_steps
            status = RunStatus.FAILED if failed else (RunStatus.FINISHED if trained_to_end else RunStatus.KILLED)
            client.set_tag(run_id, "basisfm.tune_outcome",
                           {RunStatus.FAILED: "failed", RunStatus.FINISHED: "finished", RunStatus.KILLED: "stopped_by_asha"}[status])
            client.set_terminated(run_id, status=RunStatus.to_string(status))
        except Exception as exc:  # noqa: BLE001 - tracking is best effort, the search is not
            log.warning("closing the MLflow run of trial %s failed (%s: %s)", trial.trial_id, type(exc).__name__, exc)
