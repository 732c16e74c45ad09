"""benchmarks.loss_weighting's task: two numeric targets, one at 5x the other's spread, 20% of the other's labels
replaced by noise; the two targets are two tasks for the weightings; R2 against the clean truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.loss_weighting import (LARGE, NOISE_SHARE, NOISY, SCALE_RATIO, Arm, plain_batches,
                                       prior_table, prior_tasks, r_squared, scale_and_noise, task_config)


def test_scale_and_noise_gives_a_five_to_one_spread_and_replaces_a_fifth_of_the_labels():
    rng = np.random.default_rng(0)
    large, noisy = rng.normal(100, 30, 500), rng.normal(-2, 0.5, 500)
    scaled, corrupted, replaced = scale_and_noise(large, noisy, np.random.default_rng(1))
    assert scaled.std() == pytest.approx(SCALE_RATIO * noisy.std())
    assert replaced.sum() == int(NOISE_SHARE * 500)
    assert np.array_equal(corrupted[~replaced], noisy[~replaced])
    assert not np.any(corrupted[replaced] == noisy[replaced])
    # the replacements are plausible values of the column, not outliers
    assert abs(corrupted[replaced].mean() - noisy.mean()) < 0.3 and 0.3 < corrupted[replaced].std() < 0.8


def test_the_two_target_names_are_two_tasks_of_the_objective():
    from basisfm.encoding.missing import stable_name_bucket

    config = task_config("mgda")
    assert config.weighting == "mgda" and config.task_buckets == 2
    assert {stable_name_bucket(LARGE, 2), stable_name_bucket(NOISY, 2)} == {0, 1}


def test_a_corrupted_prior_task_keeps_its_clean_truth_and_its_context_statistics_follow_the_noisy_labels():
    task = prior_tasks(1, seed=3, rows=(80, 80), features=(4, 4))[0]
    e = task.episode
    assert e.column_names[task.large] == LARGE and e.column_names[task.noisy] == NOISY
    assert e.target_mask[0].nonzero().flatten().tolist() == sorted([task.large, task.noisy])
    present = ~e.missing[:, task.noisy]
    changed = (e.values[:, task.noisy] != task.clean[:, task.noisy]) & present
    assert int(changed.sum()) == round(NOISE_SHARE * int(present.sum()))
    assert torch.equal(e.values[:, task.large], task.clean[:, task.large])  # the large target is scaled, not noised
    spread = task.clean[present, task.large].std(unbiased=False) / task.clean[present, task.noisy].std(unbiased=False)
    assert float(spread) == pytest.approx(SCALE_RATIO)
    context = e.support & present
    assert float(e.column_mean[task.noisy]) == pytest.approx(float(e.values[context, task.noisy].mean()))
    assert float(e.column_abs_max[task.large]) == pytest.approx(float(e.values[present, task.large].abs().max()))


def test_the_per_row_batches_hide_every_target_and_train_on_the_context_rows_only():
    task = prior_tasks(1, seed=4, rows=(64, 64), features=(3, 3))[0]
    train, evaluation = plain_batches(task)
    assert train.n_rows == task.episode.n_support and evaluation.n_rows == task.episode.n_rows
    assert not train.support.any() and not evaluation.support.any()
    assert torch.equal(evaluation.query_target_mask, task.episode.target_mask)


def test_r_squared_and_the_table_of_arms():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert r_squared(truth, truth) == 1.0 and r_squared(np.full(4, 2.5), truth) == 0.0
    none = Arm("in_context", "none", seconds=10, prior=[{"large": 0.5, "noisy": 0.2}, {"large": 0.4, "noisy": 0.1}],
               weights=[[1.0, 1.0]])
    mgda = Arm("in_context", "mgda", seconds=20, prior=[{"large": 0.6, "noisy": 0.1}, {"large": -5.0, "noisy": 0.3}],
               weights=[[1.5, 0.5]])
    rows = prior_table([none, mgda], None, "")
    assert rows[2] == "| none | 0.450 / 0.450 | 0.150 / 0.150 |  | 1.00 : 1.00 | 10 |"
    # -5 is clipped at -1 before the mean; mgda beats none on one task's large target and one task's noisy one
    assert rows[3] == "| mgda | -0.200 / -0.200 | 0.200 / 0.200 | 1, 1 of 2 | 1.50 : 0.50 | 20 |"


def test_the_default_changes_only_for_a_weighting_better_by_two_standard_errors_in_both_arms():
    from benchmarks.loss_weighting import against, decision

    def arm(kind, weighting, scores):
        return Arm(kind, weighting, prior=[{"large": s, "noisy": s} for s in scores])

    base = [0.50, 0.60, 0.40, 0.70]
    mean, error = against(arm("in_context", "mgda", [b + 0.1 for b in base]), arm("in_context", "none", base))
    assert mean == pytest.approx(0.1) and error == pytest.approx(0.0)
    in_context = [arm("in_context", "none", base), arm("in_context", "mgda", [b + 0.1 for b in base]),
                  arm("in_context", "uncertainty", [0.51, 0.59, 0.41, 0.69])]
    per_row = [arm("per_row", "paper", base), arm("per_row", "mgda", [b + 0.05 for b in base]),
               arm("per_row", "uncertainty", base)]
    text = decision(in_context, per_row, "paper")
    assert "mgda +0.100 ± 0.000 (better)" in text and "uncertainty +0.000" in text and "(within noise)" in text
    assert text.endswith("`mgda` beat the default `paper` by more than two standard errors in both arms, so "
                         "`loss.weighting` becomes `mgda`.")
    per_row[1] = arm("per_row", "mgda", [0.60, 0.50, 0.40, 0.70])  # better on one task, worse on another
    assert "stays `paper`" in decision(in_context, per_row, "paper")


def test_the_headline_carries_the_verdict():
    from benchmarks.loss_weighting import headline

    none = Arm("in_context", "none", prior=[{"large": 0.5, "noisy": 0.5}, {"large": 0.6, "noisy": 0.6}])
    paper = Arm("per_row", "paper", prior=[{"large": 0.5, "noisy": 0.5}, {"large": 0.6, "noisy": 0.6}])
    assert headline([none], [paper], "paper").endswith("`loss.weighting` stays `paper`")


def _arm(kind, weighting, scores):
    return Arm(kind, weighting, prior=[{"large": s, "noisy": s} for s in scores])


def test_none_against_paper_is_decided_by_the_per_row_arm_alone_because_in_context_they_are_one_objective():
    from benchmarks.loss_weighting import decision, default_winners, headline

    base = [0.50, 0.60, 0.40, 0.70]
    per_row = [_arm("per_row", "none", [b + 0.2 for b in base]), _arm("per_row", "paper", base),
               _arm("per_row", "uncertainty", [b + 0.3 for b in base])]
    # without the in-context arm `none` wins, `uncertainty` (a different objective in context) cannot
    assert default_winners([], per_row, "paper") == ["none"]
    text = decision([], per_row, "paper")
    assert "uncertainty +0.300 ± 0.000 (better)" in text and "so none can in this run" in text
    assert text.endswith("`none` beat the default `paper` by more than two standard errors in both arms, so "
                         "`loss.weighting` becomes `none`.")
    assert headline([], per_row, "paper").endswith("none beats the default `paper` by 2 SE: `loss.weighting` becomes `none`")
    # with it, `uncertainty` wins that arm too and has the larger per-row margin; `none` is the in-context baseline
    in_context = [_arm("in_context", "none", base), _arm("in_context", "uncertainty", [b + 0.1 for b in base])]
    assert default_winners(in_context, per_row, "paper") == ["uncertainty", "none"]
    # a `none` that does not beat `paper` by 2 SE per row keeps the default
    per_row[0] = _arm("per_row", "none", [0.60, 0.50, 0.40, 0.70])
    assert default_winners([], per_row, "paper") == []


PREVIOUS_PAGE = """# Loss weighting

Headline: x

## In context: the shipped tab2d checkpoint, continued 60 steps

| weighting | R2 |
| --- | ---: |
| none | 0.264 |

## Fine-tuned per table: 150 steps

| weighting | R2 |

## Decision

old
- command: python -m benchmarks.loss_weighting 
- commit: abc1234
- date: 2026-12-07 13:13 UTC
"""


def test_a_per_row_only_page_carries_the_in_context_section_over_and_names_the_run_it_comes_from():
    from benchmarks.loss_weighting import carried_in_context

    section = carried_in_context(PREVIOUS_PAGE)
    lines = section.splitlines()
    assert lines[0] == "## In context: the shipped tab2d checkpoint, continued 60 steps"
    assert lines[2] == ("Carried over unchanged from the run of 2026-12-07 13:13 UTC at commit abc1234 "
                        "(`python -m benchmarks.loss_weighting`): this run did not train the in-context arm "
                        "(`--parts per-row`).")
    assert "| none | 0.264 |" in lines and not any("Fine-tuned" in line or "Decision" in line for line in lines)
    # carried a second time it keeps naming the run that measured it, not the per-row run that carried it
    before, rest = PREVIOUS_PAGE.split("## In context", 1)
    again = before + section + "\n\n## Fine-tuned" + rest.split("## Fine-tuned", 1)[1]
    again = again.replace("commit: abc1234", "commit: def5678")
    assert carried_in_context(again) == section
    assert carried_in_context("# A page\n\n## Decision\n") is None


def test_the_per_row_part_alone_runs_the_chosen_weightings_and_the_default(tmp_path):
    from benchmarks.loss_weighting import main

    (tmp_path / "loss_weighting.md").write_text(PREVIOUS_PAGE)
    assert main(["--parts", "per-row", "--weightings", "none", "--per-row-tasks", "1", "--per-row-steps", "2",
                 "--out", str(tmp_path), "--no-mlflow"]) == 0
    page = (tmp_path / "loss_weighting.md").read_text()
    assert "Carried over unchanged from the run of 2026-12-07 13:13 UTC at commit abc1234" in page
    assert "| none | 0.264 |" in page  # the in-context table, as it was
    assert "2 full-batch steps" in page and "The first 1 held-out prior tasks (seed 36)" in page
    per_row = page.split("## Fine-tuned", 1)[1].split("## Decision", 1)[0]
    rows = [line.split(" | ")[0] for line in per_row.splitlines() if line.startswith("| ") and
            not line.startswith(("| weighting", "| ---"))]
    assert rows == ["| none", "| paper"]  # `paper`, the default, is always compared; nothing else was asked for
    assert "per-row fine-tuned (1 tasks): none" in page and (tmp_path / "loss_weighting.png").exists()
