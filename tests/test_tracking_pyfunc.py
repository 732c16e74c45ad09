"""The registered pyfunc model: loaded back from the registry (no pickle), it fills missing numeric cells;
models logged with the entry script of earlier releases still load; tracking never imports the estimators."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from basisfm.config import ModelConfig, TrackingConfig
from basisfm.errors import TableError
from basisfm.tracking import log_checkpoint_model, resolve_tracking_uri


def test_registered_model_predicts_missing_numeric_cells(tmp_path, monkeypatch):
    import mlflow
    import torch

    from basisfm.model import build_model
    from basisfm.model.checkpoint import save_pretrained

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    torch.manual_seed(0)
    save_pretrained(build_model(ModelConfig()), tmp_path / "ckpt")
    uri = resolve_tracking_uri(TrackingConfig(local_dir=str(tmp_path / "runs")))
    version = log_checkpoint_model(tmp_path / "ckpt", "basisfm-pyfunc", tracking_uri=uri, experiment="pyfunc")

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=40), "colour": rng.choice(["red", "blue"], size=40)})
    frame["y"] = 3 * frame["x"] + 1
    frame.loc[[3, 17, 29], "y"] = np.nan
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/basisfm-pyfunc/{version}")
    filled = model.predict(frame)

    assert filled["y"].notna().all() and np.isfinite(filled.loc[[3, 17, 29], "y"]).all()
    pd.testing.assert_frame_equal(filled.drop(index=[3, 17, 29]), frame.drop(index=[3, 17, 29]))
    assert frame["y"].isna().sum() == 3  # the input is left as it was
    # The model's files sit next to the sqlite store, never in ./mlruns of the working directory.
    assert any((tmp_path / "runs" / "mlartifacts").rglob("MLmodel"))

    with pytest.raises(TableError, match="column .y.: has 1 present values; at least 2 are needed"):
        model.predict(pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [np.nan, np.nan, 1.0]}))


def test_tracking_never_imports_the_estimators():
    import subprocess
    import sys

    code = ("import sys, basisfm.tracking, basisfm.tracking.registry, basisfm.tracking.mlflow_logger; "
            "print(sorted(m for m in sys.modules if m.startswith('basisfm.estimators')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    from basisfm.tracking.registry import serving_entry_path

    assert "from basisfm.estimators.pyfunc import BasisPyfuncModel" in serving_entry_path().read_text()
