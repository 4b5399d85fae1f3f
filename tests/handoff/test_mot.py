"""core.handoff.mot: a real project's tracks to MOT Challenge CSV and back, scored by motmetrics,
MOT16/17 ground truth imported, malformed lines refused with their number."""
from __future__ import annotations

import json

import pytest

from core.handoff import boxes as bx
from core.handoff import mot
from core.handoff.base import HandoffError, export_with, import_with

GT = "ground truth: "



def test_export_writes_mot_2d_lines_sorted_with_a_class_list(project, tmp_path):
    p, mid = project
    out = tmp_path / "tracks.txt"
    res = export_with("mot", p, mid, out)
    side = tmp_path / "tracks.classes.json"
    assert res.paths == (out, side) and res.counts == {"boxes": 60, "frames": 20, "objects": 3}
    lines = out.read_text().splitlines()
    assert lines[:3] == ["1,1,10,10,40,50,0.9,-1,-1,-1", "1,6,60,20,60,70,0.8,-1,-1,-1",
                         "1,18,5,5,15,15,0.7,-1,-1,-1"]
    assert lines[3].startswith("6,1,") and len(lines) == 60  # 0.5 s at 10 fps: 0-based frame 5
    keys = [tuple(int(c) for c in ln.split(",")[:2]) for ln in lines]
    assert keys == sorted(keys)
    doc = json.loads(side.read_text())
    assert doc["classes"] == {"1": "person", "6": "bus", "18": "dog"} and doc["by_box"] == {}


def test_export_then_import_gives_the_same_boxes(project, tmp_path):
    p, mid = project
    out = tmp_path / "tracks.txt"
    mot.export(p, mid, out)
    res = import_with("mot", p, mid, out)
    assert res.items == 60 and res.notes == ()
    _f, want, _n = bx.collect(p, mid)
    _f, back, _n = bx.collect(p, mid, track=GT + "tracks.txt")
    assert [(b.frame, b.track, b.label) for b in back] == [(b.frame, b.track, b.label) for b in want]
    for g, w in zip(back, want):
        assert g.box == pytest.approx(w.box, abs=1e-3) and g.score == pytest.approx(w.score, abs=1e-6)
        assert g.t == pytest.approx(w.t)


def test_an_object_whose_class_changes_keeps_each_boxs_class(project, tmp_path):
    p, mid = project
    boxes = [bx.Box(f / 10, f, 3, "car" if f != 2 else "truck", (1.0, 1.0, 5.0, 5.0), 0.5) for f in range(4)]
    src = tmp_path / "src.txt"
    src.write_text(mot.lines(boxes))
    (tmp_path / "src.classes.json").write_text(json.dumps(mot.classes_doc(boxes, "m", "t")))
    mot.import_file(p, mid, src)
    _f, back, _n = bx.collect(p, mid, track=GT + "src.txt")
    assert [b.label for b in back] == ["car", "car", "truck", "car"]


@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")  # motmetrics 1.4.0 under pandas 3
def test_motmetrics_scores_the_file_against_itself_at_100_percent(project, tmp_path, monkeypatch):
    mm = pytest.importorskip("motmetrics")
    import numpy as np

    if not hasattr(np, "asfarray"):  # motmetrics 1.4.0's iou_matrix calls numpy's removed asfarray (NumPy 2)
        monkeypatch.setattr(np, "asfarray", lambda a: np.asarray(a, dtype=float), raising=False)
    p, mid = project
    out = tmp_path / "tracks.txt"
    mot.export(p, mid, out)
    gt = mm.io.loadtxt(str(out), fmt="mot15-2D")
    ts = mm.io.loadtxt(str(out), fmt="mot15-2D")
    assert len(gt) == 60
    acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_misses",
                                                        "num_false_positives"], name="self")
    row = summary.loc["self"]
    assert row["mota"] == pytest.approx(1.0) and row["idf1"] == pytest.approx(1.0)
    assert (row["num_switches"], row["num_misses"], row["num_false_positives"]) == (0, 0, 0)


def test_a_range_export_holds_only_its_frames(project, tmp_path):
    p, mid = project
    out = tmp_path / "r.txt"
    res = mot.export(p, mid, out, start=0.5, end=1.5)
    frames = sorted({int(ln.split(",")[0]) for ln in out.read_text().splitlines()})
    assert frames == [6, 11] and res.counts["boxes"] == 6  # 0.5 s and 1.0 s at 10 fps, 1-based
    with pytest.raises(HandoffError, match="no boxes from 30 s"):
        mot.export(p, mid, out, start=30)
    assert len(out.read_text().splitlines()) == 6  # the earlier file is untouched


def test_mot17_ground_truth_and_detection_files_without_a_class_list(project, tmp_path):
    p, mid = project
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,20,30,40,1,1,1.0\n"
                  "1,2,50,60,10,10,0,8,0.5\n"  # a distractor: not to be considered
                  "\n"
                  "2,1,11,21,30,40,1,1,0.9\n"
                  "2,3,5,5,20,20,1,3,1\n")
    res = mot.import_file(p, mid, gt)
    assert res.items == 3 and "flag 0" in res.notes[0]
    _f, got, _n = bx.collect(p, mid, track=GT + "gt.txt")
    assert [(b.frame, b.track, b.label, b.score) for b in got] == [(0, 1, "pedestrian", None),
                                                                  (1, 1, "pedestrian", None), (1, 3, "car", None)]
    assert got[0].box == (10.0, 20.0, 40.0, 60.0)
    det = tmp_path / "det.txt"
    det.write_text("3 -1 1 1 5 5 0.75 -1 -1 -1\n3,-1,2,2,5,5,-1,-1,-1,-1\n4,7,2,2,5,5,0.5,-1,-1,-1\n")
    mot.import_file(p, mid, det)
    _f, got, _n = bx.collect(p, mid, track=GT + "det.txt")
    assert [(b.frame, b.track, b.label, b.score) for b in got] == [(2, 8, "object", 0.75), (2, 9, "object", None),
                                                                  (3, 7, "object", 0.5)]


MALFORMED = [
    ("1,1,1,1,1,1,1,-1,-1,-1\n1,2,3\n", "bad.txt, line 2: 3 values"),
    ("1,1,1,1,1,1,1,-1,-1,-1\n\n1,x,1,1,1,1,1,-1,-1,-1\n", "line 3: the id 'x' is not a number"),
    ("0,1,1,1,1,1,1,-1,-1,-1\n", "line 1: frame 0; MOT frames count from 1"),
    ("1.5,1,1,1,1,1,1,-1,-1,-1\n", "line 1: the frame '1.5' is not a whole number"),
    ("1,1,1,1,-4,1,1,-1,-1,-1\n", "line 1: a negative width"),
    ("1,1,1,nan,4,1,1,-1,-1,-1\n", "line 1: the top is 'nan', not a finite number"),
    ("1,1,1,1,4,1,1,-1,-1,-1\n2,1,1,1,4,1,inf,-1,-1,-1\n", "line 2: the confidence is 'inf'"),
    ("1,1,1,1,4,1,x,1,1\n", "line 1: the consider flag 'x'"),
    ("<html><body>not a track file</body></html>\n", "line 1: 4 values"),
    ("\n\n", "holds no boxes"),
    ("1,1,1,1,1,1,0,8,1\n", "holds no boxes to import \\(1 boxes marked"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[m for _t, m in MALFORMED])
def test_a_malformed_line_is_refused_with_its_number_and_nothing_is_stored(untouched, tmp_path, text, message):
    p, mid = untouched
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(HandoffError, match=message) as e:
        mot.import_file(p, mid, path)
    assert "\n" not in str(e.value)
    assert [n for _i, n, _imp in bx.box_tracks(p, mid)] == ["ssd-mobilenet-v2-coco"]


@pytest.mark.parametrize("side, message", [("[1, 2]", "no 'classes' object"),
                                           ('{"classes": {"a": "car"}}', "not an id"),
                                           ('{"classes": {"1": 5}}', "not a name"), ("{", "is not JSON")])
def test_a_damaged_class_list_is_refused(untouched, tmp_path, side, message):
    p, mid = untouched
    path = tmp_path / "t.txt"
    path.write_text("1,1,1,1,1,1,1,-1,-1,-1\n")
    (tmp_path / "t.classes.json").write_text(side)
    with pytest.raises(HandoffError, match=message):
        mot.import_file(p, mid, path)


def test_binary_garbage_and_a_missing_file_are_one_clear_error(project, tmp_path):
    p, mid = project
    path = tmp_path / "g.txt"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(HandoffError, match="g.txt is not a MOT Challenge file: not UTF-8"):
        mot.import_file(p, mid, path)
    with pytest.raises(HandoffError, match="cannot read"):
        mot.import_file(p, mid, tmp_path / "nope.txt")
