"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2): Adam's update with
decoupled weight decay, rescaled per tensor so that each tensor moves by `lr` times its own norm.

A torch implementation rather than DeepSpeed's `FusedLamb`: FusedLamb is a CUDA kernel that DeepSpeed JIT-builds
(`deepspeed.ops.op_builder.FusedLambBuilder`), unavailable on the CPU this project also trains on, and one
implementation keeps CPU and GPU runs comparable.

The trust ratio ||w|| / ||update|| is taken per parameter tensor, so LAMB needs each tensor whole: ZeRO-1/2
hands an optimizer one flat partition instead (`TrainConfig.validate` allows LAMB at zero_stage 0 only).
"""

from __future__ import annotations

from typing import Iterable

import torch


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive moments. Per tensor w with gradient g, at step t (1-based):

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * w
        w = w - lr * trust * u,  trust = ||w|| / ||u|| (1 where either norm is 0: a zero-initialised bias)

    `max_trust` caps the ratio (a tensor whose update has collapsed would otherwise take a huge step).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, max_trust: float = 10.0):
        if lr <= 0 or eps <= 0 or weight_decay < 0 or max_trust <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Lamb: lr={lr}, eps={eps}, max_trust={max_trust} must be positive, weight_decay={weight_decay} "
                             f">= 0 and betas={betas} in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                                      weight_decay=weight_decay, max_trust=max_trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt_().add_(group["eps"]))
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                weight_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                    torch.ones_like(weight_norm)).clamp_(max=group["max_trust"])
                p.add_(update * trust, alpha=-group["lr"])
        return loss
