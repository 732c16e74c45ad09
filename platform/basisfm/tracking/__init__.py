"""MLflow for basisfm: rank-0 run logging that never stops training, loss plots, the registry and promotion."""

from basisfm.tracking.mlflow_logger import TrackingLogger, open_experiment, resolve_tracking_uri, ui_command
from basisfm.tracking.plots import plot_loss_curves
from basisfm.tracking.registry import PromotionDecision, download_checkpoint, log_checkpoint_model, promote

__all__ = [
    "PromotionDecision",
    "TrackingLogger",
    "download_checkpoint",
    "log_checkpoint_model",
    "open_experiment",
    "plot_loss_curves",
    "promote",
    "resolve_tracking_uri",
    "ui_command",
]
