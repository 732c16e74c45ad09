"""What `jobs.scaling fit` and `plan` print: the fitted law with its bootstrap intervals, the held-out check, and
the compute-optimal plan for a budget; `ScalingFit` carries the same numbers for benchmarks.scaling's page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from basisfm.errors import ConfigError
from basisfm.scaling.law import (LossLaw, Plan, ScalingPoint, bootstrap_laws, compute_optimal, fit_cost, fit_law,
                                 held_out_check, select_form)
from basisfm.scaling.records import scaling_points


@dataclass
class ScalingFit:
    points: list[ScalingPoint]  # the runs fitted (the held-out one excluded)
    law: LossLaw
    form_errors: dict[str, float]  # leave-one-out relative RMSE of each form ({} when the form was given)
    laws: list[LossLaw]  # bootstrap refits
    check: dict | None  # held_out_check's result, when a run was held out

    def interval(self, name: str) -> tuple[float, float]:
        values = [getattr(law, name) for law in self.laws]
        return float(np.percentile(values, 5)), float(np.percentile(values, 95))


def fit_scaling(tracking_uri: str, experiment: str, *, form: str = "auto", holdout: str | None = None,
                bootstrap: int = 200, runs: set[str] | None = None) -> ScalingFit:
    """Fit the experiment's scaling runs (only those named in `runs`, when given), leaving `holdout` out and
    predicting it."""
    points = scaling_points(tracking_uri, experiment)
    fitted = [p for p in points if p.run != holdout and (runs is None or p.run in runs)]
    if len(fitted) < 4:
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri} has {len(fitted)} finished scaling runs to fit"
                          f"{' besides ' + repr(holdout) if holdout else ''}; a law needs at least 4 (run the grid: "
                          "python -m jobs.scaling run)")
    errors: dict[str, float] = {}
    if form == "auto":
        form, errors = select_form(fitted)
    law = fit_law(fitted, form)
    check = held_out_check(points, holdout, form) if holdout else None
    return ScalingFit(fitted, law, errors, bootstrap_laws(fitted, law, samples=bootstrap) if bootstrap else [], check)


def fit_summary(tracking_uri: str, experiment: str, *, form: str = "auto", holdout: str | None = None,
                bootstrap: int = 200) -> str:
    fit = fit_scaling(tracking_uri, experiment, form=form, holdout=holdout, bootstrap=bootstrap)
    law = fit.law
    lines = [f"scaling law from {len(fit.points)} runs of experiment {experiment!r} ({tracking_uri})",
             f"  form:  {law.form}" + (" (lowest leave-one-out error: " + ", ".join(
                 f"{k} {v:.1%}" for k, v in fit.form_errors.items()) + ")" if fit.form_errors else ""),
             f"  law:   {law.describe()}"]
    if fit.laws:
        names = ["E", "B", "beta"] if law.form == "data" else ["E", "A", "alpha", "B", "beta"]
        lines.append(f"  5-95% over {len(fit.laws)} bootstrap refits: " + ", ".join(
            f"{n} [{fit.interval(n)[0]:.4g}, {fit.interval(n)[1]:.4g}]" for n in names))
    lines.append("  runs (N parameters, D tasks, L observed / fitted):")
    for p in sorted(fit.points, key=lambda p: (p.parameters, p.tasks)):
        lines.append(f"    {p.run:<28} N={p.parameters:>9,} D={p.tasks:>9,.0f} L={p.loss:.4f} / {float(law.predict(p.parameters, p.tasks)):.4f}")
    if fit.check:
        c = fit.check
        verdict = "within" if abs(c["relative_error"]) <= 0.10 else "NOT within"
        lines += [f"  held out {c['run']} (N={c['parameters']:,}, D={c['tasks']:,.0f}): predicted {c['predicted']:.4f}, "
                  f"observed {c['observed']:.4f}, error {c['relative_error']:+.1%} ({verdict} 10%); "
                  f"the fitted runs' mean would be off by {c['baseline_relative_error']:+.1%}"]
    return "\n".join(lines)


def plan_budget(fit: ScalingFit, seconds: float, *, device: str = "cpu", max_parameters: float | None = None) -> tuple[Plan, object]:
    cost = fit_cost(fit.points, device)
    sizes = [p.parameters for p in fit.points]
    upper = max_parameters or 10 * max(sizes)
    if upper <= min(sizes) / 2:
        raise ConfigError(f"--max-parameters {max_parameters:g} is below the smallest model measured ({min(sizes):,})")
    return compute_optimal(fit.law, cost, seconds, (min(sizes) / 2, upper), fit.laws), cost


def plan_summary(tracking_uri: str, experiment: str, seconds: float, *, device: str = "cpu", form: str = "auto",
                 bootstrap: int = 200, max_parameters: float | None = None) -> str:
    fit = fit_scaling(tracking_uri, experiment, form=form, bootstrap=bootstrap)
    plan, cost = plan_budget(fit, seconds, device=device, max_parameters=max_parameters)
    edge = ("\n  note: the optimum is at an end of the range searched, outside the sizes measured: the law is extrapolated "
            "there; the recommendation is a direction, not a size" if plan.at_edge else "")
    return "\n".join([
        f"plan for {seconds / 3600:g} {device.upper()}-hours ({seconds:,.0f} s) from {len(fit.points)} runs of {experiment!r}",
        f"  law:        {fit.law.describe()} ({fit.law.form})",
        f"  cost:       {cost.per_task * 1e3:.2f} ms + {cost.per_task_parameter * 1e9:.3f} ms per million parameters, "
        f"per task (measured on the runs)",
        f"  parameters: {plan.parameters:,.0f} (bootstrap 5-95%: {plan.parameters_interval[0]:,.0f} - {plan.parameters_interval[1]:,.0f})",
        f"  tasks:      {plan.tasks:,.0f}",
        f"  expected held-out ratio: {plan.loss:.4f} (bootstrap 5-95%: {plan.loss_interval[0]:.4f} - {plan.loss_interval[1]:.4f})",
    ]) + edge
