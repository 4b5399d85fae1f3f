"""Issue #18 item 5: ``analyze`` and ``anomalies`` over a folder, here and on Ray.

A folder of two tiny generated clips and one damaged file: both clips are computed and stored,
the damaged one reported (one line, no traceback), a second run skips both as unchanged, a
changed file is redone; cancel keeps what finished; ``--ray local`` with one worker runs the
file in another process and stores it here. The models are the cheap ones (voice activity, or
the anomaly pass without normal footage) on clips of 2–3 s.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

import main
import mediagen
from core.jobs import Cancelled, HeadlessState
from core.store.project import Project

VAD = ["--models", "silero-vad"]  # cheap: the folder plumbing is under test, not the models


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))  # the log file
    monkeypatch.setenv("KESTREL_CONFIG_DIR", str(tmp_path / "config"))
    d = tmp_path / "in"
    mediagen.make_clip(d / "a.mp4", duration=2.0)
    mediagen.make_clip(d / "sub" / "b.mp4", duration=3.0)
    mediagen.make_bad(d / "c.mp4", "text")  # named like a video, not one
    return d


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def kinds(project_path: Path, kind: str) -> dict[str, int]:
    """File name → how many ok runs of ``kind`` the project holds for it."""
    with Project.open(project_path, read_only=True) as p:
        return {Path(m.path).name: sum(r.kind == kind and r.status == "ok" for r in p.list_runs(m.id))
                for m in p.list_media()}


def test_analyze_a_folder_then_skip_it_then_redo_a_changed_file(folder, tmp_path, capsys):
    proj = tmp_path / "p.kestrel"
    rc, out, _ = run(["analyze", str(folder), "--project", str(proj), *VAD], capsys)
    assert rc == 0, out
    assert re.search(r"^a\.mp4: analysed, 2\.0 s of media", out, re.M), out
    assert re.search(r"^b\.mp4: analysed, 3\.0 s of media", out, re.M), out
    assert f"skipped {folder / 'c.mp4'}: unreadable: c.mp4 is not a media file FFmpeg can read" in out
    assert re.search(r"^2 analysed, 0 unchanged \(skipped\), 0 failed, 1 unreadable, 0 not media; .*× real time",
                     out, re.M), out
    assert kinds(proj, "analysis/vad") == {"a.mp4": 1, "b.mp4": 1}

    rc, out, _ = run(["analyze", str(folder), "--project", str(proj), *VAD], capsys)
    assert rc == 0 and "a.mp4: unchanged" in out and "b.mp4: unchanged" in out, out
    assert "0 analysed, 2 unchanged (skipped), 0 failed, 1 unreadable" in out

    mediagen.make_clip(folder / "sub" / "b.mp4", duration=2.5)  # the same name, other content
    rc, out, _ = run(["analyze", str(folder), "--project", str(proj), *VAD], capsys)
    assert rc == 0 and "a.mp4: unchanged" in out and re.search(r"^b\.mp4: analysed, 2\.5 s", out, re.M), out
    with Project.open(proj, read_only=True) as p:
        assert sorted(Path(m.path).name for m in p.list_media()) == ["a.mp4", "b.mp4", "b.mp4"]


def test_cancel_keeps_the_finished_files_and_a_rerun_goes_on(folder, tmp_path):
    from core.cluster import find_media
    from core.perception.analysis import AnalysisRequest
    from core.perception.folder import FolderRequest, analyze_folder

    infos, skipped = find_media([folder])
    assert [Path(i.path).name for i in infos] == ["a.mp4", "b.mp4"] and len(skipped) == 1
    with Project.create(tmp_path / "p.kestrel") as project:
        req = FolderRequest(project, (str(folder),), AnalysisRequest("", models=("silero-vad",)))
        st = HeadlessState(on_partial=lambda _outcome: st.cancel())  # stop after the first file
        with pytest.raises(Cancelled):
            analyze_folder(req, st)
        done = analyze_folder(req, HeadlessState())
        assert [(f.name, f.status) for f in done.files] == [("a.mp4", "unchanged"), ("b.mp4", "done"),
                                                            ("c.mp4", "unreadable")]


def test_anomalies_over_a_folder_store_each_file_and_skip_them_next_time(folder, tmp_path, capsys):
    proj = tmp_path / "p.kestrel"
    rc, out, _ = run(["anomalies", str(folder), "--project", str(proj), "--normal", "none"], capsys)
    assert rc == 0, out
    assert re.search(r"^a\.mp4: done, 2\.0 s of media", out, re.M) and re.search(r"^b\.mp4: done, 3\.0 s", out, re.M)
    assert re.search(r"^  \d+ events \(sensitivity 0\.50", out, re.M), out
    assert f"skipped {folder / 'c.mp4'}: unreadable" in out and "2 done, 0 unchanged" in out
    assert kinds(proj, "anomaly/score") == {"a.mp4": 1, "b.mp4": 1}
    rc, out, _ = run(["anomalies", str(folder), "--project", str(proj), "--normal", "none"], capsys)
    assert rc == 0 and "0 done, 2 unchanged (skipped)" in out, out
    rc, out, _ = run(["anomalies", str(folder), "--project", str(proj), "--normal", "none",
                      "--sensitivity", "0.7"], capsys)  # other settings: a new pass for each file
    assert rc == 0 and "2 done, 0 unchanged" in out, out
    assert kinds(proj, "anomaly/score") == {"a.mp4": 2, "b.mp4": 2}


def test_folder_flags_that_cannot_work_are_one_line(folder, tmp_path, capsys, monkeypatch):
    rc, _, err = run(["anomalies", str(folder)], capsys)  # nowhere to store a folder's events
    assert rc == 2 and "need --project" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the cluster extra
    rc, _, err = run(["analyze", str(folder), "--project", str(tmp_path / "p.kestrel"), *VAD, "--ray", "local"],
                     capsys)
    assert rc == 1 and "kestrel: Ray is not installed: pip install 'kestrel[cluster]'" in err, err


def test_ray_local_with_one_worker_runs_elsewhere_and_stores_here(folder, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    proj = tmp_path / "p.kestrel"
    try:
        rc, out, _ = run(["analyze", str(folder / "a.mp4"), "--project", str(proj), "--models", "silero-vad",
                          "--ray", "local", "--ray-workers", "1"], capsys)
        assert rc == 0, out
        where = re.search(r"^a\.mp4: analysed, 2\.0 s of media in [\d.]+ s on [^:]+:(\d+)$", out, re.M)
        assert where and int(where.group(1)) != os.getpid(), out
        assert "1 analysed, 0 unchanged (skipped), 0 failed" in out and "on Ray (1 CPUs; " in out
        assert not ray.is_initialized(), "the command shuts down the Ray instance it started"
        assert kinds(proj, "analysis/vad") == {"a.mp4": 1}
    finally:
        ray.shutdown()
