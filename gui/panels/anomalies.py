"""Anomalies: run the audio-visual pass, list the events, replay each one, give feedback.

The pass (:func:`core.anomaly.pipeline.detect_anomalies`) runs on the compute worker and
fills the timeline's anomaly score as it goes; the result is stored by the database
worker. The events list sorts by score or time; a click replays the event with a few
seconds of context, looping, with boxes and the waveform region in view. N / P step
through events. On a live stream the same rules raise alerts within a window of the event
and record the seconds around it into the project's folder.

Evidence: only confirmed objects open an event (:mod:`core.anomaly.evidence`); the pass's
detections (confirmed, and unconfirmed marked) go to the timeline as a boxes track, so the
player and the Detections panel show an event's object box at its time. The scene's learned
confusions (classes the detector reports on a static region of the normal footage) are listed
under the events, ticked = suppressed; unticking one restores it (stored at once, used by the
next pass).
"""
from __future__ import annotations

import logging
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QListWidgetItem, QPushButton, QSlider, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from core.errors import describe
from core.timefmt import timecode

log = logging.getLogger(__name__)
CONTEXT_S = 3.0


class AnomalyPanel(QWidget):
    """Signals: ``pass_finished(result)``, ``alert(event)`` (live)."""

    pass_finished = Signal(object)
    alert = Signal(object)
    confusions_changed = Signal(object)  # the scene's SceneConfusions, after a load or a change
    SCENE = "default"  # the scene key of the window's passes (core.anomaly.evidence)

    def __init__(self, bench, parent=None):
        super().__init__(parent)
        self.bench = bench  # gui.workbench.Workbench
        self.session = bench.session
        self.result = None
        self.events: list = []
        self.normal_min = QDoubleSpinBox()
        self.normal_min.setRange(0.0, 600.0)
        self.normal_min.setValue(2.0)
        self.normal_min.setSuffix(" min normal")
        self.normal_min.setToolTip("The first minutes are taken as normal footage to learn from "
                                   "(0: no training, the detectors alone)")
        self.use_view = QCheckBox("visible range is normal")
        self.ffn = QComboBox()  # the network's feed-forward blocks (core.anomaly.train.FFN_ALIASES)
        self.ffn.addItems(["dense", "topk", "dynamic"])
        self.ffn.setToolTip("Network blocks: dense, a fixed top-k mixture of experts, or dynamic experts "
                            "(more experts where the footage is hard; the 'Experts spent' track shows where)")
        self.sens = QSlider(Qt.Orientation.Horizontal)
        self.sens.setRange(0, 100)
        self.sens.setValue(50)
        self.sens.setToolTip("Sensitivity: higher finds more events")
        self.sens.valueChanged.connect(self._on_sensitivity)
        self.run_btn = QPushButton("Find anomalies")
        self.run_btn.clicked.connect(self.run)
        self.live_btn = QCheckBox("alert on the live stream")
        self.live_btn.toggled.connect(self._toggle_live)
        self.export_btn = QPushButton("Export…")
        self.export_btn.clicked.connect(self.choose_export)
        self.evidence_btn = QPushButton("Evidence package…")
        self.evidence_btn.setToolTip("The selected event's clip with a sidecar: SHA-256 of the source and the clip, "
                                     "times, models and their parameters, scores")
        self.evidence_btn.clicked.connect(self.choose_evidence)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.banner = QLabel("")
        self.banner.setStyleSheet("background:#7a1f1f;color:white;padding:4px;font-weight:bold")
        self.banner.hide()
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["", "start", "score", "why", "verdict"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setIconSize(QPixmap(64, 36).size())
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(40)
        hh = self.table.horizontalHeader()
        for c in (0, 1, 2, 4):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setSortingEnabled(True)
        self.table.cellClicked.connect(lambda r, _c: self.replay_row(r))
        self.confirm = QPushButton("Confirm")
        self.dismiss = QPushButton("Dismiss")
        self.confusions = None  # core.perception.confirm.SceneConfusions of SCENE
        self.confusion_label = QLabel("")
        self.confusion_label.setWordWrap(True)
        self.confusion_list = QListWidget()
        self.confusion_list.setMaximumHeight(90)
        self.confusion_list.setToolTip("Classes the detector reports on a static region of the normal footage: "
                                       "ticked ones are suppressed there (no object). Untick to restore one; "
                                       "the next pass uses it.")
        self.confusion_list.itemChanged.connect(self._on_confusion)
        self.confusion_label.hide()
        self.confusion_list.hide()
        self.confirm.clicked.connect(lambda: self.feedback("confirmed"))
        self.dismiss.clicked.connect(lambda: self.feedback("dismissed"))
        row1 = QHBoxLayout()
        row1.addWidget(self.normal_min)
        row1.addWidget(self.use_view)
        row1.addWidget(self.ffn)
        row1.addWidget(self.run_btn)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("sensitivity"))
        row2.addWidget(self.sens, 1)
        row3 = QHBoxLayout()
        row3.addWidget(self.confirm)
        row3.addWidget(self.dismiss)
        row3.addWidget(self.export_btn)
        row3.addWidget(self.evidence_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addWidget(self.live_btn)
        lay.addWidget(self.banner)
        lay.addWidget(self.info)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.confusion_label)
        lay.addWidget(self.confusion_list)
        lay.addLayout(row3)
        self.monitor = None

    # -- the pass over a file -----------------------------------------------------------
    def run(self) -> None:
        from core.anomaly.pipeline import AnomalyPartial, AnomalyRequest, detect_anomalies
        from core.anomaly.train import FFN_ALIASES
        from core.timeline import Item

        info = self.session.info
        if info is None:
            self.bench.show_error("Open a media file first.")
            return
        normal = self.session.view if self.use_view.isChecked() else None
        req = AnomalyRequest(path=info.path, normal=normal, first_minutes=self.normal_min.value(),
                             sensitivity=self.sens.value() / 100.0, project=self.bench.project(),
                             media_id=self.session.media_id, ffn=FFN_ALIASES[self.ffn.currentText()],
                             scene=self.SCENE)
        self.run_btn.setEnabled(False)
        self.info.setText("learning the normal footage…")
        self.session.timeline.remove_track("anomaly", "score")
        for m in ("video", "audio"):
            self.session.timeline.remove_track("experts", m)

        def partial(p: AnomalyPartial) -> None:
            if self.session.info is info:
                self.session.timeline.add_items("anomaly", "score", [
                    Item(float(t), float(t) + p.window_s, lab, float(s)) for t, s, lab in zip(p.times, p.scores, p.labels)])

        def done(res) -> None:
            self.run_btn.setEnabled(True)
            if self.session.info is not info:
                return
            self.show_result(res)
            proj, mid = self.bench.project(), self.session.media_id
            if proj is not None and mid is not None and not proj.read_only:
                from core.anomaly.pipeline import store_result
                self.bench.tasks.call(store_result, proj, mid, res, pool="db", name="store anomalies").on_error(
                    lambda e: self.bench.show_error(f"Could not store the anomaly results: {describe(e)}"))
            self.pass_finished.emit(res)

        def failed(e) -> None:
            self.run_btn.setEnabled(True)
            self.info.setText("")
            self.bench.show_error(f"Anomaly detection failed: {describe(e)}")

        def cancelled() -> None:
            self.run_btn.setEnabled(True)
            self.info.setText("cancelled: the previous results and model are kept")

        self.bench.tasks.run(detect_anomalies, req, pool="compute", name="anomalies", key="anomalies").on_partial(
            partial).on_done(done).on_error(failed).on_cancel(cancelled)

    def show_result(self, res) -> None:
        from core.anomaly.events import events_track, score_track
        from core.anomaly.pipeline import experts_tracks, objects_track
        self.result = res
        self.session.timeline.set_track(score_track(res.curve))
        for tr in experts_tracks(res.curve, res.model):
            self.session.timeline.set_track(tr)
        boxes = objects_track(res) if res.objects else None
        if boxes is not None:  # the evidence on screen: the event's object box at its time
            self.session.timeline.set_track(boxes)
        if res.confusions is not None:
            self.set_confusions(res.confusions)
        self._set_events(res.events)
        notes = "".join(f"\n• {n.rstrip('.')}." for n in res.notes)
        self.info.setText(f"{len(res.events)} events (threshold {res.threshold:.2f}) in {res.compute_s:.1f} s.{notes}")
        self.session.timeline.set_track(events_track(res.events))

    def show_stored(self, events) -> None:
        """A file was opened: list its events stored by the last pass (with their verdicts),
        or none, so replay and feedback never act on another file's events."""
        self.result = None
        self._set_events(events)
        n = len(events)
        self.info.setText(f"{n} event{'s' if n != 1 else ''} stored by the last pass over this file; "
                          f"Find anomalies runs a new one." if n else "")
        self.refresh_confusions()

    # -- the scene's confusions -------------------------------------------------------------
    def refresh_confusions(self) -> None:
        """Read the scene's stored confusions (database worker) and list them."""
        proj = self.bench.project()
        if proj is None:
            self.set_confusions(None)
            return
        from core.perception.confirm import load_confusions
        self.bench.tasks.call(load_confusions, proj, self.SCENE, pool="db", name="load scene confusions").on_done(
            self.set_confusions).on_error(lambda e: log.warning("could not read the scene's confusions: %s", e))

    def set_confusions(self, sc) -> None:
        self.confusions = sc
        entries = list(sc.entries) if sc is not None else []
        self.confusion_list.blockSignals(True)
        self.confusion_list.clear()
        for k, c in enumerate(entries):
            it = QListWidgetItem(c.describe())
            it.setData(Qt.ItemDataRole.UserRole, k)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if c.suppressed else Qt.CheckState.Unchecked)
            self.confusion_list.addItem(it)
        self.confusion_list.blockSignals(False)
        n = sum(c.suppressed for c in entries)
        self.confusion_label.setText(f"Scene confusions ({n} of {len(entries)} suppressed: not counted as "
                                     "objects; untick to restore)")
        self.confusion_label.setVisible(bool(entries))
        self.confusion_list.setVisible(bool(entries))
        self.confusions_changed.emit(sc)

    def set_confusion_suppressed(self, row: int, suppressed: bool) -> None:
        """Suppress or restore the listed confusion ``row`` and store the list (undoable both ways)."""
        sc = self.confusions
        if sc is None or not 0 <= row < len(sc.entries):
            return
        c = sc.entries[row]
        (sc.suppress if suppressed else sc.restore)(c.label, c.box)
        proj = self.bench.project()
        if proj is not None and not proj.read_only:
            from core.perception.confirm import save_confusions
            self.bench.tasks.call(save_confusions, proj, sc, self.SCENE, pool="db", name="store scene confusions"
                                  ).on_error(lambda e: self.bench.show_error(
                                      f"Could not store the scene's confusions: {describe(e)}"))
        self.set_confusions(sc)

    def _on_confusion(self, it: QListWidgetItem) -> None:
        self.set_confusion_suppressed(int(it.data(Qt.ItemDataRole.UserRole)),
                                      it.checkState() == Qt.CheckState.Checked)

    def _on_sensitivity(self, v: int) -> None:
        if self.result is None:
            return
        from core.anomaly.events import events_track, rethreshold
        from core.anomaly.evidence import annotate_events
        self.events = rethreshold(self.result.curve, self.result.events, v / 100.0)
        annotate_events(self.events, self.result.objects, self.result.curve.window_s)
        self._set_events(self.events)
        self.session.timeline.set_track(events_track(self.events))

    def _set_events(self, events) -> None:
        self.events = list(events)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.events))
        for r, ev in enumerate(self.events):
            icon = QTableWidgetItem()
            if ev.thumbnail is not None:
                img = ev.thumbnail
                h, w = img.shape[:2]
                q = QImage(img.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()
                icon.setIcon(QIcon(QPixmap.fromImage(q)))
            icon.setData(Qt.ItemDataRole.UserRole, r)
            cells = [icon, _num(timecode(ev.start), ev.start), _num(f"{ev.peak:.2f}", ev.peak),
                     _why(ev),
                     QTableWidgetItem(ev.feedback or "")]
            for c, it in enumerate(cells):
                it.setData(Qt.ItemDataRole.UserRole, r)
                self.table.setItem(r, c, it)
        self.table.setSortingEnabled(True)
        self.table.sortItems(2, Qt.SortOrder.DescendingOrder)

    def _row_event(self, row: int):
        it = self.table.item(row, 0)
        return None if it is None else self.events[int(it.data(Qt.ItemDataRole.UserRole))]

    # -- replay --------------------------------------------------------------------------
    def replay_row(self, row: int) -> None:
        ev = self._row_event(row)
        if ev is not None:
            self.replay(ev)

    def replay(self, ev) -> None:
        """Jump to the event with context, show its span, and loop it."""
        s = self.session
        a, b = max(0.0, ev.start - CONTEXT_S), min(s.duration, ev.end + CONTEXT_S)
        s.set_view(a - (b - a) * 0.5, b + (b - a) * 0.5)
        s.loop_range = (a, b)
        s.seek(a)
        s.playing = True

    def step_event(self, direction: int) -> None:
        if not self.events:
            return
        evs = sorted(self.events, key=lambda e: e.start)
        t = self.session.position
        nxt = [e for e in evs if e.start > t + CONTEXT_S + 0.01] if direction > 0 else \
            [e for e in evs if e.start < t + CONTEXT_S - 0.01]
        if nxt:
            self.replay(nxt[0] if direction > 0 else nxt[-1])

    def feedback(self, verdict: str) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        proj, mid = self.bench.project(), self.session.media_id
        for r in rows:
            ev = self._row_event(r)
            if ev is None:
                continue
            ev.feedback = verdict
            self.table.item(r, 4).setText(verdict)
            if proj is not None and mid is not None and not proj.read_only:
                from core.anomaly.events import set_feedback
                self.bench.tasks.call(set_feedback, proj, mid, ev, verdict, pool="db", name="feedback").on_error(
                    lambda e: self.bench.show_error(f"Could not store the feedback: {describe(e)}"))

    # -- export --------------------------------------------------------------------------
    def choose_export(self) -> None:
        if not self.events:
            return
        d = QFileDialog.getExistingDirectory(self, "Export events to")
        if d:
            self.export_to(d)

    def export_to(self, folder: str):
        from core.anomaly.export import export_events
        return self.bench.tasks.call(export_events, self.session.info.path, list(self.events), folder, pool="io",
                                     name="export events").on_done(
            lambda files: self.bench.show_status(f"exported {len(files)} files to {folder}", 8000)).on_error(
            lambda e: self.bench.show_error(f"Export failed: {describe(e)}"))

    # -- live ----------------------------------------------------------------------------
    def choose_evidence(self) -> None:
        ev = self._row_event(self.table.currentRow()) if self.table.currentRow() >= 0 else None
        if ev is None:
            self.bench.show_status("select an event first", 5000)
            return
        d = QFileDialog.getExistingDirectory(self, "Evidence package: the folder to put it in")
        if d:
            self.package_event(ev, d)

    def package_event(self, ev, folder: str):
        """Write the evidence package of the stored event ``ev`` into a new folder in ``folder``."""
        from core.handoff.jobs import EventRequest, event_job

        project = self.bench.project()
        if project is None or self.session.info is None:
            self.bench.show_status("the event's evidence needs the project it is stored in", 6000)
            return None
        req = EventRequest(project, self.session.info.path, ev.id, folder)
        return self.bench.tasks.run(event_job, req, pool="io", name="evidence package").on_done(
            lambda res: self.bench.show_status(res.summary, 10000)).on_error(
            lambda e: self.bench.show_error(f"Evidence package failed: {describe(e)}"))

    def _toggle_live(self, on: bool) -> None:
        live = self.bench.live
        if self.monitor is not None and self.monitor in live.processors:
            live.processors.remove(self.monitor)
        self.monitor = None
        if on:
            from core.anomaly.events import LiveMonitor
            from core.anomaly.features import FeatureConfig
            try:
                self.monitor = LiveMonitor.create(FeatureConfig(window_s=0.5), has_video=True, has_audio=True,
                                                  sensitivity=self.sens.value() / 100.0)
            except Exception as e:
                self.bench.show_error(f"Live anomaly detection cannot start: {describe(e)}")
                self.live_btn.setChecked(False)
                return
            live.processors.append(self.monitor)
            self.info.setText(f"live: {self.monitor.status}. " + " ".join(self.monitor.notes)
                              + (" Restart the stream to apply." if live.running else ""))

    def on_live_event(self, payload, t: float) -> None:
        """A processor event from the live worker (UI thread)."""
        if not (isinstance(payload, tuple) and len(payload) == 2):
            return
        kind, ev = payload
        if kind != "opened":
            return
        self.banner.setText(f"⚠ {timecode(ev.start)}  {ev.label}  (score {ev.peak:.2f})")
        self.banner.show()
        self.events.append(ev)
        self._set_events(self.events)
        self.alert.emit(ev)
        from core.anomaly.export import live_record_folder
        from core.media.live import record_clip
        proj = self.bench.project()
        folder = live_record_folder(proj.path if proj is not None else None)
        name = f"event-{time.strftime('%Y%m%d-%H%M%S')}-{int(ev.start)}s.mp4"
        # on the I/O worker: waits until the stream has passed the end, so the clip has its tail
        self.bench.tasks.call(record_clip, self.bench.live.ring, ev.start - 5.0, ev.start + 5.0, folder / name,
                              pool="io", name="record event").on_error(
            lambda e: log.warning("could not record the event clip: %s", e))


def _why(ev) -> QTableWidgetItem:
    it = QTableWidgetItem(f"{ev.modality}: {ev.label}")
    it.setToolTip("\n".join(f"{r.modality} · {r.cue}: {r.text}" for r in ev.reasons))
    return it


def _num(text: str, value: float) -> QTableWidgetItem:
    """Fixed-width text (hh:mm:ss.mmm, 0.00) sorts like the number it shows."""
    return QTableWidgetItem(text)
