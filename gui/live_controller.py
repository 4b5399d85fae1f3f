"""Live mode: a camera or stream in the player, with processors watching it as it comes.

The reader runs as a job on the task manager's ``live`` pool: it pulls chunks from a
:class:`core.media.live.LiveSource`, keeps the recent minutes in a ring buffer, feeds every
chunk to the registered processors (plain objects with ``feed(chunk) -> list``; anomaly
alerts and chat's perception log plug in here) on that worker thread, and hands the UI
what it must show — the newest frame (at most ~20 per second), status lines, and whatever
the processors return — as partial results.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, Signal

from core.errors import describe as describe_error
from core.media.live import LiveSource, RingBuffer, describe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveRequest:
    spec: str
    ring_seconds: float = 180.0
    realtime: bool | None = None
    loop: bool = False
    processors: tuple = field(default=(), compare=False)
    ring: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class LiveUpdate:
    kind: str  # "frame" | "status" | "event"
    time: float
    wall: float
    image: Any = None
    text: str = ""
    payload: Any = None


def live_job(req: LiveRequest, state) -> str:
    """Job: read the source until cancelled or it ends; returns why it stopped."""
    src = LiveSource(req.spec, realtime=req.realtime, loop=req.loop)
    ring: RingBuffer = req.ring
    last_frame = 0.0
    for chunk in src.chunks(state.is_cancelled):
        if chunk.kind == "status":
            state.set_partial_result(LiveUpdate("status", chunk.time, chunk.wall, text=chunk.text))
            continue
        ring.push(chunk)
        for proc in req.processors:
            try:
                for ev in proc.feed(chunk) or ():
                    state.set_partial_result(LiveUpdate("event", chunk.time, time.time(), payload=ev))
            except Exception as e:  # a broken processor must not stop the camera
                log.exception("live processor %r failed", proc)
                state.set_partial_result(LiveUpdate("status", chunk.time, time.time(),
                                                    text=f"{type(proc).__name__} stopped: {describe_error(e)}"))
                req = LiveRequest(req.spec, req.ring_seconds, req.realtime, req.loop,
                                  tuple(p for p in req.processors if p is not proc), ring)
        if chunk.kind == "video" and chunk.wall - last_frame >= 0.05:
            last_frame = chunk.wall
            state.set_partial_result(LiveUpdate("frame", chunk.time, chunk.wall, image=chunk.image))
    return "ended"


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
