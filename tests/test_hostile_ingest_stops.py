"""An ingest stopped from outside (issue 37): SIGTERM reads as Ctrl-C (one line), a SIGKILL of the ingest or of
one of its workers leaves no worker traceback, no leaked-semaphore warning and no hang, and whatever stopped
it, the tables finished so far are saved, so "tables already ingested are kept" is true."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import basisfm.corpus.ingest as ingest_module
from basisfm.config import CorpusConfig
from basisfm.corpus.ingest import ingest
from basisfm.corpus.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED = "interrupted; rerun to resume (tables already ingested are kept)"


def test_an_interrupt_before_the_first_save_keeps_the_tables_already_ingested(tmp_path, monkeypatch):
    config = CorpusConfig(tables=["datasets/iris", "datasets/mtcars", "datasets/cars"], out_dir=str(tmp_path),
                          exclude_suites=[], workers=1)
    real = ingest_module.normalise_table

    def interrupt_at_cars(frame, table_id, *args, **kwargs):
        if table_id.endswith("/cars"):
            raise KeyboardInterrupt  # as Ctrl-C (or SIGTERM) would, seconds before the first periodic save
        return real(frame, table_id, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "normalise_table", interrupt_at_cars)
    assert ingest_module.MANIFEST_FLUSH_SECONDS >= 1  # the periodic save has not come yet
    with pytest.raises(KeyboardInterrupt):
        ingest(config, progress=False)
    monkeypatch.setattr(ingest_module, "normalise_table", real)
    again = ingest(config, progress=False)
    assert again.tables == 3 and again.reused == 2, again.summary()


def test_sigterm_leaves_the_default_handler_in_place_afterwards(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    ingest(CorpusConfig(tables=["datasets/iris"], out_dir=str(tmp_path), exclude_suites=[], workers=1), progress=False)
    assert signal.getsignal(signal.SIGTERM) == before


def _pool_workers(pid: int) -> list[psutil.Process]:
    return [child for child in psutil.Process(pid).children()
            if any("spawn_main" in part for part in child.cmdline())]


@pytest.mark.parametrize("target, signum", [("ingest", signal.SIGTERM), ("ingest", signal.SIGKILL),
                                            ("worker", signal.SIGKILL)])
def test_a_two_worker_ingest_stopped_by_a_signal_says_one_line_and_leaves_nothing_running(tmp_path, target, signum):
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.ingest", "--out", str(out),
         "--set", "corpus.packages=[datasets, MASS, AER, Ecdat, HistData, carData]",
         "--set", "corpus.workers=2", "--set", "corpus.exclude_suites=[]"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list((out / "shards").glob("*.parquet")):
            time.sleep(0.2)  # until the worker processes are ingesting (and hold tables)
        assert process.poll() is None, "the ingest ended before it could be stopped"
        workers = _pool_workers(process.pid)
        assert len(workers) == 2, workers
        if target == "ingest":
            os.kill(process.pid, signum)  # the process alone, as `kill` does: not its group
        else:
            workers[0].send_signal(signum)  # as the system does to a process out of memory
        # Read until every holder of the pipe closes it: the workers' last words are in here too.
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert "leaked semaphore" not in stderr, stderr
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), "a worker outlived it"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if signum == signal.SIGTERM:
        assert process.returncode == 130 and last == INTERRUPTED, stderr
    elif target == "ingest":
        assert process.returncode == -signal.SIGKILL  # nothing of its own can run; the point is what others print
    else:
        assert process.returncode == 2, stderr
        assert last.startswith(f"error: ingest worker process {workers[0].pid} was ended by SIGKILL"), stderr
        assert "rerun to resume" in last
    if process.returncode != -signal.SIGKILL:  # stopped cleanly: saved on the way out, before any periodic save
        assert (out / MANIFEST_NAME).is_file()
