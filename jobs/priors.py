"""`python -m jobs.priors --show N [--out DIR]`: write N synthetic prior tasks as CSV files plus a one-page PNG.

The tasks come from the config's `priors` section (`--set priors.max_rows=64` etc.), so a person can see what
a run would train on before training on it.
"""

from __future__ import annotations

from jobs._cli import config_from, parser, run_main


def main() -> int:
    p = parser("Write sample synthetic prior tasks as CSV plus a PNG of y against its strongest feature.")
    p.add_argument("--show", type=int, required=True, metavar="N", help="how many tasks to write")
    p.add_argument("--out", default="runs/priors/samples", metavar="DIR", help="output folder (default: runs/priors/samples)")
    p.add_argument("--seed", type=int, metavar="S", help="prior seed (default: priors.seed)")
    args = p.parse_args()
    if args.show < 1:
        p.error("--show must be at least 1")
    config = config_from(args)

    from basisfm.priors.show import write_samples

    report = write_samples(config, args.show, args.out, seed=args.seed)
    for line in report.lines:
        print(line)
    counts = report.rejections
    print(f"\n{len(report.csv_files)} tasks in {report.out_dir}/ (figure: {report.png}); the prior generated "
          f"{counts['generated']} and rejected {counts['generated'] - counts['accepted']} "
          f"(constant target {counts['constant_target']}, unlearnable {counts['unlearnable']}, non-finite {counts['non_finite']})")
    return 0


if __name__ == "__main__":
    run_main(main)
