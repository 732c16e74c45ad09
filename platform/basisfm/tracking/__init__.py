"""MLflow for basisfm: rank-0 run logging that never stops training, loss plots, the registry and promotion."""

from pathlib import Path

from basisfm.tracking.mlflow_logger import TrackingLogger, open_experiment, resolve_tracking_uri, ui_command
from basisfm.tracking.plots import plot_loss_curves
from basisfm.tracking.registry import PromotionDecision, download_checkpoint, log_checkpoint_model, promote



def pyfunc_entry_path() -> str:
    """The models-from-code file MLflow logs for our pyfunc model."""
    return str(Path(__file__).with_name("pyfunc_entry.py"))


__all__ = [
    "PromotionDecision",
    "TrackingLogger",
    "download_checkpoint",
    "log_checkpoint_model",
    "open_experiment",
    "plot_loss_curves",
    "promote",
    "pyfunc_entry_path",
    "resolve_tracking_uri",
    "ui_command",
]
