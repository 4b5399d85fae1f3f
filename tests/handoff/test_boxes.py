"""core.handoff.boxes: the boxes of a real project's detector run, read by range; imports stored back."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import mediagen
from core.handoff import boxes as bx
from core.handoff.base import HandoffError
from core.jobs import Cancelled, HeadlessState
from core.perception.analysis import ModelOutput
from core.perception.ops import store_analysis
from core.store.project import Project
from models.types import Detection
from projectkit import MODEL, detector_output

FPS = 10.0


def video_streams(fps: float = FPS, size: tuple[int, int] = (320, 240), rotation: int = 0) -> list[dict]:
    return [{"index": 0, "kind": "video", "codec": "h264", "width": size[0], "height": size[1], "fps": fps,
             "rotation": rotation, "duration_s": 10.0, "frames": 0, "sample_rate": 0, "channels": 0, "layout": ""}]


def tracked_output() -> ModelOutput:
    """tests/projectkit's detector run (20 frames every 0.5 s, a person, a bus and a dog on each,
    analysed at 320x240) with a tracker's object ids: person #1, bus #6, dog #18."""
    out = detector_output()
    out.frames = [(t, [Detection(d.box, d.label, d.score, d.class_id, d.class_id) for d in dets])
                  for t, dets in out.frames]
    return out


def make_project(tmp_path: Path, *, size: tuple[int, int] = (320, 240), rotation: int = 0,
                 store: bool = True) -> tuple[Project, int]:
    """A real project holding a media row (10 fps) and :func:`tracked_output`, stored as the
    analysis job stores it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = Project.create(tmp_path / "p.kestrel")
    mid = p.add_media(str(tmp_path / "clip.mp4"), "sha256:x", 1, 10.0, "mp4", video_streams(size=size,
                                                                                         rotation=rotation))
    if store:
        store_analysis(p, mid, tracked_output(), 0.5)
    return p, mid


@pytest.fixture
def project(tmp_path):
    p, mid = make_project(tmp_path)
    yield p, mid
    p.close()


def test_collect_reads_the_detector_run_sorted_with_frames_ids_and_verdicts(project):
    p, mid = project
    frames, got, name = bx.collect(p, mid)
    assert name == MODEL
    assert (frames.width, frames.height, frames.fps, frames.duration) == (320, 240, FPS, 10.0)
    assert len(got) == 60
    assert [(b.frame, b.track) for b in got] == sorted((5 * i, k) for i in range(20) for k in (1, 6, 18))
    first = {b.track: b for b in got if b.frame == 0}
    assert first[1] == bx.Box(0.0, 0, 1, "person", (10.0, 10.0, 50.0, 60.0), pytest.approx(0.9), True)
    assert first[6].label == "bus" and first[6].box == (60.0, 20.0, 120.0, 90.0)
    assert first[18].label == "dog" and first[18].score == pytest.approx(0.7)
    assert all(b.frame == frames.frame_of(b.t) and b.t == pytest.approx(frames.time_of(b.frame)) for b in got)


def test_a_range_holds_only_the_boxes_whose_frame_time_is_in_it(project):
    p, mid = project
    _f, got, _n = bx.collect(p, mid, start=2.0, end=4.0)
    assert sorted({b.t for b in got}) == [2.0, 2.5, 3.0, 3.5]  # [start, end): 4.0 is the next range's
    assert len(got) == 12
    _f, tail, _n = bx.collect(p, mid, start=9.2)
    assert {b.t for b in tail} == {9.5}
    _f, none, _n = bx.collect(p, mid, start=20.0)
    assert none == []


def test_a_big_track_is_read_in_slices_with_progress_and_cancel(project, monkeypatch):
    p, mid = project
    _f, whole, _n = bx.collect(p, mid)
    monkeypatch.setattr(bx, "CHUNK_ITEMS", 7)  # 60 items: nine slices
    state = HeadlessState()
    seen = []
    state.set_progress = lambda f, text="": seen.append(f)  # type: ignore[method-assign]
    _f, sliced, _n = bx.collect(p, mid, state=state)
    assert sliced == whole
    assert len(seen) >= 9 and seen[-1] == 1.0
    monkeypatch.setattr(p, "track_items", lambda *a, **k: pytest.fail("read after cancel"))
    state.cancel()
    with pytest.raises(Cancelled):
        bx.collect(p, mid, state=state)


def test_boxes_of_a_scaled_down_analysis_are_given_in_pixels_of_the_media_frame(tmp_path):
    p, mid = make_project(tmp_path, size=(640, 480))  # analysed at 320x240 (detector_output's frame_size)
    try:
        frames, got, _n = bx.collect(p, mid)
        assert (frames.width, frames.height) == (640, 480)
        person = next(b for b in got if b.track == 1)
        assert person.box == (20.0, 20.0, 100.0, 120.0)
    finally:
        p.close()


def test_frame_of_names_the_frame_the_decoder_shows_at_a_sampled_time(tmp_path):
    from core.media.decode import VideoDecoder

    clip = mediagen.make_video_only(tmp_path / "v.mp4", duration=2.2, fps=25, size=(96, 64))
    frames = bx.Frames(96, 64, 25.0, 2.2, str(clip))
    dec = VideoDecoder(str(clip))
    try:
        for t in (0.0, 0.5, 1.0, 1.5, 2.0, 0.519, 0.52):  # the default 2 fps plan, and either side of a frame's start
            assert frames.frame_of(t) == mediagen.decode_frame_index(dec.frame_at(t).image), t
    finally:
        dec.close()
    ntsc = bx.Frames(720, 480, 30000 / 1001, 3600.0, "x")
    assert all(ntsc.frame_of(ntsc.time_of(n)) == n for n in range(0, 108_000, 7))
    assert ntsc.nearest_frame(0.467) == 14 and ntsc.frame_of(0.467) == 13  # a rounded frame time vs a moment


def test_a_rotated_video_gives_its_size_as_shown(tmp_path):
    p, mid = make_project(tmp_path, size=(240, 320), rotation=90, store=False)
    try:
        turned = p.add_media(str(tmp_path / "t.mp4"), "sha256:t", 1, 1.0, "mp4", video_streams(size=(240, 320),
                                                                                          rotation=-90))
        upside = p.add_media(str(tmp_path / "u.mp4"), "sha256:u", 1, 1.0, "mp4", video_streams(size=(240, 320),
                                                                                          rotation=180))
        assert [(f.width, f.height) for f in map(lambda m: bx.frames_of(p, m), (mid, turned, upside))] == \
            [(320, 240), (320, 240), (240, 320)]
    finally:
        p.close()


def test_confirmed_only_and_boxes_without_object_ids(tmp_path):
    p, mid = make_project(tmp_path, store=False)
    try:
        out = detector_output()
        out.frames = [(t, [Detection(d.box, d.label, d.score) for d in dets]) for t, dets in out.frames[:4]]
        out.evidence = [[{"confirmed": j != 1, "evidence": {}} for j in range(3)] for _ in range(4)]
        store_analysis(p, mid, out, 0.5)
        _f, got, _n = bx.collect(p, mid)
        assert len(got) == 12 and len({b.track for b in got}) == 12  # one id per box, none shared
        assert [b.confirmed for b in got].count(False) == 4
        _f, ok, _n = bx.collect(p, mid, confirmed_only=True)
        assert len(ok) == 8 and {b.label for b in ok} == {"person", "dog"}
    finally:
        p.close()


def test_the_newest_detector_run_is_the_default_never_an_import(tmp_path):
    p, mid = make_project(tmp_path)
    try:
        other = tracked_output()
        other.name, other.started_at = "yolov8n", other.started_at + 60
        other.frames = other.frames[:2]
        other.evidence = other.evidence[:2]
        store_analysis(p, mid, other, 0.5)
        faces = ModelOutput(name="mtcnn", title="faces", task="faces", version="1", params={},
                            frames=[(0.0, [Detection((1.0, 1.0, 9.0, 9.0), "face", 0.99)])],
                            frame_size=(320, 240), started_at=other.started_at + 60, duration_s=1.0)
        store_analysis(p, mid, faces, 0.5)  # newer, but faces: objects come first
        gt = tmp_path / "gt.json"
        gt.write_text("{}")
        bx.store_import(p, mid, [bx.Box(0.0, 0, 1, "person", (1.0, 2.0, 3.0, 4.0))], fmt="coco", path=gt)
        _f, got, name = bx.collect(p, mid)
        assert name == "yolov8n" and len(got) == 6
        assert bx.collect(p, mid, track=MODEL)[2] == MODEL
        names = {n: imp for _i, n, imp in bx.box_tracks(p, mid)}
        assert names == {MODEL: False, "yolov8n": False, "mtcnn": False, "ground truth: gt.json": True}
        with pytest.raises(HandoffError, match="no boxes track 'nope'"):
            bx.collect(p, mid, track="nope")
    finally:
        p.close()


def test_store_import_makes_the_ground_truth_track_and_replaces_a_second_import(project, tmp_path):
    p, mid = project
    gt = tmp_path / "corrections.json"
    gt.write_bytes(b"the file's bytes")
    boxes = [bx.Box(i / FPS, i, 1 + i % 3, "person" if i % 2 else "car", (i, 2.0, i + 10.5, 30.25),
                    0.5 if i % 2 else None) for i in range(30)]
    res = bx.store_import(p, mid, boxes, fmt="coco", path=gt)
    assert res.items == 30 and "corrections.json" in res.summary and res.notes == ()
    rec = p.load_track(res.track_id)
    assert (rec.kind, rec.name, rec.run_id) == ("boxes", "ground truth: corrections.json", None)
    assert rec.meta == {"imported": True, "format": "coco", "source": str(gt),
                        "sha256": hashlib.sha256(b"the file's bytes").hexdigest()}
    it = rec.items[3]
    assert (it.start_s, it.end_s, it.label, it.confidence) == (pytest.approx(0.3), pytest.approx(0.4), "person", 0.5)
    assert it.data == {"box": [3.0, 2.0, 13.5, 30.25], "size": [320, 240], "track": 1, "source": "ground truth"}
    _f, back, name = bx.collect(p, mid, track="ground truth: corrections.json")
    assert name == "ground truth: corrections.json"
    assert [(b.frame, b.track, b.label, b.box, b.score, b.confirmed) for b in back] == \
        [(b.frame, b.track, b.label, b.box, b.score, None) for b in sorted(boxes, key=lambda b: (b.frame, b.track))]
    again = bx.store_import(p, mid, boxes[:5] + [bx.Box(20.0, 200, 9, "car", (0, 0, 1, 1))], fmt="mot", path=gt)
    assert again.track_id == res.track_id and again.items == 6
    assert "after the end" in again.notes[0]
    assert sum(1 for _i, n, _imp in bx.box_tracks(p, mid) if n.startswith("ground truth")) == 1
    with pytest.raises(HandoffError, match="no boxes"):
        bx.store_import(p, mid, [], fmt="coco", path=gt)


def test_no_detections_unknown_media_and_unknown_frame_rate_are_one_clear_error(tmp_path):
    p, mid = make_project(tmp_path, store=False)
    try:
        with pytest.raises(HandoffError, match="no detections"):
            bx.collect(p, mid)
        with pytest.raises(HandoffError, match="no media file 99"):
            bx.frames_of(p, 99)
        gone = p.add_media(str(tmp_path / "gone.mp4"), "sha256:y", 1, None, "mp4", [])
        with pytest.raises(HandoffError, match="cannot be read"):
            bx.frames_of(p, gone)
    finally:
        p.close()


def test_a_row_without_frame_rate_is_completed_by_probing_the_file(tmp_path):
    clip = mediagen.make_video_only(tmp_path / "v.mp4", duration=1.0, fps=25, size=(160, 120))
    p = Project.create(tmp_path / "p.kestrel")
    try:
        mid = p.add_media(str(clip), "sha256:z", clip.stat().st_size, None, "mp4", [])
        f = bx.frames_of(p, mid)
        assert (f.width, f.height, f.fps, f.media_path) == (160, 120, 25.0, str(clip))
        assert f.duration == pytest.approx(1.0, abs=0.1)
        wav = mediagen.make_audio_only(tmp_path / "a.wav", duration=0.5)
        aid = p.add_media(str(wav), "sha256:w", wav.stat().st_size, 0.5, "wav", [])
        with pytest.raises(HandoffError, match="no video frames"):
            bx.frames_of(p, aid)
    finally:
        p.close()


def test_read_text_and_write_out_fail_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(HandoffError, match="cannot read"):
        bx.read_text(tmp_path / "missing.json", "COCO JSON")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(HandoffError, match="not UTF-8"):
        bx.read_text(tmp_path / "bin.json", "COCO JSON")
    monkeypatch.setattr(bx, "MAX_IMPORT_BYTES", 4)
    with pytest.raises(HandoffError, match="too big"):
        bx.read_text(tmp_path / "bin.json", "COCO JSON")
    with pytest.raises(HandoffError, match="does not exist"):
        bx.write_out(tmp_path / "no" / "x.json", b"{}")
    with pytest.raises(HandoffError, match="is a folder"):
        bx.write_out(tmp_path, b"{}")
    out = bx.write_out(tmp_path / "x.json", b"{}")
    assert out.read_bytes() == b"{}" and sorted(q.name for q in tmp_path.iterdir()) == ["bin.json", "x.json"]
