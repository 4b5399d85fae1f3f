"""Red-team regressions for hostile project files: SQL planted while a project is open,
planted WAL and hot-journal side files (a refused file and its side files stay unchanged)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.store import schema as dbschema

from core.store import opening as projectopen
from core.store.project import Project, ProjectCorruptError, ProjectForeignSqlError
from projectkit import REPO, check_populated, filled, project_path, raw, sha256  # noqa: F401  (fixtures)


def test_a_trigger_planted_while_the_project_is_open_never_runs(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    with Project.open(path) as p:
        p.set_setting("before", 1)  # a first write checks and records the schema
        other = raw(path)
        other.execute("CREATE TABLE pwn(x)")
        other.execute("CREATE TRIGGER t AFTER INSERT ON settings BEGIN INSERT INTO pwn VALUES ('ran'); "
                      "UPDATE media SET path = '/evil'; END")
        other.close()
        with pytest.raises(ProjectForeignSqlError, match="trigger 't' on settings") as err:
            p.set_setting("k", 1)
        assert "trigger 't' on settings" in err.value.objects
        with pytest.raises(ProjectForeignSqlError):
            with p.batch():
                p.set_setting("k", 2)
        assert p.get_setting("k") is None and p.get_setting("before") == 1
    check = raw(path)
    assert check.execute("SELECT count(*) FROM pwn").fetchone() == (0,)
    check.execute("DROP TRIGGER t")
    check.execute("DROP TABLE pwn")
    check.close()
    with Project.open(path) as p:
        check_populated(p, written)
        p.set_setting("k", 3)  # a schema that is Kestrel's again: writes go on
        assert p.get_setting("k") == 3


def _side_files(path: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)
            and not p.name.endswith("-shm")}


def test_a_planted_wal_that_adds_a_trigger_is_refused_and_never_merged(filled: tuple[Path, dict[str, Any]],
                                                                       tmp_path: Path) -> None:
    path, written = filled
    evil = tmp_path / "evil.kestrel"
    shutil.copyfile(path, evil)
    other = raw(evil)
    other.execute("PRAGMA wal_autocheckpoint=0")
    other.execute("CREATE TRIGGER t AFTER INSERT ON settings BEGIN UPDATE media SET path = '/evil'; END")
    shutil.copyfile(f"{evil}-wal", f"{path}-wal")  # the WAL of a file with the trigger, beside a good file
    other.close()
    before = _side_files(path)
    assert f"{path.name}-wal" in before
    with pytest.raises(ProjectForeignSqlError, match="trigger 't'"):
        Project.open(path)
    assert _side_files(path) == before  # closing the probe did not checkpoint the WAL into the file


def _hot_journal(path: Path, sql: str) -> None:
    """Leave ``path`` (switched to a rollback journal) with a hot journal: a process runs
    ``sql`` in a transaction that spills into the file, then dies before committing."""
    conn = raw(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    code = textwrap.dedent(f"""
        import os, sqlite3
        c = sqlite3.connect({str(path)!r}, isolation_level=None)
        c.execute("PRAGMA cache_size=1")
        c.execute("BEGIN")
        for statement in {sql.split(';')!r}:
            c.execute(statement)
        c.execute("CREATE TABLE junk AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                  "LIMIT 2000) SELECT randomblob(1000) AS b FROM n")  # spills pages into the file
        os._exit(0)
    """)
    clean = sha256(path)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert Path(f"{path}-journal").stat().st_size > 0 and sha256(path) != clean


def test_a_hot_journal_that_restores_a_trigger_is_refused_before_it_is_rolled_back(
        filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    conn = raw(path)
    conn.execute("CREATE TRIGGER t AFTER INSERT ON settings BEGIN UPDATE media SET path = '/evil'; END")
    conn.close()
    _hot_journal(path, "DROP TRIGGER t")  # the file looks clean; rolling back brings the trigger back
    before = _side_files(path)
    with pytest.raises(ProjectForeignSqlError, match="trigger 't'") as err:
        Project.open(path)
    assert err.value.path == str(path)
    assert _side_files(path) == before  # the journal was rolled back in a private copy only


def test_a_genuine_hot_journal_is_rolled_back_and_opens(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    _hot_journal(path, "DELETE FROM items; DELETE FROM settings")
    with Project.open(path) as p:
        check_populated(p, written)
    assert not Path(f"{path}-journal").exists()


def _edit_schema(path: Path, table: str, old: str, new: str) -> None:
    """Rewrite a table's CREATE statement behind SQLite's back (as a hostile tool can)."""
    conn = raw(path)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    assert old in sql
    cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = ?", (sql.replace(old, new), table))
    conn.execute(f"PRAGMA schema_version={cookie + 1}")
    conn.execute("PRAGMA writable_schema=OFF")
    conn.close()


@pytest.mark.parametrize("old, new, needle", [
    (", \n\tCONSTRAINT ck_runs_status CHECK (status IN ('running', 'ok', 'failed', 'cancelled'))", "",
     "CHECK constraints"),
    ("'cancelled')", "'cancelled', 'pwned')", "CHECK constraints"),
    ("DEFAULT 'running'", "DEFAULT 'ok'", "default values"),
])
def test_a_changed_check_or_default_is_refused(filled: tuple[Path, dict[str, Any]], old: str, new: str,
                                               needle: str) -> None:
    path, _ = filled
    _edit_schema(path, "runs", old, new)
    if new == "":  # the rule is gone: rows it forbade can now be stored
        conn = raw(path)
        conn.execute("UPDATE runs SET status = 'pwned'")
        conn.close()
    before = sha256(path)
    with pytest.raises(ProjectCorruptError, match=needle):
        Project.open(path)
    assert sha256(path) == before


def test_a_schema_damaged_while_open_makes_writes_fail_in_one_sentence(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    with Project.open(path) as p:
        p.set_setting("a", 1)
        _edit_schema(path, "settings", "CREATE TABLE settings (", "CREATE TABLE settings (garbage")
        with pytest.raises(ProjectCorruptError, match="damaged while it was open"):
            p.set_setting("b", 2)


def test_a_project_on_a_full_disk_opens_read_only(filled: tuple[Path, dict[str, Any]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for the WAL side files: SQLite says 'disk I/O error' in rw and ro mode; the
    project opens read-only (immutable) with a sentence, instead of being called unreadable."""
    path, written = filled
    real_connect = dbschema.connect

    def connect(p: Path, mode: str, timeout: float, **kw: Any) -> sqlite3.Connection:
        if mode != "immutable":
            raise sqlite3.OperationalError("disk I/O error")
        return real_connect(p, mode, timeout, **kw)

    monkeypatch.setattr(dbschema, "connect", connect)
    monkeypatch.setattr(projectopen, "disk_full", lambda _p: True)
    with Project.open(path) as p:
        assert p.read_only and "disk holding" in p.warnings[0]
        check_populated(p, written)


def test_an_extra_column_with_a_computed_default_is_refused(filled: tuple[Path, dict[str, Any]]) -> None:
    """Each of Kestrel's inserts would evaluate it (a gigabyte blob per row stored)."""
    path, _ = filled
    _edit_schema(path, "settings", "value_json TEXT NOT NULL, ",  # zeroblob(999999999) in earnest
                 "value_json TEXT NOT NULL, pad BLOB DEFAULT (zeroblob(10)), ")
    with pytest.raises(ProjectCorruptError, match="extra column 'pad' with a computed default"):
        Project.open(path)


def test_the_window_lists_media_of_unknown_duration(window: Any, qtbot: Any, filled: tuple[Path, dict[str, Any]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A media row without a duration (add_media allows None) made the media list's
    callback fail with TypeError, so the window listed nothing from such a project."""
    path, _ = filled
    failures: list[str] = []
    monkeypatch.setattr(window, "show_error", failures.append)
    with qtbot.waitSignal(window.media_list_refreshed, timeout=20000):
        window.open_project(str(path))
    # the untitled project's own refresh may be the one that came first on a busy machine
    qtbot.waitUntil(lambda: window.media_list.count() == 2, timeout=20000)
    assert window.media_list.count() == 2 and not failures
    assert "duration unknown" in window.media_list.item(1).toolTip()


@pytest.mark.parametrize("suffix, make", [
    ("-journal", "fifo"), ("-wal", "fifo"), ("-shm", "fifo"),
    ("-wal", "folder"), ("-shm", "folder"), ("-journal", "folder"),
    ("-wal", "link"), ("-journal", "link"),
])
def test_a_side_file_that_is_not_a_plain_file_is_refused(filled: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                         suffix: str, make: str) -> None:
    """A pipe named <project>-journal made opening block forever (SQLite opens it to look for
    a hot journal); a linked -wal would have Kestrel's writes land in another file."""
    path, written = filled
    side, victim = Path(f"{path}{suffix}"), tmp_path / "victim.txt"
    victim.write_text("keep me")
    {"fifo": os.mkfifo, "folder": os.mkdir, "link": lambda p: os.symlink(victim, p)}[make](side)
    code = ("import sys; from core.store.project import Project, ProjectError\n"
            "try:\n    Project.open(sys.argv[1]).close()\nexcept ProjectError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    assert "is not a plain file" in out.stdout and out.stderr == ""
    assert victim.read_text() == "keep me" and os.path.lexists(side)
    os.unlink(side) if make != "folder" else os.rmdir(side)
    with Project.open(path) as p:
        check_populated(p, written)


def test_chat_retrieval_embeds_a_bounded_number_of_stored_lines() -> None:
    """A project storing 200 000 items in the asked window made `chat --project` embed every
    line with MiniLM (minutes, a hang to the analyst); only the best by words and time are."""
    from core.chat import grounding

    class Index:
        sizes: list[int] = []

        def vectors(self, texts: list[str]) -> np.ndarray:
            self.sizes.append(len(texts))
            return np.ones((len(texts), 4), dtype=np.float32) / 2.0

    lines = [grounding.LogLine(i * 1e-4, i * 1e-4 + 0.1, "tag", f"l{i}", f"[0:00] scene: l{i}", 1)
             for i in range(20_000)]
    lines.append(grounding.LogLine(1.0, 1.5, "tag", "bus", "[0:01] scene: a red bus", 1))
    index = Index()
    got = grounding.retrieve("is there a bus?", lines, index=index, at=1.2)  # type: ignore[arg-type]
    assert index.sizes == [grounding.MAX_EMBEDDED_LINES + 1]
    assert "a red bus" in got[0].text
