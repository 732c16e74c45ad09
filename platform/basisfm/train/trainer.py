"""Pretraining on the driver: launch the training loop (Ray Train's `TorchTrainer`, or one local process with
`train.launcher=local`), then turn its final checkpoint into a registered MLflow model. `pretrain(config)` is
what `jobs.pretrain` and `jobs.demo` call.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from basisfm.config import RunConfig, flatten, to_dict, with_overrides
from basisfm.corpus.manifest import MANIFEST_NAME, REPORT_NAME, corpus_fingerprint
from basisfm.errors import ConfigError
from basisfm.train.checkpoint import CONSOLIDATED_DIR, TRAIN_STATE_FILE, TrainState
from basisfm.train.startup import StartupClock

# Run in every worker process of a cluster we start: drops Ray Train's internal noise, each filter with its reason.
WORKER_SETUP_HOOK = "basisfm.ray_log_filters.quiet_ray_worker"
MODEL_DIR = "model"  # <storage>/<run name>/model: the consolidated checkpoint, copied out of Ray's storage
PROVENANCE_FILE = "provenance.json"  # beside the consolidated checkpoint: how it was made


@dataclass
class PretrainResult:
    run_id: str | None  # the MLflow run (None when tracking was unreachable)
    checkpoint_dir: Path  # consolidated model.safetensors + config.json
    registered_version: str | None  # None when registration was off or the registry unreachable
    metrics: dict[str, float]  # the last step's metrics (train, validation, throughput)
    tracking_uri: str
    run_dir: Path  # local run directory (Ray Train's, or the local launcher's), holding the sharded checkpoints unless storage is remote

    def summary(self) -> str:
        from basisfm.tracking import ui_command

        m = self.metrics
        shown = ", ".join(f"{k}={m[k]:.4g}" for k in ("step", "tasks_seen", "train_loss", "val_loss", "val_r2",
                                                      "val_prior_ratio", "val_real_ratio", "cells_per_s") if k in m)
        lines = [
            "pretraining finished",
            f"  metrics:     {shown}",
            f"  checkpoint:  {self.checkpoint_dir}",
            f"  run dir:     {self.run_dir}",
            f"  MLflow run:  {self.run_id or '(tracking unavailable)'} at {self.tracking_uri}",
            f"  registered:  {'version ' + self.registered_version if self.registered_version else '(not registered)'}",
            f"  MLflow UI:   {ui_command(self.tracking_uri)}",
        ]
        return "\n".join(lines)


def absolute_paths(config: RunConfig) -> RunConfig:
    """Paths made absolute against the driver's cwd: Ray workers run in other directories."""
    updates = {
        "corpus.out_dir": str(Path(config.corpus.out_dir).absolute()),
        "data.embedding_cache_dir": str(Path(config.data.embedding_cache_dir).absolute()),
        "tracking.local_dir": str(Path(config.tracking.local_dir).absolute()),
    }
    if "://" not in config.train.storage_path:  # s3://, gs://, ... stay as they are
        updates["train.storage_path"] = str(Path(config.train.storage_path).absolute())
    return with_overrides(config, updates)


def run_dir_of(config: RunConfig) -> Path:
    """Where this run's local outputs go: Ray's run directory, or (for s3:// and other remote storage) a
    directory under `tracking.local_dir`, since the consolidated model is always copied to local disk."""
    if "://" in config.train.storage_path:
        return Path(config.tracking.local_dir) / "runs" / config.train.run_name
    return Path(config.train.storage_path) / config.train.run_name


def build_trainer(config: RunConfig, *, tracking_uri: str | None = None, mlflow_run_id: str | None = None,
                  datasets: dict[str, Any] | None = None, callbacks: list | None = None,
                  startup: StartupClock | None = None, own_cluster: bool = False):
    """A TorchTrainer running `train_loop_per_worker` on `train.num_workers` ranks.

    `datasets` defaults to the corpus's train / validation splits from the Ray Data pipeline; only
    "train" is split across ranks (every rank scores the same validation batches, so ZeRO-3's collective
    forward stays in lockstep and rank 0 gets the full validation metrics without a reduction).
    `callbacks` are Ray Train `UserCallback`s (basisfm.tune passes one that forwards reports to Ray Tune).
    `startup` is the driver's start-up clock; every worker marks its phases on its own copy. `own_cluster`: the
    run has a local cluster of its own (`ensure_ray` started it), so Ray Train's placement-group cleaner is left out
    (`own_cluster_trainer`).
    """
    import ray.data
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from basisfm.data.pipeline import build_dataset, ingest_execution_options
    from basisfm.train.ray_launcher import LoopSpec, train_loop_per_worker

    from basisfm.train.data_source import needs_corpus

    config = absolute_paths(config)
    train = config.train
    if datasets is None and not needs_corpus(config):
        datasets = {}  # prior episodes only: each worker makes its own, nothing is read from disk
    if datasets is None:
        # Our rank-0 tqdm shows progress; Ray Data's bars, drawn from several processes, would garble it.
        # A dataset copies the driver's Data context when built: switch them off for these two only.
        context = ray.data.DataContext.get_current()
        saved = context.enable_progress_bars, context.print_on_execution_start
        context.enable_progress_bars, context.print_on_execution_start = False, False
        try:
            datasets = {"train": build_dataset(config.corpus.out_dir, config.data, "train")}
            if config.data.validation_tables > 0:
                datasets["validation"] = build_dataset(config.corpus.out_dir, config.data, "validation")
        finally:
            context.enable_progress_bars, context.print_on_execution_start = saved
    spec = LoopSpec(config=config, run_dir=str(run_dir_of(config)), tracking_uri=tracking_uri,
                    mlflow_run_id=mlflow_run_id, datasets=tuple(sorted(datasets)), startup=startup)
    resources = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        resources["GPU"] = 1
    trainer_class = own_cluster_trainer() if own_cluster else TorchTrainer
    return trainer_class(
        functools.partial(train_loop_per_worker, spec),  # typed, not a dict: Ray passes it through as is
        scaling_config=ray.train.ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if train.use_gpu else "gloo"),
        datasets=datasets or None,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"] if "train" in datasets else [],
                                            execution_options=ingest_execution_options()),
        run_config=ray.train.RunConfig(
            name=train.run_name,
            storage_path=train.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
            callbacks=list(callbacks or []),  # added for basisfm.tune (issue 6): Tune trials forward reports
        ),
    )


def own_cluster_trainer():
    """Ray Train's TorchTrainer without its PlacementGroupCleaner, for a cluster this process started and shuts down.

    The cleaner is a detached actor (one more Python process) that frees the workers' placement group if the
    training controller dies without doing so. It learns that from the State API, which the dashboard serves and our
    local clusters leave off: every poll fails, under load one times out with a traceback, and at the end of every run
    the controller waits out the cleaner's stop timeout (12 s, measured in benchmarks/results/launcher_overhead.md).
    A cluster of our own cannot leak the group: `ray.shutdown()` ends the cluster with the run, and Ray's reaper ends
    it if the driver dies. (`_create_default_callbacks` is Ray's own hook for the controller's callbacks; where a Ray
    version lacks it, this class is the plain TorchTrainer.)
    """
    from ray.train.torch import TorchTrainer

    class OwnClusterTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            return [c for c in callbacks if type(c).__name__ != "PlacementGroupCleanerCallback"]

    return OwnClusterTorchTrainer


def ensure_ray(config: RunConfig) -> bool:
    """Join the cluster `ray job submit` (or $RAY_ADDRESS) points at, else start a local one sized for the run.
    Returns whether it started a local cluster (one this process owns and shuts down)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return False
    # Training workers hold their CPUs for the whole run; the data pipeline's actors need CPUs of their
    # own or they never start. Logical CPUs may exceed the cores: the OS shares them.
    # One actor pool per dataset: training, and validation when tables are held out. A pool short of CPUs
    # never starts, so the first validation would wait forever.
    from basisfm.train.data_source import needs_corpus

    pools = (2 if config.data.validation_tables > 0 else 1) if needs_corpus(config) else 0
    data_cpus = pools * config.data.embed_actors * getattr(config.data, "cpus_per_actor", 1)
    needed = config.train.num_workers * config.train.cpus_per_worker + data_cpus
    # address="local": a cluster of our own, even when another `ray start` cluster runs on this machine.
    # No prestarted workers: Ray starts one idle Python worker per CPU for jobs without a runtime env, and ours has
    # one (the env vars and the log filter hook below), so they would never be used; on a 2-core machine the two
    # processes importing Ray cost ~2 s of the start-up (benchmarks/results/launcher_overhead.md).
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False,
             runtime_env={"env_vars": _worker_env(config), "worker_process_setup_hook": WORKER_SETUP_HOOK},
             _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False})
    return True


@contextlib.contextmanager
def ray_cluster(config: RunConfig) -> Iterator[bool]:
    """`ensure_ray` for the length of a block; yields whether the block started its own local cluster. A cluster
    the block started is shut down when it ends, even on an error, so its workers' buffered log lines print there,
    not after the job's summary; a cluster joined through $RAY_ADDRESS, or started by the caller, stays up."""
    import ray

    started_ray = not ray.is_initialized()
    own_cluster = bool(ensure_ray(config))
    try:
        yield own_cluster
    finally:
        if started_ray:
            ray.shutdown()


def _worker_env(config: RunConfig) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           # Ray Train's preemption watcher is one more actor process polling for spot-instance notices; a local
           # cluster started for one run has none to notice. (Read by the controller, which inherits the job's env.)
           "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    if not config.train.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def pretrain(config: RunConfig, startup: StartupClock | None = None) -> PretrainResult:
    """Train the model `config` describes on the data source it selects (`basisfm.train.data_source`), launched by
    Ray Train (`train.launcher=ray`) or in this process (`local`, no Ray); log to MLflow and to the run directory;
    register the consolidated checkpoint.

    The model starts from scratch or from `train.init_from` (warm start, optionally grown). Rerunning with the same
    `train.run_name` and `train.storage_path` resumes from the last checkpoint and continues the same MLflow run.
    Without MLflow installed the run directory (params.json, metrics.jsonl, tags.json, model/ with its
    provenance.json) is the whole record, for `python -m jobs.register RUN_DIR` to import later.

    `startup` times the run's start-up from the command (`StartupClock.from_process_start()`, what `jobs.pretrain`
    passes); without it the clock starts at this call. The marks are logged as `startup_*_s` with the first step.
    """
    startup = startup if startup is not None else StartupClock(job_started=time.time())
    from basisfm.tracking.mlflow_logger import (CORPUS_TAG, HARDWARE_TAG, RUN_KEY_TAG, TrackingLogger,
                                                describe_hardware, resolve_tracking_uri)
    from basisfm.tracking.run_directory import RunDirectoryLog
    from basisfm.train.data_source import data_source, needs_corpus
    from basisfm.train.warm_start import resolve_warm_start

    config = absolute_paths(config)
    tracking_uri = resolve_tracking_uri(config.tracking)
    config = resolve_warm_start(config, tracking_uri=tracking_uri)
    source = data_source(config)
    tags = {"basisfm.job": "pretrain", "basisfm.data_source": source}
    if needs_corpus(config):
        manifest = Path(config.corpus.out_dir) / MANIFEST_NAME
        if not manifest.is_file():
            raise ConfigError(f"config key 'corpus.out_dir' is {config.corpus.out_dir!r}, which has no {MANIFEST_NAME}; "
                              "run `python -m jobs.ingest` with the same config first (or train on the prior alone: "
                              "data.prior_fraction=1)")
        tags[CORPUS_TAG] = corpus_fingerprint(config.corpus.out_dir)
    run_dir = run_dir_of(config)
    run_key = f"{config.train.storage_path.rstrip('/')}/{config.train.run_name}"  # what Ray resumes by, too
    workers_n = 1 if config.train.launcher == "local" else config.train.num_workers
    tags[HARDWARE_TAG] = describe_hardware(workers_n, config.train.use_gpu)
    run_log = RunDirectoryLog(run_dir)
    run_log.log_params(flatten(config))
    run_log.set_tags({**tags, RUN_KEY_TAG: run_key})
    if mlflow_importable():
        logger = TrackingLogger.start(config.tracking, config.train.run_name, run_key=run_key, tags=tags)
    else:  # a lent GPU machine: the run directory is the record until `jobs.register` imports it
        logger = TrackingLogger(tracking_uri, None)
        print(f"[basisfm] MLflow is not installed: the run is recorded in {run_dir} (import it with "
              f"`python -m jobs.register {run_dir}`)", flush=True)
    if logger.active and not logger.resumed:
        logger.log_params(flatten(config))
    startup.mark("tracking_ready")
    if logger.active:
        run_log.set_tags({"basisfm.mlflow_run_id": logger.run_id, "basisfm.tracking_uri": logger.tracking_uri})
    workers = "1 local process" if config.train.launcher == "local" else f"{config.train.num_workers} Ray worker(s)"
    limit = f", at most {config.train.max_minutes:g} minutes" if config.train.max_minutes else ""
    start = f", warm-started from {config.train.init_from}" if config.train.init_from else ""
    print(f"[basisfm] pretraining {config.train.run_name!r} on {source.replace('_', ' ')}: {workers}, "
          f"ZeRO-{config.train.zero_stage}, {config.train.steps} steps{limit}{start}; "
          f"MLflow run {logger.run_id or '(tracking unavailable)'}", flush=True)

    model_dir = run_dir / MODEL_DIR
    started = time.perf_counter()
    try:
        if config.train.launcher == "local":
            raw_metrics, state = _launch_local(config, run_dir, model_dir, logger, startup)
        else:
            raw_metrics, state = _launch_ray(config, run_dir, model_dir, logger, startup)
    except BaseException:
        logger.end(status="FAILED")
        raise
    wall_s = time.perf_counter() - started
    metrics = {k: float(v) for k, v in raw_metrics.items() if isinstance(v, (int, float))}
    metrics["wall_s"] = wall_s
    if "wall_minutes" not in state.history:  # a checkpoint from before the loop kept its clock: the run log has it
        from basisfm.tracking.run_directory import read_metrics

        state.history["wall_minutes"] = [[step, value] for name, value, step in read_metrics(run_dir)
                                         if name == "wall_minutes"]
    write_provenance(model_dir, config, state, metrics, source=source, hardware=tags[HARDWARE_TAG],
                     run_id=logger.run_id, tracking_uri=logger.tracking_uri if logger.active else None)

    artifacts = run_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    (artifacts / TRAIN_STATE_FILE).write_text(state.to_json())  # loss history, steps resumed from
    try:
        from basisfm.tracking.plots import plot_loss_curves

        plot_loss_curves({k: v for k, v in state.history.items() if k.endswith("loss")}, artifacts / "loss_curves.png",
                         title=f"{config.train.run_name}: pretraining loss")
    except ImportError:  # a lent GPU machine may lack matplotlib: metrics.jsonl holds every number
        pass
    for path in sorted(artifacts.iterdir()):
        logger.log_artifact(path)
    logger.log_artifact(model_dir / PROVENANCE_FILE)
    report = Path(config.corpus.out_dir) / REPORT_NAME
    if needs_corpus(config) and report.is_file():
        logger.log_artifact(report)
    logger.set_tags({"basisfm.wall_s": f"{wall_s:.1f}"})
    run_log.set_tags({"basisfm.wall_s": f"{wall_s:.1f}"})
    logger.end()

    version = None
    if config.tracking.register and logger.active:
        try:
            version = _registered_version_of(logger, config.tracking.registered_model, state.step)
            if version is not None:
                print(f"[basisfm] MLflow run {logger.run_id} is already registered as version {version}", flush=True)
            else:
                from basisfm.tracking.registry import log_checkpoint_model

                version = log_checkpoint_model(model_dir, config.tracking.registered_model,
                                               tracking_uri=logger.tracking_uri,
                                               run_id=logger.run_id, tags={"run_name": config.train.run_name,
                                                                           "step": str(state.step)})
        except Exception as exc:  # noqa: BLE001 - the checkpoint is on disk; a registry outage must not lose it
            print(f"[basisfm] warning: could not register the checkpoint in MLflow ({type(exc).__name__}: {exc}); "
                  f"it is at {model_dir}", flush=True)
    if version is not None:
        run_log.set_tags({"basisfm.registered_version": version})
    outcome = PretrainResult(run_id=logger.run_id, checkpoint_dir=model_dir, registered_version=version,
                             metrics=metrics, tracking_uri=logger.tracking_uri, run_dir=run_dir)
    return outcome  # jobs print its summary (printing ownership: library calls return, jobs print once)


def mlflow_importable() -> bool:
    """Whether MLflow can be imported here (a lent GPU machine has none; a `None` in sys.modules counts as absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def write_provenance(model_dir: Path, config: RunConfig, state: TrainState, metrics: dict[str, float], *, source: str,
                     hardware: str, run_id: str | None, tracking_uri: str | None) -> Path:
    """`model_dir/provenance.json`: how this checkpoint was made, and (through `init_provenance`) the stages before it,
    so a curriculum's last checkpoint carries its whole history (`basisfm.pretrained.ship` sums it)."""
    import dataclasses
    import datetime as dt
    import json

    from basisfm.model.checkpoint import read_model_config

    before = read_provenance(config.train.init_from) if config.train.init_from else {}
    workers = 1 if config.train.launcher == "local" else config.train.num_workers
    tasks = state.tables_seen * workers
    # The loop's own clock over every command that ran it (start-up and teardown left out), not this command's wall
    # time: a run resumed over several commands trained in each, and a rerun of a finished run (a curriculum started
    # again) trains in none.
    minutes = training_minutes(state.history) or metrics["wall_s"] / 60.0
    metrics = {**last_readings(state.history, prefix="val_"), **metrics}
    record = {
        "what": f"{config.model.architecture} pretrained by jobs.pretrain on {source.replace('_', ' ')}",
        "run_name": config.train.run_name, "launcher": config.train.launcher, "workers": workers,
        "mlflow": {"run_id": run_id, "tracking_uri": tracking_uri},
        "data_source": source,
        "model_config": dataclasses.asdict(read_model_config(model_dir)),
        **({"prior_config": dataclasses.asdict(config.priors)} if source == "prior_episodes" else {}),
        "seed": config.train.seed, "steps": state.step, "tasks_seen": tasks,
        "tasks_per_step": config.train.micro_batch_tables * config.train.pack_tables * workers, "lr": config.train.lr,
        "minutes": round(minutes, 2), "device": hardware, "device_type": "cuda" if config.train.use_gpu else "cpu",
        "init": config.train.init_from, "init_provenance": before or None, "grown_to_layers": config.train.grow_layers,
        "total_tasks_seen": tasks + int(before.get("total_tasks_seen", before.get("tasks_seen", 0))),
        "total_minutes": round(minutes + float(before.get("total_minutes", before.get("minutes", 0.0))), 2),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "held_out_ratio": metrics.get("val_prior_ratio"),
        "final_metrics": {k: v for k, v in sorted(metrics.items()) if k.startswith("val_")},
        "config": to_dict(config),
    }
    path = model_dir / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def training_minutes(history: dict[str, list[list[float]]]) -> float:
    """Minutes the training loop ran over every command that ran it: its `wall_minutes` clock starts at 0 in each
    process that resumes the run, so the sum of each stretch's last reading (0 without readings)."""
    total = previous = 0.0
    for _, minutes in history.get("wall_minutes", []):
        if minutes < previous:  # a later command resumed the run
            total += previous
        previous = minutes
    return total + previous


def last_readings(history: dict[str, list[list[float]]], prefix: str) -> dict[str, float]:
    """The last value of every metric in `history` whose name starts with `prefix`."""
    return {name: float(points[-1][1]) for name, points in history.items() if name.startswith(prefix) and points}


def read_provenance(directory: str | Path) -> dict[str, Any]:
    """The provenance.json beside a checkpoint ({} when there is none). A shipped checkpoint keeps its training
    record under "pretraining"."""
    import json

    path = Path(directory) / PROVENANCE_FILE
    provenance = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return provenance.get("pretraining") or provenance


def _launch_ray(config: RunConfig, run_dir: Path, model_dir: Path, logger,
                startup: StartupClock | None = None) -> tuple[dict[str, Any], TrainState]:
    """Ray Train: fit the TorchTrainer; copy the final checkpoint's consolidated model to `model_dir`."""
    startup = startup if startup is not None else StartupClock(job_started=time.time())
    with ray_cluster(config) as own_cluster:
        startup.mark("ray_ready")
        trainer = build_trainer(config, tracking_uri=logger.tracking_uri, mlflow_run_id=logger.run_id, startup=startup,
                                own_cluster=own_cluster)
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"run {config.train.run_name!r} finished without a checkpoint; see the Ray logs in {run_dir}")
        with result.checkpoint.as_directory() as directory:
            state = _collect_final(Path(directory), model_dir, config)
        return dict(result.metrics or {}), state


def _launch_local(config: RunConfig, run_dir: Path, model_dir: Path, logger,
                  startup: StartupClock | None = None) -> tuple[dict[str, Any], TrainState]:
    """One process, no Ray: train, then copy the final checkpoint's consolidated model to `model_dir`."""
    from basisfm.train.local_launcher import train_locally

    run = train_locally(config, run_dir, tracking_uri=logger.tracking_uri, mlflow_run_id=logger.run_id, startup=startup)
    return run.metrics, _collect_final(run.final_checkpoint, model_dir, config)


def _collect_final(directory: Path, model_dir: Path, config: RunConfig) -> TrainState:
    if not (directory / CONSOLIDATED_DIR).is_dir():
        raise RuntimeError(f"the final checkpoint {directory} has no {CONSOLIDATED_DIR}/; the run did not reach its "
                           f"last step (train.steps={config.train.steps})")
    shutil.copytree(directory / CONSOLIDATED_DIR, model_dir, dirs_exist_ok=True)
    return TrainState.from_json((directory / TRAIN_STATE_FILE).read_text())


def _registered_version_of(logger, registered_name: str, step: int) -> str | None:
    """The version this MLflow run already registered for a checkpoint at `step` (a rerun of a finished run)."""
    from basisfm.tracking.mlflow_logger import make_client

    versions = make_client(logger.tracking_uri).search_model_versions(
        f"name = '{registered_name}' and run_id = '{logger.run_id}'")
    same = [int(v.version) for v in versions if v.tags.get("step") == str(step)]
    return str(max(same)) if same else None
