"""`run_search`: one Ray Tune search over a named space — Optuna proposes, ASHA stops, MLflow records.

Each trial is a Tune function that fits a TorchTrainer (see `trial.py`). Rerunning a search with the
same `tune.name` and `train.storage_path` resumes it: finished trials are kept, unfinished and
failed ones continue from their Train runs' checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from basisfm.config import RunConfig, to_dict
from basisfm.corpus.manifest import MANIFEST_NAME
from basisfm.errors import ConfigError
from basisfm.tune.mlflow_runs import CloseTrialRuns, SearchRuns, find_trial_run
from basisfm.tune.resources import DRIVER_RESOURCES, check_fits, max_concurrent_trials, trial_resources
from basisfm.tune.spaces import check_space, search_space, trial_config
from basisfm.tune.trial import ReleaseStoppedTrialWorkers, TrainerFactory, run_trial
from basisfm.tune.trials_table import TrialRow, plot_trials, rank_trials, trials_markdown

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What a search produced and where it went."""

    experiment_path: Path
    parent_run_id: str | None
    trials: list[TrialRow]
    max_concurrent_trials: int
    best: TrialRow | None = None
    best_config: RunConfig | None = None
    best_config_path: Path | None = None
    best_model_dir: Path | None = None
    registered_version: str | None = None
    table_path: Path | None = None
    plot_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self, metric: str, mode: str) -> str:
        """The one-screen summary a job prints at the end."""
        finished = sum(1 for t in self.trials if t.status != "ERROR")
        stopped = sum(1 for t in self.trials if t.stopped_early)
        lines = [
            f"search: {len(self.trials)} trials ({finished} finished, {stopped} stopped early by ASHA, "
            f"{len(self.trials) - finished} failed), at most {self.max_concurrent_trials} at once",
            f"results: {self.experiment_path}",
        ]
        if self.best is not None:
            params = ", ".join(f"{k}={v}" for k, v in sorted(self.best.params.items()))
            lines.append(f"best trial {self.best.trial_id}: {metric}={self.best.metric:.5g} ({mode}) with {params}")
        else:
            lines.append(f"no trial reported {metric}; see the trials table and the Ray logs under the results folder")
        if self.best_config_path is not None:
            lines.append(f"best config: {self.best_config_path}")
        if self.registered_version is not None:
            lines.append(f"registered: version {self.registered_version} (model at {self.best_model_dir}); "
                         f"`python -m jobs.promote --version {self.registered_version}` moves the champion alias "
                         "to it only if it wins on the validation tables")
        if self.table_path is not None:
            lines.append(f"trials table: {self.table_path}  plot: {self.plot_path}")
        if self.parent_run_id is not None:
            lines.append(f"MLflow parent run: {self.parent_run_id}")
        lines.extend(self.notes)
        return "\n".join(lines)


def run_search(config: RunConfig, *, trainer_factory: TrainerFactory | None = None) -> SearchResult:
    """Run (or resume) the search `config.tune` describes and register its best checkpoint.

    `trainer_factory` builds each trial's TorchTrainer, called like `basisfm.train.build_trainer` (the
    default). It is shipped to the trial processes, so it must be something Ray can serialise.
    """
    from basisfm.train.trainer import absolute_paths, ray_cluster

    space = search_space(config)
    check_space(config, space)  # a space that can propose an invalid config fails before Ray starts
    _check_metric_is_reported(config)
    config = absolute_paths(config)  # trials run in their own folders: every path must be absolute
    if trainer_factory is None:
        _check_corpus_exists(config)
    experiment_path = Path(config.train.storage_path) / config.tune.name

    with ray_cluster(config):  # joins $RAY_ADDRESS under `ray job submit`, else starts a local cluster
        cluster = ray.cluster_resources()
        check_fits(config, cluster)
        concurrency = max_concurrent_trials(config, cluster)
        print(f"[basisfm] search {config.tune.name!r}: space {config.tune.space}, {config.tune.num_samples} trials "
              f"({config.tune.search}, ASHA), each needing {trial_resources(config)}; at most {concurrency} at once "
              f"on {dict((k, cluster[k]) for k in ('CPU', 'GPU') if k in cluster)}", flush=True)
        runs = _open_search_runs(config, experiment_path)
        tuner = _build_tuner(config, space, experiment_path, concurrency, runs, trainer_factory)
        results = tuner.fit()
        rows = _trial_rows(results, config)
        result = SearchResult(experiment_path=experiment_path, parent_run_id=runs.parent_run_id if runs else None,
                              trials=rows, max_concurrent_trials=concurrency)
        _finish(config, result, runs)
        return result


def _check_corpus_exists(config: RunConfig) -> None:
    # Every trial would fail on its own otherwise, each with the same long Ray traceback.
    manifest = Path(config.corpus.out_dir) / MANIFEST_NAME
    if not manifest.is_file():
        raise ConfigError(f"config key 'corpus.out_dir' is {config.corpus.out_dir!r}, which has no {MANIFEST_NAME}; "
                          "run `python -m jobs.ingest` with the same config first")


def _check_metric_is_reported(config: RunConfig) -> None:
    if config.tune.metric.startswith("val_") and config.data.validation_tables == 0:
        raise ConfigError(f"config key 'tune.metric' is {config.tune.metric!r}, but data.validation_tables=0 means no "
                          "validation runs; set data.validation_tables >= 1 or search on a train_ metric")


def _reports_per_trial(config: RunConfig) -> int:
    """How many reports carrying the metric one trial sends: the trainer reports at checkpoints, and a
    checkpoint carries validation metrics when it falls on a validation step (and always at the end)."""
    every = math.lcm(config.train.checkpoint_every, config.train.validate_every)
    return config.train.steps // every + (0 if config.train.steps % every == 0 else 1)


def _build_tuner(config: RunConfig, space: dict[str, Any], experiment_path: Path, concurrency: int,
                 runs: SearchRuns | None, trainer_factory: TrainerFactory | None) -> tune.Tuner:
    tracking = None if runs is None else {"tracking_uri": runs.tracking_uri, "experiment_id": runs.experiment_id,
                                          "parent_run_id": runs.parent_run_id}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base_config=to_dict(config), tracking=tracking, trainer_factory=trainer_factory),
        DRIVER_RESOURCES,
    )
    if tune.Tuner.can_restore(str(experiment_path)):
        print(f"[basisfm] resuming search {config.tune.name!r} from {experiment_path}", flush=True)
        return tune.Tuner.restore(str(experiment_path), trainable=trainable, resume_errored=True)

    seed = config.train.seed
    if config.tune.search == "optuna":
        searcher = OptunaSearch(metric=config.tune.metric, mode=config.tune.mode, seed=seed)
    else:
        searcher = BasicVariantGenerator(random_state=seed)
    reports = _reports_per_trial(config)
    if reports <= config.tune.grace_period:
        print(f"[basisfm] note: a trial reports {config.tune.metric} {reports} time(s) (train.steps / lcm(checkpoint_every, "
              f"validate_every)), not more than tune.grace_period={config.tune.grace_period}: ASHA cannot stop any trial early",
              flush=True)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one forwarded report carrying the metric
        # One past the last report: at max_t ASHA stops a trial, which would cut off a trial that is
        # finishing on its own while it consolidates its model and flushes its MLflow metrics.
        max_t=reports + 1,
        grace_period=config.tune.grace_period,
        reduction_factor=config.tune.reduction_factor,
    )
    callbacks = [ReleaseStoppedTrialWorkers()]
    if runs is not None:
        callbacks.append(CloseTrialRuns(runs.tracking_uri, runs.experiment_id, runs.parent_run_id, config.train.steps))
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=config.tune.metric,
            mode=config.tune.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=config.tune.num_samples,
            max_concurrent_trials=concurrency,
        ),
        run_config=tune.RunConfig(
            name=config.tune.name,
            storage_path=str(experiment_path.parent),
            failure_config=tune.FailureConfig(max_failures=config.tune.trial_max_failures),
            callbacks=callbacks,
            verbose=1,
        ),
    )


def _open_search_runs(config: RunConfig, experiment_path: Path) -> SearchRuns | None:
    try:
        return SearchRuns(config, experiment_path)
    except Exception as exc:  # noqa: BLE001 - the search runs even when MLflow is down
        log.warning("MLflow is unreachable (%s: %s); the search runs without tracking", type(exc).__name__, exc)
        print(f"[basisfm] warning: MLflow unreachable ({type(exc).__name__}: {str(exc)[:200]}); "
              "the search runs without tracking", flush=True)
        return None


def _trial_rows(results: tune.ResultGrid, config: RunConfig) -> list[TrialRow]:
    metric = config.tune.metric
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id") or Path(result.path).name)
        value = metrics.get(metric)
        step = metrics.get("step")
        trained_to_end = isinstance(step, (int, float)) and step >= config.train.steps
        extra = {key: float(metrics[key]) for key in ("step", "train_loss", "val_r2")
                 if isinstance(metrics.get(key), (int, float)) and key != metric}
        rows.append(TrialRow(
            trial_id=trial_id,
            status="ERROR" if result.error is not None else "TERMINATED",
            params={key: value for key, value in (result.config or {}).items() if not isinstance(value, dict)},
            metric=float(value) if isinstance(value, (int, float)) else None,
            iterations=int(metrics.get("training_iteration", 0) or 0),
            stopped_early=result.error is None and isinstance(step, (int, float)) and not trained_to_end,
            checkpoint_path=metrics.get(CHECKPOINT_PATH_KEY),
            error=None if result.error is None else f"{type(result.error).__name__}: {str(result.error)[:300]}",
            extra=extra,
        ))
    return rows


def _finish(config: RunConfig, result: SearchResult, runs: SearchRuns | None) -> None:
    """Trials table and plot, best config, registration of the best checkpoint, all logged to the parent run."""
    metric, mode = config.tune.metric, config.tune.mode
    result.experiment_path.mkdir(parents=True, exist_ok=True)
    result.table_path = result.experiment_path / "trials.md"
    result.table_path.write_text(f"# Search {config.tune.name!r}: space {config.tune.space}\n\n"
                                 + trials_markdown(result.trials, metric, mode))
    result.plot_path = plot_trials(result.trials, metric, mode, result.experiment_path / "trials.png")
    (result.experiment_path / "trials.json").write_text(json.dumps(
        [row.__dict__ for row in rank_trials(result.trials, mode)], indent=1, default=str))

    ranked = [row for row in rank_trials(result.trials, mode) if row.metric is not None and row.status != "ERROR"]
    result.best = ranked[0] if ranked else None
    if result.best is not None:
        result.best_config = trial_config(config, result.best.params)
        result.best_config_path = result.experiment_path / "best_config.yaml"
        result.best_config_path.write_text(
            f"# Best trial {result.best.trial_id} of search {config.tune.name!r}: {metric}={result.best.metric:.6g}\n"
            + yaml.safe_dump(to_dict(result.best_config), sort_keys=False))
        if config.tune.register_best:
            result.registered_version = _register_best(config, result, runs)

    if runs is None:
        return
    try:
        for path in (result.table_path, result.plot_path, result.experiment_path / "trials.json", result.best_config_path):
            if path is not None:
                runs.log_artifact(path)
        summary = {"trials": len(result.trials), "trials_failed": sum(t.status == "ERROR" for t in result.trials),
                   "trials_stopped_early": sum(t.stopped_early for t in result.trials)}
        tags = {"basisfm.max_concurrent_trials": str(result.max_concurrent_trials)}
        if result.best is not None:
            summary[f"best_{metric}"] = result.best.metric
            tags["basisfm.best_trial_id"] = result.best.trial_id
            tags.update({f"best.{k}": str(v) for k, v in result.best.params.items()})
        if result.registered_version is not None:
            tags["basisfm.registered_version"] = str(result.registered_version)
        runs.log_summary(summary, tags)
        runs.end(failed=result.best is None)
    except Exception as exc:  # noqa: BLE001 - results are on disk whatever MLflow does
        result.notes.append(f"warning: logging the search summary to MLflow failed ({type(exc).__name__}: {exc})")


def _register_best(config: RunConfig, result: SearchResult, runs: SearchRuns | None) -> str | None:
    """Copy the best trial's consolidated model out of Ray's storage and register it (into the trial's
    child run); jobs.promote then decides whether it becomes the champion."""
    from basisfm.train.checkpoint import CONSOLIDATED_DIR

    best = result.best
    consolidated = Path(best.checkpoint_path) / CONSOLIDATED_DIR if best and best.checkpoint_path else None
    if consolidated is None or not consolidated.is_dir():
        result.notes.append(f"note: best trial {best.trial_id if best else '-'} has no consolidated model (only a run that "
                            "trains to train.steps writes one), so nothing was registered; pretrain best_config.yaml instead")
        return None
    model_dir = result.experiment_path / "best_model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(consolidated, model_dir)
    result.best_model_dir = model_dir
    if runs is None:
        result.notes.append(f"note: MLflow was unreachable, so the best model at {model_dir} was not registered")
        return None
    try:
        from basisfm.tracking import log_checkpoint_model

        child = find_trial_run(runs.client, runs.experiment_id, runs.parent_run_id, best.trial_id)
        if child is not None:
            # A resumed search that already registered this trial's model returns that version, not a copy.
            existing = runs.client.search_model_versions(
                f"name = '{config.tracking.registered_model}' and run_id = '{child}'")
            if existing:
                return str(max(int(v.version) for v in existing))
        return str(log_checkpoint_model(model_dir, config.tracking.registered_model, tracking_uri=runs.tracking_uri,
                                        run_id=child, experiment=config.tracking.experiment,
                                        tags={"search": config.tune.name, "trial_id": best.trial_id}))
    except Exception as exc:  # noqa: BLE001 - the search's results stand even if registration fails
        result.notes.append(f"warning: registering the best model at {model_dir} failed ({type(exc).__name__}: {exc})")
        return None
