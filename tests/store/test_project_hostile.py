"""core.store.project against hostile rows and schema migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from sqlalchemy import Connection

from core.store import schema as dbschema
from core.store.project import (
    Project,
    ProjectCorruptError,
    ProjectError,
    ProjectReadOnlyError,
)
from projectkit import (  # noqa: F401  (fixtures are used by name)
    check_populated, dir_listing, filled, project_path, raw, run_sql, sha256,
)

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
    run_sql(path, sql)
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
def _rebuild_tracks_v2_to_v3(conn: Connection) -> None:
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
    conn.exec_driver_sql("CREATE INDEX ix_tracks_run ON tracks (run_id)")


def _meta_version(path: Path) -> str:
    c = raw(path)
    try:
        return c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        c.close()


def test_migration_runs_and_data_survives(filled: tuple[Path, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 5)
    monkeypatch.setitem(dbschema.MIGRATIONS, 4, _rebuild_tracks_v2_to_v3)
    with Project.open(path) as p:
        assert p.schema_version == 5 and not p.read_only
        assert any("bak-v4" in w for w in p.warnings)
        check_populated(p, written)  # nothing lost, items not cascaded away
        p.set_setting("after", 1)
    assert _meta_version(path) == "5"
    c = raw(path)
    assert "hidden" in [r[1] for r in c.execute("PRAGMA table_info(tracks)")]
    assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 4
    assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    c.close()
    backup = path.with_name("case.kestrel.bak-v4")
    assert _meta_version(backup) == "4"
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 4)
    with Project.open(backup, read_only=True) as old:
        check_populated(old, written)
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 5)
    with Project.open(path) as again:  # already current: no second migration / backup
        assert again.warnings == [] and again.get_setting("after") == 1
    assert sorted(n for n in dir_listing(path.parent) if ".bak-" in n) == ["case.kestrel.bak-v4"]


def test_failed_migration_changes_nothing(filled: tuple[Path, dict[str, Any]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, written = filled

    def half_then_fail(conn: Connection) -> None:
        conn.exec_driver_sql("DELETE FROM items")
        conn.exec_driver_sql("DROP TABLE settings")
        raise RuntimeError("bug in migration")

    monkeypatch.setattr(Project, "SCHEMA_VERSION", 5)
    monkeypatch.setitem(dbschema.MIGRATIONS, 4, half_then_fail)
    with pytest.raises(ProjectError, match="bug in migration") as err:
        Project.open(path)
    assert "left unchanged" in str(err.value) and str(path) in str(err.value)
    assert _meta_version(path) == "4"
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 4)
    with Project.open(path) as p:
        check_populated(p, written)


def test_migration_needs_every_step_and_a_writable_file(filled: tuple[Path, dict[str, Any]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = filled
    before = sha256(path)
    monkeypatch.setattr(Project, "SCHEMA_VERSION", 6)
    monkeypatch.setitem(dbschema.MIGRATIONS, 4, lambda conn: None)  # 5 -> 6 missing
    with pytest.raises(ProjectError, match="cannot upgrade"):
        Project.open(path)
    monkeypatch.setitem(dbschema.MIGRATIONS, 5, lambda conn: None)
    with pytest.raises(ProjectReadOnlyError, match="read-only"):
        Project.open(path, read_only=True)
    assert sha256(path) == before and not list(path.parent.glob("*.bak-*"))
    with Project.open(path) as p:
        assert p.schema_version == 6
