"""The chat's live processors, Qt-free, on the real bus clip: the live meter's two encoders and
the live perception log (the window around them: tests/gui/test_gui_chat.py)."""
from __future__ import annotations

import math

import pytest

from core.chat.live import LivePerception, LiveStreamMeter
from core.chat.encoder import EncoderSettings
from core.media.live import LiveSource


def test_the_live_meter_reports_what_the_encoders_measure(bus_clip):
    """Qt-free: the meter's machine kbps is the MachineEncoder's own over the same sampled frames,
    and its human-quality figure is a real H.264 encode of every frame; a new stream resets it."""
    chunks = [c for c in LiveSource(str(bus_clip), realtime=False, audio=False).chunks() if c.kind == "video"]
    meter = LiveStreamMeter(window_s=2.0, every_s=0.5)
    rates = [r for c in chunks for r in meter.feed(c)]
    assert len(rates) >= 4 and all(b.time - a.time >= 0.5 - 1e-9 for a, b in zip(rates, rates[1:]))
    enc = EncoderSettings().make()
    last = -math.inf
    for c in chunks:
        if c.time - last >= 0.999 / 8:
            last = c.time
            enc.push(c.time, c.image, None, None)
        if c.time == rates[-1].time:
            break
    r = rates[-1]
    assert r.kbps == pytest.approx(enc.recent_kbps(2.0)) and r.kbps > 0
    assert r.frames_in == len([c for c in chunks if c.time <= r.time]) and r.frames_sent == enc.stats.frames_sent
    assert r.human_kbps > 10 * r.kbps  # what the machine stream saves, measured
    h, w = chunks[0].image.shape[:2]  # LiveSource fits frames into 1280×720
    assert r.source_size == (w, h) and 0 < r.size[0] <= w
    # a new stream: its clock starts again, the meter starts over
    again = [x for c in chunks[:8] for x in meter.feed(c)]
    assert again and again[-1].frames_in == len([c for c in chunks[:8] if c.time <= again[-1].time])


def test_live_perception_fills_the_chat_log_on_the_live_worker(bus_clip):
    """Qt-free: the real detector at 2 fps on the live frames; an answer gets its own copy."""
    chunks = [c for c in LiveSource(str(bus_clip), realtime=False, audio=False).chunks() if c.kind == "video"]
    perc = LivePerception(fps=2.0)
    for c in chunks:
        assert perc.feed(c) == []
    assert not perc.note, perc.note
    snap = perc.snapshot()
    labels = {o.label for o in snap.observations()}
    assert {"bus", "person"} <= labels, labels
    assert len(snap.frame_times) == len(perc.log.frame_times) == 6  # 3 s at 2 fps
    assert {s.label for s in perc.latest} >= {"bus"}
    perc.feed(chunks[0])  # a new stream: its clock starts again, so does the log
    assert len(perc.log.frame_times) == 1 and len(snap.frame_times) == 6
