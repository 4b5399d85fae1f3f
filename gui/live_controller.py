"""Live mode: a camera or stream in the player, with processors watching it as it comes.

The reader, :func:`core.media.live.live_job`, runs as a job on the task manager's ``live``
pool: it pulls chunks from a :class:`core.media.live.LiveSource`, keeps the recent minutes in
a ring buffer, feeds every chunk to the registered processors (plain objects with
``feed(chunk) -> list``; anomaly alerts and chat's perception log plug in here) on that worker
thread, and hands the UI what it must show — the newest frame (at most ~20 per second), status
lines, and whatever the processors return — as partial results, which this controller turns
into signals on the UI thread.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from core.errors import describe as describe_error
from core.media.live import LiveRequest, LiveUpdate, RingBuffer, describe, live_job


class LiveController(QObject):
    """Signals (UI thread): ``frame(t, image)``, ``status(text)``, ``event(payload, t)``,
    ``stopped(reason)``."""

    frame = Signal(float, object)
    status = Signal(str)
    event = Signal(object, float)
    stopped = Signal(str)

    def __init__(self, tasks, parent=None):
        super().__init__(parent)
        self.tasks = tasks
        self.task = None
        self.spec: str | None = None
        self.ring = RingBuffer()
        self.processors: list = []
        self.last_time = 0.0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.finished

    def start(self, spec: str, *, realtime: bool | None = None, loop: bool = False) -> None:
        self.stop()
        self.spec = spec
        self.ring = RingBuffer()
        req = LiveRequest(spec, realtime=realtime, loop=loop, processors=tuple(self.processors), ring=self.ring)
        self.status.emit(f"opening {describe(spec)}…")
        self.task = self.tasks.run(live_job, req, pool="live", name=f"live: {describe(spec)}", key="live",
                                   visible=False)
        self.task.on_partial(self._on_update).on_done(lambda why: self.stopped.emit(why)).on_error(
            lambda e: self.stopped.emit(describe_error(e)))
        self.task.on_cancel(lambda: self.stopped.emit("stopped"))

    def stop(self) -> None:
        if self.task is not None and not self.task.finished:
            self.task.cancel()
        self.task = None

    def _on_update(self, u: LiveUpdate) -> None:
        self.last_time = max(self.last_time, u.time)
        if u.kind == "frame":
            self.frame.emit(u.time, u.image)
        elif u.kind == "status":
            self.status.emit(u.text)
        else:
            self.event.emit(u.payload, u.time)
