"""Printing ownership: library calls return their summaries, the job prints each one once."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from basisfm.config import RunConfig


class _Summarised(SimpleNamespace):
    def summary(self, *args) -> str:
        return self.text


@pytest.fixture
def staged(monkeypatch, tmp_path):
    """The demo's three stages replaced by fakes whose summaries are recognisable strings."""
    import basisfm.corpus.ingest
    import basisfm.train

    monkeypatch.setattr(basisfm.corpus.ingest, "ingest", lambda config: _Summarised(tables=3, text="INGEST-SUMMARY"))
    monkeypatch.setattr(basisfm.train, "pretrain", lambda config: _Summarised(registered_version="4", text="PRETRAIN-SUMMARY"))
    monkeypatch.setattr(basisfm.train, "promote_registered", lambda config, version: _Summarised(
        text="PROMOTION-SUMMARY", promoted=True, candidate_version=version, champion_version=None))
    config = RunConfig()
    config.tracking.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return config


def test_the_demo_returns_its_summaries_and_prints_none_of_them(staged, capsys):
    from basisfm.workflow import run_demo

    summary = run_demo(staged)
    printed = capsys.readouterr().out
    assert "[1/3] ingest" in printed and "[3/3] promote" in printed  # progress, not results
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
    monkeypatch.setattr(basisfm.train, "pretrain", lambda config: _Summarised(checkpoint_dir=checkpoint, text="PRETRAIN-SUMMARY"))
    monkeypatch.setattr(sys, "argv", ["jobs.pretrain", "--steps", "30"])
    assert jobs.pretrain.main() == 0
    assert capsys.readouterr().out.count("PRETRAIN-SUMMARY") == 1
