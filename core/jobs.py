"""Background jobs as plain functions ``fn(request, state)``.

A job never touches Qt. It reports through the ``JobState`` it is given: progress,
partial results, and whether it should stop. The GUI's task manager passes a state that
forwards to queued signals; the CLI and tests pass :class:`HeadlessState`.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Protocol


class Cancelled(Exception):
    """Raised inside a job when its state says stop; the job's partial work is discarded."""


class JobState(Protocol):
    def set_progress(self, fraction: float, text: str = "") -> None: ...
    def set_partial_result(self, value: Any) -> None: ...
    def is_cancelled(self) -> bool: ...


def set_media_span(state: Any, seconds: float) -> None:
    """Tell ``state`` how many seconds of media the job covers, so its progress can be shown as
    throughput (× real time) and an ETA. States without the method (a test's fake) ignore it;
    :class:`SubProgress` passes it on to the outer state for the share of work it stands for."""
    fn = getattr(state, "set_media_span", None)
    if fn is not None:
        fn(float(seconds))


def check(state: JobState) -> None:
    """Raise :class:`Cancelled` if the job was asked to stop."""
    if state.is_cancelled():
        raise Cancelled()


class HeadlessState:
    """A JobState for the CLI and tests: callbacks instead of signals, optional progress bar."""

    def __init__(self, on_partial: Callable[[Any], None] | None = None, *, bar: bool = False,
                 label: str = "", stream=None):
        self.progress = 0.0
        self.text = ""
        self.partials: int = 0
        self._on_partial = on_partial
        self._cancel = threading.Event()
        self._bar = bar
        self._label = label
        self._stream = stream or sys.stderr
        self._last_draw = 0.0

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def set_progress(self, fraction: float, text: str = "") -> None:
        self.progress = max(0.0, min(1.0, float(fraction)))
        self.text = text
        if self._bar:
            now = time.monotonic()
            if now - self._last_draw > 0.1 or self.progress >= 1.0:
                self._last_draw = now
                n = int(self.progress * 30)
                self._stream.write(f"\r{self._label} [{'#' * n}{'.' * (30 - n)}] "
                                   f"{self.progress * 100:5.1f}% {text[:40]:40s}")
                if self.progress >= 1.0:
                    self._stream.write("\n")
                self._open_line = self.progress < 1.0
                self._stream.flush()

    def end_line(self) -> None:
        """End a progress bar left mid-line (before an error line, so it starts a line of its own)."""
        if getattr(self, "_open_line", False):
            self._stream.write("\n")
            self._stream.flush()
            self._open_line = False

    def set_partial_result(self, value: Any) -> None:
        self.partials += 1
        if self._on_partial is not None:
            self._on_partial(value)


class Throttle:
    """True at most every ``interval`` seconds: keeps partial results from flooding the UI."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self._t = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._t >= self.interval:
            self._t = now
            return True
        return False


class SubProgress:
    """A JobState for one stage of a job: its 0..1 progress mapped onto ``[lo, hi]`` of the outer
    job's, its text prefixed with ``prefix``; partial results forwarded (``forward``) or dropped;
    ``quiet`` drops progress too (an inner job whose bar would only confuse). Cancel passes through."""

    def __init__(self, outer: JobState, lo: float = 0.0, hi: float = 1.0, prefix: str = "", *,
                 forward: bool = True, quiet: bool = False) -> None:
        self.outer, self.lo, self.hi, self.prefix = outer, float(lo), float(hi), prefix
        self.forward, self.quiet = forward, quiet

    def set_progress(self, fraction: float, text: str = "") -> None:
        if not self.quiet:
            f = max(0.0, min(1.0, float(fraction)))
            self.outer.set_progress(self.lo + (self.hi - self.lo) * f, self.prefix + text)

    def set_partial_result(self, value: Any) -> None:
        if self.forward:
            self.outer.set_partial_result(value)

    def is_cancelled(self) -> bool:
        return self.outer.is_cancelled()


def barrier() -> None:
    """Runs after the jobs queued before it (on a one-thread pool such as the database writer)."""
