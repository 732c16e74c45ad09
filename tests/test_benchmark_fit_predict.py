"""benchmarks.fit_predict_seconds: times fit and predict per strategy on a real table and writes its page."""

from __future__ import annotations

import torch

from basisfm.config import ModelConfig
from basisfm.model import build_model
from basisfm.model.checkpoint import save_pretrained
from benchmarks import fit_predict_seconds as bench


def test_a_small_run_times_every_strategy_and_writes_the_page(tmp_path):
    torch.manual_seed(0)
    icl = save_pretrained(build_model(ModelConfig(architecture="tab2d", regression_head="binned")), tmp_path / "icl")
    assert bench.main(["--rows", "120", "--test-rows", "30", "--max-steps", "2", "--max-context", "64",
                       "--icl-checkpoint", str(icl), "--icl-finetune", "--out-dir", str(tmp_path / "results"), "--no-mlflow"]) == 0
    page = (tmp_path / "results" / "fit_predict_seconds.md").read_text()
    assert "120 training rows of ggplot2/diamonds, 30 test rows" in page
    from basisfm.model.checkpoint import read_model_config
    from basisfm.pretrained import shipped_checkpoint

    per_row = read_model_config(shipped_checkpoint("per_row")).architecture
    for label in (f"per-row checkpoint, base-ft ({per_row})", "in-context, inference (default)",
                  "in-context, inference, retrieval=False", "in-context, base-ft (episodic)"):
        assert f"| {label} |" in page
    assert "--max-steps 2" in page
    assert (tmp_path / "results" / "fit_predict_seconds.png").stat().st_size > 0


def test_without_a_checkpoint_it_times_the_shipped_in_context_one(tmp_path):
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    assert bench.main(["--rows", "80", "--test-rows", "20", "--max-steps", "1", "--max-context", "32",
                       "--out-dir", str(tmp_path), "--no-mlflow"]) == 0
    page = (tmp_path / "fit_predict_seconds.md").read_text()
    assert "in-context checkpoint: platform/basisfm/pretrained/in_context\n" in page
    assert IN_CONTEXT_CHECKPOINT_DIR.is_dir()
    assert "| in-context, inference (default) | " in page and "(episodic)" not in page
