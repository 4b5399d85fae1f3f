"""Starting the GUI: logging, the application object, screenshot mode."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from core.errors import log_handler
from core.settings import Settings, data_dir

log = logging.getLogger("kestrel")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TRACEBACK = "Traceback (most recent call last)"


class OneLineFormatter(logging.Formatter):
    """The console's formatter: one line per record and never a traceback.

    Kestrel's own errors are logged as one sentence; an unexpected error is logged with its
    ``exc_info``, which the log file's formatter writes out in full and this one leaves out
    (as it leaves out a traceback pasted into a message by a library)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = record.stack_info = None
        text = super().format(record)
        cut = text.find(_TRACEBACK)
        if cut >= 0:
            text = text[:cut].rstrip() + " (the traceback is in the log file)"
        return " ".join(text.split())


def logging_handlers(stream=None, log_file: Path | None = None) -> list[logging.Handler]:
    """The GUI's two log handlers: warnings and errors in one line each on ``stream``
    (stderr), and everything from INFO up, tracebacks included, in ``log_file``."""
    err = logging.StreamHandler(stream or sys.stderr)
    err.setFormatter(OneLineFormatter(LOG_FORMAT))
    err.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [err]
    if log_file is not None:
        fh = log_handler(log_file)  # the one log-file handler, the command line's too
        if fh is None:
            raise OSError(f"cannot open the log file {log_file}")
        fh.setLevel(logging.INFO)
        handlers.append(fh)
    return handlers


def setup_logging() -> Path | None:
    root = logging.getLogger()
    if getattr(root, "_kestrel", False):
        return None
    root.setLevel(logging.INFO)
    path, problem = None, None
    try:
        d = data_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / "kestrel.log"
        handlers = logging_handlers(sys.stderr, path)
    except OSError as e:
        path, problem, handlers = None, e, logging_handlers(sys.stderr)
    for h in handlers:
        root.addHandler(h)
    if problem is not None:
        log.warning("no log file: %s", problem)
    logging.captureWarnings(True)  # Python warnings (e.g. an expert collapse) reach the log file too
    root._kestrel = True  # type: ignore[attr-defined]
    return path


def _install_qt_logging() -> None:
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    qlog = logging.getLogger("qt")
    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}

    def handler(mode, _ctx, message):
        if "propagateSizeHints" in message:  # the offscreen platform says this on every window
            return
        qlog.log(levels.get(mode, logging.WARNING), message)
    qInstallMessageHandler(handler)


def run(media: str | None = None, project: str | None = None, screenshot: str | None = None,
        timeout_s: float = 120.0, seek: float | None = None) -> int:
    if screenshot and not os.environ.get("DISPLAY") and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if screenshot:
        os.environ.setdefault("KESTREL_NO_DIALOGS", "1")
    setup_logging()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow

    _install_qt_logging()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Kestrel")
    app.setStyle("Fusion")
    _dark_palette(app)
    win = MainWindow(Settings())

    sys.excepthook = make_excepthook(win)

    exit_code = {"code": 0}
    if seek is not None:
        win.media_ready.connect(lambda _info: win.session.seek(seek))
    if screenshot:
        _arm_screenshot(app, win, screenshot, media is not None, timeout_s, exit_code, seek)
    last = win.settings.get("last_project")
    if project:
        win.open_project(project)
    elif isinstance(last, str) and Path(last).exists() and not screenshot:
        # pick up where the analyst left off (untitled work included: it was autosaved); a
        # project that is refused now leaves an untitled one open (MainWindow.open_project)
        win.open_project(last)
    else:
        win.new_project()
    win.show()
    if media:
        QTimer.singleShot(0, lambda: win.open_media(media))
    rc = app.exec()
    return exit_code["code"] or rc


def make_excepthook(win):
    """An exception escaping a Qt slot: one line on the console and in the window (the
    traceback only in the log file, and only for an unexpected error)."""
    from core.errors import describe, is_expected

    def excepthook(kind, value, tb):
        if is_expected(value):
            log.error("uncaught: %s", describe(value))
        else:
            log.error("uncaught: %s", describe(value), exc_info=(kind, value, tb))
        win.show_error(f"Internal error: {describe(value)}")
    return excepthook


def _arm_screenshot(app, win, out: str, has_media: bool, timeout_s: float, exit_code: dict,
                    seek: float | None = None) -> None:
    """Save the window once the first frame and the waveform are on screen, then quit."""
    from PySide6.QtCore import QTimer

    state = {"frame": not has_media, "wave": not has_media, "done": False}

    def shoot(code: int = 0) -> None:
        if state["done"]:
            return
        state["done"] = True
        app.processEvents()
        ok = win.grab().save(out)
        if not ok:
            from core.errors import print_error
            print_error(f"could not write the screenshot {out} (is its folder there and writable?)")
            code = code or 1
        else:
            print(out)
        exit_code["code"] = code
        win.close()
        app.quit()

    def maybe() -> None:
        if state["frame"] and state["wave"]:
            QTimer.singleShot(300, shoot)  # let the views paint their last update

    def on_media(info) -> None:
        state["frame"] = not info.has_video
        maybe()

    def on_error(msg: str) -> None:
        if not state["frame"] or not state["wave"]:
            from core.errors import print_error
            print_error(msg)  # the one form every command line uses: kestrel: <sentence>
            QTimer.singleShot(200, lambda: shoot(1))

    win.media_ready.connect(on_media)
    def on_frame(_t: float) -> None:
        # with --seek, the first frame's request is superseded and dropped before it shows
        state["frame"] = True
        maybe()
    win.player.frame_shown.connect(on_frame)
    win.waveform_ready.connect(lambda: (state.__setitem__("wave", True), maybe()))
    win.error_shown.connect(on_error)
    if not has_media:
        win.project_changed.connect(lambda _p: maybe())
    def timed_out() -> None:
        from core.errors import print_error
        print_error(f"timed out waiting for the media ({timeout_s:g} s); the screenshot shows the window as it was")
        shoot(2)

    QTimer.singleShot(int(timeout_s * 1000), timed_out)


def _dark_palette(app) -> None:
    from PySide6.QtGui import QColor, QPalette

    p = QPalette()
    base, text = QColor(38, 40, 46), QColor(220, 220, 226)
    p.setColor(QPalette.ColorRole.Window, QColor(44, 46, 52))
    p.setColor(QPalette.ColorRole.WindowText, text)
    p.setColor(QPalette.ColorRole.Base, base)
    p.setColor(QPalette.ColorRole.AlternateBase, QColor(48, 50, 56))
    p.setColor(QPalette.ColorRole.Text, text)
    p.setColor(QPalette.ColorRole.Button, QColor(52, 54, 60))
    p.setColor(QPalette.ColorRole.ButtonText, text)
    p.setColor(QPalette.ColorRole.ToolTipBase, QColor(60, 62, 70))
    p.setColor(QPalette.ColorRole.ToolTipText, text)
    p.setColor(QPalette.ColorRole.Highlight, QColor(76, 155, 232))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.PlaceholderText, QColor(130, 130, 140))
    # setColor(role, …) sets every colour group, so without this a disabled button's text is as
    # bright as an enabled one's and "Export…" with nothing to export looks clickable
    off = QColor(112, 114, 122)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, off)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Button, QColor(46, 48, 54))
    app.setPalette(p)
