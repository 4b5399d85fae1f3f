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
    throughput (× real time) and an ETA. A job calls it once, at its start. States without the
    method (a test's fake) ignore it; a :class:`SubProgress` passes it on only where its stage is
    the whole of the outer job and the outer job has not said its own span (a stage's span never
    overwrites the job's: the job knows what it covers as a whole)."""
    fn = getattr(state, "set_media_span", None)
    if fn is not None:
        fn(float(seconds))


# ------------------------------------------------------------------ ETA and throughput
def wall_duration(seconds: float) -> str:
    """A wall-clock duration for a progress line: ``45 s``, ``3 min 12 s``, ``2 h 05 min``."""
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod((s + 30) // 60, 60)
    return f"{h} h {m:02d} min"


def media_amount(seconds: float) -> str:
    """An amount of footage: ``45 s``, ``12 min``, ``1.2 h``, ``24 h``."""
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    h = s / 3600
    return f"{h:.1f} h" if h < 10 else f"{h:.0f} h"


def speed_text(ratio: float) -> str:
    """Media seconds per wall second, in words no reader can turn round: ``48× faster than real
    time``, ``3.0× slower than real time``, ``about real time``. (The benches and the commands'
    summaries write the cost, compute over media: their ``0.02× real time`` is ``50× faster than
    real time`` here.)"""
    r = max(0.0, float(ratio))

    def num(x: float) -> str:
        return f"{x:.0f}" if x >= 10 else f"{x:.1f}"

    if r >= 1.05:
        return f"{num(r)}× faster than real time"
    if r <= 0.95:
        return f"{num(1.0 / max(r, 1e-9))}× slower than real time"
    return "about real time"


ESTIMATING = "estimating…"


class Estimator:
    """ETA and throughput of one job from its progress fractions over wall time. Qt-free; the
    clock is injectable (tests drive it by hand).

    - The rate is progress per wall second over a sliding window (``window_s``, or the whole
      measured time when shorter), measured from the first report above 0: a loading phase that
      sits at 0 (models, indexes) does not slow the estimate.
    - A jump (progress that arrives far faster than the rate so far and in a bigger step than the
      job's usual ones: reused results, a stage skipped) is counted as done but not as speed.
      Progress that goes back starts a new estimate.
    - No ETA (``estimating…``) until ``min_seconds`` of measured time and ``min_fraction`` of
      measured progress have passed.
    - With a media span (:func:`set_media_span`), throughput = media seconds per wall second:
      while running, the rate times the span; at the end, the span over the whole elapsed time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, window_s: float = 60.0,
                 min_seconds: float = 3.0, min_fraction: float = 0.01, jump_factor: float = 8.0):
        self.clock = clock
        self.window_s, self.min_seconds, self.min_fraction = window_s, min_seconds, min_fraction
        self.jump_factor = jump_factor
        self.media_span: float | None = None
        self.fraction = 0.0
        self.reports = 0  # progress reports seen (a job that never reports has no estimate to show)
        self.begun = clock()
        self.ended: float | None = None
        self._reset_measure()

    def _reset_measure(self) -> None:
        self._base: tuple[float, float] | None = None  # (time, fraction) where measuring began
        self._skipped = 0.0  # progress that came in jumps
        self._steps: list[float] = []  # the latest ordinary steps (a step like them is no jump)
        self._samples: list[tuple[float, float]] = []  # (time, measured progress)
        self._last: tuple[float, float] | None = None  # (time, fraction) of the last report
        self._eta_at: tuple[float, float] | None = None  # (time, ETA then)

    def begin(self, t: float | None = None) -> None:
        """The job starts now (its wait in a queue does not count)."""
        self.begun = self.clock() if t is None else float(t)
        self.ended = None
        self.fraction = 0.0
        self.reports = 0
        self._reset_measure()

    def set_media_span(self, seconds: float) -> None:
        s = float(seconds)
        self.media_span = s if s > 0 and s == s and s != float("inf") else None

    def update(self, fraction: float, t: float | None = None) -> None:
        t = self.clock() if t is None else float(t)
        f = max(0.0, min(1.0, float(fraction)))
        self.reports += 1
        if f < self.fraction - 1e-9:  # went back: a new pass, a new estimate
            self._reset_measure()
            self.ended = None
        self.fraction = f
        if f >= 1.0:
            self.ended = t
        if self._base is None:
            if f > 0:
                self._base = (t, f)
                self._samples = [(t, 0.0)]
                self._last = (t, f)
            return
        lt, lf = self._last
        df, dt = f - lf, t - lt
        self._last = (t, f)
        if df <= 0:
            return
        rate = self._rate()
        if rate is None:
            # no rate yet: a big step in almost no time (reused results) is a jump; measure after it
            if df >= 0.05 and dt < 0.25:
                self._base = (t, f)
                self._skipped = 0.0
                self._samples = [(t, 0.0)]
                return
        elif (df > self.jump_factor * rate * max(dt, 1e-6) and df >= 0.01
              and len(self._steps) >= 3 and df > 2.0 * sorted(self._steps)[len(self._steps) // 2]):
            # far ahead of the rate, and bigger than the job's usual step (two workers that finish
            # together make usual steps close in time: those are work, not a jump)
            self._skipped += df
            self._samples.append((t, self._measured(f)))
            self._remember_eta(t)
            return
        self._samples.append((t, self._measured(f)))
        self._steps = self._steps[-19:] + [df]
        cut = t - self.window_s
        while len(self._samples) > 2 and self._samples[1][0] <= cut:
            self._samples.pop(0)
        self._remember_eta(t)

    def _measured(self, f: float) -> float:
        return f - self._base[1] - self._skipped

    def _rate(self) -> float | None:
        """Progress per wall second, or None before there is enough to say."""
        if self._base is None or len(self._samples) < 2:
            return None
        t0, m0 = self._samples[0]
        t1, m1 = self._samples[-1]
        if t1 - self._base[0] < self.min_seconds or self._measured(self.fraction) < self.min_fraction:
            return None
        if t1 - t0 <= 0 or m1 - m0 <= 0:
            return None
        return (m1 - m0) / (t1 - t0)

    def _remember_eta(self, t: float) -> None:
        rate = self._rate()
        self._eta_at = None if rate is None else (t, (1.0 - self.fraction) / rate)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left, counted down from the last report; None while estimating (or when the
        countdown ran out before the job reported again: the estimate no longer holds)."""
        if self.ended is not None or self.fraction >= 1.0:
            return 0.0
        if self._eta_at is None:
            return None
        now = self.clock() if now is None else float(now)
        t, eta = self._eta_at
        left = eta - max(0.0, now - t)
        return left if left > 0 else None

    def throughput(self) -> float | None:
        """Media seconds per wall second (× real time), or None without a span or an estimate."""
        if self.media_span is None:
            return None
        if self.ended is not None:
            took = self.ended - self.begun
            return self.media_span / took if took > 0 else None
        rate = self._rate()
        return None if rate is None else rate * self.media_span

    def elapsed(self, now: float | None = None) -> float:
        end = self.ended if self.ended is not None else (self.clock() if now is None else float(now))
        return max(0.0, end - self.begun)

    def text(self, now: float | None = None) -> str:
        """While running: ``ETA 3 min 12 s · 48× faster than real time`` (or ``estimating…``); once
        done: ``done in 1 min 30 s · 1.2 h of footage, 48× faster than real time``."""
        if self.ended is not None:
            out = f"done in {wall_duration(self.elapsed())}"
            speed = self.throughput()
            if speed is not None:
                out += f" · {media_amount(self.media_span)} of footage, {speed_text(speed)}"
            return out
        eta = self.eta(now)
        if eta is None:
            return ESTIMATING
        speed = self.throughput()
        out = f"ETA {wall_duration(eta) if eta >= 0.5 else '< 1 s'}"
        return out if speed is None else f"{out} · {speed_text(speed)}"

    def detail(self, now: float | None = None) -> str:
        """The long form for a tooltip: the running text, then how much footage in how long."""
        out = self.text(now)
        if self.ended is None and self.media_span is not None:
            eta = self.eta(now)
            if eta is not None:
                out += (f" ({media_amount(self.media_span)} of footage in about "
                        f"{wall_duration(self.elapsed(now) + eta)})")
            else:
                out += f" ({media_amount(self.media_span)} of footage)"
        return out


def check(state: JobState) -> None:
    """Raise :class:`Cancelled` if the job was asked to stop."""
    if state.is_cancelled():
        raise Cancelled()


class HeadlessState:
    """A JobState for the CLI and tests: callbacks instead of signals, optional progress bar.

    The bar shows the job's ETA and throughput (:class:`Estimator`, ``clock`` injectable) and its
    last line says how long the job took (and how fast, when the job said its media span)."""

    BAR = 20

    def __init__(self, on_partial: Callable[[Any], None] | None = None, *, bar: bool = False,
                 label: str = "", stream=None, clock: Callable[[], float] = time.monotonic):
        self.progress = 0.0
        self.text = ""
        self.partials: int = 0
        self._on_partial = on_partial
        self._cancel = threading.Event()
        self._bar = bar
        self._label = label
        self._stream = stream or sys.stderr
        self._clock = clock
        self._last_draw: float | None = None
        self.estimate = Estimator(clock)

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def set_media_span(self, seconds: float) -> None:
        self.estimate.set_media_span(seconds)

    @property
    def media_span(self) -> float | None:
        return self.estimate.media_span

    def set_progress(self, fraction: float, text: str = "") -> None:
        self.progress = max(0.0, min(1.0, float(fraction)))
        self.text = text
        now = self._clock()
        self.estimate.update(self.progress, now)
        if self._bar:
            if self._last_draw is None or now - self._last_draw > 0.1 or self.progress >= 1.0:
                self._last_draw = now
                self._stream.write("\r" + self.bar_line(now))
                if self.progress >= 1.0:
                    self._stream.write("\n")
                self._open_line = self.progress < 1.0
                self._stream.flush()

    def bar_line(self, now: float | None = None) -> str:
        """``label [#####.....]  45.0% ETA 3 min 12 s · 48× faster than real time  text``; at 100% the text is
        the estimator's ``done in …`` line. Cut to the terminal's width when writing to one."""
        n = int(self.progress * self.BAR)
        head = f"{self._label} [{'#' * n}{'.' * (self.BAR - n)}] {self.progress * 100:5.1f}%"
        eta = self.estimate.text(now)
        line = f"{head} {eta}" + (f"  {self.text}" if self.text and self.progress < 1.0 else "")
        width = _terminal_width(self._stream)
        # on a terminal: cut to its width, and pad so a shorter line hides the longer one before
        return line[:width - 1].ljust(width - 1) if width else line

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


def _terminal_width(stream) -> int:
    """Columns of the terminal ``stream`` writes to, or 0 when it is not a terminal."""
    try:
        if stream.isatty():
            import shutil
            return shutil.get_terminal_size((100, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return 0


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

    def set_media_span(self, seconds: float) -> None:
        """A stage's span reaches the outer state only where the stage is the whole outer job and
        that job has said no span of its own: a stage's span (one file of a folder, one pass of
        several over the same file) never overwrites what the job covers as a whole."""
        if self.quiet or self.lo > 0.0 or self.hi < 1.0:
            return
        if getattr(self.outer, "media_span", None) is None:
            set_media_span(self.outer, seconds)

    @property
    def media_span(self) -> float | None:
        """The outer job's span (what a nested stage compares against)."""
        return getattr(self.outer, "media_span", None)

    def is_cancelled(self) -> bool:
        return self.outer.is_cancelled()


def barrier() -> None:
    """Runs after the jobs queued before it (on a one-thread pool such as the database writer)."""
