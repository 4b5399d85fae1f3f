"""The chat self-test window: accuracy against kbps, so the analyst sees where their model stops coping.

The run is :func:`core.chat.selftest.selftest_job` (questions with known answers on real
clips, answered from the machine stream at each rung of a bitrate ladder and from the
uncompressed frames), preceded by perception over the clips, as one job on the compute
worker. Each answered question arrives as a partial result, so the plot fills in as it runs;
cancelling keeps the points so far. The plot is accuracy (%) against kbps (log scale) per
rung, with the accuracy from the uncompressed frames and the human-quality H.264 bitrate of
each clip as references; the table lists the questions in the order they broke, with the
ones that need reading text flagged (text is the first thing to break at a low bitrate).
"""
from __future__ import annotations

import html
import logging
import math
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QHBoxLayout, QHeaderView, QLabel,
                               QProgressBar, QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from core.chat.selftest import (LADDER, QUESTIONS, UNCOMPRESSED, QA, BackendLoaded, Clip, ClipsReady, RungResult,
                                SelfTestJob, SelfTestPartial, SelfTestReport, breaking_order, selftest_job)
from core.errors import describe

log = logging.getLogger(__name__)

ALL_COLOR, TEXT_COLOR, BASE_COLOR, HUMAN_COLOR = (97, 175, 239), (229, 192, 123), (152, 195, 121), (224, 108, 117)

#: What a run covers: (title, clips, indices into LADDER).
PRESETS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    "quick": ("Quick: bus and sign clips, 3 rungs (a minute or two)", ("bus", "sign"), (0, 2, 5)),
    "full": ("Full: Sintel, bus and sign clips, every rung (several minutes)", ("sintel", "bus", "sign"),
             tuple(range(len(LADDER)))),
}


# -- the window ---------------------------------------------------------------------------------

class KbpsAxis(pg.AxisItem):
    """A log axis labelled 1, 2, 5, 10, 20, 50… kbps (pyqtgraph's own crowds 2·10¹ 3·10¹ …)."""

    def logTickValues(self, minVal, maxVal, size, stdTicks):
        lo, hi = math.floor(minVal), math.ceil(maxVal)
        major = [float(d) for d in range(lo, hi + 1) if minVal <= d <= maxVal]
        minor = [d + math.log10(m) for d in range(lo, hi + 1) for m in (2, 5) if minVal <= d + math.log10(m) <= maxVal]
        return [(1.0, major), (None, minor)]

    def logTickStrings(self, values, scale, spacing):
        return [f"{10 ** v:,.0f}" if 10 ** v >= 1 else f"{10 ** v:.2g}" for v in values]


class SelfTestView(QDialog):
    """Signals: ``points_changed(points)`` — [(rung, kbps, accuracy %)] as plotted;
    ``report_ready(report)``; ``run_ended(how)`` — "done", "cancelled" or "failed: …";
    ``backend_loaded((key, backend))`` when the run loaded the model itself."""

    points_changed = Signal(list)
    report_ready = Signal(object)
    run_ended = Signal(str)
    backend_loaded = Signal(object)

    def __init__(self, tasks, *, folder: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Chat self-test: accuracy against bitrate")
        self.resize(980, 720)
        self.tasks = tasks
        self.folder = folder
        self.task = None
        self.report: SelfTestReport | None = None
        self.backend: Any = None
        self.backend_key: tuple[str, str, str] = ("local", "", "")
        self.prepared: dict[str, Clip] = {}  # perceived clips, reused by the next run
        self.plotted: list[tuple[str, float, float]] = []
        self._rungs: dict[str, RungResult] = {}
        self._ladder: dict[str, Any] = {}
        self._base: RungResult | None = None

        self.model_label = QLabel("")
        self.preset = QComboBox()
        for key, (title, _c, _l) in PRESETS.items():
            self.preset.addItem(title, key)
        self.run_btn = QPushButton("Run self-test")
        self.run_btn.clicked.connect(lambda: self.run())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(10)
        self.status = QLabel("Questions with known answers on real clips, asked from the stream at each bitrate.")
        self.status.setWordWrap(True)

        self.plot = pg.PlotWidget(background=(24, 26, 30), axisItems={"bottom": KbpsAxis("bottom")})
        self.plot.setLogMode(x=True, y=False)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setLabel("bottom", "stream to the model (kbps, log scale)")
        self.plot.setLabel("left", "answered right (%)")
        self.plot.setYRange(-4, 112, padding=0)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.addLegend(offset=(10, -10), labelTextColor=(200, 200, 206))  # bottom left: clear of the points
        self.curve = self.plot.plot([], [], pen=pg.mkPen(ALL_COLOR, width=2), symbol="o", symbolSize=9,
                                    symbolBrush=ALL_COLOR, symbolPen=None, name="all questions")
        self.text_curve = self.plot.plot([], [], pen=pg.mkPen(TEXT_COLOR, width=1.5, style=Qt.PenStyle.DashLine),
                                         symbol="t", symbolSize=9, symbolBrush=TEXT_COLOR, symbolPen=None,
                                         name="questions that need reading text")
        self._marks: list[Any] = []  # rung labels and reference lines, redrawn with the points

        self.warn = QLabel("")
        self.warn.setWordWrap(True)
        self.warn.setStyleSheet("color:#e5c07b")
        self.warn.setTextFormat(Qt.TextFormat.RichText)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["question, the first to break first", "reads text", "clip",
                                              "first wrong at", "the answer there"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        for c in range(4):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(24)

        top = QHBoxLayout()
        top.addWidget(self.model_label, 1)
        top.addWidget(self.preset)
        top.addWidget(self.run_btn)
        top.addWidget(self.cancel_btn)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.summary)
        ll.addWidget(self.warn)
        ll.addWidget(self.table, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plot)
        split.addWidget(lower)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([500, 250])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(split, 1)
        tasks.task_progress.connect(self._on_progress)

    # -- running -----------------------------------------------------------------------------
    def set_backend(self, backend: Any, key: tuple[str, str, str], title: str = "") -> None:
        """The model to test: loaded (``backend``) or to be loaded from ``key`` by the run."""
        if key != self.backend_key or backend is not None:
            self.backend = backend  # None with the same key: keep the one a run loaded
        self.backend_key = key
        self.model_label.setText(f"Model: <b>{html.escape(title or key[2] or key[0])}</b>")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.finished

    def run(self, *, clips: dict[str, Clip] | None = None, questions: Sequence[QA] | None = None,
            ladder: Sequence[tuple[str, Any]] | None = None, eyes: Any = None):
        """Start a run of the chosen preset (or of these ``clips``/``questions``/``ladder``)."""
        _title, names, rungs = PRESETS[self.preset.currentData()]
        if clips is not None:
            self.prepared.update(clips)
            names = tuple(clips)
        ladder = tuple(ladder if ladder is not None else (LADDER[i] for i in rungs))
        questions = tuple(q for q in (questions or QUESTIONS) if q.clip in names)
        req = SelfTestJob(self.backend, self.backend_key, self.folder, tuple(names), ladder, questions,
                          dict(self.prepared), eyes=eyes)
        self._clear(ladder)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText(f"{len(questions)} questions × {len(ladder) + 1} streams (uncompressed and "
                            f"{len(ladder)} rungs) on {', '.join(names)}…")
        self.task = self.tasks.run(selftest_job, req, pool="compute", name="chat self-test", key="chat-selftest")
        self.task.on_partial(self._on_partial).on_done(self._on_done).on_error(self._on_error).on_cancel(
            self._on_cancel)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _clear(self, ladder: Sequence[tuple[str, Any]]) -> None:
        self.report = None
        self._ladder = dict([UNCOMPRESSED, *ladder])
        self._rungs, self._base = {}, None
        self.progress.setValue(0)
        self.warn.setText("")
        self.summary.setText("")
        self._redraw()

    def _on_progress(self, task) -> None:
        if task is self.task:
            self.progress.setValue(int(task.progress * 1000))
            if task.text:
                self.status.setText(task.text)

    def _on_partial(self, p: Any) -> None:
        if isinstance(p, BackendLoaded):
            self.backend = p.backend
            self.backend_loaded.emit((p.key, p.backend))
        elif isinstance(p, ClipsReady):
            self.prepared.update(p.clips)
        elif isinstance(p, SelfTestPartial):
            rr = self._rungs.get(p.rung)
            if rr is None:
                rr = self._rungs[p.rung] = RungResult(p.rung, self._ladder.get(p.rung))
                if p.rung == UNCOMPRESSED[0]:
                    self._base = rr
            rr.results.append(p.result)
            self._redraw()

    def _ended(self, how: str, text: str) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.status.setText(text)
        self.run_ended.emit(how)

    def _on_done(self, report: SelfTestReport) -> None:
        self.progress.setValue(1000)
        self.show_report(report)
        self._ended("done", f"Done: {report.model}, {sum(len(r.results) for r in report.rungs)} answers from "
                            f"{len(report.rungs)} rungs, plus {len(report.baseline.results) if report.baseline else 0}"
                            " from the uncompressed frames.")
        self.report_ready.emit(report)

    def _on_error(self, e: BaseException) -> None:
        log.warning("chat self-test failed: %s", describe(e))
        self._ended(f"failed: {describe(e)}",
                    f"<span style='color:#e06c75'>The self-test failed: {html.escape(describe(e))}</span>")

    def _on_cancel(self) -> None:
        n = sum(len(r.results) for r in self._rungs.values())
        self._ended("cancelled", f"Cancelled after {n} answers; the points so far stay on the plot.")

    # -- showing -----------------------------------------------------------------------------
    def show_report(self, report: SelfTestReport) -> None:
        """Plot a finished report (also usable on a stored or headless one)."""
        self.report = report
        self._rungs = {r.name: r for r in report.rungs}
        self._base = report.baseline
        if report.baseline is not None:
            self._rungs[report.baseline.name] = report.baseline
        self._redraw()
        if report.warnings:
            self.warn.setText("<br>".join(f"⚠ {html.escape(w)}" for w in report.warnings))
        sat = report.saturation()
        if sat is not None:
            hk = sorted(k for k in report.human_kbps.values() if k > 0)
            span = f"{hk[0]:,.0f}" if len(hk) == 1 or hk[0] == hk[-1] else f"{hk[0]:,.0f}–{hk[-1]:,.0f}"
            share = f"; a human-quality H.264 stream of these clips costs {span} kbps" if hk else ""
            same = report.agreement(sat)
            same_txt = f"; {same:.0%} of its answers judged as from the uncompressed frames" \
                if not math.isnan(same) else ""
            self.summary.setText(f"Cheapest rung as accurate as the best: <b>{html.escape(sat.name)}</b> at "
                                 f"<b>{sat.kbps:.1f} kbps</b> ({sat.accuracy:.0%} right{share}){same_txt}.")

    def _ladder_rungs(self) -> list[RungResult]:
        return [r for r in self._rungs.values() if r is not self._base and r.results]

    def _redraw(self) -> None:
        for m in self._marks:
            self.plot.removeItem(m)
        self._marks = []
        rungs = sorted(self._ladder_rungs(), key=lambda r: r.kbps)
        rungs = [r for r in rungs if r.kbps > 0]
        self.plotted = [(r.name, r.kbps, 100 * r.accuracy) for r in rungs]
        xs = np.array([p[1] for p in self.plotted], float)
        self.curve.setData(xs, np.array([p[2] for p in self.plotted], float))
        txt = [(r.kbps, 100 * r.accuracy_of(True)) for r in rungs if not math.isnan(r.accuracy_of(True))]
        self.text_curve.setData(np.array([t[0] for t in txt], float), np.array([t[1] for t in txt], float))
        placed: list[tuple[float, float, float]] = []  # labels so far: x, y from, y to (data units)
        for name, k, acc in self.plotted:
            x = math.log10(k)
            # above the point unless that covers a neighbour's label (~0.25 decade wide, ~8 % high)
            spans = [(acc + 1, acc + 9), (acc - 9, acc - 1)]
            free = [sp for sp in spans if not any(abs(x - px) < 0.25 and sp[0] < b and a < sp[1]
                                                     for px, a, b in placed)]
            lo_hi = (free or spans)[0]
            placed.append((x, *lo_hi))
            self._mark(pg.TextItem(f"{name}\n{k:.1f} kbps", color=(190, 190, 200),
                                   anchor=(0.5, 1.15) if lo_hi == spans[0] else (0.5, -0.15)), (x, acc))
        lo, hi = (xs.min(), xs.max()) if len(xs) else (1.0, 100.0)
        if self._base is not None and self._base.results:
            acc = 100 * self._base.accuracy
            self._mark(pg.InfiniteLine(pos=acc, angle=0, pen=pg.mkPen(BASE_COLOR, width=1, style=Qt.PenStyle.DotLine),
                                       label=f"from the uncompressed frames: {acc:.0f} %",
                                       labelOpts={"position": 0.55, "color": BASE_COLOR, "anchors": [(0.5, 0), (0.5, 0)]}))
        human = dict(self.report.human_kbps) if self.report is not None else {}
        for i, (clip, k) in enumerate(sorted(human.items(), key=lambda kv: kv[1])):
            if k > 0:
                self._mark(pg.InfiniteLine(pos=math.log10(k), angle=90,
                                           pen=pg.mkPen(HUMAN_COLOR, width=1, style=Qt.PenStyle.DashLine),
                                           label=f"human-quality H.264, {clip}: {k:,.0f} kbps",
                                           labelOpts={"position": 0.30 + 0.12 * i, "color": HUMAN_COLOR,
                                                      "rotateAxis": (1, 0), "anchors": [(0.5, 1), (0.5, 1)]}))
                lo, hi = min(lo, k), max(hi, k)
        self.plot.setXRange(math.log10(lo) - 0.25, math.log10(hi) + 0.25, padding=0)
        self._fill_table()
        self.points_changed.emit(list(self.plotted))

    def _mark(self, item: Any, pos: tuple[float, float] | None = None) -> None:
        if pos is not None:
            item.setPos(*pos)
        self.plot.addItem(item)
        self._marks.append(item)

    def _fill_table(self) -> None:
        rows = breaking_order(self._ladder_rungs(), self._base)
        self.broke = rows
        self.table.setRowCount(len(rows))
        for i, b in enumerate(rows):
            where = {"broke": f"{b.rung} ({b.kbps:.1f} kbps)", "held": "held at every rung",
                     "never": "wrong even uncompressed"}[b.status]
            cells = [b.qa.question, "⚠ yes" if b.qa.needs_text else "", b.qa.clip, where,
                     " ".join(b.answer.split())[:200]]
            for c, text in enumerate(cells):
                it = QTableWidgetItem(text)
                it.setToolTip(b.answer if c == 4 else ("Reading text is the first thing to break at a low bitrate."
                                                       if c == 1 and text else text))
                if b.qa.needs_text:
                    it.setForeground(QColor(*TEXT_COLOR))
                elif b.status == "held":
                    it.setForeground(QColor(150, 150, 158))
                self.table.setItem(i, c, it)

