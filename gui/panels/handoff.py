"""File ▸ Export… and File ▸ Import…: the open file's work in another tool's format, and back.

The dialog lists the formats of :data:`core.handoff.base.FORMATS` (for an import, those that
import), a path (a file, or a folder for a format that writes several; the default named after
the media file and the format) and, for an export, the range: the whole file, the timeline's
view, or from–to times. Run builds an :class:`~core.handoff.jobs.ExportRequest` (or
``ImportRequest``) with the window's open project; the job runs on the I/O pool (an export
only reads) or on the database worker (an import writes a track), with its progress and Cancel
in the window's job bar. The result's summary goes to the dialog and the status bar; a failure
is one line in the dialog and through the window's error reporter (the log has the rest).
After an import, the new track is read back on the database worker and shown on the timeline
(the Detections panel follows the timeline).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QDialog, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QPushButton, QRadioButton, QVBoxLayout)

from core.errors import describe
from core.handoff.base import FORMATS, Format
from core.handoff.cli import time_value
from core.handoff.jobs import ExportRequest, ImportRequest, export_job, import_job
from core.timefmt import timecode

WHOLE, VIEW, SPAN = 0, 1, 2


class HandoffDialog(QDialog):
    """Export (or, with ``importing``, import) the session's open file. Signals (UI thread):
    ``finished_ok(result)`` after a job is done, ``failed(line)`` after one failed or was refused
    before it started."""

    finished_ok = Signal(object)
    failed = Signal(str)

    def __init__(self, bench, *, importing: bool = False, parent=None):
        super().__init__(parent)
        self.bench, self.importing = bench, importing
        self.session = bench.session
        self.task = None
        self._default = ""  # the path this dialog proposed last (replaced when the format changes)
        info = self.session.info
        self.media = info.path if info is not None else ""
        self.setWindowTitle("Import" if importing else "Export")
        self.setMinimumWidth(560)

        project = bench.project()
        where = "" if project is None else (" (untitled project)" if getattr(project, "is_temporary", False)
                                            else f" in {Path(str(project.path)).name}")
        head = QLabel(f"<b>{Path(self.media).name or 'No file open'}</b>{where}")
        head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.formats = QListWidget()
        for f in FORMATS.values():
            if f.can_import or not importing:
                it = QListWidgetItem(f.title)
                it.setData(Qt.ItemDataRole.UserRole, f.name)
                it.setToolTip(f.description)
                self.formats.addItem(it)
        self.formats.setMaximumHeight(self.formats.sizeHintForRow(0) * min(self.formats.count(), 9) + 6)
        self.about = QLabel("")
        self.about.setWordWrap(True)
        self.about.setStyleSheet("font-style: italic;")

        self.path = QLineEdit()
        self.path.setPlaceholderText("the file to read" if importing else "where to write")
        self.path.textEdited.connect(lambda _t: self._say(""))
        choose = QPushButton("Choose…")
        choose.clicked.connect(self.choose_path)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(choose)

        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.run_btn = QPushButton("Import" if importing else "Export")
        self.run_btn.setDefault(True)
        self.run_btn.clicked.connect(self.run)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.run_btn)
        buttons.addWidget(close)

        lay = QVBoxLayout(self)
        lay.addWidget(head)
        lay.addWidget(QLabel("Format"))
        lay.addWidget(self.formats)
        lay.addWidget(self.about)
        lay.addWidget(QLabel("Read from" if importing else "Write to"))
        lay.addLayout(path_row)
        if importing:
            note = QLabel("The file becomes a track “ground truth: <file name>” of this media file, beside the "
                          "detector's; importing a file of the same name again replaces it.")
            note.setWordWrap(True)
            lay.addWidget(note)
        self.range_box = None if importing else self._range_box()
        if self.range_box is not None:
            lay.addWidget(self.range_box)
        lay.addWidget(self.message)
        lay.addLayout(buttons)

        self.formats.currentItemChanged.connect(lambda *_: self._format_changed())
        self.formats.setCurrentRow(0)

    # -- the widgets' state ----------------------------------------------------------------------
    def _range_box(self) -> QGroupBox:
        box = QGroupBox("Range")
        grid = QGridLayout(box)
        self.range_group = QButtonGroup(self)
        duration = self.session.duration
        t0, t1 = self.shown_view = self.session.view  # as the label says it, even if the view moves on
        self.whole = QRadioButton(f"Whole file ({timecode(0)} – {timecode(duration)})")
        self.view = QRadioButton(f"The timeline's view ({timecode(t0)} – {timecode(t1)})")
        self.span = QRadioButton("From")
        self.start = QLineEdit(timecode(t0))
        self.end = QLineEdit(timecode(t1))
        for w in (self.start, self.end):
            w.setPlaceholderText("seconds or hh:mm:ss.mmm")
            w.textEdited.connect(lambda _t: self.span.setChecked(True))
        for k, b in enumerate((self.whole, self.view, self.span)):
            self.range_group.addButton(b, k)
        grid.addWidget(self.whole, 0, 0, 1, 4)
        grid.addWidget(self.view, 1, 0, 1, 4)
        grid.addWidget(self.span, 2, 0)
        grid.addWidget(self.start, 2, 1)
        grid.addWidget(QLabel("to"), 2, 2)
        grid.addWidget(self.end, 2, 3)
        # the view is a choice of its own only when it is narrower than the file
        self.view.setVisible(duration > 0 and (t0 > 1e-3 or t1 < duration - 1e-3))
        (self.view if self.view.isVisibleTo(box) else self.whole).setChecked(True)
        return box

    def format(self) -> Format | None:
        it = self.formats.currentItem()
        return None if it is None else FORMATS.get(it.data(Qt.ItemDataRole.UserRole))

    def select_format(self, name: str) -> None:
        for i in range(self.formats.count()):
            if self.formats.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.formats.setCurrentRow(i)
                return
        raise KeyError(name)

    def _format_changed(self) -> None:
        fmt = self.format()
        if fmt is None:
            return
        self.about.setText(fmt.description + (" — written to a folder" if fmt.suffix == "" else ""))
        if not self.importing and (not self.path.text() or self.path.text() == self._default):
            self._default = str(self.default_path(fmt))
            self.path.setText(self._default)
        self._say("")

    def default_path(self, fmt: Format) -> Path:
        """Beside the media file (or in the home folder when that one cannot be written):
        ``<stem>.<format><suffix>``, or ``<stem>-<format>`` for a folder."""
        media = Path(self.media)
        folder = media.parent if self.media and os.access(media.parent, os.W_OK) else Path.home()
        stem = media.stem or "kestrel"
        if fmt.suffix == "":
            return folder / f"{stem}-{fmt.name}"
        # street.srt, street.vtt; street.coco.json, street.chapters.mp4 (never the media file itself)
        return folder / (f"{stem}{fmt.suffix}" if fmt.suffix == f".{fmt.name}" else f"{stem}.{fmt.name}{fmt.suffix}")

    def choose_path(self) -> None:
        fmt = self.format()
        if fmt is None:
            return
        start = self.path.text() or str(self.default_path(fmt))
        pattern = f"{fmt.title} (*{fmt.suffix})" if fmt.suffix else ""
        if self.importing:
            got, _ = QFileDialog.getOpenFileName(self, f"Import {fmt.title}", start, pattern + ";;All files (*)")
        elif fmt.suffix == "":
            got = QFileDialog.getExistingDirectory(self, f"Folder for the {fmt.title}", str(Path(start).parent))
        else:
            got, _ = QFileDialog.getSaveFileName(self, f"Export {fmt.title}", start, pattern)
        if got:
            self.path.setText(got)
            self._say("")

    def range(self) -> tuple[float | None, float | None]:
        """(start, end) in seconds (None: the file's own); ValueError with a sentence."""
        which = self.range_group.checkedId()
        if which == WHOLE:
            return None, None
        if which == VIEW:
            return self.shown_view
        try:
            start, end = time_value(self.start.text()), time_value(self.end.text())
        except argparse.ArgumentTypeError as e:
            raise ValueError(str(e)) from None
        if end <= start:
            raise ValueError(f"the range ends ({timecode(end)}) before it starts ({timecode(start)})")
        return start, end

    # -- running -------------------------------------------------------------------------------
    def run(self):
        """Start the job (the window's task, in the job bar); returns it, or None when refused."""
        fmt, project = self.format(), self.bench.project()
        if project is None or not self.media:
            return self._fail("open a media file in a project first")
        if fmt is None:
            return self._fail("choose a format")
        path = self.path.text().strip()
        if not path:
            return self._fail("choose the file to read" if self.importing else "choose where to write")
        if self.importing:
            req = ImportRequest(project, self.media, fmt.name, path)
            task = self.bench.tasks.run(import_job, req, pool="db", name=f"import {fmt.name}")
        else:
            try:
                start, end = self.range()
            except ValueError as e:
                return self._fail(str(e))
            req = ExportRequest(project, self.media, fmt.name, path, start, end)
            # no key: a second export (another format, another range) runs beside this one, never cancels it
            task = self.bench.tasks.run(export_job, req, pool="io", name=f"export {fmt.name}")
        self.task = task
        self.run_btn.setEnabled(False)
        self._say(("Importing" if self.importing else "Exporting") + f" {fmt.title}… (Cancel in the job bar)")
        return task.on_done(self._done).on_error(self._error).on_cancel(self._cancelled)

    def _done(self, result) -> None:
        self.task = None
        self.run_btn.setEnabled(True)
        where = ", ".join(str(p) for p in getattr(result, "paths", ()))
        self._say("; ".join([result.summary, *result.notes]))
        self.bench.show_status(result.summary + (f" ({where})" if where else ""), 10000)
        if self.importing:
            self._show_imported(result.track_id)
        self.finished_ok.emit(result)

    def _show_imported(self, track_id: int) -> None:
        from core.perception import ops

        media_id, project = self.session.media_id, self.bench.project()
        if media_id is None or project is None:
            return

        def shown(tracks) -> None:
            if self.session.media_id == media_id:
                for tr in tracks:
                    if tr.id == track_id:
                        self.session.timeline.set_track(tr)

        self.bench.tasks.call(ops.load_timeline, project, media_id, pool="db", name="load imported track").on_done(
            shown).on_error(lambda e: self.bench.show_error(f"The imported track could not be shown: {describe(e)}"))

    def _error(self, exc: BaseException) -> None:
        self.task = None
        self.run_btn.setEnabled(True)
        self._fail(("Import" if self.importing else "Export") + f" failed: {describe(exc)}")

    def _cancelled(self) -> None:
        self.task = None
        self.run_btn.setEnabled(True)
        self._say("Cancelled.")  # the format stops at its next check: what it had finished may be kept

    def _fail(self, line: str) -> None:
        self._say(line, error=True)
        self.bench.show_error(line)
        self.failed.emit(line)
        return None

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.setStyleSheet("color: #c0392b;" if error else "")
        self.message.setText(text)
