"""Prior throughput: synthetic tasks per second at 256 x 10 and 1,024 x 50, per generator, on a few CPU cores.

Each measurement makes chunks of `priors.tasks_per_chunk` tasks of one fixed shape for a fixed wall time and
times the three stages every training worker runs: generation (SCM + columns), screening (the
degenerate-task check) and conversion into `TableBatch` episodes. Tasks/s counts generated tasks; accepted/s
those that passed the screen. Published reference: TabICL's generator makes 15-37 tasks/s per core at 256 x 10.
Run with `python -m benchmarks.prior_throughput` (add `--device cuda` on a GPU machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from basisfm.config import PriorConfig
from basisfm.priors.banks import category_bank, name_bank
from basisfm.priors.draws import mix_seed
from basisfm.priors.episodes import chunk_to_episodes
from basisfm.priors.filters import RejectionCounts, screen
from basisfm.priors.sampler import ChunkShape, generate_chunk

from benchmarks._report import publish, pyplot, save_figure

RESULTS_DIR = Path(__file__).parent / "results"
NAME = "prior_throughput"
TABICL_PER_CORE = (15, 37)


@dataclass
class Measurement:
    generator: str
    rows: int
    features: int
    seconds: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "screen": 0.0, "episodes": 0.0})
    counts: RejectionCounts = field(default_factory=RejectionCounts)
    cpu_seconds: float = 0.0  # CPU time the process(es) consumed: on a shared machine, what the work itself cost

    @property
    def per_cpu_second(self) -> float:
        """Generated tasks per CPU-second: the rate of one dedicated core, whatever else shares the machine."""
        return self.counts.generated / max(self.cpu_seconds, 1e-9)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def tasks_per_second(self) -> float:
        return self.counts.generated / self.total_seconds

    @property
    def accepted_per_second(self) -> float:
        return self.counts.accepted / self.total_seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: PriorConfig, generator: str, rows: int, features: int, budget_s: float, device: torch.device,
            worker: int = 0) -> Measurement:
    names = name_bank(config.name_bank_size, 384, config.bank_seed).to(device)
    categories = category_bank(config.category_bank_size, 384, config.bank_seed).to(device)
    shape = ChunkShape(generator, rows, features, 1)
    result = Measurement(generator, rows, features)
    chunk_index = 0
    with torch.no_grad():
        generate_chunk(config, mix_seed("warm-up"), shape, config.tasks_per_chunk, device)  # allocator, kernels
        while result.total_seconds < budget_s:
            chunk_index += 1
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            chunk = generate_chunk(config, mix_seed(NAME, generator, rows, features, worker, chunk_index), shape, config.tasks_per_chunk, device)
            _sync(device)
            t1 = time.perf_counter()
            keep, counts = screen(chunk, config.min_learnability)
            _sync(device)
            t2 = time.perf_counter()
            chunk_to_episodes(chunk, keep, names, categories)
            _sync(device)
            t3 = time.perf_counter()
            result.cpu_seconds += time.process_time() - cpu0
            for stage, seconds in zip(("generate", "screen", "episodes"), (t1 - t0, t2 - t1, t3 - t2)):
                result.seconds[stage] += seconds
            result.counts.add(counts)
    return result


def _measure_in_process(task: tuple) -> Measurement:
    config, generator, rows, features, budget_s, worker = task
    torch.set_num_threads(1)
    return measure(config, generator, rows, features, budget_s, torch.device("cpu"), worker)


def measure_processes(config: PriorConfig, generator: str, rows: int, features: int, budget_s: float, processes: int,
                      pool) -> Measurement:
    """`processes` single-threaded workers generating at once (as Ray workers would): counts add up, and each
    stage's seconds are the workers' mean, so tasks/s is the sum of the workers' rates."""
    parts = list(pool.map(_measure_in_process, [(config, generator, rows, features, budget_s, w) for w in range(processes)]))
    merged = Measurement(generator, rows, features)
    for part in parts:
        merged.counts.add(part.counts)
        merged.cpu_seconds += part.cpu_seconds
        for stage, seconds in part.seconds.items():
            merged.seconds[stage] += seconds / processes
    return merged


def render_markdown(results: list[Measurement], context: dict[str, str], threads: int) -> str:
    low, high = TABICL_PER_CORE
    lines = [
        "# Prior throughput: synthetic tasks per second",
        "",
        f"Chunks of one fixed shape (one target) generated, screened and turned into `TableBatch` episodes on {threads} "
        f"CPU core(s) (see 'parallelism' below), default `PriorConfig` otherwise. tasks/s counts every generated task (accepted/s: those that "
        f"passed the degenerate-task screen). Per CPU-second: generated tasks per second of CPU time consumed, i.e. "
        f"the rate of one dedicated core, which other jobs on a shared machine do not depress. Stage shares are of the "
        f"wall time. Reference: TabICL's generator makes "
        f"{low}-{high} tasks/s per core at 256 x 10, i.e. {low * threads}-{high * threads} on {threads} cores.",
        "",
        "| generator | rows x features | tasks | tasks/s | accepted/s | per CPU-second | rejected | generate | screen | episodes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        shares = " | ".join(f"{r.seconds[s] / r.total_seconds:.0%}" for s in ("generate", "screen", "episodes"))
        lines.append(f"| {r.generator} | {r.rows} x {r.features} | {r.counts.generated} | {r.tasks_per_second:,.1f} | "
                     f"{r.accepted_per_second:,.1f} | {r.per_cpu_second:,.1f} | {r.counts.rejection_rate:.0%} | {shares} |")
    lines.append("")
    lines += [f"- {key}: {value}" for key, value in context.items()]
    return "\n".join(lines) + "\n"


def render_png(results: list[Measurement], path: Path, threads: int) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [f"{r.generator}\n{r.rows}x{r.features}" for r in results]
    x = range(len(results))
    ax.bar([i - 0.2 for i in x], [r.tasks_per_second for r in results], width=0.4, label="generated tasks/s")
    ax.bar([i + 0.2 for i in x], [r.accepted_per_second for r in results], width=0.4, label="accepted tasks/s")
    low, high = TABICL_PER_CORE
    ax.axhspan(low * threads, high * threads, color="grey", alpha=0.2, label=f"TabICL 256x10, {threads} cores")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("tasks per second")
    ax.set_yscale("log")
    ax.set_title(f"Prior throughput on {threads} CPU core(s)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU cores to use (default 2)")
    parser.add_argument("--parallel", choices=["processes", "threads"], default="processes",
                        help="use the cores as single-threaded worker processes (as Ray workers do; default) or as "
                             "torch threads of one process")
    parser.add_argument("--seconds", type=float, default=15.0, help="wall time per measurement (default 15)")
    parser.add_argument("--device", default="cpu", help="torch device to generate on (default cpu)")
    parser.add_argument("--shapes", default="256x10,1024x50", help="rows x features, comma separated")
    parser.add_argument("--out", default=str(RESULTS_DIR), metavar="DIR", help="where the .md and .png go")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads if args.parallel == "threads" else 1)
    device = torch.device(args.device)
    config = PriorConfig()
    load_start = os.getloadavg()[0]
    results = []
    pool = None
    if args.parallel == "processes" and device.type == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.threads, mp_context=multiprocessing.get_context("spawn"))
        list(pool.map(_measure_in_process, [(config, "mlp", 32, 2, 0.1, w) for w in range(args.threads)]))  # start them
    for spec in args.shapes.split(","):
        rows, features = (int(v) for v in spec.lower().split("x"))
        for generator in ("mlp", "tree"):
            if pool is not None:
                result = measure_processes(config, generator, rows, features, args.seconds, args.threads, pool)
            else:
                result = measure(config, generator, rows, features, args.seconds, device)
            print(f"{generator:>4} {rows:>5} x {features:<3} {result.tasks_per_second:8.1f} tasks/s  "
                  f"{result.accepted_per_second:8.1f} accepted/s  {result.per_cpu_second:8.1f} per CPU-s  ({result.counts.generated} tasks)")
            results.append(result)
    if pool is not None:
        pool.shutdown()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    context = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {device_name}, torch {torch.__version__}, {args.threads} core(s) used",
        "load average (1 min) at start / end": f"{load_start:.1f} / {os.getloadavg()[0]:.1f} (above the core count: other "
                                                "jobs shared these CPUs, so these are lower bounds)",
        "parallelism": (f"{args.threads} single-threaded worker processes, rates summed" if pool is not None
                        else f"one process, {args.threads} torch thread(s)"),
        "tasks per chunk": str(config.tasks_per_chunk),
        "seconds per measurement": f"{args.seconds:g}",
        "command": f"python -m benchmarks.prior_throughput --threads {args.threads} --seconds {args.seconds:g} --device {args.device} --parallel {args.parallel}",
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    metrics = {f"{r.generator}_{r.rows}x{r.features}_tasks_per_s": r.tasks_per_second for r in results}
    metrics.update({f"{r.generator}_{r.rows}x{r.features}_tasks_per_cpu_s": r.per_cpu_second for r in results})
    publish(NAME, render_markdown(results, context, args.threads),
            lambda path: render_png(results, path, args.threads),
            params={"threads": args.threads, "device": args.device}, metrics=metrics, out_dir=args.out, log=not args.no_mlflow)
    return results


if __name__ == "__main__":
    main()
