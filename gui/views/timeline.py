"""The multi-track timeline: a ruler and one row per track, drawn from the track kinds' data.

Wheel zooms around the cursor (the waveform follows: they share the session's view),
drag pans, a click seeks, hovering an item shows its details.
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from core.session import MediaSession
from core.timefmt import timecode
from core.timeline import Item, Track

HEADER_W = 150
#: A track with more items in view than (pixels / DENSE_PX) is drawn as counts per DENSE_PX-wide column.
DENSE_PX = 3


def label_color(label: str) -> QColor:
    """A stable, distinct colour per class name (the player's boxes use the same)."""
    h = 0
    for ch in label:
        h = (h * 131 + ord(ch)) % 360
    return QColor.fromHsv(h, 170, 250)
RULER_H = 24
BG = QColor(24, 26, 30)
ROW_BG = (QColor(32, 34, 39), QColor(36, 38, 44))
TEXT = QColor(200, 200, 208)
DIM = QColor(120, 122, 130)
PLAYHEAD = QColor(235, 87, 87)

_STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300,
          600, 900, 1800, 3600, 7200]


def tick_step(span: float, pixels: int, min_px: int = 80) -> float:
    """Seconds between ruler ticks: the smallest step that leaves ``min_px`` between labels.
    Beyond two hours the steps go on in days, 10 days, 100 days… so that a ruler over any
    span draws a bounded number of ticks (a file may claim years)."""
    span = span if math.isfinite(span) and span > 0 else 1.0
    pixels = max(1, pixels)
    for s in _STEPS:
        if s / max(span, 1e-9) * pixels >= min_px:
            return s
    s = 86400.0
    while s / span * pixels < min_px:
        s *= 10
    return s


def tick_label(t: float, step: float) -> str:
    s = timecode(t)
    if s.startswith("00:"):
        s = s[3:]
    return s if step < 1 else s[:-4]


class TimelineView(QWidget):
    """Draws ``session.timeline``; emits ``item_activated(track, item)`` on double-click."""

    item_activated = Signal(object, object)

    def __init__(self, session: MediaSession, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.setMouseTracking(True)
        self.setMinimumHeight(RULER_H + 60)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._drag_from: tuple[float, float, float] | None = None  # x, t0, t1
        self.last_paint_mode: dict[tuple[str, str], str] = {}  # track key -> "items" | "counts" (tests)
        self._dragged = False
        tl = session.timeline
        tl.events.tracks_changed.connect(self._relayout)
        tl.events.items_added.connect(lambda _t: self.update())
        session.events.view_changed.connect(lambda *_: self.update())
        session.events.position_changed.connect(lambda _t: self.update())
        session.events.media_changed.connect(lambda _i: self._relayout())

    # -- geometry ------------------------------------------------------------------------
    def _rows(self) -> list[tuple[Track, float, float]]:
        y = RULER_H
        out = []
        for tr in self.session.timeline.tracks:
            if not tr.visible or tr.style.style == "hidden":
                continue
            h = tr.style.height
            out.append((tr, y, h))
            y += h + 1
        return out

    def _relayout(self) -> None:
        rows = self._rows()
        total = RULER_H + sum(h + 1 for _, _, h in rows)
        self.setMinimumHeight(max(RULER_H + 60, total + 4))
        self.update()

    def sizeHint(self):
        from PySide6.QtCore import QSize
        return QSize(800, max(120, self.minimumHeight()))

    def t_to_x(self, t: float) -> float:
        t0, t1 = self.session.view
        w = max(1, self.width() - HEADER_W)
        return HEADER_W + (t - t0) / max(t1 - t0, 1e-9) * w

    def x_to_t(self, x: float) -> float:
        t0, t1 = self.session.view
        w = max(1, self.width() - HEADER_W)
        return t0 + (x - HEADER_W) / w * (t1 - t0)

    def item_at(self, pos: QPointF) -> tuple[Track, Item] | None:
        for tr, y, h in self._rows():
            if y <= pos.y() < y + h:
                t = self.x_to_t(pos.x())
                tol = 4 * (self.session.view[1] - self.session.view[0]) / max(1, self.width() - HEADER_W)
                if tr.style.style != "curve" and self.is_dense(tr):
                    return None  # drawn as counts: zoom in to point at one item
                hits = tr.at(t, tol)
                if hits:
                    return tr, max(hits, key=lambda i: i.confidence)
                return None
        return None

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.fillRect(self.rect(), BG)
        self._paint_ruler(p)
        rows = self._rows()
        for n, (tr, y, h) in enumerate(rows):
            p.fillRect(QRectF(0, y, self.width(), h), ROW_BG[n % 2])
            self._paint_track(p, tr, y, h)
            p.setPen(TEXT)
            p.drawText(QRectF(8, y, HEADER_W - 12, h), Qt.AlignmentFlag.AlignVCenter,
                       f"{tr.style.title}: {tr.name}" if tr.name and tr.name.lower() != tr.style.title.lower()
                       and tr.name.lower() != tr.kind.rstrip("s") else tr.style.title)
        if not rows:
            p.setPen(DIM)
            msg = ("No tracks yet — analysis results (detections, speech, anomalies, shots…) appear here"
                   if self.session.info else "Timeline")
            p.drawText(QRectF(HEADER_W, RULER_H, self.width() - HEADER_W, self.height() - RULER_H),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, msg)
        p.setPen(QPen(QColor(60, 62, 70), 1))
        p.drawLine(HEADER_W, 0, HEADER_W, self.height())
        if self.session.info is not None:
            x = self.t_to_x(self.session.position)
            if HEADER_W <= x <= self.width():
                p.setPen(QPen(PLAYHEAD, 2))
                p.drawLine(QPointF(x, 0), QPointF(x, self.height()))
                tri = QPolygonF([QPointF(x - 6, 0), QPointF(x + 6, 0), QPointF(x, 8)])
                p.setBrush(PLAYHEAD)
                p.drawPolygon(tri)
        p.end()

    def _paint_ruler(self, p: QPainter) -> None:
        p.fillRect(QRectF(0, 0, self.width(), RULER_H), QColor(30, 32, 37))
        if self.session.info is None:
            return
        t0, t1 = self.session.view
        if not (math.isfinite(t0) and math.isfinite(t1)):
            return
        w = self.width() - HEADER_W
        step = tick_step(t1 - t0, w)
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.85))
        p.setFont(f)
        first = math.floor(t0 / step)
        for n in range(int(min((t1 - t0) / step + 3, 10_000))):  # bounded, whatever the span
            t = (first + n) * step
            if t > t1 + step:
                break
            x = self.t_to_x(t)
            if x >= HEADER_W:
                p.setPen(QPen(DIM, 1))
                p.drawLine(QPointF(x, RULER_H - 8), QPointF(x, RULER_H))
                p.setPen(TEXT)
                p.drawText(QPointF(x + 3, RULER_H - 10), tick_label(t, step))
        p.setPen(DIM)
        p.drawText(QRectF(8, 0, HEADER_W - 12, RULER_H), Qt.AlignmentFlag.AlignVCenter,
                   f"{timecode(t1 - t0)} shown")

    def is_dense(self, tr: Track) -> bool:
        """More items start in the view than there are DENSE_PX-wide columns: draw counts."""
        t0, t1 = self.session.view
        return tr.count_in(t0, t1) > max(1, self.width() - HEADER_W) / DENSE_PX

    def _paint_density(self, p: QPainter, tr: Track, y: float, h: float, color: QColor) -> None:
        """Items per DENSE_PX column as bars (height: the column's count against the busiest
        column in view, square-root scaled so a lone item still shows): read from the track's
        counts, never its items."""
        t0, t1 = self.session.view
        w = max(1, self.width() - HEADER_W)
        n = max(1, w // DENSE_PX)
        counts = tr.counts(t0, t1, n)
        top = float(counts.max()) if len(counts) else 0.0
        if top <= 0:
            return
        col = w / n
        p.setPen(Qt.PenStyle.NoPen)
        c = QColor(color)
        c.setAlphaF(0.85)
        p.setBrush(c)
        frac = np.sqrt(counts / top)
        for k in np.flatnonzero(counts > 0):
            bh = max(2.0, float(frac[k]) * (h - 4))
            p.drawRect(QRectF(HEADER_W + k * col, y + h - 2 - bh, max(1.0, col - 0.5), bh))
        self.last_paint_mode[tr.key] = "counts"

    def _paint_track(self, p: QPainter, tr: Track, y: float, h: float) -> None:
        t0, t1 = self.session.view
        kind = tr.style
        # "auto": one colour per class, the same as the boxes on the video
        color = label_color(tr.name) if kind.color == "auto" else QColor(kind.color)
        p.save()
        p.setClipRect(QRectF(HEADER_W, y, self.width() - HEADER_W, h))
        if kind.style != "curve" and self.is_dense(tr):
            self._paint_density(p, tr, y, h, color)
            p.restore()
            return
        self.last_paint_mode[tr.key] = "items"
        items = tr.in_range(t0, t1)
        if kind.style == "curve" and len(items) > 2 * (self.width() - HEADER_W):
            items = self._decimated(items, t0, t1)
        if kind.style == "heat":
            # one cell per item, brightness = confidence (e.g. FOCUS arms by their upper bound)
            p.setPen(Qt.PenStyle.NoPen)
            for it in items:
                c = QColor(color)
                c.setAlphaF(0.08 + 0.92 * max(0.0, min(1.0, it.confidence)))
                x0, x1 = self.t_to_x(it.start), self.t_to_x(it.end)
                p.fillRect(QRectF(x0, y + 2, max(1.0, x1 - x0 - 1), h - 4), c)
        elif kind.style == "curve" and items:
            path = QPainterPath()
            for n, it in enumerate(items):
                pt = QPointF(self.t_to_x(it.start), y + h - 2 - it.confidence * (h - 4))
                path.moveTo(pt) if n == 0 else path.lineTo(pt)
            p.setPen(QPen(color, 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
        else:
            p.setPen(Qt.PenStyle.NoPen)
            for it in items:
                c = QColor(color)
                c.setAlphaF(0.35 + 0.65 * max(0.0, min(1.0, it.confidence)))
                p.setBrush(c)
                x0 = self.t_to_x(it.start)
                if it.is_marker or kind.style == "markers":
                    p.drawPolygon(QPolygonF([QPointF(x0, y + 3), QPointF(x0 + 5, y + h / 2),
                                             QPointF(x0, y + h - 3), QPointF(x0 - 5, y + h / 2)]))
                else:
                    x1 = max(self.t_to_x(it.end), x0 + 2)
                    p.drawRoundedRect(QRectF(x0, y + 3, x1 - x0, h - 6), 3, 3)
                    if x1 - x0 > 40 and it.label:
                        p.setPen(QColor(15, 15, 18))
                        p.drawText(QRectF(x0 + 4, y, x1 - x0 - 6, h), Qt.AlignmentFlag.AlignVCenter, it.label)
                        p.setPen(Qt.PenStyle.NoPen)
        p.restore()

    def _decimated(self, items: list[Item], t0: float, t1: float) -> list[Item]:
        """A curve with more points than pixels: each pixel column's highest point, in order."""
        w = max(1, self.width() - HEADER_W)
        starts = np.fromiter((it.start for it in items), float, len(items))
        conf = np.fromiter((it.confidence for it in items), float, len(items))
        col = np.clip(((starts - t0) / max(t1 - t0, 1e-9) * w).astype(np.int64), -1, w)
        order = np.lexsort((-conf, col))
        first = order[np.concatenate([[True], col[order][1:] != col[order][:-1]])]
        return [items[i] for i in np.sort(first)]

    # -- interaction ---------------------------------------------------------------------
    def wheelEvent(self, ev) -> None:
        if self.session.info is None:
            return
        t0, t1 = self.session.view
        dy = ev.angleDelta().y() or ev.angleDelta().x()
        if ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:  # shift+wheel pans
            shift = -(t1 - t0) * 0.1 * (dy / 120)
            self.session.set_view(t0 + shift, t1 + shift)
            return
        factor = 0.8 ** (dy / 120)
        x = ev.position().x()
        anchor = self.x_to_t(x) if x > HEADER_W else (t0 + t1) / 2
        self.session.set_view(anchor - (anchor - t0) * factor, anchor + (t1 - anchor) * factor)

    def mousePressEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and self.session.info is not None:
            t0, t1 = self.session.view
            self._drag_from = (ev.position().x(), t0, t1)
            self._dragged = False

    def mouseMoveEvent(self, ev) -> None:
        if self._drag_from is not None and ev.buttons() & Qt.MouseButton.LeftButton:
            x0, t0, t1 = self._drag_from
            dx = ev.position().x() - x0
            if abs(dx) > 3 or self._dragged:
                self._dragged = True
                dt = -dx / max(1, self.width() - HEADER_W) * (t1 - t0)
                self.session.set_view(t0 + dt, t1 + dt)
            return
        hit = self.item_at(ev.position())
        if hit is None:
            QToolTip.hideText()
            return
        tr, it = hit
        span = timecode(it.start) + ("" if it.is_marker else f" – {timecode(it.end)}")
        run = f"\nrun #{it.run_id}" if it.run_id is not None else ""
        QToolTip.showText(ev.globalPosition().toPoint(),
                          f"<b>{it.label or tr.style.title}</b><br>{span}<br>"
                          f"confidence {it.confidence:.2f}{run}", self)

    def mouseReleaseEvent(self, ev) -> None:
        if self._drag_from is not None and not self._dragged and ev.position().x() > HEADER_W:
            self.session.seek(self.x_to_t(ev.position().x()))
        self._drag_from = None

    def mouseDoubleClickEvent(self, ev) -> None:
        hit = self.item_at(ev.position())
        if hit is not None:
            self.session.seek(hit[1].start)
            self.item_activated.emit(*hit)
