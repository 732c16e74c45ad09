"""benchmarks.missing_values: its arms, conditions and page, and the arms' swapped starting checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks import missing_values as bench
from benchmarks._missing_values_arms import swap_missing_strategy


def test_continued_arms_are_left_out_when_their_checkpoint_is_absent(tmp_path):
    (tmp_path / "missing-type_aware" / "model").mkdir(parents=True)
    (tmp_path / "missing-type_aware" / "model" / "model.safetensors").write_bytes(b"")
    chosen = bench.arms(tmp_path)
    assert list(chosen) == ["shipped (learnable)", "type_aware, continued", "mean imputation", "diffusion imputation",
                            "catboost"]
    assert chosen["catboost"] is None and chosen["diffusion imputation"]["missing_imputation"] == "diffusion"


def test_the_full_run_covers_every_rate_and_mechanism_once_and_a_clean_baseline():
    full = bench.conditions(quick=False)
    assert full[0] == (0.0, "none") and len(full) == 1 + len(bench.RATES) * len(bench.MECHANISMS) == len(set(full))


def test_the_page_takes_medians_over_tables_and_averages_the_missing_conditions():
    scores = [bench.Score(t, "s", arm, rate, mech, r2, 1.0)
              for t, shift in (("A", 0.0), ("B", 0.2), ("C", 0.4))
              for arm, base in (("shipped (learnable)", 0.5), ("catboost", 0.6))
              for rate, mech, r2 in ((0.0, "none", base + shift), (0.3, "mcar", base + shift - 0.1),
                                     (0.3, "mnar", base + shift - 0.3))]
    args = SimpleNamespace(argv=["--quick"], arms_dir="runs/x", work_dir="runs/y")
    lines, _, metrics = bench.page(scores, args, began=0.0)
    text = "\n".join(lines)
    # catboost: medians 0.8 clean, 0.7 MCAR, 0.5 MNAR; the mean over the two missing conditions 0.6
    assert "| catboost | 0.800 | 0.700 | 0.500 | 0.600 |" in text
    assert "best catboost" in text and math.isclose(metrics["catboost_mean_missing_r2"], 0.6)


def test_a_swapped_arm_starts_with_every_token_at_the_learned_one_and_the_other_weights_kept(tmp_path):
    from basisfm.model.checkpoint import load_pretrained
    from basisfm.pretrained.checkpoints import resolve_checkpoint

    source = resolve_checkpoint("in_context")
    base = load_pretrained(source).state_dict()
    swapped = load_pretrained(swap_missing_strategy(source, "type_aware", Path(tmp_path) / "arm"))
    assert swapped.config.missing == "type_aware"
    state = swapped.state_dict()
    assert torch.equal(state["missing.tokens.weight"], base["missing.token"].expand_as(state["missing.tokens.weight"]))
    assert all(torch.equal(state[name], tensor) for name, tensor in base.items() if not name.startswith("missing."))


def _holey_table(rows: int = 48):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.choice(["u", "v"], size=rows)})
    y = (2 * x["a"] - x["b"] + (x["c"] == "u") + 0.1 * rng.normal(size=rows)).to_numpy()
    return x, y


def test_the_fine_tuned_part_fine_tunes_every_arm_once_per_condition_and_skips_filling_a_clean_table(tmp_path):
    x, y = _holey_table()
    chosen = {arm: params for arm, params in bench.fine_tuned_arms().items() if arm != "diffusion imputation"}
    scores = bench.score_split(chosen, [(0.0, "none"), (0.3, "mcar")],
                               lambda params, seed: bench.fine_tuned_estimator(params, seed, max_steps=2),
                               bench.FINE_TUNED, "toy", "public_suite.yaml", 0, x.iloc[:32], y[:32], x.iloc[32:], y[32:],
                               tmp_path / "scores.jsonl")
    assert [(s.arm, s.mechanism) for s in scores] == [
        ("learnable token", "none"), ("catboost", "none"),
        ("learnable token", "mcar"), ("mean imputation", "mcar"), ("catboost", "mcar")]
    assert all(s.part == bench.FINE_TUNED and s.error is None and math.isfinite(s.r2) and s.cpu_seconds > 0
               for s in scores)
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == len(scores)


def test_the_page_puts_the_fine_tuned_table_beside_the_in_context_arm_on_the_same_rows():
    conds = ((0.0, "none"), (0.3, "mcar"), (0.3, "mnar"))
    in_context = [bench.Score(t, "s", "shipped (learnable)", r, m, 0.5, 1.0) for t in ("A", "B") for r, m in conds]
    fine = [bench.Score(t, "s", arm, r, m, r2 - (0.1 if m == "mnar" else 0.0), 1.0, part=bench.FINE_TUNED, cpu_seconds=2.0)
            for t in ("A", "B") for arm, r2 in (("learnable token", 0.7), ("mean imputation", 0.6), ("catboost", 0.8))
            for r, m in conds if r > 0 or arm != "mean imputation"]
    args = SimpleNamespace(argv=[], arms_dir="runs/x", work_dir="runs/y", from_scores=["a.jsonl"], max_steps=60)
    lines, _, metrics = bench.page(in_context + fine, args, began=0.0)
    text = "\n".join(lines)
    assert "| learnable token | 0.700 | 0.700 | 0.600 | 0.650 |" in text
    assert "| mean imputation | – | 0.600 | 0.500 | 0.550 |" in text  # nothing to fill on a clean table
    assert "| in context: shipped (learnable), same tables and split | 0.500 | 0.500 | 0.500 | 0.500 |" in text
    assert "Fine-tuned (60 steps, 30% removed): " in text and "best catboost" in text
    assert "mean imputation -0.100 mean R², higher on 0 of 4; catboost +0.100 mean R², higher on 4 of 4" in text
    assert math.isclose(metrics["ft_learnable_mean_missing_r2"], 0.65) and "shipped_clean_r2" in metrics
