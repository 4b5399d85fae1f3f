"""Tests for core.project: the .kestrel SQLite project file (real files in tmp_path)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from sqlalchemy import Connection

from core import dbschema
from core.project import (
    ItemRecord,
    NotAProjectError,
    Project,
    ProjectCorruptError,
    ProjectError,
    ProjectLockedError,
    ProjectNewerSchemaError,
    ProjectReadOnlyError,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def raw(path: Path) -> sqlite3.Connection:
    """A second, independent connection (like another program would open)."""
    return sqlite3.connect(path, isolation_level=None)


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


# ----------------------------------------------------------------------------- happy paths
def test_round_trip_and_reopen(project_path: Path) -> None:
    p = Project.create(project_path)
    assert p.path == project_path and not p.read_only and not p.is_temporary and p.warnings == []
    assert p.schema_version == Project.SCHEMA_VERSION == 1
    written = populate(p)
    check_populated(p, written)
    p.close()
    p.close()  # idempotent
    with pytest.raises(ProjectError, match="closed"):
        p.list_media()
    with Project.open(project_path) as again:
        check_populated(again, written)
    assert dir_listing(project_path.parent) == ["case.kestrel"]  # WAL files gone after close


def test_file_format(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    with Project.open(path) as p:
        c = raw(path)
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA application_id").fetchone()[0] == 0x4B535452 == Project.APPLICATION_ID
        meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        assert meta["schema_version"] == "1" and meta["created_at"] and meta["app_version"].startswith("kestrel")
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "ix_items_track_start" in indexes
        c.close()
        with p._engine.connect() as conn:  # pragmas of the connections the Project uses
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
            assert conn.exec_driver_sql("PRAGMA trusted_schema").scalar() == 0
    source = (REPO / "core" / "project.py").read_text() + (REPO / "core" / "dbschema.py").read_text()
    for forbidden in ("import pickle", "from pickle", "import PySide6", "from PySide6", "np.load(", "allow_pickle"):
        assert forbidden not in source


def test_qt_free_import() -> None:
    # (pickle itself gets imported by numpy; the source check in test_file_format covers its use)
    code = "import sys, core.project; assert not [m for m in sys.modules if m.startswith('PySide6')]"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_save_as(filled: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, written = filled
    old = Project.open(path)
    old.set_setting("unsaved", 1)
    target = tmp_path / "sub" / "copy.kestrel"
    with pytest.raises(ProjectError, match="does not exist"):
        old.save_as(target)
    target.parent.mkdir()
    target.write_bytes(b"previous content")  # Save As replaces whatever was there
    Path(f"{target}-wal").write_bytes(b"stale wal of an older file")
    new = old.save_as(target)
    assert new.path == target and not new.read_only
    check_populated(new, written)
    assert new.get_setting("unsaved") == 1
    # Both stay valid and independent.
    old.set_setting("only_old", True)
    new.set_setting("only_new", True)
    assert new.get_setting("only_old") is None and old.get_setting("only_new") is None
    with pytest.raises(ProjectError, match="already stored"):
        old.save_as(path)
    old.close()
    new.close()
    with Project.open(target) as reopened:
        check_populated(reopened, written)
        assert reopened.get_setting("only_new") is True
    assert not [n for n in dir_listing(target.parent) if n != "copy.kestrel"]


def test_awkward_file_names(tmp_path: Path) -> None:
    path = tmp_path / "dir with space #1" / "case ?%20 ü&mode=memory.kestrel"
    path.parent.mkdir()
    with Project.create(path) as p:
        p.set_setting("k", "v")
        with p.save_as(path.with_name("copy #2?.kestrel")) as q:
            assert q.get_setting("k") == "v"
    with Project.open(path, read_only=True) as p:
        assert p.get_setting("k") == "v"
    assert {"case ?%20 ü&mode=memory.kestrel", "copy #2?.kestrel"} <= set(os.listdir(path.parent))


def test_temporary_project(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "autosave"
    p = Project.create_temporary(tmp_dir)
    assert p.is_temporary and p.path.parent == tmp_dir and p.path.suffix == ".kestrel"
    m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
    named = p.save_as(tmp_path / "named.kestrel")
    assert not named.is_temporary and named.get_media(m).path == "/v.mp4"
    p.close()  # saved elsewhere: the untitled file goes away
    assert dir_listing(tmp_dir) == []
    named.close()

    q = Project.create_temporary(tmp_dir)
    q.add_media("/w.mp4", "h", 1, 1.0, "mp4", [])
    q.close()  # never saved: kept (crash/close without decision) and reopenable
    assert len(dir_listing(tmp_dir)) == 1
    r = Project.open(q.path)
    r.close()
    s = Project.create_temporary(tmp_dir)
    s.discard()
    assert len(dir_listing(tmp_dir)) == 1
    with pytest.raises(ValueError):
        Project.open(q.path).discard()


def test_create_rules(project_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project_path.write_bytes(b"")
    Project.create(project_path).close()  # a zero-byte file may be created over
    with pytest.raises(ProjectError, match="already exists") as err:
        Project.create(project_path)
    assert str(project_path) in str(err.value)
    with Project.open(project_path) as p:
        p.set_setting("x", 1)
    before = sha256(project_path)

    def broken_schema(conn: Connection) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(dbschema, "create_schema", broken_schema)
    with pytest.raises(ProjectError, match="disk on fire"):
        Project.create(project_path, overwrite=True)
    assert sha256(project_path) == before  # failed overwrite lost nothing
    with pytest.raises(ProjectError):
        Project.create(project_path.parent / "new.kestrel")
    assert dir_listing(project_path.parent) == ["case.kestrel"]  # no half-created files
    monkeypatch.undo()

    with Project.create(project_path, overwrite=True) as fresh:
        assert fresh.get_setting("x") is None
    with pytest.raises(ProjectError, match="does not exist"):
        Project.create(project_path.parent / "missing" / "x.kestrel")
    with pytest.raises(ProjectError, match="folder"):
        Project.create(project_path.parent)


# ----------------------------------------------------------------------------- API semantics
def test_media_idempotence_and_cascade(project_path: Path) -> None:
    with Project.create(project_path) as p:
        a = p.add_media("/v.mp4", "h1", 10, 2.0, "mp4", [{"i": 0}])
        assert p.add_media("/v.mp4", "h1", 10, 2.0, "mp4", [{"i": 0}]) == a
        b = p.add_media("/v.mp4", "h2", 11, 2.0, "mp4", [])  # file changed on disk: new row
        newest = p.find_media("/v.mp4")
        assert b != a and newest is not None and newest.id == b and len(p.list_media()) == 2
        other = p.add_media("/o.mp4", "h", 1, 1.0, "mp4", [])
        run = p.start_run("vad", "x", "1", {}, media_id=a)
        p.finish_run(run)
        p.save_track(a, "vad", "s", [ItemRecord(0, 1, run_id=run)], run_id=run)
        p.put_array(a, "peaks", np.zeros(4, np.float32), run_id=run)
        keep = p.save_track(other, "vad", "s", [ItemRecord(0, 1)])
        p.put_array(other, "peaks", np.ones(2, np.int16))
        p.remove_media(a)
        with pytest.raises(KeyError):
            p.get_media(a)
        with pytest.raises(KeyError):
            p.remove_media(a)
        assert p.load_tracks(a) == [] and p.get_array(a, "peaks") is None and p.list_runs(a) == []
        assert p.find_run("vad", "x", "1", {}, a) is None
        assert [t.id for t in p.load_tracks(other)] == [keep] and p.get_array(other, "peaks") is not None
        c = raw(project_path)
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 1
        c.close()
        with pytest.raises(TypeError):
            p.add_media("/x", "h", 1, 1.0, "mp4", "not a list")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            p.add_media("/x", "h", -1, 1.0, "mp4", [])


def test_runs(project_path: Path) -> None:
    with Project.create(project_path) as p:
        m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        params = {"b": [1, 2], "a": {"y": 1, "x": 2}}
        first = p.start_run("vad", "silero", "5", params, m)
        assert p.find_run("vad", "silero", "5", params, m) is None  # still running
        p.finish_run(first)
        second = p.start_run("vad", "silero", "5", {"a": {"x": 2, "y": 1}, "b": [1, 2]}, m)
        p.finish_run(second)
        failed = p.start_run("vad", "silero", "5", params, m)
        p.finish_run(failed, "failed", "boom")
        cancelled = p.start_run("vad", "silero", "5", params, m)
        p.finish_run(cancelled, "cancelled")
        found = p.find_run("vad", "silero", "5", params, m)
        assert found is not None and found.id == second  # latest ok one
        assert p.find_run("vad", "silero", "6", params, m) is None
        assert p.find_run("vad", "silero", "5", {**params, "c": 1}, m) is None
        assert p.find_run("vad", "silero", "5", params, None) is None
        glob = p.start_run("vad", "silero", "5", params)
        p.finish_run(glob)
        assert p.find_run("vad", "silero", "5", params).id == glob  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="already finished"):
            p.finish_run(first)
        with pytest.raises(ValueError):
            p.finish_run(p.start_run("k", "p", "v", {}), status="running")
        with pytest.raises(KeyError):
            p.finish_run(9999)
        with pytest.raises(KeyError):
            p.start_run("k", "p", "v", {}, media_id=9999)
        with pytest.raises(ValueError):
            p.start_run("k", "p", "v", {"x": float("nan")})
        with pytest.raises(TypeError):
            p.start_run("k", "p", "v", {"x": object()})


def test_tracks(project_path: Path) -> None:
    with Project.create(project_path) as p:
        m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        run = p.start_run("det", "yolo", "8", {})
        t = p.save_track(m, "det", "people", [ItemRecord(1, 2), ItemRecord(0, 1)], run_id=run)
        assert p.save_track(m, "det", "people", [ItemRecord(5, 6, "new")], meta={"v": 2}) == t  # replaced
        [track] = p.load_tracks(m)
        assert track.items == (ItemRecord(5, 6, "new"),) and track.meta == {"v": 2} and track.run_id is None
        dup = p.save_track(m, "det", "people", [ItemRecord(7, 8)], replace=False)
        assert dup != t and len(p.load_tracks(m)) == 2
        assert p.append_items(t, [ItemRecord(0.5, 0.6, run_id=run), {"start_s": 9, "end_s": 9.5}]) == 2
        assert [i.start_s for i in p.load_tracks(m)[0].items] == [0.5, 5.0, 9.0]
        assert p.save_track(m, "det", "people", []) == t  # replace=True also removes duplicates
        assert [(x.id, x.items) for x in p.load_tracks(m)] == [(t, ())]
        p.delete_track(t)
        assert p.load_tracks(m) == []
        with pytest.raises(KeyError):
            p.delete_track(t)
        with pytest.raises(KeyError):
            p.append_items(t, [ItemRecord(0, 1)])
        with pytest.raises(KeyError):
            p.save_track(999, "k", "n", [])
        with pytest.raises(KeyError):
            p.save_track(m, "k", "n", [ItemRecord(0, 1, run_id=999)])
        with pytest.raises(ValueError):
            p.save_track(m, "k", "n", [ItemRecord(2, 1)])
        with pytest.raises(ValueError):
            p.save_track(m, "k", "n", [ItemRecord(float("nan"), 1)])
        with pytest.raises(TypeError):
            p.save_track(m, "k", "n", [{"start_s": 0, "end_s": 1, "bogus": 1}])
        assert p.load_tracks(m) == []  # nothing half-written by the failures


def test_arrays_rejects_unsafe_dtypes(project_path: Path) -> None:
    with Project.create(project_path) as p:
        m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        for bad in (np.array([object()]), np.array([1 + 2j]), np.array(["text"]),
                    np.zeros(2, dtype=[("a", "f4")]), np.array(["2020-01-01"], dtype="datetime64[D]")):
            with pytest.raises(ValueError, match="cannot be stored"):
                p.put_array(m, "bad", bad)
        p.put_array(m, "k", np.zeros(3, np.float32))
        p.put_array(m, "k", np.ones((2, 2), np.int64), meta={"v": 2})  # replace
        out, meta = p.get_array(m, "k")  # type: ignore[misc]
        assert out.dtype == np.int64 and out.shape == (2, 2) and meta == {"v": 2}


def test_concurrent_readers_one_writer(project_path: Path) -> None:
    with Project.create(project_path) as p:
        m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        t = p.save_track(m, "k", "n", [])
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    counts = [len(tr.items) for tr in p.load_tracks(m)]
                    assert counts and counts[0] % 10 == 0  # whole transactions only
                    p.list_media()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for th in threads:
            th.start()
        for n in range(40):
            p.append_items(t, [ItemRecord(n + k / 10, n + 1) for k in range(10)])
        stop.set()
        for th in threads:
            th.join()
        assert errors == []
        assert len(p.load_tracks(m)[0].items) == 400


# ----------------------------------------------------------------------------- bad files
def test_missing_and_unreadable_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.kestrel"
    with pytest.raises(ProjectError, match="does not exist") as err:
        Project.open(missing)
    assert str(missing) in str(err.value) and err.value.path == str(missing)
    assert not missing.exists()
    with pytest.raises(ProjectError, match="not a file"):
        Project.open(tmp_path)
    secret = tmp_path / "secret.kestrel"
    Project.create(secret).close()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.R_OK else real_access(p, mode))
    with pytest.raises(ProjectError, match="permission to read"):
        Project.open(secret)


@pytest.mark.parametrize("content", [
    b"",
    b"hello, this is a text file\n" * 10,
    os.urandom(8192),
    b"SQLite format 3",  # almost a header
])
def test_not_a_project(project_path: Path, content: bytes) -> None:
    project_path.write_bytes(content)
    with pytest.raises(NotAProjectError) as err:
        Project.open(project_path)
    assert str(project_path) in str(err.value)
    assert project_path.read_bytes() == content
    assert dir_listing(project_path.parent) == ["case.kestrel"]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_foreign_sqlite_database_is_never_modified(project_path: Path, journal_mode: str) -> None:
    c = raw(project_path)
    c.execute(f"PRAGMA journal_mode={journal_mode}")
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")  # even a look-alike meta table
    c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    c.execute("CREATE TABLE contacts (name TEXT)")
    c.execute("INSERT INTO contacts VALUES ('alice')")
    c.close()
    before, listing = sha256(project_path), dir_listing(project_path.parent)
    for read_only in (False, True):
        with pytest.raises(NotAProjectError, match="another program"):
            Project.open(project_path, read_only=read_only)
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(project_path)
    assert sha256(project_path) == before and dir_listing(project_path.parent) == listing
    c = raw(project_path)
    assert c.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == [
        ("contacts",), ("meta",), ("sqlite_autoindex_meta_1",)]
    c.close()


def test_truncated_project(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    data = path.read_bytes()
    assert len(data) > 8 * 4096
    for cut in (len(data) // 2, 4096, 100, 60):
        path.write_bytes(data[:cut])
        with pytest.raises((ProjectCorruptError, NotAProjectError)) as err:
            Project.open(path)
        assert str(path) in str(err.value)
    # A valid header followed by garbage.
    path.write_bytes(data[:100] + os.urandom(3 * 4096))
    with pytest.raises(ProjectCorruptError):
        Project.open(path)


def test_newer_schema_is_refused_and_untouched(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    c = raw(path)
    c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    c.close()
    before, listing = sha256(path), dir_listing(path.parent)
    for read_only in (False, True):
        with pytest.raises(ProjectNewerSchemaError, match="newer version") as err:
            Project.open(path, read_only=read_only)
        assert str(path) in str(err.value)
    assert sha256(path) == before
    assert dir_listing(path.parent) == listing or set(dir_listing(path.parent)) - set(listing) <= {
        "case.kestrel-wal", "case.kestrel-shm"}  # read-only SQLite may leave empty side files


def test_missing_version_information(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    c = raw(path)
    c.execute("UPDATE meta SET value = 'one' WHERE key = 'schema_version'")
    c.close()
    with pytest.raises(ProjectCorruptError, match="version"):
        Project.open(path)
    c = raw(path)
    c.execute("DROP TABLE meta")
    c.close()
    with pytest.raises(ProjectCorruptError, match="version"):
        Project.open(path)


def test_locked_project(filled: tuple[Path, dict[str, Any]], fast_busy: None) -> None:
    path, written = filled
    writer = Project.open(path)
    holder = raw(path)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    holder.execute("INSERT INTO settings VALUES ('held', '1')")
    try:
        with pytest.raises(ProjectLockedError, match="another program") as err:
            Project.open(path)
        assert str(path) in str(err.value)
        with pytest.raises(ProjectLockedError):
            writer.set_setting("x", 1)  # an already-open project cannot write either
        with Project.open(path, read_only=True) as reader:  # reading still works under WAL
            check_populated(reader, written)
            assert reader.get_setting("held") is None
    finally:
        holder.execute("COMMIT")
        holder.close()
    writer.set_setting("x", 1)
    writer.close()
    with Project.open(path) as p:
        assert p.get_setting("held") == 1 and p.get_setting("x") == 1


# ----------------------------------------------------------------------------- read-only
def assert_read_only(p: Project, written: dict[str, Any]) -> None:
    assert p.read_only
    check_populated(p, written)
    writes = [
        lambda: p.add_media("/x", "h", 1, 1.0, "mp4", []),
        lambda: p.remove_media(written["m1"]),
        lambda: p.start_run("k", "p", "v", {}),
        lambda: p.finish_run(written["r3"]),
        lambda: p.save_track(written["m1"], "k", "n", []),
        lambda: p.append_items(written["t1"], [ItemRecord(0, 1)]),
        lambda: p.delete_track(written["t1"]),
        lambda: p.put_array(written["m1"], "k", np.zeros(1, np.float32)),
        lambda: p.set_setting("k", 1),
    ]
    for write in writes:
        with pytest.raises(ProjectReadOnlyError, match="read-only") as err:
            write()
        assert str(p.path) in str(err.value)
    check_populated(p, written)


def test_open_read_only_on_request(filled: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, written = filled
    before = sha256(path)
    with Project.open(path, read_only=True) as p:
        assert p.warnings == []  # the user asked for it; nothing to warn about
        assert_read_only(p, written)
        with p.save_as(tmp_path / "mine.kestrel") as copy:  # Save As is the way out
            assert not copy.read_only
            copy.set_setting("k", 1)
    assert sha256(path) == before


def test_open_read_only_file(filled: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled
    path.chmod(0o444)
    if os.geteuid() == 0:  # root ignores permission bits: make os.access tell the truth for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK and Path(p) == path
                            else real_access(p, mode))
    try:
        with Project.open(path) as p:
            assert p.warnings and "Save As" in p.warnings[0] and str(path) in p.warnings[0]
            assert_read_only(p, written)
    finally:
        path.chmod(0o644)


def test_open_in_read_only_folder(filled: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Folder not writable and SQLite cannot create the WAL side files -> immutable=1."""
    path, written = filled
    real_access, real_connect = os.access, dbschema.connect
    modes: list[str] = []
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK and Path(p) == path.parent
                        else real_access(p, mode))

    def connect(p: Path, mode: dbschema.Mode, timeout: float) -> sqlite3.Connection:
        modes.append(mode)
        if mode == "ro":
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(p, mode, timeout)

    monkeypatch.setattr(dbschema, "connect", connect)
    with Project.open(path) as p:
        assert modes[:2] == ["ro", "immutable"] and "rw" not in modes
        assert p.warnings and "Save As" in p.warnings[0]
        assert_read_only(p, written)


def test_sqlite_reports_readonly_database(filled: tuple[Path, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """os.access says writable but SQLite says 'attempt to write a readonly database'."""
    path, written = filled
    real_connect = dbschema.connect
    monkeypatch.setattr(dbschema, "connect", lambda p, mode, t: real_connect(p, "ro" if mode == "rw" else mode, t))
    with Project.open(path) as p:
        assert p.warnings and "read-only" in p.warnings[0]
        assert_read_only(p, written)


def test_file_becomes_read_only_while_open(filled: tuple[Path, dict[str, Any]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled
    p = Project.open(path)
    p._engine.dispose()
    real_connect = dbschema.connect
    monkeypatch.setattr(dbschema, "connect", lambda pth, mode, t: real_connect(pth, "ro", t))
    with pytest.raises(ProjectReadOnlyError):
        p.set_setting("x", 1)
    assert p.read_only and p.warnings
    check_populated(p, written)
    p.close()


# ----------------------------------------------------------------------------- hostile rows
@pytest.mark.parametrize("column, value", [
    ("dtype", "object"),
    ("dtype", "O"),
    ("dtype", "<f4"),
    ("dtype", "|V8"),
    ("dtype", 5),
    ("data", b"\x00" * 7),  # wrong length
    ("data", "text instead of bytes"),
    ("data", 10**12),  # would allocate a terabyte if passed to bytes()
    ("shape_json", "[-1]"),
    ("shape_json", "[1e3]"),
    ("shape_json", "[true, 2]"),
    ("shape_json", '"4"'),
    ("shape_json", "[100000000000000000000000]"),
    ("shape_json", "[" + "1," * 40 + "1]"),
    ("shape_json", "not json"),
    ("meta_json", "[]"),
    ("meta_json", "{'single': 'quotes'}"),
])
def test_malicious_array_row(project_path: Path, column: str, value: Any) -> None:
    with Project.create(project_path) as p:
        m = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        p.put_array(m, "k", np.zeros(2, np.float32))
        c = raw(project_path)
        c.execute(f"UPDATE arrays SET {column} = ?", (value,))
        c.close()
        with pytest.raises(ProjectCorruptError, match="damaged") as err:
            p.get_array(m, "k")
        assert str(project_path) in str(err.value)


@pytest.mark.parametrize("sql, call", [
    ("UPDATE runs SET params_json = '{bad'", "list_runs"),
    ("UPDATE runs SET params_json = '[1, 2]'", "list_runs"),
    ("UPDATE runs SET params_json = '{\"x\": NaN}'", "list_runs"),
    ("UPDATE runs SET params_json = '" + "[" * 100000 + "]" * 100000 + "'", "list_runs"),
    ("UPDATE runs SET started_at = 'yesterday'", "list_runs"),
    ("UPDATE media SET streams_json = '[1]'", "list_media"),
    ("UPDATE media SET size_bytes = 'big'", "list_media"),
    ("UPDATE items SET data_json = 'null'", "load_tracks"),
    ("UPDATE items SET start_s = 'abc'", "load_tracks"),
    ("UPDATE tracks SET meta_json = '{'", "load_tracks"),
    ("UPDATE settings SET value_json = '{nope'", "get_setting"),
])
def test_bad_stored_values(filled: tuple[Path, dict[str, Any]], sql: str, call: str) -> None:
    path, written = filled
    c = raw(path)
    c.executescript(sql)
    c.close()
    with Project.open(path) as p:  # opening still works: only the bad part is unreadable
        actions: dict[str, Callable[[], object]] = {
            "list_runs": p.list_runs, "list_media": p.list_media,
            "load_tracks": lambda: p.load_tracks(written["m1"]),
            "get_setting": lambda: p.get_setting("flag"),
        }
        action = actions[call]
        with pytest.raises(ProjectCorruptError, match="damaged") as err:
            action()
        assert str(path) in str(err.value)


def test_check_constraint_violation_is_caught_on_open(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    c = raw(path)
    c.executescript("PRAGMA ignore_check_constraints = ON; UPDATE runs SET status = 'weird'")
    c.close()
    with pytest.raises(ProjectCorruptError, match="damaged"):  # PRAGMA quick_check sees it
        Project.open(path)


def test_bad_params_do_not_break_find_run(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    c = raw(path)
    c.execute("UPDATE runs SET params_json = '{bad' WHERE id = ?", (written["r2"],))
    c.close()
    with Project.open(path) as p:
        found = p.find_run("vad", "silero", "5.1", {"threshold": 0.5, "min_ms": 250}, written["m1"])
        assert found is not None and found.id == written["r1"]


# ----------------------------------------------------------------------------- migrations
def _rebuild_tracks_v1_to_v2(conn: Connection) -> None:
    """A realistic migration: add a column and rebuild a parent table (12-step rebuild)."""
    conn.exec_driver_sql("ALTER TABLE media ADD COLUMN notes TEXT NOT NULL DEFAULT ''")
    conn.exec_driver_sql(
        "CREATE TABLE tracks_new (id INTEGER PRIMARY KEY, media_id INTEGER NOT NULL "
        "REFERENCES media(id) ON DELETE CASCADE, kind TEXT NOT NULL, name TEXT NOT NULL, "
        "run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL, meta_json TEXT NOT NULL DEFAULT '{}', "
        "hidden INTEGER NOT NULL DEFAULT 0)")
    conn.exec_driver_sql("INSERT INTO tracks_new (id, media_id, kind, name, run_id, meta_json) "
                         "SELECT id, media_id, kind, name, run_id, meta_json FROM tracks")
    conn.exec_driver_sql("DROP TABLE tracks")  # with FKs on, this would cascade-delete all items
    conn.exec_driver_sql("ALTER TABLE tracks_new RENAME TO tracks")
    conn.exec_driver_sql("CREATE INDEX ix_tracks_media ON tracks (media_id, kind, name)")


def _meta_version(path: Path) -> str:
    c = raw(path)
    try:
        return c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        c.close()


def test_migration_runs_and_data_survives(filled: tuple[Path, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(dbschema.MIGRATIONS, 1, _rebuild_tracks_v1_to_v2)
    with Project.open(path) as p:
        assert p.schema_version == 2 and not p.read_only
        assert any("bak-v1" in w for w in p.warnings)
        check_populated(p, written)  # nothing lost, items not cascaded away
        p.set_setting("after", 1)
    assert _meta_version(path) == "2"
    c = raw(path)
    assert "hidden" in [r[1] for r in c.execute("PRAGMA table_info(tracks)")]
    assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 4
    assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    c.close()
    backup = path.with_name("case.kestrel.bak-v1")
    assert _meta_version(backup) == "1"
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 1)
    with Project.open(backup, read_only=True) as old:
        check_populated(old, written)
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 2)
    with Project.open(path) as again:  # already current: no second migration / backup
        assert again.warnings == [] and again.get_setting("after") == 1
    assert sorted(n for n in dir_listing(path.parent) if ".bak-" in n) == ["case.kestrel.bak-v1"]


def test_failed_migration_changes_nothing(filled: tuple[Path, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled

    def half_then_fail(conn: Connection) -> None:
        conn.exec_driver_sql("DELETE FROM items")
        conn.exec_driver_sql("DROP TABLE settings")
        raise RuntimeError("bug in migration")

    monkeypatch.setattr(Project, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(dbschema.MIGRATIONS, 1, half_then_fail)
    with pytest.raises(ProjectError, match="bug in migration") as err:
        Project.open(path)
    assert "left unchanged" in str(err.value) and str(path) in str(err.value)
    assert _meta_version(path) == "1"
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 1)
    with Project.open(path) as p:
        check_populated(p, written)


def test_migration_needs_every_step_and_a_writable_file(filled: tuple[Path, dict[str, Any]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = filled
    before = sha256(path)
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(dbschema.MIGRATIONS, 1, lambda conn: None)  # 2 -> 3 missing
    with pytest.raises(ProjectError, match="cannot upgrade"):
        Project.open(path)
    monkeypatch.setitem(dbschema.MIGRATIONS, 2, lambda conn: None)
    with pytest.raises(ProjectReadOnlyError, match="read-only"):
        Project.open(path, read_only=True)
    assert sha256(path) == before and not list(path.parent.glob("*.bak-*"))
    with Project.open(path) as p:
        assert p.schema_version == 3
