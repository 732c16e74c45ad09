"""The binned (distributional) regression head: HL-Gauss targets, mean and quantile read-outs."""

import math

import pytest
import torch

from basisfm.model.distribution import TargetScale, ZBins


def test_soft_targets_sum_to_one_and_peak_at_the_truth():
    bins = ZBins(n_bins=32, z_max=4.0)
    z = torch.tensor([-3.9, -0.3, 0.0, 2.2, 9.0])  # 9.0 lies beyond z_max: clamped into the edge bin
    target = bins.soft_targets(z)
    assert torch.allclose(target.sum(-1), torch.ones(5), atol=1e-5)
    centres = bins.centers()
    peak = centres[target.argmax(-1)]
    assert torch.all((peak - z.clamp(-4, 4)).abs() <= bins.width)


def test_training_the_logits_recovers_mean_and_quantiles_of_a_normal():
    torch.manual_seed(0)
    bins = ZBins(n_bins=64, z_max=5.0)
    logits = torch.zeros(1, 64, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(300):
        z = torch.randn(512) * 0.8 + 0.5
        loss = bins.loss(logits.expand(512, -1), z).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(float(bins.mean(logits.detach())) - 0.5) < 0.1
    q = bins.quantiles(logits.detach(), [0.1, 0.5, 0.9])[0]
    assert abs(float(q[1]) - 0.5) < 0.15
    # a normal's 10-90% interval is 2 x 1.2816 sigma wide
    assert abs(float(q[2] - q[0]) - 2 * 1.2816 * 0.8) < 0.3
    assert bool((q[1:] > q[:-1]).all())


def test_quantile_levels_are_checked():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ZBins().quantiles(torch.zeros(2, 128), [0.0, 0.5])


def test_target_scale_round_trips_and_refuses_overflow():
    scale = TargetScale.fit([1.0, 2.0, 3.0, float("nan")])
    y = torch.tensor([1.0, 2.5])
    assert torch.allclose(scale.from_z(scale.to_z(y)), y.double())
    assert TargetScale.fit([7.0, 7.0]).std == 1.0  # a constant target keeps a unit scale
    with pytest.raises(ValueError, match="too large"):
        TargetScale.fit([1e308, -1e308])
    assert math.isfinite(TargetScale.fit([1e150, -1e150]).std)
