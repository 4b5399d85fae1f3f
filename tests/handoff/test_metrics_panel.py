"""The Detections panel against an imported ground truth: precision, recall and IDF1 per class from
a job (never the window's thread), the same as motmetrics on the same boxes, refreshed when another
truth is imported, and "too few" said where a percentage would mean nothing."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QObject, Signal

from core.handoff import metrics
from core.handoff.boxes import Box, collect, store_import
from core.media.decode import MediaInfo, StreamInfo
from core.perception import ops
from core.perception.overlay import OverlayModel
from core.session import MediaSession
from gui.tasks import TaskManager
from gui.workbench import Workbench
from scorekit import MEDIA_FPS, make_project, motmetrics_per_class, same


class _Window(QObject):
    project_changed = Signal(str)


def _load(session: MediaSession, p, mid: int) -> None:
    """What the window does after an analysis or an import: the media's tracks from the project."""
    session.timeline.clear()
    for tr in ops.load_timeline(p, mid):
        session.timeline.set_track(tr)


def _panel(qtbot, tmp_path, errors: list, **project):
    """A Detections panel over a real project (make_project), with its bench and task manager."""
    from gui.panels.detections import DetectionsPanel

    p, mid, name = make_project(tmp_path, **project)
    session = MediaSession()
    session.set_media(MediaInfo(path=str(tmp_path / "clip.mp4"), size_bytes=1, duration_s=10.0, container="mp4",
                                streams=(StreamInfo(0, "video", "h264", 10.0, 320, 240, MEDIA_FPS),)), mid)
    _load(session, p, mid)
    panel = DetectionsPanel(session, OverlayModel(session.timeline))
    qtbot.addWidget(panel)
    tasks, window = TaskManager(), _Window()
    bench = Workbench(tasks=tasks, session=session, settings=None, project=lambda: p,
                      project_changed=window.project_changed, show_error=errors.append,
                      show_status=lambda *_a: None, open_media=lambda _p: None)
    bench.window = window  # keeps the signal's owner alive
    return panel, bench, tasks, p, mid, name, session


@pytest.fixture
def panel_on_project(qtbot, tmp_path):
    errors: list = []
    panel, bench, tasks, p, mid, name, session = _panel(qtbot, tmp_path, errors)
    yield panel, bench, p, mid, name, session, tmp_path
    tasks.shutdown()
    p.close()
    assert errors == []


def _cells(panel) -> list[list[str]]:
    t = panel.scores_table
    return [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]


def test_the_panel_shows_precision_recall_idf1_per_class_as_motmetrics_counts(panel_on_project, qtbot, monkeypatch):
    mm = pytest.importorskip("motmetrics")
    import numpy as np

    if not hasattr(np, "asfarray"):  # motmetrics 1.4.0's iou_matrix calls numpy's removed asfarray (NumPy 2)
        monkeypatch.setattr(np, "asfarray", lambda a: np.asarray(a, dtype=float), raising=False)
    panel, bench, p, mid, name, _session, _tmp = panel_on_project
    with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
        panel.attach(bench)
    scores = shown.args[0]
    assert isinstance(scores, metrics.Scores) and panel.scores is scores
    assert panel.scores_group.isVisibleTo(panel) and not panel.truth_pick.isVisibleTo(panel)
    assert panel.scores_title.text() == f"{scores.pred_name} (every detection) against {name}"
    assert panel.scores_note.text() == "at the detector's 20 sampled frames, IoU ≥ 0.5"
    rows = _cells(panel)
    assert [r[0] for r in rows] == ["all classes", "person", "car"]
    # what motmetrics says of the same boxes at the same frames (an accumulator per class)
    _f, pred, _n = collect(p, mid)
    _f, truth, _n = collect(p, mid, track=name)
    want = motmetrics_per_class(truth, pred, list(range(0, 100, 5)), mm)
    for row, label in zip(rows, ["", "person", "car"]):
        w = want[label]
        c = scores.overall if not label else next(c for c in scores.classes if c.label == label)
        assert same(c.precision, w["precision"]) and same(c.recall, w["recall"]) and same(c.idf1, w["idf1"])
        assert row[1:4] == [f"{w['precision']:.1%}", f"{w['recall']:.1%}", f"{w['idf1']:.1%}"]
        assert row[4] == f"{c.tp} / {c.fp} / {c.fn}" and c.tp + c.fn == w["num_objects"]
    # the "show unconfirmed" switch: the scores follow what the panel shows
    with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
        panel.show_unconfirmed.setChecked(False)
    confirmed = shown.args[0]
    assert confirmed.confirmed_only and "(confirmed detections)" in panel.scores_title.text()
    assert confirmed.overall.fp == scores.overall.fp - 5 and confirmed.overall.tp == scores.overall.tp


def test_a_new_import_is_scored_and_too_few_truth_boxes_are_said(panel_on_project, qtbot):
    panel, bench, p, mid, name, session, tmp_path = panel_on_project
    with qtbot.waitSignal(panel.scores_changed, timeout=20000):
        panel.attach(bench)
    first = panel.scores
    # a second ground truth with only four boxes: the newest import is scored, with no percentages
    few = [Box(f / MEDIA_FPS, f, 1, "person", (10.0 + f, 20.0, 50.0 + f, 100.0)) for f in (0, 5, 10, 15)]
    src = tmp_path / "few.json"
    src.write_text("{}")
    store_import(p, mid, few, fmt="coco", path=src)
    with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
        _load(session, p, mid)
    scores = shown.args[0]
    assert scores.truth_name == "ground truth: few.json" and scores.overall.truth == 4
    assert panel.truth_pick.isVisibleTo(panel) and panel.truth_pick.currentText() == "ground truth: few.json"
    assert not panel.scores_table.isVisibleTo(panel)
    assert "Only 4 ground-truth boxes" in panel.scores_note.text() and "too few" in panel.scores_note.text()
    assert "%" not in panel.scores_note.text()
    # back to the first truth: the same numbers as before
    with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
        panel.truth_pick.setCurrentText(name)
    assert shown.args[0].overall == first.overall and panel.scores_table.isVisibleTo(panel)
    # no ground truth left on the timeline: nothing shown
    with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
        session.timeline.remove_track("boxes", name)
        session.timeline.remove_track("boxes", "ground truth: few.json")
    assert shown.args[0] is None and not panel.scores_group.isVisibleTo(panel)


def test_no_detector_run_is_one_line_in_the_panel(qtbot, tmp_path):
    panel, bench, tasks, p, _mid, _name, _session = _panel(qtbot, tmp_path, [], detector=False)
    try:
        with qtbot.waitSignal(panel.scores_changed, timeout=20000) as shown:
            panel.attach(bench)
        assert shown.args[0] is None
        assert panel.scores_note.text().startswith("Not scored: no detections to score against")
        assert "analyse the file with an object detector" in panel.scores_note.text()
    finally:
        tasks.shutdown()
        p.close()


def test_an_imported_truth_is_drawn_apart_and_never_counted_as_a_detection():
    from core.timeline import Item, Timeline, Track

    tl = Timeline(10.0)
    box = {"box": [10.0, 10.0, 50.0, 60.0], "size": [100, 100], "track": 1}
    tl.set_track(Track("boxes", "ssd", [Item(1.0, 1.5, "car", 0.8, None, {**box, "confirmed": True})],
                       meta={"task": "detect"}))
    tl.set_track(Track("boxes", "ground truth: gt.txt", [Item(1.0, 1.04, "car", None, None, box),
                                                         Item(1.0, 1.04, "dog", None, None, box)],
                       meta={"imported": True, "format": "mot"}))
    ov = OverlayModel(tl)
    assert [t.name for t in ov.box_tracks()] == ["ssd"] and ov.labels() == {"car": 1}
    assert ov.confirmed_counts() == {"car": (1, 0)} and [src for _it, src in ov.rows()] == ["ssd"]
    drawn = ov.boxes_at(1.02)
    assert sorted((b.caption, b.truth) for b in drawn) == [("car", False), ("truth: car", True), ("truth: dog", True)]
    ov.set_show_truth(False)
    assert [b.caption for b in ov.boxes_at(1.02)] == ["car"]
