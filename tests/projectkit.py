"""Shared helpers and fixtures for the project-file tests."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.jobs import HeadlessState
from core.perception.analysis import AnalysisRequest, ModelOutput, run_params
from models.catalogue import get_spec
from models.types import Detection
from core.store.project import (
    ItemRecord,
    Project,
)

REPO = Path(__file__).resolve().parents[1]

# the detector run that the storage tests store, kill and reuse (tests/store, test_redteam_kills_exports)
MODEL = "ssd-mobilenet-v2-coco"
DURATION = 10.0


def _request() -> AnalysisRequest:
    return AnalysisRequest(path="/videos/clip.mp4", models=(MODEL,), fps=2.0)


def detector_output() -> ModelOutput:
    """What the detector found in 10 s: three classes, so four tracks (3 presence + boxes)."""
    spec = get_spec(MODEL)
    frames = []
    for i in range(20):
        t = i * 0.5
        frames.append((t, [Detection((10.0, 10.0, 50.0, 60.0), "person", 0.9, 1),
                           Detection((60.0, 20.0, 120.0, 90.0), "bus", 0.8, 6),
                           Detection((5.0, 5.0, 20.0, 20.0), "dog", 0.7, 18)]))
    # the job's verdicts (core.perception.confirm): every detection confirmed, so the fixture's tracks
    # are the classes' default presence tracks (tests of unconfirmed ones are in tests/perception)
    verdict = {"confirmed": True, "evidence": {"reason": "confirmed: a fixture's verdict", "hits": 20}}
    return ModelOutput(name=spec.name, title=spec.title, task=spec.task, version=spec.version or "1",
                       params=run_params(_request(), spec, DURATION), frames=frames, frame_size=(320, 240),
                       started_at=1.7e9, duration_s=2.5, evidence=[[verdict] * len(d) for _t, d in frames])


# ----------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def raw(path: Path) -> sqlite3.Connection:
    """A second, independent connection (like another program would open)."""
    return sqlite3.connect(path, isolation_level=None)


def run_sql(path: Path, sql: str) -> None:
    """Run ``sql`` (one or more statements) on the file through such a connection, then close it."""
    c = raw(path)
    c.executescript(sql)
    c.close()


ARRAYS: dict[str, np.ndarray] = {
    "peaks_f16": (np.arange(3 * 50 * 2, dtype=np.float16).reshape(3, 50, 2) / 7).astype(np.float16),
    "f32": np.linspace(-1, 1, 17, dtype=np.float32),
    "f64": np.array([[np.pi, -0.0], [1e300, -1e-300]], dtype=np.float64),
    "i16": np.array([-32768, 0, 32767], dtype=np.int16),
    "i32": np.arange(-5, 5, dtype=np.int32).reshape(2, 5),
    "i64": np.array([2**62, -(2**62)], dtype=np.int64),
    "u8": np.arange(256, dtype=np.uint8),
    "bool": np.array([[True, False, True]]),
    "big_endian": np.arange(6, dtype=">i4").reshape(3, 2),
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "fortran": np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
}


def populate(p: Project) -> dict[str, Any]:
    """Put one of everything into a project; returns what was written."""
    streams = [{"index": 0, "type": "video", "codec": "h264", "fps": 25.0},
               {"index": 1, "type": "audio", "codec": "aac", "rate": 48000}]
    m1 = p.add_media("/videos/a.mp4", "sha256:aaa", 1234, 61.5, "mp4", streams)
    m2 = p.add_media("/videos/b.mkv", "sha256:bbb", 99, None, "matroska", [])
    r1 = p.start_run("vad", "silero", "5.1", {"threshold": 0.5, "min_ms": 250}, media_id=m1)
    p.finish_run(r1)
    r2 = p.start_run("asr", "whisper", "3", {"lang": "en"}, media_id=m1)
    p.finish_run(r2, status="failed", error="out of memory")
    r3 = p.start_run("index", "kestrel", "1", {})
    items = [ItemRecord(0.0, 1.5, "speech", 0.9, r1, {"words": ["hi", "there"]}),
             ItemRecord(2.0, 2.0, "", None, None, {}),
             ItemRecord(1.0, 1.75, "speech", 0.25, r1, {"nested": {"x": [1, 2.5, None, True]}})]
    t1 = p.save_track(m1, "vad", "speech", items, run_id=r1, meta={"color": "#ff0000"})
    t2 = p.save_track(m1, "notes", "analyst", [{"start_s": 5, "end_s": 6, "label": "ü ☃"}])
    for key, arr in ARRAYS.items():
        p.put_array(m1, key, arr, meta={"key": key}, run_id=r1 if key == "peaks_f16" else None)
    p.set_setting("view.zoom", 2.5)
    p.set_setting("recent", ["a", {"b": None}])
    p.set_setting("flag", False)
    return {"m1": m1, "m2": m2, "r1": r1, "r2": r2, "r3": r3, "t1": t1, "t2": t2,
            "streams": streams, "items": items}


def check_populated(p: Project, w: dict[str, Any]) -> None:
    media = p.list_media()
    assert [m.id for m in media] == [w["m1"], w["m2"]]
    a = p.get_media(w["m1"])
    assert (a.path, a.content_hash, a.size_bytes, a.duration_s, a.container) == (
        "/videos/a.mp4", "sha256:aaa", 1234, 61.5, "mp4")
    assert a.streams == w["streams"] and a.added_at.tzinfo is not None
    assert p.get_media(w["m2"]).duration_s is None
    assert p.find_media("/videos/b.mkv") == p.get_media(w["m2"])
    assert p.find_media("/videos/nope.mp4") is None

    runs = {r.id: r for r in p.list_runs()}
    assert set(runs) == {w["r1"], w["r2"], w["r3"]}
    assert runs[w["r1"]].status == "ok" and runs[w["r1"]].params == {"threshold": 0.5, "min_ms": 250}
    ok_run = runs[w["r1"]]
    assert ok_run.duration_s is not None and ok_run.duration_s >= 0
    assert ok_run.finished_at is not None and ok_run.finished_at >= ok_run.started_at
    assert (runs[w["r2"]].status, runs[w["r2"]].error) == ("failed", "out of memory")
    assert (runs[w["r3"]].status, runs[w["r3"]].media_id, runs[w["r3"]].finished_at) == ("running", None, None)
    assert [r.id for r in p.list_runs(media_id=w["m1"])] == [w["r1"], w["r2"]]
    assert p.find_run("vad", "silero", "5.1", {"min_ms": 250, "threshold": 0.5}, w["m1"]) == runs[w["r1"]]

    tracks = p.load_tracks(w["m1"])
    assert [(t.id, t.kind, t.name) for t in tracks] == [(w["t1"], "vad", "speech"), (w["t2"], "notes", "analyst")]
    assert tracks[0].run_id == w["r1"] and tracks[0].meta == {"color": "#ff0000"}
    assert list(tracks[0].items) == sorted(w["items"], key=lambda i: i.start_s)
    assert tracks[1].items == (ItemRecord(5.0, 6.0, "ü ☃"),)
    assert p.load_tracks(w["m2"]) == []

    for key, arr in ARRAYS.items():
        got = p.get_array(w["m1"], key)
        assert got is not None, key
        out, meta = got
        assert meta == {"key": key}
        assert out.shape == arr.shape and out.dtype == arr.dtype.newbyteorder("="), key
        assert out.dtype.isnative and out.flags.writeable
        np.testing.assert_array_equal(out, arr)
    assert p.get_array(w["m1"], "missing") is None and p.get_array(w["m2"], "f32") is None

    assert p.get_setting("view.zoom") == 2.5
    assert p.get_setting("recent") == ["a", {"b": None}]
    assert p.get_setting("flag") is False
    assert p.get_setting("missing", default="dflt") == "dflt"


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    return tmp_path / "case.kestrel"


@pytest.fixture
def filled(project_path: Path) -> tuple[Path, dict[str, Any]]:
    """A closed project file with one of everything in it."""
    with Project.create(project_path) as p:
        written = populate(p)
    return project_path, written


@pytest.fixture
def fast_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Project, "BUSY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(Project, "WRITE_BUSY_TIMEOUT_S", 0.3)


class CancelAfter(HeadlessState):
    """A headless job state that cancels itself once progress reaches ``after``."""

    def __init__(self, after: float):
        super().__init__()
        self.after = after

    def set_progress(self, fraction: float, text: str = "") -> None:
        super().set_progress(fraction, text)
        if fraction >= self.after:
            self.cancel()


# archive tagging's stored features without running models (tests/tagging, test_redteam_kills_exports)
def _fake_archive(p, n_files=3, shots_per=12, seed=0):
    """Stored features for media rows (no models run): three 'sources' with distinct statistics."""
    from core.tagging.features import (FeatureConfig, ShotFeatures, TEXT_DIM, audio_columns, feature_params,
                                       store_features, visual_columns)
    from core.tagging.index import set_current
    from core.tagging.shots import Shot, shot_params

    rng = np.random.default_rng(seed)
    cfg = FeatureConfig(faces=None, ocr=None)
    vc, ac = visual_columns(cfg), audio_columns(cfg)
    for f in range(n_files):
        mid = p.add_media(f"/archive/file{f}.mp4", f"qs256:{f:064x}", 1000, 60.0, "mp4", [])
        shots = [Shot(i, i * 5.0, i * 5.0 + 5.0, i * 125, i * 125 + 125) for i in range(shots_per)]
        base_v, base_a = rng.normal(f * 2, 1, len(vc)), rng.normal(-f * 2, 1, len(ac))
        vals = {"visual": (base_v + rng.normal(0, .3, (shots_per, len(vc)))).astype(np.float32),
                "audio": (base_a + rng.normal(0, .3, (shots_per, len(ac)))).astype(np.float32),
                "text": rng.normal(0, 1, (shots_per, TEXT_DIM)).astype(np.float32)}
        pres = {"visual": np.ones(shots_per, bool), "audio": np.ones(shots_per, bool),
                "text": rng.random(shots_per) > .5}
        feats = ShotFeatures(shots, vals, pres, {"visual": vc, "audio": ac,
                                                 "text": tuple(f"minilm:{i}" for i in range(TEXT_DIM))},
                             [{"start": s.start, "end": s.end, "objects": {"car": 1} if f == 0 else {}} for s in shots],
                             params=feature_params(shots, cfg))
        store_features(p, mid, feats)
        set_current(p, mid, shots, feats.params, shot_params())
