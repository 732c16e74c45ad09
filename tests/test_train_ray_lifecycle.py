"""pretrain's Ray launcher shuts down a cluster it started (so its workers' log lines do not print after a job's
summary) and leaves one it joined; without starting Ray: the cluster calls are recorded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray

from basisfm.config import load_config
from basisfm.train import trainer


class _FailingTrainer:
    def fit(self):
        raise RuntimeError("a worker died")


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "ensure_ray", lambda config: calls.append("ensure_ray"))
    monkeypatch.setattr(trainer, "build_trainer", lambda config, **kwargs: _FailingTrainer())
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    return calls


def _launch():
    config = load_config(None)
    logger = SimpleNamespace(tracking_uri=None, run_id=None)
    with pytest.raises(RuntimeError, match="a worker died"):
        trainer._launch_ray(config, run_dir=None, model_dir=None, logger=logger)


def test_a_cluster_the_launcher_started_is_shut_down_even_when_training_fails(recorded, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    _launch()
    assert recorded == ["ensure_ray", "shutdown"]


def test_a_cluster_already_running_is_left_up(recorded, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    _launch()
    assert recorded == ["ensure_ray"]
