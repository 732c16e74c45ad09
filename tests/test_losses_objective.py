"""Loss maths (paper reweighting, bit loss, MGDA solver, task weights) and the objective training a real model."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from basisfm.config import LossConfig, ModelConfig
from basisfm.data.batch import TableBatch
from basisfm.errors import ConfigError
from basisfm.losses import (
    GradientNormWeighting,
    UncertaintyWeighting,
    adaptive_weight,
    build_objective,
    min_norm_weights,
    relative_agreement,
    smr_bit_loss,
)
from basisfm.model import build_model
from test_model_support import HashEmbedder, single_thread, synthetic_batch  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_paper_relative_agreement_values():
    y = torch.tensor([300000.0, 500.0, 1.2e6], dtype=torch.float64)
    y_hat = torch.tensor([310000.0, 2500.0, 7e5], dtype=torch.float64)
    g = relative_agreement(y, y_hat, eps=1e-6)
    assert g[0].item() == pytest.approx(0.968, abs=5e-4)
    assert g[1].item() == pytest.approx(0.2, abs=1e-9)
    assert g[2].item() == pytest.approx(0.583, abs=5e-4)
    assert torch.allclose(relative_agreement(y_hat, y), g)  # symmetric


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.25, 0.5])
def test_paper_weight_spans_gamma_to_one_minus_gamma(gamma):
    y = torch.tensor([1.0, 1.0, 1.0, 5.0, -3.0], dtype=torch.float64)
    y_hat = torch.tensor([1.0, 1e12, 0.5, 1e-12, 3.0], dtype=torch.float64)
    w = adaptive_weight(y, y_hat, gamma)
    assert w[0].item() == pytest.approx(gamma)  # perfect: the floor
    assert w[1].item() == pytest.approx(1 - gamma, abs=1e-9)  # hopeless: the ceiling
    assert w[2].item() == pytest.approx(0.5 * (1 - 2 * gamma) + gamma)
    assert ((w >= gamma - 1e-12) & (w <= 1 - gamma + 1e-12)).all()
    with pytest.raises(ValueError, match="gamma"):
        adaptive_weight(y, y_hat, 0.6)


def test_bit_loss_is_mean_binary_cross_entropy_per_target():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    bits = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = torch.stack([F.binary_cross_entropy_with_logits(logits[i], bits[i]) for i in range(2)])
    assert torch.allclose(smr_bit_loss(logits, bits), expected)


def _brute_force_min_norm(gram, steps=200):
    """The best point of a fine grid on the 3-simplex, evaluated all at once."""
    i, j = torch.meshgrid(torch.arange(steps + 1), torch.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    points = torch.stack([i[keep], j[keep], steps - i[keep] - j[keep]], dim=-1).double() / steps
    values = ((points @ gram) * points).sum(-1)
    return values.min(), points[values.argmin()]


def test_min_norm_matches_closed_form_and_brute_force():
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.2, 1.0], dtype=torch.float64)
    grads = torch.stack([g1, g2])
    alpha = min_norm_weights(grads @ grads.T)
    closed = ((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1)
    assert alpha[0].item() == pytest.approx(closed.item(), abs=1e-6) and alpha.sum().item() == pytest.approx(1.0)
    opposite = torch.stack([g1, -g1])
    assert torch.allclose(min_norm_weights(opposite @ opposite.T), torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.manual_seed(0)
    three = torch.randn(3, 5, dtype=torch.float64)
    gram = three @ three.T
    alpha = min_norm_weights(gram)
    best_value, _ = _brute_force_min_norm(gram)
    assert (alpha >= 0).all() and alpha.sum().item() == pytest.approx(1.0)
    assert (alpha @ gram @ alpha).item() <= best_value.item() + 1e-9
    # optimality (KKT): every task with weight has the smallest directional derivative
    derivative = gram @ alpha
    assert (derivative[alpha > 1e-6] - derivative.min()).abs().max().item() < 1e-6


def test_uncertainty_weighting_gradient_vanishes_at_log_loss():
    # exp(-s) L + s has derivative 1 - exp(-s) L: zero exactly at s = log L, the learned optimum
    losses = torch.tensor([4.0, 0.25, 7.0])
    active = torch.tensor([True, True, False])
    weighting = UncertaintyWeighting(3)
    loss, weights = weighting(losses, active)
    loss.backward()
    assert torch.allclose(weighting.log_variance.grad, torch.tensor([1 - 4.0, 1 - 0.25, 0.0]))
    assert loss.item() == pytest.approx(4.25) and weights.tolist() == [1.0, 1.0, 0.0]
    with torch.no_grad():
        weighting.log_variance.copy_(losses.log())
    weighting.log_variance.grad = None
    loss, weights = weighting(losses, active)
    loss.backward()
    assert torch.allclose(weighting.log_variance.grad, torch.zeros(3), atol=1e-6)
    assert torch.allclose(weights[:2], 1 / losses[:2])


def test_gradient_norm_weighting_turns_down_the_loud_task():
    weighting = GradientNormWeighting(3, momentum=0.5)
    active = torch.tensor([True, True, False])
    losses = torch.tensor([1.0, 1.0, 0.0])
    _, w = weighting(losses, active, torch.tensor([10.0, 1.0, 0.0]))
    assert w[0] < w[1] and w[2] == 0 and w.sum().item() == pytest.approx(2.0)
    assert weighting.ema_norm.tolist()[:2] == [10.0, 1.0]  # first sighting initialises the average
    weighting(losses, active, torch.tensor([2.0, 1.0, 0.0]))
    assert weighting.ema_norm[0].item() == pytest.approx(6.0)


@pytest.fixture(scope="module")
def mixed_batch():
    return synthetic_batch(n_rows=12, n_numeric=4, n_categorical=2, scale=1000.0)


@pytest.mark.parametrize("weighting", ["none", "paper", "uncertainty", "gradient_norm", "mgda"])
def test_every_weighting_trains_with_one_backward(mixed_batch, weighting):
    torch.manual_seed(0)
    config = ModelConfig()
    objective = build_objective(build_model(config), config, LossConfig(weighting=weighting, task_buckets=2))
    result = objective(mixed_batch)
    assert result.loss.dim() == 0 and torch.isfinite(result.loss)
    result.loss.backward()  # the single backward; any per-task gradients were taken inside forward
    assert all(p.grad is not None for p in objective.model.parameters())
    assert result.numeric_pred.dtype == torch.float64 and result.numeric_pred.shape == result.numeric_true.shape
    assert len(result.numeric_column) == len(result.numeric_true) > 0
    assert result.metrics["categorical_targets"] > 0 and "categorical_accuracy" in result.metrics
    if weighting in ("uncertainty", "gradient_norm", "mgda"):
        weights = [v for k, v in result.metrics.items() if k.startswith("weight_")]
        assert weights and all(w >= 0 for w in weights)
    if weighting == "mgda":
        assert sum(weights) == pytest.approx(len(weights), rel=1e-4)
    # evaluation (no graph) must work for every weighting too
    with torch.no_grad():
        assert torch.isfinite(objective(mixed_batch).loss)


def test_paper_weighting_equals_the_hand_computed_loss(mixed_batch):
    torch.manual_seed(0)
    config = ModelConfig()
    model = build_model(config)
    objective = build_objective(model, config, LossConfig(weighting="paper", gamma=0.2, categorical_weight=0.5))
    result = objective(mixed_batch)
    out = model(mixed_batch)
    numeric = out.is_numeric
    y = mixed_batch.values[out.target_rows[numeric], out.target_columns[numeric]]
    top, low = out.window_top[numeric], out.window_low[numeric]
    bits, _ = model.codec.encode(y, top, low)
    y_hat = model.codec.expected_value(torch.sigmoid(out.bit_logits[numeric].double()), top, low)
    numeric_loss = (smr_bit_loss(out.bit_logits[numeric], bits) * adaptive_weight(y, y_hat, 0.2).float()).mean()
    cat = ~numeric
    truth = mixed_batch.string_ids[out.target_rows[cat], out.target_columns[cat]]
    category_loss = F.cross_entropy(out.category_logits[cat], truth)
    assert result.loss.item() == pytest.approx((numeric_loss + 0.5 * category_loss).item(), rel=1e-5)
    assert torch.equal(result.numeric_pred, y_hat)


def test_batch_without_usable_targets_gives_a_zero_loss_that_backpropagates(mixed_batch):
    config = ModelConfig()
    objective = build_objective(build_model(config), config, LossConfig())
    empty = mixed_batch.with_targets(torch.zeros_like(mixed_batch.target_mask))
    result = objective(empty)
    assert result.loss.item() == 0.0 and result.numeric_pred.numel() == 0
    result.loss.backward()


def test_build_objective_refuses_a_config_the_model_was_not_built_from():
    model = build_model(ModelConfig())
    with pytest.raises(ConfigError, match="numeric_encoding"):
        build_objective(model, ModelConfig(numeric_encoding="smr"), LossConfig())


def _mean_loss(objective, batches):
    objective.eval()
    with torch.no_grad():
        value = sum(objective(b).loss.item() for b in batches) / len(batches)
    objective.train()
    return value


@pytest.mark.slow
def test_tiny_model_loss_falls_on_the_tiny_corpus(tiny_corpus):
    """The whole path on real tables: manifest + shards -> table_to_batches -> model -> objective -> AdamW."""
    import pyarrow.parquet as pq

    from basisfm.config import DataConfig
    from basisfm.corpus.manifest import read_manifest
    from basisfm.data.collate import table_to_batches

    torch.manual_seed(0)
    batches: list[TableBatch] = []
    for record in read_manifest(tiny_corpus):
        table = pq.read_table(tiny_corpus / record.shard)
        batches += table_to_batches(table, record, DataConfig(token_budget=512), HashEmbedder(), seed=0)[:2]
    kinds = {int(k) for b in batches for k in b.column_kinds}
    assert len(kinds) >= 4  # numeric, categorical, text, datetime... all go through the model
    config = ModelConfig()
    objective = build_objective(build_model(config), config, LossConfig(weighting="none"))
    optimiser = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    before = _mean_loss(objective, batches)
    for step, batch in zip(range(60), itertools.cycle(batches)):
        loss = objective(batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _mean_loss(objective, batches)
    assert after < 0.8 * before, (before, after)


def test_among_several_ranks_every_parameter_gets_a_gradient_even_when_the_batch_leaves_it_out(monkeypatch):
    """A batch with no usable target backpropagates a zero that leaves the label projection (4,160 parameters) out of
    the graph. Among several data-parallel ranks (ZeRO-2 reduces gradients in buckets as they arrive) that rank's
    bucket was smaller than the other's, and gloo aborted `make demo`'s two Ray workers ("845632 vs 841472"); so each
    parameter gets a zero gradient there, and the loss is unchanged. Alone, the parameters left out keep no
    gradient, as before."""
    import basisfm.losses.objective as objective_module

    numeric_only = synthetic_batch(n_rows=12, n_numeric=4, n_categorical=1)
    numeric_only = numeric_only.with_targets(torch.zeros_like(numeric_only.target_mask))
    config = ModelConfig(architecture="tab2d")
    torch.manual_seed(0)
    objective = build_objective(build_model(config), config, LossConfig())
    alone = objective(numeric_only)
    alone.loss.backward()
    left_out = [name for name, p in objective.named_parameters() if p.grad is None]
    assert left_out  # the batch does leave some parameters out
    objective.zero_grad(set_to_none=True)
    monkeypatch.setattr(objective_module, "_several_ranks", lambda: True)
    among_ranks = objective(numeric_only)
    among_ranks.loss.backward()
    assert among_ranks.loss.item() == pytest.approx(alone.loss.item(), rel=1e-6)
    grads = dict(objective.named_parameters())
    assert all(grads[name].grad is not None and not grads[name].grad.any() for name in left_out)
