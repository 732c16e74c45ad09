"""Progress for long work: a redrawing tqdm bar on a terminal, one plain line every ~10% anywhere else.

A redrawing bar written to a file or a CI log is hundreds of carriage-return updates on one line (a `make demo`
log was mostly that). Every progress display in basisfm goes through `progress_bar`, which looks at where the
output goes: a terminal gets tqdm; a file, a pipe or a Ray worker's captured stderr gets a line at start, at each
tenth of the total and at the end, in tqdm's own wording.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Iterable, Iterator

from tqdm import tqdm

LINES_PER_RUN = 10  # a line each time another tenth of the total is done
_UNKNOWN_TOTAL_EVERY_S = 30.0  # without a total, a line every this many seconds


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
                 initial: float = 0, disable: bool = False, file: IO[str] | None = None, **tqdm_kwargs: Any):
    """tqdm's bar when `file` (default stderr) is a terminal, else a `LineProgress` with the same methods.

    Takes tqdm's arguments (`leave`, `mininterval`, ... apply to the terminal bar only).
    """
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=file,
                    **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream)


def write_line(message: str, file: IO[str] | None = None) -> None:
    """Print a line without breaking a terminal bar that is being drawn (tqdm.write; plain print elsewhere)."""
    tqdm.write(message, file=file)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a stream without isatty, or a closed one
        return False


class LineProgress:
    """The subset of tqdm basisfm uses (update, set_postfix, set_postfix_str, close, iteration, `with`), printing
    whole lines: at start, whenever another tenth of `total` is done, and at close."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, disable: bool = False, file: IO[str] | None = None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit, self.disable = iterable, total, desc, unit, disable
        self.file = file if file is not None else sys.stderr
        self.n = initial
        self._initial = initial
        self._postfix = ""
        self._started = time.monotonic()
        self._last_line_at = self._started
        self._last_tenth = self._tenth()
        self._closed = False
        self._emit()

    def _tenth(self) -> int:
        return int(LINES_PER_RUN * self.n / self.total) if self.total else -1

    def _emit(self) -> None:
        if self.disable:
            return
        elapsed = time.monotonic() - self._started
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else None
        # tqdm's wording without the bar: "ingest: 30% 688/2293 [00:24<00:56, 28.2table/s, ingested=673]"
        lead = "{desc}: " if self.desc else ""
        bar_format = (lead + "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                      if self.total else lead + "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]")
        line = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit, rate=rate,
                                 postfix=self._postfix or None, bar_format=bar_format)
        self.file.write(line.strip() + "\n")
        self.file.flush()
        self._last_line_at = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total:
            tenth = self._tenth()
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self._emit()
        elif time.monotonic() - self._last_line_at >= _UNKNOWN_TOTAL_EVERY_S:
            self._emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not (self.total and self._last_tenth >= LINES_PER_RUN and self.n >= self.total):
            self._emit()  # where it stopped (the last tenth's line already says 100%)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LineProgress was made without an iterable; call update() instead of iterating")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
