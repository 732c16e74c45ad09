"""AdamW, LAMB, Sophia-G or Muon (`train.optimizer`): which trains the in-context curriculum's first stages fastest?

Stage 1 (`jobs/configs/icl/stage1.yaml`, tab2d tiny on the easy prior) once per (optimizer, lr), every arm the same
steps, schedule, seed and task stream; then, unless `--stage2-steps 0`, stage 2 (`stage2.yaml`) from each optimizer's
better stage-1 checkpoint. Compared by the held-out prior ratio (`val_prior_ratio`: the model's squared error over
the context mean's on held-out prior tasks; lower is better) at equal steps and at equal time.

Equal time on a shared machine: an arm's wall clock measures the other users' load as much as the optimizer (load
drifts over minutes). So the cost of a step is measured apart, all optimizers interleaved round-robin over the
same batches in one process (`interleaved_step_seconds`), and an arm's time is its steps x its optimizer's cost
per step; each run's own wall minutes are reported beside.

    python -m benchmarks.optimizers --quick --out /tmp/optimizers     # one lr each, stage 1 only: < 10 minutes
    python -m benchmarks.optimizers                                   # 8 stage-1 arms + 4 stage-2 arms

Training runs go to `--work-dir` (their own MLflow store, experiment `optimizers`); the page and PNG to `--out`.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

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

    def ratio_at_seconds(self, seconds: float, step_seconds: dict[str, float]) -> float:
        """The ratio the run had reached by `seconds` of its optimizer's measured step cost (its last validation by then)."""
        return self.ratio_at_step(int(seconds / step_seconds[self.optimizer] + 1e-9))


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


def interleaved_step_seconds(optimizers: list[str], steps: int = 10, rounds: int = 3) -> dict[str, float]:
    """Median seconds per optimizer step of stage 1's model and batches for each optimizer, measured round-robin
    (`rounds` x `steps` steps each, the same batches for all) so that load drifting on the machine hits every
    optimizer alike. `steps` = Sophia's Hessian interval, so each timed window holds one of its estimates."""
    import statistics

    import torch

    from basisfm.config import load_config
    from basisfm.train.data_source import training_tables
    from basisfm.train.deepspeed_config import build_engine
    from basisfm.train.local_launcher import init_single_process_group
    from basisfm.train.loop import packed

    cpu = torch.device("cpu")
    init_single_process_group(False)
    engines = {}
    for optimizer in optimizers:
        config = load_config(STAGES[1], [f"train.optimizer={optimizer}", f"train.sophia_hessian_every={steps}"])
        engines[optimizer] = build_engine(config, cpu)[0]
    stream = packed(training_tables(config, None, rank=0, device=cpu, start_step=0), config.train.pack_tables)
    batches = [next(stream) for _ in range(steps)]
    timings: dict[str, list[float]] = {o: [] for o in optimizers}
    for _ in range(rounds + 1):  # the first round warms up (allocations, first Hessian estimate) and is dropped
        for optimizer, engine in engines.items():
            began = time.perf_counter()
            for tables in batches:
                engine.backward(torch.stack([engine(t).loss for t in tables]).mean())
                engine.step()
            timings[optimizer].append((time.perf_counter() - began) / steps)
    return {o: statistics.median(t[1:]) for o, t in timings.items()}


def compare(arms: list[Arm], step_seconds: dict[str, float]) -> tuple[int, float]:
    """The equal-steps point (the fewest steps any arm finished) and the equal-time point (the least measured time
    any arm's steps cost)."""
    return min(a.final[0] for a in arms), min(a.final[0] * step_seconds[a.optimizer] for a in arms)


def table(stage: int, arms: list[Arm], steps_point: int, seconds_point: float, step_seconds: dict[str, float]) -> list[str]:
    lines = [f"| stage | optimizer | lr | steps | s / step (interleaved) | run's wall minutes | ratio at {steps_point} steps | "
             f"ratio at {seconds_point:.0f} s of steps | final ratio |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a in sorted(arms, key=lambda a: a.ratio_at_seconds(seconds_point, step_seconds)):
        step, wall, _, ratio = a.final
        lines.append(f"| {stage} | {a.optimizer} | {a.lr:g} | {step} | {step_seconds[a.optimizer]:.3f} | {wall:.2f} | "
                     f"{a.ratio_at_step(steps_point):.3f} | {a.ratio_at_seconds(seconds_point, step_seconds):.3f} | {ratio:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one lr each (3e-3), short stage 1 only: under 10 minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--work-dir", default="runs/optimizers", help="training runs and their MLflow store")
    p.add_argument("--optimizers", nargs="+", default=list(LEARNING_RATES), choices=list(LEARNING_RATES))
    p.add_argument("--stage1-steps", type=int, default=None, help="steps per stage-1 arm (default 250; --quick 100)")
    p.add_argument("--stage2-steps", type=int, default=None, help="steps per stage-2 arm (default 150; 0: no stage 2)")
    p.add_argument("--max-minutes", type=float, default=12.0,
                   help="safety cap per arm (an arm stopped by it finishes fewer steps: the table shows it)")
    p.add_argument("--validate-every", type=int, default=25)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides, every arm")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results page to MLflow")
    args = p.parse_args(argv)
    steps1 = args.stage1_steps or (100 if args.quick else 250)
    steps2 = 0 if args.quick else (150 if args.stage2_steps is None else args.stage2_steps)
    began = time.perf_counter()

    print(f"[{NAME}] step cost of each optimizer, interleaved", flush=True)
    step_seconds = interleaved_step_seconds(args.optimizers, rounds=2 if args.quick else 3)
    print(f"[{NAME}] seconds per step: " + ", ".join(f"{o} {s:.3f}" for o, s in step_seconds.items()), flush=True)
    stage1 = []
    for optimizer in args.optimizers:
        for lr in LEARNING_RATES[optimizer][:1 if args.quick else 2]:
            arm = Arm(1, optimizer, lr, f"s1-{optimizer}-lr{lr:g}")
            stage1.append(run_arm(arm, args, steps=steps1, minutes=args.max_minutes))
    best = {o: min((a for a in stage1 if a.optimizer == o), key=lambda a: a.final[3]) for o in args.optimizers}
    stage2 = []
    if steps2:
        for optimizer, first in best.items():
            arm = Arm(2, optimizer, first.lr, f"s2-{optimizer}-lr{first.lr:g}")
            stage2.append(run_arm(arm, args, steps=steps2, minutes=args.max_minutes, init_from=first.checkpoint))

    points1 = compare(stage1, step_seconds)
    by_time = lambda a: a.ratio_at_seconds(points1[1], step_seconds)  # noqa: E731
    s1_best = min(stage1, key=by_time)
    adamw = [a for a in stage1 if a.optimizer == "adamw"]
    headline = (f"stage 1 at equal time ({points1[1]:.0f} s of steps): {s1_best.optimizer} (lr {s1_best.lr:g}) "
                f"{by_time(s1_best):.3f}" + (f", AdamW (better lr) {min(map(by_time, adamw)):.3f}" if adamw else "")
                + f"; at {points1[0]} steps: " + ", ".join(
                    f"{o} {min(a.ratio_at_step(points1[0]) for a in stage1 if a.optimizer == o):.3f}" for o in args.optimizers))
    lrs = ", ".join(f"{o} {' and '.join(f'{lr:g}' for lr in LEARNING_RATES[o][:1 if args.quick else 2])}"
                    for o in args.optimizers)
    lines = ["# Optimizers on the in-context curriculum's first stages: held-out prior ratio", "",
             f"Headline: {headline}", "",
             f"Stage 1 (`stage1.yaml`: tab2d tiny, the easy prior) from random weights, every arm {steps1} steps "
             f"(cosine schedule over them, warm-up {max(1, steps1 // 20)}), same seed and task stream; "
             + (f"stage 2 (`stage2.yaml`) from each optimizer's better stage-1 checkpoint, {steps2} steps. " if stage2
                else "no stage 2. ")
             + f"`val_prior_ratio` (model / context-mean squared error on 64 held-out prior tasks; lower is better) every "
               f"{args.validate_every} steps. Learning rates tried (at most two each): {lrs}. Time is steps x the "
               "optimizer's seconds per step measured interleaved with the others (the machine is shared; each run's "
               "own wall minutes, which carry the other users' load, are in their column).", "",
             *table(1, stage1, *points1, step_seconds), ""]
    if stage2:
        lines += [*table(2, stage2, *compare(stage2, step_seconds), step_seconds), ""]
    context = page_context("optimizers", argv, machine=f"shared; load average {os.getloadavg()[0]:.1f} at the end", extra={
        "total minutes": f"{(time.perf_counter() - began) / 60:.1f}",
        "seconds per step (interleaved)": ", ".join(f"{o} {s:.3f}" for o, s in step_seconds.items()),
        "training runs": f"{Path(args.work_dir).resolve()}/track (MLflow experiment {NAME!r})"})

    def render(path: Path) -> Path:
        plt = pyplot()
        stages = [s for s in (stage1, stage2) if s]
        fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
        colours = {o: f"C{i}" for i, o in enumerate(LEARNING_RATES)}
        for ax, arms in zip(axes[0], stages):
            for a in arms:
                style = "-" if a.lr == LEARNING_RATES[a.optimizer][0] else "--"
                ax.plot([c[0] * step_seconds[a.optimizer] / 60 for c in a.curve], [c[3] for c in a.curve], style,
                        color=colours[a.optimizer], label=f"{a.optimizer} lr {a.lr:g}")
            ax.set_xlabel("minutes (steps x interleaved seconds per step)")
            ax.set_ylabel("held-out prior ratio (lower is better)")
            ax.set_title(f"stage {arms[0].stage}")
            ax.legend(fontsize=8)
        return save_figure(fig, path)

    metrics = {f"stage{a.stage}_{a.optimizer}_lr{a.lr:g}_ratio": a.final[3] for a in stage1 + stage2}
    metrics.update({f"{o}_seconds_per_step": s for o, s in step_seconds.items()})
    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"quick": args.quick, "stage1_steps": steps1, "stage2_steps": steps2,
                    "optimizers": ",".join(args.optimizers)}, metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
