"""The window under failure (issue #15): one line for an error, a traceback only in the log
file and only for a bug; one error dialog at a time; a refused project leaves the analyst
where they were; a project carrying foreign SQL opens only once it is removed."""
from __future__ import annotations

import io
import logging
import sqlite3
import sys
from pathlib import Path

import pytest

from projectkit import run_sql

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture
def logs(tmp_path):
    """Kestrel's own GUI log handlers (gui.app.logging_handlers) on the root logger: the
    console on a buffer, the log file in tmp. Yields (console buffer, log file)."""
    from gui.app import logging_handlers

    console, log_file = io.StringIO(), tmp_path / "kestrel.log"
    handlers = logging_handlers(console, log_file)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        root.addHandler(h)
    yield console, log_file
    for h in handlers:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)


def _failure_lines(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if what in line]


def test_missing_file_is_one_sentence_and_no_traceback(window, qtbot, logs, caplog, capsys, tmp_path):
    console, log_file = logs
    missing = tmp_path / "gone.mp4"
    with qtbot.waitSignal(window.error_shown, timeout=10000) as sig:
        window.open_media(str(missing))
    shown = sig.args[0]
    assert "gone.mp4" in shown and "does not exist" in shown and "\n" not in shown
    assert shown.count(str(missing)) == 1  # "Cannot open X: X does not exist" said it twice
    assert window.statusBar().currentMessage() == shown
    text = console.getvalue()
    assert TRACEBACK not in text
    lines = _failure_lines(text, "task open media failed")
    assert len(lines) == 1 and "does not exist" in lines[0], text
    for r in caplog.records:  # no record carries a traceback, as exc_info or in its text
        assert r.exc_info is None and TRACEBACK not in r.getMessage(), r.getMessage()
    assert TRACEBACK not in capsys.readouterr().err
    assert TRACEBACK not in log_file.read_text(encoding="utf-8")


def test_a_bug_is_one_line_on_screen_and_its_traceback_only_in_the_log_file(window, qtbot, logs, capsys):
    console, log_file = logs

    def boom(_request, _state):
        return 1 / 0

    with qtbot.waitSignal(window.error_shown, timeout=10000) as sig:
        window.tasks.run(boom, name="boom")
    shown = sig.args[0]
    assert shown.startswith("boom failed:") and "ZeroDivisionError" in shown and "log file" in shown
    assert "\n" not in shown
    text = console.getvalue()
    assert TRACEBACK not in text and len(_failure_lines(text, "task boom failed")) == 1, text
    assert TRACEBACK not in capsys.readouterr().err
    written = log_file.read_text(encoding="utf-8")
    assert TRACEBACK in written and "return 1 / 0" in written and "ZeroDivisionError" in written


def test_an_exception_escaping_a_slot_is_one_line_too(window, qtbot, logs):
    from gui.app import make_excepthook

    console, log_file = logs
    hook = make_excepthook(window)
    try:
        {}["missing key"]
    except KeyError:
        kind, value, tb = sys.exc_info()
    with qtbot.waitSignal(window.error_shown, timeout=5000) as sig:
        hook(kind, value, tb)
    assert sig.args[0].startswith("Internal error:") and "KeyError" in sig.args[0]
    text = console.getvalue()
    assert TRACEBACK not in text and len(_failure_lines(text, "uncaught")) == 1, text
    assert TRACEBACK in log_file.read_text(encoding="utf-8")


def test_error_dialogs_do_not_pile_up(window, qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.delenv("KESTREL_NO_DIALOGS")
    for i in range(8):
        window.show_error(f"error number {i}")
    window.show_error("error number 7")  # a repeat is not added again
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1
    text = boxes[0].text()
    assert text.count("error number") == window.MAX_ERRORS_SHOWN == 5
    assert "error number 7" in text and "error number 2" not in text and "3 earlier errors" in text
    boxes[0].close()
    window.show_error("a new one")  # the old dialog was closed: a fresh one, with only this
    boxes = [b for b in window.findChildren(QMessageBox) if b.isVisible()]
    assert len(boxes) == 1 and boxes[0].text() == "a new one"
    boxes[0].close()


def _bad_project(tmp_path: Path) -> Path:
    bad = tmp_path / "damaged.kestrel"
    bad.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)  # a header, then garbage
    return bad


def test_a_refused_project_keeps_the_one_that_was_open(window, qtbot, tmp_path):
    before = window.project
    bad = _bad_project(tmp_path)
    with qtbot.waitSignal(window.error_shown, timeout=10000) as sig:
        window.open_project(str(bad))
    assert "damaged.kestrel" in sig.args[0] and "\n" not in sig.args[0]
    assert window.project is before and not before.closed
    # the window still works with it: a media list refresh goes through
    with qtbot.waitSignal(window.media_list_refreshed, timeout=10000):
        window._refresh_media_list()


def test_a_refused_project_at_start_up_leaves_an_untitled_one(qtbot, env, tmp_path):
    from core.settings import Settings
    from gui.main_window import MainWindow

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    try:
        with qtbot.waitSignals([win.error_shown, win.project_changed], timeout=10000):
            win.open_project(str(_bad_project(tmp_path)))
        assert win.project is not None and win.project.is_temporary
    finally:
        win.close()


def test_a_project_missing_a_table_is_refused_and_the_open_one_kept(window, qtbot, tmp_path):
    from core.store.project import Project

    path = tmp_path / "no-runs.kestrel"
    Project.create(path).close()
    run_sql(path, "DROP TABLE runs")
    before = window.project
    with qtbot.waitSignal(window.error_shown, timeout=10000) as sig:
        window.open_project(str(path))
    assert "no-runs.kestrel" in sig.args[0] and "damaged" in sig.args[0] and "\n" not in sig.args[0]
    assert window.project is before and not before.closed


# -- a project carrying its own SQL --------------------------------------------------------
def _planted_project(tmp_path: Path) -> Path:
    from core.store.project import Project

    path = tmp_path / "planted.kestrel"
    p = Project.create(path)
    p.add_media("/videos/a.mp4", "sha256:aaa", 1234, 61.5, "mp4", [])
    p.close()
    run_sql(path, "CREATE TRIGGER wipe AFTER INSERT ON items BEGIN DELETE FROM items; END")
    return path


def _triggers(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    finally:
        con.close()


def _answer(monkeypatch, button_text: str) -> list[str]:
    """Make every modal QMessageBox answer with the button labelled ``button_text``."""
    from PySide6.QtWidgets import QMessageBox

    asked: list[str] = []

    def exec_(box):
        asked.append(box.text())
        for b in box.buttons():
            if b.text().replace("&", "") == button_text:
                b.click()
                return 0
        raise AssertionError(f"no button {button_text!r} in {[b.text() for b in box.buttons()]}")
    monkeypatch.setattr(QMessageBox, "exec", exec_)
    return asked


def test_foreign_sql_cancel_keeps_the_open_project(window, qtbot, tmp_path, monkeypatch):
    path = _planted_project(tmp_path)
    monkeypatch.delenv("KESTREL_NO_DIALOGS")
    asked = _answer(monkeypatch, "Cancel")
    before = window.project
    with qtbot.waitSignal(window.error_shown, timeout=10000) as sig:
        window.open_project(str(path))
    assert len(asked) == 1 and "wipe" in asked[0]
    assert "wipe" in sig.args[0]
    assert window.project is before
    assert _triggers(path) == ["wipe"]  # nothing was changed without consent


def test_foreign_sql_removed_with_consent_then_opened(window, qtbot, tmp_path, monkeypatch):
    path = _planted_project(tmp_path)
    monkeypatch.delenv("KESTREL_NO_DIALOGS")
    asked = _answer(monkeypatch, "Remove them and open")
    with qtbot.waitSignal(window.project_changed, timeout=10000) as sig:
        window.open_project(str(path))
    assert len(asked) == 1 and "wipe" in asked[0]
    assert Path(sig.args[0]) == path and window.project.path == path
    assert _triggers(path) == []
    qtbot.waitUntil(lambda: window.media_list.count() == 1, timeout=10000)  # the media survived


def test_the_open_file_follows_the_project_so_results_never_land_on_a_stale_id(window, qtbot, tmp_path,
                                                                                media_dir):
    """Opening another project while a file is open re-attaches the file to that project: its
    id in the old project (here 1) would name another file in the new one."""
    from core.store.project import Project

    clip = str(media_dir / "clip.mp4")
    with qtbot.waitSignal(window.media_list_refreshed, timeout=20000):
        window.open_media(clip)
    # the media list also refreshes when the window's own project finishes opening: on a busy
    # machine that refresh can come first, before the file is registered
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=20000)
    info = window.session.info
    assert window.session.media_id == 1
    other = tmp_path / "other.kestrel"
    with Project.create(other) as p:
        assert p.add_media("/elsewhere/first.mp4", "h", 1, 1.0, "mp4", []) == 1
    with qtbot.waitSignal(window.project_changed, timeout=10000):
        window.open_project(str(other))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    assert window.session.info is info and window.session.media_id == 2
    with Project.open(other, read_only=True) as p:
        assert p.get_media(2).path == info.path and p.get_media(1).path == "/elsewhere/first.mp4"
