"""The shared regression loss and read-out: binned (standardised bins) and SMR bits, quantiles from both."""

from __future__ import annotations

import pytest
import torch

from basisfm.config import LossConfig, ModelConfig
from basisfm.losses import bit_quantiles, build_objective, decode_numeric, numeric_targets, regression_loss
from basisfm.model import build_model
from test_model_support import single_thread, synthetic_batch  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_binned_loss_and_read_out_use_the_batch_scale():
    torch.manual_seed(0)
    model = build_model(ModelConfig(regression_head="binned", n_bins=64, z_max=4.0))
    batch = synthetic_batch(n_rows=10, n_numeric=3, n_categorical=1)
    out = model(batch)
    assert out.bit_logits is None and out.value_logits.shape == (len(out.target_rows), 64)
    keep = numeric_targets(out, batch)
    loss = regression_loss(model, out, batch)
    assert loss.shape == (int(keep.sum()),) and torch.isfinite(loss).all()
    rows, cols = out.target_rows[keep], out.target_columns[keep]
    z = (batch.values[rows, cols] - batch.column_mean[cols]) / batch.column_std[cols]
    assert torch.allclose(loss, model.bins.loss(out.value_logits[keep], z.float()))
    loss.mean().backward()  # differentiable

    point, q = decode_numeric(model, out, batch, quantiles=[0.1, 0.5, 0.9])
    assert point.dtype == torch.float64 and q.shape == (len(point), 3)
    assert point[~out.is_numeric].isnan().all() and torch.isfinite(point[out.is_numeric]).all()
    expected = model.bins.mean(out.value_logits).double() * batch.column_std[out.target_columns] + batch.column_mean[out.target_columns]
    assert torch.allclose(point[out.is_numeric], expected[out.is_numeric])
    assert (q[out.is_numeric].diff(dim=-1) >= 0).all()
    # a column ten times wider, shifted: the same logits read out ten times wider, shifted
    wider = batch.__class__(**{**batch.__dict__, "column_mean": batch.column_mean + 5.0, "column_std": batch.column_std * 10})
    point_wide, _ = decode_numeric(model, out, wider)
    centred = (point - batch.column_mean[out.target_columns]) * 10 + batch.column_mean[out.target_columns] + 5.0
    assert torch.allclose(point_wide[out.is_numeric], centred[out.is_numeric])


def test_bit_quantiles_match_sampling_from_the_bits():
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    codec = model.codec
    top, low = torch.tensor([5, 3]), torch.tensor([-2, -4])
    p = torch.rand(2, codec.n_bits, dtype=torch.float64)
    p[:, 0] = torch.tensor([0.3, 0.0])  # one value may be negative, the other is positive for sure
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    q = bit_quantiles(codec, p, top, low, levels)
    draws = (torch.rand(200_000, 2, codec.n_bits, dtype=torch.float64) < p).double()
    samples = codec.decode(draws, top, low)  # [S, 2]
    empirical = torch.quantile(samples, torch.tensor(levels, dtype=torch.float64), dim=0).T
    spread = samples.std(0, keepdim=True).T
    assert ((q - empirical).abs() < 0.05 * spread).all(), (q, empirical)
    assert (q.diff(dim=-1) >= 0).all()
    with pytest.raises(ValueError, match="strictly between"):
        bit_quantiles(codec, p, top, low, [0.0, 0.5])


def test_bits_read_out_gives_the_value_and_tight_quantiles_when_confident():
    model = build_model(ModelConfig()).eval()
    batch = synthetic_batch()
    with torch.no_grad():
        model.heads.bit_head.weight.zero_()
        model.heads.bit_prior.weight.zero_()
        model.heads.bit_prior.bias.zero_()
        model.heads.bit_head.bias.copy_(torch.tensor([-30.0] + [30.0 if j % 2 == 0 else -30.0 for j in range(model.codec.width)]))
    out = model(batch)
    point, q = decode_numeric(model, out, batch, quantiles=[0.1, 0.9])
    keep = out.is_numeric
    lowest_bit = torch.exp2(out.window_low[keep].double())  # quantiles spread the mass within the last bit
    assert ((q[keep] - point[keep].unsqueeze(-1)).abs() <= lowest_bit.unsqueeze(-1)).all()


@pytest.mark.parametrize("head", ["smr_bits", "binned"])
def test_objective_trains_either_head(head):
    torch.manual_seed(0)
    config = ModelConfig(regression_head=head)
    objective = build_objective(build_model(config), config, LossConfig(weighting="paper"))
    batch = synthetic_batch(n_rows=12, n_numeric=4, n_categorical=2, scale=1000.0)
    result = objective(batch)
    assert torch.isfinite(result.loss)
    assert ("numeric_bit_loss" if head == "smr_bits" else "numeric_binned_loss") in result.metrics
    result.loss.backward()
    silent = [n for n, p in objective.model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []
    optimiser = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = objective(batch).loss
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert objective(batch).loss.item() < 0.7 * first
