"""`python -m jobs.scaling`: the scaling law of pretraining on the prior.

    python -m jobs.scaling run --config jobs/configs/icl/stage1.yaml --widths 16 32 64 --tasks 1000 2000 4000 \\
        --holdout 48:2800            # pretrain the grid (and one held-out run), each tagged in MLflow
    python -m jobs.scaling fit [--holdout scaling-d48-t2800]     # fit L(N, D) to the finished runs, with bootstrap
    python -m jobs.scaling plan --cpu-hours 2                    # the N and D that budget buys, and the expected L

`fit` and `plan` read the runs of `--experiment` (default `scaling`) in the MLflow store the config names
(tracking.tracking_uri, else tracking.local_dir's sqlite file; `--tracking-uri` overrides). benchmarks.scaling
runs the grid and writes benchmarks/results/scaling.md.
"""

from __future__ import annotations

import argparse

from jobs._cli import config_from, parser, run_main


def _grid_run(text: str, role: str, p: argparse.ArgumentParser):
    from basisfm.scaling import GridRun

    try:
        width, tasks = (int(v) for v in text.split(":"))
    except ValueError:
        p.error(f"run --holdout takes WIDTH:TASKS such as 48:2800, got {text!r}")
    return GridRun(width, tasks, role)


def main() -> int:
    p = parser("Scaling law of pretraining on the prior: run the grid, fit L(N, D), plan a compute budget.")
    p.add_argument("command", choices=["run", "fit", "plan"])
    p.add_argument("--experiment", default=None, help="MLflow experiment of the scaling runs (default: scaling)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (tracking.tracking_uri)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="run: model widths (d_model)")
    p.add_argument("--tasks", type=int, nargs="+", default=[1000, 2000, 4000], help="run: task budgets")
    p.add_argument("--holdout", metavar="RUN", help="run: WIDTH:TASKS of an extra run the fit leaves out; "
                                                    "fit: the name of a run to leave out and predict")
    p.add_argument("--form", choices=["auto", "chinchilla", "shared", "data"], default="auto",
                   help="the law's form (auto: the lowest leave-one-out error)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N", help="bootstrap refits for the uncertainty")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--cpu-hours", type=float, help="plan: CPU core-hours to spend (one training thread)")
    budget.add_argument("--gpu-hours", type=float, help="plan: GPU-hours to spend (needs GPU runs in the store)")
    p.add_argument("--max-parameters", type=float, help="plan: largest model to consider (default 10x the largest run)")
    args = p.parse_args()
    config = config_from(args, [f"tracking.tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])

    from basisfm.scaling import SCALING_EXPERIMENT
    from basisfm.scaling.report import fit_summary, plan_summary
    from basisfm.tracking import resolve_tracking_uri

    experiment = args.experiment or SCALING_EXPERIMENT
    if args.command == "run":
        from basisfm.scaling import GridRun, run_grid

        runs = [GridRun(w, t) for w in args.widths for t in args.tasks]
        if args.holdout:
            runs.append(_grid_run(args.holdout, "holdout", p))
        points = run_grid(config, runs, experiment)
        print(f"[scaling] {len(points)} runs in experiment {experiment!r} at {resolve_tracking_uri(config.tracking)}; "
              "fit them with `python -m jobs.scaling fit`")
        return 0
    uri = resolve_tracking_uri(config.tracking, create_local_dir=False)
    if args.command == "fit":
        print(fit_summary(uri, experiment, form=args.form, holdout=args.holdout, bootstrap=args.bootstrap))
        return 0
    if args.cpu_hours is None and args.gpu_hours is None:
        p.error("plan needs --cpu-hours X or --gpu-hours X")
    device, hours = ("gpu", args.gpu_hours) if args.gpu_hours is not None else ("cpu", args.cpu_hours)
    print(plan_summary(uri, experiment, hours * 3600.0, device=device, form=args.form, bootstrap=args.bootstrap,
                       max_parameters=args.max_parameters))
    return 0


if __name__ == "__main__":
    run_main(main)
