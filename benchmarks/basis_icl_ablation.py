"""Why basis_icl did not learn, and what made it learn: arms on the curriculum's first stage at equal steps.

Every arm is one `basisfm.train.pretrain` run (the local launcher, one process, `--threads` CPU threads) of
`jobs/configs/icl/stage1.yaml` with a few config overrides, for the same number of steps (`--steps`, the cosine
schedule's length; `--minutes` caps each arm's wall clock), one arm at a time; equal steps rather than equal
wall-clock minutes because the machine is shared and its load changes between arms: the table gives each arm's
CPU-minutes, so arms compare at equal compute as well. The held-out prior ratio (`val_prior_ratio`: the model's squared error
over the context mean's on 64 held-out prior tasks, below 1 = it reads the features) is logged every
`--validate-every` steps. Arms: tab2d (the architecture that learns on this stage), basis_icl as it was (row
summary not normalised, the target column's token added raw), basis_icl as it is now (the summary standardised
on the support rows), one change at a time from it (a per-row layer norm or no norm instead, the raw column
token, the compression seeing support targets, a 10x lower learning rate, a 10x longer warm-up, SMR bits
instead of the binned head, no random identity per column), and the row-token yardstick: the same
across-rows model over a row's numbers alone (`model.icl_row_summary=numbers`).

    python -m benchmarks.basis_icl_ablation --quick          # the six main arms, 200 steps each
    python -m benchmarks.basis_icl_ablation --steps 400      # every arm: the results page's run

Stage 1 has one target per task, so a row's per-target tokens are one token per row there (T = 1): the
per-target vs one-row-token question cannot be told apart on this stage and has no arm.
Writes benchmarks/results/basis_icl_ablation.md and .png (or under --out), run directories under --work-dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "basis_icl_ablation"
ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ROOT / "jobs" / "configs" / "icl" / "stage1.yaml"
AS_WAS = ["model.icl_row_norm=none", "model.icl_target_column_token=true", "model.icl_column_identity=false"]


@dataclass(frozen=True)
class Arm:
    name: str
    what: str  # one line for the table
    overrides: tuple[str, ...] = field(default_factory=tuple)
    quick: bool = False  # in the --quick set


ARMS = [
    Arm("basis_icl", "basis_icl now: row summary standardised on the support rows, no raw column token, a random identity per column",
        ("model.architecture=basis_icl",), quick=True),
    Arm("basis_icl as was", "row summary not normalised, the target column's token added raw (the old model)",
        ("model.architecture=basis_icl", *AS_WAS), quick=True),
    Arm("row-token yardstick", "the same across-rows model over an MLP of the row's standardised numbers",
        ("model.architecture=basis_icl", "model.icl_row_summary=numbers"), quick=True),
    Arm("tab2d", "2-D cell attention (the curriculum's model)", ("model.architecture=tab2d",), quick=True),
    Arm("layer norm", "basis_icl now, the row summary layer-normalised per row instead",
        ("model.architecture=basis_icl", "model.icl_row_norm=layer"), quick=True),
    Arm("no row norm", "basis_icl now, the row summary not normalised",
        ("model.architecture=basis_icl", "model.icl_row_norm=none")),
    Arm("raw column token", "basis_icl now, with the target column's token added raw",
        ("model.architecture=basis_icl", "model.icl_target_column_token=true")),
    Arm("targets shown to summary", "basis_icl now, the compression reading support rows' target cells",
        ("model.architecture=basis_icl", "model.icl_summary_sees_targets=true")),
    Arm("lr 3e-4", "basis_icl now at a 10x lower learning rate", ("model.architecture=basis_icl", "train.lr=3e-4")),
    Arm("no warm-up", "basis_icl now without the 100 warm-up steps",
        ("model.architecture=basis_icl", "train.warmup_steps=0")),
    Arm("SMR bits head", "basis_icl now reading targets out as SMR bits, not bins",
        ("model.architecture=basis_icl", "model.regression_head=smr_bits")),
    Arm("no column identity", "basis_icl now without the random identity per column (unnamed columns look alike)",
        ("model.architecture=basis_icl", "model.icl_column_identity=false"), quick=True),
]


def run_arm(arm: Arm, args) -> dict:
    """Train one arm for `args.steps`; its curve (step, wall minutes, tasks, ratio) from the run directory."""
    from basisfm.config import load_config
    from basisfm.tracking.run_directory import read_metrics
    from basisfm.train import pretrain

    work = Path(args.work_dir).resolve()
    run_name = "arm-" + "".join(ch if ch.isalnum() else "-" for ch in arm.name) + (f"-{args.label}" if args.label else "")
    shutil.rmtree(work / "runs" / run_name, ignore_errors=True)  # a leftover run would be resumed, not restarted
    overrides = [*arm.overrides, f"train.steps={args.steps}", f"train.max_minutes={args.minutes}", f"train.validate_every={args.validate_every}",
                 "train.checkpoint_every=1000000", f"train.log_every={args.validate_every}", f"train.seed={args.seed}",
                 f"priors.seed={args.seed}", f"train.run_name={run_name}", f"train.storage_path={work / 'runs'}",
                 f"tracking.local_dir={work / 'track'}", "tracking.register=false", f"tracking.experiment={NAME}"]
    config = load_config(STAGE1, overrides)
    began, began_cpu = time.perf_counter(), time.process_time()
    result = pretrain(config)
    wall_s, cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
    by_step: dict[int, dict[str, float]] = {}
    for name, value, step in read_metrics(result.run_dir):
        by_step.setdefault(step, {})[name] = value
    curve = [(step, m["wall_minutes"], m["tasks_seen"], m["val_prior_ratio"]) for step, m in sorted(by_step.items())
             if "val_prior_ratio" in m and "wall_minutes" in m]
    if not curve:
        raise RuntimeError(f"arm {arm.name!r} logged no val_prior_ratio in {result.run_dir}")
    best = min(curve, key=lambda point: point[3])
    return {"arm": arm, "curve": curve, "final": curve[-1][3], "best": best[3], "best_step": best[0],
            "steps": curve[-1][0], "tasks": int(curve[-1][2]), "wall_s": wall_s, "cpu_s": cpu_s,
            "parameters": _parameters(config.model)}


def _parameters(model_config) -> int:
    from basisfm.model import build_model, count_parameters

    return count_parameters(build_model(model_config))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the six main arms, 200 steps each (unless --steps)")
    p.add_argument("--steps", type=int, default=None, help="steps per arm, the cosine schedule's length (default 400; 200 with --quick)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock cap per arm (a stopped arm shows fewer steps)")
    p.add_argument("--arms", nargs="+", default=None, choices=[a.name for a in ARMS], metavar="ARM",
                   help="run these arms only (names as in the table)")
    p.add_argument("--validate-every", type=int, default=100, help="steps between held-out ratios")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (equal for every arm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="runs/basis_icl_ablation")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and plot go")
    p.add_argument("--label", default=None, help="page name suffix: basis_icl_ablation_LABEL.md (a second run beside the first)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    args = p.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (200 if args.quick else 400)
    arms = [a for a in ARMS if (a.name in args.arms if args.arms else (a.quick or not args.quick))]

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for number, arm in enumerate(arms, start=1):
        print(f"[{NAME}] {arm.name}: {' '.join(arm.overrides)}, {args.steps} steps", flush=True)
        rows.append(run_arm(arm, args))
        r = rows[-1]
        print(f"[{NAME}] {arm.name}: ratio {r['final']:.3f} (best {r['best']:.3f}) after {r['steps']} steps", flush=True)
        # The page after every arm: an interrupted run still leaves the arms it finished (MLflow gets the last).
        write_page(rows, args, argv, log=number == len(arms) and not args.no_mlflow)
    return 0


def write_page(rows: list[dict], args, argv: list[str] | None, *, log: bool) -> None:
    title = "# basis_icl ablation: held-out prior ratio on the curriculum's stage 1 at equal steps"
    lines = [title + (f" ({args.label} run, {args.steps:,} steps)" if args.label else ""), "",
             _headline(rows), "",
             f"Each arm: `jobs/configs/icl/stage1.yaml` through `basisfm.train.pretrain` (local launcher, {args.threads} "
             f"thread(s)) for {args.steps} steps of 8 tasks (the cosine schedule's length; at most {args.minutes:g} wall-clock "
             f"minutes), one arm at a time, seed {args.seed}. Ratio: the model's "
             "squared error over the context mean's on 64 held-out prior tasks (median; below 1 it reads the features; "
             "ridge 0.370 and 5-NN 0.776 on this stage's tasks, `icl_prior_pretrain_cpu_stage1.md`).", "",
             "| arm | what changes | parameters | steps | tasks | CPU-minutes | final ratio | best ratio (step) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['arm'].name} | {r['arm'].what} | {r['parameters']:,} | {r['steps']:,} | {r['tasks']:,} | {r['cpu_s'] / 60:.1f} | "
                     f"{r['final']:.3f} | {r['best']:.3f} ({r['best_step']:,}) |")
    lines += ["", "Curves (step: ratio):", ""]
    for r in rows:
        lines.append(f"- {r['arm'].name}: " + ", ".join(f"{s}: {ratio:.3f}" for s, _, _, ratio in r["curve"]))
    lines += ["", "Overrides per arm: " + "; ".join(f"{r['arm'].name}: `{' '.join(r['arm'].overrides)}`" for r in rows), ""]
    context = page_context("basis_icl_ablation", argv, machine=f"shared with other work; load average {os.getloadavg()[0]:.1f} "
                                                              "at the end (minutes are wall-clock: a loaded machine gives fewer steps)")

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, (by_minutes, by_step) = plt.subplots(1, 2, figsize=(11, 4))
        for r in rows:
            style = "-" if r["arm"].quick else "--"
            by_minutes.plot([c[1] for c in r["curve"]], [c[3] for c in r["curve"]], style, label=r["arm"].name)
            by_step.plot([c[0] for c in r["curve"]], [c[3] for c in r["curve"]], style, label=r["arm"].name)
        for ax, xlabel in ((by_minutes, "wall-clock minutes"), (by_step, "optimizer steps (8 tasks each)")):
            ax.axhline(1.0, color="grey", linewidth=0.8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out prior ratio (model / context mean)")
        by_step.legend(fontsize=7)
        fig.suptitle(f"basis_icl ablation, stage 1, {args.steps} steps per arm")
        return save_figure(fig, path)

    name = f"{NAME}_{args.label}" if args.label else NAME
    publish(name, markdown_page(lines, context), render, out_dir=args.out, log=log,
            params={"steps": args.steps, "minutes": args.minutes, "threads": args.threads, "seed": args.seed, "arms": len(rows)},
            metrics={f"final_{r['arm'].name.replace(' ', '_')}": r["final"] for r in rows})


def _headline(rows: list[dict]) -> str:
    ranked = sorted(rows, key=lambda r: r["final"])
    return "Headline: " + "; ".join(f"{r['arm'].name} {r['final']:.3f}" for r in ranked) + " (final held-out ratio, lower is better)"


if __name__ == "__main__":
    raise SystemExit(main())
