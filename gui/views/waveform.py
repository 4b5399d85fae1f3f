"""The audio waveform (pyqtgraph): envelope from the peak pyramid, samples when zoomed in."""
from __future__ import annotations

import logging
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget

from core.session import MediaSession
from core.timefmt import timecode
from core.media.waveform import PeakPyramid, read_samples
from gui.tasks import TaskManager
from gui.views.timeline import HEADER_W

log = logging.getLogger(__name__)

WAVE_COLOR = (92, 184, 160)
APPROX_COLOR = (92, 184, 160, 110)
PLAYHEAD_COLOR = (235, 87, 87)


class TimeAxis(pg.AxisItem):
    """Tick labels in h:mm:ss (and milliseconds when zoomed in)."""

    def tickStrings(self, values, scale, spacing):
        out = []
        for v in values:
            s = timecode(max(0.0, v))
            s = s[3:] if s.startswith("00:") else s
            out.append(s if spacing < 1 else s[:-4])
        return out


class WaveformView(QWidget):
    """Watches the session: draws its waveform, follows its view range and playhead."""

    def __init__(self, session: MediaSession, tasks: TaskManager, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.tasks = tasks
        self.per_channel = False
        self._pyr: PeakPyramid | None = None
        self._syncing = False
        self._samples: tuple[float, float, int, np.ndarray] | None = None

        self.plot = pg.PlotWidget(axisItems={"bottom": TimeAxis("bottom")}, background=(24, 26, 30))
        self.plot.setMinimumHeight(90)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=False, alpha=0.15)
        # the plot starts where the timeline's tracks start, so both time axes line up
        self.plot.getAxis("left").setWidth(HEADER_W)
        self.plot.getPlotItem().layout.setContentsMargins(0, 4, 0, 0)
        self.plot.getAxis("left").setTicks([[(-1, "-1"), (0, "0"), (1, "1")]])
        vb = self.plot.getViewBox()
        vb.setMouseEnabled(x=True, y=False)
        vb.setYRange(-1.05, 1.05, padding=0)
        self.vb = vb
        self.curves: list[pg.PlotCurveItem] = []
        self.playhead = pg.InfiniteLine(pos=0, angle=90, movable=True,
                                        pen=pg.mkPen(PLAYHEAD_COLOR, width=2),
                                        hoverPen=pg.mkPen((255, 140, 140), width=3))
        self.playhead.setZValue(10)
        self.plot.addItem(self.playhead)
        self.label = pg.TextItem("", color=(170, 170, 180), anchor=(0, 0))
        self.label.setParentItem(vb)
        self.label.setPos(6, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(15)
        self._redraw_timer.timeout.connect(self.redraw)

        vb.sigXRangeChanged.connect(self._on_range_changed)
        self.playhead.sigDragged.connect(lambda line: session.seek(line.value()))
        self.plot.scene().sigMouseClicked.connect(self._on_click)
        session.events.media_changed.connect(self._on_media)
        session.events.waveform_changed.connect(self._on_waveform)
        session.events.position_changed.connect(self._on_position)
        session.events.view_changed.connect(self._on_view)

    # -- session events ------------------------------------------------------------------
    def _on_media(self, info) -> None:
        self._pyr = None
        self._samples = None
        self._set_rows(0)
        if info is None:
            self.label.setText("")
        elif not info.has_audio:
            self.label.setText("No audio track in this file")
        else:
            self.label.setText("reading audio…")
        dur = self.session.duration
        dur = dur if math.isfinite(dur) and dur > 1e-3 else 1e-3
        self._syncing = True
        self.vb.setLimits(xMin=0, xMax=dur, minXRange=1e-3)
        self.vb.setXRange(0, dur, padding=0)
        self._syncing = False

    def _on_waveform(self, pyr: PeakPyramid | None) -> None:
        self._pyr = pyr
        if pyr is None:
            return
        if pyr.approximate:
            self.label.setText("quick overview — exact peaks are being computed…")
        elif not pyr.complete:
            self.label.setText(f"computing peaks… {timecode(pyr.duration)}")
        else:
            a = self.session.info.audio if self.session.info else None
            self.label.setText(f"{a.codec} {a.sample_rate} Hz, {a.channels} ch" if a else "")
        self.redraw()

    def _on_position(self, t: float) -> None:
        if not self.playhead.moving:
            self.playhead.setValue(t)
        if self.session.playing:
            t0, t1 = self.session.view
            if t > t1 or t < t0:  # page along with playback
                span = t1 - t0
                self.session.set_view(t - 0.1 * span, t + 0.9 * span)

    def _on_view(self, t0: float, t1: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.vb.setXRange(t0, t1, padding=0)
        finally:
            self._syncing = False
        self._redraw_timer.start()

    def _on_range_changed(self, _vb, rng) -> None:
        if not self._syncing:
            self._syncing = True
            try:
                self.session.set_view(*rng)
            finally:
                self._syncing = False
        self._redraw_timer.start()

    def _on_click(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or self.session.info is None:
            return
        p = self.vb.mapSceneToView(ev.scenePos())
        self.session.seek(p.x())

    def set_per_channel(self, on: bool) -> None:
        self.per_channel = bool(on)
        self.redraw()

    # -- drawing -------------------------------------------------------------------------
    def _rows(self) -> list[int]:
        pyr = self._pyr
        if pyr is None:
            return []
        return list(range(pyr.channels)) if self.per_channel and pyr.channels > 1 else [-1]

    def _set_rows(self, n: int) -> None:
        while len(self.curves) > n:
            self.plot.removeItem(self.curves.pop())
        while len(self.curves) < n:
            c = pg.PlotCurveItem(pen=pg.mkPen(WAVE_COLOR, width=1))
            self.plot.addItem(c)
            self.curves.append(c)
        self.vb.setYRange(-1.05 - 2.1 * (max(n, 1) - 1), 1.05, padding=0)

    def redraw(self) -> None:
        pyr = self._pyr
        rows = self._rows()
        self._set_rows(len(rows))
        if pyr is None or not pyr.levels:
            return
        t0, t1 = self.vb.viewRange()[0]
        width = max(50, int(self.vb.width()))
        spp = (t1 - t0) * pyr.sample_rate / width
        level = pyr.level_for(spp) if not pyr.approximate else 0
        pen = pg.mkPen(APPROX_COLOR if pyr.approximate else WAVE_COLOR, width=1)
        if level < 0:
            self._draw_samples(rows, t0, t1)
            return
        margin = 0.25 * (t1 - t0)
        for i, (row, curve) in enumerate(zip(rows, self.curves)):
            times, mins, maxs = pyr.window(level, t0 - margin, t1 + margin, row)
            off = -2.1 * i
            x = np.repeat(times, 2)
            y = np.empty(2 * len(times), np.float32)
            y[0::2], y[1::2] = mins + off, maxs + off
            curve.setPen(pen)
            curve.setData(x, y, connect="pairs")

    def _draw_samples(self, rows: list[int], t0: float, t1: float) -> None:
        s = self._samples
        if s is not None and s[0] <= t0 and s[1] >= t1:
            a0, _a1, sr, x = s
            for i, (row, curve) in enumerate(zip(rows, self.curves)):
                y = x[row] - 2.1 * i
                curve.setPen(pg.mkPen(WAVE_COLOR, width=1))
                curve.setData(a0 + np.arange(len(y)) / sr, y, connect="all")
            return
        info = self.session.info
        if info is None:
            return
        span = t1 - t0
        req = (info.path, max(0.0, t0 - span), t1 + span)
        self.tasks.run(read_samples, req, pool="io", name="read samples", key="waveform-samples",
                       visible=False).on_done(self._on_samples).on_error(
            lambda e: log.warning("reading samples failed: %s", e))

    def _on_samples(self, result) -> None:
        info = self.session.info
        if info is None:
            return
        self._samples = result
        self.redraw()
