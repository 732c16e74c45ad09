"""benchmarks.large_tables: finds the suites' large tables, scores each reading beside CatBoost, writes its page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import large_tables as bench


def test_the_large_tables_are_found_from_the_suites_by_their_training_rows():
    names = {tid.split("/")[-1] for _, tid, *_ in bench.large_tasks(5_000, 0)}
    assert names == {"diamonds", "CPS1988", "loans_full_schema", "Computers", "deliveries", "Default"}
    assert {tid.split("/")[-1] for _, tid, *_ in bench.large_tasks(9_000, 0)} == {"diamonds", "CPS1988"}


def _task(n_train: int, n_test: int, classify: bool):
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"size": rng.normal(size=n_train + n_test), "grade": rng.choice(list("abcdef"), n_train + n_test)})
    y = 3 * x["size"] + (x["grade"] == "a")
    if classify:
        y = pd.Series(np.where(y > 0, "yes", "no"))
    y = y.rename("target")
    metric = "accuracy" if classify else "r2"
    return ("test_suite", "test/table", metric, x.iloc[:n_train], y.iloc[:n_train], x.iloc[n_train:], y.iloc[n_train:])


def test_a_quick_run_scores_every_reading_and_catboost_and_writes_the_page(tmp_path, monkeypatch):
    labels = _task(120, 20, True)
    monkeypatch.setattr(bench, "large_tasks", lambda min_rows, split: [_task(120, 20, False), labels[:1] + ("test/labels",) + labels[2:]])
    monkeypatch.setattr(bench, "READINGS", [("random 32 x1", dict(max_context=32, retrieval=False, n_estimators=1)),
                                            ("retrieval 32 x1", dict(max_context=32, retrieval=True, n_estimators=1))])
    monkeypatch.setattr(bench, "QUICK_READINGS", ("random 32 x1", "retrieval 32 x1"))
    with pytest.raises(SystemExit):
        bench.main(["--readings", "random 9 x9", "--no-mlflow"])
    assert bench.main(["--quick", "--queries", "20", "--out", str(tmp_path), "--no-mlflow"]) == 0
    page = (tmp_path / "large_tables.md").read_text()
    assert "| table | training rows | random 32 x1 | retrieval 32 x1 | catboost |" in page
    rows = [line for line in page.splitlines() if line.startswith("| test/")]
    assert len(rows) == 2 and all(line.count("x) |") == 2 for line in rows)
    assert "| test/table | 120 | " in page and "(1.00x)" in page
    assert (tmp_path / "large_tables.png").stat().st_size > 0
