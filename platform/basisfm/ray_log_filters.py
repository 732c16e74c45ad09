"""Ray's own log lines that are not news to a basisfm user, filtered in the Ray process that prints them.

`quiet_ray_worker` is the `worker_process_setup_hook` of every Ray cluster basisfm starts itself (`ensure_ray`), so
it runs in each Ray worker process, Ray Train's internal actors included; a cluster joined through $RAY_ADDRESS
keeps its own logging. It lives at the package's top level and imports only the standard library: the hook runs in
every Ray worker process, idle ones included, and importing `basisfm.train` there would load the training stack.
"""

from __future__ import annotations

import logging
import sys
import threading

# Ray Train v2's PlacementGroupCleaner polls the State API every second to learn whether the training controller
# still lives. The State API is served by the dashboard, which basisfm's local clusters leave off
# (`include_dashboard=False`: it costs a process and memory on a laptop), so every poll fails and logs a warning
# for the whole run; under load its GCS query times out and its monitor thread dies with a 30-line traceback.
# Neither affects training: the cleaner only frees the workers' placement group if the controller dies, and
# `ray.shutdown()` at the end of the run frees it anyway.
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_THREAD = "PlacementGroupCleanerMonitor"
STATE_API_WARNING = "Failed to query Ray Train Controller actor state"
CLEANER_STOPPED = ("[basisfm] Ray Train's placement-group cleaner stopped ({error}); training is unaffected: "
                   "ray.shutdown() frees the workers' resources at the end of the run\n")


# Under load, Ray Train's controller cannot reach its AutoscalingCoordinator actor in time and logs the failure with
# a 20-line traceback each retry, though its own message says this is safe to ignore when transient: a local cluster
# has no autoscaler, and the controller retries until the worker group starts. The message stays, on one line.
AUTOSCALING_LOGGER = "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client"
RESOURCE_REQUEST_FAILED = "Failed to send resource request"


class OneLineResourceRequestFailure(logging.Filter):
    """Keeps the controller's 'Failed to send resource request ...' warning, its exception as one trailing clause."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage().startswith(RESOURCE_REQUEST_FAILED):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


class DropStateApiPolling(logging.Filter):
    """Drops the PlacementGroupCleaner's per-second 'Failed to query ... actor state' warning (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return STATE_API_WARNING not in record.getMessage()


# Lines Ray prints from inside its own processes on every run, each a routine event the run's own progress and summary
# already show: Ray Data's notice that progress bars are off (basisfm turns them off: its own progress bar runs in the
# training loop) and its note that a dataset finished (a failed one is still logged), and Ray Train's log of each
# checkpoint persisted and each report, whose metrics dict fills a screen line. Keyed by the logger Ray creates them on
# (a phrase each line holds);
# `ray_train_context_logger` names the one Ray Train creates by its file path.
ROUTINE_LINES = {
    "ray.data._internal.progress": ("Progress bars disabled",),
    "ray.data._internal.execution.streaming_executor": (" execution finished in ",),  # "✔️  Dataset ... execution finished in 3.8 seconds"
    "ray.train.v2._internal.execution.storage": ("Checkpoint successfully created at",),
}
TRAIN_CONTEXT_LINES = ("Reporting training result",)


def ray_train_context_logger() -> str | None:
    """The name of the logger Ray Train's execution context reports on: `logging.getLogger(__file__)`, so its file's
    path, found without importing Ray (this runs in every Ray worker process)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("ray")  # a top-level package: located, not imported
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "train", "v2", "_internal", "execution", "context.py")


class DropRoutineLines(logging.Filter):
    """Drops the records whose message holds one of `phrases` (Ray's routine lines above)."""

    def __init__(self, phrases: tuple[str, ...]):
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


# DeepSpeed's ZeRO-2 gathers partitions with torch.distributed.all_gather_into_tensor, which torch 2.13 marks deprecated:
# a FutureWarning from every training worker at its first step, about DeepSpeed's code, not the user's.
ALL_GATHER_DEPRECATION = r"`torch\.distributed\.all_gather_into_tensor` is deprecated"


def quiet_ray_worker() -> None:
    """Install the filters in this process (idempotent)."""
    import warnings

    warnings.filterwarnings("ignore", message=ALL_GATHER_DEPRECATION, category=FutureWarning)
    for name, filter_type in ((CLEANER_LOGGER, DropStateApiPolling), (AUTOSCALING_LOGGER, OneLineResourceRequestFailure)):
        ray_logger = logging.getLogger(name)
        if not any(isinstance(f, filter_type) for f in ray_logger.filters):
            ray_logger.addFilter(filter_type())
    routine = dict(ROUTINE_LINES)
    context_logger = ray_train_context_logger()
    if context_logger is not None:
        routine[context_logger] = TRAIN_CONTEXT_LINES
    for name, phrases in routine.items():
        ray_logger = logging.getLogger(name)
        if not any(isinstance(f, DropRoutineLines) for f in ray_logger.filters):
            ray_logger.addFilter(DropRoutineLines(phrases))
    if getattr(threading.excepthook, "_basisfm_quiet", False):
        return
    previous = threading.excepthook

    def one_line_for_the_cleaner(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and args.thread.name == CLEANER_THREAD:
            sys.stderr.write(CLEANER_STOPPED.format(error=f"{args.exc_type.__name__}: {args.exc_value}"))
            return
        previous(args)

    one_line_for_the_cleaner._basisfm_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = one_line_for_the_cleaner
