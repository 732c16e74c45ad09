"""`python -m jobs.tune`: a Ray Tune search (Optuna + ASHA) in which every trial fits a TorchTrainer.

Locally: `python -m jobs.tune --config jobs/configs/tune_tiny.yaml`. On a cluster: the same module through
`ray job submit`. Rerunning with the same tune.name resumes the search. The best trial's model is registered;
`python -m jobs.promote` then decides whether it becomes the champion.
"""

from __future__ import annotations

from pathlib import Path

from jobs._cli import config_from, flag_overrides, parser, run_main

TUNE_TINY_CONFIG = Path(__file__).parent / "configs" / "tune_tiny.yaml"


def main() -> int:
    p = parser("Search loss weighting, sparsity or architecture settings with Ray Tune; register the best model. "
               "The default config here is jobs/configs/tune_tiny.yaml.")
    p.set_defaults(config=str(TUNE_TINY_CONFIG))
    p.add_argument("--space", choices=["loss_weighting", "sparsity", "architecture"], help="search space (tune.space)")
    p.add_argument("--samples", type=int, metavar="N", help="number of trials (tune.num_samples)")
    p.add_argument("--name", metavar="NAME", help="search name; the same name resumes it (tune.name)")
    args = p.parse_args()
    overrides = flag_overrides(args, {"space": "tune.space", "samples": "tune.num_samples", "name": "tune.name"})
    config = config_from(args, overrides)

    from basisfm.tune import run_search

    result = run_search(config)
    print(result.summary(config.tune.metric, config.tune.mode))  # trials, the best settings, where everything went
    if result.registered_version is not None:
        print(f"next: python -m jobs.promote --config {args.config} --version {result.registered_version}")
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    run_main(main)
