"""`python -m jobs.register RUN_DIR`: import a training run directory into MLflow and register its checkpoint.

For runs made where MLflow was not installed (a lent GPU machine): `jobs.pretrain --launcher local` wrote
params.json, metrics.jsonl, tags.json and model/ into RUN_DIR; this logs them as one MLflow run (in the experiment
and registered model the run's config named) and registers model/ as a version. Importing twice does nothing new.
"""

from __future__ import annotations

from jobs._cli import config_from, parser, run_main


def main() -> int:
    p = parser("Import a jobs.pretrain run directory (params, metrics, artifacts, checkpoint) into MLflow and register it.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory jobs.pretrain printed (<storage_path>/<run_name>)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (tracking.tracking_uri)")
    p.add_argument("--no-register", action="store_true", help="import the run only; register no version")
    args = p.parse_args()
    config = config_from(args, [f"tracking.tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])

    from basisfm.tracking.mlflow_logger import resolve_tracking_uri
    from basisfm.tracking.run_import import import_run_directory

    result = import_run_directory(args.run_dir, resolve_tracking_uri(config.tracking), register=not args.no_register)
    print(result.summary())
    return 0


if __name__ == "__main__":
    run_main(main)
