"""Launcher overhead: what Ray Train costs against the local launcher on the same stage config, through `jobs.pretrain`.

Each configuration is the command a user runs, `python -m jobs.pretrain --config jobs/configs/icl/stage1.yaml`
(prior episodes only: no corpus, so nothing but the launcher differs), in a fresh process: the local launcher, one
Ray Train worker and two. From each run's `train_state.json` it reads the steady-state steps/s (the loop's own
per-window rate, leaving out the first window, which holds the first steps' warm-up, and the last, which holds the
final validation and checkpoint) and the start-up marks (`basisfm.train.startup`: command to tracking ready, Ray
ready, loop entered, engine ready, first step); the subprocess's wall time gives the teardown after the last step.
Configurations run interleaved, `--repeats` times, the fastest steady rate of each kept (other jobs share the
machine; the least disturbed run is the closest to what the launcher costs).

    python -m benchmarks.launcher_overhead [--steps N] [--out DIR] [--quick]

writes DIR/launcher_overhead.{json,md,png} (DIR defaults to benchmarks/results) with the keys
`ray_1_over_local` (steady steps/s, one Ray worker over the local launcher), `ray_start_s` and `local_start_s`
(command to the first step) and `ray_2_over_ray_1` (steady samples/s, two workers over one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._report import markdown_page, publish, pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
NAME = "launcher_overhead"
STAGE_CONFIG = "jobs/configs/icl/stage1.yaml"
# (label, launcher, workers): the configurations, in the order each repeat runs them. "ray_1_stock" is one worker
# with Ray Train as it comes (benchmarks._stock_ray_pretrain): what basisfm's trimming of its own cluster saves.
# "ray_1_running" joins a cluster started before the command (`ray start --head`, $RAY_ADDRESS), as
# `ray job submit` on a cluster does: the job then pays no cluster start. "local_pair" is two local-launcher runs at
# once, independent (no gradient exchange, no Ray): the most two one-thread processes get out of this machine, the
# ceiling ray_2 is measured against.
CONFIGURATIONS = (("local", "local", 1), ("ray_1", "ray", 1), ("ray_2", "ray", 2), ("ray_1_stock", "ray", 1),
                  ("ray_1_running", "ray", 1), ("local_pair", "local", 2))
STARTUP_PHASES = ("tracking_ready", "ray_ready", "loop_entered", "engine_ready", "first_step")


@dataclass
class Run:
    label: str
    launcher: str
    workers: int
    steps: int
    samples_per_step: int  # tasks per optimizer step, all workers together
    window_steps_per_s: list[float]  # the loop's steps/s of every log window, in order
    startup_s: dict[str, float]  # start-up phase -> seconds from the command
    last_step_s: float  # the final window's end, seconds from the command
    wall_s: float  # the whole command, teardown included
    returncode: int = 0
    log_tail: str = ""

    @property
    def steady_steps_per_s(self) -> float:
        return steady_rate(self.window_steps_per_s)

    @property
    def steady_samples_per_s(self) -> float:
        return self.steady_steps_per_s * self.samples_per_step

    @property
    def first_step_s(self) -> float:
        return self.startup_s.get("first_step", float("nan"))

    @property
    def teardown_s(self) -> float:
        return self.wall_s - self.last_step_s


def steady_rate(window_rates: list[float]) -> float:
    """Steps/s over the windows between the first and the last: equal-step windows, so their total steps over their
    total time (the harmonic mean), not the mean of the rates, which a single fast window would inflate."""
    middle = window_rates[1:-1]
    if not middle:
        raise ValueError(f"steady state needs at least 3 log windows, got {len(window_rates)}; raise --steps")
    return len(middle) / sum(1.0 / r for r in middle)


def run_command(label: str, run_name: str, launcher: str, workers: int, steps: int, log_every: int,
                storage: Path) -> list[str]:
    """The `jobs.pretrain` command of one configuration's run (its own run name; one storage and tracking store)."""
    overrides = {
        "train.storage_path": str(storage), "tracking.local_dir": str(storage / "tracking"),
        "tracking.register": "false", "train.log_every": log_every, "train.validate_every": steps,
        "train.checkpoint_every": steps, "train.warmup_steps": min(100, steps // 4), "train.max_failures": 0,
    }
    module = "benchmarks._stock_ray_pretrain" if label.endswith("_stock") else "jobs.pretrain"
    command = [sys.executable, "-m", module, "--config", str(ROOT / STAGE_CONFIG), "--launcher", launcher,
               "--workers", str(workers), "--steps", str(steps), "--run-name", run_name]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    return command


def command_env() -> dict[str, str]:
    """The environment of every command (and of the standing cluster's processes, which its workers inherit)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def standing_cluster(temp_dir: Path):
    """A Ray cluster started before the timed commands (`ray start --head`, in its own temp dir), stopped after them
    by the process ids of its own processes (never `ray stop`, which ends every cluster on the machine). With its
    dashboard, as `ray start` makes it: Ray Train's placement-group cleaner reads the State API it serves."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp_dir.mkdir(parents=True, exist_ok=True)
    # Without token authentication: a job finds a `ray start` cluster's token only in the default temp dir.
    started = subprocess.run([ray_cli, "start", "--head", "--num-cpus", "3", "--port", "0", "--disable-usage-stats",
                              f"--temp-dir={temp_dir}"],
                             env={**command_env(), "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{started.stdout[-2000:]}{started.stderr[-2000:]}")
        yield (temp_dir / "ray_current_cluster").read_text().strip()
    finally:
        import psutil

        own = [p for p in psutil.process_iter(["pid", "cmdline"]) if str(temp_dir) in " ".join(p.info["cmdline"] or [])]
        for process in own:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(own, timeout=10)
        for process in alive:  # the GCS and the autoscaler monitor outlive SIGTERM while their raylet is going
            with contextlib.suppress(psutil.Error):
                process.kill()


def measure(label: str, run_name: str, launcher: str, workers: int, steps: int, log_every: int, storage: Path,
            ray_address: str | None = None) -> Run:
    """Run one configuration in a fresh process and read its record back."""
    env = command_env()
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    command = run_command(label, run_name, launcher, workers, steps, log_every, storage)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    return read_run(label, run_name, launcher, workers, steps, storage, wall_s, done)


def measure_pair(label: str, run_name: str, steps: int, log_every: int, storage: Path) -> Run:
    """Two local-launcher runs started together, each in its own process on one thread: one Run whose window rates
    are the two runs' summed (both step the same number of tasks per step, so its samples/s is the pair's)."""
    env = command_env()
    names = [f"{run_name}-a", f"{run_name}-b"]
    started = time.perf_counter()
    processes = [subprocess.Popen(run_command("local", name, "local", 1, steps, log_every, storage), cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in names]
    outputs = [p.communicate()[0] for p in processes]
    wall_s = time.perf_counter() - started
    a, b = (read_run(label, name, "local", 1, steps, storage, wall_s,
                     subprocess.CompletedProcess(p.args, p.returncode, out, ""))
            for name, p, out in zip(names, processes, outputs))
    return Run(label, "local", 2, steps, a.samples_per_step,
               [x + y for x, y in zip(a.window_steps_per_s, b.window_steps_per_s)],
               {phase: max(a.startup_s.get(phase, 0.0), b.startup_s.get(phase, 0.0)) for phase in a.startup_s},
               max(a.last_step_s, b.last_step_s), wall_s, max(a.returncode, b.returncode), a.log_tail)


def read_run(label: str, run_name: str, launcher: str, workers: int, steps: int, storage: Path, wall_s: float,
             done: subprocess.CompletedProcess) -> Run:
    """A finished command's Run, from its run directory's record."""
    tail = (done.stdout + done.stderr)[-3000:]
    if done.returncode != 0:
        raise RuntimeError(f"{run_name}: jobs.pretrain exited with {done.returncode}:\n{tail}")
    state = json.loads((storage / run_name / "artifacts" / "train_state.json").read_text())
    history = state["history"]
    rates = [value for _, value in history["steps_per_s"]]
    startup = {phase: history[f"startup_{phase}_s"][0][1] for phase in STARTUP_PHASES
               if f"startup_{phase}_s" in history}
    config = json.loads((storage / run_name / "params.json").read_text())
    samples = int(config["train.micro_batch_tables"]) * int(config["train.pack_tables"]) * workers
    # The first window opens as the loop starts, just after the engine is ready; each window's length is its steps
    # over its rate (the last one also holds the final validation and checkpoint).
    window_steps = [step - before for (step, _), before in zip(history["steps_per_s"],
                                                                 [0] + [step for step, _ in history["steps_per_s"]])]
    last_step_s = startup.get("engine_ready", 0.0) + sum(n / r for n, r in zip(window_steps, rates))
    return Run(label, launcher, workers, steps, samples, rates, startup, last_step_s, wall_s, done.returncode, tail)


def summarise(runs: dict[str, list[Run]]) -> dict[str, float]:
    """The headline ratios from the fastest steady run of each configuration; start-up as the median of the runs."""
    best = {label: max(rs, key=lambda r: r.steady_steps_per_s) for label, rs in runs.items()}
    return {
        "ray_1_over_local": best["ray_1"].steady_steps_per_s / best["local"].steady_steps_per_s,
        "ray_start_s": statistics.median(r.first_step_s for r in runs["ray_1"]),
        "local_start_s": statistics.median(r.first_step_s for r in runs["local"]),
        "ray_2_over_ray_1": best["ray_2"].steady_samples_per_s / best["ray_1"].steady_samples_per_s,
        "ray_2_start_s": statistics.median(r.first_step_s for r in runs["ray_2"]),
        **({"ray_2_over_local_pair": best["ray_2"].steady_samples_per_s / best["local_pair"].steady_samples_per_s,
            "local_pair_over_local": best["local_pair"].steady_samples_per_s / best["local"].steady_samples_per_s}
           if "local_pair" in best else {}),
        **{f"{label}_steady_steps_per_s": r.steady_steps_per_s for label, r in best.items()},
        **{f"{label}_steady_samples_per_s": r.steady_samples_per_s for label, r in best.items()},
        **{f"{label}_wall_s": statistics.median(x.wall_s for x in runs[label]) for label in runs},
        **{f"{label}_start_s": statistics.median(x.first_step_s for x in runs[label]) for label in runs},
        **{f"{label}_teardown_s": statistics.median(x.teardown_s for x in runs[label]) for label in runs},
    }


def phase_table(runs: dict[str, list[Run]]) -> list[str]:
    """Median seconds from the command to each start-up phase, the step to step phases and the teardown."""
    lines = ["| phase (median over runs, s from the command) | " + " | ".join(runs) + " |",
             "| --- |" + " ---: |" * len(runs)]
    for phase in STARTUP_PHASES:
        cells = []
        for rs in runs.values():
            values = [r.startup_s[phase] for r in rs if phase in r.startup_s]
            cells.append(f"{statistics.median(values):.1f}" if values else "-")
        lines.append(f"| {phase.replace('_', ' ')} | " + " | ".join(cells) + " |")
    lines.append("| last step | " + " | ".join(f"{statistics.median(r.last_step_s for r in rs):.1f}"
                                               for rs in runs.values()) + " |")
    lines.append("| command exits | " + " | ".join(f"{statistics.median(r.wall_s for r in rs):.1f}"
                                                   for rs in runs.values()) + " |")
    lines.append("| teardown (exit - last step) | " + " | ".join(f"{statistics.median(r.teardown_s for r in rs):.1f}"
                                                                 for rs in runs.values()) + " |")
    return lines


def render_markdown(runs: dict[str, list[Run]], summary: dict[str, float], context: dict[str, str],
                    notes: list[str]) -> str:
    lines = [
        "# Launcher overhead: Ray Train against the local launcher",
        "",
        f"Headline: one Ray worker {summary['ray_1_over_local']:.2f}x the local launcher's steady steps/s; first step "
        f"{summary['ray_start_s']:.1f} s after the command with Ray, {summary['local_start_s']:.1f} s locally; two "
        f"workers {summary['ray_2_over_ray_1']:.2f}x one worker's samples/s"
        + (f" (two independent local runs at once, this machine's ceiling: {summary['local_pair_over_local']:.2f}x)"
           if "local_pair_over_local" in summary else ""),
        "",
        f"Command: `python -m benchmarks.launcher_overhead {context['arguments']}`",
        "",
        f"`python -m jobs.pretrain --config {STAGE_CONFIG}` (prior episodes only: no corpus, no Ray Data) in a fresh "
        "process per run, with OMP_NUM_THREADS=1. Steady steps/s: the loop's per-window rate, first and last windows "
        "left out; samples/s: steps/s x tasks per step (all workers).",
        "",
        "| configuration | runs | steady steps/s (best) | samples/s | steady steps/s (all runs) | first step (s, median) | command wall (s, median) |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for label, rs in runs.items():
        best = max(rs, key=lambda r: r.steady_steps_per_s)
        lines.append(f"| {label} | {len(rs)} | {best.steady_steps_per_s:.2f} | {best.steady_samples_per_s:.1f} | "
                     + ", ".join(f"{r.steady_steps_per_s:.2f}" for r in rs)
                     + f" | {statistics.median(r.first_step_s for r in rs):.1f} | "
                     f"{statistics.median(r.wall_s for r in rs):.1f} |")
    lines += [
        "",
        f"- ray_1_over_local (steady steps/s): **{summary['ray_1_over_local']:.2f}** (goal >= 0.90)",
        f"- ray_start_s (command to first step, one worker): **{summary['ray_start_s']:.1f}** (goal <= 20); "
        f"local_start_s: {summary['local_start_s']:.1f}",
        f"- ray_2_over_ray_1 (steady samples/s): **{summary['ray_2_over_ray_1']:.2f}** (goal >= 1.50)",
        *([f"- Ray Train as it comes (ray_1_stock: idle workers prestarted, preemption watcher, placement-group "
           f"cleaner): first step {summary['ray_1_stock_start_s']:.1f} s, teardown {summary['ray_1_stock_teardown_s']:.1f} s, "
           f"command {summary['ray_1_stock_wall_s']:.1f} s; trimmed (ray_1): {summary['ray_start_s']:.1f} s, "
           f"{summary['ray_1_teardown_s']:.1f} s, {summary['ray_1_wall_s']:.1f} s"] if "ray_1_stock" in runs else []),
        *([f"- the machine's ceiling for two one-thread processes (local_pair: two local runs at once, no gradient "
           f"exchange): {summary['local_pair_over_local']:.2f}x one local run's samples/s; two Ray workers reach "
           f"{summary['ray_2_over_local_pair']:.2f} of it"] if "local_pair" in runs else []),
        *([f"- joining a cluster already running (ray_1_running, `ray start --head` before the command, $RAY_ADDRESS): "
           f"first step {summary['ray_1_running_start_s']:.1f} s, command {summary['ray_1_running_wall_s']:.1f} s"]
          if "ray_1_running" in runs else []),
        "",
        "## Where the start-up goes",
        "",
        *phase_table(runs),
        "",
        *notes,
        "",
    ]
    return markdown_page(lines, context)


def render_png(runs: dict[str, list[Run]], path: Path) -> Path:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    labels = list(runs)
    previous = [0.0] * len(labels)
    for phase in STARTUP_PHASES:
        ends = [statistics.median([r.startup_s.get(phase, float("nan")) for r in rs]) for rs in runs.values()]
        ends = [prev if end != end else end for end, prev in zip(ends, previous)]  # NaN: the launcher has no such phase
        left.barh(labels, [e - p for e, p in zip(ends, previous)], left=previous, label=phase.replace("_", " "))
        previous = ends
    left.set_xlabel("seconds from the command")
    left.set_title("Start-up to the first step (median)")
    left.legend(fontsize=7)
    best = [max(rs, key=lambda r: r.steady_steps_per_s) for rs in runs.values()]
    right.bar(labels, [r.steady_samples_per_s for r in best], color="#1f77b4")
    right.set_ylabel("steady samples (tasks) / s")
    right.set_title("Steady throughput (best run)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--log-every", type=int, default=25, help="steps per metric window")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each configuration")
    parser.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 steps, windows of 5, one repeat, no MLflow")
    parser.add_argument("--only", nargs="+", choices=[c[0] for c in CONFIGURATIONS],
                        help="run only these configurations (local, ray_1 and ray_2 are needed for the ratios)")
    parser.add_argument("--notes", default=None, help="a markdown file of findings to add under the phase table")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="run nothing: write the page again from an earlier run's launcher_overhead.json "
                             "(with --notes, new findings beside the same numbers)")
    args = parser.parse_args(argv)
    if args.render:
        return render_again(Path(args.render), args.notes, Path(args.out) if args.out else None)
    if args.quick:
        args.steps, args.log_every, args.repeats = 30, 5, 1
    if args.steps < 3 * args.log_every:
        parser.error(f"--steps must be at least 3 x --log-every (3 windows), got {args.steps} and {args.log_every}")
    out = Path(args.out) if args.out else None
    load_before = os.getloadavg()
    configurations = [c for c in CONFIGURATIONS if not args.only or c[0] in args.only]
    runs: dict[str, list[Run]] = {label: [] for label, _, _ in configurations}
    with tempfile.TemporaryDirectory(prefix="basisfm-launcher-") as tmp:
        storage = Path(tmp)
        # Untimed: makes the tracking store (MLflow's first schema migration takes seconds) and warms the page cache.
        measure("local", "warmup", "local", 1, 3 * 2, 2, storage)
        for repeat in range(args.repeats):
            for label, launcher, workers in configurations:
                if label == "local_pair":
                    run = measure_pair(label, f"{label}-{repeat}", args.steps, args.log_every, storage)
                elif label.endswith("_running"):
                    with standing_cluster(Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))) as address:
                        run = measure(label, f"{label}-{repeat}", launcher, workers, args.steps, args.log_every, storage,
                                      ray_address=address)
                else:
                    run = measure(label, f"{label}-{repeat}", launcher, workers, args.steps, args.log_every, storage)
                runs[label].append(run)
                print(f"{label} #{repeat}: steady {run.steady_steps_per_s:.2f} steps/s, first step "
                      f"{run.first_step_s:.1f} s, wall {run.wall_s:.1f} s", flush=True)
    summary = summarise(runs)
    load_after = os.getloadavg()
    context = {
        "arguments": " ".join(argv if argv is not None else sys.argv[1:]),
        "all runs": "; ".join(f"{label}: " + ", ".join(f"{r.steady_steps_per_s:.2f} steps/s, first step {r.first_step_s:.1f} s, "
                                                   f"wall {r.wall_s:.1f} s" for r in rs) for label, rs in runs.items()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
                   f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (other jobs share the machine)",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    notes = Path(args.notes).read_text().splitlines() if args.notes else []
    markdown = render_markdown(runs, summary, context, notes)
    params = {"steps": args.steps, "log_every": args.log_every, "repeats": args.repeats, "config": STAGE_CONFIG}
    kwargs = {"out_dir": out} if out is not None else {}
    md_path, _, _ = publish(NAME, markdown, lambda path: render_png(runs, path), params=params, metrics=summary,
                            log=not args.quick, **kwargs)
    record = {**summary, "runs": {label: [asdict(r) for r in rs] for label, rs in runs.items()},
              "steps": args.steps, "log_every": args.log_every, "config": STAGE_CONFIG, **context}
    for label_runs in record["runs"].values():
        for r in label_runs:
            r.pop("log_tail", None)
    (md_path.parent / f"{NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    return summary


def render_again(record_path: Path, notes_path: str | None, out: Path | None) -> dict[str, float]:
    """The page and PNG from a launcher_overhead.json (its runs, context and command), not logged to MLflow again."""
    record = json.loads(record_path.read_text())
    runs = {label: [Run(**r) for r in rs] for label, rs in record["runs"].items()}
    summary = summarise(runs)
    context = {key: record[key] for key in ("arguments", "all runs", "machine", "measured")}
    notes = Path(notes_path).read_text().splitlines() if notes_path else []
    kwargs = {"out_dir": out} if out is not None else {}
    publish(NAME, render_markdown(runs, summary, context, notes), lambda path: render_png(runs, path), params={},
            metrics=summary, log=False, **kwargs)
    return summary


if __name__ == "__main__":
    main()
