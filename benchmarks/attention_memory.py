"""Attention memory: peak memory and time of one training step vs the number of columns, per cell-attention variant.

Each (variant, columns) point runs in a fresh Python process, so the process's peak resident memory
(ru_maxrss) minus its resident memory just before the step is that step's peak: forward and backward
of the tiny Basis Transformer on `--rows` rows of C numeric columns (15% of cells hidden). Variants:
`dense`, `block_sparse` (blocks of 8 columns), `sampled` (keep 25% of columns) and, for reference,
`dense` forced onto PyTorch's math attention kernel (which materialises the C x C scores, as a naive
implementation would). Run with `python -m benchmarks.attention_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from basisfm.progress import progress_bar

from benchmarks._report import markdown_page, publish, pyplot, save_figure

NAME = "attention_memory"
VARIANTS = ["dense", "block_sparse", "sampled", "dense_math_kernel"]


@dataclass
class Point:
    variant: str
    columns: int
    rows: int
    peak_mb: float  # peak resident memory during one forward + backward, above the resident memory before it
    step_seconds: float  # median of 3 steps


def _resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_in_this_process(variant: str, n_columns: int, n_rows: int, seed: int = 0) -> Point:
    """One point, in the current process (call it from a fresh one: ru_maxrss never goes down)."""
    import contextlib
    import gc

    import torch

    from basisfm.config import ModelConfig
    from basisfm.corpus.manifest import ColumnKind
    from basisfm.data.batch import TableBatch
    from basisfm.model import build_model

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    attention = "dense" if variant == "dense_math_kernel" else variant
    model = build_model(ModelConfig(attention=attention, block_size=8, keep_ratio=0.25))
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n_rows, n_columns, generator=g, dtype=torch.float64) * 100
    names = [f"column_{j}" for j in range(n_columns)]
    name_embeddings = torch.nn.functional.normalize(torch.randn(n_columns, 384, generator=g), dim=-1)
    batch = TableBatch(
        table_id=f"synthetic-{n_columns}",
        column_names=names,
        column_kinds=torch.full((n_columns,), int(ColumnKind.NUMERIC)),
        column_name_embeddings=name_embeddings,
        column_abs_max=values.abs().amax(0),
        column_min_nonzero=values.abs().amin(0),
        values=values,
        missing=torch.zeros(n_rows, n_columns, dtype=torch.bool),
        string_ids=torch.full((n_rows, n_columns), -1),
        vocab=[],
        vocab_embeddings=torch.zeros(0, 384),
        target_mask=torch.rand(n_rows, n_columns, generator=g) < 0.15,
    )
    kernel = contextlib.nullcontext()
    if variant == "dense_math_kernel":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel = sdpa_kernel(SDPBackend.MATH)

    def step() -> None:
        out = model(batch)
        (out.bit_logits.sum() + out.basis.sum()).backward()
        model.zero_grad(set_to_none=True)

    with kernel:
        gc.collect()
        before = _resident_mb()
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        times = []
        for _ in range(3):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return Point(variant, n_columns, n_rows, max(0.0, peak - before), sorted(times)[1])


def measure(variant: str, n_columns: int, n_rows: int) -> Point:
    """One point in a fresh interpreter, so earlier points' peaks cannot hide this one's."""
    command = [sys.executable, "-m", "benchmarks.attention_memory", "--worker", variant, str(n_columns), str(n_rows)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return Point(**json.loads(done.stdout.strip().splitlines()[-1]))


def render_markdown(points: list[Point], columns: list[int], context: dict[str, str]) -> str:
    by = {(p.variant, p.columns): p for p in points}
    variants = [v for v in VARIANTS if any(p.variant == v for p in points)]
    lines = [
        f"# Attention memory: peak MB (and seconds) of one training step vs columns, {points[0].rows} rows",
        "",
        "| columns | " + " | ".join(variants) + " |",
        "| ---: | " + " | ".join("---:" for _ in variants) + " |",
    ]
    for c in columns:
        cells = [f"{by[(v, c)].peak_mb:.1f} MB ({by[(v, c)].step_seconds:.3f} s)" if (v, c) in by else "-" for v in variants]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "Peak = the step's high-water resident memory above the process's resident memory before it.", ""]
    return markdown_page(lines, context)


def render_png(points: list[Point], path: Path) -> Path:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    for variant in VARIANTS:
        mine = sorted((p for p in points if p.variant == variant), key=lambda p: p.columns)
        if mine:
            left.plot([p.columns for p in mine], [p.peak_mb for p in mine], marker="o", label=variant)
            right.plot([p.columns for p in mine], [p.step_seconds for p in mine], marker="o", label=variant)
    for axis, label in ((left, "peak memory of one step (MB)"), (right, "seconds per step")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("columns")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend()
    fig.suptitle(f"Cell-level attention variants, {points[0].rows} rows, tiny model, CPU")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Point]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "COLUMNS", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        variant, n_columns, n_rows = args.worker
        point = measure_in_this_process(variant, int(n_columns), int(n_rows))
        print(json.dumps(point.__dict__))
        return [point]

    load_at_start = os.getloadavg()[0]
    points = []
    for variant in progress_bar(args.variants, desc="variants"):
        for n_columns in progress_bar(args.columns, desc=variant, leave=False):
            points.append(measure(variant, n_columns, args.rows))

    import torch

    context = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread",
        "model": "tiny preset (d_model 64, 4 heads, 1 cell-attention block), block_size 8, keep_ratio 0.25",
        "load average (1 min) at start / end": f"{load_at_start:.1f} / {os.getloadavg()[0]:.1f} (other jobs sharing the CPUs make step times noisy)",
        "command": "python -m benchmarks.attention_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    metrics = {f"peak_mb.{p.variant}.{p.columns}": p.peak_mb for p in points}
    metrics.update({f"step_seconds.{p.variant}.{p.columns}": p.step_seconds for p in points})
    publish(NAME, render_markdown(points, sorted(set(args.columns)), context), lambda path: render_png(points, path),
            params={"rows": args.rows, "columns": args.columns}, metrics=metrics)
    widest = max(args.columns)
    summary = {p.variant: p.peak_mb for p in points if p.columns == widest}
    print(f"summary: at {widest} columns peak MB " + ", ".join(f"{k} {v:.1f}" for k, v in summary.items()))
    return points


if __name__ == "__main__":
    main()
