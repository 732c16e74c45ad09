"""AdamW, LAMB, Sophia-G or Muon (`train.optimizer`): which trains the in-context curriculum's first stages fastest?

Stage 1 (`jobs/configs/icl/stage1.yaml`, tab2d tiny on the easy prior) once per (optimizer, lr), every arm the same
steps, schedule, seed and task stream, each capped by the clock; then stage 2 (`stage2.yaml`) from each optimizer's
better stage-1 checkpoint. Compared by the held-out prior ratio (`val_prior_ratio`: the model's squared error over
the context mean's on held-out prior tasks; lower is better) at equal steps and at equal wall time.

    python -m benchmarks.optimizers --quick --out /tmp/optimizers     # 4 short arms, stage 1 only: < 10 minutes
    python -m benchmarks.optimizers                                   # 8 stage-1 arms + 4 stage-2 arms: ~40 minutes

Training runs go to `--work-dir` (their own MLflow store, experiment `optimizers`); the page and PNG to `--out`.
Wall time on a shared machine drifts with its load: the page records the load; compare arms of one run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from benchmarks._report import RESULTS_DIR, commit, markdown_page, publish, pyplot, save_figure

NAME = "optimizers"
ROOT = Path(__file__).resolve().parents[1]
STAGES = {1: ROOT / "jobs" / "configs" / "icl" / "stage1.yaml", 2: ROOT / "jobs" / "configs" / "icl" / "stage2.yaml"}
# Two lrs each: the curriculum's AdamW 3e-3 for all, and one the method's authors would try first: larger for the
# norm-relative LAMB and the RMS-matched Muon (whose steps are relative to the weights), smaller for Sophia (its
# clipped steps are sign-like, a full lr per coordinate wherever the Hessian estimate is flat).
LEARNING_RATES = {"adamw": (3e-3, 1e-2), "lamb": (3e-3, 1e-2), "sophia": (3e-3, 1e-3), "muon": (3e-3, 1e-2)}


@dataclass
class Arm:
    stage: int
    optimizer: str
    lr: float
    run_name: str
    curve: list[tuple[int, float, float, float]] = field(default_factory=list)  # (step, minutes, tasks, ratio)
    checkpoint: Path | None = None
    run_id: str | None = None

    @property
    def final(self) -> tuple[int, float, float, float]:
        return self.curve[-1]

    def ratio_at_step(self, step: int) -> float:
        """The ratio at the last validation at or before `step`."""
        before = [c for c in self.curve if c[0] <= step]
        return before[-1][3] if before else float("nan")

    def ratio_at_minutes(self, minutes: float) -> float:
        """The ratio the run had reached by `minutes` of wall time (its last validation by then)."""
        before = [c for c in self.curve if c[1] <= minutes + 1e-9]
        return before[-1][3] if before else float("nan")


def validation_curve(run_dir: Path) -> list[tuple[int, float, float, float]]:
    """(step, wall minutes, tasks seen, val_prior_ratio) at each validation of a finished run, from its metrics.jsonl."""
    from basisfm.tracking.run_directory import read_metrics

    by_step: dict[int, dict[str, float]] = {}
    for name, value, step in read_metrics(run_dir):
        by_step.setdefault(step, {})[name] = value
    return [(step, m["wall_minutes"], m.get("tasks_seen", float("nan")), m["val_prior_ratio"])
            for step, m in sorted(by_step.items()) if "val_prior_ratio" in m and "wall_minutes" in m]


def run_arm(arm: Arm, args, *, steps: int, minutes: float, init_from: Path | None = None) -> Arm:
    from basisfm.config import load_config
    from basisfm.train import pretrain

    work = Path(args.work_dir).resolve()
    overrides = [f"train.optimizer={arm.optimizer}", f"train.lr={arm.lr}", f"train.steps={steps}",
                 f"train.warmup_steps={max(1, steps // 20)}", f"train.max_minutes={minutes}",
                 f"train.validate_every={args.validate_every}", f"train.log_every={args.validate_every}",
                 f"train.checkpoint_every={steps}", f"train.run_name={arm.run_name}",
                 f"train.storage_path={work / 'runs'}", f"tracking.local_dir={work / 'track'}",
                 f"tracking.experiment={NAME}", "tracking.register=false", *args.set]
    if init_from is not None:
        overrides.append(f"train.init_from={init_from}")
    config = load_config(STAGES[arm.stage], overrides)
    print(f"[{NAME}] stage {arm.stage}, {arm.optimizer} lr {arm.lr:g}: {steps} steps, at most {minutes:g} minutes",
          flush=True)
    result = pretrain(config)
    arm.curve, arm.checkpoint, arm.run_id = validation_curve(result.run_dir), result.checkpoint_dir, result.run_id
    step, wall, _, ratio = arm.final
    print(f"[{NAME}] stage {arm.stage}, {arm.optimizer} lr {arm.lr:g}: ratio {ratio:.3f} at step {step} "
          f"({wall:.1f} min)", flush=True)
    return arm


def compare(arms: list[Arm]) -> tuple[int, float]:
    """The equal-steps point (the fewest steps any arm finished) and the equal-time point (the shortest wall time)."""
    return min(a.final[0] for a in arms), min(a.final[1] for a in arms)


def table(stage: int, arms: list[Arm], steps_point: int, minutes_point: float) -> list[str]:
    lines = [f"| stage | optimizer | lr | steps done | minutes | s / step | ratio at {steps_point} steps | "
             f"ratio at {minutes_point:.2f} min | final ratio |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a in sorted(arms, key=lambda a: a.ratio_at_minutes(minutes_point)):
        step, wall, _, ratio = a.final
        lines.append(f"| {stage} | {a.optimizer} | {a.lr:g} | {step} | {wall:.2f} | {60 * wall / step:.3f} | "
                     f"{a.ratio_at_step(steps_point):.3f} | {a.ratio_at_minutes(minutes_point):.3f} | {ratio:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one lr each (3e-3), short stage 1 only: under 10 minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--work-dir", default="runs/optimizers", help="training runs and their MLflow store")
    p.add_argument("--optimizers", nargs="+", default=list(LEARNING_RATES), choices=list(LEARNING_RATES))
    p.add_argument("--stage1-steps", type=int, default=None, help="steps per stage-1 arm (default 600; --quick 200)")
    p.add_argument("--stage1-minutes", type=float, default=None, help="clock cap per stage-1 arm (default 4; --quick 1.5)")
    p.add_argument("--stage2-steps", type=int, default=300)
    p.add_argument("--stage2-minutes", type=float, default=2.0)
    p.add_argument("--validate-every", type=int, default=50)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides, every arm")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    args = p.parse_args(argv)
    steps1 = args.stage1_steps or (200 if args.quick else 600)
    minutes1 = args.stage1_minutes or (1.5 if args.quick else 4.0)
    began = time.perf_counter()

    stage1 = []
    for optimizer in args.optimizers:
        for lr in LEARNING_RATES[optimizer][:1 if args.quick else 2]:
            arm = Arm(1, optimizer, lr, f"s1-{optimizer}-lr{lr:g}")
            stage1.append(run_arm(arm, args, steps=steps1, minutes=minutes1))
    best = {o: min((a for a in stage1 if a.optimizer == o), key=lambda a: a.final[3]) for o in args.optimizers}
    stage2 = []
    if not args.quick:
        for optimizer, first in best.items():
            arm = Arm(2, optimizer, first.lr, f"s2-{optimizer}-lr{first.lr:g}")
            stage2.append(run_arm(arm, args, steps=args.stage2_steps, minutes=args.stage2_minutes,
                                  init_from=first.checkpoint))

    points1 = compare(stage1)
    s1_best = min(stage1, key=lambda a: a.ratio_at_minutes(points1[1]))
    headline = (f"stage 1 at equal wall time ({points1[1]:.2f} min): {s1_best.optimizer} (lr {s1_best.lr:g}) "
                f"{s1_best.ratio_at_minutes(points1[1]):.3f}, AdamW (best lr) "
                f"{min(a.ratio_at_minutes(points1[1]) for a in stage1 if a.optimizer == 'adamw'):.3f}"
                if any(a.optimizer == "adamw" for a in stage1) else f"stage 1: {s1_best.optimizer} best")
    lines = ["# Optimizers on the in-context curriculum's first stages: held-out prior ratio", "",
             f"Headline: {headline}", "",
             f"Stage 1 (`stage1.yaml`: tab2d tiny, the easy prior) from random weights, every arm {steps1} steps "
             f"(cosine schedule over them, warm-up {max(1, steps1 // 20)}) or {minutes1:g} minutes, whichever ends first, "
             f"same seed and task stream; "
             + (f"stage 2 (`stage2.yaml`) from each optimizer's better stage-1 checkpoint, {args.stage2_steps} steps or "
                f"{args.stage2_minutes:g} minutes. " if stage2 else "no stage 2 (--quick). ")
             + f"`val_prior_ratio` (model / context-mean squared error on 64 held-out prior tasks; lower is better) every "
               f"{args.validate_every} steps. Learning rates tried: "
             + ", ".join(f"{o} {' and '.join(f'{lr:g}' for lr in LEARNING_RATES[o][:1 if args.quick else 2])}"
                         for o in args.optimizers) + ".", "",
             *table(1, stage1, *points1), ""]
    if stage2:
        points2 = compare(stage2)
        lines += [*table(2, stage2, *points2), ""]
    context = {
        "command": "python -m benchmarks.optimizers " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f} at the end",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "total minutes": f"{(time.perf_counter() - began) / 60:.1f}",
        "training runs": f"{Path(args.work_dir).resolve()}/track (MLflow experiment {NAME!r})",
        "commit": commit(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }

    def render(path: Path) -> Path:
        plt = pyplot()
        stages = [s for s in (stage1, stage2) if s]
        fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
        colours = {o: f"C{i}" for i, o in enumerate(LEARNING_RATES)}
        for ax, arms in zip(axes[0], stages):
            for a in arms:
                style = "-" if a.lr == LEARNING_RATES[a.optimizer][0] else "--"
                ax.plot([c[1] for c in a.curve], [c[3] for c in a.curve], style, color=colours[a.optimizer],
                        label=f"{a.optimizer} lr {a.lr:g}")
            ax.set_xlabel("wall minutes")
            ax.set_ylabel("held-out prior ratio (lower is better)")
            ax.set_title(f"stage {arms[0].stage}")
            ax.legend(fontsize=8)
        return save_figure(fig, path)

    metrics = {f"stage{a.stage}_{a.optimizer}_lr{a.lr:g}_ratio": a.final[3] for a in stage1 + stage2}
    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"quick": args.quick, "stage1_steps": steps1, "stage1_minutes": minutes1,
                    "optimizers": ",".join(args.optimizers)}, metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
