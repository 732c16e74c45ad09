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


def quiet_ray_worker() -> None:
    """Install the filters in this process (idempotent)."""
    for name, filter_type in ((CLEANER_LOGGER, DropStateApiPolling), (AUTOSCALING_LOGGER, OneLineResourceRequestFailure)):
        ray_logger = logging.getLogger(name)
        if not any(isinstance(f, filter_type) for f in ray_logger.filters):
            ray_logger.addFilter(filter_type())
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
