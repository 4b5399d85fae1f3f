"""bench/longfootage.py's generator at a tiny size: two minutes of the fixed camera (320×180, 6 fps,
16 s segments) with a person walking through and the real boom. The joined file must be what its
ground truth says: its probed length, audio and video, a keyframe every 2 s, the boom's first
sample where the JSON puts it (no drift from joining AAC segments), and the person in the picture
while the JSON says so (and not before)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import longfootage as lf
from core.media.audio import load_mono
from core.media.decode import VideoDecoder, probe

SPEC = lf.Spec(hours=2 / 60, events=2, size=(320, 180), fps=6, segment_s=16.0)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    return lf.build(SPEC, tmp_path_factory.mktemp("longfootage"), log=lambda _m: None)


def test_plan_is_deterministic_and_keeps_the_normal_stretch_free():
    a, b = lf.plan(SPEC), lf.plan(SPEC)
    assert a == b
    slots, events, normal = a
    assert len(slots) == 8 and normal[0] == 0.0 and normal[1] >= 16.0
    assert [e["kind"] for e in events] == ["person", "loud sound"]
    assert all(normal[1] <= e["onset"] < e["end"] <= 128.0 for e in events)
    assert lf.plan(lf.Spec(hours=2 / 60, events=2, size=(320, 180), fps=6, segment_s=16.0, seed=3))[1] != events


def test_file_matches_its_ground_truth(footage):
    path, meta = footage
    assert json.loads(path.with_suffix(".json").read_text()) == meta
    info = probe(path, with_hash=False)
    assert info.has_video and info.has_audio
    assert info.duration_s == pytest.approx(128.0, abs=0.1) == meta["duration_s"]
    assert (info.video.width, info.video.height) == (320, 180)
    counts = lf.packet_counts(path)
    assert counts["video_packets"] == 128 * 6
    assert counts["keyframes"] == 64  # one every 2 s, across the joins too
    assert counts["audio_packets"] == 128 * 16000 // 1024 + 1  # and the AAC encoder's priming frame

    sound = next(e for e in meta["events"] if e["kind"] == "loud sound")
    a = load_mono(path, 16000, sound["onset"] - 3.0, sound["onset"] + 3.0)
    first = np.nonzero(np.abs(a) > 0.3)[0]
    assert first.size and abs(first[0] / 16000 - 3.0) <= 0.01  # onset to the sample, within AAC's 10 ms
    assert np.abs(a[:int(2.9 * 16000)]).max() < 0.05  # quiet room noise before it

    person = next(e for e in meta["events"] if e["kind"] == "person")
    assert "left→right" in person["what"]  # enters at the left edge
    with VideoDecoder(path) as dec:
        quiet, before, entering, during = (dec.frame_at(t).image.astype(np.float32) for t in (
            person["onset"] - 4.0, person["onset"] - 0.5, person["onset"] + 0.5, (person["onset"] + person["end"]) / 2))
    band, edge = slice(60, 180), (slice(60, 180), slice(0, 10))  # where people walk; the left edge
    noise = np.abs(before[band] - quiet[band]).mean()
    assert noise < 6.0  # sensor noise and compression only
    assert np.abs(before[edge] - quiet[edge]).mean() < 2 * noise + 2.0  # not in view before its onset
    assert np.abs(entering[edge] - quiet[edge]).mean() > 2 * noise + 2.0  # coming in just after it
    assert np.abs(during[band] - quiet[band]).mean() > 2 * noise + 2.0
