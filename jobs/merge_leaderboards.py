"""One leaderboard from several `jobs.evaluate` runs: each run's models under a label of your choosing.

    python -m jobs.merge_leaderboards "tab2d ordinal=runs/eval-ord" "tab2d text=runs/eval-inf-base" \
        runs/eval-gbdt --out runs/eval-merged

An argument is `DIR` (the run's models keep their names) or `LABEL=DIR` (a run of one model is renamed
LABEL; a run of several becomes "LABEL model"). DIR holds the run's scores.json. Runs of one model over
different tasks or splits (a suite run in parts, side by side) merge into one row when they share a label;
the same model, task and split twice is refused. Every run must score the same suite and metric; the
merged leaderboard is printed and, with --out, written as leaderboard.md / .png / scores.json, aggregated
as the suite prescribes (median over tasks of the mean over splits).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from basisfm.errors import ConfigError
from basisfm.evaluation.leaderboard import Leaderboard
from jobs._cli import run_main


def read_run(directory: Path) -> Leaderboard:
    scores = directory / "scores.json"
    if not scores.is_file():
        raise ConfigError(f"{directory} holds no scores.json: is it the --out directory of a finished jobs.evaluate run?")
    return Leaderboard.from_json(scores.read_text())


def merge(runs: list[tuple[str | None, Path]]) -> Leaderboard:
    merged: Leaderboard | None = None
    for label, directory in runs:
        board = read_run(directory)
        models = board.models
        rename = {m: (m if label is None else label if len(models) == 1 else f"{label} {m}") for m in models}
        records = [replace(r, model=rename[r.model]) for r in board.records]
        if merged is None:
            merged = Leaderboard(suite=board.suite, metric=board.metric, records=records)
            continue
        if board.metric != merged.metric:
            raise ConfigError(f"{directory} scores {board.metric!r}, the runs before it {merged.metric!r}: not one leaderboard")
        taken = {(r.model, r.task, r.split) for r in merged.records}
        clash = sorted({r.model for r in records if (r.model, r.task, r.split) in taken})
        if clash:
            raise ConfigError(f"{directory} scores model(s) {clash} on a task and split an earlier run already scored: "
                              "give the run its own LABEL=")
        merged.records.extend(records)
    if merged is None:
        raise ConfigError("no runs given")
    return merged


def parse_run(text: str) -> tuple[str | None, Path]:
    label, _, directory = text.rpartition("=")
    return (label or None), Path(directory)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="[LABEL=]DIR", help="jobs.evaluate --out directories")
    p.add_argument("--out", type=Path, help="write leaderboard.md / .png / scores.json here")
    args = p.parse_args(argv)
    board = merge([parse_run(r) for r in args.runs])
    print(board.to_markdown())
    if args.out:
        paths = board.save(args.out)
        print(f"wrote {paths['markdown']}, {paths['png']}, {paths['scores']}")
    return 0


if __name__ == "__main__":
    run_main(main)
