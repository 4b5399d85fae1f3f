"""Starting the GUI: logging, the application object, screenshot mode."""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import traceback
from pathlib import Path

from core.settings import Settings, data_dir

log = logging.getLogger("kestrel")


def setup_logging() -> Path | None:
    root = logging.getLogger()
    if getattr(root, "_kestrel", False):
        return None
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    root.addHandler(err)
    path = None
    try:
        d = data_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / "kestrel.log"
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=2)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    except OSError as e:
        log.warning("no log file: %s", e)
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

    def excepthook(kind, value, tb):
        log.error("uncaught: %s", "".join(traceback.format_exception(kind, value, tb)))
        win.show_error(f"Internal error: {value}")
    sys.excepthook = excepthook

    exit_code = {"code": 0}
    if seek is not None:
        win.media_ready.connect(lambda _info: win.session.seek(seek))
    if screenshot:
        _arm_screenshot(app, win, screenshot, media is not None, timeout_s, exit_code, seek)
    last = win.settings.get("last_project")
    if project:
        win.open_project(project)
    elif isinstance(last, str) and Path(last).exists() and not screenshot:
        # pick up where the analyst left off (untitled work included: it was autosaved)
        win.open_project(last).on_error(lambda _e: win.new_project())
    else:
        win.new_project()
    win.show()
    if media:
        QTimer.singleShot(0, lambda: win.open_media(media))
    rc = app.exec()
    return exit_code["code"] or rc


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
            print(f"could not write {out}", file=sys.stderr)
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
            print(f"error: {msg}", file=sys.stderr)
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
    QTimer.singleShot(int(timeout_s * 1000), lambda: (print("timed out waiting for the media", file=sys.stderr),
                                                        shoot(2)))


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
