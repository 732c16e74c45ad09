"""Task weighting strategies for the multi-task objective: uncertainty, gradient-norm (EMA) and MGDA (min-norm).

Each maps per-task losses [T] (and, for the gradient-based ones, per-task gradients with respect to the
shared representation) to one scalar loss, so training still needs a single backward. Gradient-based
weights are computed inside the forward with torch.autograd.grad and detached.
"""

from __future__ import annotations

import torch
from torch import nn


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {a : a >= 0, sum a = 1} (Duchi et al. 2008)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = u.cumsum(0) - 1
    index = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int((u - cumulative / index > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0)


def min_norm_weights(gram: torch.Tensor, iterations: int = 500) -> torch.Tensor:
    """MGDA: alpha on the simplex minimising ||sum_t alpha_t g_t||^2, given gram[i, j] = <g_i, g_j>.

    Two tasks use the closed form alpha_1 = clamp(<g_2 - g_1, g_2> / ||g_1 - g_2||^2, 0, 1) (Sener &
    Koltun 2018); more tasks use accelerated projected gradient descent (a convex QP on T variables).
    """
    gram = gram.double()
    n = gram.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64, device=gram.device)
    if n == 2:
        difference = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]  # ||g_1 - g_2||^2
        if difference <= 1e-20:
            return torch.full((2,), 0.5, dtype=torch.float64, device=gram.device)
        first = ((gram[1, 1] - gram[0, 1]) / difference).clamp(0.0, 1.0)
        return torch.stack([first, 1 - first])
    lipschitz = 2 * torch.linalg.eigvalsh(gram).max().clamp_min(1e-20)
    alpha = torch.full((n,), 1.0 / n, dtype=torch.float64, device=gram.device)
    momentum_point, t = alpha.clone(), 1.0
    for _ in range(iterations):
        updated = project_to_simplex(momentum_point - 2 * (gram @ momentum_point) / lipschitz)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum_point = updated + ((t - 1) / t_next) * (updated - alpha)
        alpha, t = updated, t_next
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
