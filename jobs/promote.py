"""`python -m jobs.promote`: move the `champion` alias to a registered version only if it beats the champion.

Both are scored by what users get from them: a per-row model with the masked-cell objective on the corpus's
held-out validation tables (val_loss); an in-context model (the registered model `basisfm-icl` the curriculum
stages register into) by in-context prediction of held-out prior tasks and corpus tables (val_real_ratio, or
val_prior_ratio without a corpus), and with `--suite FILE` by the suite's median score. The comparison is printed
either way.

    python -m jobs.promote --config jobs/configs/icl/stage7.yaml --suite jobs/configs/suites/regression_screen.yaml
"""

from __future__ import annotations

from jobs._cli import config_from, parser, run_main


def main() -> int:
    p = parser("Score a registered version against @champion on the validation tables; promote it only on a win.")
    p.add_argument("--version", metavar="N", help="registered version to consider (default: the newest)")
    p.add_argument("--metric", help="deciding score (default: val_loss for a per-row model; for an in-context one the "
                                    "suite's median with --suite, else val_real_ratio with a corpus, else val_prior_ratio)")
    p.add_argument("--mode", choices=["min", "max"], help="whether lower or higher --metric wins (default: the metric's own)")
    p.add_argument("--suite", metavar="FILE", help="in-context models: decide by this suite's median score of basis-inference")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (tracking.tracking_uri)")
    args = p.parse_args()
    overrides = [f"tracking.tracking_uri={args.tracking_uri}"] if args.tracking_uri else []
    config = config_from(args, overrides)

    from basisfm.tracking import resolve_tracking_uri
    from basisfm.evaluation.promotion import promote_registered

    decision = promote_registered(config, args.version, metric=args.metric, mode=args.mode, suite_path=args.suite)
    print(decision.summary())
    champion = decision.candidate_version if decision.promoted else decision.champion_version
    print(f"champion: {config.tracking.registered_model} v{champion} "
          f"(models:/{config.tracking.registered_model}@{config.tracking.champion_alias}) at {resolve_tracking_uri(config.tracking)}")
    return 0


if __name__ == "__main__":
    run_main(main)
