"""`python -m jobs.demo` (what `make demo` runs, on jobs/configs/demo.yaml): ingest → register the shipped in-context
checkpoint → continue pretraining it on the corpus with 2 Ray workers → register → promote by in-context prediction →
a leaderboard of the champion in context against CatBoost on three public-suite tables."""

from __future__ import annotations

from pathlib import Path

from jobs._cli import config_from, parser, run_main

DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def main() -> int:
    args = parser("The end-to-end demo on the embedded default (jobs/configs/demo.yaml).", DEMO_CONFIG).parse_args()
    from basisfm.workflow import run_demo
    from jobs.evaluate import DEFAULT_SUITE

    print(run_demo(config_from(args), leaderboard_suite=DEFAULT_SUITE).render())
    return 0


if __name__ == "__main__":
    run_main(main)
