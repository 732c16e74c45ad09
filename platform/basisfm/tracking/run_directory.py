"""A training run's record on local disk: params, metrics and tags as files, whether or not MLflow is installed.

A lent GPU machine has neither Ray nor MLflow. The local launcher writes `params.json` (the flattened config),
`metrics.jsonl` (one line per logged step, written at checkpoints like MLflow's, so the file matches a checkpoint
the run can resume from), `tags.json` and the checkpoint into the run directory; `python -m jobs.register RUN_DIR`
later imports it into MLflow (`basisfm.tracking.run_import`). With MLflow present the same metrics also go there live.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.jsonl"
TAGS_FILE = "tags.json"


class RunDirectoryLog:
    """Metrics buffered per step and appended to `metrics.jsonl` at `flush`; params and tags as JSON files."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._pending: list[dict[str, Any]] = []

    def log_params(self, params: dict[str, Any]) -> None:
        self._write_json(PARAMS_FILE, {k: v for k, v in sorted(params.items())})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._write_json(TAGS_FILE, {**read_json(self.run_dir / TAGS_FILE), **{k: str(v) for k, v in tags.items()}})

    def buffer_metrics(self, metrics: dict[str, float], step: int) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}  # as MLflow: NaN is left out
        if finite:
            self._pending.append({"step": int(step), "metrics": finite})

    def flush(self) -> bool:
        if self._pending:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as out:
                out.write("".join(json.dumps(line, sort_keys=True) + "\n" for line in self._pending))
            self._pending = []
        return True

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        from basisfm.corpus.manifest import atomic_write_text

        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / name, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


class MetricFanOut:
    """One metric sink for the training loop that feeds several (the run directory, and MLflow when present)."""

    def __init__(self, *sinks):
        self.sinks = [s for s in sinks if s is not None]

    def buffer_metrics(self, metrics: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.buffer_metrics(metrics, step)

    def flush(self) -> bool:
        return all([sink.flush() for sink in self.sinks])  # a list: every sink flushes even when one fails


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_metrics(run_dir: str | Path) -> list[tuple[str, float, int]]:
    """(name, value, step) for every metric in `metrics.jsonl`, the last value of a (name, step) pair winning (a
    step redone after a restart), in step order. A torn last line (the process died mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    values: dict[tuple[str, int], float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            for name, value in record.get("metrics", {}).items():
                values[(str(name), int(record["step"]))] = float(value)
    return [(name, value, step) for (name, step), value in sorted(values.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
