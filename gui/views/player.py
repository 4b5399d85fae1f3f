"""The player: the frame at the playhead, transport controls and the time display."""
from __future__ import annotations

import logging
import math
import time

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QSizePolicy, QSlider, QStyle, QToolButton, QVBoxLayout,
                               QWidget)

from core.media.decode import Frame
from core.perception.overlay import OverlayModel
from core.session import MediaSession
from core.timefmt import timecode
from gui.tasks import FrameFetcher
from gui.views.timeline import label_color

log = logging.getLogger(__name__)

CITED = QColor(255, 196, 0)  # the boxes a chat answer cites


class FrameCanvas(QWidget):
    """Paints one RGB frame, letterboxed, and a message when there is no picture."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._image: QImage | None = None
        self._boxes: list = []
        self._message = "Open a video: File ▸ Open Media…, drop a file here, or Ctrl+O"
        self.setMinimumSize(320, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def set_frame(self, img: np.ndarray | None) -> None:
        if img is None:
            self._image = None
        else:
            h, w, _ = img.shape
            self._image = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.update()

    def set_boxes(self, boxes: list) -> None:
        if boxes != self._boxes:
            self._boxes = boxes
            self.update()

    @property
    def boxes(self) -> list:
        """The boxes drawn over the picture now (core.perception.overlay.OverlayBox)."""
        return list(self._boxes)

    def set_message(self, text: str) -> None:
        self._message = text
        self.update()

    def has_image(self) -> bool:
        return self._image is not None

    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(12, 12, 14))
        if self._image is not None:
            iw, ih = self._image.width(), self._image.height()
            s = min(self.width() / iw, self.height() / ih)
            w, h = iw * s, ih * s
            target = QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(target, self._image)
            self._paint_boxes(p, target)
        elif self._message:
            p.setPen(QColor(150, 150, 160))
            f = QFont(self.font())
            f.setPointSizeF(f.pointSizeF() * 1.1)
            p.setFont(f)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
        p.end()


    def _paint_boxes(self, p: QPainter, target: QRectF) -> None:
        if not self._boxes:
            return
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.9))
        p.setFont(f)
        fm = p.fontMetrics()
        for b in self._boxes:
            unconfirmed = b.confirmed is False  # core.perception.confirm: kept, shown greyed, never a fact
            cited = getattr(b, "cited", False)  # a chat answer's evidence: amber, thick, on a dark halo
            truth = getattr(b, "truth", False)  # an imported ground truth: white, dotted, no score
            color = (QColor(150, 150, 158) if unconfirmed else CITED if cited else QColor(235, 235, 235) if truth
                     else label_color(b.label))
            r = QRectF(target.x() + b.x1 * target.width(), target.y() + b.y1 * target.height(),
                       (b.x2 - b.x1) * target.width(), (b.y2 - b.y1) * target.height())
            if cited:
                p.setPen(QPen(QColor(0, 0, 0, 170), 5))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRect(r)
            pen = QPen(color, (2.5 if cited else 1.5) if unconfirmed else (3 if cited else 2))
            if unconfirmed or truth:
                pen.setStyle(Qt.PenStyle.DotLine if truth else Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(r)
            text = b.caption if truth else f"{b.caption} {b.score:.2f}" + (f" #{b.track}" if b.track is not None else "")
            tw, th = fm.horizontalAdvance(text) + 6, fm.height() + 2
            ty = r.top() - th if r.top() - th >= target.top() else r.top()
            bg = QColor(color)
            bg.setAlpha(140 if unconfirmed else 200)
            p.fillRect(QRectF(r.left(), ty, tw, th), bg)
            p.setPen(QColor(10, 10, 12))
            p.drawText(QRectF(r.left() + 3, ty, tw, th), Qt.AlignmentFlag.AlignVCenter, text)


class PlayerView(QWidget):
    """Shows the session's playhead frame and drives playback at the real rate.

    The frame for each position is requested from the :class:`FrameFetcher` (decoding
    never runs here); only the newest request's answer is shown. ``frame_shown(t)`` is
    emitted when a decoded frame reaches the screen.
    """

    frame_shown = Signal(float)

    def __init__(self, session: MediaSession, fetcher: FrameFetcher, overlay: OverlayModel | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.overlay = overlay
        self.fetcher = fetcher
        self._want = 0  # id of the newest frame request
        self._shown: Frame | None = None
        self._clock_start = 0.0
        self._clock_pos = 0.0
        self._slider_busy = False
        self.live = False

        self.canvas = FrameCanvas(self)
        self.timer = QTimer(self)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

        SP = QStyle.StandardPixmap
        self._icons = {"play": self.style().standardIcon(SP.SP_MediaPlay),
                       "pause": self.style().standardIcon(SP.SP_MediaPause)}
        self.btn_start = self._button(SP.SP_MediaSkipBackward, "Go to start (Home)", lambda: session.seek(0))
        self.btn_back = self._button(SP.SP_MediaSeekBackward, "Previous frame (←)", lambda: session.step(-1))
        self.btn_play = self._button(SP.SP_MediaPlay, "Play / pause (Space)", self.toggle_play)
        self.btn_fwd = self._button(SP.SP_MediaSeekForward, "Next frame (→)", lambda: session.step(1))
        self.btn_end = self._button(SP.SP_MediaSkipForward, "Go to end (End)",
                                    lambda: session.seek(session.last_time()))
        self.time_label = QLabel("00:00:00.000 / 00:00:00.000")
        self.time_label.setFont(QFont("monospace"))
        self.time_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.frame_label = QLabel("frame —")
        self.frame_label.setFont(QFont("monospace"))
        self.rate_label = QLabel("")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Scrub")
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.valueChanged.connect(self._on_slider)

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        for b in (self.btn_start, self.btn_back, self.btn_play, self.btn_fwd, self.btn_end):
            bar.addWidget(b)
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.time_label)
        bar.addSpacing(8)
        bar.addWidget(self.frame_label)
        bar.addWidget(self.rate_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.canvas, 1)
        lay.addLayout(bar)

        fetcher.frame_ready.connect(self._on_frame)
        fetcher.frame_failed.connect(self._on_frame_failed)
        session.events.media_changed.connect(self._on_media)
        session.events.position_changed.connect(self._on_position)
        session.events.playing_changed.connect(self._on_playing)
        session.events.rate_changed.connect(lambda r: self._on_playing(session.playing))
        session.events.frame_times_changed.connect(lambda: self._update_labels(session.position))
        if overlay is not None:
            overlay.events.changed.connect(self.refresh_overlay)
            session.timeline.events.tracks_changed.connect(self.refresh_overlay)
            session.timeline.events.items_added.connect(lambda _t: self.refresh_overlay())

    def _button(self, icon, tip: str, slot) -> QToolButton:
        b = QToolButton(self)
        b.setIcon(self.style().standardIcon(icon))
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        b.clicked.connect(slot)
        return b

    # -- session events ------------------------------------------------------------------
    def _on_media(self, info) -> None:
        self.live = False
        self._shown = None
        self.canvas.set_frame(None)
        self.canvas.set_boxes([])
        self.slider.blockSignals(True)
        dur = self.session.duration if info and math.isfinite(self.session.duration) else 0.0
        # one step per millisecond while that fits the slider's int range (24 days), coarser beyond
        self._unit = max(0.001, dur / 2_000_000_000)
        self.slider.setRange(0, int(max(0.0, dur) / self._unit))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        if info is None:
            self.canvas.set_message("Open a video: File ▸ Open Media…, drop a file here, or Ctrl+O")
        elif not info.has_video:
            self.canvas.set_message(f"{info.path.rsplit('/', 1)[-1]}\n\naudio only — see the waveform below")
        else:
            self.canvas.set_message("decoding…")
            self._request(0.0)
        self._update_labels(0.0)

    def _on_position(self, t: float) -> None:
        self._update_labels(t)
        if not self._slider_busy:
            self.slider.blockSignals(True)
            self.slider.setValue(int(min(max(t, 0.0), 2e9 * self._unit) / self._unit) if math.isfinite(t) else 0)
            self.slider.blockSignals(False)
        if self.session.playing and not self._clock_driven:
            # a seek during playback restarts the clock from there
            self._clock_start, self._clock_pos = time.monotonic(), t
        sh = self._shown
        if sh is not None and sh.time <= t < sh.end:
            return  # already on screen
        self._request(t)

    _clock_driven = False
    _unit = 0.001  # seconds per slider step

    def _request(self, t: float) -> None:
        info = self.session.info
        if info is not None and info.has_video:
            self._want = self.fetcher.request(info.path, t)

    def _on_frame(self, rid: int, frame: Frame) -> None:
        if rid != self._want:
            return  # stale: the playhead has moved on
        self._shown = frame
        self.canvas.set_frame(frame.image)
        self.session.frame_duration = frame.duration
        self.refresh_overlay()
        self.frame_shown.emit(frame.time)

    def show_live(self, t: float, image) -> None:
        """A frame from a camera or stream (live mode: no seeking, the clock is the stream's)."""
        self.live = True
        self.canvas.set_frame(image)
        self.time_label.setText(f"LIVE {timecode(t)}")
        self.frame_label.setText("")
        self.frame_shown.emit(t)

    def refresh_overlay(self) -> None:
        if self.overlay is None:
            return
        t = self._shown.time if self._shown is not None else self.session.position
        self.canvas.set_boxes(self.overlay.boxes_at(t))

    def _on_frame_failed(self, rid: int, message: str) -> None:
        if rid == self._want:
            self.canvas.set_frame(None)
            self.canvas.set_message(f"Cannot show this frame:\n{message}")

    def _on_slider(self, value: int) -> None:
        self._slider_busy = True
        try:
            self.session.seek(value * self._unit)
        finally:
            self._slider_busy = False

    def _update_labels(self, t: float) -> None:
        s = self.session
        self.time_label.setText(f"{timecode(t)} / {timecode(s.duration)}")
        if s.info is not None and s.info.has_video:
            total = len(s.frame_times) if s.frame_times is not None else None
            n = s.frame_number(t)
            self.frame_label.setText(f"frame {n}" + (f" / {total - 1}" if total else ""))
        else:
            self.frame_label.setText("")

    # -- playback ------------------------------------------------------------------------
    def toggle_play(self) -> None:
        s = self.session
        if s.info is None:
            return
        if s.playing:
            s.loop_range = None  # pausing ends an event loop
        if not s.playing and s.rate > 0 and s.position >= s.last_time() - 1e-3:
            s.seek(0.0)  # play from the start again, as players do
        s.playing = not s.playing

    def _on_playing(self, playing: bool) -> None:
        self.btn_play.setIcon(self._icons["pause" if playing else "play"])
        r = self.session.rate
        self.rate_label.setText("" if r == 1.0 else f"  {r:+g}×")
        if playing:
            self._clock_start, self._clock_pos = time.monotonic(), self.session.position
            self.timer.start()
        else:
            self.timer.stop()

    def _tick(self) -> None:
        s = self.session
        t = self._clock_pos + (time.monotonic() - self._clock_start) * s.rate
        loop = s.loop_range
        if loop is not None and s.rate > 0 and t >= loop[1]:
            # replaying an event: go round again from its start
            self._clock_start, self._clock_pos = time.monotonic(), loop[0]
            t = loop[0]
        end = s.last_time()
        stop = t >= end or t <= 0.0
        self._clock_driven = True
        try:
            s.seek(min(max(t, 0.0), end))
        finally:
            self._clock_driven = False
        if stop:
            s.playing = False
