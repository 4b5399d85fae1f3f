"""The one module in Kestrel that creates threads.

Pools, each with one job in mind:
- ``db``: one worker, the only writer of the project database (one writer, no lock fights);
- ``compute``: one worker for CPU/GPU-heavy work (inference, training, peak pyramids);
- ``io``: a small pool for probing files, frame indexes, reading samples;
- ``live``: readers of cameras and network streams, each running until cancelled;
- the player's frames: a single "latest request wins" worker (:class:`FrameFetcher`).

Jobs are plain functions ``fn(request, state)`` from ``core``. Their progress, partial
results, results and errors come back to the UI thread through queued signals; each
carries its task id, and results of a task that was cancelled or superseded are dropped.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from core.errors import describe, is_expected
from core.jobs import Cancelled, Estimator

log = logging.getLogger(__name__)

_ids = itertools.count(1)


def log_failure(what: str, exc: BaseException) -> None:
    """``<what> failed: <one line>`` in the log. Kestrel's own errors (a missing file, a
    damaged project) are that one line and nothing more; an unexpected error carries its
    traceback, which only the log file writes out (see gui.app.logging_handlers)."""
    if is_expected(exc):
        log.warning("%s failed: %s", what, describe(exc))
    else:
        log.error("%s failed: %s", what, describe(exc), exc_info=exc)


class _Bridge(QObject):
    """Lives in the UI thread; workers emit, Qt queues the calls to the UI thread."""

    progress = Signal(int, float, str, float)  # id, fraction, text, the worker's clock then
    span = Signal(int, float)  # id, media seconds the job covers
    begun = Signal(int, float)  # id, the worker's clock when the job left the queue
    partial = Signal(int, object)
    done = Signal(int, object)
    failed = Signal(int, object, str)


class Task:
    """Handle on a submitted job. Callbacks run on the UI thread; chain them fluently.

    ``estimate`` (a :class:`core.jobs.Estimator`, UI thread) gives the job's ETA and throughput:
    ``estimate.text()`` is what the window shows beside the bar."""

    def __init__(self, manager: "TaskManager", name: str, key: str | None, visible: bool):
        self.id = next(_ids)
        self.name = name
        self.key = key
        self.visible = visible
        self.progress = 0.0
        self.text = ""
        self.started = time.monotonic()
        self.finished = False
        self.estimate = Estimator(manager._clock)
        self.media_span: float | None = None  # as the job said it (worker side, for SubProgress)
        self._cancel = threading.Event()
        self._manager = manager
        self._on_done: list[Callable[[Any], None]] = []
        self._on_partial: list[Callable[[Any], None]] = []
        self._on_error: list[Callable[[BaseException], None]] = []
        self._on_cancel: list[Callable[[], None]] = []

    # JobState, called from the worker thread --------------------------------------------
    def set_progress(self, fraction: float, text: str = "") -> None:
        self._manager._bridge.progress.emit(self.id, float(fraction), text, float(self._manager._clock()))

    def set_media_span(self, seconds: float) -> None:
        s = float(seconds)
        self.media_span = s if s > 0 else None
        self._manager._bridge.span.emit(self.id, s)

    def set_partial_result(self, value: Any) -> None:
        self._manager._bridge.partial.emit(self.id, value)

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    # UI side ----------------------------------------------------------------------------
    def cancel(self) -> None:
        if not self._cancel.is_set():
            self._cancel.set()
            self._manager._cancelled(self)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def on_done(self, cb: Callable[[Any], None]) -> "Task":
        self._on_done.append(cb)
        return self

    def on_partial(self, cb: Callable[[Any], None]) -> "Task":
        self._on_partial.append(cb)
        return self

    def on_error(self, cb: Callable[[BaseException], None]) -> "Task":
        self._on_error.append(cb)
        return self

    def on_cancel(self, cb: Callable[[], None]) -> "Task":
        self._on_cancel.append(cb)
        return self


class TaskManager(QObject):
    """Runs jobs off the UI thread. Signals (UI thread): ``task_started(task)``,
    ``task_progress(task)``, ``task_ended(task)``, ``task_failed(task, exc)`` — the last only
    for tasks with no error handler of their own, so one place reports them.
    """

    task_started = Signal(object)
    task_progress = Signal(object)
    task_ended = Signal(object)
    task_failed = Signal(object, object)

    def __init__(self, parent: QObject | None = None, *, clock: Callable[[], float] = time.monotonic):
        super().__init__(parent)
        self._clock = clock  # the estimators' clock (tests drive their own)
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        self._bridge.span.connect(self._on_span)
        self._bridge.begun.connect(self._on_begun)
        self._bridge.partial.connect(self._on_partial)
        self._bridge.done.connect(self._on_done)
        self._bridge.failed.connect(self._on_failed)
        self._pools = {
            "db": ThreadPoolExecutor(1, "kestrel-db"),
            "compute": ThreadPoolExecutor(1, "kestrel-compute"),
            "io": ThreadPoolExecutor(2, "kestrel-io"),
            # long-running readers of cameras and streams (each holds a worker until stopped)
            "live": ThreadPoolExecutor(2, "kestrel-live"),
        }
        self._tasks: dict[int, Task] = {}
        self._by_key: dict[str, Task] = {}
        self._closed = False

    def now(self) -> float:
        """The clock the tasks' estimates run on (``estimate.text(tasks.now())``)."""
        return self._clock()

    @property
    def active(self) -> list[Task]:
        return [t for t in self._tasks.values() if not t.finished]

    def run(self, fn: Callable[[Any, Task], Any], request: Any = None, *, pool: str = "compute",
            name: str = "", key: str | None = None, visible: bool = True) -> Task:
        """Submit ``fn(request, state)``. A task with the same ``key`` as a running one
        cancels it first (starting new work on a thing makes the old work stale)."""
        if self._closed:
            raise RuntimeError("task manager is shut down")
        if key is not None and key in self._by_key:
            self._by_key[key].cancel()
        task = Task(self, name or getattr(fn, "__name__", "task"), key, visible)
        self._tasks[task.id] = task
        if key is not None:
            self._by_key[key] = task
        self._pools[pool].submit(self._work, task, fn, request)
        self.task_started.emit(task)
        return task

    def call(self, fn: Callable[..., Any], *args: Any, pool: str = "db", name: str = "",
             **kwargs: Any) -> Task:
        """Run a plain call ``fn(*args, **kwargs)`` (e.g. a project write) on a pool."""
        return self.run(lambda _req, _state: fn(*args, **kwargs), None, pool=pool,
                        name=name or getattr(fn, "__name__", "call"), visible=False)

    def _work(self, task: Task, fn: Callable, request: Any) -> None:
        if task.cancelled:
            return
        self._bridge.begun.emit(task.id, float(self._clock()))
        try:
            result = fn(request, task)
        except (Cancelled, InterruptedError):
            return
        except BaseException as e:  # reported on the UI thread
            tb = traceback.format_exc()
            log_failure(f"task {task.name}", e)
            if not self._closed:
                self._bridge.failed.emit(task.id, e, tb)
            return
        if not self._closed:
            self._bridge.done.emit(task.id, result)

    # UI-thread slots --------------------------------------------------------------------
    def _live(self, task_id: int) -> Task | None:
        t = self._tasks.get(task_id)
        return None if t is None or t.cancelled or t.finished else t

    def _on_progress(self, task_id: int, fraction: float, text: str, when: float) -> None:
        t = self._live(task_id)
        if t is not None:
            t.progress, t.text = fraction, text
            t.estimate.update(fraction, when)
            self.task_progress.emit(t)

    def _on_span(self, task_id: int, seconds: float) -> None:
        t = self._live(task_id)
        if t is not None:
            t.estimate.set_media_span(seconds)
            self.task_progress.emit(t)

    def _on_begun(self, task_id: int, when: float) -> None:
        t = self._live(task_id)
        if t is not None:
            t.estimate.begin(when)

    def _on_partial(self, task_id: int, value: Any) -> None:
        t = self._live(task_id)
        if t is not None:
            for cb in t._on_partial:
                self._safe(cb, value)

    def _end(self, t: Task) -> None:
        t.finished = True
        self._tasks.pop(t.id, None)
        if t.key is not None and self._by_key.get(t.key) is t:
            del self._by_key[t.key]
        self.task_ended.emit(t)

    def _on_done(self, task_id: int, result: Any) -> None:
        t = self._live(task_id)
        if t is None:
            return
        self._end(t)
        for cb in t._on_done:
            self._safe(cb, result)

    def _on_failed(self, task_id: int, exc: BaseException, tb: str) -> None:
        t = self._live(task_id)
        if t is None:
            return
        self._end(t)
        if t._on_error:
            for cb in t._on_error:
                self._safe(cb, exc)
        else:
            self.task_failed.emit(t, exc)

    def _cancelled(self, t: Task) -> None:
        if not t.finished:
            self._end(t)
            for cb in t._on_cancel:
                self._safe(cb)

    @staticmethod
    def _safe(cb: Callable, *args: Any) -> None:
        try:
            cb(*args)
        except Exception as e:
            log_failure(f"callback {getattr(cb, '__qualname__', cb)!r}", e)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel everything, let the database writer finish its queue, stop the pools."""
        if self._closed:
            return
        self._closed = True
        for t in list(self._tasks.values()):
            t._cancel.set()
        for name, pool in self._pools.items():
            pool.shutdown(wait=wait and name == "db", cancel_futures=name != "db")


class FrameFetcher(QObject):
    """Decodes the player's frames on one thread; only the newest request is served.

    ``request(t)`` returns a request id; ``frame_ready(id, frame)`` or
    ``frame_failed(id, message)`` follow on the UI thread. Requests made while the worker
    was busy are collapsed to the latest, so scrubbing never queues up stale seeks.
    """

    frame_ready = Signal(int, object)
    frame_failed = Signal(int, str)

    def __init__(self, open_decoder: Callable[[str], Any], parent: QObject | None = None):
        super().__init__(parent)
        self._open_decoder = open_decoder
        self._pool = ThreadPoolExecutor(1, "kestrel-frames")
        self._lock = threading.Lock()
        self._pending: tuple[int, str, float] | None = None
        self._scheduled = False
        self._decoder = None  # owned by the worker thread
        self._decoder_path: str | None = None
        self._ids = itertools.count(1)
        self._closed = False

    def request(self, path: str, t: float) -> int:
        rid = next(self._ids)
        with self._lock:
            self._pending = (rid, path, t)
            if not self._scheduled and not self._closed:
                self._scheduled = True
                self._pool.submit(self._drain)
        return rid

    def _drain(self) -> None:
        while True:
            with self._lock:
                job, self._pending = self._pending, None
                if job is None or self._closed:
                    self._scheduled = False
                    return
            rid, path, t = job
            try:
                if self._decoder_path != path:
                    if self._decoder is not None:
                        self._decoder.close()
                    self._decoder, self._decoder_path = None, None
                    self._decoder = self._open_decoder(path)
                    self._decoder_path = path
                frame = self._decoder.frame_at(t)
            except Exception as e:
                log.warning("frame at %.3f s of %s: %s", t, path, e)
                if not self._closed:
                    self.frame_failed.emit(rid, str(e))
                continue
            if not self._closed:
                self.frame_ready.emit(rid, frame)

    def forget(self) -> None:
        """Drop the open decoder (e.g. the media was closed)."""
        with self._lock:
            self._pending = None
        self._pool.submit(self._close_decoder)

    def _close_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
        self._decoder, self._decoder_path = None, None

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._pending = None
        self._pool.submit(self._close_decoder)
        self._pool.shutdown(wait=True)
