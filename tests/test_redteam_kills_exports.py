"""Red team R3 (issue #15): kills between the writes of one stored result, and exports of
hostile projects -- no formula cell in any CSV, no write through a link planted in the
export folder."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.focus.search import ArmStat, ChosenFrame, FocusRequest, FocusResult


# ------------------------------------------------------------------------ FOCUS frame export
class _FakeDecoder:
    def __init__(self, *_a: Any, **_k: Any) -> None:
        pass

    def __enter__(self) -> "_FakeDecoder":
        return self

    def __exit__(self, *_exc: Any) -> None:
        pass

    def frame_at(self, t: float) -> SimpleNamespace:
        return SimpleNamespace(image=np.full((8, 8, 3), int(t * 10) % 255, np.uint8))


def _focus_result(query: str = "a bus") -> FocusResult:
    req = FocusRequest(path="/videos/clip.mp4", query=query, k=2)
    frames = (ChosenFrame(1.0, 0.9, 0, True, "top"), ChosenFrame(2.5, 0.8, 0, True, "top"))
    return FocusResult(req, frames, (ArmStat(0, 0.0, 5.0, 0.5, 0.9, 0.9, 3),), ((1.0, 0.9),), 3, 100, 3, "scripted",
                       0.1, (), 5.0, 25.0)


def test_focus_export_replaces_links_planted_in_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.media.decode
    from core.focus.store import export_frames

    monkeypatch.setattr(core.media.decode, "VideoDecoder", _FakeDecoder)
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    for name in ("selection.json", "01_00-00-01.000.png", "02_00-00-02.500.png"):
        (out / name).symlink_to(victim)
    paths = export_frames(_focus_result(), "/videos/clip.mp4", out)
    assert victim.read_text() == "precious"  # never written through the links
    assert [p.name for p in paths] == ["01_00-00-01.000.png", "02_00-00-02.500.png", "selection.json"]
    assert all(p.parent == out and not p.is_symlink() and p.stat().st_size > 0 for p in paths)
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)  # no temporary file left


# ------------------------------------------------------------------------ tagging: one file, one commit
_TAG_CHILD = """
import os, sys
import numpy as np
sys.path.insert(0, "tests")
from core.store.project import Project
from core.media.decode import probe
from core.tagging.archive import FileResult, _Job, _store, FileOutcome
from core.tagging.features import FeatureConfig, TEXT_DIM, audio_columns, feature_params, visual_columns
from core.tagging.shots import Shot, shot_params

def result(path):
    cfg = FeatureConfig(faces=None, ocr=None)
    vc, ac = visual_columns(cfg), audio_columns(cfg)
    shots = [Shot(i, i * 1.0, i * 1.0 + 1.0, i * 25, i * 25 + 25) for i in range(3)]
    vals = {"visual": np.ones((3, len(vc)), np.float32), "audio": np.ones((3, len(ac)), np.float32),
            "text": np.ones((3, TEXT_DIM), np.float32)}
    pres = {m: np.ones(3, bool) for m in vals}
    cols = {"visual": vc, "audio": ac, "text": tuple(f"minilm:{i}" for i in range(TEXT_DIM))}
    return FileResult(path, np.asarray([s.to_row() for s in shots]), vals, pres, cols,
                      [{"start": s.start, "end": s.end} for s in shots], [], shot_params(),
                      feature_params(shots, cfg), timings={"started_at": 1.7e9})

WHICH, PROJECT, CLIP, KILL = sys.argv[1:5]
p = Project.open(PROJECT)
info = probe(CLIP)
if KILL == "1":
    def die(*_a, **_k):
        os._exit(9)  # killed after the shots and features runs, before the file is marked current
    import core.tagging.index as index
    index.set_current = die
    import core.tagging.archive as archive
    archive._set_current = die
if WHICH == "panel":
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import core.tagging.jobs as panel
    if KILL == "1":
        panel.set_current = die
    mid = panel.store_file(p, panel.FileDone(info, result(info.path)))
else:
    from core.perception.ops import register_media
    mid = register_media(p, info)
    _store(p, _Job(info, mid, None, FileOutcome(info.path, mid, "failed")), result(info.path))
p.close()
print("stored", mid)
"""


@pytest.mark.parametrize("which", ["panel", "archive"])
def test_a_kill_while_storing_a_tagged_file_leaves_all_or_nothing(tmp_path: Path, bus_clip: Path, which: str) -> None:
    import subprocess
    import sys

    from core.store.project import Project
    from core.tagging.index import current
    from projectkit import REPO

    proj = tmp_path / "p.kestrel"
    Project.create(proj).close()
    args = [sys.executable, "-c", _TAG_CHILD, which, str(proj), str(bus_clip)]
    killed = subprocess.run([*args, "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    with Project.open(proj) as p:
        media = p.list_media()
        runs = [r for m in media for r in p.list_runs(m.id)]
        assert [r for r in runs if r.status == "ok"] == []  # neither the shots nor the features run alone
        assert all(current(p, m.id) is None for m in media)
    done = subprocess.run([*args, "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("stored"), done.stderr
    with Project.open(proj) as p:
        (m,) = p.list_media()
        assert sorted(r.kind for r in p.list_runs(m.id) if r.status == "ok") == ["tagging/features", "tagging/shots"]
        got = current(p, m.id)
        assert got is not None and len(got[0]) == 3


# ------------------------------------------------------------------------ CSV cells
# text a spreadsheet may still run: after blanks a tab or CR, after invisible or control
# characters an '=', in a compatibility form NFKC folds to '=' or '+'
SNEAKY = (" \t=1", " \r=1", "  \tx", "\u200b=1+1", "\ufeff=HYPERLINK(\"x\")", "\x00=1", "\x1b@SUM(A1)",
          "\u2060-2+3", "\ufe66cmd|' /C calc'!A0", "\ufe62 1", " \u200b =1")


def _live(cell: str) -> bool:
    import unicodedata

    for ch in cell:
        if ch in "\t\r":
            return True
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs"):
            continue
        return unicodedata.normalize("NFKC", ch)[:1] in "=+-@"
    return False


def test_sneaky_formula_cells_are_neutralised_in_both_csv_exports() -> None:
    import csv
    import io

    from core.anomaly.events import AnomalyEvent, Reason
    from core.anomaly.export import events_csv
    from core.exportsafe import safe_cell
    from core.tagging.export import records_csv

    assert [s for s in SNEAKY if safe_cell(s) == s] == []
    assert all(safe_cell(s) == "'" + s for s in SNEAKY)
    assert [safe_cell(s) for s in ("hello", "  a=1", "", "x\t=1", "é=")] == ["hello", "  a=1", "", "x\t=1", "é="]
    ev = [AnomalyEvent(1.0, 2.0, 0.5, 1.5, [Reason(s, s, 0.5, s, 1.5) for s in SNEAKY], feedback=None)]
    recs = [{"file": s, "media_id": 1, "shot": 1, "start": 0.0, "end": 1.0, "duration": 1.0, "cluster": s,
             "description": s, "tags": [{"name": s, "kind": s, "confidence": 0.5, "state": s}]} for s in SNEAKY]
    for text in (events_csv(ev), records_csv(recs)):
        cells = [c for row in csv.reader(io.StringIO(text, newline="")) for c in row]
        assert [c for c in cells if _live(c)] == []
        assert sum(c.startswith("'") for c in cells) >= 3  # kept, as text


# ------------------------------------------------------------------------ tagging: the archive index
_INDEX_CHILD = """
import os, sys
sys.path.insert(0, "tests")
from core.jobs import HeadlessState
from core.store.project import Project
from core.tagging.index import IndexParams, TAGS_KEY, build_index

PROJECT, STAGE = sys.argv[1:3]
p = Project.open(PROJECT)
real, calls = Project.put_array, []
def put_array(self, mid, key, *a, **k):
    if key == TAGS_KEY:
        calls.append(mid)
        if len(calls) == 2:
            os._exit(9)  # killed while storing the second file's index
    return real(self, mid, key, *a, **k)
Project.put_array = put_array
build_index(p, HeadlessState(), IndexParams(epochs=1, seed=7, latent=6, max_clusters=2))
p.close()
print("built")
"""


def test_a_kill_while_storing_the_archive_index_keeps_the_previous_one_whole(tmp_path: Path) -> None:
    import subprocess
    import sys

    from core.store.project import Project
    from core.tagging.index import MODEL_SETTING, load_index
    from projectkit import REPO

    proj = tmp_path / "p.kestrel"
    Project.create(proj).close()

    def child(stage: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _INDEX_CHILD, str(proj), stage], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    from core.jobs import HeadlessState
    from core.tagging.index import IndexParams, build_index
    from projectkit import _fake_archive

    with Project.open(proj) as p:  # the first build, whole
        _fake_archive(p, n_files=3, shots_per=10)
        build_index(p, HeadlessState(), IndexParams(epochs=1, seed=0, max_clusters=3))
        before = load_index(p)
        model = p.get_setting(MODEL_SETTING)
    killed = child("second")
    assert killed.returncode == 9, killed.stderr
    with Project.open(proj) as p:
        after = load_index(p)
        assert p.get_setting(MODEL_SETTING) == model
    assert after.latent.shape == before.latent.shape == (30, 8)  # no file holds the killed build's latent
    assert np.array_equal(after.latent, before.latent) and np.array_equal(after.clusters, before.clusters)
    assert after.names == before.names


# ------------------------------------------------------------------------ two writers, one setting
def _interleave(monkeypatch: pytest.MonkeyPatch, path: Path, first: Any, key: str, other_write: Any) -> str:
    """While ``first`` (a Project) has just read setting ``key``, another writer tries to store:
    it may only if no transaction holds the file (returns "interleaved"), else it waits its
    turn ("locked") and writes after ``first`` is done (the caller runs it then)."""
    import sqlite3

    from core.store.project import Project

    real, seen = Project.get_setting, []

    def get_setting(self: Project, k: str, default: Any = None) -> Any:
        got = real(self, k, default)
        if self is first and k == key and not seen:
            raw = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            except sqlite3.OperationalError as e:
                assert "locked" in str(e)
                seen.append("locked")
            else:
                seen.append("interleaved")
                other_write()
            finally:
                raw.close()
        return got

    monkeypatch.setattr(Project, "get_setting", get_setting)
    return seen


def test_two_writers_editing_tags_lose_no_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.store.project import Project
    from core.tagging.index import EDITS_SETTING, ShotRef, edit_tag

    path = tmp_path / "p.kestrel"
    Project.create(path).close()
    a, b = Project.open(path), Project.open(path)
    try:
        r1, r2 = ShotRef(1, "/a.mp4", 0, 0.0, 1.0, "h1"), ShotRef(2, "/b.mp4", 0, 0.0, 1.0, "h2")
        seen = _interleave(monkeypatch, path, a, EDITS_SETTING, lambda: edit_tag(b, r2, "reject", "car"))
        edit_tag(a, r1, "accept", "person")
        if seen == ["locked"]:
            edit_tag(b, r2, "reject", "car")
        edits = b.get_setting(EDITS_SETTING)
        assert edits[r1.key]["state"] == {"person": "accepted"} and edits[r2.key]["state"] == {"car": "rejected"}
    finally:
        a.close()
        b.close()


def test_two_writers_giving_anomaly_verdicts_lose_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.anomaly.events import FEEDBACK_KEY, AnomalyEvent, set_feedback
    from core.store.project import Project

    path = tmp_path / "p.kestrel"
    Project.create(path).close()
    a, b = Project.open(path), Project.open(path)
    try:
        mid = a.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        e1, e2 = AnomalyEvent(1.0, 2.0, 0.9, 1.5, []), AnomalyEvent(5.0, 6.0, 0.8, 5.5, [])
        seen = _interleave(monkeypatch, path, a, FEEDBACK_KEY, lambda: set_feedback(b, mid, e2, "dismissed"))
        set_feedback(a, mid, e1, "confirmed")
        if seen == ["locked"]:
            set_feedback(b, mid, e2, "dismissed")
        got = {(f["event"], f["verdict"]) for f in b.get_setting(FEEDBACK_KEY)}
        assert got == {(e1.id, "confirmed"), (e2.id, "dismissed")}
    finally:
        a.close()
        b.close()


def test_file_names_from_stored_text_drop_invisible_format_characters() -> None:
    from core.exportsafe import safe_name

    assert safe_name("clip\u202egpj.exe") == "clipgpj.exe"  # no right-to-left override ("exe.jpg" shown)
    assert safe_name("\u200b\ufeff\u2060") == "file" and safe_name("a\u200bb") == "ab"
    assert safe_name("../\u202e../etc/passwd") == "_.._etc_passwd"


# ------------------------------------------------------------------------ reuse only what is still there
def test_a_run_whose_tracks_a_later_run_replaced_is_not_reused(tmp_path: Path) -> None:
    import dataclasses

    from core.perception import ops
    from core.perception.analysis import AnalysisRequest, run_params
    from core.store.project import Project
    from models.catalogue import get_spec
    from projectkit import DURATION, MODEL, detector_output

    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/videos/clip.mp4", "sha256:abc", 1000, DURATION, "mp4", [])
        at2, at1 = (AnalysisRequest(path="/videos/clip.mp4", models=(MODEL,), fps=f) for f in (2.0, 1.0))
        first = ops.store_analysis(p, mid, detector_output(), 0.5)  # fps 2
        assert ops.cached_analysis(p, mid, at2, DURATION) == {MODEL: first}
        out1 = dataclasses.replace(detector_output(), params=run_params(at1, get_spec(MODEL), DURATION))
        second = ops.store_analysis(p, mid, out1, 1.0)  # fps 1 replaces the model's tracks
        assert ops.cached_analysis(p, mid, at1, DURATION) == {MODEL: second}
        assert ops.cached_analysis(p, mid, at2, DURATION) == {}  # its tracks are the fps 1 run's now
        third = ops.store_analysis(p, mid, detector_output(), 0.5)
        assert ops.cached_analysis(p, mid, at2, DURATION) == {MODEL: third}


def test_a_rerun_of_a_detector_leaves_no_class_track_of_its_earlier_run(tmp_path: Path) -> None:
    import dataclasses

    from core.perception import ops
    from core.perception.analysis import AnalysisRequest, run_params
    from core.store.project import Project
    from models.catalogue import get_spec
    from models.types import Detection
    from projectkit import DURATION, MODEL, detector_output

    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/videos/clip.mp4", "sha256:abc", 1000, DURATION, "mp4", [])
        ops.store_analysis(p, mid, detector_output(), 0.5)  # person, bus, dog
        p.save_track(mid, "detections", "cat", [], meta={"model": "another-detector"})  # not this model's
        at1 = AnalysisRequest(path="/videos/clip.mp4", models=(MODEL,), fps=1.0)
        out1 = dataclasses.replace(detector_output(), params=run_params(at1, get_spec(MODEL), DURATION),
                                   frames=[(float(t), [Detection((1.0, 1.0, 9.0, 9.0), "person", 0.9, 1)])
                                           for t in range(10)])
        second = ops.store_analysis(p, mid, out1, 1.0)  # sees only the person
        tracks = {(t.kind, t.name): t.run_id for t in p.load_tracks(mid)}
        assert tracks == {("detections", "person"): second, ("boxes", MODEL): second, ("detections", "cat"): None}


def test_two_detectors_keep_each_its_own_class_tracks(tmp_path: Path) -> None:
    import dataclasses

    from core.perception import ops
    from core.store.project import Project
    from projectkit import DURATION, MODEL, _request, detector_output

    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/videos/clip.mp4", "sha256:abc", 1000, DURATION, "mp4", [])
        first = ops.store_analysis(p, mid, detector_output(), 0.5)  # person, bus, dog
        other = dataclasses.replace(detector_output(), name="yolo-user")
        second = ops.store_analysis(p, mid, other, 0.5)
        tracks = {(t.kind, t.name): t.run_id for t in p.load_tracks(mid)}
        assert {k: v for k, v in tracks.items() if v == first} == {
            ("detections", c): first for c in ("person", "bus", "dog")} | {("boxes", MODEL): first}
        assert {k: v for k, v in tracks.items() if v == second} == {
            ("detections", f"{c} (yolo-user)"): second for c in ("person", "bus", "dog")} | {("boxes", "yolo-user"): second}
        assert ops.cached_analysis(p, mid, _request(), DURATION) == {MODEL: first}
        third = ops.store_analysis(p, mid, other, 0.5)  # the same detector again: its own tracks replaced
        assert sorted(n for (k, n), v in {(t.kind, t.name): t.run_id for t in p.load_tracks(mid)}.items()
                      if v == third) == ["bus (yolo-user)", "dog (yolo-user)", "person (yolo-user)", "yolo-user"]
