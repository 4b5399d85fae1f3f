"""Tests for core.store.project: the .kestrel SQLite project file (real files in tmp_path)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection

from core.store import schema as dbschema
from core.store.project import (
    ItemRecord,
    NotAProjectError,
    Project,
    ProjectCorruptError,
    ProjectError,
    ProjectLockedError,
    ProjectNewerSchemaError,
    ProjectReadOnlyError,
)
from projectkit import (  # noqa: F401  (fixtures are used by name)
    REPO, check_populated, dir_listing, fast_busy, filled, populate, project_path, raw, sha256,
)

# ----------------------------------------------------------------------------- happy paths
def test_round_trip_and_reopen(project_path: Path) -> None:
    p = Project.create(project_path)
    assert p.path == project_path and not p.read_only and not p.is_temporary and p.warnings == []
    assert p.schema_version == Project.SCHEMA_VERSION == 4
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
        assert meta["schema_version"] == "4" and meta["created_at"] and meta["app_version"].startswith("kestrel")
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "ix_items_track_start" in indexes
        c.close()
        with p._engine.connect() as conn:  # pragmas of the connections the Project uses
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
            assert conn.exec_driver_sql("PRAGMA trusted_schema").scalar() == 0
    source = "".join(f.read_text() for f in sorted((REPO / "core" / "store").glob("*.py")))
    for forbidden in ("import pickle", "from pickle", "import PySide6", "from PySide6", "np.load(", "allow_pickle"):
        assert forbidden not in source


def test_qt_free_import() -> None:
    # (pickle itself gets imported by numpy; the source check in test_file_format covers its use)
    code = "import sys, core.store.project; assert not [m for m in sys.modules if m.startswith('PySide6')]"
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


