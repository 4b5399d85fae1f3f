"""A real project whose detector run has objects that come, go and come back: what the keyframed
formats (CVAT for video, Label Studio video) must end and resume (tests/handoff/test_cvat.py,
test_labelstudio.py).

10 s of 320x240 video at 10 fps, sampled every 0.5 s (frames 0, 5, …, 95):

* person #1 on every sample, confirmed, moving right 2.3 px a sample;
* bus #6 from 0 s to 3 s (frames 0–30), then gone;
* dog #18 from 1 s to 3.5 s and again from 5 s (gone at 4 s and 4.5 s: frames 40, 45);
* an untracked, unconfirmed "cat" at 6 s (the store gives it an id of its own).
"""
from __future__ import annotations

from pathlib import Path

from core.handoff import boxes as bx
from core.perception.analysis import ModelOutput
from core.perception.ops import store_analysis
from core.store.project import Project
from models.types import Detection
from projectkit import detector_output

FPS = 10.0
SIZE = (320, 240)
DURATION = 10.0


def streams() -> list[dict]:
    return [{"index": 0, "kind": "video", "codec": "h264", "width": SIZE[0], "height": SIZE[1], "fps": FPS,
             "rotation": 0, "duration_s": DURATION, "frames": 0, "sample_rate": 0, "channels": 0, "layout": ""}]


def output() -> ModelOutput:
    out = detector_output()
    frames, evidence = [], []
    for i in range(20):
        t = i * 0.5
        dets = [Detection((10.0 + 2.3 * i, 10.4, 50.7 + 2.3 * i, 60.0), "person", 0.9 - 0.01 * i, 1, 1)]
        if t <= 3.0:
            dets.append(Detection((60.0, 20.0 + i, 120.5, 90.0 + i), "bus", 0.8, 6, 6))
        if 1.0 <= t <= 3.5 or t >= 5.0:
            dets.append(Detection((5.0 + i, 5.0, 20.0 + i, 20.9), "dog", 0.7, 18, 18))
        if t == 6.0:
            dets.append(Detection((200.0, 100.0, 230.0, 140.0), "cat", 0.41, 17, None))
        frames.append((t, dets))
        evidence.append([{"confirmed": d.label != "cat", "evidence": {"reason": "a test's verdict"}} for d in dets])
    out.frames, out.evidence, out.frame_size = frames, evidence, SIZE
    return out


def make_project(tmp_path: Path) -> tuple[Project, int]:
    """The project (created in ``tmp_path``) and its media id, the detector run stored as the
    analysis job stores it."""
    p = Project.create(tmp_path / "p.kestrel")
    mid = p.add_media(str(tmp_path / "clip.mp4"), "sha256:x", 1, DURATION, "mp4", streams())
    store_analysis(p, mid, output(), 0.5)
    return p, mid


def frames() -> bx.Frames:
    return bx.Frames(SIZE[0], SIZE[1], FPS, DURATION, "/videos/clip.mp4")


def same_boxes(got: list[bx.Box], want: list[bx.Box], *, scores: bool = True) -> None:
    """Imported boxes are the exported ones: frame-exact, same ids and labels, corners within
    0.01 px (and the same scores, where the format carries them per box)."""
    assert [(b.frame, b.track, b.label) for b in got] == [(b.frame, b.track, b.label) for b in want]
    for g, w in zip(got, want):
        assert max(abs(a - b) for a, b in zip(g.box, w.box)) <= 0.01, (g, w)
        if scores:
            assert (g.score is None) == (w.score is None) and abs((g.score or 0) - (w.score or 0)) < 1e-6, (g, w)
