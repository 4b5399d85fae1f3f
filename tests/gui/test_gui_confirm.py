"""The Detections panel and objects that are there (core/perception/confirm.py): confirmed and
unconfirmed detections, the "show unconfirmed" filter, and the scene's confusions (learn from the
open file, suppress, restore) — real SSD + EfficientNet-Lite3 on real footage in the window."""
from __future__ import annotations

import numpy as np
import pytest

from core.timeline import Item, Track


def wall_clip(path, sample):
    """8 s at 2 fps of a real white wall (the bikes clip at 0.5 s) with sensor noise: SSD sees a
    "vase" in it, steadily; nothing is there."""
    import av

    from core.media.decode import VideoDecoder

    with VideoDecoder(sample("bikes"), max_size=(640, 360)) as dec:
        wall = dec.frame_at(0.5).image
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=2)
        s.width, s.height, s.pix_fmt = wall.shape[1], wall.shape[0], "yuv420p"
        for _ in range(16):
            f = np.clip(wall + rng.normal(0, 3, wall.shape), 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def test_the_table_says_which_detections_are_confirmed_and_filters_the_rest(qtbot):
    from core.perception.overlay import OverlayModel
    from core.session import MediaSession
    from gui.panels.detections import DetectionsPanel

    session = MediaSession()
    overlay = OverlayModel(session.timeline)
    panel = DetectionsPanel(session, overlay)
    qtbot.addWidget(panel)
    box = {"box": [10, 10, 50, 50], "size": [100, 100]}
    items = [Item(0.0, 0.5, "car", 0.9, data={**box, "confirmed": True, "evidence": {"reason": "confirmed: moving"}}),
             Item(0.5, 1.0, "surfboard", 0.89, data={**box, "confirmed": False,
                                                     "evidence": {"reason": "unconfirmed: hits 5/5 but static"}}),
             Item(1.0, 1.5, "kite", 0.6, data=dict(box))]  # stored before confirmation existed
    session.timeline.set_track(Track("boxes", "ssd", items, meta={"task": "detect"}, visible=False))
    m = panel.model
    col = m.HEADERS.index("confirmed")
    cells = {m.data(m.index(r, 1)): m.data(m.index(r, col)) for r in range(m.rowCount())}
    assert cells == {"car": "yes", "surfboard": "?", "kite": "?"}
    tips = [m.data(m.index(r, col), role=3) for r in range(m.rowCount())]  # Qt.ToolTipRole
    assert "static" in tips[1] and "before Kestrel checked" in tips[2]
    assert "1 confirmed, 2 unconfirmed" in panel.count.text()
    classes = [panel.classes.item(i).text() for i in range(panel.classes.count())]
    assert any(t.startswith("surfboard") and "0 confirmed, 1 ?" in t for t in classes), classes
    panel.show_unconfirmed.setChecked(False)  # the overlay's events are synchronous
    assert [m.data(m.index(r, 1)) for r in range(m.rowCount())] == ["car"]
    assert [b.label for b in overlay.boxes_at(0.2)] == ["car"] and overlay.boxes_at(0.7) == []
    panel.show_unconfirmed.setChecked(True)
    assert m.rowCount() == 3 and overlay.boxes_at(0.7)[0].caption == "? surfboard"


def test_learn_suppress_restore_and_the_analysis_uses_them(qtbot, window, sample, tmp_path):
    from core.perception.analysis import UNCONFIRMED
    from core.perception.confirm import is_confirmed, load_confusions

    clip = wall_clip(tmp_path / "wall.mp4", sample)
    with qtbot.waitSignals([window.media_ready, window.player.frame_shown], timeout=30000):
        window.open_media(str(clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    panel = window.detections
    qtbot.waitUntil(panel.learn.isEnabled, timeout=10000)
    assert panel.confusions.count() == 0
    panel.learn.click()
    qtbot.waitUntil(lambda: panel.confusions.count() > 0, timeout=120000)
    rows = {panel.confusions.item(i).data(0x0100)[0]: panel.confusions.item(i) for i in range(panel.confusions.count())}
    assert "vase" in rows and rows["vase"].checkState() == rows["vase"].checkState().Checked
    stored = load_confusions(window.project)
    assert "vase" in {c.label for c in stored.suppressed}
    # the analysis started from the window passes the stored confusions: the vase is one of them
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=120000):
        window.analysis.start(("ssd-mobilenet-v2-coco",), 2.0)
    tl = window.session.timeline
    vases = [it for it in tl.track("boxes", "ssd-mobilenet-v2-coco").items if it.label == "vase"]
    assert vases and not any(is_confirmed(it.data) for it in vases)
    assert all(it.data["evidence"]["confusion"] for it in vases)
    assert tl.track("detections", "vase") is None and tl.track("detections", "vase" + UNCONFIRMED).visible is False
    # restore (undo): the entry stays listed, unmarked, in the project
    rows["vase"].setCheckState(rows["vase"].checkState().Unchecked)
    qtbot.waitUntil(lambda: "vase" not in {c.label for c in load_confusions(window.project).suppressed},
                    timeout=10000)
    assert "vase" in {c.label for c in load_confusions(window.project).entries}
    n = len(load_confusions(window.project).suppressed)
    qtbot.waitUntil(lambda: panel.confusions_note.text().startswith(f"{n} of "), timeout=10000)  # the stored list
    assert rows_checked(panel).get("vase") is False


def rows_checked(panel) -> dict:
    out = {}
    for i in range(panel.confusions.count()):
        it = panel.confusions.item(i)
        out[it.data(0x0100)[0]] = it.checkState() == it.checkState().Checked
    return out
