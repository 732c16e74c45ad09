"""GPU training throughput: step time, cells/s, achieved TFLOP/s and MFU per preset and table size, bare torch vs DeepSpeed.

For each preset (tiny / small / base) and table shape (rows x columns) it trains on synthetic TableBatches
(mixed numeric and categorical columns, 15% of cells hidden, as the corpus collates them) and reports the
median step time, cells/s, the FLOPs of one step counted by `torch.utils.flop_counter.FlopCounterMode`
(matmuls and attention, forward + backward) over the step time, MFU against the device's bf16 peak, and
peak memory. Modes: the bare torch loop (objective, fused AdamW, bf16 autocast, clipping) and DeepSpeed
ZeRO 0 / 2 / 3 in one process (the engine `basisfm.train` builds), each with `torch.compile` of the
transformer blocks off and on (not with ZeRO-3). Then the data arithmetic: how long the GPU would wait for the
Ray Data pipeline, from its measured cells/s per CPU (benchmarks/results/ingest_throughput.md).

Needs, beyond torch: numpy and pyyaml (the basisfm package's config), deepspeed (the ZeRO rows; a pure-Python
wheel, skipped with a note when absent), matplotlib (the PNG; skipped when absent); mlflow only to log the
results when importable. Not Ray. Run from the repository root:

    PYTHONPATH=platform:. python -m benchmarks.gpu_throughput              # CUDA; on a CPU-only machine it says so, exits 0
    PYTHONPATH=platform:. python -m benchmarks.gpu_throughput --device cpu # a small CPU table, numbers now

It writes benchmarks/results/gpu_throughput{,_cpu}.{md,png} recording device, date and commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._report import commit, importable, publish, pyplot, save_figure

RESULTS_DIR = Path(__file__).parent / "results"
NAME = "gpu_throughput"
INGEST_RESULTS = RESULTS_DIR / "ingest_throughput.md"

# Dense bf16 peak (TFLOP/s, no sparsity) by device name: the MFU denominator.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "B200": 2250.0, "GH200": 989.0}


@dataclass
class Row:
    preset: str
    rows: int
    columns: int
    mode: str  # torch | zero0 | zero2 | zero3
    compile: bool
    step_ms: float = float("nan")
    cells_per_s: float = float("nan")
    tflops: float = float("nan")  # achieved: counted FLOPs of a step / step time
    mfu: float = float("nan")
    peak_gb: float = float("nan")
    note: str = ""
    step_times: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def synthetic_batch(rows: int, columns: int, seed: int, text_dim: int = 384, mask_rate: float = 0.15):
    """A TableBatch of `rows` x `columns`: 3 in 4 columns numeric (mixed scales), the rest categorical with
    8 labels; `mask_rate` of the cells are targets, as collation masks them."""
    import torch

    from basisfm.corpus.manifest import ColumnKind
    from basisfm.data.batch import TableBatch

    g = torch.Generator().manual_seed(seed)
    is_string = torch.arange(columns) % 4 == 3
    kinds = torch.where(is_string, int(ColumnKind.CATEGORICAL), int(ColumnKind.NUMERIC)).long()
    scale = 10.0 ** torch.randint(-2, 4, (columns,), generator=g).double()
    values = torch.randn(rows, columns, generator=g, dtype=torch.float64) * scale
    values[:, is_string] = 0.0
    n_labels = 8
    vocab_ids = torch.randint(0, n_labels, (rows, columns), generator=g)
    string_ids = torch.where(is_string, vocab_ids + n_labels * torch.arange(columns), torch.tensor(-1))
    n_vocab = n_labels * columns  # every column its own labels
    abs_max = torch.where(is_string, 0.0, values.abs().amax(dim=0))
    return TableBatch(
        table_id=f"synthetic-{rows}x{columns}-{seed}",
        column_names=[f"column_{i}" for i in range(columns)],
        column_kinds=kinds,
        column_name_embeddings=torch.nn.functional.normalize(torch.randn(columns, text_dim, generator=g), dim=-1),
        column_abs_max=abs_max,
        column_min_nonzero=torch.where(is_string, 0.0, scale * 1e-3),
        values=values,
        missing=torch.zeros(rows, columns, dtype=torch.bool),
        string_ids=string_ids,
        vocab=[f"label_{i}" for i in range(n_vocab)],
        vocab_embeddings=torch.nn.functional.normalize(torch.randn(n_vocab, text_dim, generator=g), dim=-1),
        target_mask=torch.rand(rows, columns, generator=g) < mask_rate,
    )


# --------------------------------------------------------------------------- the two ways to step


class BareStep:
    """Plain torch: objective forward under bf16 autocast (CUDA), backward, clip, fused AdamW."""

    def __init__(self, config, device, compile_blocks: bool):
        import torch

        from basisfm.losses import build_objective
        from basisfm.model import build_model
        from basisfm.train.deepspeed_config import build_optimizer, compile_blocks as compile_model_blocks

        torch.manual_seed(0)
        model = build_model(config.model)
        if compile_blocks:
            compile_model_blocks(model)
        self.objective = build_objective(model, config.model, config.loss).to(device)
        self.optimizer = build_optimizer(self.objective.parameters(), config.train)
        self.device = device
        self.clip = config.train.grad_clip

    def forward_backward(self, batch):
        import torch

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.objective(batch).loss
        loss.backward()
        return loss

    def __call__(self, batch) -> None:
        import torch

        self.forward_backward(batch)
        torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class DeepSpeedStep:
    """The engine `basisfm.train` builds (one rank): forward, engine.backward, engine.step."""

    def __init__(self, config, device):
        from basisfm.train.deepspeed_config import build_engine

        self.engine, _ = build_engine(config, device)

    def forward_backward(self, batch):
        loss = self.engine(batch).loss
        self.engine.backward(loss)
        return loss

    def __call__(self, batch) -> None:
        self.forward_backward(batch)
        self.engine.step()

    def close(self) -> None:
        self.engine.destroy()  # frees ZeRO-3's hooks and buffers before the next row builds its engine


# --------------------------------------------------------------------------- measuring


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(step, batch) -> float:
    """FLOPs of one forward + backward (optimizer left out: it is not model FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step.forward_backward(batch)
    return float(counter.get_total_flops())


def measure(row: Row, config, device, steps: int, warmup: int, peak_tflops: float | None) -> Row:
    import torch

    batches = [synthetic_batch(row.rows, row.columns, seed).to(device) for seed in range(4)]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = DeepSpeedStep(config, device) if row.mode.startswith("zero") else BareStep(config, device, row.compile)
    try:
        for i in range(warmup):
            step(batches[i % len(batches)])
        sync(device)
        for i in range(steps):
            started = time.perf_counter()
            step(batches[i % len(batches)])
            sync(device)
            row.step_times.append(time.perf_counter() - started)
        # Counted after timing (the counter's dispatch slows the step it watches), on a fresh batch of the
        # same shape; gradients it leaves are cleared by the next step.
        flops = count_flops(step, batches[0])
    finally:
        if isinstance(step, DeepSpeedStep):
            step.close()
    seconds = statistics.median(row.step_times)
    row.step_ms = seconds * 1e3
    row.cells_per_s = row.rows * row.columns / seconds
    row.tflops = flops / seconds / 1e12
    row.mfu = row.tflops / peak_tflops if peak_tflops else float("nan")
    if device.type == "cuda":
        row.peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
    else:
        import resource

        row.peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # process RSS high-water, KB -> GB
    return row


def run_config(preset: str, mode: str, compile_blocks: bool, use_gpu: bool):
    from basisfm.config import load_config

    stage = int(mode[4:]) if mode.startswith("zero") else 0
    return load_config(None, [f"model.preset={preset}", f"train.zero_stage={stage}", f"train.use_gpu={str(use_gpu).lower()}",
                              f"train.compile={str(compile_blocks).lower()}", "train.warmup_steps=0", "train.steps=1000"])


# --------------------------------------------------------------------------- data arithmetic


def ray_data_cells_per_cpu(path: Path = INGEST_RESULTS) -> tuple[float, str] | None:
    """Steady-state cells/s of the Ray Data pipeline on 1 CPU, read from the ingest benchmark's table."""
    if not path.is_file():
        return None
    text = path.read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[0].startswith("Ray Data") and cells[1] == "1":
            corpus = re.search(r"corpus: ([^\n]+)", text)
            return float(cells[8].replace(",", "")), (corpus.group(1) if corpus else "")
    return None


def data_wait(consumed_cells_per_s: float, per_cpu: float, cpus: int) -> float:
    """Fraction of time the GPU waits for data if `cpus` pipeline CPUs each supply `per_cpu` cells/s
    (linear in CPUs: optimistic; benchmarks/results/ingest_throughput.md has how far from linear it scales)."""
    supply = per_cpu * cpus
    return max(0.0, 1.0 - supply / consumed_cells_per_s) if consumed_cells_per_s > 0 else 0.0


# --------------------------------------------------------------------------- reporting


def render_markdown(rows: list[Row], context: dict[str, str], data_lines: list[str]) -> str:
    lines = [f"# GPU throughput ({context['device']})", "",
             "| preset | rows x cols | mode | compile | step ms | cells/s | TFLOP/s | MFU | peak GB | note |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        mfu = "-" if r.mfu != r.mfu else f"{100 * r.mfu:.1f}%"
        lines.append(f"| {r.preset} | {r.rows} x {r.columns} | {r.mode} | {'on' if r.compile else 'off'} | "
                     f"{r.step_ms:.1f} | {r.cells_per_s:,.0f} | {r.tflops:.3g} | {mfu} | {r.peak_gb:.2f} | {r.note} |")
    lines += ["", "Step ms: median over the timed steps (device synchronised around each step). TFLOP/s: FLOPs of one",
              "forward + backward counted by torch.utils.flop_counter.FlopCounterMode, over the step time. MFU: that",
              "over the device's dense bf16 peak. Peak GB: CUDA's max allocated; on CPU the process's RSS high-water",
              "mark (monotone over the run, so later rows include earlier ones).", "", "## Data", ""] + data_lines
    lines += ["", "## Context", ""] + [f"- {k}: {v}" for k, v in context.items()]
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        lines += ["", f"Load average {load:.1f} on {os.cpu_count()} cores: other processes shared the machine while "
                      "these rows ran, one after another, so differences between rows of a few tens of percent are "
                      "within the drift; read the rows as orders of magnitude."]
    return "\n".join(lines) + "\n"


def render_png(rows: list[Row], path: Path, title: str) -> Path | None:
    """The cells/s bars; None when matplotlib is not installed (a bare GPU box)."""
    if not importable("matplotlib"):
        return None
    plt = pyplot()
    measured = [r for r in rows if r.step_ms == r.step_ms]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(measured)), 4))
    labels = [f"{r.preset} {r.rows}x{r.columns}\n{r.mode}{' +c' if r.compile else ''}" for r in measured]
    values = [r.cells_per_s for r in measured]
    ax.bar(range(len(measured)), values, color=["#777777" if r.mode == "torch" else "#1f77b4" for r in measured])
    ax.set_xticks(range(len(measured)), labels, fontsize=6, rotation=90)
    ax.set_ylabel("cells / s (median step)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- main


def parse_shape(text: str) -> tuple[int, int]:
    rows, _, columns = text.partition("x")
    return int(rows), int(columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--presets", nargs="+", help="default: tiny small base (cuda), tiny small (cpu)")
    parser.add_argument("--shapes", nargs="+", help="rows x columns; default 256x16 1024x32 2048x64 (cuda), 64x16 (cpu)")
    parser.add_argument("--modes", nargs="+", default=["torch", "zero0", "zero2", "zero3"],
                        choices=["torch", "zero0", "zero2", "zero3"])
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both")
    parser.add_argument("--steps", type=int, help="timed steps per row (default 20 cuda, 5 cpu)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 cuda, 2 cpu; compile needs some)")
    parser.add_argument("--cpus-per-gpu", type=int, default=16, help="data-pipeline CPUs a GPU node has per GPU")
    parser.add_argument("--out", type=Path, help="results markdown (default benchmarks/results/gpu_throughput[_cpu].md)")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device on this machine; nothing measured. "
              "Run with --device cpu for a small CPU table.")
        return 0
    cpu = args.device == "cpu"
    if cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    device = torch.device("cuda", 0) if not cpu else torch.device("cpu")
    presets = args.presets or (["tiny", "small"] if cpu else ["tiny", "small", "base"])
    shapes = [parse_shape(s) for s in (args.shapes or (["64x16"] if cpu else ["256x16", "1024x32", "2048x64"]))]
    steps = args.steps or (5 if cpu else 20)
    warmup = args.warmup if args.warmup is not None else (2 if cpu else 5)
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    name = torch.cuda.get_device_name(device) if not cpu else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None) if not cpu else None

    try:
        import deepspeed  # noqa: F401

        have_deepspeed = True
    except ImportError:
        have_deepspeed = False
    if any(m.startswith("zero") for m in args.modes) and have_deepspeed:
        from basisfm.train.local_launcher import init_single_process_group

        init_single_process_group(use_gpu=not cpu)

    rows: list[Row] = []
    for preset in presets:
        for r, c in shapes:
            for mode in args.modes:
                for compile_blocks in compiles:
                    row = Row(preset, r, c, mode, compile_blocks)
                    rows.append(row)
                    if mode.startswith("zero") and not have_deepspeed:
                        row.note = "deepspeed not installed"
                        continue
                    if mode == "zero3" and compile_blocks:
                        row.note = "compile not combined with ZeRO-3"
                        continue
                    try:
                        measure(row, run_config(preset, mode, compile_blocks, not cpu), device, steps, warmup, peak)
                    except torch.cuda.OutOfMemoryError:
                        row.note = "out of memory"
                        torch.cuda.empty_cache()
                    except Exception as exc:  # noqa: BLE001 - one failing row must not lose the table
                        row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    print(f"{preset:5s} {r:5d}x{c:<3d} {mode:5s} compile={'on ' if compile_blocks else 'off'} "
                          f"{row.step_ms:8.1f} ms {row.cells_per_s:12,.0f} cells/s {row.tflops:8.3g} TFLOP/s {row.note}",
                          flush=True)

    measured = [r for r in rows if r.cells_per_s == r.cells_per_s]
    data_lines: list[str] = []
    supply = ray_data_cells_per_cpu()
    if supply and measured:
        per_cpu, corpus = supply
        best = max(measured, key=lambda r: r.cells_per_s)
        cpus = 1 if cpu else args.cpus_per_gpu
        wait = data_wait(best.cells_per_s, per_cpu, cpus)
        data_lines = [
            f"- Ray Data pipeline: {per_cpu:,.0f} cells/s per CPU (steady state, 1 CPU; {INGEST_RESULTS.name}, corpus: {corpus})",
            f"- consumed: {best.cells_per_s:,.0f} cells/s ({best.preset} {best.rows}x{best.columns} {best.mode}, the fastest row)",
            f"- supply with {cpus} CPU{'s' if cpus > 1 else ''} per {'trainer' if cpu else 'GPU'}: {per_cpu * cpus:,.0f} cells/s "
            "(linear in CPUs: optimistic, 2 CPUs measured 0.75x of linear)",
            f"- **the {'trainer' if cpu else 'GPU'} waits on data {100 * wait:.0f}% of the time** "
            "(1 - supply / consumption, floored at 0), by arithmetic, not measured end to end",
        ]
        for r in sorted(measured, key=lambda r: -r.cells_per_s)[:5]:
            data_lines.append(f"  - {r.preset} {r.rows}x{r.columns} {r.mode}{' compile' if r.compile else ''}: "
                              f"needs {r.cells_per_s / per_cpu:.2f} pipeline CPUs to never wait")
    else:
        data_lines = [f"- no Ray Data rate found in {INGEST_RESULTS}; run benchmarks.ingest_throughput"]

    context = {"device": name, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "commit": commit(), "torch": torch.__version__, "bf16 peak TFLOP/s": str(peak or "n/a"),
               "precision": "bf16 autocast" if not cpu else "fp32", "timed steps": str(steps), "warm-up": str(warmup),
               "load average": "/".join(f"{x:.1f}" for x in os.getloadavg())}
    if have_deepspeed:
        import deepspeed

        context["deepspeed"] = deepspeed.__version__
    out = args.out or RESULTS_DIR / (f"{NAME}_cpu.md" if cpu else f"{NAME}.md")
    metrics = {f"cells_per_s_{r.preset}_{r.rows}x{r.columns}_{r.mode}{'_compile' if r.compile else ''}": r.cells_per_s
               for r in rows if r.cells_per_s == r.cells_per_s}
    publish(out.stem, render_markdown(rows, context, data_lines),
            lambda path: render_png(rows, path, f"{NAME}: {name}, {context['date']}, {context['commit']}"),
            params=context, metrics=metrics, out_dir=out.parent, log=importable("mlflow"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
