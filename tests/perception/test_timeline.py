"""The timeline model and its view: tracks as data, zoom, pan, seek, hover."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest

from core.media.decode import MediaInfo, StreamInfo
from core.session import MediaSession
from core.timefmt import timecode as format_time
from core.timeline import Item, Timeline, Track, TrackKind, register_kind
from gui.views.timeline import HEADER_W, RULER_H, TimelineView, tick_step


def test_track_queries():
    tr = Track("speech", "en", [Item(5, 6, "b"), Item(1, 2, "a"), Item(3, 3, "marker")])
    assert [i.label for i in tr.items] == ["a", "marker", "b"]
    assert [i.label for i in tr.in_range(1.5, 3.0)] == ["a", "marker"]
    assert [i.label for i in tr.at(3.0)] == ["marker"] and tr.items[1].is_marker
    tl = Timeline(10)
    seen = []
    tl.events.tracks_changed.connect(lambda: seen.append("tracks"))
    tl.events.items_added.connect(lambda t: seen.append(t.name))
    tl.add_items("detections", "person", [Item(0, 1, "person", 0.9)])
    tl.add_items("detections", "person", [Item(2, 3, "person", 0.8)])
    assert seen == ["tracks", "person"] and len(tl.track("detections", "person").items) == 2


def test_format_time():
    assert format_time(3723.4567) == "01:02:03.457"
    assert format_time(0) == "00:00:00.000"
    assert tick_step(3600, 1000) >= 300 and tick_step(1, 1000) <= 0.1


@pytest.fixture
def view(qtbot):
    s = MediaSession()
    info = MediaInfo(path="/x.mp4", size_bytes=1, duration_s=100.0, container="mp4",
                     streams=(StreamInfo(0, "video", "h264", 100.0, 640, 360, 25.0),))
    s.set_media(info)
    v = TimelineView(s)
    qtbot.addWidget(v)
    v.resize(1000 + HEADER_W, 200)
    v.show()
    return s, v


def test_a_new_kind_is_only_data(qtbot, view):
    s, v = view
    register_kind(TrackKind("keyframes", "Keyframes", style="markers", color="#ff00ff", order=1))
    s.timeline.add_items("keyframes", "", [Item(10, 10, "kf")])
    s.timeline.add_items("anomaly", "score", [Item(t, t, "", t / 100) for t in range(100)])
    img = v.grab().toImage()
    x = int(v.t_to_x(10))
    rows = v._rows()
    kf_row = next(y for tr, y, h in rows if tr.kind == "keyframes")
    c = img.pixelColor(x, int(kf_row + 11))
    assert (c.red(), c.green(), c.blue()) != (0, 0, 0) and c.red() > 150 and c.blue() > 150


def test_click_seeks_wheel_zooms_drag_pans(qtbot, view):
    s, v = view
    QTest.mouseClick(v, Qt.MouseButton.LeftButton, pos=QPoint(HEADER_W + 250, RULER_H + 10))
    assert s.position == pytest.approx(25.0, abs=0.2)
    pos = QPointF(HEADER_W + 500, 50)
    ev = QWheelEvent(pos, v.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    v.wheelEvent(ev)
    t0, t1 = s.view
    assert t1 - t0 == pytest.approx(80.0) and (t0 + t1) / 2 == pytest.approx(50.0)  # zoom around the cursor
    QTest.mousePress(v, Qt.MouseButton.LeftButton, pos=QPoint(HEADER_W + 500, 50))
    QTest.mouseMove(v, QPoint(HEADER_W + 400, 50))
    QTest.mouseRelease(v, Qt.MouseButton.LeftButton, pos=QPoint(HEADER_W + 400, 50))
    assert s.view[0] == pytest.approx(t0 + 8.0, abs=0.5)  # dragged left by 100 px = 8 s
    assert s.position == pytest.approx(25.0, abs=0.2)  # a drag does not seek


def test_hover_finds_the_item(qtbot, view):
    s, v = view
    s.timeline.add_items("detections", "car", [Item(40, 50, "car", 0.7, run_id=3)])
    v._relayout()
    tr, y, h = v._rows()[0]
    hit = v.item_at(QPointF(v.t_to_x(45), y + h / 2))
    assert hit is not None and hit[1].label == "car" and hit[1].run_id == 3
    assert v.item_at(QPointF(v.t_to_x(60), y + h / 2)) is None
