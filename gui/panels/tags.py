"""Tags: tag the open file or a folder by shot, read and correct each shot's tags, search the
whole archive, export it.

The jobs (the one tagging pipeline, the index, edits, search) are in :mod:`core.tagging.jobs`,
which says which thread runs what; this panel starts them and puts their results into views.
"""
from __future__ import annotations

import bisect
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QInputDialog, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.errors import describe
from core.jobs import barrier
from core.perception import ops
from core.tagging import TaggingError
from core.tagging.features import FeatureConfig
from core.tagging.index import ArchiveIndex, Hit, IndexParams, ShotRef, description
from core.tagging.index import set_vocabulary as store_vocabulary
from core.tagging.jobs import (FileDone, ReadOnlyProject, SearchRequest, TagRequest, commit_index,
                               describe_job, edit_job, index_job, load_job, search_job, store_file, tags_track)
from core.tagging.shots import shots_track
from core.tagging.tags import Tag
from core.timefmt import timecode

log = logging.getLogger(__name__)

NOTHING_YET = "Nothing tagged yet: “Tag this file” finds the open file's shots and tags them."
NO_INDEX = "Nothing is tagged in this project yet: tag a file or a folder first."


# == views ======================================================================================

GREY, STRUCK, OK_GREEN = QColor("#80828a"), QColor("#be6e6e"), QColor("#8bc34a")  # low, rejected, analyst's
BARS = {"low": "#5a5c64", "rejected": "#7a4646", "auto": "#3f79b0", "accepted": "#5f8f3a", "user": "#5f8f3a"}
NAME = Qt.ItemDataRole.UserRole  # a tag's name before an inline rename


class TaggingPanel(QWidget):
    """Signals: ``tagging_finished(index|None)`` when a tagging run ends (None: nothing tagged),
    ``index_changed()`` when the shown index is replaced, ``tags_changed(int)`` once an edit to
    shot ``i`` of the index is stored, ``vocabulary_changed(list)``, ``search_finished(list)``."""

    tagging_finished = Signal(object)
    index_changed = Signal()
    tags_changed = Signal(int)
    vocabulary_changed = Signal(list)
    search_finished = Signal(list)

    def __init__(self, bench, parent: QWidget | None = None):
        super().__init__(parent)
        self.bench = bench  # gui.workbench.Workbench
        self.session = bench.session
        self.features = FeatureConfig()  # settable: tests and slow machines leave faces/OCR out
        self.shot_params: Mapping | None = None  # core.tagging.shots.shot_params(); None: the defaults
        self.index_params = IndexParams()
        self.device: str | None = None
        self.k = 10
        self.idx: ArchiveIndex | None = None
        self.vocab, self.hits = [], []  # the project's vocabulary; the shown search results
        self.current = -1  # the index (into self.idx) of the shot under the playhead
        self._rows, self._starts = [], []  # the open file's shots in self.idx, by start; their starts
        self._task, self._report, self._filling = None, {}, False
        self._run = 0  # tagging runs started; callbacks of an older one are dropped
        self._desc_emb: np.ndarray | None = None  # text search's description embeddings, cached
        self._build()
        self.session.events.media_changed.connect(lambda _i: self._media_changed())
        self.session.events.position_changed.connect(lambda _t: self._follow_playhead())
        bench.project_changed.connect(lambda _p: self.reload())
        bench.tasks.task_progress.connect(self._progress)

    def _build(self) -> None:
        self.tag_btn = _button("Tag this file", self.tag_current,
                               "Find the open file's shots, describe them, and tag the archive again")
        self.folder_btn = _button("Tag folder…", self.choose_folder,
                                  "Tag every media file under a folder (files already tagged are reused)")
        self.export_btn = _button("Export…", self.choose_export,
                                  "Per-shot JSON and CSV, WebVTT/SRT subtitles and a sidecar per file")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.cancel_btn = _button("Cancel", self.cancel)
        self.notes = QLabel(NOTHING_YET)
        self.shot_label = QLabel("")
        for lab in (self.notes, self.shot_label):
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = _table(["tag", "kind", "confidence", "state"], {1: 62, 2: 84, 3: 84})
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.itemChanged.connect(self._item_changed)
        self.accept_btn = _button("Accept", lambda: self.edit_selected("accept"))
        self.reject_btn = _button("Reject", lambda: self.edit_selected("reject"))
        self.undo_btn = _button("Undo", lambda: self.edit_selected("undo"),
                                "Back to the automatic verdict; removes a tag you added")
        self.rename_btn = _button("Rename", self._rename_selected, "Rename the selected tag (or double-click it)")
        self.vocab_combo = QComboBox()
        self.vocab_combo.setMinimumContentsLength(10)
        self.vocab_combo.setToolTip("Tags from the project's controlled vocabulary (Vocabulary… edits it)")
        self.add_btn = _button("Add tag", lambda: self.add_tag(self.vocab_combo.currentText()),
                               "Add this vocabulary tag to the shot")
        self.vocab_btn = _button("Vocabulary…", self.edit_vocabulary)
        self.query = QLineEdit()
        self.query.setPlaceholderText("search the archive: “people on bicycles”, “street at night”…")
        self.query.returnPressed.connect(lambda: self.search())
        self.search_btn = _button("Search", lambda: self.search())
        self.similar_btn = _button("Similar to this shot", self.search_similar)
        self.results = _table(["file", "time", "score", "why"], {0: None, 1: None, 2: None})
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.setWordWrap(False)
        self.results.cellClicked.connect(lambda r, _c: self.open_hit(r))
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(_column(self.shot_label, (self.table, 1),
                                _row(self.accept_btn, self.reject_btn, self.undo_btn, self.rename_btn),
                                _row((self.vocab_combo, 1), self.add_btn, self.vocab_btn)))
        split.addWidget(_column(_row((self.query, 1), self.search_btn), _row(self.similar_btn),
                                (self.results, 1)))
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(_row(self.tag_btn, self.folder_btn, self.export_btn))
        lay.addLayout(_row((self.progress, 1), self.cancel_btn))
        lay.addWidget(self.notes)
        lay.addWidget(split, 1)
        self._set_running(False)
        self._fill_vocab()
        self._show_shot()

    # -- the stored index --------------------------------------------------------------------
    def reload(self):
        """Read the project's stored index and vocabulary (I/O pool)."""
        proj = self.bench.project()
        if proj is None:
            return None
        return self.bench.tasks.run(load_job, proj, pool="io", name="load tags", key="tagging-load",
                                visible=False).on_done(lambda res: self._loaded(proj, *res)).on_error(
            lambda e: self.bench.show_error(f"Could not read the project's tags: {describe(e)}"))

    def _loaded(self, proj, idx: ArchiveIndex | None, vocab: list[str]) -> None:
        if proj is self.bench.project():
            self._vocab_stored(vocab)
            self.set_index(idx)
            self._show_notes(_tagged_line(len(idx), len({r.media_id for r in idx.refs})) if idx else NOTHING_YET,
                             idx.notes if idx else [])

    def set_index(self, idx: ArchiveIndex | None) -> None:
        self.idx, self._desc_emb, self.hits = idx, None, []
        self._fill_results()
        self._media_changed()
        self.index_changed.emit()

    # -- tagging -----------------------------------------------------------------------------
    def tag_current(self) -> None:
        info = self.session.info
        if info is None:
            self.bench.show_error("Open a media file first: there is nothing to tag.")
        elif self._writable(proj := self.bench.project()):
            self._start(TagRequest(proj, (info,), None, self.features, self.device, self.shot_params),
                        Path(info.path).name)

    def choose_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Tag every media file under")
        if d:
            self.tag_folder(d)

    def tag_folder(self, folder: str) -> None:
        if not Path(folder).is_dir():
            self.bench.show_error(f"{folder} is not a folder.")
        elif self._writable(proj := self.bench.project()):
            self._start(TagRequest(proj, (), folder, self.features, self.device, self.shot_params),
                        f"{Path(folder).name}/")

    def _writable(self, proj) -> bool:
        if proj is None:
            self.bench.show_error("No project is open: tags are stored in a project.")
        elif proj.read_only:
            self.bench.show_error(f"{proj.path} is read-only; tags cannot be stored (save it under another name).")
        return proj is not None and not proj.read_only

    def _start(self, req: TagRequest, what: str) -> None:
        self._run += 1
        run, proj = self._run, req.project
        self._report = {"failed": [], "tagged": 0, "reused": 0, "notes": []}
        self._set_running(True, f"tagging {what}…")
        self._task = self.bench.tasks.run(describe_job, req, pool="compute", name="tagging", key="tagging")
        self._task.on_partial(lambda d: self._file_done(proj, d)).on_done(
            lambda skipped: self._after_files(run, proj, skipped)).on_error(lambda e: self._failed(run, e)).on_cancel(
            lambda: self._cancelled(run, "the files finished so far are stored; tag again to go on"))

    def _file_done(self, proj, done: FileDone) -> None:
        name = Path(done.info.path).name
        if done.error:
            self._report["failed"].append(done.error)
            return
        self._report["reused" if done.reused else "tagged"] += 1
        if done.result is not None:
            self._report["notes"] += [f"{name}: {n}" for n in done.result.notes]
            if self._is_open(done.info.path):  # the shots show now; their tags follow with the index
                self.session.timeline.set_track(shots_track(done.result.shots))
        self.bench.tasks.call(store_file, proj, done, pool="db", name="store tags").on_error(
            lambda e: self.bench.show_error(f"Could not store the tags of {name}: {describe(e)}"))

    def _after_files(self, run: int, proj, skipped) -> None:
        self._report["skipped"] = list(skipped)
        # the writer is one FIFO worker: this no-op ends after every store queued before it
        self.bench.tasks.call(barrier, pool="db", name="wait for stores").on_done(lambda _r: self._index(run, proj))

    def _index(self, run: int, proj) -> None:
        if run != self._run:
            return
        if not (self._report["tagged"] or self._report["reused"]):
            return self._failed(run, TaggingError("nothing could be tagged: " + " ".join(self._report["failed"][:3])))
        self._task = self.bench.tasks.run(index_job, (proj, self.index_params), pool="compute", name="tag index",
                                      key="tagging")
        self._task.on_done(lambda res: self._commit(run, proj, *res)).on_error(
            lambda e: self._failed(run, e)).on_cancel(
            lambda: self._cancelled(run, "the files are stored; the archive index was not rebuilt"))

    def _commit(self, run: int, proj, idx: ArchiveIndex, view: ReadOnlyProject) -> None:
        self.progress.setFormat("storing the index…")
        self.bench.tasks.call(commit_index, proj, idx, view, pool="db", name="store tag index").on_done(
            lambda i: self._finished(run, proj, i)).on_error(lambda e: self._failed(run, e))

    def _finished(self, run: int, proj, idx: ArchiveIndex) -> None:
        if proj is not self.bench.project() or not self._end(run):
            return
        self.set_index(idx)
        r = self._report
        head = (f"Tagged {r['tagged']} file{'s' if r['tagged'] != 1 else ''}"
                + (f", reused {r['reused']}" if r["reused"] else "") + f": {len(idx)} shots in the archive; "
                + ("multimodal latent (MMAE)." if idx.method == "mmae" else "per-modality features (PCA)."))
        notes = list(idx.notes) + [f"failed: {f}" for f in r["failed"]] + r["notes"]
        notes += [f"skipped {Path(p).name}: {why}" for p, why in r["skipped"][:8]]
        if len(r["skipped"]) > 8:
            notes.append(f"… and {len(r['skipped']) - 8} more skipped")
        self._show_notes(head, notes)
        self.tagging_finished.emit(idx)

    def _failed(self, run: int, e: BaseException) -> None:
        if self._end(run):
            self.bench.show_error(f"Tagging failed: {describe(e)}")
            self.tagging_finished.emit(None)

    def _cancelled(self, run: int, what: str = "") -> None:
        if self._end(run):
            self.notes.setText("Tagging cancelled" + (f": {what}." if what else "."))

    def _end(self, run: int) -> bool:
        """Ends run ``run``; False when a newer run owns the panel."""
        if run == self._run:
            self._task = None
            self._set_running(False)
        return run == self._run

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _set_running(self, on: bool, text: str = "") -> None:
        for w in (self.tag_btn, self.folder_btn, self.progress, self.cancel_btn):
            w.setEnabled(not on) if w in (self.tag_btn, self.folder_btn) else w.setVisible(on)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def _progress(self, task) -> None:
        if task is self._task:
            self.progress.setValue(int(task.progress * 1000))
            self.progress.setFormat(task.text or "%p %")

    def _show_notes(self, head: str, notes: Sequence[str]) -> None:
        # notes (too little data, failures, skipped files) are shown, never hidden
        body = "".join(f"<br>• {_esc(n)}" for n in dict.fromkeys(notes))
        self.notes.setText(f"{_esc(head)}<span style='color:#e5c07b'>{body}</span>")

    # -- the open file's shots -----------------------------------------------------------------
    def _is_open(self, path: str) -> bool:
        info = self.session.info
        return info is not None and os.path.normpath(info.path) == os.path.normpath(path)

    def _media_changed(self) -> None:
        idx, info = self.idx, self.session.info
        self._rows, self._starts = [], []
        if idx is not None and info is not None:
            rows = [i for i, r in enumerate(idx.refs) if self._is_open(r.path)]
            mids = {idx.refs[i].media_id for i in rows}  # >1: the file changed on disk; its newest
            self._rows = sorted((i for i in rows if idx.refs[i].media_id == max(mids, default=0)),
                                key=lambda i: idx.refs[i].start)
            self._starts = [idx.refs[i].start for i in self._rows]
            if self._rows:
                self.session.timeline.set_track(tags_track(idx, idx.refs[self._rows[0]].media_id))
        self.current = -2  # refresh whatever the shot
        self._follow_playhead()

    def _follow_playhead(self) -> None:
        i = -1
        if self._rows:
            k = bisect.bisect_right(self._starts, self.session.position + 1e-6) - 1
            i = self._rows[max(0, k)]
        if i != self.current:
            self.current = i
            self._show_shot()

    def _show_shot(self) -> None:
        idx, i = self.idx, self.current
        has = idx is not None and i >= 0
        for b in (self.accept_btn, self.reject_btn, self.undo_btn, self.rename_btn, self.similar_btn):
            b.setEnabled(has)
        self.add_btn.setEnabled(has and bool(self.vocab))
        self._filling = True
        try:
            if not has:
                self.table.setRowCount(0)
                self.shot_label.setText("The shot under the playhead shows its tags here once the file is tagged."
                                        if self.session.info is not None else "")
                return
            r, cluster = idx.refs[i], idx.names.get(int(idx.clusters[i]), "")
            n = self._rows.index(i) + 1 if i in self._rows else r.index + 1
            self.shot_label.setText(f"<b>Shot {n} of {len(self._rows) or '?'}</b> · {timecode(r.start)} – "
                                    f"{timecode(r.end)} ({r.end - r.start:.1f} s)"
                                    + (f"<br><span style='color:#9aa0aa'>archive group: {_esc(cluster)}</span>"
                                       if cluster else "") + _experts_line(idx, i))
            # rejected last, the archive's clusters after the rest, else by confidence
            tags = sorted(idx.tags[i], key=lambda t: (t.state == "rejected", t.kind == "cluster", -t.confidence))
            self.table.setRowCount(len(tags))
            for row, t in enumerate(tags):
                self._fill_row(row, t)
        finally:
            self._filling = False

    def _fill_row(self, row: int, t: Tag) -> None:
        state = {"accepted": "✓ accepted", "rejected": "✗ rejected", "user": "+ added"}.get(
            t.state, "low" if t.low else "")
        cells = [QTableWidgetItem(t.name), QTableWidgetItem(t.kind), QTableWidgetItem(""), QTableWidgetItem(state)]
        cells[0].setData(NAME, t.name)
        cells[0].setToolTip(f"{t.name} ({t.kind}, {100 * t.confidence:.0f} %)\n{t.detail}")
        bar = QProgressBar()  # the confidence, as a bar with its percentage
        bar.setValue(round(100 * t.confidence))
        bar.setFormat("%p %")
        bar.setToolTip(t.detail)
        color = BARS["low" if t.low else t.state if t.state in BARS else "auto"]
        bar.setStyleSheet("QProgressBar{border:0;margin:3px;background:#3a3c44;text-align:center;color:%s}"
                          "QProgressBar::chunk{background:%s}" % ("#b4b6bc" if t.low else "#f0f0f2", color))
        self.table.setCellWidget(row, 2, bar)
        for c, it in enumerate(cells):
            if c:
                it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsEditable)
            if t.state == "rejected":
                f = QFont(self.table.font())
                f.setStrikeOut(True)
                it.setFont(f)
                it.setForeground(STRUCK)
            elif t.low:
                it.setForeground(GREY)
            elif c == 3 and t.state in ("accepted", "user"):
                it.setForeground(OK_GREEN)
            self.table.setItem(row, c, it)

    # -- edits --------------------------------------------------------------------------------
    def selected_tags(self) -> list[Tag]:
        if self.idx is None or self.current < 0:
            return []
        rows = sorted({ix.row() for ix in self.table.selectedIndexes()})
        by = {t.name: t for t in self.idx.tags[self.current]}
        names = [self.table.item(r, 0).data(NAME) for r in rows if self.table.item(r, 0)]
        return [by[n] for n in names if n in by]

    def edit_selected(self, action: str) -> None:
        """accept | reject | undo (back to the automatic verdict; a tag the analyst added goes)."""
        tags = self.selected_tags()
        if not tags:
            self.bench.show_error("Select a tag first.")
        for t in tags:
            self.edit(("remove" if t.state == "user" else "reset") if action == "undo" else action, t.name)

    def _rename_selected(self) -> None:
        rows = sorted({ix.row() for ix in self.table.selectedIndexes()})
        if rows:
            self.table.editItem(self.table.item(rows[0], 0))

    def _item_changed(self, it: QTableWidgetItem) -> None:
        if self._filling or it.column() != 0:
            return
        old, new = it.data(NAME), it.text().strip()
        if new and new != old:
            self.edit("rename", old, new)
        elif not new:
            self._show_shot()

    def add_tag(self, name: str) -> None:
        if not (name or "").strip():
            self.bench.show_error("Choose a tag from the vocabulary (Vocabulary… adds names to it).")
        else:
            self.edit("add", name.strip())

    def edit(self, action: str, name: str, new_name: str | None = None):
        """Store one edit to the current shot's tags (database writer), then show the result."""
        proj, idx, i = self.bench.project(), self.idx, self.current
        if idx is None or i < 0:
            self.bench.show_error("No tagged shot under the playhead.")
            return None
        if not self._writable(proj):
            return None
        return self.bench.tasks.call(edit_job, proj, idx.refs[i], action, name, new_name, pool="db",
                                 name="edit tag").on_done(lambda tags: self._edited(idx, i, tags)).on_error(
            lambda e: (self.bench.show_error(f"Could not {action} “{name}”: {describe(e)}"), self._show_shot()))

    def _edited(self, idx: ArchiveIndex, i: int, tags: list[Tag]) -> None:
        if idx is not self.idx:
            return
        idx.tags[i], idx.describe[i] = tags, description(tags)
        self._desc_emb = None  # the descriptions changed: text search embeds them again
        if i == self.current:
            self._show_shot()
        mid, proj = idx.refs[i].media_id, self.bench.project()
        tr = tags_track(idx, mid)
        if i in self._rows:
            self.session.timeline.set_track(tr)
        if proj is not None and not proj.read_only:
            self.bench.tasks.call(ops.save_track, proj, mid, tr, pool="db", name="store tags track").on_error(
                lambda e: log.warning("tags track not stored: %s", e))
        self.tags_changed.emit(i)

    # -- vocabulary ------------------------------------------------------------------------
    def _fill_vocab(self) -> None:
        cur = self.vocab_combo.currentText()
        self.vocab_combo.clear()
        self.vocab_combo.addItems(self.vocab)
        if cur in self.vocab:
            self.vocab_combo.setCurrentText(cur)
        self.vocab_combo.setEnabled(bool(self.vocab))
        self.vocab_combo.setPlaceholderText("" if self.vocab else "the vocabulary is empty")
        self.add_btn.setEnabled(bool(self.vocab) and self.idx is not None and self.current >= 0)

    def edit_vocabulary(self) -> None:
        text, ok = QInputDialog.getMultiLineText(self, "Tag vocabulary", "Tags the analysts of this project may "
                                                 "add to a shot, one per line:", "\n".join(self.vocab))
        if ok:
            self.set_vocabulary(text.splitlines())

    def set_vocabulary(self, words: Sequence[str]):
        proj = self.bench.project()
        if not self._writable(proj):
            return None
        return self.bench.tasks.call(store_vocabulary, proj, list(words), pool="db", name="store vocabulary").on_done(
            self._vocab_stored).on_error(
            lambda e: self.bench.show_error(f"Could not store the vocabulary: {describe(e)}"))

    def _vocab_stored(self, words: list[str]) -> None:
        self.vocab = list(words)
        self._fill_vocab()
        self.vocabulary_changed.emit(self.vocab)

    # -- search --------------------------------------------------------------------------------
    def search(self, query: str | None = None) -> None:
        query = (self.query.text() if query is None else query).strip()
        if not query:
            self.bench.show_error("Type what to look for.")
        else:
            self._search(SearchRequest(self._search_index(), query=query, k=self.k, device=self.device))

    def search_similar(self) -> None:
        if self.idx is None or self.current < 0:
            self.bench.show_error("No tagged shot under the playhead to search from.")
        else:
            self._search(SearchRequest(self._search_index(), shot=self.current, k=self.k))

    def _search_index(self) -> ArchiveIndex | None:
        # a shallow copy: the job caches the description embeddings on it, not on the shown index
        return None if self.idx is None else replace(self.idx, desc_emb=self._desc_emb)

    def _search(self, req: SearchRequest) -> None:
        if req.idx is None:
            self.bench.show_error(NO_INDEX)
            return
        idx = self.idx
        self.search_btn.setEnabled(False)
        self.bench.tasks.run(search_job, req, pool="compute", name="tag search", key="tag-search").on_done(
            lambda res: self._found(idx, *res)).on_error(
            lambda e: (self.search_btn.setEnabled(True), self.bench.show_error(f"Search failed: {describe(e)}"))
        ).on_cancel(lambda: self.search_btn.setEnabled(True))

    def _found(self, idx: ArchiveIndex, hits: list[Hit], emb) -> None:
        self.search_btn.setEnabled(True)
        if idx is not self.idx:
            return
        self._desc_emb = emb if emb is not None else self._desc_emb
        self.hits = list(hits)
        self._fill_results()
        self.search_finished.emit(self.hits)

    def _fill_results(self) -> None:
        self.results.setRowCount(len(self.hits))
        for r, h in enumerate(self.hits):
            how, _, text = h.why.partition(": ")  # "latent + description: …": the text says more
            cells = [QTableWidgetItem(Path(h.ref.path).name), QTableWidgetItem(timecode(h.ref.start)[3:]),
                     QTableWidgetItem(f"{h.score:.2f}"), QTableWidgetItem(text if "description" in how else h.why)]
            cells[0].setToolTip(h.ref.path)
            cells[3].setToolTip(h.why)
            for c, it in enumerate(cells):
                self.results.setItem(r, c, it)

    def open_hit(self, row: int) -> None:
        """Seek the player to a result's shot, opening its file first when another is open."""
        if not 0 <= row < len(self.hits):
            return
        ref = self.hits[row].ref
        if self._is_open(ref.path):
            self._seek(ref)
        elif not Path(ref.path).exists():
            self.bench.show_error(f"{ref.path} is missing: it was moved or deleted since it was tagged.")
        else:
            self.bench.open_media(ref.path).on_done(lambda _info: self._seek(ref) if self._is_open(ref.path) else None)

    def _seek(self, ref: ShotRef) -> None:
        self.session.playing = False
        self.session.seek(ref.start + min(1e-3, 0.5 * (ref.end - ref.start)))

    # -- export --------------------------------------------------------------------------------
    def choose_export(self) -> None:
        if self.idx is None:
            self.bench.show_error(NO_INDEX)
            return
        d = QFileDialog.getExistingDirectory(self, "Export the archive's tags to")
        if d:
            self.export_to(d)

    def export_to(self, folder: str):
        from core.tagging.export import export_archive

        proj, idx = self.bench.project(), self.idx
        if proj is None or idx is None:
            self.bench.show_error(NO_INDEX)
            return None
        return self.bench.tasks.call(export_archive, proj, folder, idx=idx, pool="io", name="export tags").on_done(
            lambda out: self.bench.show_status(f"exported {len(out.files)} files to {folder}" + "".join(
                f"; {n}" for n in out.notes), 10000)).on_error(
            lambda e: self.bench.show_error(f"Export failed: {describe(e)}"))


def _button(text: str, slot, tip: str = "") -> QPushButton:
    b = QPushButton(text)
    b.clicked.connect(slot)
    b.setToolTip(tip)
    return b


def _row(*items) -> QHBoxLayout:
    """A row of widgets; ``(widget, stretch)`` stretches."""
    lay = QHBoxLayout()
    for it in items:
        w, stretch = it if isinstance(it, tuple) else (it, 0)
        lay.addWidget(w, stretch)
    return lay


def _column(*items) -> QWidget:
    """A widget stacking widgets and row layouts; ``(widget, stretch)`` stretches."""
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    for it in items:
        w, stretch = it if isinstance(it, tuple) else (it, 0)
        lay.addLayout(w) if isinstance(w, QHBoxLayout) else lay.addWidget(w, stretch)
    return box


def _table(headers: list[str], fixed: Mapping[int, int | None]) -> QTableWidget:
    """Whole-row selection; a column in ``fixed`` has that width (None: its contents'), the
    others share the rest."""
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(23)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    for c in range(len(headers)):
        m = QHeaderView.ResizeMode
        t.horizontalHeader().setSectionResizeMode(c, m.Stretch if c not in fixed else m.ResizeToContents
                                                  if fixed[c] is None else m.Fixed)
        t.setColumnWidth(c, fixed.get(c) or 80)
    return t


def _esc(s: str) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _experts_line(idx, i: int) -> str:
    """With mixture-of-experts encoders: how many real experts each modality's encoder spent."""
    parts = [f"{m} {v[i]:.1f}" for m, v in (idx.experts or {}).items() if i < len(v) and v[i] == v[i]]
    return f"<br><span style='color:#7fd1b9'>experts spent: {' · '.join(parts)}</span>" if parts else ""


def _tagged_line(shots: int, files: int) -> str:
    """"6 shots in 1 file are tagged." — singular where it is one."""
    return (f"{shots} shot{'s' if shots != 1 else ''} in {files} file{'s' if files != 1 else ''} "
            f"{'are' if shots != 1 else 'is'} tagged.")
