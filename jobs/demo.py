"""`python -m jobs.demo` (what `make demo` runs): ingest → pretrain the tiny model on CPU → register → promote →
a leaderboard of the champion against CatBoost on three public-suite tables."""

from __future__ import annotations

from jobs._cli import config_from, parser, run_main


def main() -> int:
    args = parser("The end-to-end demo on the embedded default (jobs/configs/tiny.yaml).").parse_args()
    from basisfm.workflow import run_demo
    from jobs.evaluate import DEFAULT_SUITE

    print(run_demo(config_from(args), leaderboard_suite=DEFAULT_SUITE).render())
    return 0


if __name__ == "__main__":
    run_main(main)
