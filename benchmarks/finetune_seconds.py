"""Fine-tuning seconds against test R² on the large tables: `BasisRegressor()`'s defaults now, beside the defaults of
an older commit (the code as it was, run from a `git archive` of that commit), side by side on one machine.

Each arm fits `BasisRegressor(progress=False, random_state=split)` (base-ft from the shipped in-context checkpoint,
every default) on one split of a table, in a fresh process at a fixed number of torch threads, then predicts the
split's test rows (the first `--test-rows` of them: the same rows for both arms). The tables are the public suite's
and the regression screen's largest (evaluating on them, never training a checkpoint on them):
diamonds, CPS1988 and ames (public suite), Computers and deliveries (regression screen), split 0, 1 thread.
`--headline` also fits 10,000 diamonds rows (split 0) at 2 threads with both arms, one after the other: the issue's
"a 10,000-row table fine-tuned in <= 120 s" timing, reported as a ratio against the old defaults of the same run.

    python -m benchmarks.finetune_seconds [--quick] [--headline] [--old-commit 28e28a2] [--out DIR]

`--quick` runs the new defaults alone on Computers, capped at `--quick-steps` steps (a check that the harness runs,
minutes, not a measurement). Every arm's result is appended to `<out>/finetune_seconds.jsonl` as it finishes, and a
rerun skips the arms already there (a long run that dies keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks._report import commit, markdown_page, publish, pyplot, save_figure, timed_fit_predict

NAME = "finetune_seconds"
ROOT = Path(__file__).resolve().parents[1]
SUITES = {"public": ROOT / "jobs" / "configs" / "suites" / "public_suite.yaml",
          "screen": ROOT / "jobs" / "configs" / "suites" / "regression_screen.yaml"}
TABLES = [("public", "diamonds"), ("public", "CPS1988"), ("screen", "Computers"), ("screen", "deliveries"), ("public", "ames")]
HEADLINE_TABLE = ("public", "diamonds")
DEFAULT_OLD_COMMIT = "28e28a2"  # the branch point: fine-tuning defaults of 2026-12-07 before this benchmark
ARMS = ("old", "new")


# ---------------------------------------------------------------------------- one arm, in its own process


def split_rows(suite: str, item: str, split: int, test_rows: int):
    """(x_train, y_train, x_test, y_test) of the suite task's split as `jobs.evaluate` draws it, the test rows cut to
    the first `test_rows`."""
    from basisfm.corpus.suite import load_suite, load_task_frame
    from basisfm.evaluation.protocol import protocol_of, select_tasks
    from basisfm.evaluation.splits import make_split, rows_with_usable_target

    loaded = load_suite(SUITES[suite])
    (task,) = select_tasks(loaded, [item])
    frame = rows_with_usable_target(load_task_frame(task), task.target, table=item)
    chosen = make_split(len(frame), split, protocol_of(loaded))
    features, target = frame.drop(columns=[task.target]), frame[task.target]
    test = chosen.test_rows[:test_rows]
    return features.iloc[chosen.train_rows], target.iloc[chosen.train_rows], features.iloc[test], target.iloc[test]


def fit_one(suite: str, item: str, split: int, test_rows: int, max_steps: int | None) -> dict:
    """Fit and score the defaults importable here (whichever `basisfm` PYTHONPATH names)."""
    import torch
    from sklearn.metrics import r2_score

    from basisfm.estimators import BasisRegressor

    x_train, y_train, x_test, y_test = split_rows(suite, item, split, test_rows)
    model = BasisRegressor(progress=False, random_state=split, max_steps=max_steps)
    # Where the seconds go: validation checks (each predicts the held-out rows in context) timed by wrapping the
    # estimator's hook, which old and new code share; the loop's other seconds are its optimizer steps.
    validation_s = [0.0]
    validate = BasisRegressor._in_context_validation_loss

    def timed_validation(self, *a, **k):
        began = time.perf_counter()
        try:
            return validate(self, *a, **k)
        finally:
            validation_s[0] += time.perf_counter() - began

    BasisRegressor._in_context_validation_loss = timed_validation
    predicted, fit_s, predict_s = timed_fit_predict(model, x_train, y_train, x_test)
    history = model.history_
    validations = len(history.checks)
    return {"table": item, "split": split, "train_rows": len(x_train), "test_rows": len(x_test), "fit_s": fit_s,
            "predict_s": predict_s, "r2": float(r2_score(y_test, predicted)), "steps": history.steps,
            "best_step": history.best_step, "validations": validations, "stopped": history.stopped_because,
            "threads": torch.get_num_threads(), "validation_s": validation_s[0],
            "steps_s": history.seconds - validation_s[0], "outside_loop_s": fit_s - history.seconds,
            "checks": [{"step": int(c["step"]), "val_score": float(c["val_score"])} for c in history.checks]}


def run_arm(arm: str, old_platform: Path, suite: str, item: str, split: int, test_rows: int, threads: int,
            max_steps: int | None) -> dict:
    """One arm in a fresh process: `basisfm` from `old_platform` (arm "old") or from this checkout (arm "new")."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(old_platform if arm == "old" else ROOT / "platform"))
    command = [sys.executable, "-m", "benchmarks.finetune_seconds", "--child", suite, item, str(split), str(test_rows),
               str(threads), "" if max_steps is None else str(max_steps)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm {arm} on {item} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update(arm=arm, load_before=load_before, load_after=os.getloadavg()[0])
    return row


def old_code(old_commit: str, out: Path) -> Path:
    """`platform/` of `old_commit`, extracted once under `out` (the old defaults, run as they were)."""
    where = out / f"code-{old_commit}"
    if not (where / "platform" / "basisfm").is_dir():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", old_commit, "platform"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where / "platform"


# ---------------------------------------------------------------------------- the page


def render(rows: list[dict], headline: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    tables = list(dict.fromkeys(r["table"] for r in rows))
    colours = dict(zip(tables, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for table in tables:
        pair = {r["arm"]: r for r in rows if r["table"] == table}
        if set(pair) == set(ARMS):
            left.plot([pair["old"]["fit_s"], pair["new"]["fit_s"]], [pair["old"]["r2"], pair["new"]["r2"]], "-",
                      color=colours[table], alpha=0.5)
        for arm in pair:
            marker = {"old": "o", "new": "s"}.get(arm, "x")
            left.plot(pair[arm]["fit_s"], pair[arm]["r2"], marker, color=colours[table],
                      label=f"{table} ({arm if arm in ARMS else 'candidate'})")
    left.set_xlabel("fit seconds (1 thread)")
    left.set_ylabel("test R²")
    left.set_title("old (circle) -> new (square) defaults, split 0; x: a candidate")
    left.legend(fontsize=7, ncol=2)
    if headline:
        right.bar([r["arm"] for r in headline], [r["fit_s"] for r in headline], color=["#999999", "#1f77b4"][: len(headline)])
        right.axhline(120, color="red", linestyle="--", label="issue 33: 120 s")
        right.set_ylabel("fit seconds, 10,000 diamonds rows, 2 threads")
        right.legend()
    else:
        right.set_axis_off()
    return save_figure(fig, path)


def breakdown(row: dict) -> str:
    """Fit seconds split into optimizer steps, validation checks and the rest (preprocessing, loading, reading the
    table); "—" for a row measured before the benchmark timed them."""
    if "validation_s" not in row:
        return "—"
    return f"{row['steps_s']:.0f} + {row['validation_s']:.0f} + {row['outside_loop_s']:.0f}"


def page(rows: list[dict], headline: list[dict], args, old_commit: str) -> tuple[str, dict]:
    lines = ["# Fine-tuning seconds: `BasisRegressor()` defaults, old against new, on the large tables", ""]
    pairs = {}  # {table: {arm: row}}; an arm beside old and new is a candidate measured on the way (shown, not paired)
    for r in rows:
        pairs.setdefault(r["table"], {})[r["arm"]] = r
    complete = {t: p for t, p in pairs.items() if set(p) == set(ARMS)}
    metrics: dict[str, float] = {}
    summary = []
    if complete:
        deltas = [p["new"]["r2"] - p["old"]["r2"] for p in complete.values()]
        ratios = [p["new"]["fit_s"] / p["old"]["fit_s"] for p in complete.values()]
        metrics.update(median_r2_delta=float(np.median(deltas)), median_fit_ratio=float(np.median(ratios)))
        worst = min(complete, key=lambda t: complete[t]["new"]["r2"] - complete[t]["old"]["r2"])
        summary.append(f"{len(complete)} tables (split 0, 1 thread): test R² new - old median {np.median(deltas):+.4f} "
                       f"(worst {worst} {min(deltas):+.4f}), fit {np.median(ratios):.2f}x the old seconds (median)")
    head = {r["arm"]: r for r in headline}
    if set(head) == set(ARMS):
        metrics.update(headline_old_s=head["old"]["fit_s"], headline_new_s=head["new"]["fit_s"])
        summary.insert(0, f"10,000 diamonds rows at 2 threads: fit {head['new']['fit_s']:.0f} s new against "
                          f"{head['old']['fit_s']:.0f} s old in the same run ({head['new']['fit_s'] / head['old']['fit_s']:.2f}x)")
    if summary:
        lines += [f"Headline: {'; '.join(summary)}", ""]
    lines += ["| table | train rows | arm | fit s | = steps + validation + outside the loop s | steps (best) | validations | "
              "stopped | test R² | predict s |",
              "| --- | ---: | --- | ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    for table, pair in pairs.items():
        for arm in [*ARMS, *sorted(set(pair) - set(ARMS))]:
            if arm in pair:
                r = pair[arm]
                lines.append(f"| {table} | {r['train_rows']:,} | {arm} | {r['fit_s']:.1f} | {breakdown(r)} | {r['steps']} ({r['best_step']}) | "
                             f"{r['validations']} | {r['stopped']} | {r['r2']:.4f} | {r['predict_s']:.1f} |")
    if complete:
        lines += ["", "| table | R² new - old | fit new / old |", "| --- | ---: | ---: |"]
        lines += [f"| {t} | {p['new']['r2'] - p['old']['r2']:+.4f} | {p['new']['fit_s'] / p['old']['fit_s']:.2f} |"
                  for t, p in complete.items()]
    if headline:
        lines += ["", "Headline timing, 10,000 diamonds training rows (split 0), 2 torch threads, each arm a fresh process:", "",
                  "| arm | fit s | = steps + validation + outside the loop s | steps (best) | validations | test R² | "
                  "load average before / after |", "| --- | ---: | --- | ---: | ---: | ---: | --- |"]
        lines += [f"| {r['arm']} | {r['fit_s']:.1f} | {breakdown(r)} | {r['steps']} ({r['best_step']}) | {r['validations']} | "
                  f"{r['r2']:.4f} | {r['load_before']:.1f} / {r['load_after']:.1f} |" for r in headline]
    loads = [r["load_before"] for r in rows + headline] + [r["load_after"] for r in rows + headline]
    context = {
        "command": "python -m benchmarks.finetune_seconds " + shlex.join(sys.argv[1:]),
        "old": f"the defaults at commit {old_commit} (`git archive {old_commit} platform`, run from that copy)",
        "new": f"the defaults at commit {commit()}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU; load average {min(loads, default=0):.1f}-"
                   f"{max(loads, default=0):.1f} while it ran (a background training run and another engineer share the cores)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return "\n".join(lines) + "\n", context, metrics


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":  # one arm, in the process `run_arm` started
        suite, item, split, test_rows, threads, steps = argv[1:7]
        import torch

        torch.set_num_threads(int(threads))
        print(json.dumps(fit_one(suite, item, int(split), int(test_rows), int(steps) if steps else None)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old-commit", default=DEFAULT_OLD_COMMIT, help="the commit whose defaults are the old arm")
    p.add_argument("--tables", nargs="*", help="table items to run (default: all five)")
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    p.add_argument("--test-rows", type=int, default=2_000, help="test rows scored per table (the split's first ones)")
    p.add_argument("--headline", action="store_true", help="also time 10,000 diamonds rows at 2 threads, both arms")
    p.add_argument("--quick", action="store_true", help="new arm only, Computers, --quick-steps steps (minutes)")
    p.add_argument("--quick-steps", type=int, default=20)
    p.add_argument("--out", default="runs/finetune_seconds", help="where the per-arm results (JSONL) go")
    p.add_argument("--page-dir", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / f"{NAME}.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    old_platform = old_code(args.old_commit, out)
    tables = [t for t in TABLES if not args.tables or t[1] in args.tables]
    plan = [(arm, suite, item, 1, None, "table") for suite, item in tables for arm in args.arms]
    if args.quick:
        plan = [("new", "screen", "Computers", 1, args.quick_steps, "table")]
    if args.headline:
        plan += [(arm, *HEADLINE_TABLE, 2, None, "headline") for arm in ARMS]
    for arm, suite, item, threads, steps, kind in plan:
        if any(d["arm"] == arm and d["table"] == item and d["threads"] == threads and d["kind"] == kind for d in done):
            continue
        row = run_arm(arm, old_platform, suite, item, 0, args.test_rows, threads, steps)
        row["kind"] = kind
        print(f"{kind} {item} {arm}: fit {row['fit_s']:.1f} s ({row['steps']} steps, best {row['best_step']}), "
              f"R2 {row['r2']:.4f}, load {row['load_before']:.1f}", flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
    rows = [d for d in done if d["kind"] == "table"]
    headline = [d for d in done if d["kind"] == "headline"]
    markdown, context, metrics = page(rows, headline, args, args.old_commit)
    publish(NAME, markdown_page(markdown.splitlines(), context), lambda path: render(rows, headline, path),
            out_dir=args.page_dir if not args.quick else out, log=not args.no_mlflow and not args.quick,
            params={"old_commit": args.old_commit, "test_rows": args.test_rows, "tables": [t[1] for t in tables]},
            metrics=metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
