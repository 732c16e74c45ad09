"""Reject degenerate synthetic tasks: non-finite cells, constant targets, and targets no feature can predict.

The learnability check is cheap and batched: on each task, ridge regression and 5-nearest-neighbours are
fitted on the support rows and scored on (up to 256) query rows, with the features as the model would
see them (categorical columns by their label ids, missing cells as 0). A regression target's skill is
held-out R²; a classification target's is accuracy above the majority class, as a share of what is left
above it ((acc - base) / (1 - base)). A task is kept when every target's best skill reaches
`min_learnability`. The counts of each outcome are kept in `RejectionCounts`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from basisfm.corpus.manifest import ColumnKind
from basisfm.priors.columns import TaskChunk

_QUERY_ROWS = 256  # query rows the check scores: bounds its cost on large tasks
_NEIGHBOURS = 5
_RIDGE = 1e-2


@dataclass
class RejectionCounts:
    """How many generated tasks were kept, and why the others were dropped."""

    generated: int = 0
    accepted: int = 0
    non_finite: int = 0
    constant_target: int = 0
    unlearnable: int = 0

    @property
    def rejected(self) -> int:
        return self.generated - self.accepted

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.generated if self.generated else 0.0

    def add(self, other: "RejectionCounts") -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _check_features(chunk: TaskChunk) -> torch.Tensor:
    """[B, N, C] float32 features as the check sees them, standardised on support rows; targets zeroed."""
    raw = torch.where(chunk.labels >= 0, chunk.labels.float(), chunk.values)
    raw = raw.masked_fill(chunk.missing | chunk.is_target.unsqueeze(1), 0.0)
    w = chunk.support.float().unsqueeze(2)  # [B, N, 1]
    count = w.sum(1, keepdim=True).clamp_min(1.0)
    mean = (raw * w).sum(1, keepdim=True) / count
    std = (((raw - mean) ** 2 * w).sum(1, keepdim=True) / count).sqrt()
    return torch.where(std > 1e-6, (raw - mean) / std.clamp_min(1e-6), torch.zeros_like(raw))


def _query_rows(support: torch.Tensor) -> torch.Tensor:
    """[B, Q] long: the first (up to) `_QUERY_ROWS` query rows of each task (padded by repeating the last)."""
    n = support.shape[1]
    order = torch.argsort(support.to(torch.int8), dim=1, stable=True)  # query rows first, in row order
    return order[:, : min(_QUERY_ROWS, n)]


def learnability(chunk: TaskChunk) -> torch.Tensor:
    """[B, T] float32: each target's best held-out skill (ridge or kNN) from the other columns."""
    b, n, _ = chunk.values.shape
    x = _check_features(chunk)  # [B, N, C]
    support = chunk.support
    queries = _query_rows(support)  # [B, Q]
    is_query = ~support.gather(1, queries)  # [B, Q]: False where a task has fewer queries than Q (padding)
    xq = x.gather(1, queries.unsqueeze(2).expand(-1, -1, x.shape[2]))  # [B, Q, C]

    distance = torch.cdist(xq, x)  # [B, Q, N]
    distance = distance.masked_fill(~support.unsqueeze(1), float("inf"))
    k = min(_NEIGHBOURS, int(support.sum(1).min()))
    neighbours = distance.topk(k, dim=2, largest=False).indices  # [B, Q, k]

    w = support.float().unsqueeze(2)  # [B, N, 1]
    x1 = torch.cat([x, torch.ones_like(x[..., :1])], dim=2)  # [B, N, C+1]
    gram = x1.transpose(1, 2) @ (x1 * w) + _RIDGE * w.sum(1, keepdim=True) * torch.eye(x1.shape[2], device=x.device)
    xq1 = x1.gather(1, queries.unsqueeze(2).expand(-1, -1, x1.shape[2]))

    skills = []
    positions = chunk.target_positions()  # [B, T]
    for j in range(chunk.n_targets):
        col = positions[:, j]  # [B]
        classification = chunk.kinds.gather(1, col.unsqueeze(1)).squeeze(1) == int(ColumnKind.CATEGORICAL)  # [B]
        values = chunk.values.gather(2, col.view(b, 1, 1).expand(b, n, 1)).squeeze(2)  # [B, N]
        labels = chunk.labels.gather(2, col.view(b, 1, 1).expand(b, n, 1)).squeeze(2).clamp_min(0)  # [B, N]
        n_labels = int(labels.max()) + 1

        # Regression: y standardised on the support rows; R² on the query rows.
        y = values.unsqueeze(2)
        mu = (y * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        sd = (((y - mu) ** 2 * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)).sqrt().clamp_min(1e-12)
        y = (y - mu) / sd  # [B, N, 1]
        # Classification: one-hot labels (the ridge fits one column per class).
        onehot = torch.nn.functional.one_hot(labels, n_labels).float()  # [B, N, K]
        target = torch.cat([y, onehot], dim=2)  # [B, N, 1+K]
        coef = torch.linalg.solve(gram, x1.transpose(1, 2) @ (target * w))  # [B, C+1, 1+K]
        ridge = xq1 @ coef  # [B, Q, 1+K]
        truth = target.gather(1, queries.unsqueeze(2).expand(-1, -1, target.shape[2]))  # [B, Q, 1+K]
        knn = target.gather(1, neighbours.reshape(b, -1, 1).expand(-1, -1, target.shape[2])).view(*neighbours.shape, -1).mean(2)

        q = is_query.float()
        n_q = q.sum(1).clamp_min(1.0)
        yq = truth[..., 0]
        sst = (((yq - (yq * q).sum(1, keepdim=True) / n_q.unsqueeze(1)) ** 2) * q).sum(1).clamp_min(1e-12)
        r2 = torch.stack([1 - (((pred[..., 0] - yq) ** 2) * q).sum(1) / sst for pred in (ridge, knn)]).amax(0)

        true_class = truth[..., 1:].argmax(-1)  # [B, Q]
        majority = (onehot * w).sum(1).argmax(-1)  # [B]: the support rows' most frequent class
        base = ((true_class == majority.unsqueeze(1)).float() * q).sum(1) / n_q
        acc = torch.stack([((pred[..., 1:].argmax(-1) == true_class).float() * q).sum(1) / n_q for pred in (ridge, knn)]).amax(0)
        class_skill = (acc - base) / (1 - base).clamp_min(1e-6)
        skills.append(torch.where(classification, class_skill, r2))
    return torch.stack(skills, dim=1)


def screen(chunk: TaskChunk, min_learnability: float) -> tuple[torch.Tensor, RejectionCounts]:
    """([B] bool tasks to keep, the counts of this chunk). A rejected task is counted under its first failure."""
    b, n, _ = chunk.values.shape
    finite = torch.isfinite(chunk.values).flatten(1).all(1)  # [B]
    if not bool(finite.all()):
        chunk.values = torch.nan_to_num(chunk.values, nan=0.0, posinf=0.0, neginf=0.0)

    constant = torch.zeros(b, dtype=torch.bool, device=chunk.values.device)
    positions = chunk.target_positions()
    for j in range(chunk.n_targets):
        col = positions[:, j].view(b, 1, 1).expand(b, n, 1)
        y = torch.where(chunk.labels.gather(2, col) >= 0, chunk.labels.gather(2, col).float(), chunk.values.gather(2, col)).squeeze(2)
        in_support = chunk.support
        high = y.masked_fill(~in_support, float("-inf")).amax(1)
        low = y.masked_fill(~in_support, float("inf")).amin(1)
        constant |= high <= low

    skill = learnability(chunk).amin(1)  # [B]: the hardest target decides
    learnable = skill >= min_learnability
    keep = finite & ~constant & learnable
    counts = RejectionCounts(
        generated=b,
        accepted=int(keep.sum()),
        non_finite=int((~finite).sum()),
        constant_target=int((finite & constant).sum()),
        unlearnable=int((finite & ~constant & ~learnable).sum()),
    )
    return keep, counts
