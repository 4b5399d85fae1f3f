"""Change gating (core.media.changes) and the jobs that use it: a generated fixed camera (a still,
noisy scene; a bright square crosses it at 50–56 s; a tone at 80 s) scanned in one pass, the
plan dense where it changes and sparse elsewhere, and the analysis and anomaly jobs gated
against their ungated selves on the same file."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from core.jobs import HeadlessState
from core.media.changes import GateParams, dilate, rolling_floor, runs, scan_changes
from core.media.decode import MediaError
from models import catalogue
from models.catalogue import ModelSpec
from models.types import Detection

FPS, GOP, SIZE, DUR = 10, 20, (160, 96), 120.0
SQUARE = (50.0, 56.0)
TONE = (80.0, 80.5)
GATE = GateParams(min_span_s=0.0, static_every_s=10.0)


def _square_box(t: float) -> tuple[int, int, int, int] | None:
    if not SQUARE[0] <= t < SQUARE[1]:
        return None
    x = int((t - SQUARE[0]) / (SQUARE[1] - SQUARE[0]) * (SIZE[0] - 30))
    return x, 30, x + 30, 60


def make_camera(path: Path, duration: float = DUR) -> Path:
    rng = np.random.default_rng(1)
    base = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    base[60:, :] = (60, 110, 60)  # a lawn under a grey wall
    noise = [rng.integers(-6, 7, base.shape, dtype=np.int16) for _ in range(6)]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        vs.options = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "bf": "0", "preset": "ultrafast",
                      "crf": "30"}
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        apos = 0
        for i in range(int(duration * FPS)):
            t = i / FPS
            img = np.clip(base.astype(np.int16) + noise[i % len(noise)], 0, 255).astype(np.uint8)
            box = _square_box(t)
            if box:
                x0, y0, x1, y1 = box
                img[y0:y1, x0:x1] = (250, 250, 40)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                c.mux(p)
            while apos < (i + 1) / FPS * 16000:
                a = rng.normal(0, 0.003, 1024).astype(np.float32)
                ts = (apos + np.arange(1024)) / 16000
                a += np.where((ts >= TONE[0]) & (ts < TONE[1]), 0.4 * np.sin(2 * np.pi * 700 * ts), 0).astype(np.float32)
                af = av.AudioFrame.from_ndarray(a.reshape(1, -1), format="flt", layout="mono")
                af.sample_rate, af.pts = 16000, apos
                for p in aus.encode(af):
                    c.mux(p)
                apos += 1024
        for p in vs.encode():
            c.mux(p)
        for p in aus.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> Path:
    return make_camera(tmp_path_factory.mktemp("gate") / "camera.mp4")


def _covers(intervals, a: float, b: float) -> bool:
    return any(s <= a and e >= b for s, e in intervals)


# -- the scan and the plan -------------------------------------------------------------------

def test_scan_finds_the_square_and_the_tone_and_little_else(camera):
    state = HeadlessState()
    cm = scan_changes(camera, params=GATE, state=state)
    assert _covers(cm.intervals("video"), *SQUARE)
    assert _covers(cm.intervals("audio"), *TONE)
    assert not _covers(cm.intervals("audio"), *SQUARE)  # the square is silent
    assert cm.active_share() < 0.25
    assert cm.keyframes.size == pytest.approx(DUR * FPS / GOP, abs=1)
    assert state.progress > 0.5  # it reported progress while it went


def test_plan_is_dense_where_it_changes_sparse_on_keyframes_elsewhere(camera):
    cm = scan_changes(camera, params=GATE)
    times, holds = cm.plan(2.0)
    assert np.all(np.diff(times) > 0)
    assert times[0] == 0.0
    assert holds.sum() == pytest.approx(cm.end - cm.start, abs=1e-6)
    inside = times[(times >= SQUARE[0]) & (times < SQUARE[1])]
    assert len(inside) == int((SQUARE[1] - SQUARE[0]) * 2)  # every 0.5 s while the square moves
    assert len(times) < 0.4 * DUR * 2
    static = [t for t in times if not cm.is_active(t, t + 0.5)]
    assert static, "static stretches are sampled at all"
    kf = cm.keyframes
    for t in static:  # on (or one grid step after) a keyframe: decoding it costs one frame
        assert np.min(np.abs(kf - t)) < 0.5 + 1e-6
    gaps = np.diff(times)
    assert gaps.max() <= GATE.static_every_s + GOP / FPS + 1e-6  # nothing is left unsampled for long


def test_helpers():
    m = np.zeros(20, bool)
    m[5] = True
    assert np.nonzero(dilate(m, 2))[0].tolist() == [3, 4, 5, 6, 7]
    assert runs(dilate(m, 2), 0.0, 0.5, 10.0) == [(1.5, 4.0)]
    x = np.ones(2400)
    x[1000:1010] = 50.0  # a short burst cannot raise the floor
    floor, top = rolling_floor(x, 1200)
    assert floor.max() == pytest.approx(1.0) and top.max() == pytest.approx(1.0)


def test_a_file_that_cannot_be_scanned_says_so(tmp_path):
    bad = tmp_path / "not-video.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError):
        scan_changes(bad, params=GATE)


# -- the analysis job, gated against itself ungated -------------------------------------------

class SquareDetector:
    """Finds the yellow square by its colour: a known truth for the code around the models."""

    classes = ("square",)

    def __init__(self, spec, where, device, **options):
        self.device = device
        self.frames = 0

    def detect(self, images):
        out = []
        for img in images:
            self.frames += 1
            m = (img[..., 0] > 200) & (img[..., 1] > 200) & (img[..., 2] < 120)
            ys, xs = np.nonzero(m)
            out.append([Detection((float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())), "square",
                                  0.9, 0)] if len(xs) > 20 else [])
        return out


@pytest.fixture
def square_model(monkeypatch):
    spec = ModelSpec(name="square-test", title="Square", task="detect", cls=f"{__name__}:SquareDetector",
                     weights={"package": "numpy", "module": "numpy", "files": []}, version="t1")
    specs = {**catalogue.load_catalogue(), spec.name: spec}
    monkeypatch.setattr(catalogue, "load_catalogue", lambda: specs)
    return spec.name


def test_gated_analysis_finds_the_same_square_from_far_fewer_frames(camera, square_model):
    from core.perception.analysis import AnalysisRequest, analyze, run_params, tracks_for

    def run(gate: bool):
        req = AnalysisRequest(str(camera), models=(square_model,), fps=2.0, gate=gate, gate_params=GATE,
                              confirm=False)
        return req, analyze(req, HeadlessState()).outputs[square_model]

    req, gated = run(True)
    _r, dense = run(False)
    assert len(gated.frames) < 0.4 * len(dense.frames)
    assert gated.gating["rates"]["samples"] == len(gated.frames)
    assert "gate" in run_params(req, catalogue.get_spec(square_model), DUR)

    def span(out):
        tr = next(t for t in tracks_for(out, 0.5) if t.kind == "detections" and t.name.startswith("square"))
        return [(round(i.start, 2), round(i.end, 2)) for i in tr.items]

    assert span(gated) == span(dense)  # the same presence, to the sample
    # each static sample stands until the next: the boxes cover the range without gaps
    ends = np.asarray([t for t, _d in gated.frames] + [DUR])
    assert np.allclose(np.asarray(gated.holds), np.diff(ends))


def test_short_ranges_are_not_gated(camera, square_model):
    from core.perception.analysis import AnalysisRequest, analyze

    req = AnalysisRequest(str(camera), models=(square_model,), fps=2.0, end=30.0, confirm=False)
    out = analyze(req, HeadlessState()).outputs[square_model]  # default gate: ranges under 10 minutes are dense
    assert len(out.frames) == 60 and out.gating is None and "gate" not in out.params


def test_gated_audio_hears_only_the_tone_and_keeps_media_times(camera):
    from core.perception.analysis import AudioMap, audio_pieces

    cm = scan_changes(camera, params=GATE)
    pieces = audio_pieces(cm, 0.0, DUR)
    assert pieces and _covers(pieces, *TONE) and sum(b - a for a, b in pieces) < 15
    amap = AudioMap(pieces)

    from dataclasses import dataclass

    @dataclass
    class S:
        start: float
        end: float

    inner = TONE[0] - pieces[0][0] + amap.offsets[0]
    got = amap.remap(S(inner, inner + 0.5))
    assert got.start == pytest.approx(TONE[0]) and got.end == pytest.approx(TONE[1])


# -- the anomaly pass -------------------------------------------------------------------------

def test_gated_anomaly_pass_computes_few_windows_and_still_flags_the_square(camera):
    from core.anomaly.features import FeatureConfig
    from core.anomaly.pipeline import AnomalyRequest, detect_anomalies
    from models.nn.fusion import TrainParams

    gate = GateParams(min_span_s=0.0, static_every_s=10.0, margin_s=10.0)

    def run(on: bool):
        cfg = FeatureConfig(detector=None, vad=None, gate_params=gate, gate=on)
        return detect_anomalies(AnomalyRequest(str(camera), normal=(0.0, 30.0), features=cfg, thumbnails=False,
                                               train=TrainParams(steps=80)), HeadlessState())

    gated, dense = run(True), run(False)
    note = next(n for n in gated.notes if n.startswith("change gate:"))
    computed, total = (int(x) for x in note.split(":")[1].split("windows")[0].split(" of "))
    assert total == int(DUR) and computed < 0.75 * total
    assert computed == int(gated.features.computed.sum())
    assert gated.features.params["gate"] == gate.params()
    # the square (the network) and the tone (the loud-sound cue) are found, onsets within 1 s, and
    # gating adds no event the ungated pass does not raise too
    want = [e.start for e in dense.events]
    got = [e.start for e in gated.events]
    for onset in (SQUARE[0], TONE[0]):
        assert any(abs(t - onset) <= 1.0 for t in got), (got, onset)
    assert all(any(abs(t - u) <= 1.0 for u in want) for t in got), (got, want)


def test_no_static_samples_where_no_frame_starts():
    from core.media.changes import ChangeMap

    n = 2400  # 1200 s at 0.5 s bins; frames only in the first and last minute (a gap in the timestamps)
    frames = np.zeros(n)
    frames[:120] = 6
    frames[-120:] = 6
    video = np.where(frames > 0, 40.0, np.nan)
    cm = ChangeMap(0.0, 1200.0, GATE, video, None, np.arange(0.0, 1200.0, 2.0), 1000.0, None, frames)
    times, _h = cm.plan(2.0)
    assert not ((times > 70.0) & (times < 1130.0)).any()  # nothing new to see in the gap: no samples there
    assert times[0] == 0.0 and times[-1] >= 1140.0
