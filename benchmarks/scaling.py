"""A scaling law for pretraining on the prior, and a check of it on a run it did not see.

Runs the grid `jobs.scaling run` runs (tab2d at several widths x several task budgets on stage 1's prior, each run's
cosine schedule spanning its budget) plus one held-out run between the grid's points, fits L(N, D) to the grid
(`basisfm.scaling`, form chosen by leave-one-out error, bootstrap intervals), predicts the held-out run, and plans a
few CPU budgets. L is the held-out prior ratio (`val_prior_ratio` at the end of the run; lower is better).

    python -m benchmarks.scaling --quick --out /tmp/scaling    # 2 widths x 3 small budgets + 1 held out: < 10 minutes
    python -m benchmarks.scaling                               # 3 widths x 3 budgets + 1 held out

The runs are MLflow runs of experiment `scaling` under `--work-dir` (a rerun finds finished runs and does not
retrain them), so `python -m jobs.scaling fit --set tracking.local_dir=WORK_DIR/track` reads the same points.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "scaling"
ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ROOT / "jobs" / "configs" / "icl" / "stage1.yaml"
PLAN_HOURS = (0.1, 1.0, 10.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 widths x 3 small budgets: under 10 minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--work-dir", default="runs/scaling", help="training runs and their MLflow store")
    p.add_argument("--widths", type=int, nargs="+", help="d_model of each size (default 16 32 64; --quick 16 32)")
    p.add_argument("--tasks", type=int, nargs="+", help="task budgets (default 1000 2000 4000; --quick 200 400 800)")
    p.add_argument("--holdout", help="WIDTH:TASKS of the held-out run (default 48:2800; --quick 16:600)")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides, every run")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    args = p.parse_args(argv)
    widths = args.widths or ([16, 32] if args.quick else [16, 32, 64])
    budgets = args.tasks or ([200, 400, 800] if args.quick else [1000, 2000, 4000])
    held_width, held_tasks = (int(v) for v in (args.holdout or ("16:600" if args.quick else "48:2800")).split(":"))

    from basisfm.config import load_config
    from basisfm.scaling import GridRun, SCALING_EXPERIMENT, run_grid
    from basisfm.scaling.report import fit_scaling, plan_budget
    from basisfm.tracking import resolve_tracking_uri

    work = Path(args.work_dir).resolve()
    base = load_config(STAGE1, [f"train.storage_path={work / 'runs'}", f"tracking.local_dir={work / 'track'}", *args.set])
    held = GridRun(held_width, held_tasks, "holdout")
    began = time.perf_counter()
    run_grid(base, [GridRun(w, t) for w in widths for t in budgets] + [held], SCALING_EXPERIMENT)
    minutes = (time.perf_counter() - began) / 60
    uri = resolve_tracking_uri(base.tracking)
    # Only this grid's runs: a store may hold another grid's too (other widths or budgets).
    wanted = {GridRun(w, t).run_name for w in widths for t in budgets}
    fit = fit_scaling(uri, SCALING_EXPERIMENT, holdout=held.run_name, bootstrap=args.bootstrap, runs=wanted)
    law, check = fit.law, fit.check
    plans = [(hours, *plan_budget(fit, hours * 3600.0)) for hours in PLAN_HOURS]
    cost = plans[0][2]
    within = abs(check["relative_error"]) <= 0.10
    spread = max(p.loss for p in fit.points) - min(p.loss for p in fit.points)

    headline = (f"{law.describe()} ({law.form}, {len(fit.points)} runs); held-out {held.run_name} predicted "
                f"{check['predicted']:.3f} vs {check['observed']:.3f} observed ({check['relative_error']:+.1%}, "
                f"{'within' if within else 'not within'} 10%; the grid's mean L: {check['baseline_relative_error']:+.1%})")
    names = ["E", "B", "beta"] if law.form == "data" else ["E", "A", "alpha", "B", "beta"]
    lines = ["# Scaling law of pretraining on the prior: L(N, D) and a held-out check", "", f"Headline: {headline}", "",
             f"tab2d ({base.model.n_layers} layers, head width 16) at widths {', '.join(map(str, widths))} x budgets of "
             f"{', '.join(f'{b:,}' for b in budgets)} prior tasks (stage 1's prior, {base.train.pack_tables} tasks per "
             f"step, a cosine schedule spanning each run's budget, {base.train.optimizer} at lr {base.train.lr:g}, seed "
             f"{base.train.seed}), one "
             f"process, one thread. L = `val_prior_ratio` at the end of the run ({base.train.prior_validation_tasks} held-out "
             "prior tasks; the model's squared error over the context mean's). N counts all the model's parameters.", "",
             "| run | N | D (tasks) | L observed | L fitted | wall s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for pt in sorted(fit.points, key=lambda p: (p.parameters, p.tasks)):
        lines.append(f"| {pt.run} | {pt.parameters:,} | {pt.tasks:,.0f} | {pt.loss:.4f} | "
                     f"{float(law.predict(pt.parameters, pt.tasks)):.4f} | {pt.seconds:.0f} |")
    lines += ["", "## Fit", "",
              f"Form by leave-one-out relative error over the grid: " + ", ".join(
                  f"{k} {v:.2%}" for k, v in fit.form_errors.items()) + f"; kept: **{law.form}**.", "",
              f"`{law.describe()}`", "",
              f"| parameter | fitted | 5% | 95% ({len(fit.laws)} bootstrap refits over runs) |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {n} | {getattr(law, n):.4g} | {fit.interval(n)[0]:.4g} | {fit.interval(n)[1]:.4g} |" for n in names]
    lines += ["", "## Held-out check", "",
              f"{held.run_name} (N = {check['parameters']:,}, D = {check['tasks']:,.0f}), not in the fit: predicted "
              f"{check['predicted']:.4f}, observed {check['observed']:.4f}, relative error {check['relative_error']:+.2%} "
              f"({'within' if within else 'NOT within'} 10%). The plainest predictor, the grid's mean L, is off by "
              f"{check['baseline_relative_error']:+.2%}: over this grid L spans only {spread:.3f}, so 10% is a loose bar "
              "and the comparison with the mean is what says whether the law learned anything.", "",
              "## Plans (`python -m jobs.scaling plan --cpu-hours X`)", "",
              f"Cost per task measured on the runs: {cost.per_task * 1e3:.1f} ms + {cost.per_task_parameter * 1e9:.2f} ms "
              "per million parameters (one thread on this shared machine).", "",
              "| CPU-hours | N | D (tasks) | expected L | 5-95% L | 5-95% N | note |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for hours, plan, _ in plans:
        lines.append(f"| {hours:g} | {plan.parameters:,.0f} | {plan.tasks:,.0f} | {plan.loss:.4f} | "
                     f"{plan.loss_interval[0]:.4f} - {plan.loss_interval[1]:.4f} | {plan.parameters_interval[0]:,.0f} - "
                     f"{plan.parameters_interval[1]:,.0f} | {'at the edge of the search range' if plan.at_edge else ''} |")
    longest = max(p.seconds for p in fit.points)
    lines += ["", f"Extrapolation: these budgets are {PLAN_HOURS[0] * 3600 / longest:.0f}x to {PLAN_HOURS[-1] * 3600 / longest:.0f}x "
              f"the longest run's {longest:.0f} s; the law was fitted on the early part of training (stage 1's "
              "transition comes later, see jobs/configs/icl/stage1.yaml), so they say which way to move, not where "
              "the transition falls.", ""]
    context = page_context("scaling", argv, machine=f"shared; load average {os.getloadavg()[0]:.1f} at the end",
                           extra={"grid minutes": f"{minutes:.1f}",
                                  "training runs": f"{uri} (experiment {SCALING_EXPERIMENT!r})"})

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        sizes = sorted({p.parameters for p in fit.points})
        curve = np.geomspace(min(budgets) / 1.5, max(budgets) * 1.5, 50)
        for i, n in enumerate(sizes):
            mine = [p for p in fit.points if p.parameters == n]
            ax.scatter([p.tasks for p in mine], [p.loss for p in mine], color=f"C{i}")
            ax.plot(curve, law.predict(n, curve), color=f"C{i}", label=f"N = {n:,}")
        ax.scatter([check["tasks"]], [check["observed"]], marker="*", s=140, color="black", label=f"held out (N = {check['parameters']:,})")
        ax.plot(curve, law.predict(check["parameters"], curve), ":", color="black")
        ax.set_xscale("log")
        ax.set_xlabel("D: prior tasks trained on")
        ax.set_ylabel("L: held-out prior ratio")
        ax.set_title(law.describe(), fontsize=8)
        ax.legend(fontsize=8)
        return save_figure(fig, path)

    metrics = {"E": law.E, "B": law.B, "beta": law.beta, "A": law.A, "alpha": law.alpha,
               "holdout_relative_error": check["relative_error"], "holdout_baseline_relative_error": check["baseline_relative_error"]}
    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"widths": widths, "budgets": budgets, "holdout": held.run_name, "form": law.form}, metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
