"""The GPU path's pieces, checked on CPU: sync-free target packing, metric windows, packed micro-batches, config
rules, and the local launcher (one process, no Ray import, same checkpoints, resumes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from basisfm.config import TrainConfig
from basisfm.errors import ConfigError
from basisfm.model.basis_transformer import BasisTransformer, target_positions
from basisfm.train.loop import MetricWindow, packed

ROOT = Path(__file__).resolve().parents[1]


def test_target_positions_list_targets_row_major_with_their_slots_in_one_read():
    torch.manual_seed(0)
    target = torch.rand(7, 5) < 0.4
    target[3] = False  # a row without targets
    target[5] = True  # a row of only targets: T = 5
    positions = target_positions(target)
    rows, cols = target.nonzero(as_tuple=True)
    assert torch.equal(positions.rows, rows) and torch.equal(positions.columns, cols)
    expected_slots = (target.cumsum(dim=1) - 1)[rows, cols]
    assert torch.equal(positions.slots, expected_slots) and positions.n_slots == 5
    empty = target_positions(torch.zeros(3, 4, dtype=torch.bool))
    assert empty.rows.numel() == 0 and empty.n_slots == 0


def test_string_candidates_mark_each_columns_strings_without_boolean_indexing():
    class Batch:  # the fields string_candidates reads
        n_columns = 3
        vocab = ["a", "b", "c", "d"]
        string_ids = torch.tensor([[0, -1, 2], [1, -1, 2], [-1, -1, 3]])
        query_target_mask = torch.tensor([[False, False, False], [True, False, False], [False, False, False]])

    candidates = BasisTransformer.string_candidates(Batch())
    # Row 1's hidden "b" is not a visible choice.
    expected = torch.tensor([[True, False, False, False], [False] * 4, [False, False, True, True]])
    assert torch.equal(candidates, expected)


def test_metric_window_means_over_tables_and_starts_again_after_each_reduction():
    window = MetricWindow(torch.device("cpu"))
    window.add(torch.tensor(2.0), {"loss": 2.0, "numeric_bit_loss": 1.0}, cells=10)
    window.add(torch.tensor(4.0), {"loss": 4.0, "categorical_loss": 3.0}, cells=30)
    out = window.reduce(steps=2)
    assert out["train_loss"] == pytest.approx(3.0) and out["cells"] == 40 and out["steps_per_s"] > 0
    assert out["train_numeric_bit_loss"] == 1.0 and out["train_categorical_loss"] == 3.0  # per metric, its own count
    assert out["cells_per_s"] > 0
    window.add(torch.tensor(1.0), {}, cells=5)
    again = window.reduce()
    assert again["train_loss"] == 1.0 and again["cells"] == 5 and "train_numeric_bit_loss" not in again


def test_packed_groups_consecutive_tables():
    assert list(packed(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(packed(iter(range(2)), 1)) == [[0], [1]]


def test_train_config_rejects_compile_with_zero3_and_a_zero_log_interval():
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile=True, zero_stage=3).validate("train")
    with pytest.raises(ConfigError, match="log_every"):
        TrainConfig(log_every=0).validate("train")
    TrainConfig(compile=True, zero_stage=2, pack_tables=4).validate("train")


@pytest.mark.slow
def test_local_launcher_trains_without_ray_writes_checkpoints_and_resumes(tiny_corpus, tmp_path):
    # A fresh interpreter: the test session may have imported Ray already, and the launcher's one-rank
    # process group is process-wide.
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from basisfm.config import load_config, with_overrides
        from basisfm.train.local_launcher import checkpoints, train_locally
        config = load_config({str(ROOT / "jobs" / "configs" / "tiny.yaml")!r}, [
            "corpus.out_dir={tiny_corpus}", "data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
            "data.validation_tables=1", "data.token_budget=512", "train.zero_stage=2", "train.launcher=local",
            "train.steps=2", "train.warmup_steps=1", "train.checkpoint_every=1", "train.keep_checkpoints=1",
            "train.validation_batches=1", "train.pack_tables=2"])
        run_dir = Path({str(tmp_path / "run")!r})
        first = train_locally(config, run_dir)
        second = train_locally(with_overrides(config, {{"train.steps": 3}}), run_dir)
        state = json.loads((second.final_checkpoint / "train_state.json").read_text())
        print(json.dumps({{"ray": "ray" in sys.modules, "first": first.final_checkpoint.name,
                          "second": second.final_checkpoint.name, "kept": [p.name for p in checkpoints(run_dir)],
                          "resumed_from": state["resumed_from"], "loss": second.metrics["train_loss"],
                          "val_loss": second.metrics["val_loss"]}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ray"] is False
    assert out["first"] == "step_0000002" and out["second"] == "step_0000003"
    assert out["kept"] == ["step_0000003"] and out["resumed_from"] == [2]
    assert out["loss"] > 0 and out["val_loss"] > 0
    assert (tmp_path / "run" / "step_0000003" / "consolidated" / "model.safetensors").is_file()


@pytest.mark.slow
def test_local_launcher_trains_an_in_context_model_on_prior_episodes(tiny_corpus, tmp_path):
    # data.prior_fraction=1: every batch is a synthetic episode made on the worker; the consolidated checkpoint
    # records how the run pruned text (data.text_top_k), which the estimators then follow.
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from basisfm.config import load_config
        from basisfm.model.checkpoint import read_model_config, read_text_top_k
        from basisfm.train.local_launcher import train_locally
        config = load_config({str(ROOT / "jobs" / "configs" / "icl_tiny.yaml")!r}, [
            "corpus.out_dir={tiny_corpus}", "data.embedding_cache_dir={tiny_corpus.parent / 'embedding_cache'}",
            "data.validation_tables=0", "data.prior_fraction=1.0", "data.text_top_k=16", "train.zero_stage=0",
            "train.launcher=local", "train.steps=3", "train.warmup_steps=1", "train.checkpoint_every=3",
            "train.log_every=1", "train.pack_tables=1"])
        result = train_locally(config, Path({str(tmp_path / "run")!r}))
        consolidated = result.final_checkpoint / "consolidated"
        print(json.dumps({{"loss": result.metrics["train_loss"], "top_k": read_text_top_k(consolidated),
                          "architecture": read_model_config(consolidated).architecture}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]), "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loss"] > 0 and out["top_k"] == 16 and out["architecture"] == "basis_icl"
