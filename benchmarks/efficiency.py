"""In-context efficiency (issue 35, Q5): forward seconds and peak memory of tab2d and basis_icl against columns and rows.

Cost, not quality: each architecture is built with random weights from the shipped in-context checkpoint's config
(d_model 64, 4 heads, 8 layers, 8 basis vectors, binned head), the cell-attention variant swapped in. One point is
one in-context prediction episode of R rows (queries = min(128, R / 2), the rest labelled context) and C numeric
columns, the last one the target, run forward with no gradient, as `strategy="inference"` predicts:
  - columns: C in 16 ... 2,048 at R = 256, for each cell-attention variant (`dense`, `block_sparse` blocks of 8
    columns, `sampled` keeping 25% of the columns): the variants act along a row's cells;
  - rows: R in 128 ... 8,192 at C = 16 (dense: at 16 columns the variants do the same work).
Each point runs in a fresh interpreter, so the process's peak resident memory (ru_maxrss) above its resident
memory just before the first forward is that point's peak. Seconds are the median of 3 forwards after a warm-up.
A point that needs more than `--max-gb` above its resident memory (its address space is limited to that, so an
allocation beyond it fails) or runs past `--max-seconds` is not finished and is marked on the page as capped.

    python -m benchmarks.efficiency [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "efficiency"
ARCHITECTURES = ("tab2d", "basis_icl")
VARIANTS = ("dense", "block_sparse", "sampled")
COLUMNS = (16, 64, 256, 1024, 2048)
ROWS = (128, 512, 2048, 8192)
FIXED_ROWS, FIXED_COLUMNS = 256, 16
MAX_QUERIES = 128  # the estimators' query batch (`InContextSettings.query_batch`)
STARTUP_SECONDS = 60  # a point's process: importing torch and basisfm, building the model and the episode


@dataclass
class Point:
    architecture: str
    variant: str
    rows: int
    columns: int
    seconds: float | None = None  # median forward seconds; None when capped
    forwards: int = 0  # forwards timed (after the warm-up; the warm-up alone when it was slow)
    peak_mb: float | None = None
    capped: str = ""  # why the point was not measured ("" when it was)


def episode_shape(rows: int) -> tuple[int, int]:
    """(support rows, query rows) of an R-row episode."""
    queries = min(MAX_QUERIES, rows // 2)
    return rows - queries, queries


def _resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic_episode(rows: int, columns: int, seed: int = 0):
    """An R x C numeric episode: the last column a smooth function of the others, the first rows labelled."""
    import torch

    from basisfm.corpus.manifest import ColumnKind
    from basisfm.data.batch import TableBatch

    g = torch.Generator().manual_seed(seed)
    support_rows, _ = episode_shape(rows)
    x = torch.randn(rows, columns - 1, generator=g, dtype=torch.float64)
    y = torch.tanh(x[:, : min(8, columns - 1)].sum(1)) * 100 + 50
    values = torch.cat([x, y.unsqueeze(-1)], dim=1)
    target = torch.zeros(rows, columns, dtype=torch.bool)
    target[:, -1] = True
    support = torch.arange(rows) < support_rows
    return TableBatch(
        table_id=f"synthetic/{rows}x{columns}", column_names=[f"x{j}" for j in range(columns - 1)] + ["y"],
        column_kinds=torch.full((columns,), int(ColumnKind.NUMERIC)),
        column_name_embeddings=torch.nn.functional.normalize(torch.randn(columns, 384, generator=g), dim=-1),
        column_abs_max=values.abs().amax(0), column_min_nonzero=values.abs().amin(0), values=values,
        missing=torch.zeros(rows, columns, dtype=torch.bool), string_ids=torch.full((rows, columns), -1), vocab=[],
        vocab_embeddings=torch.zeros(0, 384), target_mask=target, support=support,
        column_mean=values[support].mean(0), column_std=values[support].std(0, unbiased=False).clamp_min(1e-6))


def build(architecture: str, variant: str):
    """The shipped in-context checkpoint's architecture config, random weights, `architecture` and `variant` swapped in."""
    from dataclasses import replace

    import torch

    from basisfm.model import build_model
    from basisfm.model.checkpoint import read_model_config
    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    torch.manual_seed(0)
    config = replace(read_model_config(IN_CONTEXT_CHECKPOINT_DIR), architecture=architecture, attention=variant,
                     block_size=8, keep_ratio=0.25)
    return build_model(config).eval()


def limit_memory(max_gb: float) -> None:
    """Let this process map at most `max_gb` more than it has mapped now: a larger allocation raises instead."""
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + int(max_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure_in_this_process(architecture: str, variant: str, rows: int, columns: int, repeats: int = 3,
                            max_gb: float | None = None, slow_seconds: float = math.inf) -> Point:
    """One point, in the current process (call it from a fresh one: ru_maxrss never goes down). A warm-up
    forward slower than `slow_seconds` is the point's only timing (repeating it would not change the story)."""
    import gc

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = build(architecture, variant)
    batch = synthetic_episode(rows, columns)
    if max_gb is not None:
        limit_memory(max_gb)
    with torch.no_grad():
        gc.collect()
        before = _resident_mb()
        began = time.perf_counter()
        model.predict_numeric(batch)
        warm_up = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        times = []
        for _ in range(repeats if warm_up <= slow_seconds else 0):
            began = time.perf_counter()
            model.predict_numeric(batch)
            times.append(time.perf_counter() - began)
    seconds = sorted(times)[len(times) // 2] if times else warm_up
    return Point(architecture, variant, rows, columns, seconds, len(times) or 1, max(0.0, peak - before))


def measure(architecture: str, variant: str, rows: int, columns: int, max_gb: float, max_seconds: float, repeats: int) -> Point:
    """One point in a fresh interpreter, or the reason it was capped."""
    command = [sys.executable, "-m", "benchmarks.efficiency", "--worker", architecture, variant, str(rows), str(columns),
               str(repeats), str(max_gb), str(max_seconds / (repeats + 1))]
    try:  # the interpreter's start and the model's build come on top of the forwards
        done = subprocess.run(command, capture_output=True, text=True, timeout=max_seconds + STARTUP_SECONDS,
                              cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return Point(architecture, variant, rows, columns, capped=f"time: over {max_seconds:.0f} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if "memory" in last.lower() or "alloc" in last.lower():
            return Point(architecture, variant, rows, columns, capped=f"memory: over {max_gb:g} GB")
        return Point(architecture, variant, rows, columns, capped=f"failed: {last[:120]}")
    return Point(**json.loads(done.stdout.strip().splitlines()[-1]))


def cell(point: Point | None) -> str:
    if point is None:
        return "-"
    if point.capped:
        return f"capped ({point.capped})"
    once = "" if point.forwards != 1 else " (1 forward)"
    return f"{point.seconds:.3f} s{once}, {point.peak_mb:,.0f} MB"


def table(points: list[Point], axis: str, values: tuple[int, ...]) -> list[str]:
    keys = sorted({(p.architecture, p.variant) for p in points}, key=lambda k: (ARCHITECTURES.index(k[0]), VARIANTS.index(k[1])))
    by = {(p.architecture, p.variant, getattr(p, axis)): p for p in points}
    lines = [f"| {axis} | " + " | ".join(f"{a} {v}" for a, v in keys) + " |", "| ---: | " + " | ".join("---:" for _ in keys) + " |"]
    for value in values:
        lines.append(f"| {value:,} | " + " | ".join(cell(by.get((a, v, value))) for a, v in keys) + " |")
    return lines


def growth(points: list[Point], axis: str, architecture: str, variant: str) -> str:
    """Seconds and memory from the axis's first measured point to its last, as ratios."""
    mine = sorted((p for p in points if p.architecture == architecture and p.variant == variant and not p.capped),
                  key=lambda p: getattr(p, axis))
    if len(mine) < 2:
        return "n/a"
    first, last = mine[0], mine[-1]
    return (f"{getattr(first, axis):,} -> {getattr(last, axis):,} {axis}: {last.seconds / first.seconds:.0f}x seconds, "
            f"{(last.peak_mb or 1) / max(first.peak_mb or 1, 1):.0f}x MB")


def render_png(columns: list[Point], rows: list[Point], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for row_axes, points, axis in ((axes[0], columns, "columns"), (axes[1], rows, "rows")):
        for architecture in ARCHITECTURES:
            for i, variant in enumerate(VARIANTS):
                mine = sorted((p for p in points if p.architecture == architecture and p.variant == variant and not p.capped),
                              key=lambda p: getattr(p, axis))
                if not mine:
                    continue
                style = "-" if architecture == "tab2d" else "--"
                x = [getattr(p, axis) for p in mine]
                label = f"{architecture} {variant}"
                row_axes[0].plot(x, [p.seconds for p in mine], style, marker="o", color=f"C{i}", label=label)
                row_axes[1].plot(x, [p.peak_mb for p in mine], style, marker="o", color=f"C{i}", label=label)
        fixed = f"{FIXED_ROWS} rows" if axis == "columns" else f"{FIXED_COLUMNS} columns"
        for ax, ylabel in zip(row_axes, ("forward seconds", "peak MB")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(f"{axis} ({fixed})")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    fig.suptitle("In-context forward cost, random weights, shipped config (d 64, 8 layers), CPU 1 thread")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="columns to 256 and rows to 2,048 only: a few minutes")
    p.add_argument("--out", default=str(RESULTS_DIR), help="where the page and PNG go (default benchmarks/results)")
    p.add_argument("--max-gb", type=float, default=8.0, help="memory a point may map above what it holds before its forwards")
    p.add_argument("--max-seconds", type=float, default=120.0, help="stop a point's process after this long")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--worker", nargs=7, metavar=("ARCHITECTURE", "VARIANT", "ROWS", "COLUMNS", "REPEATS", "MAX_GB", "SLOW"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        architecture, variant, rows, columns, repeats, max_gb, slow = args.worker
        point = measure_in_this_process(architecture, variant, int(rows), int(columns), int(repeats), float(max_gb),
                                        float(slow))
        print(json.dumps(asdict(point)))
        return 0

    column_values = tuple(c for c in COLUMNS if not args.quick or c <= 256)
    row_values = tuple(r for r in ROWS if not args.quick or r <= 2048)
    began, load_at_start = time.perf_counter(), os.getloadavg()[0]
    by_columns, by_rows = [], []
    for architecture in ARCHITECTURES:
        for variant in VARIANTS:
            for columns in column_values:
                by_columns.append(measure(architecture, variant, FIXED_ROWS, columns, args.max_gb, args.max_seconds, args.repeats))
                print(f"[{NAME}] {architecture} {variant} {FIXED_ROWS} x {columns}: {cell(by_columns[-1])}", flush=True)
        for rows in row_values:
            by_rows.append(measure(architecture, "dense", rows, FIXED_COLUMNS, args.max_gb, args.max_seconds, args.repeats))
            print(f"[{NAME}] {architecture} dense {rows} x {FIXED_COLUMNS}: {cell(by_rows[-1])}", flush=True)

    widest = max(column_values)
    at_widest = {(p.architecture, p.variant): p for p in by_columns if p.columns == widest}
    headline = f"at {FIXED_ROWS} rows x {widest:,} columns: " + ", ".join(
        f"{a} {v} {cell(q)}" for (a, v), q in at_widest.items()) + f"; at {max(row_values):,} rows x {FIXED_COLUMNS} columns: " + \
        ", ".join(f"{p.architecture} {cell(p)}" for p in by_rows if p.rows == max(row_values))
    lines = ["# In-context efficiency: forward seconds and peak memory of tab2d and basis_icl vs columns and rows", "",
             f"Headline: {headline}", "",
             "Random weights (cost, not quality), the shipped in-context checkpoint's config (d_model 64, 4 heads, 8 layers, "
             "8 basis vectors, binned head) built as each architecture with each cell-attention variant; one forward "
             f"with no gradient of an episode of R rows (queries min(128, R/2), the rest labelled context) and C numeric "
             "columns, the last the target. Each point is a fresh process: peak = high-water resident memory above the "
             "resident memory before the first forward; seconds = median of "
             f"{args.repeats} forwards after a warm-up, or the warm-up alone (marked `1 forward`) when it took over "
             f"{args.max_seconds / (args.repeats + 1):.0f} s. Capped points were not run to the end: they needed more than "
             f"{args.max_gb:g} GB above what the process held (an allocation beyond its address-space limit failed), or "
             f"more than {args.max_seconds:.0f} s for all forwards.", "",
             f"## Columns ({FIXED_ROWS} rows; `block_sparse`: blocks of 8 columns, `sampled`: 25% of columns kept)", "",
             *table(by_columns, "columns", column_values), "",
             f"## Rows ({FIXED_COLUMNS} columns, dense cell attention)", "",
             *table(by_rows, "rows", row_values), "",
             "## Growth", ""]
    for architecture in ARCHITECTURES:
        for variant in VARIANTS:
            lines.append(f"- {architecture} {variant}: {growth(by_columns, 'columns', architecture, variant)}")
        lines.append(f"- {architecture} dense: {growth(by_rows, 'rows', architecture, 'dense')}")
    lines.append("")
    import torch

    context = page_context("efficiency", argv, machine=f"shared; load average {load_at_start:.1f} at the start, "
                                                      f"{os.getloadavg()[0]:.1f} at the end (other jobs share the CPUs: "
                                                      "seconds are noisy; compare within a table)",
                           extra={"total minutes": f"{(time.perf_counter() - began) / 60:.1f}"})
    metrics = {}
    for q in by_columns + by_rows:
        if not q.capped:
            metrics[f"seconds.{q.architecture}.{q.variant}.{q.rows}x{q.columns}"] = q.seconds
            metrics[f"peak_mb.{q.architecture}.{q.variant}.{q.rows}x{q.columns}"] = q.peak_mb
    publish(NAME, markdown_page(lines, context), lambda path: render_png(by_columns, by_rows, path), out_dir=args.out,
            log=not args.no_mlflow, metrics=metrics,
            params={"quick": args.quick, "max_gb": args.max_gb, "max_seconds": args.max_seconds, "repeats": args.repeats,
                    "columns": list(column_values), "rows": list(row_values)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
