"""Mixing prior episodes into a worker's real batches, and the sample writer behind `jobs.priors --show`."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch

from basisfm.config import load_config
from basisfm.corpus.manifest import ColumnKind
from basisfm.data.batch import TableBatch
from basisfm.priors import mix_prior_episodes

SMALL = ["priors.min_rows=16", "priors.max_rows=48", "priors.max_features=5", "priors.tasks_per_chunk=8",
         "priors.curriculum_start_rows=16", "priors.curriculum_start_features=2"]


def _real(i: int) -> TableBatch:
    r, c = 4, 2
    return TableBatch(
        table_id=f"real/{i}", column_names=["a", "b"], column_kinds=torch.zeros(c, dtype=torch.long),
        column_name_embeddings=torch.zeros(c, 384), column_abs_max=torch.ones(c, dtype=torch.float64),
        column_min_nonzero=torch.ones(c, dtype=torch.float64), values=torch.ones(r, c, dtype=torch.float64),
        missing=torch.zeros(r, c, dtype=torch.bool), string_ids=torch.full((r, c), -1), vocab=[],
        vocab_embeddings=torch.zeros(0, 384), target_mask=torch.zeros(r, c, dtype=torch.bool),
    )


def _reals():
    return (_real(i) for i in itertools.count())


def _ids(fraction: float, n: int, rank: int = 0, seed: int = 0) -> list[str]:
    config = load_config(None, SMALL + [f"data.prior_fraction={fraction}", f"priors.seed={seed}"])
    return [b.table_id for b in itertools.islice(mix_prior_episodes(_reals(), config, rank=rank), n)]


def test_fraction_zero_passes_real_batches_through_and_builds_no_sampler():
    config = load_config(None, SMALL)
    real = [_real(i) for i in range(5)]
    mix = mix_prior_episodes(real, config)
    assert list(mix) == real and mix.sampler is None


def test_fraction_one_never_reads_the_real_stream():
    def exploding():
        raise AssertionError("the real stream was read")
        yield

    config = load_config(None, SMALL + ["data.prior_fraction=1.0"])
    batches = list(itertools.islice(mix_prior_episodes(exploding(), config), 6))
    assert all(b.table_id.startswith("prior/") and b.n_support > 0 for b in batches)


def test_mix_follows_the_fraction_reproducibly_per_rank_and_ends_with_the_real_stream():
    ids = _ids(0.3, 200)
    share = sum(i.startswith("prior/") for i in ids) / len(ids)
    assert 0.2 < share < 0.4
    real_ids = [i for i in ids if i.startswith("real/")]
    assert real_ids == [f"real/{k}" for k in range(len(real_ids))]  # real batches keep their order
    assert ids == _ids(0.3, 200)  # same seed and rank: the same stream
    assert ids != _ids(0.3, 200, rank=1) and ids != _ids(0.3, 200, seed=1)
    config = load_config(None, SMALL + ["data.prior_fraction=0.5"])
    assert sum(not b.table_id.startswith("prior/") for b in mix_prior_episodes([_real(0), _real(1)], config)) == 2


def test_curriculum_follows_the_training_step_estimated_from_batches():
    config = load_config(None, SMALL + ["data.prior_fraction=1.0", "priors.curriculum=linear", "priors.curriculum_steps=10",
                                       "priors.curriculum_start_rows=16", "train.micro_batch_tables=2"])
    mix = mix_prior_episodes(_reals(), config, start_step=3)
    next(mix)
    assert mix.sampler.step == 3
    for _ in range(4):
        next(mix)
    assert mix.sampler.step == 5  # 3 + 4 batches yielded before this one // 2 per step
    packed = load_config(None, SMALL + ["data.prior_fraction=1.0", "priors.curriculum=linear", "priors.curriculum_steps=10",
                                       "priors.curriculum_start_rows=16", "train.micro_batch_tables=2", "train.pack_tables=4"])
    mix = mix_prior_episodes(_reals(), packed, start_step=3)
    for _ in range(9):
        next(mix)
    assert mix.sampler.step == 4  # 3 + 8 tables yielded before the ninth // (2 micro-batches x 4 tables) per step
    later = mix_prior_episodes(_reals(), config, start_step=10)
    sizes = [next(later).n_rows for _ in range(20)]
    assert max(sizes) > 16


def test_priors_job_writes_csv_tasks_and_a_figure(tmp_path, capsys, monkeypatch):
    import sys

    from jobs import priors as job

    monkeypatch.setattr(sys, "argv", ["jobs.priors", "--show", "3", "--out", str(tmp_path)] + [a for s in SMALL for a in ("--set", s)])
    with pytest.raises(SystemExit) as exit_info:
        job.run_main(job.main)
    assert exit_info.value.code == 0
    files = sorted(tmp_path.glob("task_*.csv"))
    assert len(files) == 3 and (tmp_path / "tasks.png").stat().st_size > 10_000
    frame = pd.read_csv(files[0])
    assert "split" in frame and set(frame["split"]) == {"support", "query"}
    assert any(c.startswith("y") for c in frame.columns) and any(c.startswith("x") for c in frame.columns)
    assert "rejected" in capsys.readouterr().out


def test_episode_frame_shows_category_labels_and_missing_cells():
    from basisfm.priors import PriorSampler
    from basisfm.priors.show import episode_frame

    config = load_config(None, SMALL + ["priors.max_categorical_fraction=1.0", "priors.missing_task_fraction=1.0",
                                       "priors.max_missing_rate=0.5", "priors.boolean_fraction=0.0"])
    episode = next(e for e in PriorSampler(config.priors, seed=2).sample(8)
                   if (e.column_kinds == ColumnKind.CATEGORICAL).any() and e.missing.any())
    frame = episode_frame(episode)
    assert len(frame) == episode.n_rows
    j = int((episode.column_kinds == ColumnKind.CATEGORICAL).nonzero()[0])
    shown = frame.iloc[:, j]
    assert shown.dropna().str.fullmatch(r"c\d{4}").all()
    assert int(frame.drop(columns="split").isna().sum().sum()) == int(episode.missing.sum())


def test_prior_episodes_go_through_the_pretraining_objective():
    from basisfm.losses import build_objective
    from basisfm.model import build_model
    from basisfm.priors import PriorSampler

    config = load_config(None, SMALL + ["priors.multi_target_fraction=0.5", "priors.missing_task_fraction=0.7",
                                       "priors.classification_fraction=0.5"])
    torch.manual_seed(0)
    objective = build_objective(build_model(config.model), config.model, config.loss)
    seen = set()
    for episode in PriorSampler(config.priors, seed=3).sample(8):
        result = objective(episode)
        assert torch.isfinite(result.loss)
        result.loss.backward()
        seen |= {k for k in result.metrics if k in ("numeric_bit_loss", "categorical_loss")}
    assert seen == {"numeric_bit_loss", "categorical_loss"}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())
