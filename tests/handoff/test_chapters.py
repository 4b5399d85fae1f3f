"""The MP4 copy with chapters (core.handoff.chapters): stored anomaly events and tagged shots
of a real project become a flat list of chapters, read back with PyAV; the copy is the source's
packets, untouched."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen
from core.anomaly.events import AnomalyEvent, Reason, events_track
from core.handoff import chapters
from core.handoff.base import HandoffError, export_with
from core.media.decode import probe
from core.perception import ops
from core.store.project import Project
from core.tagging.index import LATENT_KEY, TAGS_KEY
from projectkit import CancelAfter

FPS, DURATION = 25, 6.0
FRAME = 1.0 / FPS


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return mediagen.make_clip(tmp_path_factory.mktemp("chapters") / "yard.mp4", duration=DURATION, fps=FPS, gop=25)


def _tag(name: str, conf: float, state: str = "auto", kind: str = "object") -> dict:
    return {"name": name, "kind": kind, "confidence": conf, "detail": "", "state": state}


def _project(tmp_path: Path, media: Path, *, events: bool = True, shots: bool = True) -> tuple[Project, int]:
    p = Project.create(tmp_path / "case.kestrel")
    mid = ops.register_media(p, probe(media))
    if events:
        run = p.record_run("anomaly/score", "core.anomaly.pipeline", "3", {"sensitivity": 0.5}, mid, 1.7e9, 1.0)
        evs = [AnomalyEvent(1.0, 2.0, 0.83, 1.2, [Reason("loud_sound", "audio", 0.83, "a bang, loud", 1.2)]),
               # begins inside the first: starts where it ends
               AnomalyEvent(1.5, 2.5, 0.61, 2.2, [Reason("new_object", "video", 0.61, "a horn", 2.2)]),
               AnomalyEvent(4.0, 4.5, 0.9, 4.2, [Reason("loud_sound", "audio", 0.9, "a door", 4.2)],
                            feedback="dismissed")]
        ops.save_track(p, mid, events_track(evs, run))
    if shots:
        # the Tags panel's storage (core.tagging.index.store_index): shot times, tags, clusters, latent
        tags = [[_tag("person", 0.9), _tag("street", 0.8, kind="scene"), _tag("dog", 0.95, "rejected")],
                [_tag("car", 0.2)]]  # only a doubtful tag: no chapter
        p.put_array(mid, TAGS_KEY, np.asarray([[0.0, 3.0], [3.0, 6.0]]),
                    meta={"tags": tags, "clusters": [0, 1], "names": {}, "method": "pca", "notes": []})
        p.put_array(mid, LATENT_KEY, np.zeros((2, 4), np.float32), meta={"method": "pca"})
    return p, mid


def _chapters(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as c:
        return [(float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]), ch["metadata"]["title"])
                for ch in c.chapters()]


def _same(got: list[tuple[float, float, str]], want: list[tuple[float, float, str]]) -> None:
    assert [g[2] for g in got] == [w[2] for w in want]
    for (a, b, _), (x, y, _) in zip(got, want):
        assert abs(a - x) <= FRAME and abs(b - y) <= FRAME


def _video_packets(path: Path) -> str:
    h = hashlib.sha256()
    with av.open(str(path)) as c:
        for pkt in c.demux(c.streams.video[0]):
            if pkt.size:
                h.update(bytes(pkt))
    return h.hexdigest()


SHOT1 = "Shot 1: person, street"


def test_events_win_shots_are_cut_around_them_and_gaps_are_filled(tmp_path, clip):
    p, mid = _project(tmp_path, clip)
    out = tmp_path / "copy" / "yard chapters.mp4"
    with p:
        res = export_with("chapters", p, mid, out)
    assert res.paths == (out,) and os.listdir(out.parent) == [out.name]
    _same(_chapters(out), [(0.0, 1.0, SHOT1), (1.0, 2.0, "Anomaly: a bang, loud (score 0.83)"),
                           (2.0, 2.5, "Anomaly: a horn (score 0.61)"), (2.5, 3.0, SHOT1),
                           (3.0, 6.0, chapters.FILLER)])
    assert res.counts == {"chapters": 5, "events": 2, "shots": 2}
    assert any("dismissed" in n for n in res.notes)
    # a stream copy: the very packets of the source, every frame, and the sound
    assert _video_packets(out) == _video_packets(clip)
    with av.open(str(out)) as c:
        codes = [mediagen.decode_frame_index(f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]
        assert c.streams.audio
    assert codes == list(range(int(DURATION * FPS)))


def test_a_range_chooses_the_chapters_and_the_copy_stays_whole(tmp_path, clip):
    p, mid = _project(tmp_path, clip)
    out = tmp_path / "part.mp4"
    with p:
        chapters.export(p, mid, out, start=2.2, end=6.0)
    _same(_chapters(out), [(0.0, 2.2, chapters.FILLER), (2.2, 2.5, "Anomaly: a horn (score 0.61)"),
                           (2.5, 3.0, SHOT1), (3.0, 6.0, chapters.FILLER)])
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(DURATION, abs=0.05)


def test_an_event_inside_another_joins_its_title():
    e1 = AnomalyEvent(1.0, 3.0, 0.8, 1.5, [Reason("loud_sound", "audio", 0.8, "a bang", 1.5)])
    e2 = AnomalyEvent(1.5, 2.0, 0.5, 1.7, [Reason("new_object", "video", 0.5, "a bus", 1.7)])
    got = chapters.flat_chapters([e2, e1], [], 0.0, 10.0)
    assert got == [chapters.Chapter(1.0, 3.0, "Anomaly: a bang (score 0.80); Anomaly: a bus (score 0.50)")]
    assert chapters.fill_gaps(got, 4.0)[0] == chapters.Chapter(0.0, 1.0, chapters.FILLER)


def test_nothing_to_mark_bad_names_other_codecs_and_cancel_are_clear_errors(tmp_path, clip):
    p, mid = _project(tmp_path, clip, events=False, shots=False)
    with p:
        with pytest.raises(HandoffError, match="no anomaly events or tagged shots"):
            chapters.export(p, mid, tmp_path / "x.mp4")
    (tmp_path / "b").mkdir()
    p2, mid2 = _project(tmp_path / "b", clip)
    avi = mediagen.make_clip(tmp_path / "old.avi", duration=1.0, fps=FPS)  # mpeg4 + PCM: PCM stays out of MP4
    avi_id = ops.register_media(p2, probe(avi))
    with p2:
        with pytest.raises(HandoffError, match="MP4 file"):
            chapters.export(p2, mid2, tmp_path / "x.mkv")
        with pytest.raises(HandoffError, match="without re-encoding"):
            chapters.export(p2, avi_id, tmp_path / "y.mp4")
        from core.jobs import Cancelled
        with pytest.raises(Cancelled):
            chapters.export(p2, mid2, tmp_path / "z" / "c.mp4", state=CancelAfter(0.0))
    assert os.listdir(tmp_path / "z") == []
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()
