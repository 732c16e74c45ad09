"""Import a run directory written where MLflow was absent (`tracking.run_directory`) into MLflow: one run with the
training run's params, metrics at their steps, tags and artifacts, and a registered version of its checkpoint.

Importing twice is harmless: the run is found again by its run key (the tag `jobs.pretrain` sets, so a run that
was logged live is found too) and nothing is logged or registered a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from basisfm.errors import ConfigError
from basisfm.tracking.run_directory import PARAMS_FILE, TAGS_FILE, read_json, read_metrics

MODEL_DIR = "model"
ARTIFACTS_DIR = "artifacts"
PROVENANCE_FILE = "provenance.json"
_REGISTERED_TAG = "basisfm.registered_version"


@dataclass
class ImportedRun:
    run_id: str
    registered_version: str | None
    imported: bool  # False: MLflow already held this run (imported before, or logged live)
    tracking_uri: str
    registered_model: str | None

    def summary(self) -> str:
        what = "imported as" if self.imported else "already in MLflow as"
        registered = (f"version {self.registered_version} of {self.registered_model}" if self.registered_version
                      else "(not registered)")
        return f"run directory {what} MLflow run {self.run_id} at {self.tracking_uri}; registered: {registered}"


def import_run_directory(run_dir: str | Path, tracking_uri: str, *, register: bool = True) -> ImportedRun:
    """Log `run_dir` into MLflow at `tracking_uri`, in the experiment and under the registered model its own
    params name (`tracking.experiment`, `tracking.registered_model`)."""
    from basisfm.tracking.mlflow_logger import RUN_KEY_TAG, make_client, open_experiment

    run_dir = Path(run_dir)
    params = read_json(run_dir / PARAMS_FILE)
    if not params:
        raise ConfigError(f"run directory {str(run_dir)!r} has no {PARAMS_FILE}; pass the directory `jobs.pretrain` "
                          "printed as its run dir (it holds params.json, metrics.jsonl and model/)")
    tags = read_json(run_dir / TAGS_FILE)
    run_key = tags.get(RUN_KEY_TAG) or str(run_dir.absolute())
    experiment = str(params.get("tracking.experiment") or "basisfm")
    registered_model = str(params.get("tracking.registered_model") or "basisfm")
    run_name = str(params.get("train.run_name") or run_dir.name)
    client, experiment_id = open_experiment(tracking_uri, experiment)
    key = run_key.replace("'", "\\'")
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
    if found:
        run_id, imported = found[0].info.run_id, False
    else:
        run_id, imported = _log_run(client, experiment_id, run_dir, run_name, params, {**tags, RUN_KEY_TAG: run_key}), True
    version = None
    model_dir = run_dir / MODEL_DIR
    if register and model_dir.is_dir():
        existing = make_client(tracking_uri).search_model_versions(f"name = '{registered_model}' and run_id = '{run_id}'")
        if existing:
            version = str(max(int(v.version) for v in existing))
        else:
            from basisfm.tracking.registry import log_checkpoint_model

            version = log_checkpoint_model(model_dir, registered_model, tracking_uri=tracking_uri, run_id=run_id,
                                           tags={"run_name": run_name, "imported_from": str(run_dir.absolute())})
            client.set_tag(run_id, _REGISTERED_TAG, version)
    return ImportedRun(run_id=run_id, registered_version=version, imported=imported, tracking_uri=tracking_uri,
                       registered_model=registered_model if version else None)


def _log_run(client, experiment_id: str, run_dir: Path, run_name: str, params: dict, tags: dict) -> str:
    from mlflow.entities import Metric, Param

    from basisfm.tracking.mlflow_logger import _MAX_METRICS_PER_BATCH, _MAX_PARAMS_PER_BATCH, _param_value

    run = client.create_run(experiment_id, run_name=run_name,
                            tags={**{k: str(v) for k, v in tags.items()}, "basisfm.imported_from": str(run_dir.absolute())})
    run_id = run.info.run_id
    items = [Param(k, _param_value(v)) for k, v in sorted(params.items())]
    for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + _MAX_PARAMS_PER_BATCH])
    metrics = read_metrics(run_dir)
    stamp = int((run_dir / "metrics.jsonl").stat().st_mtime * 1000) if metrics else 0
    entries = [Metric(name, value, stamp, step) for name, value, step in metrics]
    for start in range(0, len(entries), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=entries[start:start + _MAX_METRICS_PER_BATCH])
    artifacts = run_dir / ARTIFACTS_DIR
    for path in sorted(artifacts.iterdir()) if artifacts.is_dir() else []:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    if (run_dir / MODEL_DIR / PROVENANCE_FILE).is_file():
        client.log_artifact(run_id, str(run_dir / MODEL_DIR / PROVENANCE_FILE))
    client.set_terminated(run_id, status="FINISHED")
    return run_id
