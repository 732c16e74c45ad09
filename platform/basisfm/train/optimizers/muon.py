"""Muon (Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-schulz"): for the 2-D weight matrices inside
the transformer blocks, SGD momentum whose update is replaced by the nearest semi-orthogonal matrix (all singular
values 1), computed by a few Newton-Schulz iterations; every other parameter (embeddings, input projections, the
heads, biases, norms) takes AdamW's step. One optimizer holding both kinds as parameter groups, so DeepSpeed,
the lr schedule and checkpoints see one object.

The orthogonalised update is scaled by 0.2 * sqrt(max(rows, cols)) (Liu et al. 2025, "Muon is Scalable for LLM
Training"): its root-mean-square then matches a typical AdamW update's, so the one `train.lr` and weight decay
serve both groups. Matrices must be whole (not ZeRO partitions): `TrainConfig.validate` allows zero_stage 0 only.
"""

from __future__ import annotations

from typing import Iterable

import torch

# The quintic iteration's coefficients from Jordan et al.: they push singular values in (0, 1] towards 1 fast,
# leaving them in roughly [0.7, 1.2] after 5 steps, which training does not mind.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
RMS_MATCH = 0.2  # Liu et al.'s factor: AdamW's update RMS is ~0.2-0.4 in practice


def orthogonalise(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """An approximation of U V^T for matrix = U S V^T ([rows, cols] in, same shape out)."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.float()
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.T
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)  # Frobenius norm >= spectral norm: singular values now <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(matrix.dtype)


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """Muon's parameters: 2-D weights of the blocks' attention and feed-forward layers. Embeddings, input
    projections and output heads are left to AdamW, as Jordan et al. do (their geometry is not a linear map
    between hidden states)."""
    return param.ndim == 2 and (".attention." in f".{name}" or ".feed_forward." in f".{name}")


class Muon(torch.optim.Optimizer):
    """Parameter groups with `use_muon=True` take the orthogonalised momentum step:

        b = momentum * b + g;   u = g + momentum * b (Nesterov)
        w = (1 - lr * weight_decay) w - lr * 0.2 * sqrt(max(rows, cols)) * orthogonalise(u)

    groups with `use_muon=False` take AdamW's (betas, eps, decoupled weight decay). Build it with `Muon.grouped`.
    """

    def __init__(self, param_groups: list[dict], lr: float = 1e-3, momentum: float = 0.95, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, newton_schulz_steps: int = 5):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Muon: lr={lr} must be positive, momentum={momentum} and betas={betas} in [0, 1), "
                             f"weight_decay={weight_decay} >= 0")
        for group in param_groups:
            if "use_muon" not in group:
                raise ValueError("Muon: every parameter group needs use_muon=True/False (build it with Muon.grouped)")
            if group["use_muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon: use_muon groups hold 2-D matrices only")
        super().__init__(param_groups, dict(lr=lr, momentum=momentum, betas=(float(betas[0]), float(betas[1])),
                                            eps=eps, weight_decay=weight_decay, newton_schulz_steps=newton_schulz_steps))

    @classmethod
    def grouped(cls, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], **hyper) -> "Muon":
        """Split parameters by `is_hidden_matrix` into the Muon group and the AdamW group."""
        named = [(n, p) for n, p in named_parameters if p.requires_grad]
        hidden = [p for n, p in named if is_hidden_matrix(n, p)]
        rest = [p for n, p in named if not is_hidden_matrix(n, p)]
        groups = [g for g in ({"params": hidden, "use_muon": True}, {"params": rest, "use_muon": False}) if g["params"]]
        return cls(groups, **hyper)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if decay:
                    p.mul_(1 - lr * decay)
                if group["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buffer = state["momentum_buffer"]
                    buffer.mul_(group["momentum"]).add_(p.grad)
                    update = p.grad.add(buffer, alpha=group["momentum"])
                    scale = RMS_MATCH * max(p.shape) ** 0.5
                    p.add_(orthogonalise(update, group["newton_schulz_steps"]), alpha=-lr * scale)
                else:
                    beta1, beta2 = group["betas"]
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    t = float(state["step"])
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denominator = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denominator, value=-lr / (1 - beta1 ** t))
        return loss
