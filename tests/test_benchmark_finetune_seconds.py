"""benchmarks.finetune_seconds: its page compares the old and new defaults table by table and the headline timing as a
ratio of the same run; the old arm's code comes from a git archive of its commit."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import finetune_seconds as bench


def _row(table: str, arm: str, fit_s: float, r2: float, kind: str = "table", **kw) -> dict:
    return {"table": table, "arm": arm, "kind": kind, "split": 0, "train_rows": 10_000, "test_rows": 2_000, "fit_s": fit_s,
            "predict_s": 10.0, "r2": r2, "steps": 600 if arm == "old" else 200, "best_step": 200, "validations": 13,
            "stopped": "max_steps", "threads": 1, "load_before": 2.0, "load_after": 3.0, **kw}


def test_the_page_pairs_arms_by_table_and_reports_the_headline_as_a_ratio(tmp_path):
    rows = [_row("diamonds", "old", 500.0, 0.97), _row("diamonds", "new", 150.0, 0.968,
                                                          validation_s=20.0, steps_s=120.0, outside_loop_s=10.0),
            _row("CPS1988", "old", 300.0, 0.34), _row("CPS1988", "new", 100.0, 0.35), _row("ames", "old", 200.0, 0.9)]
    headline = [_row("diamonds", "old", 400.0, 0.97, kind="headline"), _row("diamonds", "new", 100.0, 0.96, kind="headline")]
    markdown, context, metrics = bench.page(rows, headline, argparse.Namespace(), "abc1234")
    assert "fit 100 s new against 400 s old in the same run (0.25x)" in markdown
    assert "median +0.0040 (worst diamonds -0.0020)" in markdown
    # median over the two complete pairs: R² change -0.002 and +0.010, fit ratios 0.30 and 0.33
    assert metrics["median_r2_delta"] == pytest.approx(0.004) and metrics["median_fit_ratio"] == pytest.approx((0.3 + 1 / 3) / 2)
    assert "| diamonds | +" not in markdown and "| diamonds | -0.0020 | 0.30 |" in markdown
    assert "| diamonds | 10,000 | new | 150.0 | 120 + 20 + 10 |" in markdown  # where the seconds went
    assert "| CPS1988 | 10,000 | old | 300.0 | — |" in markdown  # a row measured without the breakdown
    assert "| ames | 10,000 | old |" in markdown and "| ames | " not in markdown.split("| table | R² new - old |")[1]
    assert "abc1234" in context["old"]
    assert bench.render(rows, headline, tmp_path / "page.png").stat().st_size > 0


def test_the_old_arm_runs_the_archived_code_of_its_commit(tmp_path):
    platform = bench.old_code("HEAD", tmp_path)
    assert (platform / "basisfm" / "estimators" / "base.py").is_file()
    assert bench.old_code("HEAD", tmp_path) == platform  # extracted once
