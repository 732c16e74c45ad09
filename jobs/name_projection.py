"""`python -m jobs.name_projection`: pretrain the contrastive column-name projection on corpus columns.

Pairs of columns that hold the same quantity in different corpus tables (`corpus.column_matches`) are pulled
together, the batch's other names pushed apart (InfoNCE); the projection is written as safetensors, for
`--set data.column_name_embedding=contrastive --set data.name_projection=FILE`. Prints held-out pair recall@1
of each name form.

    python -m jobs.name_projection --corpus-dir runs/corpus --exclude-suite jobs/configs/suites/regression_screen.yaml
"""

from __future__ import annotations

import argparse

from jobs._cli import run_main


def main() -> int:
    p = argparse.ArgumentParser(description="Pretrain the contrastive column-name projection on same-quantity corpus columns.")
    p.add_argument("--corpus-dir", default="runs/corpus", help="an ingested corpus (manifest.jsonl)")
    p.add_argument("--out", default="runs/name_projection/name_projection.safetensors", help="the projection file to write")
    p.add_argument("--exclude-suite", action="append", default=[], metavar="FILE",
                   help="leave out corpus tables that copy this suite's tables (judged by content; repeatable)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding-cache-dir", default="runs/embedding_cache")
    args = p.parse_args()

    from basisfm.config import NameProjectionConfig
    from basisfm.corpus.column_matches import tables_copying_suites
    from basisfm.corpus.manifest import read_manifest
    from basisfm.encoding.name_projection import train_name_projection

    excluded = sorted(tables_copying_suites(args.corpus_dir, read_manifest(args.corpus_dir), args.exclude_suite)) if args.exclude_suite else []
    config = NameProjectionConfig(corpus_dir=args.corpus_dir, out=args.out, exclude_tables=excluded,
                                  embedding_cache_dir=args.embedding_cache_dir, steps=args.steps,
                                  batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, seed=args.seed)
    report = train_name_projection(config)
    print(f"name projection: {report.path} ({report.train_pairs} training pairs, {report.held_out_pairs} held out, "
          f"final InfoNCE {report.final_loss:.3f}, {report.seconds:.1f} s; {len(excluded)} suite-copy tables left out)")
    for form, recall in report.recall_at_1.items():
        print(f"  held-out pair recall@1, {form}: {recall:.3f}")
    return 0


if __name__ == "__main__":
    run_main(main)
