"""Finds a consolidated checkpoint (model.safetensors + config.json) from a directory or a registry URI.

`models:/basisfm@champion` is downloaded with MLflow from `tracking_uri`, else $MLFLOW_TRACKING_URI, else
the project's embedded store (runs/mlflow.db, as every job uses); the training job logs the checkpoint directory as the pyfunc model's
artifacts, so the directory holding both files is searched for inside the downloaded model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from basisfm.errors import CheckpointError
from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, find_checkpoint_dir


def is_registry_uri(checkpoint: str | Path | None) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith("models:/")


def resolve_checkpoint(checkpoint: str | Path | None, download_dir: str | Path | None = None,
                       tracking_uri: str | None = None) -> Path | None:
    """A local checkpoint directory, or None when no checkpoint was given (the caller builds from scratch)."""
    if checkpoint is None or checkpoint == "":
        return None
    if is_registry_uri(checkpoint):
        from basisfm.config import TrackingConfig
        from basisfm.tracking.mlflow_logger import resolve_tracking_uri

        return _download_registered(str(checkpoint), download_dir, tracking_uri or resolve_tracking_uri(TrackingConfig()))
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist; pass a directory holding "
                              f"{WEIGHTS_NAME} and {CONFIG_NAME}, a models:/name@alias URI, or None to start from scratch")
    return find_checkpoint_dir(path, origin=str(path))


def _download_registered(uri: str, download_dir: str | Path | None, tracking_uri: str) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    target = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="basisfm-checkpoint-"))
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
    except MlflowException as exc:
        raise CheckpointError(f"cannot download {uri!r} from the MLflow registry at {tracking_uri!r}: "
                              f"{exc.message if hasattr(exc, 'message') else exc}; check the model name and alias "
                              f"(e.g. models:/basisfm@champion) and $MLFLOW_TRACKING_URI") from exc
    return find_checkpoint_dir(Path(local), origin=uri)
