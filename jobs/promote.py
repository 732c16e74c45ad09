"""`python -m jobs.promote`: move the `champion` alias to a registered version only if it beats the champion.

Both are scored with the masked-cell objective on the corpus's held-out validation tables; the comparison
is printed either way.
"""

from __future__ import annotations

from jobs._cli import config_from, parser, run_main


def main() -> int:
    p = parser("Score a registered version against @champion on the validation tables; promote it only on a win.")
    p.add_argument("--version", metavar="N", help="registered version to consider (default: the newest)")
    p.add_argument("--metric", default="val_loss", help="deciding score (default: val_loss; val_r2 with --mode max)")
    p.add_argument("--mode", choices=["min", "max"], default="min", help="whether lower or higher --metric wins")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (tracking.tracking_uri)")
    args = p.parse_args()
    overrides = [f"tracking.tracking_uri={args.tracking_uri}"] if args.tracking_uri else []
    config = config_from(args, overrides)

    from basisfm.tracking import resolve_tracking_uri
    from basisfm.train import promote_registered

    decision = promote_registered(config, args.version, metric=args.metric, mode=args.mode)
    print(decision.summary())
    champion = decision.candidate_version if decision.promoted else decision.champion_version
    print(f"champion: {config.tracking.registered_model} v{champion} "
          f"(models:/{config.tracking.registered_model}@{config.tracking.champion_alias}) at {resolve_tracking_uri(config.tracking)}")
    return 0


if __name__ == "__main__":
    run_main(main)
