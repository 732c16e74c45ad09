"""Finds a consolidated checkpoint (model.safetensors + config.json) from a directory, a registry URI, or
a shipped checkpoint's name ("per_row" or its earlier name "default", "in_context": `basisfm.pretrained`).

`models:/basisfm@champion` is downloaded with MLflow from `tracking_uri`, else $MLFLOW_TRACKING_URI, else
the project's embedded store (runs/mlflow.db, as every job uses); the training job logs the checkpoint directory as the pyfunc model's
artifacts, so the directory holding both files is searched for inside the downloaded model.

The tracking URI is handed to an `MlflowClient` and to the download call, never set process-wide: the
user's own MLflow calls, and the next estimator, keep theirs. The registry is asked first, with the
fail-fast HTTP settings the training logger uses (a few quick retries instead of minutes of backoff), so
an unreachable server is a `CheckpointError` in seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from basisfm.errors import CheckpointError
from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, find_checkpoint_dir
from basisfm.pretrained import CHECKPOINT_NAMES, shipped_checkpoint


def is_registry_uri(checkpoint: str | Path | None) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith("models:/")


def resolve_checkpoint(checkpoint: str | Path | None, download_dir: str | Path | None = None,
                       tracking_uri: str | None = None) -> Path | None:
    """A local checkpoint directory, or None when no checkpoint was given (the caller builds from scratch).
    "per_row" (or "default") and "in_context" are the checkpoints shipped with the package (`basisfm.pretrained`)."""
    if checkpoint is None or checkpoint == "":
        return None
    if checkpoint in CHECKPOINT_NAMES:
        return find_checkpoint_dir(shipped_checkpoint(str(checkpoint)), origin=f"the shipped {checkpoint!r} checkpoint")
    if is_registry_uri(checkpoint):
        from basisfm.config import TrackingConfig
        from basisfm.tracking.mlflow_logger import resolve_tracking_uri

        # A lookup: the embedded store's folder is not created (there would be nothing in it to find).
        tracking_uri = tracking_uri or resolve_tracking_uri(TrackingConfig(), create_local_dir=False)
        return _download_registered(str(checkpoint), download_dir, tracking_uri)
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist; pass a directory holding "
                              f"{WEIGHTS_NAME} and {CONFIG_NAME}, a models:/name@alias URI, 'per_row' or 'in_context' (shipped), "
                              "or None to start from scratch")
    return find_checkpoint_dir(path, origin=str(path))


_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))(?:/.*)?")


def _parse_registry_uri(uri: str) -> re.Match:
    parsed = _MODELS_URI.fullmatch(uri)
    if parsed is None:
        raise CheckpointError(f"checkpoint {uri!r} is not a registry URI of the form models:/name@alias or "
                              "models:/name/version (e.g. models:/basisfm@champion)")
    return parsed


def registered_version(client, uri: str):
    """The MLflow ModelVersion that `uri` (models:/name@alias or models:/name/version) names."""
    parsed = _parse_registry_uri(uri)
    name = parsed["name"]
    return client.get_model_version_by_alias(name, parsed["alias"]) if parsed["alias"] else client.get_model_version(name, parsed["version"])


@contextlib.contextmanager
def fail_fast_http():
    """MLflow's HTTP retry settings at the fail-fast values of `basisfm.tracking.mlflow_logger` for the
    duration of the block, unless the user set them; the environment is restored afterwards."""
    from basisfm.tracking.mlflow_logger import FAIL_FAST_HTTP

    added = {key: value for key, value in FAIL_FAST_HTTP.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _download_registered(uri: str, download_dir: str | Path | None, tracking_uri: str) -> Path:
    from basisfm.errors import TrackingError
    from basisfm.tracking.store import check_tracking_store

    name = _parse_registry_uri(uri)["name"]
    try:  # before any MLflow call: MLflow would create an empty sqlite store, or wait out a silent server
        check_tracking_store(tracking_uri, must_exist=True)
    except TrackingError as exc:
        raise CheckpointError(f"cannot download {uri!r}: {exc}") from None
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from basisfm.tracking.registry import quiet_model_transfer

    target = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="basisfm-checkpoint-"))
    target.mkdir(parents=True, exist_ok=True)
    where = f"the MLflow registry at {tracking_uri!r}"
    with fail_fast_http():
        try:
            # The URI goes to this client and to the download, never to mlflow.set_tracking_uri.
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            found = registered_version(client, uri)
            # The version's storage location, not the models:/ URI: MLflow resolves models:/ through the
            # process-wide registry URI whatever it is passed.
            location = client.get_model_version_download_uri(name, found.version)
            with quiet_model_transfer():  # no artifact bar redraws in a log
                local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(target),
                                                            tracking_uri=tracking_uri)
        except MlflowException as exc:
            message = " ".join(str(getattr(exc, "message", exc)).split())[:300]
            raise CheckpointError(f"cannot download {uri!r} from {where}: {message}; check the model name and alias "
                                  "(e.g. models:/basisfm@champion), the server and $MLFLOW_TRACKING_URI") from None
        except OSError as exc:  # connection refused / reset, DNS, timeouts (requests' errors are OSErrors)
            raise CheckpointError(f"cannot reach {where} to download {uri!r}: {type(exc).__name__}; check that the "
                                  "server runs and the URI (tracking_uri= or $MLFLOW_TRACKING_URI)") from None
    return find_checkpoint_dir(Path(local), origin=f"{uri} (version {found.version})")
