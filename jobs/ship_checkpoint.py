"""`python -m jobs.ship_checkpoint`: make a pretrained checkpoint the estimators' shipped default.

    python -m jobs.ship_checkpoint --checkpoint models:/basisfm@champion \
        --evidence benchmarks/results/evaluate_public_champion_ft.md \
        --claim "what the evidence page shows, in one line"

Copies the weights and config into `platform/basisfm/pretrained/per_row/` with a provenance.json (training
config, corpus fingerprint, steps, hardware, MLflow run, evidence). Commit the directory to ship it.
"""

from __future__ import annotations

import argparse
import json

from jobs._cli import run_main


def main() -> int:
    from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR

    p = argparse.ArgumentParser(prog="python -m jobs.ship_checkpoint", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--checkpoint", required=True, metavar="DIR_OR_URI", help="a checkpoint directory or models:/name@alias")
    p.add_argument("--evidence", required=True, metavar="FILE", help="results showing it beats fine-tuning from scratch")
    p.add_argument("--claim", required=True, metavar="TEXT", help="what the evidence shows, in one line")
    p.add_argument("--hardware", metavar="TEXT", help="where it trained (default: the run's basisfm.hardware tag)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else runs/mlflow.db)")
    p.add_argument("--out", default=str(PER_ROW_CHECKPOINT_DIR), metavar="DIR", help="where to write it (default: the package's per-row checkpoint)")
    args = p.parse_args()

    from basisfm.pretrained.ship import ship_checkpoint

    provenance = ship_checkpoint(args.checkpoint, args.evidence, args.claim, out_dir=args.out,
                                 tracking_uri=args.tracking_uri, hardware=args.hardware)
    print(json.dumps({k: provenance[k] for k in ("source", "architecture", "parameters", "mlflow", "training", "corpus", "evidence")},
                     indent=1))
    print(f"shipped to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
