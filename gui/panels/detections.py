"""Perception views (:mod:`core.perception`; the ``analyze`` command runs the same job): the
detections panel, the analysis dialog and the models dialog."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QListWidgetItem, QPushButton, QSlider,
                               QTableView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from core.perception.analysis import AUDIO_TASKS, DEFAULT_MODELS, VISUAL_TASKS
from core.perception.overlay import OverlayModel
from core.session import MediaSession
from core.timefmt import timecode
from gui.views.player import label_color

TASK_TITLES = {"detect": "objects", "faces": "faces", "ocr": "on-screen text", "image-tags": "scene tags",
               "vad": "voice activity", "asr": "speech to text"}


class DetectionsModel(QAbstractTableModel):
    HEADERS = ("time", "class", "score", "track", "model")

    def __init__(self, overlay: OverlayModel):
        super().__init__()
        self.overlay = overlay
        self.rows: list = []

    def refresh(self) -> None:
        self.beginResetModel()
        self.rows = self.overlay.rows()
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
        it, source = self.rows[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            track = it.data.get("track")
            text = it.data.get("text")
            label = f"text “{text[:40]}”" if isinstance(text, str) else it.label
            return (timecode(it.start), label, f"{it.confidence:.2f}",
                    "" if track is None else f"#{track}", source)[c]
        if role == Qt.ItemDataRole.ForegroundRole and c == 1:
            return label_color(it.label)
        if role == Qt.ItemDataRole.UserRole:
            return it.start
        return None


class DetectionsPanel(QWidget):
    """Box toggles per class, a confidence slider, and every detection in a table that seeks."""

    def __init__(self, session: MediaSession, overlay: OverlayModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.overlay = overlay
        self.show_boxes = QCheckBox("Show boxes on the video")
        self.show_boxes.setChecked(overlay.enabled)
        self.show_boxes.toggled.connect(overlay.set_enabled)
        self.score = QSlider(Qt.Orientation.Horizontal)
        self.score.setRange(0, 100)
        self.score.setValue(int(overlay.min_score * 100))
        self.score_label = QLabel(f"≥ {overlay.min_score:.2f}")
        self.score.valueChanged.connect(self._on_score)
        self.classes = QListWidget()
        self.classes.setMaximumHeight(130)
        self.classes.itemChanged.connect(self._on_class)
        self.model = DetectionsModel(overlay)
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
        lay.addLayout(row)
        lay.addWidget(QLabel("classes"))
        lay.addWidget(self.classes)
        self.count = QLabel("")
        lay.addWidget(self.count)
        lay.addWidget(self.table, 1)
        overlay.events.changed.connect(self.refresh_rows)
        session.timeline.events.tracks_changed.connect(self.refresh)

    def refresh(self) -> None:
        self.classes.blockSignals(True)
        self.classes.clear()
        for label, n in self.overlay.labels().items():
            it = QListWidgetItem(f"{label}  ({n})")
            it.setData(Qt.ItemDataRole.UserRole, label)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked if label in self.overlay.hidden else Qt.CheckState.Checked)
            it.setForeground(label_color(label))
            self.classes.addItem(it)
        self.classes.blockSignals(False)
        self.refresh_rows()

    def refresh_rows(self) -> None:
        self.model.refresh()
        self.count.setText(f"{len(self.model.rows)} detections")

    def _on_score(self, v: int) -> None:
        self.score_label.setText(f"≥ {v / 100:.2f}")
        self.overlay.set_min_score(v / 100)

    def _on_class(self, it: QListWidgetItem) -> None:
        self.overlay.set_label_visible(it.data(Qt.ItemDataRole.UserRole), it.checkState() == Qt.CheckState.Checked)

    def _on_row(self, index) -> None:
        t = self.model.data(index, Qt.ItemDataRole.UserRole)
        if t is not None:
            self.session.seek(float(t))


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
