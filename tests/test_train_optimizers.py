"""train.optimizer: LAMB, Sophia-G and Muon each minimise a small problem, and their state (Sophia's Hessian EMA and
its estimate schedule included) comes back through a DeepSpeed checkpoint so a resumed run takes the same steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from basisfm.config import load_config
from basisfm.errors import ConfigError
from basisfm.train.optimizers import Lamb, Muon, SophiaG, attach_gnb_hessian, is_hidden_matrix, orthogonalise

STAGE1 = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "icl" / "stage1.yaml"


def _regression(seed: int = 0):
    """y = tanh(x W1) W2 + noise: a two-layer regression whose first layer is named like a block's matrix."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=generator)
    y = torch.tanh(x @ torch.randn(8, 16, generator=generator)) @ torch.randn(16, 1, generator=generator)
    torch.manual_seed(seed)
    model = nn.ModuleDict({"attention": nn.Linear(8, 16), "head": nn.Linear(16, 1)})

    def loss() -> torch.Tensor:
        return ((model["head"](torch.tanh(model["attention"](x))) - y) ** 2).mean()

    return model, loss


def _train(model, loss, optimizer, steps: int) -> tuple[float, float]:
    start = float(loss().detach())
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return start, float(loss().detach())


def test_lamb_fits_a_regression_and_moves_each_tensor_by_lr_times_its_norm():
    model, loss = _regression()
    start, end = _train(model, loss, Lamb(model.parameters(), lr=0.01), 300)
    assert end < 0.05 * start
    # One step from fresh state: Adam's first update is +-1 per coordinate, so the trust ratio makes the step's norm
    # lr * ||w|| exactly (no weight decay).
    weight = nn.Parameter(torch.tensor([3.0, -4.0]))
    weight.grad = torch.tensor([1.0, 2.0])
    Lamb([weight], lr=0.1, eps=1e-12).step()
    assert torch.allclose(weight.detach(), torch.tensor([3.0, -4.0]) - 0.1 * 5.0 * torch.tensor([1.0, 1.0]) / 2 ** 0.5)


def test_muon_orthogonalises_block_matrices_and_leaves_the_rest_to_adamw():
    model, loss = _regression()
    optimizer = Muon.grouped(model.named_parameters(), lr=0.01)
    muon_group, adam_group = optimizer.param_groups
    assert muon_group["use_muon"] and muon_group["params"] == [model["attention"].weight]
    assert not adam_group["use_muon"] and len(adam_group["params"]) == 3  # attention bias, head weight and bias
    assert is_hidden_matrix("model.along_row.0.block.feed_forward.net.0.weight", torch.zeros(4, 2))
    assert not is_hidden_matrix("model.heads.value_head.weight", torch.zeros(4, 2))
    singular = torch.linalg.svdvals(orthogonalise(torch.randn(16, 8, generator=torch.Generator().manual_seed(1))))
    assert singular.min() > 0.6 and singular.max() < 1.25  # Newton-Schulz's quintic: all singular values near 1
    start, end = _train(model, loss, optimizer, 300)
    assert end < 0.05 * start


def test_sophia_takes_newton_steps_on_an_ill_conditioned_quadratic_given_its_hessian():
    """f(w) = 0.5 sum(a * w^2) with curvatures 1..1000: Sophia, fed the exact diagonal (B g'^2 = a with B = 1),
    converges in every coordinate; sign-like steps on the flat ones, clipped Newton steps on the curved ones."""
    curvature = torch.logspace(0, 3, 6)
    weight = nn.Parameter(torch.ones(6))
    optimizer = SophiaG([weight], lr=0.05, rho=1.0, weight_decay=0.0, hessian_every=1, betas=(0.9, 0.9))
    for _ in range(300):
        if optimizer.hessian_due():
            optimizer.update_hessian([curvature.sqrt()], labels=1)
        optimizer.zero_grad()
        (0.5 * (curvature * weight ** 2).sum()).backward()
        optimizer.step()
    assert weight.detach().abs().max() < 0.02
    assert optimizer.param_groups[0]["hessian_estimated_at"] == 299 and optimizer.param_groups[0]["steps_done"] == 300


def test_sophias_hook_estimates_the_hessian_on_training_forwards_only_every_k_steps():
    from basisfm.losses import build_objective
    from basisfm.train.data_source import training_tables
    from basisfm.train.warm_start import initial_model

    config = load_config(STAGE1, ["priors.min_rows=8", "priors.max_rows=16", "train.optimizer=sophia"])
    objective = build_objective(initial_model(config), config.model, config.loss)
    optimizer = SophiaG(objective.parameters(), lr=1e-3, hessian_every=2)
    attach_gnb_hessian(objective, optimizer)
    tables = training_tables(config, None, rank=0, device=torch.device("cpu"), start_step=0)
    batch = next(iter(tables))
    hessians = lambda: [optimizer.state[p]["hessian"].clone() for p in objective.parameters() if p in optimizer.state]  # noqa: E731

    objective.eval()
    with torch.no_grad():
        objective(batch)
    assert hessians() == [] and optimizer.hessian_due()  # validation forwards never estimate
    objective.train()
    for step in range(3):
        optimizer.zero_grad()
        objective(batch).loss.backward()
        before = hessians()
        objective(batch)  # a second forward in the same step (pack_tables > 1): no second estimate
        assert all(torch.equal(a, b) for a, b in zip(before, hessians()))
        optimizer.step()
        if step == 0:
            first = hessians()
            assert sum(float(h.sum()) for h in first) > 0
            assert optimizer.param_groups[0]["hessian_estimated_at"] == 0
    # Steps 0 and 2 estimated (hessian_every=2), step 1 did not.
    assert optimizer.param_groups[0]["hessian_estimated_at"] == 2 and optimizer.param_groups[0]["steps_done"] == 3


def test_optimizers_other_than_adamw_need_whole_tensors_so_zero_stage_0():
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=muon", "train.zero_stage=2"])
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=rmsprop"])
    with pytest.raises(ConfigError, match="train.sophia_betas"):
        load_config(None, ["train.optimizer=sophia", "train.zero_stage=0", "train.sophia_betas=[0.9, 1.0]"])
    assert load_config(None, ["train.optimizer=lamb", "train.zero_stage=0"]).train.optimizer == "lamb"
    assert load_config(None, []).train.optimizer == "adamw"


@pytest.mark.parametrize("optimizer", ["lamb", "sophia", "muon"])
def test_a_resumed_engine_takes_the_same_step_as_an_uninterrupted_one(tmp_path, optimizer):
    """Two steps, a DeepSpeed checkpoint, a third step; then a fresh engine restored from the checkpoint takes the
    third step again: the weights match exactly. Sophia estimates every 3 steps, so a schedule counter lost in the
    checkpoint would estimate at the third step and move differently."""
    from basisfm.train.checkpoint import TrainState, restore_sharded, save_sharded
    from basisfm.train.data_source import training_tables
    from basisfm.train.deepspeed_config import build_engine
    from basisfm.train.local_launcher import init_single_process_group

    config = load_config(STAGE1, ["priors.min_rows=8", "priors.max_rows=16", f"train.optimizer={optimizer}", "train.sophia_hessian_every=3",
                                  "train.warmup_steps=1", "train.steps=10"])
    init_single_process_group(False)
    cpu = torch.device("cpu")
    stream = iter(training_tables(config, None, rank=0, device=cpu, start_step=0))
    batches = [next(stream) for _ in range(3)]

    def step(engine, batch) -> None:
        engine.backward(engine(batch).loss)
        engine.step()

    engine, _ = build_engine(config, cpu)
    step(engine, batches[0])
    step(engine, batches[1])
    save_sharded(engine, tmp_path / "checkpoint", TrainState(step=2), rank=0)
    torch.manual_seed(7)  # Sophia's sampled labels
    step(engine, batches[2])
    uninterrupted = {n: p.detach().clone() for n, p in engine.module.named_parameters()}

    resumed, _ = build_engine(config, cpu)
    assert restore_sharded(resumed, tmp_path / "checkpoint").step == 2
    torch.manual_seed(7)
    step(resumed, batches[2])
    for name, param in resumed.module.named_parameters():
        assert torch.equal(param.detach(), uninterrupted[name]), name
    if optimizer == "sophia":
        assert resumed.optimizer.param_groups[0]["steps_done"] == 3
