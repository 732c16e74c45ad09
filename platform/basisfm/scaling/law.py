"""The scaling law of pretraining on the prior: the held-out ratio L a model of N parameters reaches after D tasks,
fitted to finished runs, with bootstrap uncertainty, and the compute-optimal (N, D) for a budget of seconds.

Three forms, fitted by least squares on log L (each point counts by its relative error, as in Hoffmann et al. 2022):
  - `chinchilla`: L = E + A / N^alpha + B / D^beta (5 parameters);
  - `shared`:     the same with alpha = beta (4): Hoffmann et al. found the two exponents close;
  - `data`:       L = E + B / D^beta (3): the model's size does not matter over the range measured.
With ~10 points five parameters are barely determined, so `select_form` keeps the form whose leave-one-out
prediction error is lowest, and the page reports all three.

Cost: seconds per task = c0 + c1 * N (`CostModel`), measured from the same runs; at these small sizes the per-task
overhead (generating the episode, Python) is a large share, so a pure c1 * N would misplan.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from basisfm.errors import ConfigError

FORMS = ("chinchilla", "shared", "data")


@dataclass(frozen=True)
class ScalingPoint:
    """One finished pretraining run: its size, budget, held-out ratio and cost."""

    run: str  # the run's name
    parameters: int  # N
    tasks: float  # D: prior tasks trained on
    loss: float  # L: the held-out prior ratio at the end (val_prior_ratio)
    seconds: float = float("nan")  # wall seconds of training
    device: str = "cpu"  # "cpu" or "gpu": whose cost model it measures


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (A = 0 in the `data` form; alpha = beta in `shared`)."""

    form: str
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def predict(self, parameters, tasks) -> np.ndarray:
        n, d = np.asarray(parameters, dtype=float), np.asarray(tasks, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def describe(self) -> str:
        size = "" if self.form == "data" else f" + {self.A:.4g} / N^{self.alpha:.3f}"
        return f"L = {self.E:.4f}{size} + {self.B:.4g} / D^{self.beta:.3f}"


def _unpack(form: str, theta: np.ndarray) -> LossLaw:
    """theta holds log E, log A, log B and the exponents: positive coefficients by construction."""
    if form == "chinchilla":
        e, a, alpha, b, beta = theta
    elif form == "shared":
        e, a, b, alpha = theta
        beta = alpha
    else:
        e, b, beta = theta
        a, alpha = -math.inf, 0.0
    return LossLaw(form, math.exp(e), math.exp(a), float(alpha), math.exp(b), float(beta))


def _starts(form: str, points: Sequence[ScalingPoint]) -> list[np.ndarray]:
    """A grid of starting points (the log-loss surface has several basins; Hoffmann et al. also start from a grid)."""
    floor = math.log(max(1e-3, 0.5 * min(p.loss for p in points)))
    es, coefficients, exponents = (floor,), (0.0, 4.0), (0.3, 0.9)
    if form == "chinchilla":
        return [np.array([e, a, x, b, y]) for e, a, x, b, y in itertools.product(es, coefficients, exponents, coefficients, exponents)]
    if form == "shared":
        return [np.array([e, a, b, x]) for e, a, b, x in itertools.product(es, coefficients, coefficients, exponents)]
    return [np.array([e, b, y]) for e, b, y in itertools.product(es, coefficients, exponents)]


def fit_law(points: Sequence[ScalingPoint], form: str = "chinchilla", starts: Sequence[np.ndarray] | None = None) -> LossLaw:
    """The `form` law minimising the squared error of log L over `points` (best of several starts)."""
    from scipy.optimize import least_squares

    if form not in FORMS:
        raise ConfigError(f"scaling law form {form!r} is not one of {', '.join(FORMS)}")
    if len(points) < {"chinchilla": 5, "shared": 4, "data": 3}[form]:
        raise ConfigError(f"the {form} form needs at least {5 if form == 'chinchilla' else 4 if form == 'shared' else 3} "
                         f"runs to fit, got {len(points)}")
    n = np.array([p.parameters for p in points], dtype=float)
    d = np.array([p.tasks for p in points], dtype=float)
    log_loss = np.log(np.array([p.loss for p in points], dtype=float))
    low = {"chinchilla": [-20, -20, 0.0, -20, 0.0], "shared": [-20, -20, -20, 0.0], "data": [-20, -20, 0.0]}[form]
    high = {"chinchilla": [3, 40, 3.0, 40, 3.0], "shared": [3, 40, 40, 3.0], "data": [3, 40, 3.0]}[form]

    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.log(_unpack(form, theta).predict(n, d)) - log_loss

    best = None
    for start in starts if starts is not None else _starts(form, points):
        result = least_squares(residuals, np.clip(start, low, high), bounds=(low, high), method="trf")
        if best is None or result.cost < best.cost:
            best = result
    return _unpack(form, best.x)


def _theta(law: LossLaw) -> np.ndarray:
    """The inverse of `_unpack`: a fitted law as a starting point for a refit."""
    log = lambda v: math.log(max(v, 1e-300))  # noqa: E731
    if law.form == "chinchilla":
        return np.array([log(law.E), log(law.A), law.alpha, log(law.B), law.beta])
    if law.form == "shared":
        return np.array([log(law.E), log(law.A), log(law.B), law.alpha])
    return np.array([log(law.E), log(law.B), law.beta])


def bootstrap_laws(points: Sequence[ScalingPoint], law: LossLaw, samples: int = 200, seed: int = 0) -> list[LossLaw]:
    """Refits of `law`'s form to `samples` resamples of the runs (with replacement), each started from `law` and
    a few grid points: the spread of these laws is the fit's uncertainty. Resamples with too few distinct runs
    to determine the form are redrawn."""
    rng = np.random.default_rng(seed)
    needed = {"chinchilla": 5, "shared": 4, "data": 3}[law.form]
    grid = _starts(law.form, points)
    laws = []
    while len(laws) < samples:
        chosen = rng.integers(0, len(points), len(points))
        if len(set(chosen.tolist())) < needed:
            continue
        starts = [_theta(law)] + [grid[i] for i in rng.choice(len(grid), size=min(3, len(grid)), replace=False)]
        laws.append(fit_law([points[i] for i in chosen], law.form, starts=starts))
    return laws


def leave_one_out_error(points: Sequence[ScalingPoint], form: str) -> float:
    """Root mean squared relative error of predicting each run from a fit to the others."""
    errors = []
    for i, held in enumerate(points):
        law = fit_law([p for j, p in enumerate(points) if j != i], form)
        errors.append(float(law.predict(held.parameters, held.tasks)) / held.loss - 1.0)
    return float(np.sqrt(np.mean(np.square(errors))))


def select_form(points: Sequence[ScalingPoint]) -> tuple[str, dict[str, float]]:
    """The form with the lowest leave-one-out error, and every form's error (forms with too few runs left out)."""
    errors = {form: leave_one_out_error(points, form) for form in FORMS
              if len(points) - 1 >= {"chinchilla": 5, "shared": 4, "data": 3}[form]}
    if not errors:
        raise ConfigError(f"fitting a scaling law needs at least 4 runs, got {len(points)}")
    return min(errors, key=errors.get), errors


@dataclass(frozen=True)
class CostModel:
    """Seconds to train on one task with a model of N parameters: c0 + c1 * N."""

    per_task: float  # c0, seconds
    per_task_parameter: float  # c1, seconds per parameter
    device: str

    def seconds(self, parameters, tasks) -> np.ndarray:
        return np.asarray(tasks, dtype=float) * (self.per_task + self.per_task_parameter * np.asarray(parameters, dtype=float))

    def tasks_for(self, seconds: float, parameters) -> np.ndarray:
        return seconds / (self.per_task + self.per_task_parameter * np.asarray(parameters, dtype=float))


def fit_cost(points: Sequence[ScalingPoint], device: str = "cpu") -> CostModel:
    """Non-negative least squares of each run's seconds per task on (1, N), over the runs on `device`."""
    from scipy.optimize import nnls

    measured = [p for p in points if p.device == device and math.isfinite(p.seconds) and p.tasks > 0]
    if len(measured) < 2:
        raise ConfigError(f"planning a {device.upper()} budget needs at least 2 finished {device.upper()} runs with their "
                         f"wall time to measure the cost of a task, found {len(measured)}; run the scaling grid there "
                         "(python -m jobs.scaling run) or plan with the other budget flag")
    scale = max(p.parameters for p in measured)  # columns of similar size for a well-conditioned solve
    design = np.array([[1.0, p.parameters / scale] for p in measured])
    target = np.array([p.seconds / p.tasks for p in measured])
    (c0, c1), _ = nnls(design, target)
    return CostModel(float(c0), float(c1) / scale, device)


@dataclass(frozen=True)
class Plan:
    seconds: float  # the budget
    parameters: float  # N*
    tasks: float  # D*
    loss: float  # L(N*, D*) by the fitted law
    loss_interval: tuple[float, float]  # 5th-95th percentile of the bootstrap laws' L(N*, D*)
    parameters_interval: tuple[float, float]  # 5th-95th percentile of each bootstrap law's own N*
    at_edge: bool  # N* is at an end of the search range: the law would go further than the runs measured


def compute_optimal(law: LossLaw, cost: CostModel, seconds: float, parameter_range: tuple[float, float],
                    laws: Sequence[LossLaw] = ()) -> Plan:
    """The N in `parameter_range` (log grid) that minimises L(N, D) with D = the tasks `seconds` buys at that N."""
    if seconds <= 0:
        raise ConfigError(f"the compute budget must be positive, got {seconds!r} seconds")
    grid = np.geomspace(parameter_range[0], parameter_range[1], 400)

    def best(candidate: LossLaw) -> int:
        return int(np.argmin(candidate.predict(grid, cost.tasks_for(seconds, grid))))

    i = best(law)
    n, d = float(grid[i]), float(cost.tasks_for(seconds, grid[i]))
    band = (float("nan"), float("nan"))
    n_band = (float("nan"), float("nan"))
    if laws:
        losses = [float(other.predict(n, d)) for other in laws]
        band = (float(np.percentile(losses, 5)), float(np.percentile(losses, 95)))
        optima = [float(grid[best(other)]) for other in laws]
        n_band = (float(np.percentile(optima, 5)), float(np.percentile(optima, 95)))
    return Plan(seconds, n, d, float(law.predict(n, d)), band, n_band, at_edge=i in (0, len(grid) - 1))


def held_out_check(points: Sequence[ScalingPoint], held_out: str, form: str | None = None) -> dict[str, float | str]:
    """Fit on every run but `held_out` (form chosen by leave-one-out on those unless given), predict it. Also the
    error of the plainest baseline, the mean loss of the fitted runs, so a reader sees what the law adds."""
    fitted = [p for p in points if p.run != held_out]
    target = [p for p in points if p.run == held_out]
    if not target:
        raise ConfigError(f"the held-out run {held_out!r} is not among the scaling runs found "
                         f"({', '.join(sorted(p.run for p in points)) or 'none'}); pass one of their names")
    held = target[0]
    form = form or select_form(fitted)[0]
    law = fit_law(fitted, form)
    predicted = float(law.predict(held.parameters, held.tasks))
    baseline = float(np.mean([p.loss for p in fitted]))
    return {"run": held.run, "form": form, "law": law.describe(), "parameters": held.parameters, "tasks": held.tasks,
            "observed": held.loss, "predicted": predicted, "relative_error": predicted / held.loss - 1.0,
            "baseline_relative_error": baseline / held.loss - 1.0}

