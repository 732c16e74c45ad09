"""Sophia-G (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training", Algorithm 3): momentum divided by an EMA of a diagonal Hessian estimate, clipped per coordinate.

The Hessian estimate is Gauss-Newton-Bartlett (GNB): sample labels from the model's own predicted distribution,
take the gradient g' of the loss on those sampled labels, and B * g' * g' (B: the number of labels in the mean)
is an unbiased estimate of the Gauss-Newton diagonal. It needs a forward and backward of its own, every
`hessian_every` steps: `attach_gnb_hessian` hooks it onto the training objective's forward, so the training loop
stays as it is. Coordinates whose Hessian estimate is tiny (flat or not yet estimated) take a step of at most
`lr` (the clip), like sign momentum; curved ones take a Newton-like step m / (rho * h), h the EMA of B * g' * g'.

Per-tensor state only, but the hook maps gradients to parameters one to one, which ZeRO-1/2's flat partitions
break: `TrainConfig.validate` allows Sophia at zero_stage 0 only.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F


class SophiaG(torch.optim.Optimizer):
    """Per parameter w with gradient g:

        m = b1 m + (1 - b1) g                       every step
        h = b2 h + (1 - b2) B g'^2                  when `update_hessian(g', B)` is called (every k steps)
        w = (1 - lr * weight_decay) w - lr * sign(m) * min(|m| / (rho * h + eps), 1)

    `hessian_due()` says whether the step about to be taken wants a fresh estimate (steps 0, k, 2k, ...).
    """

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.965, 0.99),
                 rho: float = 0.04, weight_decay: float = 0.1, hessian_every: int = 10, eps: float = 1e-15):
        if lr <= 0 or rho <= 0 or weight_decay < 0 or hessian_every < 1 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"SophiaG: lr={lr} and rho={rho} must be positive, weight_decay={weight_decay} >= 0, "
                             f"hessian_every={hessian_every} >= 1, betas={betas} in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=(float(betas[0]), float(betas[1])), rho=rho,
                                      weight_decay=weight_decay, eps=eps))
        # Kept in the first group so they travel with the optimizer's state_dict through a checkpoint.
        self.param_groups[0].setdefault("steps_done", 0)
        self.param_groups[0].setdefault("hessian_every", hessian_every)
        self.param_groups[0].setdefault("hessian_estimated_at", -1)

    def hessian_due(self) -> bool:
        schedule = self.param_groups[0]
        step = schedule["steps_done"]
        return step % schedule["hessian_every"] == 0 and schedule["hessian_estimated_at"] != step

    @torch.no_grad()
    def update_hessian(self, sampled_grads: list[torch.Tensor | None], labels: int) -> None:
        """Fold one GNB estimate into the EMA. `sampled_grads[i]` is the gradient of the mean loss over `labels`
        sampled labels with respect to `self.parameters()[i]` (None: the parameter took no part)."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(sampled_grads) != len(params):
            raise ValueError(f"SophiaG.update_hessian: {len(sampled_grads)} gradients for {len(params)} parameters")
        i = 0
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                grad = sampled_grads[i]
                i += 1
                if grad is None:
                    continue
                state = self._state_of(p)
                state["hessian"].mul_(beta2).addcmul_(grad, grad, value=(1 - beta2) * labels)
        self.param_groups[0]["hessian_estimated_at"] = self.param_groups[0]["steps_done"]

    def _state_of(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["hessian"] = torch.zeros_like(p)  # B * g'^2 averaged: the B is folded in when it is added
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1 = group["betas"][0]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                m = state["exp_avg"].lerp_(p.grad, 1 - beta1)
                ratio = (m.abs() / (group["rho"] * state["hessian"] + group["eps"])).clamp_(max=1.0)
                p.addcmul_(m.sign(), ratio, value=-group["lr"])
        self.param_groups[0]["steps_done"] += 1
        return loss


def sampled_label_loss(out, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """(mean loss, number of labels) of the model's output `out` (a `ModelOutput`) scored against labels drawn from
    its own predictive distributions: a bin per numeric target (binned head) or a bit string (SMR head), a string
    per categorical target among the column's visible strings. Gradients of it give Sophia's GNB estimate."""
    losses = []
    numeric = out.is_numeric
    if out.value_logits is not None and bool(numeric.any()):
        logits = out.value_logits[numeric]
        drawn = torch.multinomial(torch.softmax(logits.detach().float(), -1), 1, generator=generator).squeeze(1)
        losses.append(F.cross_entropy(logits.float(), drawn, reduction="none"))
    if out.bit_logits is not None and bool(numeric.any()):
        logits = out.bit_logits[numeric].float()
        drawn = torch.bernoulli(torch.sigmoid(logits.detach()), generator=generator)
        losses.append(F.binary_cross_entropy_with_logits(logits, drawn, reduction="none").sum(-1))
    categorical = ~numeric
    if out.category_logits.shape[1] > 0:
        categorical = categorical & torch.isfinite(out.category_logits).any(-1)
        if bool(categorical.any()):
            logits = out.category_logits[categorical].float()
            drawn = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=generator).squeeze(1)
            losses.append(F.cross_entropy(logits, drawn, reduction="none"))
    if not losses:
        return out.hidden.sum() * 0.0, 0
    per_label = torch.cat(losses)
    return per_label.mean(), int(per_label.numel())


def attach_gnb_hessian(objective: torch.nn.Module, optimizer: SophiaG) -> torch.utils.hooks.RemovableHandle:
    """Hook Sophia's Hessian estimate onto `objective` (a module whose `.model(batch)` returns a `ModelOutput` and
    whose forward takes the batch): on the first training forward of every step `optimizer.hessian_due()`, a second
    forward of the same batch, labels sampled from it, and `torch.autograd.grad` of their loss, which leaves the
    parameters' .grad (the training gradient being accumulated) untouched. Validation forwards (eval mode or no
    grad) are skipped. Returns the hook's handle."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def estimate(module: torch.nn.Module, inputs: tuple, _output) -> None:
        if not (module.training and torch.is_grad_enabled() and optimizer.hessian_due()):
            return
        loss, labels = sampled_label_loss(module.model(inputs[0]))
        if labels == 0:
            return  # no target to sample: try again on the next forward
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        optimizer.update_hessian(list(grads), labels)

    return objective.register_forward_hook(estimate)
