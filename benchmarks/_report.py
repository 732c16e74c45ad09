"""The tail every benchmark shares: print its markdown table, write benchmarks/results/<name>.md and .png,
and log both (with the run's parameters and headline metrics) to MLflow.

MLflow is the embedded store (or $MLFLOW_TRACKING_URI), experiment `benchmarks`. The numbers are on disk
before MLflow is asked, so a tracking failure only warns.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).parent / "results"
EXPERIMENT = "benchmarks"


def commit() -> str:
    """The repository's short commit (+dirty with uncommitted tracked changes), or "unknown" outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def page_context(module: str, argv: list[str] | None, *, machine: str = "", extra: dict[str, Any] | None = None
                 ) -> dict[str, str]:
    """The lines under a results page's table (`markdown_page`'s `context`), in order: `command` (how to rerun it:
    `python -m benchmarks.<module>` and `argv`, or this process's arguments when None), `machine` (architecture,
    cores, torch and its threads, then the caller's `machine` note: load, device, wall time), the `extra` entries,
    `commit` and `date` (UTC)."""
    import os
    import platform
    import shlex
    from datetime import datetime, timezone

    import torch

    described = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    return {
        "command": f"python -m benchmarks.{module} " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": described + (f"; {machine}" if machine else ""),
        **{key: str(value) for key, value in (extra or {}).items()},
        "commit": commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def timed_fit_predict(model, x_train, y_train, x_test) -> tuple[Any, float, float]:
    """(predictions of `x_test`, fit seconds, predict seconds) of `model` fitted on the training rows, its warnings
    silenced (a benchmark's page reports what it measures, not the estimator's advice)."""
    import time
    import warnings

    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x_train, y_train)
    fit_s = time.perf_counter() - began
    began = time.perf_counter()
    predicted = model.predict(x_test)
    return predicted, fit_s, time.perf_counter() - began


def importable(module: str) -> bool:
    """Whether `module` imports here (a bare GPU box may lack matplotlib and MLflow)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def markdown_page(lines: list[str], context: dict[str, Any]) -> str:
    """A results page: `lines` (title, table, notes), then one `- key: value` line per item of `context`
    (machine, load, command: what a reader needs to trust or rerun the numbers).

    A page opening with a `# ` title gets a `Status: current` line under it: a fresh measurement stands until a
    newer page supersedes it (then mark the old one `Status: superseded by NEW.md`; benchmarks.index lists both)."""
    if lines and lines[0].startswith("# ") and not any(line.startswith("Status:") for line in lines):
        lines = [lines[0], "", "Status: current", *lines[1:]]
    return "\n".join([*lines, *(f"- {key}: {value}" for key, value in context.items())]) + "\n"


def publish(name: str, markdown: str, render_png: Callable[[Path], Path | None], *, params: dict[str, Any],
            metrics: dict[str, float], out_dir: Path | str = RESULTS_DIR, log: bool = True) -> tuple[Path, Path | None, str | None]:
    """Print `markdown`, write it (`<out_dir>/<name>.md`) and the PNG `render_png(path)` draws, and log them
    to MLflow unless `log` is False. `render_png` may return None when it cannot draw (no matplotlib).

    Returns the markdown path, the PNG path (or None) and where MLflow holds them (None when not logged).
    """
    print(markdown)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / f"{name}.md"
    md_path.write_text(markdown)
    png_path = render_png(out_dir / f"{name}.png")
    files = [md_path] + ([png_path] if png_path is not None else [])
    where = log_to_mlflow(name, params, metrics, files) if log else None
    print(f"wrote {', '.join(str(f) for f in files)}" + (f"; logged to MLflow at {where}" if where else ""))
    return md_path, png_path, where


def log_to_mlflow(name: str, params: dict[str, Any], metrics: dict[str, float], files: list[Path]) -> str | None:
    """One run named `name` in experiment `benchmarks`; returns where it went, or None (with a warning)."""
    try:
        from basisfm.config import TrackingConfig
        from basisfm.tracking import open_experiment, resolve_tracking_uri

        uri = resolve_tracking_uri(TrackingConfig())
        client, experiment_id = open_experiment(uri, EXPERIMENT)
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        for key, value in params.items():
            client.log_param(run_id, key, str(value))
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        for path in files:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
        return f"{uri} (experiment {EXPERIMENT!r}, run {run_id})"
    except Exception as exc:  # noqa: BLE001 - the numbers are already on disk; tracking is a convenience here
        print(f"warning: could not log to MLflow: {exc}", file=sys.stderr)
        return None
