"""Finds a consolidated checkpoint (model.safetensors + config.json) from a directory or a registry URI.

`models:/basisfm@champion` is downloaded with MLflow from `tracking_uri`, else $MLFLOW_TRACKING_URI, else
the project's embedded store (runs/mlflow.db, as every job uses); the training job logs the checkpoint directory as the pyfunc model's
artifacts, so the directory holding both files is searched for inside the downloaded model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from basisfm.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


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
                              f"{WEIGHTS_FILE} and {CONFIG_FILE}, a models:/name@alias URI, or None to start from scratch")
    return find_checkpoint_dir(path, origin=str(path))


def find_checkpoint_dir(root: Path, origin: str) -> Path:
    """`root` itself or the one directory below it that holds both checkpoint files."""
    candidates = [root] if (root / WEIGHTS_FILE).is_file() else [p.parent for p in sorted(root.rglob(WEIGHTS_FILE))]
    complete = [d for d in candidates if (d / CONFIG_FILE).is_file()]
    if not complete:
        missing = CONFIG_FILE if candidates else WEIGHTS_FILE
        raise CheckpointError(f"checkpoint {origin!r} has no {missing} (looked in {str(root)!r}); "
                              f"a consolidated checkpoint needs both {WEIGHTS_FILE} and {CONFIG_FILE}")
    if len(complete) > 1:
        raise CheckpointError(f"checkpoint {origin!r} holds {len(complete)} checkpoint directories "
                              f"({[str(d) for d in complete[:3]]}); point at one of them")
    return complete[0]


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
