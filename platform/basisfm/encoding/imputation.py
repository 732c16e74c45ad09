"""Imputation: numeric cells filled before the model reads a table, the alternative to reading them as missing.

`MeanImputer` fills a column's missing cells with its training rows' mean. `DiffusionImputer` is a small
denoising diffusion model over a row's standardised numeric cells (an MLP; input: the cells, which of them are
observed, the noise level), fitted on the table's training rows at `fit`: some observed cells are hidden, noised
to a random level and reconstructed from the rest (the x0 parameterisation of DDPM, a cosine schedule), so at
predict it fills a row's missing cells by deterministic DDIM sampling from noise, conditioned on the row's
observed cells, averaged over a few seeded samples (the average: the model reads one value per cell, and the
posterior mean is the value with the least expected squared error).

Why per table and not one denoiser trained on the corpus: a denoiser that sees one row cannot know which column
of a new table is which, nor how they relate; what it could learn across tables is the shrinkage to the mean
that `MeanImputer` already gives. The relations between columns are the table's, so it learns them from the
table's own training rows (600 steps: about 3 s on one loaded CPU thread, `benchmarks/results/missing_values.md`).

Only columns of kind numeric are filled: a category, text or boolean cell has no mean, and the model's missing
strategy (`model.missing`) still reads those. Both imputers save as JSON (`state`) plus, for the diffusion one,
a safetensors file of its weights (`tensors` / `from_state(state, tensors)`): nothing is pickled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from basisfm.errors import CheckpointError, ConfigError

IMPUTATIONS: tuple[str, ...] = ("mean", "diffusion")


def _numeric_matrix(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """[rows, columns] float64, NaN where a cell is missing or not finite."""
    if not columns:
        return np.zeros((len(features), 0))
    matrix = np.column_stack([pd.to_numeric(features[c], errors="coerce").to_numpy(dtype=np.float64) for c in columns])
    return np.where(np.isfinite(matrix), matrix, np.nan)


def _with_filled(features: pd.DataFrame, columns: list[str], matrix: np.ndarray) -> pd.DataFrame:
    out = features.copy()
    for j, name in enumerate(columns):
        out[name] = matrix[:, j]
    return out


def _observed_scale(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and std over its observed cells (0 and 1 where it has none; std 1 when constant)."""
    observed = np.isfinite(matrix)
    count = observed.sum(axis=0)
    mean = np.where(count > 0, np.nansum(matrix, axis=0) / np.maximum(count, 1), 0.0)
    centred = np.where(observed, matrix - mean, 0.0)
    std = np.sqrt((centred**2).sum(axis=0) / np.maximum(count, 1))
    return mean, np.where((std > 0) & np.isfinite(std), std, 1.0)


class MeanImputer:
    """Missing numeric cells become their column's mean over the training rows."""

    kind = "mean"

    def __init__(self, columns: list[str], means: list[float]):
        self.columns = list(columns)
        self.means = np.asarray(means, dtype=np.float64)

    @classmethod
    def fit(cls, features: pd.DataFrame, columns: list[str]) -> "MeanImputer":
        return cls(columns, _observed_scale(_numeric_matrix(features, columns))[0].tolist())

    def fill(self, features: pd.DataFrame) -> pd.DataFrame:
        matrix = _numeric_matrix(features, self.columns)
        return _with_filled(features, self.columns, np.where(np.isnan(matrix), self.means, matrix))

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": self.columns, "means": self.means.tolist()}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class DiffusionSettings:
    """The denoiser's size and its fit and sampling budgets (the defaults: about 3 s a fit on one CPU thread)."""

    hidden: int = 128
    noise_levels: int = 100  # T of the DDPM schedule
    train_steps: int = 600
    batch_rows: int = 128
    learning_rate: float = 2e-3
    sampling_steps: int = 10  # DDIM steps from pure noise to the filled cells
    samples: int = 4  # averaged
    clip: float = 6.0  # reconstructions are clipped to +-this many standard deviations
    seed: int = 0


class RowDenoiser(nn.Module):
    """x0 of a row's cells from (noised cells, which cells are given, noise level): an MLP over the row."""

    def __init__(self, n_columns: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * n_columns + 2, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, n_columns),
        )

    def forward(self, cells: torch.Tensor, given: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        # cells, given: [B, C]; level: [B] in [0, 1] (t / T), fed as sin / cos so 0 and 1 are far apart
        angle = level.unsqueeze(-1) * (math.pi / 2)
        return self.net(torch.cat([cells, given.float(), torch.sin(angle), torch.cos(angle)], dim=-1))


def _alpha_bar(levels: int) -> torch.Tensor:
    """ᾱ_t for t = 0..T, the cosine schedule (Nichol & Dhariwal 2021): ᾱ_0 = 1, ᾱ_T ~ 0."""
    t = torch.linspace(0, 1, levels + 1, dtype=torch.float64)
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f / f[0]).clamp(1e-5, 1.0).float()


class DiffusionImputer:
    """Missing numeric cells filled by a denoising diffusion model of the table's rows (see the module)."""

    kind = "diffusion"

    def __init__(self, columns: list[str], mean: np.ndarray, std: np.ndarray, settings: DiffusionSettings,
                 network: RowDenoiser):
        self.columns = list(columns)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.settings = settings
        self.network = network.eval()

    @classmethod
    def fit(cls, features: pd.DataFrame, columns: list[str], settings: DiffusionSettings = DiffusionSettings()) -> "DiffusionImputer":
        """Train the denoiser on the observed cells of `features`' `columns` (the training rows)."""
        matrix = _numeric_matrix(features, columns)
        mean, std = _observed_scale(matrix)
        x = torch.as_tensor(np.nan_to_num((matrix - mean) / std), dtype=torch.float32).clamp(-settings.clip, settings.clip)
        observed = torch.as_tensor(np.isfinite(matrix))
        generator = torch.Generator().manual_seed(settings.seed)
        with torch.random.fork_rng(devices=[]):  # the fit leaves the caller's torch RNG as it found it
            torch.manual_seed(settings.seed)
            network = RowDenoiser(len(columns), settings.hidden)
        imputer = cls(columns, mean, std, settings, network)
        if len(columns) == 0 or len(features) == 0:
            return imputer
        alpha_bar = _alpha_bar(settings.noise_levels)
        optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
        network.train()
        for _ in range(settings.train_steps):
            rows = torch.randint(0, len(x), (settings.batch_rows,), generator=generator)
            x0, seen = x[rows], observed[rows]
            # hide a share in [0.1, 0.7] of each row's observed cells: those are reconstructed, the rest condition
            share = 0.1 + 0.6 * torch.rand(len(rows), 1, generator=generator)
            hidden = seen & (torch.rand(x0.shape, generator=generator) < share)
            given = seen & ~hidden
            t = torch.randint(1, settings.noise_levels + 1, (len(rows),), generator=generator)
            a = alpha_bar[t].unsqueeze(-1)
            noised = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=generator)
            predicted = network(torch.where(given, x0, noised), given, t.float() / settings.noise_levels)
            loss = ((predicted - x0) ** 2 * hidden).sum() / hidden.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        network.eval()
        return imputer

    @torch.no_grad()
    def reconstruct(self, matrix: np.ndarray) -> np.ndarray:
        """Every cell of `matrix` [rows, columns] (NaN: missing) as the model fills it; observed cells unchanged."""
        s = self.settings
        given = torch.as_tensor(np.isfinite(matrix))
        x = torch.as_tensor(np.nan_to_num((matrix - self.mean) / self.std), dtype=torch.float32).clamp(-s.clip, s.clip)
        alpha_bar = _alpha_bar(s.noise_levels)
        levels = torch.linspace(s.noise_levels, 0, s.sampling_steps + 1).round().long()
        generator = torch.Generator().manual_seed(s.seed)
        total = torch.zeros_like(x)
        for _ in range(s.samples):
            current = torch.randn(x.shape, generator=generator)
            estimate = current
            for t, t_next in zip(levels[:-1], levels[1:]):
                a, a_next = alpha_bar[t], alpha_bar[t_next]
                level = torch.full((len(x),), float(t) / s.noise_levels)
                estimate = self.network(torch.where(given, x, current), given, level).clamp(-s.clip, s.clip)
                noise = (current - a.sqrt() * estimate) / (1 - a).sqrt().clamp(min=1e-4)
                current = a_next.sqrt() * estimate + (1 - a_next).sqrt() * noise  # DDIM, eta = 0
            total += estimate
        filled = torch.where(given, x, total / s.samples).double().numpy()
        return np.where(np.isfinite(matrix), matrix, filled * self.std + self.mean)

    def fill(self, features: pd.DataFrame) -> pd.DataFrame:
        matrix = _numeric_matrix(features, self.columns)
        if not np.isnan(matrix).any():
            return features
        return _with_filled(features, self.columns, self.reconstruct(matrix))

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "settings": asdict(self.settings)}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().contiguous() for name, t in self.network.state_dict().items()}


Imputer = MeanImputer | DiffusionImputer


def fit_imputer(kind: str | None, features: pd.DataFrame, columns: list[str], seed: int = 0) -> Imputer | None:
    """The fitted imputer `kind` names (None: no imputation), for `columns` of the training rows `features`."""
    if kind is None:
        return None
    if kind == "mean":
        return MeanImputer.fit(features, columns)
    if kind == "diffusion":
        return DiffusionImputer.fit(features, columns, DiffusionSettings(seed=int(seed)))
    raise ConfigError(f"missing_imputation={kind!r} is not one of {list(IMPUTATIONS)} or None")


def imputer_from_state(state: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> Imputer:
    """The imputer `state()` and `tensors()` describe; `CheckpointError` naming `where` when they do not fit."""
    try:
        kind, columns = state["kind"], [str(c) for c in state["columns"]]
        if kind == "mean":
            means = [float(v) for v in state["means"]]
            if len(means) != len(columns) or not all(math.isfinite(v) for v in means):
                raise ValueError(f"'means' must hold one finite number per column ({len(columns)})")
            return MeanImputer(columns, means)
        if kind == "diffusion":
            mean, std = np.asarray(state["mean"], dtype=np.float64), np.asarray(state["std"], dtype=np.float64)
            if mean.shape != (len(columns),) or std.shape != (len(columns),) or not (np.isfinite(mean).all() and (std > 0).all()):
                raise ValueError(f"'mean' and 'std' must hold one finite number per column ({len(columns)}), std positive")
            settings = DiffusionSettings(**state["settings"])
            network = RowDenoiser(len(columns), settings.hidden)
            network.load_state_dict(tensors, strict=True)
            return DiffusionImputer(columns, mean, std, settings, network)
        raise ValueError(f"'kind' must be one of {list(IMPUTATIONS)}, got {kind!r}")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: the saved imputer cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                              "save the estimator again") from None
