"""How long a training job takes from its command to its first optimizer step, phase by phase.

The driver starts a `StartupClock` at the job process's own start time (so Python start-up and imports count),
marks its phases (tracking ready, Ray ready), and hands the clock to the launcher; the training process marks
its own (loop entered, engine ready, first step). `run_training` logs the marks as `startup_<phase>_s` metrics
with the first step's window, so `metrics.jsonl`, MLflow and `train_state.json` say where a run's start-up went
(`benchmarks.launcher_overhead` reads them). Marks are wall-clock (unix) times: a Ray worker on the same machine
shares the driver's clock; on another node they carry that node's clock skew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# The phases in the order a run reaches them; a launcher marks the ones it has (the local launcher has no Ray).
PHASES = ("tracking_ready", "ray_ready", "loop_entered", "engine_ready", "first_step")
METRIC_PREFIX = "startup_"


def process_started_at() -> float:
    """Unix time this process started (the command), or now where psutil is absent (a bare GPU machine)."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except (ImportError, OSError):
        return time.time()


@dataclass
class StartupClock:
    """Wall-clock marks of a job's start-up, relative to `job_started` (the driver process's start)."""

    job_started: float
    marks: dict[str, float] = field(default_factory=dict)  # phase -> unix time it was reached

    @classmethod
    def from_process_start(cls) -> "StartupClock":
        return cls(job_started=process_started_at())

    def mark(self, phase: str) -> None:
        """Record `phase` as reached now (the first time only: a restarted attempt keeps the first start-up)."""
        if phase not in PHASES:
            raise ValueError(f"unknown start-up phase {phase!r}; expected one of {PHASES}")
        self.marks.setdefault(phase, time.time())

    def seconds(self) -> dict[str, float]:
        """{phase: seconds since the job started}, in phase order, for the phases reached."""
        return {phase: self.marks[phase] - self.job_started for phase in PHASES if phase in self.marks}

    def metrics(self) -> dict[str, float]:
        return {f"{METRIC_PREFIX}{phase}_s": s for phase, s in self.seconds().items()}

    def summary(self) -> str:
        """One line: the first step's time from the command, and each earlier phase's."""
        seconds = self.seconds()
        first = seconds.pop("first_step", None)
        phases = ", ".join(f"{phase.replace('_', ' ')} {s:.1f}" for phase, s in seconds.items())
        head = f"first step {first:.1f} s after the command" if first is not None else "no step yet"
        return f"{head} ({phases})" if phases else head
