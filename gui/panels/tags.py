"""Tags: tag the open file or a folder by shot, read and correct each shot's tags, search the
whole archive, export it.

Threads (``gui/tasks.py`` runs everything; the UI thread only puts results into views). A
tagging run: the compute worker finds the folder's media, skips files described already with
the same settings and describes the rest (:func:`core.tagging.archive.describe_file`), only
reading the project; the database writer registers and stores each file as it arrives (a
cancel keeps the finished ones); then the compute worker builds the archive index (MMAE or its
linear fall-back, clusters, tags: :func:`core.tagging.index.build_index`) against a
:class:`ReadOnlyProject` whose writes the writer replays. (``tag_archive`` does all of it in
one job for the CLI and Ray, writing from its own thread.) Edits and the vocabulary go to the
writer; searches run on the compute worker (MiniLM); exports on the I/O pool.
"""
from __future__ import annotations

import bisect
import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QInputDialog, QLabel, QLineEdit, QProgressBar, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.perception import ops
from core.errors import describe
from core.jobs import JobState, check
from core.media.decode import MediaInfo
from core.session import format_time
from core.tagging import TaggingError
from core.tagging.archive import FileResult, describe_file, scan_media
from core.tagging.features import FeatureConfig, feature_params, load_features, store_features
from core.tagging.index import (EDITS_SETTING, ArchiveIndex, Hit, IndexParams, ShotRef, build_index, description,
                                edit_tag, load_index, search_shot, search_text, set_current, set_vocabulary,
                                stored_shot_tags, vocabulary)
from core.tagging.shots import Shot, load_shots, shot_params, shots_track, store_shots
from core.tagging.stored import merge_edits, read_edits
from core.tagging.tags import Tag
from core.timeline import Item, Track

log = logging.getLogger(__name__)

TAGS_KIND, TAGS_NAME = "shot-tags", "shot tags"  # the timeline row of each shot's top tags
TOP_TAGS = 3
NOTHING_YET = "Nothing tagged yet: “Tag this file” finds the open file's shots and tags them."
NO_INDEX = "Nothing is tagged in this project yet: tag a file or a folder first."


# == jobs (Qt-free: fn(request, state), or plain calls for the database writer) ==================

@dataclass(frozen=True)
class TagRequest:  # tag ``infos`` (the open file) or every media file under ``folder``
    project: Any
    infos: tuple[MediaInfo, ...] = ()
    folder: str | None = None
    features: FeatureConfig = FeatureConfig()
    device: str | None = None


@dataclass(frozen=True)
class FileDone:
    """One file's outcome, a partial result the writer stores: described now (``result``),
    already stored with these settings (``reused``: shots, feature params), or failed."""

    info: MediaInfo
    result: FileResult | None = None
    reused: tuple[list[Shot], dict] | None = None
    error: str = ""


def stored_shots(project: Any, info: MediaInfo, cfg: FeatureConfig) -> tuple[list[Shot] | None, dict | None]:
    """Reads only: this very file's stored shots (default settings) and, if stored with ``cfg``,
    its feature params."""
    m = project.find_media(info.path)
    if m is None or m.content_hash != info.content_hash:
        return None, None
    shots = load_shots(project, m.id, shot_params())
    feats = load_features(project, m.id, feature_params(shots, cfg)) if shots else None
    return shots, (feats.params if feats is not None else None)


def _span(state: JobState, a: float, b: float, prefix: str) -> JobState:
    """A sub-job's progress mapped into ``[a, b]`` of the parent's; its partials are dropped."""
    return SimpleNamespace(is_cancelled=state.is_cancelled, set_partial_result=lambda _v: None,
                           set_progress=lambda f, text="": state.set_progress(a + (b - a) * min(1.0, max(0.0, f)),
                                                                             prefix + text))


def describe_job(req: TagRequest, state: JobState) -> list[tuple[str, str]]:
    """Compute worker, reading the project only: find the folder's media (probed, hashed,
    copies and non-media set aside), then each file's shots and per-shot features unless
    stored already; a :class:`FileDone` partial per file (a failed one does not stop the
    batch). Returns the skipped files with their reasons."""
    if req.folder is not None:
        state.set_progress(0.0, "finding media")
        infos, skipped = scan_media(req.folder, req.project)
        if not infos:
            why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
            raise TaggingError(f"No media to tag in {req.folder}" + (f" ({why})." if why else "."))
    else:
        infos, skipped = list(req.infos), []
    total, done = sum(max(i.duration_s, 0.1) for i in infos) or 1.0, 0.0
    for k, info in enumerate(infos):
        check(state)
        a, done = done, done + max(info.duration_s, 0.1) / total
        shots, fparams = stored_shots(req.project, info, req.features)
        if fparams is not None:
            state.set_partial_result(FileDone(info, reused=(shots, fparams)))
            continue
        sub = _span(state, a, done, f"{k + 1}/{len(infos)} {Path(info.path).name}: ")
        try:
            res = describe_file(info.path, req.features, None, [s.to_row() for s in shots] if shots else None, sub,
                                req.device)
        except TaggingError as e:
            state.set_partial_result(FileDone(info, error=str(e)))
        else:
            state.set_partial_result(FileDone(info, res))
    return skipped


def store_file(project: Any, done: FileDone) -> int:
    """Database writer: register the file; store its shots (if detected now), features and current: the media id."""
    mid = ops.register_media(project, done.info)
    if done.reused is not None:
        set_current(project, mid, done.reused[0], done.reused[1], shot_params())
        return mid
    res, t = done.result, done.result.timings
    with project.batch():  # shots run, features run and current commit together (a kill leaves all or none)
        if res.shots_detected:
            store_shots(project, mid, res.shots, res.shot_params, started_at=t.get("started_at"),
                        duration_s=t.get("shots_s", 0.0))
        store_features(project, mid, res.features(), res.feature_params, duration_s=t.get("features_s", 0.0),
                       started_at=t.get("started_at", 0.0) + t.get("shots_s", 0.0))
        set_current(project, mid, res.shots, res.feature_params, res.shot_params)
    return mid


class ReadOnlyProject:
    """The project as a job that may only read sees it: ``put_array``/``set_setting`` are kept
    (and read back) until :meth:`apply` replays them on the writer thread; any other write
    raises, so a job that starts writing elsewhere fails loudly instead of racing the writer."""

    WRITES = ("add_", "delete_", "remove_", "start_run", "finish_run", "record_run", "save_", "append_", "close")

    def __init__(self, project: Any):
        self._p, self.writes, self._arrays, self._settings = project, [], {}, {}

    def put_array(self, media_id: int, key: str, array: Any, meta: Mapping | None = None, run_id=None) -> None:
        self.writes.append(("put_array", (media_id, key, np.array(array)), {"meta": meta, "run_id": run_id}))
        self._arrays[(media_id, key)] = (np.array(array), dict(meta or {}))

    def set_setting(self, key: str, value: Any) -> None:
        self.writes.append(("set_setting", (key, value), {}))
        self._settings[key] = value

    batch = staticmethod(nullcontext)  # writes are only kept here; apply() replays them in the writer's batch

    def get_array(self, media_id: int, key: str):
        got = self._arrays.get((media_id, key))
        return (got[0].copy(), dict(got[1])) if got is not None else self._p.get_array(media_id, key)

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self._settings[key] if key in self._settings else self._p.get_setting(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(self.WRITES):
            raise RuntimeError(f"a read-only job tried to call project.{name}")
        return getattr(self._p, name)

    def apply(self, project: Any) -> None:
        for name, args, kwargs in self.writes:
            getattr(project, name)(*args, **kwargs)


def index_job(req: tuple[Any, IndexParams], state: JobState) -> tuple[ArchiveIndex, ReadOnlyProject]:
    """Compute worker: the archive index over every tagged shot (reads only; see ReadOnlyProject)."""
    view = ReadOnlyProject(req[0])
    return build_index(view, state, req[1]), view


def commit_index(project: Any, idx: ArchiveIndex, view: ReadOnlyProject) -> ArchiveIndex:
    """Database writer: store the worker's index, its tags with the analyst's edits laid over, each file's track."""
    with project.batch():  # the model, every file's index and its tags track commit together
        view.apply(project)
        edits = read_edits(project.get_setting(EDITS_SETTING, {}))  # checked, as load_index reads them
        idx.tags = [merge_edits(t, edits.get(r.key)) for t, r in zip(idx.tags, idx.refs)]
        idx.describe = [description(t) for t in idx.tags]
        for mid in sorted({r.media_id for r in idx.refs}):
            ops.save_track(project, mid, tags_track(idx, mid))
    return idx


def load_job(project: Any, state: JobState) -> tuple[ArchiveIndex | None, list[str]]:
    """I/O pool: the stored index (with edits) and the vocabulary."""
    return load_index(project), vocabulary(project)


def edit_job(project: Any, ref: ShotRef, action: str, name: str, new_name: str | None = None) -> list[Tag]:
    """Database writer: store one edit; returns the shot's tags with all its edits laid over them."""
    edits = edit_tag(project, ref, action, name, new_name)
    return merge_edits(stored_shot_tags(project, ref), edits)  # read as load_index reads


@dataclass(frozen=True)
class SearchRequest:
    idx: ArchiveIndex
    query: str = ""
    shot: int | None = None  # search by example: this shot's index in ``idx``
    k: int = 10
    device: str | None = None


def search_job(req: SearchRequest, state: JobState) -> tuple[list[Hit], np.ndarray | None]:
    """Compute worker: the hits, and the description embeddings (the panel caches them)."""
    if req.shot is not None:
        return search_shot(req.idx, req.shot, req.k), req.idx.desc_emb
    from core.tagging.archive import worker_pool

    state.set_progress(0.0, "loading the text model")
    embedder = worker_pool(req.device).get(FeatureConfig.text_embed)
    check(state)
    return search_text(req.idx, req.query, embedder, req.k), req.idx.desc_emb


def top_tags(tags: Sequence[Tag], n: int = TOP_TAGS) -> list[Tag]:
    """What labels a shot on the timeline: the analyst's and confident tags, no clusters."""
    keep = [t for t in tags if t.kind != "cluster" and t.state != "rejected" and not t.low]
    return sorted(keep, key=lambda t: (t.state not in ("user", "accepted"), -t.confidence))[:n]


def tags_track(idx: ArchiveIndex, media_id: int) -> Track:
    items = []
    for i in idx.of_media(media_id):
        r, top = idx.refs[i], top_tags(idx.tags[i])
        items.append(Item(r.start, r.end, " · ".join(t.name for t in top) or "—",
                          max((t.confidence for t in top), default=0.0), data={"shot": r.index}))
    return Track(TAGS_KIND, TAGS_NAME, items, meta={"method": idx.method})


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

    def __init__(self, window, parent: QWidget | None = None):
        super().__init__(parent)
        self.w = window
        self.session = window.session
        self.features = FeatureConfig()  # settable: tests and slow machines leave faces/OCR out
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
        window.project_changed.connect(lambda _p: self.reload())
        window.tasks.task_progress.connect(self._progress)

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
        proj = self.w.project
        if proj is None:
            return None
        return self.w.tasks.run(load_job, proj, pool="io", name="load tags", key="tagging-load",
                                visible=False).on_done(lambda res: self._loaded(proj, *res)).on_error(
            lambda e: self.w.show_error(f"Could not read the project's tags: {describe(e)}"))

    def _loaded(self, proj, idx: ArchiveIndex | None, vocab: list[str]) -> None:
        if proj is self.w.project:
            self._vocab_stored(vocab)
            self.set_index(idx)
            self._show_notes(f"{len(idx)} shots in {len({r.media_id for r in idx.refs})} files are tagged."
                             if idx else NOTHING_YET, idx.notes if idx else [])

    def set_index(self, idx: ArchiveIndex | None) -> None:
        self.idx, self._desc_emb, self.hits = idx, None, []
        self._fill_results()
        self._media_changed()
        self.index_changed.emit()

    # -- tagging -----------------------------------------------------------------------------
    def tag_current(self) -> None:
        info = self.session.info
        if info is None:
            self.w.show_error("Open a media file first: there is nothing to tag.")
        elif self._writable(self.w.project):
            self._start(TagRequest(self.w.project, (info,), None, self.features, self.device), Path(info.path).name)

    def choose_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Tag every media file under")
        if d:
            self.tag_folder(d)

    def tag_folder(self, folder: str) -> None:
        if not Path(folder).is_dir():
            self.w.show_error(f"{folder} is not a folder.")
        elif self._writable(self.w.project):
            self._start(TagRequest(self.w.project, (), folder, self.features, self.device), f"{Path(folder).name}/")

    def _writable(self, proj) -> bool:
        if proj is None:
            self.w.show_error("No project is open: tags are stored in a project.")
        elif proj.read_only:
            self.w.show_error(f"{proj.path} is read-only; tags cannot be stored (save it under another name).")
        return proj is not None and not proj.read_only

    def _start(self, req: TagRequest, what: str) -> None:
        self._run += 1
        run, proj = self._run, req.project
        self._report = {"failed": [], "tagged": 0, "reused": 0, "notes": []}
        self._set_running(True, f"tagging {what}…")
        self._task = self.w.tasks.run(describe_job, req, pool="compute", name="tagging", key="tagging")
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
        self.w.tasks.call(store_file, proj, done, pool="db", name="store tags").on_error(
            lambda e: self.w.show_error(f"Could not store the tags of {name}: {describe(e)}"))

    def _after_files(self, run: int, proj, skipped) -> None:
        self._report["skipped"] = list(skipped)
        # the writer is one FIFO worker: this no-op ends after every store queued before it
        self.w.tasks.call(lambda: None, pool="db", name="wait for stores").on_done(lambda _r: self._index(run, proj))

    def _index(self, run: int, proj) -> None:
        if run != self._run:
            return
        if not (self._report["tagged"] or self._report["reused"]):
            return self._failed(run, TaggingError("nothing could be tagged: " + " ".join(self._report["failed"][:3])))
        self._task = self.w.tasks.run(index_job, (proj, self.index_params), pool="compute", name="tag index",
                                      key="tagging")
        self._task.on_done(lambda res: self._commit(run, proj, *res)).on_error(
            lambda e: self._failed(run, e)).on_cancel(
            lambda: self._cancelled(run, "the files are stored; the archive index was not rebuilt"))

    def _commit(self, run: int, proj, idx: ArchiveIndex, view: ReadOnlyProject) -> None:
        self.progress.setFormat("storing the index…")
        self.w.tasks.call(commit_index, proj, idx, view, pool="db", name="store tag index").on_done(
            lambda i: self._finished(run, proj, i)).on_error(lambda e: self._failed(run, e))

    def _finished(self, run: int, proj, idx: ArchiveIndex) -> None:
        if proj is not self.w.project or not self._end(run):
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
            self.w.show_error(f"Tagging failed: {describe(e)}")
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
            self.shot_label.setText(f"<b>Shot {n} of {len(self._rows) or '?'}</b> · {format_time(r.start)} – "
                                    f"{format_time(r.end)} ({r.end - r.start:.1f} s)"
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
            self.w.show_error("Select a tag first.")
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
            self.w.show_error("Choose a tag from the vocabulary (Vocabulary… adds names to it).")
        else:
            self.edit("add", name.strip())

    def edit(self, action: str, name: str, new_name: str | None = None):
        """Store one edit to the current shot's tags (database writer), then show the result."""
        proj, idx, i = self.w.project, self.idx, self.current
        if idx is None or i < 0:
            self.w.show_error("No tagged shot under the playhead.")
            return None
        if not self._writable(proj):
            return None
        return self.w.tasks.call(edit_job, proj, idx.refs[i], action, name, new_name, pool="db",
                                 name="edit tag").on_done(lambda tags: self._edited(idx, i, tags)).on_error(
            lambda e: (self.w.show_error(f"Could not {action} “{name}”: {describe(e)}"), self._show_shot()))

    def _edited(self, idx: ArchiveIndex, i: int, tags: list[Tag]) -> None:
        if idx is not self.idx:
            return
        idx.tags[i], idx.describe[i] = tags, description(tags)
        self._desc_emb = None  # the descriptions changed: text search embeds them again
        if i == self.current:
            self._show_shot()
        mid, proj = idx.refs[i].media_id, self.w.project
        tr = tags_track(idx, mid)
        if i in self._rows:
            self.session.timeline.set_track(tr)
        if proj is not None and not proj.read_only:
            self.w.tasks.call(ops.save_track, proj, mid, tr, pool="db", name="store tags track").on_error(
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
        proj = self.w.project
        if not self._writable(proj):
            return None
        return self.w.tasks.call(set_vocabulary, proj, list(words), pool="db", name="store vocabulary").on_done(
            self._vocab_stored).on_error(lambda e: self.w.show_error(f"Could not store the vocabulary: {describe(e)}"))

    def _vocab_stored(self, words: list[str]) -> None:
        self.vocab = list(words)
        self._fill_vocab()
        self.vocabulary_changed.emit(self.vocab)

    # -- search --------------------------------------------------------------------------------
    def search(self, query: str | None = None) -> None:
        query = (self.query.text() if query is None else query).strip()
        if not query:
            self.w.show_error("Type what to look for.")
        else:
            self._search(SearchRequest(self._search_index(), query=query, k=self.k, device=self.device))

    def search_similar(self) -> None:
        if self.idx is None or self.current < 0:
            self.w.show_error("No tagged shot under the playhead to search from.")
        else:
            self._search(SearchRequest(self._search_index(), shot=self.current, k=self.k))

    def _search_index(self) -> ArchiveIndex | None:
        # a shallow copy: the job caches the description embeddings on it, not on the shown index
        return None if self.idx is None else replace(self.idx, desc_emb=self._desc_emb)

    def _search(self, req: SearchRequest) -> None:
        if req.idx is None:
            self.w.show_error(NO_INDEX)
            return
        idx = self.idx
        self.search_btn.setEnabled(False)
        self.w.tasks.run(search_job, req, pool="compute", name="tag search", key="tag-search").on_done(
            lambda res: self._found(idx, *res)).on_error(
            lambda e: (self.search_btn.setEnabled(True), self.w.show_error(f"Search failed: {describe(e)}"))).on_cancel(
            lambda: self.search_btn.setEnabled(True))

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
            cells = [QTableWidgetItem(Path(h.ref.path).name), QTableWidgetItem(format_time(h.ref.start)[3:]),
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
            self.w.show_error(f"{ref.path} is missing: it was moved or deleted since it was tagged.")
        else:
            self.w.open_media(ref.path).on_done(lambda _info: self._seek(ref) if self._is_open(ref.path) else None)

    def _seek(self, ref: ShotRef) -> None:
        self.session.playing = False
        self.session.seek(ref.start + min(1e-3, 0.5 * (ref.end - ref.start)))

    # -- export --------------------------------------------------------------------------------
    def choose_export(self) -> None:
        if self.idx is None:
            self.w.show_error(NO_INDEX)
            return
        d = QFileDialog.getExistingDirectory(self, "Export the archive's tags to")
        if d:
            self.export_to(d)

    def export_to(self, folder: str):
        from core.tagging.export import export_archive

        proj, idx = self.w.project, self.idx
        if proj is None or idx is None:
            self.w.show_error(NO_INDEX)
            return None
        return self.w.tasks.call(export_archive, proj, folder, idx=idx, pool="io", name="export tags").on_done(
            lambda out: self.w.statusBar().showMessage(f"exported {len(out.files)} files to {folder}" + "".join(
                f"; {n}" for n in out.notes), 10000)).on_error(lambda e: self.w.show_error(f"Export failed: {describe(e)}"))


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
