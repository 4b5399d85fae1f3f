"""Kestrel's errors, one root for all of them, and how they reach the analyst.

* :class:`KestrelError` (defined in :mod:`models.errors`, re-exported here) is the root of
  every error whose ``str()`` is a sentence for the analyst: a damaged file, a missing model,
  a locked project, a bad argument. Those are shown in one line (dialog, status bar,
  ``kestrel: …`` on stderr) and never with a traceback.
* Anything else is unexpected: a bug. It is reported in one line too, and its traceback goes
  to the log file (see :func:`describe`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from models.errors import KestrelError

__all__ = ["KestrelError", "is_expected", "describe", "print_error", "log_handler", "log_traceback"]


def is_expected(exc: BaseException) -> bool:
    """True for Kestrel's own errors (and the OS's "file not found"-style errors, whose
    message already names the file), which get one line and no traceback."""
    return isinstance(exc, (KestrelError, FileNotFoundError, PermissionError, IsADirectoryError,
                            NotADirectoryError))


def describe(exc: BaseException) -> str:
    """One line for the analyst."""
    if isinstance(exc, KestrelError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = f"an unexpected error ({type(exc).__name__}: {exc}); details are in the log file"
    return " ".join(text.split()) or type(exc).__name__


def print_error(exc: BaseException | str, stream=None) -> None:
    """``kestrel: <one line>`` on stderr: the one place the command line reports an error."""
    text = exc if isinstance(exc, str) else describe(exc)
    print(f"kestrel: {text}", file=stream or sys.stderr)


def log_handler(path: "Path | None" = None) -> "logging.Handler | None":
    """A handler for Kestrel's log file (the window's: ``kestrel.log`` in the data folder,
    rotated the same way, tracebacks written out); None when the file cannot be opened. A
    failure to write is dropped silently (the console must never get a "Logging error"
    traceback for it)."""
    import logging
    import logging.handlers

    from core.settings import data_dir

    try:
        if path is None:
            folder = data_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "kestrel.log"
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=2,
                                                       encoding="utf-8", errors="backslashreplace", delay=True)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.failed = False  # type: ignore[attr-defined]

    def dropped(_record) -> None:
        handler.failed = True  # type: ignore[attr-defined]
    handler.handleError = dropped  # type: ignore[method-assign]
    return handler


def log_traceback(exc: BaseException, what: str = "kestrel") -> Path | None:
    """Append ``exc``'s traceback to Kestrel's log file (see :func:`log_handler`) and return
    its path; None when it cannot be written (the caller still has its one line to print)."""
    import logging

    handler = log_handler()
    if handler is None:
        return None
    record = logging.LogRecord("kestrel", logging.ERROR, __file__, 0, "%s failed: %s", (what, describe(exc)),
                               (type(exc), exc, exc.__traceback__))
    try:
        handler.emit(record)
    finally:
        handler.close()
    return None if handler.failed else Path(handler.baseFilename)  # type: ignore[attr-defined]
