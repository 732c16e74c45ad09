"""Synthetic priors: seeded generators, column treatments, degenerate-task rejection, the episode contract,
curriculum shapes and the config section. Small tasks only: the whole file runs in seconds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from basisfm.config import PriorConfig, RunConfig, from_dict, load_config
from basisfm.corpus.manifest import ColumnKind
from basisfm.errors import ConfigError
from basisfm.priors import ChunkShape, PriorSampler, draw_shape, generate_chunk
from basisfm.priors.banks import category_bank, name_bank
from basisfm.priors.columns import TaskChunk, _missing_cells
from basisfm.priors.draws import Draws
from basisfm.priors.filters import screen

SMALL = PriorConfig(min_rows=24, max_rows=64, min_features=2, max_features=6, tasks_per_chunk=8)


def _chunk_tensors(chunk: TaskChunk) -> dict[str, torch.Tensor]:
    return {f.name: getattr(chunk, f.name) for f in dataclasses.fields(chunk) if isinstance(getattr(chunk, f.name), torch.Tensor)}


@pytest.mark.parametrize("generator", ["mlp", "tree"])
def test_a_chunk_is_a_function_of_its_seed(generator):
    shape = ChunkShape(generator, n_rows=40, n_features=5, n_targets=2)
    a, b = (generate_chunk(SMALL, 123, shape, 6) for _ in range(2))
    for name, tensor in _chunk_tensors(a).items():
        assert torch.equal(tensor, _chunk_tensors(b)[name]), name
    other = generate_chunk(SMALL, 124, shape, 6)
    assert not torch.equal(a.values, other.values)
    assert a.values.shape == (6, 40, 7) and a.is_target.sum(1).tolist() == [2] * 6


def test_sampler_streams_repeat_from_the_same_seed_and_differ_between_seeds():
    first = [e.values for e in PriorSampler(SMALL, seed=5).sample(6)]
    again = [e.values for e in PriorSampler(SMALL, seed=5).sample(6)]
    other = [e.values for e in PriorSampler(SMALL, seed=6).sample(6)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(first, other))


def test_episodes_follow_the_table_batch_contract():
    sampler = PriorSampler(SMALL, seed=0)
    names = name_bank(SMALL.name_bank_size, 384, SMALL.bank_seed)
    categories = category_bank(SMALL.category_bank_size, 384, SMALL.bank_seed)
    episodes = sampler.sample(24)
    assert sampler.stats.accepted >= 24 and sampler.stats.generated == sampler.stats.accepted + sampler.stats.rejected
    for e in episodes:
        r, c = e.values.shape
        assert SMALL.min_rows <= r <= SMALL.max_rows
        targets = e.target_mask.any(0)
        # The target columns are marked in every row; support rows are context, the rest are queries.
        assert torch.equal(e.target_mask, targets.unsqueeze(0).expand(r, c))
        assert 2 <= e.n_support < r and e.query_target_mask.any()
        assert torch.equal(e.row_index, torch.arange(r))
        assert not (e.missing & e.target_mask).any()
        assert set(e.column_kinds.tolist()) <= {int(ColumnKind.NUMERIC), int(ColumnKind.CATEGORICAL), int(ColumnKind.BOOLEAN)}
        assert e.column_name_embeddings.shape == (c, 384) and e.vocab_embeddings.shape[1] == 384
        for j in range(c):
            name = e.column_names[j]
            expected = torch.zeros(384) if name == "" else names[int(name[1:])]
            assert torch.equal(e.column_name_embeddings[j], expected)
            present = ~e.missing[:, j]
            if e.column_kinds[j] == ColumnKind.CATEGORICAL:
                ids = e.string_ids[present, j]
                assert (ids >= 0).all() and (ids < len(e.vocab)).all() and (e.values[:, j] == 0).all()
            else:
                assert (e.string_ids[:, j] == -1).all() and torch.isfinite(e.values[:, j]).all()
                in_support = present & e.support
                if targets[j] and in_support.sum() > 1:
                    support_values = e.values[in_support, j]
                    assert torch.isclose(e.column_mean[j], support_values.mean(), rtol=1e-6, atol=1e-9)
                    assert torch.isclose(e.column_std[j], support_values.std(unbiased=False), rtol=1e-6)
        for label, vector in zip(e.vocab, e.vocab_embeddings):
            assert torch.equal(vector, categories[int(label[1:])])
        if e.column_kinds[targets].eq(int(ColumnKind.CATEGORICAL)).any():
            assert e.string_ids[e.support][:, targets].unique().numel() >= 2  # the support shows 2+ classes


def test_the_prior_makes_the_variety_it_promises():
    config = dataclasses.replace(SMALL, multi_target_fraction=0.5, missing_task_fraction=0.6, classification_fraction=0.4)
    episodes = PriorSampler(config, seed=1).sample(80)
    kinds = {k for e in episodes for k in e.column_kinds.tolist()}
    assert kinds == {int(ColumnKind.NUMERIC), int(ColumnKind.CATEGORICAL), int(ColumnKind.BOOLEAN)}
    assert {e.table_id.split("/")[1] for e in episodes} == {"mlp", "tree"}
    n_targets = [int(e.target_mask.any(0).sum()) for e in episodes]
    assert min(n_targets) == 1 and max(n_targets) >= 2
    assert any(e.missing.any() for e in episodes) and any(not e.missing.any() for e in episodes)
    classification = [e for e in episodes if (e.column_kinds[e.target_mask.any(0)] == ColumnKind.CATEGORICAL).any()]
    assert classification and len(classification) < len(episodes)
    assert any(e.column_names[0] == "" for e in episodes) and any(e.column_names[0] != "" for e in episodes)
    # Skewed columns: some numeric column's mean sits far from its median (in its own spread).
    skews = [float(((v.mean() - v.median()) / v.std()).abs()) for e in episodes for j in range(e.n_columns)
             if e.column_kinds[j] == ColumnKind.NUMERIC and (v := e.values[~e.missing[:, j], j]).std() > 0]
    assert max(skews) > 0.5
    # Categorical columns never have more levels than allowed.
    levels = [int(e.string_ids[:, j][e.string_ids[:, j] >= 0].unique().numel()) for e in episodes
              for j in range(e.n_columns) if e.column_kinds[j] == ColumnKind.CATEGORICAL]
    assert max(levels) <= max(config.max_categories, config.max_classes)


def test_missing_not_at_random_depends_on_the_value_and_at_random_does_not():
    z = torch.randn(1, 4000, 3, generator=torch.Generator().manual_seed(0)).expand(16, -1, -1).contiguous()
    no_target = torch.zeros(16, 3, dtype=torch.bool)
    for fraction, dependent in ((1.0, True), (0.0, False)):
        config = PriorConfig(missing_task_fraction=1.0, max_missing_rate=0.5, mnar_fraction=fraction)
        mask = _missing_cells(Draws.from_seed(0), config, z, no_target)
        gaps = [abs(float(z[b, mask[b, :, j], j].mean() - z[b, ~mask[b, :, j], j].mean()))
                for b in range(16) for j in range(3) if 400 < mask[b, :, j].sum() < 3600]
        assert len(gaps) >= 10
        # A gap of mean latent values between missing and present cells: ~0.05 by chance with 400+ cells each.
        assert (np.median(gaps) > 0.3) if dependent else (np.median(gaps) < 0.1)


def _chunk(values: torch.Tensor, kinds: list[int], labels: torch.Tensor | None = None) -> TaskChunk:
    b, n, c = values.shape
    support = torch.zeros(b, n, dtype=torch.bool)
    support[:, : n // 2] = True
    is_target = torch.zeros(b, c, dtype=torch.bool)
    is_target[:, 0] = True
    return TaskChunk(generator="test", seed=0, values=values, missing=torch.zeros(b, n, c, dtype=torch.bool),
                     labels=labels if labels is not None else torch.full((b, n, c), -1),
                     label_base=torch.zeros(b, c, dtype=torch.long), kinds=torch.tensor([kinds] * b),
                     is_target=is_target, names=torch.full((b, c), -1), support=support)


def test_screen_rejects_constant_and_unpredictable_targets_and_keeps_learnable_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 200, 3, generator=g)
    y = torch.stack([
        x[0, :, 0] * 2 - x[0, :, 1],  # linear in the features: learnable
        torch.sin(3 * x[1, :, 1]),  # nonlinear, kNN finds it
        torch.full((200,), 7.0),  # constant
        torch.randn(200, generator=g),  # independent noise: nothing predicts it
    ]).unsqueeze(2)
    chunk = _chunk(torch.cat([y, x], dim=2), [int(ColumnKind.NUMERIC)] * 4)
    keep, counts = screen(chunk, min_learnability=0.05)
    assert keep.tolist() == [True, True, False, False]
    assert (counts.generated, counts.accepted, counts.constant_target, counts.unlearnable) == (4, 2, 1, 1)


def test_screen_scores_classification_targets_against_the_majority_class():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 300, 2, generator=g)
    classes = torch.stack([(x[0, :, 0] > 0).long(), torch.randint(0, 2, (300,), generator=g)])  # learnable, coin flips
    labels = torch.full((2, 300, 3), -1)
    labels[:, :, 0] = classes
    values = torch.cat([torch.zeros(2, 300, 1), x], dim=2)
    chunk = _chunk(values, [int(ColumnKind.CATEGORICAL), 0, 0], labels)
    keep, counts = screen(chunk, min_learnability=0.05)
    assert keep.tolist() == [True, False] and counts.unlearnable == 1


def test_curriculum_grows_rows_and_features_and_shapes_respect_the_cell_budget():
    config = PriorConfig(min_rows=16, max_rows=512, min_features=2, max_features=40, curriculum="linear",
                         curriculum_steps=100, curriculum_start_rows=32, curriculum_start_features=4)
    rng = np.random.default_rng(0)
    early = [draw_shape(config, rng, 0.0, None) for _ in range(200)]
    late = [draw_shape(config, rng, 1.0, None) for _ in range(200)]
    assert max(s.n_rows for s in early) <= 32 and max(s.n_features for s in early) <= 4
    assert max(s.n_rows for s in late) > 256 and max(s.n_features for s in late) > 20
    budgeted = [draw_shape(config, rng, 1.0, 1024) for _ in range(200)]
    assert all(s.n_rows * (s.n_features + s.n_targets) <= 1024 for s in budgeted)
    sampler = PriorSampler(config, seed=0)
    sampler.set_step(50)
    assert sampler.progress == 0.5


def test_prior_config_is_validated_and_loaded_like_the_others():
    config = load_config(None, ["priors.max_rows=128", "data.prior_fraction=0.25", "priors.curriculum=linear"])
    assert isinstance(config, RunConfig) and config.priors.max_rows == 128 and config.data.prior_fraction == 0.25
    bad = {
        "priors.min_rows": {"priors": {"min_rows": 300}},
        "priors.mlp_weight": {"priors": {"mlp_weight": 0.0, "tree_weight": 0.0}},
        "data.prior_fraction": {"data": {"prior_fraction": 1.5}},
        "priors.curriculum": {"priors": {"curriculum": "cosine"}},
        "priors.max_layrs": {"priors": {"max_layrs": 3}},
    }
    for key, raw in bad.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            from_dict(raw)
    # A prior episode must fit the batch budget real batches obey (only checked when priors are mixed in).
    too_big = {"data": {"token_budget": 64, "min_rows": 4, "prior_fraction": 0.5}, "priors": {"min_rows": 32}}
    with pytest.raises(ConfigError, match="token_budget"):
        from_dict(too_big)
    from_dict({**too_big, "data": {**too_big["data"], "prior_fraction": 0.0}})


def test_quantising_cuts_each_chosen_column_into_at_most_its_levels_in_value_order():
    from basisfm.priors.columns import _quantise

    x = torch.randn(3, 500, 4, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([[2, 5, 12, 3]] * 3)
    columns = torch.tensor([[0, 0], [0, 1], [1, 2], [2, 3]])
    codes = _quantise(Draws.from_seed(0), x, levels, columns, max_levels=12)
    for task, col in columns.tolist():
        c, v = codes[task, :, col], x[task, :, col]
        assert 2 <= c.unique().numel() <= int(levels[task, col]) and c.min() == 0
        order = torch.argsort(v)
        assert (c[order].diff() >= 0).all()  # codes rise with the value (relabelling happens afterwards)
    assert (codes[1, :, :2] == 0).all() and (codes[0, :, 2:] == 0).all()  # untouched columns stay 0


# Seed 7's chunks, pinned: the same seed must give the same tasks on every machine (discrete structure exactly,
# values up to float rounding). A deliberate change to the generators changes these; update them with it.
PINNED = {
    "mlp": ([[0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 0, 0]], [3, 1, 1], [24, 13, 13], 0,
            [[3921.0, 88.0291, 1293.5431, 4720.4393, 0.72107384], [3576.5852, 0.0, 1055.416, 0.0, 23.270564],
             [7.7216723, 0.0, 64219.0, 1255.6119, 232.20123]]),
    "tree": ([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], [4, 3, 1], [21, 15, 23], 0,
             [[0.0, 156615.24, 0.0, 0.0, 17.113904], [3.1864217, 4.7357152, 0.0, 13.304901, 0.36541579],
              [0.52757977, 2025.3447, 8.7492327, 6194.3095, 0.0]]),
}


@pytest.mark.parametrize("generator", sorted(PINNED))
def test_a_seed_gives_the_same_tasks_on_any_machine(generator):
    kinds, target, n_support, n_missing, abs_sums = PINNED[generator]
    chunk = generate_chunk(PriorConfig(), 7, ChunkShape(generator, 30, 4, 1), 3)
    assert chunk.kinds.tolist() == kinds
    assert chunk.target_positions()[:, 0].tolist() == target
    assert chunk.support.sum(1).tolist() == n_support and int(chunk.missing.sum()) == n_missing
    assert torch.allclose(chunk.values.double().abs().sum(1), torch.tensor(abs_sums, dtype=torch.float64), rtol=1e-5)


def test_noise_features_replace_a_drawn_share_of_columns_with_values_unrelated_to_anything():
    from basisfm.priors.scm import with_noise_features

    latent = torch.randn(64, 400, 1)
    features = latent.expand(64, 400, 8).clone()  # every column is the same node: perfectly related
    draws = Draws.from_seed(3)
    state = draws.rng.bit_generator.state
    assert with_noise_features(draws, SMALL, features) is features  # fraction 0: untouched, nothing drawn
    assert draws.rng.bit_generator.state == state

    noisy = with_noise_features(draws, dataclasses.replace(SMALL, max_noise_feature_fraction=1.0), features)
    centred = noisy - noisy.mean(1, keepdim=True)
    corr = (centred * (latent - latent.mean(1, keepdim=True))).mean(1) / (centred.std(1, unbiased=False) * latent.std(1, unbiased=False))
    kept, replaced = corr > 0.999, corr.abs() < 0.25  # [64, 8]
    assert bool((kept | replaced).all())  # a column is either the node as it was or noise
    assert bool(kept[:, 0].all())  # no task is noise alone
    share = replaced.float().mean().item()  # a share drawn uniformly in [0, 1] per task, of 7 of 8 columns
    assert 0.3 < share < 0.6, share
    assert 0 < int(replaced.sum(1).min()) or int(replaced.sum(1).max()) > 4  # tasks differ in how many
    with pytest.raises(ConfigError, match=r"priors\.max_noise_feature_fraction"):
        from_dict({"priors": {"max_noise_feature_fraction": 1.5}})


def _r2_of_least_squares(design: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[B] in-sample R^2 of each task's least-squares fit of y [B, N, 1] on design [B, N, P] plus an intercept."""
    design = torch.cat([design, torch.ones_like(design[..., :1])], dim=2).double()
    coef = torch.linalg.lstsq(design, y.double()).solution
    residual = y.double() - design @ coef
    return 1 - residual.pow(2).mean(1).squeeze(1) / y.double().var(1, unbiased=False).squeeze(1)


def test_additive_targets_are_a_curve_of_each_feature_summed_plus_noise_on_the_drawn_share_of_tasks():
    from basisfm.priors.scm import ADDITIVE_CURVES, with_additive_targets

    features = torch.randn(256, 300, 6)
    targets = torch.randn(256, 300, 1)  # unrelated to the features
    draws = Draws.from_seed(4)
    state = draws.rng.bit_generator.state
    assert with_additive_targets(draws, SMALL, features, targets) is targets  # fraction 0: untouched, nothing drawn
    assert draws.rng.bit_generator.state == state

    half = dataclasses.replace(SMALL, additive_target_fraction=0.5)
    out = with_additive_targets(draws, half, features, targets)
    replaced = ~(out == targets).all(1).squeeze(1)  # [B]
    assert 0.35 < replaced.float().mean().item() < 0.65
    # Every curve of every feature as a regressor: an additive target is explained up to its noise (std at most
    # 1 against a unit signal, so R^2 above 0.5, and above 0.99 for the quietest), an untouched one is not.
    basis = torch.cat([fn(features) for _, fn in ADDITIVE_CURVES.values()], dim=2)
    r2 = _r2_of_least_squares(basis, out)
    assert bool((r2[replaced] > 0.45).all()) and float(r2[replaced].max()) > 0.99
    assert float(r2[~replaced].max()) < 0.3
    # The identity is the likeliest curve: a linear fit alone explains most additive targets well.
    assert float(_r2_of_least_squares(features, out)[replaced].median()) > 0.5
    with pytest.raises(ConfigError, match=r"priors\.additive_target_fraction"):
        from_dict({"priors": {"additive_target_fraction": -0.1}})


def test_a_prior_with_additive_targets_still_makes_valid_seeded_episodes():
    config = dataclasses.replace(SMALL, additive_target_fraction=1.0)
    shape = ChunkShape("tree", n_rows=48, n_features=4, n_targets=1)
    a, b = (generate_chunk(config, 9, shape, 6) for _ in range(2))
    assert torch.equal(a.values, b.values)
    assert not torch.equal(a.values, generate_chunk(SMALL, 9, shape, 6).values)
    assert len(PriorSampler(config, seed=2).sample(4)) == 4
