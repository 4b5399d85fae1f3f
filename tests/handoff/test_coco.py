"""core.handoff.coco: a real project's detections to COCO JSON and back, read by pycocotools,
other tools' files imported, hostile files refused in one line."""
from __future__ import annotations

import json
import math

import pytest

from core.handoff import boxes as bx
from core.handoff import coco
from core.handoff.base import HandoffError, export_with, import_with
from core.perception.ops import store_analysis
from test_boxes import make_project, tracked_output

GT = "ground truth: "



def same_boxes(got: list[bx.Box], want: list[bx.Box]) -> None:
    assert [(b.frame, b.track, b.label) for b in got] == [(b.frame, b.track, b.label) for b in want]
    for g, w in zip(got, want):
        assert g.box == pytest.approx(w.box, abs=1e-3)
        assert g.t == pytest.approx(w.t, abs=1e-9)
        assert (g.score is None) == (w.score is None) and (g.score or 0) == pytest.approx(w.score or 0, abs=1e-6)


def test_export_then_import_gives_the_same_boxes(project, tmp_path):
    p, mid = project
    out = tmp_path / "dets.json"
    res = export_with("coco", p, mid, out)
    assert res.paths == (out,) and res.counts == {"boxes": 60, "frames": 20, "classes": 3}
    got = import_with("coco", p, mid, out)
    assert got.items == 60 and got.notes == ()
    _f, want, _n = bx.collect(p, mid)
    _f, back, name = bx.collect(p, mid, track=GT + "dets.json")
    same_boxes(back, want)
    assert all(b.confirmed is None for b in back)
    assert p.load_track(got.track_id).meta["format"] == "coco"


def test_the_document_names_frames_times_classes_and_where_it_came_from(project, tmp_path):
    p, mid = project
    out = tmp_path / "d.json"
    coco.export(p, mid, out)
    doc = json.loads(out.read_text())
    img = doc["images"][1]
    assert img == {"id": 6, "file_name": "clip_000005.jpg", "width": 320, "height": 240, "frame": 5, "time_s": 0.5}
    assert [c["name"] for c in doc["categories"]] == ["person", "bus", "dog"]
    assert [c["id"] for c in doc["categories"]] == [1, 6, 18]  # COCO's own ids
    a = doc["annotations"][0]
    assert (a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"], a["track_id"], a["confirmed"]) == \
        (1, 1, [10.0, 10.0, 40.0, 50.0], 2000.0, 0, 1, True)
    assert a["score"] == pytest.approx(0.9)
    info = doc["info"]
    assert info["media"].endswith("clip.mp4") and info["track"] == "ssd-mobilenet-v2-coco" and info["fps"] == 10.0
    assert info["version"].startswith("kestrel") and "no image files" in info["images"]
    assert coco.category_ids({"face", "person", "forklift"}) == {"person": 1, "face": 91, "forklift": 92}


def test_pycocotools_loads_the_file_and_scores_it_against_itself(project, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    p, mid = project
    out = tmp_path / "d.json"
    coco.export(p, mid, out)
    gt = COCO(str(out))
    assert len(gt.getImgIds()) == 20 and len(gt.getAnnIds()) == 60 and sorted(gt.getCatIds()) == [1, 6, 18]
    dt = gt.loadRes(json.loads(out.read_text())["annotations"])
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]: every box found where it is


def test_images_are_every_frame_the_detector_looked_at_empty_ones_too(tmp_path):
    p, mid = make_project(tmp_path, store=False)
    try:
        out = tracked_output()  # sampled every 0.5 s for 10 s (its run's parameters)...
        out.frames, out.evidence = out.frames[::2], out.evidence[::2]  # ...boxes on every other sample
        store_analysis(p, mid, out, 0.5)
        coco.export(p, mid, tmp_path / "d.json")
        doc = json.loads((tmp_path / "d.json").read_text())
        assert [i["frame"] for i in doc["images"]] == list(range(0, 100, 5))
        assert {a["image_id"] for a in doc["annotations"]} == {f + 1 for f in range(0, 100, 10)}
        assert doc["info"]["images"].startswith("every frame the detector looked at")
        coco.export(p, mid, tmp_path / "r.json", start=2.0, end=4.0)
        assert [i["frame"] for i in json.loads((tmp_path / "r.json").read_text())["images"]] == [20, 25, 30, 35]
        gated = tracked_output()
        gated.name, gated.params = "yolov8n", {**gated.params, "gate": {"static_every_s": 30}}
        gated.frames, gated.evidence = gated.frames[::2], gated.evidence[::2]
        store_analysis(p, mid, gated, 0.5)  # change-gated: its samples are not known, only its boxes' frames
        coco.export(p, mid, tmp_path / "g.json")
        doc = json.loads((tmp_path / "g.json").read_text())
        assert [i["frame"] for i in doc["images"]] == list(range(0, 100, 10))
        assert doc["info"]["track"] == "yolov8n" and "not known" in doc["info"]["images"]
    finally:
        p.close()


def test_a_range_export_holds_only_its_frames(project, tmp_path):
    p, mid = project
    out = tmp_path / "r.json"
    res = export_with("coco", p, mid, out, start=1.0, end=2.5)
    doc = json.loads(out.read_text())
    assert [i["time_s"] for i in doc["images"]] == [1.0, 1.5, 2.0]
    assert len(doc["annotations"]) == 9 and res.counts["frames"] == 3
    assert {a["image_id"] for a in doc["annotations"]} == {i["id"] for i in doc["images"]}
    assert (doc["info"]["start_s"], doc["info"]["end_s"]) == (1.0, 2.5)
    with pytest.raises(HandoffError, match="no boxes between 11 s and 12 s"):
        coco.export(p, mid, tmp_path / "none.json", start=11, end=12)
    assert not (tmp_path / "none.json").exists()


def test_another_tools_file_frames_from_names_ids_from_attributes_sizes_scaled(project, tmp_path):
    p, mid = project
    doc = {"images": [{"id": 7, "file_name": "frames/frame_000012.jpg", "width": 640, "height": 480},
                      {"id": 8, "file_name": "000030.PNG"},
                      {"id": 9, "file_name": "x.jpg", "time_s": 1.999, "width": 320, "height": 240}],
           "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40], "attributes": {"track_id": 4}},
               {"id": 2, "image_id": 8, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.25},
               {"id": 3, "image_id": 9, "category_id": 1, "bbox": [5, 5, 5, 5], "track_id": 4},
               {"id": 4, "image_id": 9, "category_id": 1, "bbox": [0, 0, 9, 9], "iscrowd": 1}]}
    path = tmp_path / "cvat.json"
    path.write_text(json.dumps(doc))
    res = coco.import_file(p, mid, path)
    assert res.items == 3
    assert any("crowd" in n for n in res.notes) and any("scaled" in n for n in res.notes)
    _f, got, _n = bx.collect(p, mid, track=GT + "cvat.json")
    assert [(b.frame, b.track, b.label, b.score) for b in got] == [(12, 4, "car", None), (20, 4, "car", None),
                                                                  (30, 5, "truck", 0.25)]
    assert got[0].box == (5.0, 10.0, 20.0, 30.0)  # labelled on 640x480, the media is 320x240
    assert got[2].box == (1.0, 2.0, 4.0, 6.0) and got[2].t == pytest.approx(3.0)


HOSTILE = [
    ("[]", "not COCO JSON: it is a list"),
    ('{"images": [], "annotations": []}', "no 'categories' list"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' is not a list"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4]}]}', "annotation 1: its bbox"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, NaN, 4]}]}', "not four finite"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}', "not four finite"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 1' + "0" * 400 + ']}]}', "not four finite"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]}]}', "negative width"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}]}', "image 2, which the file"),
    ('{"images": [{"id": 1, "frame": 0}], "categories": [{"id": 1, "name": "a"}], '
     '"annotations": [{"image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]}]}', "category 5, which"),
    ('{"images": [{"id": 1, "file_name": "cover.jpg"}], "categories": [], "annotations": []}', "says no frame"),
    ('{"images": [{"id": 1, "frame": 0}, {"id": 1, "frame": 1}], "categories": [], "annotations": []}',
     "used twice"),
    ('{"images": [{"frame": 0}], "categories": [], "annotations": []}', "no integer id"),
    ('{"images": [], "categories": [{"id": 1}], "annotations": []}', "category 1 needs"),
    ('{"images": [], "categories": [], "annotations": []}', "holds no boxes"),
    ("[" * 200_000, "nested too deeply"),
    ('{"images": [', "not COCO JSON: Expecting value"),
]


@pytest.mark.parametrize("text, message", HOSTILE, ids=[m for _t, m in HOSTILE])
def test_a_hostile_file_is_one_clear_error_and_stores_nothing(untouched, tmp_path, text, message):
    p, mid = untouched
    before = bx.box_tracks(p, mid)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(HandoffError, match=message) as e:
        coco.import_file(p, mid, path)
    assert "\n" not in str(e.value)
    assert bx.box_tracks(p, mid) == before


def test_garbage_of_100_mb_fails_in_one_line_and_keeps_the_earlier_import(project, tmp_path):
    p, mid = project
    path = tmp_path / "gt.json"
    coco.export(p, mid, path)
    first = coco.import_file(p, mid, path)
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(path, "wb") as f:
        for _ in range(100):
            f.write(block)
    with pytest.raises(HandoffError, match="gt.json is not COCO JSON: not UTF-8") as e:
        coco.import_file(p, mid, path)
    assert len(str(e.value)) < 200
    path.write_bytes(b"x" * (100 << 20))
    with pytest.raises(HandoffError, match="gt.json is not COCO JSON: Expecting value"):
        coco.import_file(p, mid, path)
    assert p.load_track(first.track_id).meta["format"] == "coco" and len(p.load_track(first.track_id).items) == 60


def test_no_detections_and_unwritable_output_are_one_clear_error(tmp_path):
    p, mid = make_project(tmp_path, store=False)
    try:
        with pytest.raises(HandoffError, match="no detections"):
            coco.export(p, mid, tmp_path / "x.json")
    finally:
        p.close()
    p, mid = make_project(tmp_path / "b")
    try:
        with pytest.raises(HandoffError, match="does not exist"):
            coco.export(p, mid, tmp_path / "missing" / "x.json")
        keep = tmp_path / "keep.json"
        keep.write_text("old")
        with pytest.raises(HandoffError, match="no boxes"):
            coco.export(p, mid, keep, start=50)
        assert keep.read_text() == "old"
    finally:
        p.close()


def test_scores_and_boxes_survive_exactly_enough(project, tmp_path):
    p, mid = project
    out = tmp_path / "d.json"
    coco.export(p, mid, out)
    doc = json.loads(out.read_text())
    assert all(math.isfinite(a["score"]) and 0 <= a["score"] <= 1 for a in doc["annotations"])
    assert all(a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.01) for a in doc["annotations"])
