"""A minimal, Qt-free event emitter so core models can be watched by Qt views.

Views connect in ``__init__`` (``model.events.changed.connect(self._on_changed)``);
emitting runs callbacks synchronously on the emitting thread, so models are only
mutated on the UI thread (workers hand results back through the task manager).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class Event:
    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, cb: Callable[..., Any]) -> Callable[..., Any]:
        if cb not in self._callbacks:
            self._callbacks.append(cb)
        return cb

    def disconnect(self, cb: Callable[..., Any]) -> None:
        try:
            self._callbacks.remove(cb)
        except ValueError:
            pass

    def emit(self, *args: Any) -> None:
        for cb in list(self._callbacks):
            try:
                cb(*args)
            except Exception:  # one broken listener must not break the others
                log.exception("listener of %s failed", self.name)


class EventGroup:
    """``EventGroup("a", "b")`` gives ``.a`` and ``.b`` events."""

    def __init__(self, *names: str):
        for n in names:
            setattr(self, n, Event(n))
