"""Promotion wired to this run config: score a registered version against `@champion` on the held-out tables."""

from __future__ import annotations

from basisfm.config import RunConfig
from basisfm.errors import CheckpointError
from basisfm.tracking import PromotionDecision, promote, resolve_tracking_uri
from basisfm.tracking.mlflow_logger import make_client
from basisfm.train.evaluate import ValidationSuite
from basisfm.train.trainer import absolute_paths


def latest_version(registered_name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        versions = make_client(tracking_uri).search_model_versions(f"name = '{registered_name}'")
    except MlflowException as exc:
        raise CheckpointError(f"cannot list versions of {registered_name!r} at {tracking_uri}: {exc}") from exc
    if not versions:
        raise CheckpointError(f"no registered model {registered_name!r} at {tracking_uri}; run `python -m jobs.pretrain` "
                              "first (it registers its checkpoint), or pass --tracking-uri where it was registered")
    return str(max(int(v.version) for v in versions))


def promote_registered(config: RunConfig, version: str | int | None = None, metric: str = "val_loss",
                       mode: str = "min") -> PromotionDecision:
    """Promote `version` (default: the newest) of `tracking.registered_model` to `tracking.champion_alias`
    if it beats the current holder on the corpus's validation tables (`data.validation_tables`)."""
    config = absolute_paths(config)
    tracking_uri = resolve_tracking_uri(config.tracking)
    name = config.tracking.registered_model
    candidate = str(version) if version is not None else latest_version(name, tracking_uri)
    return promote(candidate, ValidationSuite(config), registered_name=name, alias=config.tracking.champion_alias,
                   tracking_uri=tracking_uri, metric=metric, mode=mode)
