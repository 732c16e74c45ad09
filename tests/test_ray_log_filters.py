"""Ray Train's internal noise is filtered in the process that prints it, and the clusters basisfm starts install it."""

from __future__ import annotations

import logging
import threading

import pytest

from basisfm import ray_log_filters
from basisfm.ray_log_filters import AUTOSCALING_LOGGER, CLEANER_LOGGER, CLEANER_THREAD, quiet_ray_worker


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after the test
    loggers = [logging.getLogger(CLEANER_LOGGER), logging.getLogger(AUTOSCALING_LOGGER)]
    before = [list(logger.filters) for logger in loggers]
    quiet_ray_worker()
    quiet_ray_worker()  # idempotent: one filter each, one hook
    yield loggers[0]
    for logger, filters in zip(loggers, before):
        logger.filters[:] = filters


def test_the_cleaners_polling_warning_is_dropped_and_other_warnings_pass(quiet, caplog):
    assert sum(isinstance(f, ray_log_filters.DropStateApiPolling) for f in quiet.filters) == 1
    with caplog.at_level(logging.WARNING, logger=CLEANER_LOGGER):
        quiet.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        quiet.warning("Removing placement group after the controller died")
    assert [r.getMessage() for r in caplog.records] == ["Removing placement group after the controller died"]


def test_a_failed_resource_request_under_load_is_one_line(quiet, caplog):
    autoscaling = logging.getLogger(AUTOSCALING_LOGGER)
    assert len(autoscaling.filters) == 1
    with caplog.at_level(logging.WARNING, logger=AUTOSCALING_LOGGER):
        try:
            raise TimeoutError("Get timed out: some object(s) not ready.")
        except TimeoutError:
            autoscaling.warning("Failed to send resource request for %s. It's safe to ignore this error.", "train-1",
                                exc_info=True)
    [record] = caplog.records
    assert record.exc_info is None and "Traceback" not in caplog.text
    assert record.getMessage() == ("Failed to send resource request for train-1. It's safe to ignore this error. "
                                   "(TimeoutError: Get timed out: some object(s) not ready.)")


def test_the_cleaners_thread_dying_is_one_line_and_other_threads_keep_their_hook(monkeypatch, capsys):
    handed_on = []
    monkeypatch.setattr(threading, "excepthook", lambda args: handed_on.append(args.thread.name))
    monkeypatch.setattr(logging.getLogger(CLEANER_LOGGER), "filters", [])  # restored after the test
    quiet_ray_worker()  # wraps the hook in place now (pytest installs its own around each test phase)

    def gcs_timeout():
        raise TimeoutError("Timed out while waiting for GCS")

    for name in (CLEANER_THREAD, "some-other-thread"):
        thread = threading.Thread(target=gcs_timeout, name=name)
        thread.start()
        thread.join()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TimeoutError: Timed out while waiting for GCS" in err
    assert "training is unaffected" in err and "Traceback" not in err
    assert handed_on == ["some-other-thread"]


@pytest.mark.slow
def test_a_cluster_basisfm_starts_runs_the_filters_in_its_workers(monkeypatch):
    import ray

    from basisfm.config import RunConfig
    from basisfm.train.trainer import ensure_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already up in this process")
    ensure_ray(RunConfig())
    try:
        @ray.remote(num_cpus=0)
        def filters_here() -> list[str]:
            return [type(f).__name__ for f in logging.getLogger(CLEANER_LOGGER).filters]

        assert "DropStateApiPolling" in ray.get(filters_here.remote(), timeout=120)
    finally:
        ray.shutdown()


def test_the_hook_module_imports_nothing_of_the_training_stack():
    import subprocess
    import sys

    code = ("import sys, basisfm.ray_log_filters; "
            "print(sorted(m for m in sys.modules if m.startswith(('basisfm.train', 'torch', 'yaml', 'ray'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"  # it runs in every Ray worker process, idle ones included


def test_rays_routine_lines_are_dropped_and_a_failure_beside_them_is_kept(monkeypatch):
    from basisfm.ray_log_filters import ROUTINE_LINES, ray_train_context_logger

    import ray.train.v2._internal.execution.context as train_context

    assert ray_train_context_logger() == train_context.__file__  # the name Ray Train's own logger has
    names = [*ROUTINE_LINES, ray_train_context_logger()]
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "filters", [])  # restored after the test
    quiet_ray_worker()
    quiet_ray_worker()
    executor, storage, context = (logging.getLogger(n) for n in names[1:])
    assert all(len(logging.getLogger(n).filters) == 1 for n in names)
    seen: list[str] = []  # a handler on each logger: Ray's own logging setup stops propagation to pytest's

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    for name in names:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [Collect()])
        monkeypatch.setattr(logger, "level", logging.INFO)
    logging.getLogger(names[0]).warning("Progress bars disabled. To enable, set ...")
    executor.info("\u2714\ufe0f  Dataset train_1 execution finished in 3.83 seconds")
    executor.info("\u26a0\ufe0f  Dataset train_2 execution failed")
    storage.info("Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/step_27)")
    context.info("Reporting training result 1: TrainingReport(checkpoint=..., metrics={'train_loss': 2.1}) from rank 0")
    storage.warning("Checkpoint upload failed")
    assert seen == ["\u26a0\ufe0f  Dataset train_2 execution failed", "Checkpoint upload failed"]


def test_deepspeeds_deprecated_all_gather_warning_is_silenced_in_the_worker_and_others_are_not(monkeypatch):
    import warnings

    monkeypatch.setattr(warnings, "filters", list(warnings.filters))  # restored after the test
    quiet_ray_worker()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_ray_worker()  # installed inside this block too: catch_warnings resets the filters it entered with
        warnings.warn("`torch.distributed.all_gather_into_tensor` is deprecated. Please use "
                      "`torch.distributed.all_gather_single` instead.", FutureWarning)
        warnings.warn("`torch.distributed.reduce_scatter_tensor` is deprecated.", FutureWarning)
    assert [str(w.message) for w in caught] == ["`torch.distributed.reduce_scatter_tensor` is deprecated."]
