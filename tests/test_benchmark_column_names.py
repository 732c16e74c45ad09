"""benchmarks.column_names' pieces: the checkpoint copy that reads names another way (same weights), and the
paired comparisons that decide whether names changed the scores."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.column_names import named_checkpoint, names_matter, paired_delta, wins


def test_named_checkpoint_keeps_the_weights_and_changes_only_how_names_are_read(tmp_path):
    from basisfm.config import ModelConfig
    from basisfm.model import build_model
    from basisfm.model.checkpoint import load_pretrained, read_name_embedding, save_pretrained

    source = save_pretrained(build_model(ModelConfig(preset="tiny")), tmp_path / "source")
    copy = named_checkpoint(source, tmp_path / "copy", embedding="none", symbolic=False)
    assert read_name_embedding(copy) == ("none", None) and read_name_embedding(source) == ("sentence", None)
    assert json.loads((copy / "config.json").read_text())["model_config"]["symbolic_name_features"] is False
    a, b = load_pretrained(source).state_dict(), load_pretrained(copy).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert load_pretrained(copy).columns.symbolic_features is False


def _rows(scores):
    return [{"suite": "public", "table": f"t{i}", "split": 0, "r2": s} for i, s in enumerate(scores)]


def test_paired_delta_and_the_thresholds_that_call_a_change():
    base = _rows([0.5, 0.6, 0.7])
    delta, lower, total = paired_delta(_rows([0.4, 0.5, 0.6]), base)
    assert abs(delta + 0.1) < 1e-12 and (lower, total) == (3, 3)
    assert names_matter(paired_delta(_rows([0.4, 0.5, 0.6]), base))
    assert not names_matter(paired_delta(_rows([0.4, 0.65, 0.75]), base))  # lower on 1 of 3 only
    assert not names_matter(paired_delta(_rows([0.499, 0.599, 0.699]), base))  # too small to call
    assert wins(paired_delta(_rows([0.55, 0.65, 0.69]), base)) and not wins(paired_delta(_rows([0.55, 0.55, 0.69]), base))


def test_fine_tuned_part_fine_tunes_each_name_variant_and_the_section_calls_what_it_measured(tmp_path):
    import numpy as np
    import pandas as pd

    from benchmarks.column_names import (FINE_TUNED_VARIANTS, SEED_CONTROL, Task, fine_tuned_part,
                                         fine_tuned_section)
    from basisfm.evaluation.splits import SplitProtocol
    from basisfm.pretrained.checkpoints import resolve_checkpoint
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"price": rng.normal(size=60), "weight": rng.normal(size=60), "age": rng.normal(size=60)})
    task = Task("screen", "toy", x, pd.Series(x["price"] - x["age"], name="value"), SplitProtocol())
    shipped = Path(resolve_checkpoint("in_context"))
    unnamed = named_checkpoint(shipped, tmp_path / "unnamed", embedding="none", symbolic=False)
    args = SimpleNamespace(max_steps=1, embedding_cache_dir=str(tmp_path / "cache"))
    fine = fine_tuned_part([task], shipped, unnamed, args)
    assert list(fine) == [*FINE_TUNED_VARIANTS, "catboost", SEED_CONTROL]
    assert all(len(rows) == 1 and rows[0]["split"] == 0 and np.isfinite(rows[0]["r2"]) for rows in fine.values())
    assert fine["scrambled"][0]["changed"] > 0 and fine["real"][0]["changed"] == 0

    # the section: scrambled names lower on every table by 0.1 is called; in-context rows give their column
    rows = lambda values: [{"suite": "screen", "table": f"t{i}", "split": 0, "r2": v, "cpu_seconds": 1.0}  # noqa: E731
                           for i, v in enumerate(values)]
    made = {"real": rows([0.6, 0.7, 0.8]), "scrambled": rows([0.5, 0.6, 0.7]), "none": rows([0.6, 0.7, 0.8]),
            "catboost": rows([0.9, 0.9, 0.9])}
    headline, lines, decision, metrics = fine_tuned_section(made, rows([0.4, 0.5, 0.6]), max_steps=60)
    assert "reads names" in headline and "scrambled -0.1000" in headline and "move with its names" in decision
    assert "| **mean, screen** | 0.7000 | 0.6000 | 0.7000 | 0.9000 | 0.5000 |" in lines
    assert "Fine-tuned with real names against in context +0.2000 mean R2, lower on 0 of 3; CatBoost -0.2000 mean R2, " \
           "lower on 3 of 3." in lines
    assert abs(metrics["ft_scrambled_r2"] - 0.6) < 1e-12
    # the same drop is not called when two seeds of the same names differ as much
    made[SEED_CONTROL] = rows([0.75, 0.55, 0.9])
    headline, lines, decision, metrics = fine_tuned_section(made, [], max_steps=60)
    assert "does not measurably read names" in headline and "another seed of real names +0.0333" in headline
    assert "ft_real_another_seed_r2" in metrics
