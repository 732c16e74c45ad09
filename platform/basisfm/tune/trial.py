"""One Tune trial: build the trial's run config from its sample and fit a TorchTrainer (Ray Train V2 pattern).

The Tune function only drives training; the trainer's workers report to Ray Train, and
`ForwardReportsToTune` passes each report that carries the search metric on to Tune, where ASHA
and Optuna read it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ray import tune
from ray._raylet import PlacementGroupID
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from basisfm.config import RunConfig, from_dict, with_overrides
from basisfm.tune.mlflow_runs import open_trial_run
from basisfm.tune.spaces import trial_config

log = logging.getLogger(__name__)

# Builds one trial's TorchTrainer; called like `basisfm.train.build_trainer(config, tracking_uri=...,
# mlflow_run_id=..., callbacks=[...])`, which is the default.
TrainerFactory = Callable[..., Any]


TRAIN_PLACEMENT_GROUP_KEY = "train_placement_group"


class RecordWorkerPlacementGroup(WorkerGroupCallback):
    """Remembers the placement group holding the trial's Train workers (a Ray Train internal callback).

    When ASHA stops a trial, Tune ends the trial's process and with it the Train controller, which never
    gets to release its workers' placement group; on a laptop that leaked reservation starves every
    later trial. Forwarding the group's id with each report lets `ReleaseStoppedTrialWorkers` free it.
    """

    def __init__(self) -> None:
        self.placement_group_id: str | None = None

    def after_worker_group_start(self, worker_group) -> None:
        handle = getattr(worker_group.get_worker_group_state(), "placement_group_handle", None)
        group = getattr(handle, "placement_group", None)
        self.placement_group_id = group.id.hex() if group is not None else None


class ReleaseStoppedTrialWorkers(Callback):
    """Tune callback on the driver: frees the Train workers' placement group of a trial that ended.

    A trial that finished on its own has already released it (this is then a no-op); one stopped by
    ASHA or killed by a failure has not.
    """

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._release(trial)

    @staticmethod
    def _release(trial) -> None:
        group_id = (trial.last_result or {}).get(TRAIN_PLACEMENT_GROUP_KEY)
        if not group_id:
            return
        try:
            group = PlacementGroup(PlacementGroupID.from_hex(group_id))
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
                log.info("released the Train workers' placement group %s of trial %s", group_id, trial.trial_id)
        except Exception as exc:  # noqa: BLE001 - releasing is best effort; the search goes on
            log.warning("could not release placement group %s of trial %s (%s: %s)", group_id, trial.trial_id,
                        type(exc).__name__, exc)


class ForwardReportsToTune(TuneReportCallback):
    """Forwards the trainer's reports that hold `metric` to Tune, with the newest checkpoint's path.

    Reports without the metric (e.g. step losses between validations) are not forwarded: ASHA and
    Optuna need the metric in every result, and a stale value would mislead them. Every forwarded
    report names the newest checkpoint saved so far, so the trial's last result always points at the
    checkpoint the search would register.
    """

    def __init__(self, metric: str, workers: RecordWorkerPlacementGroup | None = None):
        super().__init__()
        self.metric = metric
        self.workers = workers
        self._latest_checkpoint: str | None = None

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if checkpoint is not None:
            self._latest_checkpoint = checkpoint.path
        rank0 = metrics[0] if metrics else {}
        if self.metric not in rank0:
            return
        forwarded = dict(rank0)
        if self._latest_checkpoint is not None:
            forwarded[CHECKPOINT_PATH_KEY] = self._latest_checkpoint
        if self.workers is not None and self.workers.placement_group_id is not None:
            forwarded[TRAIN_PLACEMENT_GROUP_KEY] = self.workers.placement_group_id
        self._training_actor_item_queue.put(forwarded)


def trial_run_config(base: RunConfig, sample: dict[str, Any], trial_id: str) -> RunConfig:
    """The trial's full config. Its Train run is named after the trial id (never a timestamp), so a
    restarted trial finds its own Train run under the same storage path and resumes it."""
    config = trial_config(base, sample)
    return with_overrides(config, {"train.run_name": f"{base.tune.name}-trial-{trial_id}"})


def run_trial(sample: dict[str, Any], base_config: dict[str, Any], tracking: dict[str, str] | None = None,
              trainer_factory: TrainerFactory | None = None) -> None:
    """The Tune function: fit one TorchTrainer with the sampled settings and surface its failures.

    `tracking` (tracking_uri, experiment_id, parent_run_id) is None when MLflow was unreachable at the
    start of the search; the trial then trains without logging.
    """
    if trainer_factory is None:
        from basisfm.train import build_trainer as trainer_factory  # here, not at import: pulls in DeepSpeed

    base = from_dict(base_config)
    context = tune.get_context()
    config = trial_run_config(base, sample, context.get_trial_id())
    mlflow_run_id = None
    if tracking is not None:
        try:
            mlflow_run_id = open_trial_run(tracking["tracking_uri"], tracking["experiment_id"], tracking["parent_run_id"],
                                           context.get_trial_id(), context.get_trial_name(), config, sample)
        except Exception as exc:  # noqa: BLE001 - a tracking outage must not fail the trial
            log.warning("could not open the MLflow run of trial %s (%s: %s); training without it",
                        context.get_trial_id(), type(exc).__name__, exc)
    # Trials share the cluster with each other (and a laptop with everything else): a worker group that is
    # slow to start should wait rather than fail and retry. Read by the Train controller this trial starts.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    # One object graph: the forwarder reads the id the recorder stores, in the Train controller's process.
    workers = RecordWorkerPlacementGroup()
    trainer = trainer_factory(config, tracking_uri=tracking["tracking_uri"] if tracking else None,
                              mlflow_run_id=mlflow_run_id, callbacks=[ForwardReportsToTune(base.tune.metric, workers), workers])
    result = trainer.fit()
    if result.error is not None:
        raise result.error
