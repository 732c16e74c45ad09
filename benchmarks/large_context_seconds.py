"""Seconds to predict 2,000 query rows from a 10,000-row context: basis_icl against tab2d (random weights).

Cost, not quality: both models are built from the same config (the `tiny` preset, binned head) with random weights,
and read one synthetic table shaped like the public suite's diamonds task (9 numeric features and a numeric target;
10,000 support rows, 2,000 query rows). Rows:
  - `episodes of 128 queries`: what the estimators do (`InContextSettings.query_batch`): every chunk of 128 queries
    is one episode holding the whole context, so the support rows are read again for every chunk. Timed on
    `--chunks` chunks and scaled to the 2,000 queries (every chunk costs the same: the same shapes);
  - `one episode of 2,000 queries`: every query in one episode (basis_icl only: its attention across rows reads the
    support rows as keys, memory R S; tab2d's per-column attention over 12,000 rows would be C times that).
basis_icl's rows are summarised first and only its T target tokens per row attend across rows (T R S); tab2d's
cells attend along every one of its C columns (C R S).

    python -m benchmarks.large_context_seconds [--chunks 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from benchmarks._report import markdown_page, page_context, publish, pyplot, save_figure

NAME = "large_context_seconds"
N_CONTEXT, N_QUERIES, N_FEATURES, QUERY_BATCH = 10_000, 2_000, 9, 128


def episode(n_support: int, n_query: int, seed: int):
    """A TableBatch of `n_support` support rows then `n_query` query rows: y a random smooth function of 9 features."""
    from basisfm.corpus.manifest import ColumnKind
    from basisfm.data.batch import TableBatch

    g = torch.Generator().manual_seed(seed)
    r, c = n_support + n_query, N_FEATURES + 1
    x = torch.randn(r, N_FEATURES, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(N_FEATURES, generator=g, dtype=torch.float64)) * 1000 + 3000
    values = torch.cat([x, y.unsqueeze(-1)], dim=1)
    target = torch.zeros(r, c, dtype=torch.bool)
    target[:, -1] = True
    support = torch.arange(r) < n_support
    return TableBatch(
        table_id="synthetic/diamonds-shaped", column_names=[f"x{j}" for j in range(N_FEATURES)] + ["price"],
        column_kinds=torch.full((c,), int(ColumnKind.NUMERIC)),
        column_name_embeddings=torch.randn(c, 384, generator=g) / 20,
        column_abs_max=values.abs().amax(0), column_min_nonzero=values.abs().amin(0), values=values,
        missing=torch.zeros(r, c, dtype=torch.bool), string_ids=torch.full((r, c), -1), vocab=[],
        vocab_embeddings=torch.zeros(0, 384), target_mask=target, support=support,
        column_mean=values[support].mean(0), column_std=values[support].std(0, unbiased=False))


def seconds(model, n_query: int, repeats: int) -> float:
    """Seconds per episode of N_CONTEXT support rows and `n_query` queries (the fastest of `repeats`)."""
    batch = episode(N_CONTEXT, n_query, seed=0)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            began = time.perf_counter()
            model.predict_numeric(batch)
            best = min(best, time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=2, help="episodes of 128 queries timed (the fastest counts), scaled to 2,000")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)

    from basisfm.config import ModelConfig
    from basisfm.model import build_model

    torch.set_num_threads(args.threads)
    rows = []
    for architecture in ("tab2d", "basis_icl"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(architecture=architecture, regression_head="binned")).eval()
        per_chunk = seconds(model, QUERY_BATCH, args.chunks)
        rows.append({"architecture": architecture, "how": f"episodes of {QUERY_BATCH} queries",
                     "seconds": per_chunk * N_QUERIES / QUERY_BATCH, "note": f"{per_chunk:.2f} s per episode x {N_QUERIES / QUERY_BATCH:.1f}"})
        print(rows[-1], flush=True)
        if architecture == "basis_icl":
            whole = seconds(model, N_QUERIES, 1)
            rows.append({"architecture": architecture, "how": f"one episode of {N_QUERIES:,} queries", "seconds": whole,
                         "note": "measured whole"})
            print(rows[-1], flush=True)
    tab2d = rows[0]["seconds"]
    chunked, best = rows[1]["seconds"], rows[2]["seconds"]
    lines = ["# Predicting 2,000 rows from a 10,000-row context: basis_icl against tab2d", "",
             f"Headline: in the estimators' episodes of {QUERY_BATCH} queries basis_icl {chunked:.1f} s against tab2d "
             f"{tab2d:.1f} s ({chunked / tab2d:.2f} of its time); in one episode of all 2,000 queries basis_icl {best:.1f} s "
             f"({best / tab2d:.3f}) (random weights, tiny preset, {args.threads} thread(s))", "",
             f"A synthetic table shaped like diamonds ({N_FEATURES} numeric features, numeric target), {N_CONTEXT:,} support rows "
             f"and {N_QUERIES:,} queries; both models from the tiny preset with the binned head and random weights "
             "(cost does not depend on the weights). `predict_numeric`, no gradient.", "",
             "| architecture | queries per episode | seconds for 2,000 queries | of tab2d's | how |",
             "| --- | --- | ---: | ---: | --- |"]
    lines += [f"| {r['architecture']} | {r['how']} | {r['seconds']:.1f} | {r['seconds'] / tab2d:.2f} | {r['note']} |" for r in rows]
    lines.append("")
    context = page_context("large_context_seconds", argv,
                           machine=f"shared with other work; load average {os.getloadavg()[0]:.1f} at the end")

    def render(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.barh([f"{r['architecture']}\n{r['how']}" for r in rows], [r["seconds"] for r in rows])
        ax.set_xlabel(f"seconds for {N_QUERIES:,} queries from {N_CONTEXT:,} context rows")
        return save_figure(fig, path)

    publish(NAME, markdown_page(lines, context), render, out_dir=args.out, log=not args.no_mlflow,
            params={"threads": args.threads, "chunks": args.chunks},
            metrics={"tab2d_s": tab2d, "basis_icl_chunked_s": chunked, "basis_icl_one_episode_s": best})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
