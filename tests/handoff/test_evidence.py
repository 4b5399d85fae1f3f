"""The evidence package (core.handoff.evidence): a generated clip with sound in a real project
with a detector run, an anomaly run and a transcript; the clip is decoded back and its frames
read (mediagen's frame code says which source frame each one is)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import av
import pytest

import mediagen
from core.anomaly.events import AnomalyEvent, Reason, events_track
from core.handoff import evidence
from core.handoff.base import HandoffError, export_with
from core.jobs import Cancelled, HeadlessState
from core.media.decode import probe
from core.perception import ops
from core.store.project import Project
from core.timeline import Item, Track
from projectkit import CancelAfter

FPS, GOP, DURATION = 25, 25, 4.0  # a keyframe every second
DETECTOR = "ssd-mobilenet-v2-coco"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return mediagen.make_clip(tmp_path_factory.mktemp("evidence") / "gate cam.mp4", duration=DURATION, fps=FPS,
                              gop=GOP, tone=(1.0, 2.0, 440.0, 0.5))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _project(tmp_path: Path, media: Path) -> tuple[Project, int, dict[str, int]]:
    """A project with the clip, a detector run (boxes every 0.5 s: a confirmed person, an
    unconfirmed dog), an anomaly run with one event and an ASR run with a transcript."""
    p = Project.create(tmp_path / "case.kestrel")
    mid = ops.register_media(p, probe(media))
    det = p.record_run("analysis/detect", DETECTOR, "2", {"fps": 2.0, "score": 0.5, "train": {"seed": 7}}, mid,
                       1.7e9, 2.5)
    boxes = []
    for k in range(8):
        t = k * 0.5
        boxes.append(Item(t, t + 0.5, "person", 0.6 + k * 0.04, det,
                          {"box": [10.0, 10.0, 50.0, 60.0], "size": [320, 240], "model": DETECTOR, "track": 1,
                           "confirmed": True}))
        boxes.append(Item(t, t + 0.5, "dog", 0.55, det, {"box": [5.0, 5.0, 20.0, 20.0], "size": [320, 240],
                                                          "model": DETECTOR, "track": 2, "confirmed": False}))
    ops.save_track(p, mid, Track("boxes", DETECTOR, boxes, run_id=det, meta={"model": DETECTOR, "task": "detect"}))
    ops.save_track(p, mid, Track("detections", "person", [Item(0.0, 4.0, "person", 0.9, det)], run_id=det))
    an = p.record_run("anomaly/score", "core.anomaly.pipeline", "3", {"sensitivity": 0.5, "seed": 11}, mid, 1.7e9, 1.0)
    ev = AnomalyEvent(1.4, 2.1, 0.83, 1.6, [Reason("loud_sound", "audio", 0.83, "a bang, loud", 1.6)])
    ops.save_track(p, mid, events_track([ev], an))
    asr = p.record_run("analysis/asr", "whisper-tiny", "1", {"language": "en"}, mid, 1.7e9, 0.5)
    ops.save_track(p, mid, Track("speech", "transcript", [Item(0.2, 0.9, "open the gate", 0.8, asr),
                                                          Item(1.5, 2.4, "who is there", 0.7, asr)], run_id=asr))
    trained = p.record_run("anomaly/model", "models.nn.fusion", "1", {"epochs": 3, "seed": 5}, mid, 1.7e9, 4.0)
    return p, mid, {"detector": det, "anomaly": an, "asr": asr, "trained": trained}


def _frame_codes(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [mediagen.decode_frame_index(f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def test_a_range_on_a_keyframe_is_stream_copied_with_its_hashes_runs_and_findings(tmp_path, clip):
    p, mid, runs = _project(tmp_path, clip)
    with p:
        res = export_with("evidence", p, mid, tmp_path / "out", start=1.0, end=2.5, state=HeadlessState())
    clip_path, sidecar = res.paths
    assert clip_path.parent == sidecar.parent and clip_path.parent.parent == tmp_path / "out"
    assert sorted(os.listdir(tmp_path / "out")) == [clip_path.parent.name]  # no temporary folder left
    doc = json.loads(sidecar.read_text(encoding="utf-8"))
    # the hashes are those of the files
    assert doc["source"]["sha256"] == _sha(clip) and doc["source"]["size_bytes"] == clip.stat().st_size
    assert doc["clip"]["sha256"] == _sha(clip_path) and doc["clip"]["path"] == clip_path.name
    # a stream copy from the keyframe at 1.0 s: the source's frames 25.. bit for bit, to the requested end
    assert doc["clip"]["method"] == "stream copy" and "keyframe" in doc["clip"]["why"]
    assert doc["clip"]["codec"] == "h264/aac"
    codes = _frame_codes(clip_path)
    assert codes[0] == 25 and codes == list(range(25, 25 + len(codes)))
    assert 62 in codes  # the last requested frame (2.48 s) is there
    assert doc["clip"]["start_s"] == 1.0
    assert doc["clip"]["end_s"] == pytest.approx(1.0 + len(codes) / FPS, abs=0.05)
    with av.open(str(clip_path)) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    assert doc["range"] == {"requested_start_s": 1.0, "requested_end_s": 2.5, "start_s": 1.0, "end_s": 2.5}
    # every run with results in the range, as stored; the trained model among the supporting runs
    by_id = {r["id"]: r for r in doc["runs"]}
    assert set(by_id) == {runs["detector"], runs["anomaly"], runs["asr"]}
    det = by_id[runs["detector"]]
    assert det["producer"] == DETECTOR and det["version"] == "2" and det["params"]["score"] == 0.5
    assert det["seeds"] == {"train.seed": 7} and det["status"] == "ok" and det["duration_s"] == 2.5
    assert by_id[runs["anomaly"]]["seeds"] == {"seed": 11}
    assert [r["id"] for r in doc["supporting_runs"]] == [runs["trained"]]
    # the findings in the range
    f = doc["findings"]
    assert [e["id"] for e in f["anomaly_events"]] == ["ev-1400"] and f["anomaly_events"][0]["peak"] == 0.83
    assert "event" not in f
    (d,) = f["detections"]
    assert d["track"] == DETECTOR and d["run_id"] == runs["detector"]
    classes = {c["label"]: c for c in d["classes"]}
    # frames at 1.0, 1.5 and 2.0 s start in [1.0, 2.5)
    assert classes["person"] == {"label": "person", "count": 3, "confirmed": 3, "max_score": 0.76}
    assert classes["dog"] == {"label": "dog", "count": 3, "confirmed": 0, "max_score": 0.55}
    assert [s["text"] for s in f["transcript"]] == ["who is there"]
    assert "sha256sum" in doc["verify"]
    assert res.counts["detections"] == 6 and res.counts["events"] == 1


def test_a_range_off_keyframe_is_re_encoded_on_the_exact_frame(tmp_path, clip):
    p, mid, _runs = _project(tmp_path, clip)
    with p:
        res = evidence.export(p, mid, tmp_path / "out", start=1.3, end=2.0)
    clip_path, sidecar = res.paths
    doc = json.loads(sidecar.read_text(encoding="utf-8"))
    assert doc["clip"]["method"] == "re-encoded" and "not on a keyframe" in doc["clip"]["why"]
    assert doc["clip"]["sha256"] == _sha(clip_path) and doc["source"]["sha256"] == _sha(clip)
    codes = _frame_codes(clip_path)
    assert codes[0] == 33 and codes[-1] in (49, 50)  # the first frame at or after 1.3 s (1.32 s), to 2.0 s
    assert doc["clip"]["start_s"] == 1.3
    assert doc["runs"] and doc["findings"]["anomaly_events"][0]["id"] == "ev-1400"


def test_an_event_package_holds_the_event_first_and_its_padded_range(tmp_path, clip):
    p, mid, _runs = _project(tmp_path, clip)
    with p:
        res = evidence.export_event(p, mid, "ev-1400", tmp_path / "out", pad=0.4)
        with pytest.raises(HandoffError, match="no anomaly event"):
            evidence.export_event(p, mid, "ev-9999", tmp_path / "out2")
    doc = json.loads(res.paths[1].read_text(encoding="utf-8"))
    assert list(doc["findings"])[0] == "event" and doc["findings"]["event"]["id"] == "ev-1400"
    assert doc["findings"]["event"]["reasons"][0]["text"] == "a bang, loud"
    assert doc["range"]["start_s"] == pytest.approx(1.0) and doc["range"]["end_s"] == pytest.approx(2.5)
    assert doc["range"]["event_pad_s"] == 0.4
    assert doc["clip"]["method"] == "stream copy"  # 1.4 - 0.4 = 1.0 s: on the keyframe
    assert "loud-sound" in res.paths[0].parent.name


def test_a_cancel_leaves_nothing_and_an_existing_package_is_never_replaced(tmp_path, clip):
    p, mid, _runs = _project(tmp_path, clip)
    out = tmp_path / "out"
    with p:
        for start in (1.0, 1.3):  # stream copy and re-encode
            with pytest.raises(Cancelled):
                evidence.export(p, mid, out, start=start, end=2.0, state=CancelAfter(0.3))
            assert os.listdir(out) == []
        first = evidence.export(p, mid, out, start=0.0, end=1.0)
        before = _sha(first.paths[0])
        with pytest.raises(HandoffError, match="exists already"):
            evidence.export(p, mid, out, start=0.0, end=1.0)
        assert _sha(first.paths[0]) == before and len(os.listdir(out)) == 1


def test_bad_sources_ranges_and_folders_are_one_clear_error(tmp_path, clip):
    p, mid, _runs = _project(tmp_path, clip)
    text = mediagen.make_text_as_mp4(tmp_path / "not video.mp4")
    bad = p.add_media(str(text), "qs256:" + "0" * 64, text.stat().st_size, 3.0, "mp4", [])
    gone = p.add_media(str(tmp_path / "gone.mp4"), "qs256:" + "1" * 64, 10, 3.0, "mp4", [])
    (tmp_path / "a file").write_text("x")
    with p:
        for media_id in (bad, gone):
            with pytest.raises(HandoffError):
                evidence.export(p, media_id, tmp_path / "out")
        with pytest.raises(HandoffError, match="after the end"):
            evidence.export(p, mid, tmp_path / "out", start=10.0)
        with pytest.raises(HandoffError, match="is a file"):
            evidence.export(p, mid, tmp_path / "a file")
        with pytest.raises(HandoffError, match="no media file"):
            evidence.export(p, 999, tmp_path / "out")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_a_source_changed_since_the_analysis_is_refused(tmp_path, clip):
    copy = tmp_path / "cam.mp4"
    copy.write_bytes(clip.read_bytes())
    p, mid, _runs = _project(tmp_path, copy)
    mediagen.make_clip(copy, duration=2.0, fps=FPS, gop=GOP)  # another recording under the same name
    with p, pytest.raises(HandoffError, match="changed since"):
        evidence.export(p, mid, tmp_path / "out")


def test_codecs_mp4_does_not_take_are_re_encoded_and_say_so(tmp_path):
    webm = mediagen.make_clip(tmp_path / "phone.webm", duration=0.5, fps=FPS)  # VP8 + Opus
    p = Project.create(tmp_path / "case.kestrel")
    with p:
        mid = ops.register_media(p, probe(webm))
        res = evidence.export(p, mid, tmp_path / "out")
    doc = json.loads(res.paths[1].read_text(encoding="utf-8"))
    assert doc["clip"]["method"] == "re-encoded" and "does not go into MP4" in doc["clip"]["why"]
    assert doc["clip"]["codec"] == "h264/aac" and doc["source"]["streams"][0]["codec"] == "vp8"
    assert _frame_codes(res.paths[0])[:3] == [0, 1, 2]
    assert doc["runs"] == [] and doc["findings"]["detections"] == []


def test_real_footage_a_phone_clip_keeps_its_turn_and_a_cut_on_a_keyframe_is_copied(tmp_path, sample):
    p = Project.create(tmp_path / "case.kestrel")
    with p:
        phone = ops.register_media(p, probe(sample("rotated")))  # -90° display matrix, audio first
        whole = evidence.export(p, phone, tmp_path / "out")
        bikes = ops.register_media(p, probe(sample("bikes")))  # a keyframe at the cut at 1.20 s
        cut = evidence.export(p, bikes, tmp_path / "out", start=1.2, end=3.0)
    doc = json.loads(whole.paths[1].read_text(encoding="utf-8"))
    assert doc["clip"]["method"] == "stream copy"
    assert probe(whole.paths[0]).video.rotation == probe(sample("rotated")).video.rotation == 270
    doc = json.loads(cut.paths[1].read_text(encoding="utf-8"))
    assert doc["clip"]["method"] == "stream copy" and doc["clip"]["start_s"] == pytest.approx(1.2, abs=0.02)
    assert doc["clip"]["end_s"] >= 3.0 - 0.04 and doc["clip"]["sha256"] == _sha(cut.paths[0])
    with av.open(str(cut.paths[0])) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) >= round(1.8 * 25)
