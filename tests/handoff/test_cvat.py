"""core.handoff.cvat: a real project's detections as CVAT for video 1.1 XML and back; CVAT's
documented structure; hostile files refused in one line."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from core.handoff import boxes as bx
from core.handoff import cvat
from core.handoff.base import HandoffError, export_with, import_with
from trackkit import FPS, SIZE, frames, make_project, same_boxes


@pytest.fixture
def project(tmp_path):
    p, mid = make_project(tmp_path)
    yield p, mid
    p.close()


def _track(root: ET.Element, label: str) -> ET.Element:
    (tr,) = [t for t in root.findall("track") if t.get("label") == label]
    return tr


def test_export_then_import_gives_the_same_boxes(project, tmp_path):
    p, mid = project
    out = tmp_path / "tracks.xml"
    res = export_with("cvat", p, mid, out)
    assert res.paths == (out,) and res.counts["boxes"] == 20 + 7 + 16 + 1 and res.counts["tracks"] == 4
    _f, want, _n = bx.collect(p, mid)
    imp = import_with("cvat", p, mid, out)
    assert imp.items == len(want)
    _f, got, name = bx.collect(p, mid, track="ground truth: tracks.xml")
    assert name == "ground truth: tracks.xml"
    same_boxes(got, want)
    assert {b.track for b in got} == {1, 6, 18, 19}  # the untracked cat got an id of its own (19)
    # a second import of the same file name replaces the first
    import_with("cvat", p, mid, out)
    assert [n for _id, n, imported in bx.box_tracks(p, mid) if imported] == ["ground truth: tracks.xml"]


def test_the_xml_follows_cvats_documented_structure(project, tmp_path):
    p, mid = project
    out = tmp_path / "t.xml"
    cvat.export(p, mid, out)
    root = ET.parse(out).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert [c.tag for c in root][:2] == ["version", "meta"]
    task = root.find("meta/task")
    assert task.findtext("name") == "clip.mp4" and task.findtext("mode") == "interpolation"
    assert (task.findtext("size"), task.findtext("start_frame"), task.findtext("stop_frame")) == ("100", "0", "99")
    assert (task.findtext("original_size/width"), task.findtext("original_size/height")) == tuple(map(str, SIZE))
    assert root.find("meta/dumped").text
    labels = task.findall("labels/label")
    assert sorted(lab.findtext("name") for lab in labels) == ["bus", "cat", "dog", "person"]
    for lab in labels:
        declared = {a.findtext("name"): a for a in lab.findall("attributes/attribute")}
        assert set(declared) == {"score", "confirmed"}
        assert declared["confirmed"].findtext("input_type") == "checkbox"
        assert all(a.findtext("mutable") == "True" and a.find("default_value") is not None
                   and a.find("values") is not None for a in declared.values())
    keys = {"frame", "keyframe", "outside", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order"}
    for tr in root.findall("track"):
        assert set(tr.attrib) == {"id", "label", "source"} and tr.get("source") == "auto"
        for b in tr.findall("box"):
            assert set(b.attrib) == keys and b.get("keyframe") == "1"
            assert all(len(b.get(k).split(".")[1]) == 2 for k in ("xtl", "ytl", "xbr", "ybr"))
            assert [a.get("name") for a in b.findall("attribute")] == ["score", "confirmed"]

    def frames_of(label: str, outside: str) -> list[int]:
        return [int(b.get("frame")) for b in _track(root, label).findall("box") if b.get("outside") == outside]

    assert frames_of("person", "0") == list(range(0, 100, 5)) and frames_of("person", "1") == []
    assert frames_of("bus", "0") == list(range(0, 31, 5)) and frames_of("bus", "1") == [31]  # gone after 3 s
    assert frames_of("dog", "1") == [36] and frames_of("cat", "1") == [61]
    assert frames_of("dog", "0") == [*range(10, 36, 5), *range(50, 100, 5)]
    person0 = _track(root, "person").find("box")
    assert [person0.get(k) for k in ("xtl", "ytl", "xbr", "ybr")] == ["10.00", "10.40", "50.70", "60.00"]
    assert {a.get("name"): a.text for a in person0.findall("attribute")} == {"score": "0.9", "confirmed": "true"}
    cat = _track(root, "cat").find("box")
    assert {a.get("name"): a.text for a in cat.findall("attribute")} == {"score": "0.41", "confirmed": "false"}


def test_the_dog_is_not_drawn_across_the_samples_it_was_missing_from(project, tmp_path):
    """Between its keyframes at 3.5 s and 5 s CVAT must not interpolate the dog: it was looked for at
    4 s and 4.5 s and not seen. Its last keyframe (9.5 s) is the last sample: it stays to the end."""
    p, mid = project
    out = tmp_path / "t.xml"
    cvat.export(p, mid, out)
    dog = _track(ET.parse(out).getroot(), "dog")
    seq = [(int(b.get("frame")), b.get("outside")) for b in dog.findall("box")]
    i = seq.index((35, "0"))
    assert seq[i + 1] == (36, "1") and seq[i + 2] == (50, "0") and seq[-1] == (95, "0")


def test_a_range_is_a_task_from_its_start_frame_and_reads_back_to_the_video_frames(project, tmp_path):
    p, mid = project
    out = tmp_path / "range.xml"
    res = cvat.export(p, mid, out, start=2.0, end=6.0)
    task = ET.parse(out).getroot().find("meta/task")
    assert (task.findtext("start_frame"), task.findtext("stop_frame"), task.findtext("size")) == ("20", "59", "40")
    assert min(int(b.get("frame")) for b in ET.parse(out).getroot().iter("box")) == 0
    _f, want, _n = bx.collect(p, mid, start=2.0, end=6.0)
    assert res.counts["boxes"] == len(want)
    cvat.import_file(p, mid, out)
    _f, got, _n = bx.collect(p, mid, track="ground truth: range.xml")
    same_boxes(got, want)


def test_cvat_for_images_reads_frames_from_image_ids_and_outside_boxes_are_not_boxes(tmp_path):
    doc = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
  <image id="7" name="frame_000007.png" width="640" height="480">
    <box label="car" occluded="0" xtl="10" ytl="20" xbr="110" ybr="220" z_order="0"/>
    <box label="car" occluded="0" xtl="300" ytl="20" xbr="400" ybr="120" z_order="0"/>
    <polygon label="car" points="1,1;2,2;3,1"/>
  </image>
  <image id="8" name="frame_000008.png" width="640" height="480"/>
</annotations>"""
    got, notes = cvat.parse(doc, frames(), Path("imgs.xml"))
    assert [(b.frame, b.track, b.label) for b in got] == [(7, 1, "car"), (7, 2, "car")]
    assert got[0].box == (5.0, 10.0, 55.0, 110.0)  # drawn on 640x480, the media is 320x240
    assert got[0].t == pytest.approx(7 / FPS)
    assert any("scaled" in n for n in notes) and any("polygon" in n for n in notes)
    video = """<annotations><version>1.1</version><meta><task><original_size><width>320</width>
<height>240</height></original_size></task></meta>
<track id="3" label="van" source="manual">
  <box frame="2" keyframe="1" outside="0" occluded="1" xtl="1" ytl="2" xbr="3" ybr="4" z_order="0"/>
  <box frame="9" keyframe="1" outside="1" occluded="0" xtl="1" ytl="2" xbr="3" ybr="4" z_order="0"/>
  <box frame="12" keyframe="1" outside="0" occluded="0" xtl="5" ytl="6" xbr="7.5" ybr="8" z_order="0"/>
</track></annotations>"""
    got, _notes = cvat.parse(video, frames(), Path("v.xml"))
    assert [(b.frame, b.track, b.label, b.box, b.score) for b in got] == [
        (2, 3, "van", (1.0, 2.0, 3.0, 4.0), None), (12, 3, "van", (5.0, 6.0, 7.5, 8.0), None)]


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotations><version>1.1</version><track id="1" label="&lol3;"><box frame="0" outside="0" xtl="0" ytl="0"
xbr="1" ybr="1"/></track></annotations>"""
EXTERNAL = """<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<annotations><track id="1" label="&x;"/></annotations>"""
TRACK = '<annotations><version>1.1</version><track id="1" label="car">{}</track></annotations>'
BOX = '<box frame="0" keyframe="1" outside="0" occluded="0" xtl="{}" ytl="{}" xbr="{}" ybr="{}" z_order="0"/>'


@pytest.mark.parametrize("doc, words", [
    (BOMB, "DOCTYPE"),
    (EXTERNAL, "DOCTYPE"),
    ("<annotations><track id='1' label='car'><box frame='0'", "not well-formed"),
    ("", "not well-formed"),
    ('<dataset><track id="1" label="car"/></dataset>', "root is <dataset>"),
    ('<annotations><version>2.0</version></annotations>', "version 2.0"),
    ("<annotations><version>1.1</version></annotations>", "holds no boxes"),
    (TRACK.format(BOX.format("nan", 0, 5, 5)), "not a finite number"),
    (TRACK.format(BOX.format(0, 0, "inf", 5)), "not a finite number"),
    (TRACK.format(BOX.format(10, 0, 5, 5)), "inverted"),
    (TRACK.format(BOX.format("a", 0, 5, 5)), "not a number"),
    (TRACK.format(BOX.format(0, 0, 5, 5).replace('frame="0"', 'frame="-3"')), "frame -3"),
    (TRACK.format(BOX.format(0, 0, 5, 5).replace('frame="0"', 'frame="x"')), "not a whole number"),
    (TRACK.format(BOX.format(0, 0, 5, 5) * 2), "two boxes on frame 0"),
    (TRACK.replace(' label="car"', "").format(BOX.format(0, 0, 5, 5)), "no label"),
    ('<annotations><image id="a"><box label="x" xtl="0" ytl="0" xbr="1" ybr="1"/></image></annotations>',
     "not a whole number"),
])
def test_hostile_or_damaged_files_are_one_clear_error(project, tmp_path, doc, words):
    p, mid = project
    f = tmp_path / "bad.xml"
    f.write_text(doc, encoding="utf-8")
    with pytest.raises(HandoffError) as e:
        cvat.import_file(p, mid, f)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "bad.xml" in msg
    assert not [n for _id, n, imported in bx.box_tracks(p, mid) if imported]  # nothing stored


def test_a_media_without_detections_or_an_unwritable_path_is_one_clear_error(project, tmp_path):
    p, mid = project
    other = p.add_media(str(tmp_path / "other.mp4"), "sha256:y", 1, 10.0, "mp4", p.get_media(mid).streams)
    with pytest.raises(HandoffError, match="no detections"):
        cvat.export(p, other, tmp_path / "x.xml")
    with pytest.raises(HandoffError, match="hold no boxes"):
        cvat.export(p, mid, tmp_path / "x.xml", start=10.0)
    with pytest.raises(HandoffError, match="does not exist"):
        cvat.export(p, mid, tmp_path / "missing" / "x.xml")
    assert not (tmp_path / "x.xml").exists()


def test_labels_with_characters_xml_cannot_hold_are_written_readable(tmp_path):
    got = [bx.Box(0.0, 0, 1, "a\x00b<&>", (1.0, 2.0, 3.0, 4.0), None, None)]
    data, _notes = cvat.to_xml(frames(), got, name="x\x01.mp4")
    back, _ = cvat.parse(data, frames(), Path("x.xml"))
    assert back[0].label == "a\ufffdb<&>"
    assert ET.fromstring(data).find("track").findall("box")[0].findall("attribute") == []  # nothing to declare


def test_an_object_that_walks_out_of_an_empty_scene_is_ended_and_a_task_offset_is_kept():
    """Nothing else was detected, so no sample says "not there"; the step between samples does:
    frames 0..30 every 5, then nothing until 80: CVAT must not draw it from 30 to 80, nor after 95
    when the file goes on to frame 199."""
    f = bx.Frames(SIZE[0], SIZE[1], FPS, 20.0, "/videos/clip.mp4")
    seen = [*range(0, 31, 5), *range(80, 96, 5)]
    alone = [bx.Box(f.time_of(k), k, 4, "person", (1.0, 2.0, 3.0, 4.0), 0.5, True) for k in seen]
    data, _notes = cvat.to_xml(f, alone, name="clip.mp4")
    ends = [int(b.get("frame")) for b in ET.fromstring(data).iter("box") if b.get("outside") == "1"]
    assert ends == [31, 96]
    back, _ = cvat.parse(data, f, Path("x.xml"))
    assert [b.frame for b in back] == seen
    images = ('<annotations><version>1.1</version><meta><task><start_frame>100</start_frame>'
              '<frame_filter>step=2</frame_filter></task></meta><image id="3" width="320" height="240">'
              '<box label="car" xtl="0" ytl="0" xbr="1" ybr="1"/></image></annotations>')
    (b,), _ = cvat.parse(images, f, Path("i.xml"))
    assert b.frame == 106 and b.t == pytest.approx(10.6)
