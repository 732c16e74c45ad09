"""Fast checks of the training pieces that need no cluster: DeepSpeed config, lr schedule, R², validation pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from basisfm.config import TrainConfig
from basisfm.train.deepspeed_config import (WarmupCosine, build_deepspeed_config, build_optimizer, build_scheduler,
                                            warmup_cosine_factor)
from basisfm.train.evaluate import NumericR2


def test_cpu_config_is_fp32_with_a_plain_optimizer_and_the_configured_zero_stage():
    train = TrainConfig(zero_stage=3, micro_batch_tables=4, grad_clip=0.5)
    ds = build_deepspeed_config(train)
    assert ds["zero_optimization"]["stage"] == 3 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == 1
    assert not ds["bf16"]["enabled"] and not ds["torch_autocast"]["enabled"] and "optimizer" not in ds
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], train)
    assert isinstance(optimizer, torch.optim.AdamW)


def test_gpu_config_uses_bf16_autocast_and_a_torch_adamw_never_deepspeeds_jit_built_one():
    ds = build_deepspeed_config(TrainConfig(use_gpu=True, offload_optimizer=True, lr=3e-4))
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "optimizer" not in ds  # DeepSpeed's FusedAdam / CPUAdam JIT-compile at engine start
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_force_ds_cpu_optimizer"] is False  # offloaded state stepped by torch's AdamW
    assert "zero_force_ds_cpu_optimizer" not in build_deepspeed_config(TrainConfig(use_gpu=True))
    # Fused only where the state is on the GPU; this CPU-only test sees the flag, not the kernel.
    gpu = build_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(use_gpu=True))
    assert isinstance(gpu, torch.optim.AdamW) and gpu.defaults["fused"] is True
    offloaded = build_optimizer([torch.nn.Parameter(torch.zeros(2))], TrainConfig(use_gpu=True, offload_optimizer=True))
    assert not offloaded.defaults["fused"]


def test_warmup_then_cosine_to_the_floor():
    factors = [warmup_cosine_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(21)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))  # monotone decay after warm-up
    assert factors[12] == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the cosine's midpoint
    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = build_scheduler(torch.optim.AdamW([param], lr=1.0), TrainConfig(steps=20, warmup_steps=4))
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25)
    assert isinstance(scheduler.lr_lambdas[0], WarmupCosine)  # its state survives a checkpoint round trip



def test_a_stage_can_stop_part_way_down_a_longer_schedule():
    from basisfm.errors import ConfigError

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, TrainConfig(steps=10, schedule_steps=20, warmup_steps=4))
    for _ in range(10):
        optimizer.step()  # no gradient: nothing moves; stepped first, as the schedule expects
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(warmup_cosine_factor(10, 4, 20, 0.1))  # not the floor at step 10
    assert scheduler.get_last_lr()[0] > 0.5
    with pytest.raises(ConfigError, match="schedule_steps.*at least train.steps"):
        TrainConfig(steps=10, schedule_steps=5).validate("train")

def test_r2_is_per_column_and_the_median_over_columns():
    r2 = NumericR2()
    y = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    r2.update("t", ["a"] * 4, y.clone(), y)  # perfect: 1
    r2.update("t", ["b"] * 2, torch.tensor([15.0, 15.0]), torch.tensor([10.0, 20.0]))  # the mean: 0
    r2.update("t", ["c"], torch.tensor([0.0]), torch.tensor([5.0]))  # one cell: no variance, left out
    r2.update("u", ["a", "a"], torch.tensor([float("nan"), 1.0]), torch.tensor([2.0, 2.0]))  # NaN dropped
    assert r2.per_column() == {("t", "a"): pytest.approx(1.0), ("t", "b"): pytest.approx(0.0)}
    assert r2.value() == pytest.approx(0.5)
    r2.update("v", ["d", "d"], torch.tensor([1e3, -1e3]), torch.tensor([1.0, 1.1]))  # a wild column: R2 ~ -1e9
    assert r2.value() == pytest.approx(0.0)  # the median of (1, 0, -1e9) is not dragged down
    assert math.isnan(NumericR2().value())


def test_r2_of_scaled_columns_does_not_let_the_big_column_decide():
    rng = np.random.default_rng(0)
    r2 = NumericR2()
    small = torch.tensor(rng.normal(size=50))
    big = torch.tensor(rng.normal(size=50) * 1e6)
    r2.update("t", ["small"] * 50, small, small)
    r2.update("t", ["big"] * 50, big.mean().expand(50), big)
    assert r2.value() == pytest.approx(0.5)
