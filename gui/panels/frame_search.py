"""Frame search (FOCUS): ask a question of a long video, get the few frames that answer it.

With "index" ticked (the embedded scorer) the file's media index (core.perception.index) is the
first stage: loaded from the project on the db worker, built once on the compute worker when
missing or stale (with its own progress) and stored, then every question rescores a shortlist.
The panel runs :func:`core.focus.search.select_frames` on the compute worker; while it runs the
arms' statistics fill the timeline's "Frame search" heat track (why these frames; built by
:func:`core.focus.store.arms_track`), and the
chosen frames arrive as a thumbnail strip that seeks on click. Results are stored in the
project with their run, and can be exported as PNGs + JSON.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from core.errors import describe
from core.focus.search import FocusPartial, FocusRequest, select_frames, validate
from core.focus.store import arms_track, export_frames, frames_track, store_selection
from core.perception.index import IndexConfig, IndexRequest, build_index, load_index, store_index
from core.session import MediaSession
from gui.views.thumbstrip import ThumbStrip
from gui.workbench import Workbench

log = logging.getLogger(__name__)


class FocusPanel(QWidget):
    """Signals: ``search_finished(result)``; ``send_to_chat(times)`` for "ask about these"."""

    search_finished = Signal(object)
    send_to_chat = Signal(list)

    def __init__(self, bench: Workbench, parent=None):
        super().__init__(parent)
        self.bench = bench
        self.session: MediaSession = bench.session
        self.result = None
        self.query = QLineEdit()
        self.query.setPlaceholderText("what to look for, e.g. “a bus at the gate”, “a person with a dog”")
        self.query.returnPressed.connect(self.run)
        self.k = QSpinBox()
        self.k.setRange(1, 256)
        self.k.setValue(16)
        self.k.setPrefix("k = ")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.1, 10.0)
        self.budget.setValue(2.0)
        self.budget.setSuffix(" % of frames")
        self.budget.setToolTip("How many frames may be scored, as a share of all frames")
        self.scorer = QComboBox()
        self.scorer.addItem("embedded (objects, tags, text, speech)", "embedded")
        for name, title in (("blip-itm-user", "BLIP-ITM (your model)"), ("clip-user", "CLIP (your model)"),
                            ("siglip-user", "SigLIP (your model)")):
            self.scorer.addItem(title, name)
        self.use_index = QCheckBox("index")
        self.use_index.setChecked(True)
        self.use_index.setToolTip("Answer from the file's media index (built once, stored in the project) and "
                                  "rescore a shortlist; untick to score frames anew over the whole video")
        self._index: tuple[str, object] | None = None  # (path, MediaIndex) of the last question
        self.go = QPushButton("Find frames")
        self.go.clicked.connect(self.run)
        self.export = QPushButton("Export…")
        self.export.setEnabled(False)
        self.export.clicked.connect(self.choose_export)
        self.to_chat = QPushButton("Ask chat about these")
        self.to_chat.setEnabled(False)
        self.to_chat.clicked.connect(lambda: self.send_to_chat.emit([f.time for f in self.result.frames]))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.strip = ThumbStrip(bench.tasks)
        self.strip.clicked_time.connect(self.session.seek)
        top = QHBoxLayout()
        top.addWidget(self.query, 1)
        top.addWidget(self.k)
        top.addWidget(self.budget)
        top.addWidget(self.scorer)
        top.addWidget(self.use_index)
        top.addWidget(self.go)
        top.addWidget(self.export)
        top.addWidget(self.to_chat)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.info)
        lay.addWidget(self.strip)

    def _transcript(self) -> tuple[tuple[float, float, str], ...]:
        tr = self.session.timeline.track("speech", "transcript")
        return tuple((i.start, i.end, i.label) for i in tr.items) if tr else ()

    def run(self) -> None:
        info = self.session.info
        if info is None or not info.has_video:
            self.bench.show_error("Open a video first: frame search needs pictures.")
            return
        scorer = self.scorer.currentData()
        paths = dict(self.bench.user_paths())
        if scorer != "embedded" and scorer not in paths:
            self.bench.show_error(f"{self.scorer.currentText()}: choose its folder first (Analyse ▸ Models…).")
            return
        try:
            req = FocusRequest(path=info.path, query=self.query.text().strip(), k=self.k.value(),
                               budget_share=self.budget.value() / 100.0, scorer=scorer,
                               scorer_path=paths.get(scorer), transcript=self._transcript())
            validate(req)
        except ValueError as e:
            self.bench.show_error(str(e))
            return
        name = req.query or "frame search"
        self.info.setText(f"searching for “{name}”…")
        self.go.setEnabled(False)

        def partial(p: FocusPartial) -> None:
            if self.session.info is info:
                self.session.timeline.set_track(arms_track(name, p.arms))
                self.info.setText(f"{p.stage} stage: {p.frames_scored} of {p.budget} frames scored")

        def done(res) -> None:
            self.go.setEnabled(True)
            if self.session.info is not info:
                return
            self.show_result(res)
            mid, proj = self.session.media_id, self.bench.project()
            if mid is not None and proj is not None and not proj.read_only:
                self.bench.tasks.call(store_selection, proj, mid, res, pool="db", name="store selection").on_error(
                    lambda e: self.bench.show_error(f"Could not store the selection: {describe(e)}"))
            self.search_finished.emit(res)

        def failed(e) -> None:
            self.go.setEnabled(True)
            self.info.setText("")
            self.bench.show_error(f"Frame search failed: {describe(e)}")

        def cancelled() -> None:
            self.go.setEnabled(True)
            self.info.setText("search cancelled")

        def search(index=None) -> None:
            if self.session.info is not info:
                self.go.setEnabled(True)
                return
            # with the index the answer comes first; the strip decodes its thumbnails on the io pool
            r = replace(req, index=index, thumbnails=False) if index is not None else req
            self.bench.tasks.run(select_frames, r, pool="compute", name="frame search", key="focus").on_partial(
                partial).on_done(done).on_error(failed).on_cancel(cancelled)

        if not (self.use_index.isChecked() and scorer == "embedded"):
            search()
        else:
            self._with_index(info, req.transcript, search, failed, cancelled)

    def _with_index(self, info, transcript, then, failed, cancelled) -> None:
        """``then(index)`` with the file's media index: the one of the last question, the project's
        (db worker), or one built now (compute worker) and stored (db worker)."""
        if self._index is not None and self._index[0] == info.path:
            then(self._index[1])
            return
        mid, proj = self.session.media_id, self.bench.project()

        def have(idx) -> None:
            self._index = (info.path, idx)
            then(idx)

        def build() -> None:
            self.info.setText("indexing the video once (later questions answer from the index)…")
            self.bench.tasks.run(build_index, IndexRequest(info.path, transcript=transcript), pool="compute",
                                 name="media index", key="focus-index").on_done(built).on_error(
                failed).on_cancel(cancelled)

        def built(idx) -> None:
            if mid is not None and proj is not None and not proj.read_only:
                self.bench.tasks.call(store_index, proj, mid, idx, pool="db", name="store index").on_error(
                    lambda e: self.bench.show_error(f"Could not store the media index: {describe(e)}"))
            have(idx)

        if mid is None or proj is None:
            build()
            return
        self.bench.tasks.call(load_index, proj, mid, IndexConfig(), pool="db", name="load index").on_done(
            lambda idx: have(idx) if idx is not None else build()).on_error(lambda _e: build())

    def show_result(self, res) -> None:
        self.result = res
        name = res.request.query or "frame search"
        self.session.timeline.set_track(arms_track(name, res.arms))
        self.session.timeline.set_track(frames_track(name, res.frames))
        frames = [(f.time, f"{f.score:.2f} {'★' if f.reason == 'top' else ''}".strip()) for f in res.frames]
        if res.thumbnails and len(res.thumbnails) == len(res.frames):
            self.strip.set_frames_with_images([(f.time, c, img) for (_t, c), f, img in
                                               zip(frames, res.frames, res.thumbnails)])
        else:
            self.strip.set_frames(res.request.path, frames)
        warn = (" — " + " ".join(res.warnings)) if res.warnings else ""
        via = f", {res.from_index} from the media index" if res.shortlist else ""
        self.info.setText(f"{len(res.frames)} frames for “{name}”: scored {res.frames_scored} of "
                          f"{res.total_frames} frames ({100 * res.share:.2f} %) in {res.wall_s:.1f} s with "
                          f"{res.scorer}{via}{warn}")
        self.export.setEnabled(True)
        self.to_chat.setEnabled(True)

    def choose_export(self) -> None:
        if self.result is None:
            return
        d = QFileDialog.getExistingDirectory(self, "Export selected frames to")
        if d:
            self.export_to(d)

    def export_to(self, folder: str):
        res = self.result
        return self.bench.tasks.call(export_frames, res, res.request.path, folder, pool="io",
                                     name="export frames").on_done(
            lambda files: self.bench.show_status(f"exported {len(files)} files to {folder}", 8000)).on_error(
            lambda e: self.bench.show_error(f"Export failed: {describe(e)}"))

