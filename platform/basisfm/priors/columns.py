"""From raw SCM nodes to table columns: categorical by quantising and relabelling, skewed / heavy-tailed /
integer numeric columns at random scales, classification or regression targets, missing cells (MCAR and
MNAR), meaningless names, and the support / query split of each episode.

All of it is batched over the `B` tasks of a chunk; per-task and per-column choices are small host-side
draws (`Draws.rng`), cell-sized ones are tensors on the generation device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from basisfm.config import PriorConfig
from basisfm.corpus.manifest import ColumnKind
from basisfm.priors.draws import Draws
from basisfm.priors.scm import standardise_rows

# Numeric column shapes: as drawn, right-skewed (log-normal-like), left-skewed, heavy-tailed (sinh, power).
_SHAPES = ("as_is", "right_skew", "left_skew", "sinh_tails", "power_tails")


@dataclass
class TaskChunk:
    """`B` synthetic tasks of one shape (`N` rows, `C` columns) on one device, before they become episodes."""

    generator: str  # which SCM family made them ("mlp" / "tree")
    seed: int  # the chunk's seed: the same seed makes the same chunk
    values: torch.Tensor  # [B, N, C] float32: numeric and boolean cells; 0 where categorical or missing
    missing: torch.Tensor  # [B, N, C] bool
    labels: torch.Tensor  # [B, N, C] long: a categorical cell's label in [0, max levels); -1 elsewhere
    label_base: torch.Tensor  # [B, C] long: bank offset of the column's labels (bank index = base + label)
    kinds: torch.Tensor  # [B, C] long, ColumnKind values
    is_target: torch.Tensor  # [B, C] bool: exactly `n_targets` per task
    names: torch.Tensor  # [B, C] long: name bank index, -1 for an empty name
    support: torch.Tensor  # [B, N] bool: labelled context rows of each episode

    @property
    def n_tasks(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.is_target[0].sum()) if self.n_tasks else 0

    def target_positions(self) -> torch.Tensor:
        """[B, T] long: column positions of each task's targets, in column order."""
        order = torch.argsort((~self.is_target).to(torch.int8), dim=1, stable=True)
        return order[:, : self.n_targets]


def _quantise(draws: Draws, x: torch.Tensor, levels: torch.Tensor, columns: torch.Tensor, max_levels: int) -> torch.Tensor:
    """[B, N, C] -> [B, N, C] long codes in [0, levels) for the (task, column) pairs in `columns` [K, 2]
    (0 elsewhere): cut at `levels - 1` random quantiles in [5%, 95%] of the column's own values."""
    b, n, c = x.shape
    codes = torch.zeros(b, c, n, dtype=torch.long, device=x.device)
    if len(columns) == 0:
        return codes.transpose(1, 2)
    task, col = columns[:, 0], columns[:, 1]
    picked = x.transpose(1, 2)[task, col]  # [K, N]: only the columns being quantised
    ranked, _ = torch.sort(picked, dim=1)
    q = draws.uniform(len(columns), max_levels - 1) * 0.9 + 0.05  # [K, L-1]
    cuts = ranked.gather(1, (q * (n - 1)).round().long())
    unused = torch.arange(max_levels - 1, device=x.device).unsqueeze(0) >= (levels[task, col] - 1).unsqueeze(1)
    cuts, _ = torch.sort(cuts.masked_fill(unused, float("inf")), dim=1)
    codes[task, col] = torch.searchsorted(cuts, picked.contiguous())  # cuts strictly below each value
    return codes.transpose(1, 2)


def _shape_numeric(draws: Draws, config: PriorConfig, z: torch.Tensor) -> torch.Tensor:
    """Standardised [B, N, C] -> skewed / heavy-tailed / integer columns at random scales and offsets."""
    b, _, c = z.shape
    rng = draws.rng
    shaped = rng.random((b, 1, c)) < config.skewed_fraction
    shape = draws.tensor(np.where(shaped, rng.integers(1, len(_SHAPES), (b, 1, c)), 0), torch.long)
    a = draws.tensor(rng.uniform(0.3, 1.5, (b, 1, c)))
    p = draws.tensor(rng.uniform(1.5, 3.0, (b, 1, c)))
    zc = z.clamp(-8, 8)
    out = zc
    out = torch.where(shape == 1, torch.exp(a * zc), out)
    out = torch.where(shape == 2, -torch.exp(a * zc), out)
    out = torch.where(shape == 3, torch.sinh(2 * a * zc), out)
    out = torch.where(shape == 4, torch.sign(zc) * zc.abs() ** p, out)
    # Divide by the spread but keep the sign: a log-normal-like column stays positive, like prices do.
    out = out / out.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-6)
    integer = rng.random((b, 1, c)) < config.integer_fraction
    log_scale = np.where(integer, rng.uniform(0.5, 3.0, (b, 1, c)), rng.uniform(-2.0, 4.0, (b, 1, c)))
    scale = draws.tensor(10.0**log_scale)
    offset = draws.tensor(np.where(rng.random((b, 1, c)) < 0.3, rng.normal(0.0, 3.0, (b, 1, c)), 0.0)) * scale
    out = out * scale + offset
    return torch.where(draws.tensor(integer).bool(), torch.round(out), out)


def _missing_cells(draws: Draws, config: PriorConfig, z: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
    """[B, N, C] bool missing mask over feature cells: per task none, completely at random (MCAR), or
    depending on the cell's own latent value (MNAR: larger, or smaller, values go missing more often)."""
    b, n, c = z.shape
    rng = draws.rng
    has = rng.random(b) < config.missing_task_fraction
    if not has.any() or config.max_missing_rate == 0:
        return torch.zeros(b, n, c, dtype=torch.bool, device=draws.device)
    rate = draws.tensor(np.where(has, rng.uniform(0.0, config.max_missing_rate, b), 0.0)).view(b, 1, 1)
    mnar = draws.tensor(rng.random(b) < config.mnar_fraction).bool().view(b, 1, 1)
    steepness = draws.tensor(rng.uniform(1.0, 3.0, (b, 1, c)) * rng.choice([-1.0, 1.0], (b, 1, c)))
    # sigmoid(k z) averages 1/2 over a symmetric z, so 2 x rate x sigmoid keeps the mean rate near `rate`.
    p = torch.where(mnar, (2 * rate * torch.sigmoid(steepness * z)).clamp(max=0.95), rate)
    return (draws.uniform(b, n, c) < p) & ~is_target.unsqueeze(1)


def build_columns(
    draws: Draws, config: PriorConfig, generator: str, features: torch.Tensor, targets: torch.Tensor
) -> TaskChunk:
    """Turn SCM node values ([B, N, F] features, [B, N, T] targets) into a `TaskChunk` of table columns."""
    rng = draws.rng
    b, n, f = features.shape
    t = targets.shape[2]
    c = f + t
    z = standardise_rows(torch.cat([targets, features], dim=2))  # [B, N, C]: targets first until the shuffle
    is_target_np = np.zeros((b, c), dtype=bool)
    is_target_np[:, :t] = True

    # Which columns are categorical, and how many levels each has.
    categorical_rate = rng.uniform(0.0, config.max_categorical_fraction, (b, 1))
    categorical = np.where(is_target_np, rng.random((b, c)) < config.classification_fraction, rng.random((b, c)) < categorical_rate)
    levels_np = np.where(is_target_np, rng.integers(2, config.max_classes + 1, (b, c)), rng.integers(2, config.max_categories + 1, (b, c)))
    boolean = categorical & ~is_target_np & (levels_np == 2) & (rng.random((b, c)) < config.boolean_fraction)
    max_levels = max(config.max_classes, config.max_categories)
    columns = draws.tensor(np.argwhere(categorical), torch.long).view(-1, 2)  # [K, 2] (task, column) pairs
    codes = _quantise(draws, z, draws.tensor(levels_np, torch.long), columns, max_levels)  # [B, N, C]
    # Relabel: a random permutation of label ids per column, so a label's id says nothing about its order.
    permutation = torch.argsort(draws.uniform(b, max_levels, c), dim=1)  # [B, L, C]
    labels = permutation.gather(1, codes)  # [B, N, C]
    flip = draws.tensor(rng.random((b, 1, c)) < 0.5, torch.long)
    boolean_values = (codes ^ flip).float()

    numeric = _shape_numeric(draws, config, z)
    cat_t, bool_t = draws.tensor(categorical, torch.bool), draws.tensor(boolean, torch.bool)
    string_col = (cat_t & ~bool_t).unsqueeze(1)  # [B, 1, C]
    values = torch.where(bool_t.unsqueeze(1), boolean_values, torch.where(string_col, torch.zeros_like(numeric), numeric))
    labels = torch.where(string_col, labels, torch.full_like(labels, -1))
    kinds_np = np.where(boolean, int(ColumnKind.BOOLEAN), np.where(categorical, int(ColumnKind.CATEGORICAL), int(ColumnKind.NUMERIC)))

    is_target = draws.tensor(is_target_np, torch.bool)
    missing = _missing_cells(draws, config, z, is_target)
    values = values.masked_fill(missing, 0.0)
    labels = labels.masked_fill(missing, -1)

    label_base = draws.integers(config.category_bank_size, b, c)
    named = rng.random((b, 1)) < config.named_fraction
    names_np = np.where(named, rng.integers(0, config.name_bank_size, (b, c)), -1)

    # Shuffle column order per task, so a target's position says nothing.
    order = torch.argsort(draws.uniform(b, c), dim=1)  # [B, C]
    cells = order.unsqueeze(1).expand(b, n, c)
    kinds = draws.tensor(kinds_np, torch.long).gather(1, order)

    fraction = rng.uniform(config.min_support_fraction, config.max_support_fraction, b)
    n_support = np.clip(np.rint(fraction * n), 2, n - 1).astype(np.int64)
    rank = torch.argsort(torch.argsort(draws.uniform(b, n), dim=1), dim=1)  # [B, N]: a random rank per row
    support = rank < draws.tensor(n_support, torch.long).unsqueeze(1)

    return TaskChunk(
        generator=generator,
        seed=draws.seed,
        values=values.gather(2, cells),
        missing=missing.gather(2, cells),
        labels=labels.gather(2, cells),
        label_base=label_base.gather(1, order),
        kinds=kinds,
        is_target=is_target.gather(1, order),
        names=draws.tensor(names_np, torch.long).gather(1, order),
        support=support,
    )
