"""The one holder of loaded models and the one thread limiter.

Why one holder: a model costs seconds to load and tens of MB to hold, so every capability keeps
the models it loaded for the next file, question or chunk. Kestrel holds them here and nowhere else.
Models are held **per thread**: the embedded nets (TFLite, OpenCV DNN) are not thread-safe, and the
task manager runs each pool's jobs on threads of their own, so a thread never shares a model with
another. ``held(name, **options)`` loads a catalogue model once per thread and options;
``keep(key, make)`` holds anything built from models (a scorer, an index of text vectors).

Why one limiter: torch and OpenCV default to as many threads as cores, and on a busy 2-core
machine two threads spin against each other (one fusion training step: 58 ms with one thread,
880 ms with two). :func:`limit_threads` sets both for a block and restores them after.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

_local = threading.local()


def _held() -> dict[Hashable, Any]:
    if not hasattr(_local, "models"):
        _local.models = {}
    return _local.models


def _key(name: str, options: dict[str, Any]) -> tuple:
    return (name, tuple(sorted((k, repr(v)) for k, v in options.items())))


def held(name: str, **options: Any) -> Any:
    """The catalogue model ``name`` loaded with ``options``, once per thread. Raises ModelError."""
    from models.catalogue import load_model

    models, key = _held(), _key(name, options)
    if key not in models:
        models[key] = load_model(name, **options)
    return models[key]


def keep(key: Hashable, make: Callable[[], Any]) -> Any:
    """What ``make()`` builds (from held models), built once per thread and ``key``."""
    models = _held()
    if ("kept", key) not in models:
        models[("kept", key)] = make()
    return models[("kept", key)]


def is_held(name: str, **options: Any) -> bool:
    return _key(name, options) in _held()


def release() -> None:
    """Forget this thread's models (they are freed when nothing else refers to them)."""
    _held().clear()


@contextmanager
def limit_threads(n: int | None, *, opencv: bool = False, torch: bool = True) -> Iterator[None]:
    """Run torch (unless ``torch`` is False) and OpenCV (when ``opencv``) with ``n`` threads inside
    the block, then restore. ``None`` or 0 leaves them as they are. (OpenCV alone for an OpenCV
    model: changing torch's count costs its pool a restart, 15 % of an SSD batch on 2 cores.)"""
    if not n:
        yield
        return
    old = th = None
    if torch:
        import torch as th

        old = th.get_num_threads()
    cv2 = old_cv = None
    if opencv:
        import cv2

        old_cv = cv2.getNumThreads()
        cv2.setNumThreads(int(n))
    if th is not None and n != old:
        th.set_num_threads(int(n))
    try:
        yield
    finally:
        if th is not None and n != old:
            th.set_num_threads(old)
        if cv2 is not None:
            cv2.setNumThreads(old_cv)
