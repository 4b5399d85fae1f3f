"""core.handoff.labelstudio: a real project's detections as a Label Studio video task and back;
the task and its labelling config pass Label Studio's own SDK; hostile files refused in one line."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.handoff import boxes as bx
from core.handoff import labelstudio as ls
from core.handoff.base import HandoffError, export_with, import_with
from trackkit import FPS, SIZE, frames, make_project, same_boxes


@pytest.fixture
def project(tmp_path):
    p, mid = make_project(tmp_path)
    yield p, mid
    p.close()


def _regions(path) -> dict[str, dict]:
    (task,) = json.loads(path.read_text(encoding="utf-8"))
    (pred,) = task["predictions"]
    return {r["value"]["labels"][0]: r for r in pred["result"]}


def test_export_then_import_gives_the_same_boxes(project, tmp_path):
    p, mid = project
    out = tmp_path / "tasks.json"
    res = export_with("labelstudio", p, mid, out)
    assert res.paths == (out, tmp_path / "tasks.label-config.xml") and res.counts == {
        "boxes": 44, "tracks": 4, "frames": 20}
    _f, want, _n = bx.collect(p, mid)
    imp = import_with("labelstudio", p, mid, out)
    assert imp.items == len(want) and any("interpolates" in n for n in imp.notes)
    _f, got, _n = bx.collect(p, mid, track="ground truth: tasks.json")
    same_boxes(got, want, scores=False)  # one score per region in Label Studio
    dog = [b for b in got if b.label == "dog"]
    assert [b.score for b in dog] == [pytest.approx(0.7)] * 16


def test_the_task_follows_label_studios_video_tracking_format(project, tmp_path):
    p, mid = project
    out = tmp_path / "t.json"
    ls.export(p, mid, out, start=0.0, end=10.0)
    (task,) = json.loads(out.read_text(encoding="utf-8"))
    assert task["data"] == {"video": "clip.mp4"}
    assert task["predictions"][0]["model_version"] == "ssd-mobilenet-v2-coco"
    regions = _regions(out)
    assert sorted(regions) == ["bus", "cat", "dog", "person"]
    for r in regions.values():
        assert {k: r[k] for k in ("type", "from_name", "to_name", "origin")} == {
            "type": "videorectangle", "from_name": "box", "to_name": "video", "origin": "prediction"}
        assert r["value"]["framesCount"] == 100 and r["value"]["duration"] == 10.0
        for kf in r["value"]["sequence"]:
            assert set(kf) == {"frame", "enabled", "x", "y", "width", "height", "rotation", "time"}
            assert kf["frame"] >= 1 and kf["time"] == pytest.approx((kf["frame"] - 1) / FPS)
            assert all(0 <= kf[k] <= 100 for k in ("x", "y", "width", "height"))
    person = regions["person"]["value"]["sequence"]
    assert [k["frame"] for k in person] == list(range(1, 101, 5)) and all(k["enabled"] for k in person)
    first = person[0]
    assert (first["x"], first["y"]) == (pytest.approx(100 * 10 / SIZE[0]), pytest.approx(100 * 10.4 / SIZE[1]))
    assert first["width"] == pytest.approx(100 * 40.7 / SIZE[0])
    bus = regions["bus"]["value"]["sequence"]
    assert [k["enabled"] for k in bus] == [True] * 6 + [False]  # gone after 3 s
    dog = {k["frame"]: k["enabled"] for k in regions["dog"]["value"]["sequence"]}
    assert dog[36] is False and dog[51] is True and dog[96] is True  # missing at 4 s and 4.5 s; there at the end
    assert regions["person"]["score"] == pytest.approx(sum(0.9 - 0.01 * i for i in range(20)) / 20)


def test_label_studios_sdk_accepts_the_config_and_every_region(project, tmp_path):
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    p, mid = project
    out = tmp_path / "t.json"
    ls.export(p, mid, out)
    iface = sdk.LabelInterface(ls.config_path(out).read_text(encoding="utf-8"))
    iface.validate()  # the config: schema, unique names, toName targets
    (task,) = json.loads(out.read_text(encoding="utf-8"))
    assert iface.validate_task({"data": task["data"]})  # the data the Video reads ($video); the SDK's
    # validate_task calls validate_prediction() without its argument (2.1.2), so the prediction apart:
    assert iface.validate_prediction(task["predictions"][0], return_errors=True) == []
    assert set(iface.get_control("videoLabels").labels) == {"bus", "cat", "dog", "person"}
    broken = json.loads(json.dumps(task["predictions"][0]))
    broken["result"][0]["value"]["sequence"][0]["x"] = 150  # the SDK does check what it is given
    assert iface.validate_prediction(broken, return_errors=True)


def _task(sequence, *, key="annotations", labels=("car",), rid="a1B2c3", extra=None) -> dict:
    region = {"id": rid, "type": "videorectangle", "from_name": "box", "to_name": "video",
              "value": {"framesCount": 100, "duration": 10.0, "sequence": sequence, "labels": list(labels)}}
    return {"data": {"video": "/data/upload/1/clip.mp4"}, key: [{"result": [region, *(extra or [])]}]}


def _kf(frame, x=10.0, y=20.0, w=25.0, h=50.0, **kw) -> dict:
    return {"frame": frame, "enabled": True, "x": x, "y": y, "width": w, "height": h, "rotation": 0,
            "time": (frame - 1) / FPS, **kw}


def test_label_studio_exports_are_read_keyframes_only_with_ids_of_their_own():
    doc = [_task([_kf(1), _kf(11, x=20.0, enabled=False)], extra=[
        {"id": "zz", "type": "labels", "value": {"start": 0, "end": 1, "labels": ["x"]}}]),
        {"data": {"video": "other.mp4"}, "annotations": [{"result": []}]}]
    doc[0]["predictions"] = [{"result": []}]  # annotations come first
    got, notes = ls.parse(json.dumps(doc), frames(), Path("ls.json"))
    assert [(b.frame, b.track, b.label, b.score) for b in got] == [(0, 1, "car", None), (10, 1, "car", None)]
    assert got[0].box == pytest.approx((32.0, 48.0, 112.0, 168.0))
    assert got[1].t == pytest.approx(1.0)
    assert any("other than video rectangles" in n for n in notes)
    turned, notes = ls.parse(json.dumps(_task([_kf(1, x=50, y=50, w=10, h=10, rotation=90)])), frames(), Path("r.json"))
    (b,) = turned
    assert b.box == pytest.approx((160 - 24, 120, 160, 120 + 32))  # 32x24 px turned about its top-left corner
    assert any("rotated" in n for n in notes)


@pytest.mark.parametrize("doc, words", [
    ("{", "is not Label Studio video JSON: Expecting"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("[1, 2]", "a task object or a list"),
    ("[]", "a task object or a list"),
    ('{"data": {"video": "clip.mp4"}}', 'no "annotations" or "predictions"'),
    ('{"annotations": {"result": []}}', "not a list of objects"),
    ('{"annotations": [{"id": 1}]}', 'no "result" list'),
    ('{"annotations": [{"result": [3]}]}', "region 0 is not an object"),
    ('{"annotations": [{"result": []}]}', "no video rectangles"),
    (json.dumps(_task("frames")), "no value.sequence"),
    (json.dumps(_task([_kf(0)])), "counts frames from 1"),
    (json.dumps(_task([_kf(1.5)])), "not a whole number"),
    (json.dumps(_task([_kf(1, x=math.nan)])), "not a finite number"),
    (json.dumps(_task([_kf(1, w=-5.0)])), "negative width"),
    (json.dumps(_task([_kf(1, x="10")])), "not a number"),
    (json.dumps(_task([_kf(1)], labels=[3])), "not a list of text"),
    (json.dumps([_task([_kf(1)]), _task([_kf(1)])]), "2 tasks and 2 of them name clip.mp4"),
])
def test_hostile_or_wrong_shaped_files_are_one_clear_error(project, tmp_path, doc, words):
    p, mid = project
    f = tmp_path / "bad.json"
    f.write_text(doc, encoding="utf-8")
    with pytest.raises(HandoffError) as e:
        ls.import_file(p, mid, f)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "bad.json" in msg
    assert not [n for _id, n, imported in bx.box_tracks(p, mid) if imported]


def test_nothing_to_export_or_nowhere_to_write_is_one_clear_error(project, tmp_path):
    p, mid = project
    with pytest.raises(HandoffError, match="hold no boxes"):
        ls.export(p, mid, tmp_path / "x.json", start=9.9, end=9.95)
    with pytest.raises(HandoffError, match="does not exist"):
        ls.export(p, mid, tmp_path / "no" / "x.json")
    assert not list(tmp_path.glob("*.json"))
