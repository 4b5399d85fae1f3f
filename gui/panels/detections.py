"""Perception views (:mod:`core.perception`; the ``analyze`` command runs the same job): the
detections panel, the analysis dialog and the models dialog."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QListWidgetItem, QPushButton, QSlider,
                               QTableView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.errors import describe
from core.handoff.metrics import MIN_TRUTH, ScoreRequest, Scores, score_job
from core.perception import ops
from core.perception.analysis import AUDIO_TASKS, DEFAULT_MODELS, VISUAL_TASKS
from core.perception.confirm import is_confirmed, why
from core.perception.overlay import OverlayModel, checked
from core.session import MediaSession
from core.timefmt import timecode
from gui.views.player import label_color

TASK_TITLES = {"detect": "objects", "faces": "faces", "ocr": "on-screen text", "image-tags": "scene tags",
               "vad": "voice activity", "asr": "speech to text"}


class DetectionsModel(QAbstractTableModel):
    """Every accepted detection; object detections say whether they are confirmed (a "?" and the
    reason in the tooltip where not, the row greyed)."""

    HEADERS = ("time", "class", "score", "confirmed", "track", "model")

    #: With a stored (big) box track the table lists the detections in the timeline's view, this many at most.
    ROW_LIMIT = 5000

    def __init__(self, overlay: OverlayModel, view=None):
        super().__init__()
        self.overlay = overlay
        self.view = view  # () -> (t0, t1): the span the table lists when a box track is stored
        self.rows: list = []
        self.windowed = False  # the rows are those of the view (a stored track), not all

    def refresh(self) -> None:
        self.beginResetModel()
        tracks = self.overlay.box_tracks()
        tasks = {tr.name: checked(tr) for tr in tracks}
        self.windowed = self.view is not None and any(tr.is_stored for tr in tracks)
        rows = self.overlay.rows(*self.view(), limit=self.ROW_LIMIT) if self.windowed else self.overlay.rows()
        self.rows = [(it, src, tasks.get(src, False)) for it, src in rows]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        it, source, is_checked = self.rows[index.row()]
        c = index.column()
        ok = is_confirmed(it.data) if is_checked else None
        if role == Qt.ItemDataRole.DisplayRole:
            track = it.data.get("track")
            text = it.data.get("text")
            label = f"text “{text[:40]}”" if isinstance(text, str) else it.label
            verdict = "" if ok is None else "yes" if ok else "?"
            return (timecode(it.start), label, f"{it.confidence:.2f}", verdict,
                    "" if track is None else f"#{track}", source)[c]
        if role == Qt.ItemDataRole.ToolTipRole and ok is not None:
            return why(it.data)
        if role == Qt.ItemDataRole.ForegroundRole:
            if ok is False:
                return QColor(140, 140, 148)
            if c == 1:
                return label_color(it.label)
        if role == Qt.ItemDataRole.UserRole:
            return it.start
        return None


class DetectionsPanel(QWidget):
    """Box toggles per class, a confidence slider, a "show unconfirmed" switch, every detection
    in a table that seeks, the detector's precision, recall and IDF1 per class against an
    imported ground truth (core.handoff.metrics, a job on the I/O pool), and the scene's
    confusions (core.perception.confirm): suppress or restore each, and learn them from the open
    file (the camera's normal footage) as a core job. The scores and the confusions work once
    :meth:`attach` gives the panel the window's workbench.

    Signals: ``scores_changed(object)``: the scores shown (a core.handoff.metrics.Scores), or None
    when none are (no ground truth, or they could not be computed: the note says why)."""

    scores_changed = Signal(object)

    def __init__(self, session: MediaSession, overlay: OverlayModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.overlay = overlay
        self.show_boxes = QCheckBox("Show boxes on the video")
        self.show_boxes.setChecked(overlay.enabled)
        self.show_boxes.toggled.connect(overlay.set_enabled)
        self.show_unconfirmed = QCheckBox("Show unconfirmed detections (greyed, “?”)")
        self.show_unconfirmed.setToolTip("Detections with no evidence that the object is there: one detector's "
                                         "guess, never a fact. Confirmed: seen moving in several frames, or a "
                                         "second look agrees.")
        self.show_unconfirmed.setChecked(overlay.show_unconfirmed)
        self.show_unconfirmed.toggled.connect(overlay.set_show_unconfirmed)
        self.show_unconfirmed.toggled.connect(lambda _on: self.schedule_scores())  # scores follow the filter
        self.score = QSlider(Qt.Orientation.Horizontal)
        self.score.setRange(0, 100)
        self.score.setValue(int(overlay.min_score * 100))
        self.score_label = QLabel(f"≥ {overlay.min_score:.2f}")
        self.score.valueChanged.connect(self._on_score)
        self.classes = QListWidget()
        self.classes.setMaximumHeight(130)
        self.classes.itemChanged.connect(self._on_class)
        self.model = DetectionsModel(overlay, lambda: session.view)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.clicked.connect(self._on_row)
        self.table.activated.connect(self._on_row)
        row = QHBoxLayout()
        row.addWidget(QLabel("confidence"))
        row.addWidget(self.score, 1)
        row.addWidget(self.score_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.show_boxes)
        lay.addWidget(self.show_unconfirmed)
        lay.addLayout(row)
        lay.addWidget(QLabel("classes"))
        lay.addWidget(self.classes)
        self.count = QLabel("")
        lay.addWidget(self.count)
        lay.addWidget(self.table, 1)
        lay.addWidget(self._scores_box())
        lay.addWidget(self._confusions_box())
        overlay.events.changed.connect(self.refresh_rows)
        session.timeline.events.tracks_changed.connect(self.refresh)
        session.timeline.events.tracks_changed.connect(self.schedule_scores)
        # a stored box track: the table follows the timeline's view, once it settles
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(150)
        self._view_timer.timeout.connect(self.refresh_rows)
        session.events.view_changed.connect(lambda *_: self._view_timer.start() if self.model.windowed else None)
        self.bench = None
        self.scene = "default"

    # -- against an imported ground truth -----------------------------------------------------
    SCORE_HEADERS = ("class", "precision", "recall", "IDF1", "TP / FP / FN")

    def _scores_box(self) -> QGroupBox:
        box = QGroupBox("Against a ground truth")
        box.setToolTip("The detector's boxes scored against a ground truth you imported (File ▸ Import…): "
                       "a box counts as found where its IoU with the truth box is at least 0.5, per class; "
                       "IDF1 also asks that an object keeps one id. As the MOT Challenge tools count them.")
        self.truth_pick = QComboBox()
        self.truth_pick.setVisible(False)
        self.truth_pick.currentIndexChanged.connect(lambda _i: self.update_scores(force=True))
        self.scores_title = QLabel("")
        self.scores_title.setWordWrap(True)
        self.scores_table = QTableWidget(0, len(self.SCORE_HEADERS))
        self.scores_table.setHorizontalHeaderLabels(list(self.SCORE_HEADERS))
        self.scores_table.verticalHeader().setVisible(False)
        self.scores_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.scores_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.scores_table.horizontalHeader().setStretchLastSection(True)
        self.scores_table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.scores_note = QLabel("")
        self.scores_note.setWordWrap(True)
        self.show_truth = QCheckBox("Show the ground truth's boxes (white, dotted)")
        self.show_truth.setChecked(self.overlay.show_truth)
        self.show_truth.toggled.connect(self.overlay.set_show_truth)
        bl = QVBoxLayout(box)
        bl.addWidget(self.show_truth)
        bl.addWidget(self.truth_pick)
        bl.addWidget(self.scores_title)
        bl.addWidget(self.scores_table)
        bl.addWidget(self.scores_note)
        box.setVisible(False)
        self.scores_group = box
        self.scores: Scores | None = None
        self._scored: tuple | None = None  # what the shown (or running) scores were computed from
        # the timeline changes in bursts (a reload sets each track): score once it settles
        self._scores_timer = QTimer(self)
        self._scores_timer.setSingleShot(True)
        self._scores_timer.setInterval(200)
        self._scores_timer.timeout.connect(self.update_scores)
        return box

    def _truth_tracks(self) -> list[str]:
        """The names of the imported ground truths on the timeline (core.handoff.boxes.store_import)."""
        return [tr.name for tr in self.overlay.truth_tracks()]

    def schedule_scores(self) -> None:
        if self.bench is not None:
            self._scores_timer.start()

    def update_scores(self, force: bool = False) -> None:
        """Score the detector against the chosen ground truth (a job on the I/O pool: it reads the
        project by range), where anything it is computed from changed since the last time."""
        names = self._truth_tracks()
        self.truth_pick.blockSignals(True)
        chosen = self.truth_pick.currentText()
        known = [self.truth_pick.itemText(i) for i in range(self.truth_pick.count())]
        if known != names:
            self.truth_pick.clear()
            self.truth_pick.addItems(names)
            new = [n for n in names if n not in known]
            # a truth just imported is the one to score; else the one the analyst chose
            self.truth_pick.setCurrentText(new[-1] if new else chosen if chosen in names else names[-1] if names else "")
        self.truth_pick.blockSignals(False)
        self.truth_pick.setVisible(len(names) > 1)
        project = self.bench.project() if self.bench is not None else None
        media_id = self.session.media_id
        if not names or project is None or media_id is None:
            self._scored = None
            self.scores_group.setVisible(False)
            if self.scores is not None:
                self.scores = None
                self.scores_changed.emit(None)
            return
        truth = self.truth_pick.currentText()
        basis = (id(project), media_id, truth, self.overlay.show_unconfirmed) + tuple(
            (tr.name, tr.run_id, tr.meta.get("sha256"), tr.size) for tr in self.overlay.box_tracks() + self.overlay.truth_tracks())
        if basis == self._scored and not force:
            return
        self._scored = basis
        self.scores_group.setVisible(True)
        self.scores_title.setText(f"against {truth}")
        self.scores_note.setText("scoring the detector…")
        req = ScoreRequest(project, media_id, truth, confirmed_only=not self.overlay.show_unconfirmed)
        self.bench.tasks.run(score_job, req, pool="io", name="score detections", key="detection-scores",
                             visible=False).on_done(lambda s: self._scored_done(req, s)).on_error(
            lambda e: self._scores_failed(req, e))

    def _current(self, req: ScoreRequest) -> bool:
        return (self.bench.project() is req.project and self.session.media_id == req.media_id
                and self.truth_pick.currentText() == req.truth_track
                and self.overlay.show_unconfirmed != req.confirmed_only)

    def _scored_done(self, req: ScoreRequest, scores: Scores) -> None:
        if self._current(req):
            self.show_scores(scores)

    def _scores_failed(self, req: ScoreRequest, e: BaseException) -> None:
        if not self._current(req):
            return
        self._scored = None  # try again on the next change
        self.scores_table.setRowCount(0)
        self.scores_table.setVisible(False)
        self.scores_note.setText(f"Not scored: {describe(e)}")
        self.scores = None
        self.scores_changed.emit(None)

    def show_scores(self, scores: Scores) -> None:
        """Fill the table: the overall row first, then each class (most truth boxes first); a row
        with fewer than MIN_TRUTH truth boxes gives its counts, not percentages."""
        self.scores = scores
        which = "confirmed detections" if scores.confirmed_only else "every detection"
        self.scores_title.setText(f"{scores.pred_name} ({which}) against {scores.truth_name}")
        rows = [scores.overall, *scores.classes]
        self.scores_table.setRowCount(0)
        if not scores.overall.enough:
            self.scores_table.setVisible(False)
            self.scores_note.setText(
                f"Only {scores.overall.truth} ground-truth boxes in the evaluated frames: too few (fewer than "
                f"{MIN_TRUTH}) for a precision or recall to mean anything. TP / FP / FN: {scores.overall.tp} / "
                f"{scores.overall.fp} / {scores.overall.fn}; {scores.frames_line()}.")
            self.scores_changed.emit(scores)
            return
        self.scores_table.setVisible(True)
        self.scores_table.setRowCount(len(rows))
        rh = self.scores_table.verticalHeader().defaultSectionSize()  # all rows up to 6, then it scrolls
        self.scores_table.setFixedHeight(self.scores_table.horizontalHeader().sizeHint().height()
                                         + rh * min(len(rows), 6) + 4)
        for r, c in enumerate(rows):
            few = not c.enough
            cells = [c.label or "all classes", *(_percent(v, few) for v in (c.precision, c.recall, c.idf1)),
                     f"{c.tp} / {c.fp} / {c.fn}"]
            for k, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if few and 1 <= k <= 3:
                    item.setToolTip(f"only {c.truth} ground-truth boxes of this class: too few to measure")
                elif k == 3:
                    item.setToolTip(f"{c.switches} id switches; IDTP {c.idtp}, IDFP {c.idfp}, IDFN {c.idfn}")
                if k == 0 and c.label:
                    item.setForeground(label_color(c.label))
                self.scores_table.setItem(r, k, item)
        t = self.scores_table  # as tall as its rows (a few classes), up to about eight
        t.setFixedHeight(t.horizontalHeader().sizeHint().height() + 2 * t.frameWidth()
                         + sum(t.rowHeight(r) for r in range(min(len(rows), 8))))
        self.scores_note.setText(scores.frames_line())
        self.scores_changed.emit(scores)

    # -- the scene's confusions ------------------------------------------------------------
    def _confusions_box(self) -> QGroupBox:
        box = QGroupBox("Scene confusions")
        box.setToolTip("Classes the detector reports on the static background of this camera's normal footage. "
                       "Checked: suppressed here (their detections stay unconfirmed). Uncheck to restore.")
        self.confusions = QListWidget()
        self.confusions.setMaximumHeight(90)
        self.confusions.itemChanged.connect(self._on_confusion)
        self.learn = QPushButton("Learn this scene's confusions from this file")
        self.learn.setToolTip("Mark the open file as the camera's normal footage (nothing of interest in it): "
                              "classes that fire on a static region of it are suppressed in this project's "
                              "analyses from now on. Each stays listed and can be restored.")
        self.learn.setEnabled(False)
        self.learn.clicked.connect(self.learn_from_file)
        self.confusions_note = QLabel("none learned")
        self.confusions_note.setWordWrap(True)
        bl = QVBoxLayout(box)
        bl.addWidget(self.confusions)
        bl.addWidget(self.confusions_note)
        bl.addWidget(self.learn)
        return box

    def attach(self, bench) -> None:
        """Give the panel the window's workbench (tasks, project, errors): the confusions part."""
        self.bench = bench
        bench.project_changed.connect(lambda _p: self.load_confusions())
        bench.project_changed.connect(lambda _p: self.schedule_scores())
        self.session.events.media_changed.connect(lambda _i: self._update_learn())
        self.session.events.media_changed.connect(lambda _i: self.schedule_scores())
        self.load_confusions()
        self.schedule_scores()

    def _project(self):
        p = self.bench.project() if self.bench is not None else None
        return p if p is not None and not p.read_only else None

    def _update_learn(self) -> None:
        info = self.session.info
        self.learn.setEnabled(self._project() is not None and info is not None and info.has_video)

    def load_confusions(self) -> None:
        self._update_learn()
        project = self._project()
        if project is None:
            self.set_confusions(None)
            return
        self.bench.tasks.call(ops.scene_confusions, project, self.scene, pool="db",
                              name="scene confusions").on_done(self.set_confusions)

    def set_confusions(self, sc) -> None:
        """Show a SceneConfusions (None or empty: none learned)."""
        self.confusions.blockSignals(True)
        self.confusions.clear()
        for c in (sc.entries if sc is not None else []):
            it = QListWidgetItem(f"{c.label}  ({c.share:.0%} of frames, ≤ {c.score:.2f})")
            it.setData(Qt.ItemDataRole.UserRole, (c.label, tuple(c.box)))
            it.setToolTip(c.describe())
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if c.suppressed else Qt.CheckState.Unchecked)
            self.confusions.addItem(it)
        self.confusions.blockSignals(False)
        n = len(sc.suppressed) if sc is not None else 0
        self.confusions_note.setText("none learned" if sc is None or not sc.entries else
                                     f"{n} of {len(sc.entries)} suppressed in this scene; new analyses use them")

    def _on_confusion(self, it: QListWidgetItem) -> None:
        project = self._project()
        if project is None:
            return
        label, box = it.data(Qt.ItemDataRole.UserRole)
        on = it.checkState() == Qt.CheckState.Checked
        self.bench.tasks.call(ops.mark_confusion, project, label, box, on, self.scene, pool="db",
                              name="suppress confusion" if on else "restore confusion").on_done(
            self.set_confusions).on_error(lambda e: self.bench.show_error(f"Could not store the change: {e}"))

    def learn_from_file(self) -> None:
        """Learn the scene's confusions from the open file (a core job), then store them suppressed."""
        info, project = self.session.info, self._project()
        if info is None or project is None:
            return
        self.learn.setEnabled(False)
        self.confusions_note.setText(f"learning from {Path(info.path).name}…")
        req = ops.LearnRequest(info.path, user_paths=tuple(sorted(self.bench.user_paths().items())))
        self.bench.tasks.run(ops.learn_confusions, req, pool="compute", name="learn scene confusions",
                             key="learn-confusions").on_done(self._learned).on_error(self._learn_failed).on_cancel(
            self._update_learn)

    def _learned(self, learned) -> None:
        project = self._project()
        self._update_learn()
        if project is None:
            return
        self.bench.tasks.call(ops.add_confusions, project, learned.confusions, self.scene, pool="db",
                              name="store confusions").on_done(self.set_confusions).on_error(
            lambda e: self.bench.show_error(f"Could not store the scene's confusions: {e}"))
        self.bench.show_status(f"{len(learned.confusions)} confusion(s) learned from {learned.frames} frames of "
                               f"{Path(learned.path).name}; analyse again to apply them", 8000)

    def _learn_failed(self, e) -> None:
        self._update_learn()
        self.confusions_note.setText("learning failed")
        self.bench.show_error(f"Could not learn the scene's confusions: {e}")

    def refresh(self) -> None:
        self.classes.blockSignals(True)
        self.classes.clear()
        verdicts = self.overlay.confirmed_counts()
        for label, n in self.overlay.labels().items():
            c, u = verdicts.get(label, (0, 0))
            it = QListWidgetItem(f"{label}  ({n}" + (f": {c} confirmed, {u} ?" if u else "") + ")")
            it.setData(Qt.ItemDataRole.UserRole, label)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked if label in self.overlay.hidden else Qt.CheckState.Checked)
            it.setForeground(label_color(label))
            self.classes.addItem(it)
        self.classes.blockSignals(False)
        self.refresh_rows()

    def refresh_rows(self) -> None:
        self.model.refresh()
        if self.model.windowed:  # totals from the stored summaries; the table lists the view
            verdicts = self.overlay.confirmed_counts()
            total = sum(self.overlay.labels().values())
            ok = sum(c for c, _u in verdicts.values())
            un = sum(u for _c, u in verdicts.values())
            n = len(self.model.rows)
            shown = f"first {n} in view" if n >= self.model.ROW_LIMIT else f"{n} in view"
            self.count.setText(f"{total} detections ({ok} confirmed, {un} unconfirmed); listed: {shown} "
                               "(zoom the timeline to list others)")
            return
        ok = sum(1 for it, _s, ch in self.model.rows if ch and is_confirmed(it.data))
        un = sum(1 for it, _s, ch in self.model.rows if ch and not is_confirmed(it.data))
        rest = len(self.model.rows) - ok - un  # faces and text: no verdict is made for them
        parts = [f"{ok} confirmed", f"{un} unconfirmed"] + ([f"{rest} not checked (faces, text)"] if rest else [])
        self.count.setText(f"{len(self.model.rows)} detections" + (f" ({', '.join(parts)})" if ok or un else ""))

    def _on_score(self, v: int) -> None:
        self.score_label.setText(f"≥ {v / 100:.2f}")
        self.overlay.set_min_score(v / 100)

    def _on_class(self, it: QListWidgetItem) -> None:
        self.overlay.set_label_visible(it.data(Qt.ItemDataRole.UserRole), it.checkState() == Qt.CheckState.Checked)

    def _on_row(self, index) -> None:
        t = self.model.data(index, Qt.ItemDataRole.UserRole)
        if t is not None:
            self.session.seek(float(t))


def _percent(value: float | None, few: bool) -> str:
    """A score as the table shows it: "—" where it is 0 / 0, "few" where too few truth boxes."""
    if few:
        return "few"
    return "—" if value is None else f"{value:.1%}"


class AnalysisDialog(QDialog):
    """Pick the models, the sampling rate and the range of an analysis run."""

    def __init__(self, specs: list, availability: dict, view: tuple[float, float] | None, parent=None,
                 chosen: tuple[str, ...] = DEFAULT_MODELS, fps: float = 2.0, device: str = "auto"):
        super().__init__(parent)
        self.setWindowTitle("Analyse media")
        self.checks: dict[str, QCheckBox] = {}
        box = QGroupBox("Models")
        bl = QVBoxLayout(box)
        for spec in specs:
            if spec.task not in VISUAL_TASKS + AUDIO_TASKS:
                continue
            a = availability[spec.name]
            cb = QCheckBox(f"{spec.title} — {TASK_TITLES.get(spec.task, spec.task)}")
            cb.setChecked(a.available and spec.name in chosen)
            cb.setEnabled(a.available)
            cb.setToolTip(a.where if a.available else a.message)
            if not a.available:
                cb.setText(cb.text() + "  (not available: see Models…)")
            self.checks[spec.name] = cb
            bl.addWidget(cb)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(0.1, 30.0)
        self.fps.setSingleStep(0.5)
        self.fps.setValue(fps)
        self.fps.setSuffix(" frames/s")
        self.range = QComboBox()
        self.range.addItem("whole file", None)
        if view is not None:
            self.range.addItem(f"visible range {timecode(view[0])} – {timecode(view[1])}", view)
        self.device = QComboBox()
        for d, text in (("auto", "automatic (CUDA when present)"), ("cpu", "CPU"), ("cuda", "CUDA GPU")):
            self.device.addItem(text, d)
        self.device.setCurrentIndex(max(0, self.device.findData(device)))
        form = QFormLayout()
        form.addRow("sample", self.fps)
        form.addRow("range", self.range)
        form.addRow("run on", self.device)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Analyse")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(box)
        lay.addLayout(form)
        lay.addWidget(QLabel("Results already computed with the same settings are reused."))
        lay.addWidget(buttons)

    def selection(self) -> tuple[tuple[str, ...], float, tuple[float, float] | None, str]:
        models = tuple(n for n, cb in self.checks.items() if cb.isChecked())
        return models, float(self.fps.value()), self.range.currentData(), self.device.currentData()


class ModelsDialog(QDialog):
    """Every catalogue model: available or not, from where, and a way to point
    bring-your-own models at a local file or folder."""

    paths_changed = Signal(dict)

    def __init__(self, specs: list, locate, paths: dict[str, str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(900, 420)
        self.specs = specs
        self.locate = locate
        self.paths = dict(paths)
        self.table = QTableWidget(len(specs), 5)
        self.table.setHorizontalHeaderLabels(["model", "task", "status", "weights / what to do", ""])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._fill()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Embedded models come with Kestrel's packages. Others load from a local file or "
                             "folder you choose; nothing is ever downloaded."))
        lay.addWidget(self.table)
        lay.addWidget(buttons)

    def _fill(self) -> None:
        for r, spec in enumerate(self.specs):
            a = self.locate(spec, self.paths.get(spec.name))
            cells = [spec.title, TASK_TITLES.get(spec.task, spec.task), "ready" if a.available else "missing",
                     a.where if a.available else a.message]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{spec.name}\n{spec.licence}\n{spec.notes}".strip())
                if c == 2:
                    item.setForeground(Qt.GlobalColor.green if a.available else Qt.GlobalColor.yellow)
                self.table.setItem(r, c, item)
            if spec.user_supplied:
                b = QPushButton("Choose…")
                b.clicked.connect(lambda _=False, s=spec: self.choose(s))
                self.table.setCellWidget(r, 4, b)
        self.table.resizeColumnsToContents()

    def choose(self, spec, path: str | None = None) -> None:
        if path is None:
            if spec.weights.get("user") == "folder":
                path = QFileDialog.getExistingDirectory(self, f"Folder of {spec.title}")
            else:
                pats = " ".join(spec.weights.get("patterns", ["*"]))
                path, _ = QFileDialog.getOpenFileName(self, f"Weights of {spec.title}", "", f"Model ({pats})")
        if path:
            self.paths[spec.name] = str(Path(path))
            self.paths_changed.emit(dict(self.paths))
            self._fill()
