"""`python -m jobs.evaluate`: run a suite file's protocol (Basis strategies against GBDTs) and write the leaderboard."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs._cli import run_main

DEFAULT_SUITE = Path(__file__).parent / "configs" / "suites" / "public_suite.yaml"


def build_parser() -> argparse.ArgumentParser:
    from basisfm.evaluation.protocol import DEFAULT_MODELS, MODEL_NAMES

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite file (format of jobs/configs/suites/public_suite.yaml)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="task ids or table names, e.g. diamonds Boston (default: all)")
    p.add_argument("--splits", nargs="+", type=int, default=None, metavar="SEED", help="split seeds to run (default: all of the protocol's)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODEL_NAMES), metavar="MODEL",
                   help=f"models to run, from {list(MODEL_NAMES)} (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--checkpoint", default="default", type=lambda value: None if value.lower() == "none" else value,
                   help="Basis checkpoint: a directory with model.safetensors + config.json, models:/basisfm@champion, a "
                        "shipped checkpoint's name (in_context, per_row), or none (a freshly initialised model of --preset, "
                        "from scratch); default: each Basis model's estimator default (basis-inference: in_context)")
    p.add_argument("--preset", default="tiny", help="model preset used with --checkpoint none")
    p.add_argument("--basis-param", dest="basis_params", action="append", default=[], metavar="KEY=JSON",
                   help="estimator parameter for every Basis model, e.g. --basis-param max_steps=200 (repeatable)")
    p.add_argument("--out", default="runs/eval", help="directory for leaderboard.md, leaderboard.png and scores.json")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite under runs/)")
    p.add_argument("--experiment", default="basisfm-eval", help="MLflow experiment name")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return p


def parse_basis_params(items: list[str], preset: str) -> dict:
    from basisfm.errors import ConfigError

    params: dict = {"preset": preset}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--basis-param {item!r} must look like key=value, e.g. max_steps=200")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main() -> int:
    from basisfm.evaluation import run_suite

    args = build_parser().parse_args()
    result = run_suite(
        args.suite, models=args.models, tasks=args.tasks, splits=args.splits, out_dir=args.out,
        checkpoint=args.checkpoint, basis_params=parse_basis_params(args.basis_params, args.preset),
        tracking_uri=args.tracking_uri, experiment=args.experiment, log_to_mlflow=not args.no_mlflow,
    )
    print(result.leaderboard.to_markdown())
    for note in result.notes:
        print(note)
    print(f"leaderboard: {result.paths['markdown']}  plot: {result.paths['png']}  scores: {result.paths['scores']}")
    if result.mlflow_run_id:
        print(f"mlflow run: {result.mlflow_run_id}")
    print(f"wall time: {result.wall_seconds:.1f}s")
    return 0


if __name__ == "__main__":
    run_main(main)
