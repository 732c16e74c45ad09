"""Task weighting strategies for the multi-task objective: uncertainty, gradient-norm (EMA) and MGDA (min-norm).

Each maps per-task losses [T] (and, for the gradient-based ones, per-task gradients with respect to the
shared representation) to one scalar loss, so training still needs a single backward. Gradient-based
weights are computed inside the forward with torch.autograd.grad and detached.
"""

from __future__ import annotations

import torch
from torch import nn


def min_norm_weights(gram: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """MGDA: alpha on the simplex minimising ||sum_t alpha_t g_t||^2, given gram[i, j] = <g_i, g_j>.

    Frank-Wolfe with exact line search (Sener & Koltun 2018). Two tasks have the closed form
    alpha_1 = clamp(<g_2 - g_1, g_2> / ||g_1 - g_2||^2, 0, 1), which this reproduces.
    """
    gram = gram.double()
    n = gram.shape[0]
    alpha = torch.full((n,), 1.0 / n, dtype=torch.float64, device=gram.device)
    if n == 1:
        return alpha
    for _ in range(iterations):
        grad = gram @ alpha
        t = int(torch.argmin(grad))
        v1 = alpha @ grad  # ||current||^2
        v1v2 = grad[t]  # <current, g_t>
        v2 = gram[t, t]  # ||g_t||^2
        denominator = v1 + v2 - 2 * v1v2
        if denominator <= 1e-20:
            break
        step = ((v1 - v1v2) / denominator).clamp(0.0, 1.0)
        if step <= 1e-10:
            break
        alpha = (1 - step) * alpha
        alpha[t] += step
    return alpha


class UncertaintyWeighting(nn.Module):
    """Kendall et al. 2018: a learned log-variance s_t per task; loss = sum_t exp(-s_t) L_t + s_t."""

    def __init__(self, n_tasks: int):
        super().__init__()
        self.log_variance = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, task_losses: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.log_variance
        terms = torch.exp(-s) * task_losses + s
        return (terms * active).sum(), torch.exp(-s).detach() * active


class GradientNormWeighting(nn.Module):
    """Balances tasks by their gradient size on the shared representation: w_t = mean(ema) / ema_t, where
    ema_t is an exponential moving average of ||dL_t / d shared||. A task whose gradients dwarf the
    others' is turned down. The EMA lives in buffers, so it is checkpointed with the model."""

    def __init__(self, n_tasks: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("ema_norm", torch.zeros(n_tasks))
        self.register_buffer("seen", torch.zeros(n_tasks, dtype=torch.bool))

    def forward(self, task_losses: torch.Tensor, active: torch.Tensor, norms: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if norms is not None:
            with torch.no_grad():
                update = active & torch.isfinite(norms)
                fresh = update & ~self.seen
                blended = self.momentum * self.ema_norm + (1 - self.momentum) * norms.float()
                self.ema_norm.copy_(torch.where(fresh, norms.float(), torch.where(update, blended, self.ema_norm)))
                self.seen |= update
        known = active & self.seen & (self.ema_norm > 0)
        weights = torch.where(active, torch.ones_like(task_losses), torch.zeros_like(task_losses))
        if known.any():
            mean_norm = self.ema_norm[known].mean()
            weights = torch.where(known, mean_norm / self.ema_norm.clamp_min(1e-12), weights)
            weights = weights * active.sum() / weights.sum().clamp_min(1e-12)  # keep the loss scale: sum w = #tasks
        weights = weights.detach()
        return (weights * task_losses * active).sum(), weights


class MGDAWeighting(nn.Module):
    """Pareto descent: weights are the min-norm convex combination of the task gradients (detached),
    times the number of active tasks so the loss keeps the scale of a plain sum."""

    def forward(self, task_losses: torch.Tensor, active: torch.Tensor, gradients: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        weights = active.to(task_losses.dtype)
        if gradients is not None and int(active.sum()) > 1:
            index = active.nonzero(as_tuple=True)[0]
            g = gradients[index].double()
            alpha = min_norm_weights(g @ g.T)
            weights = torch.zeros_like(task_losses)
            weights[index] = (alpha * len(index)).to(task_losses.dtype)
        weights = weights.detach()
        return (weights * task_losses * active).sum(), weights
