"""Opening a project file: the read-only checks that run before :class:`core.store.project.Project`
uses a file (integrity, identity, version, the whole schema, then the write lock), without
writing to a file that is refused.  Qt-free."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from core.store import check as dbcheck
from core.store import schema as db
from core.store.schema import APPLICATION_ID, Mode
from core.store.errors import (
    NotAProjectError, ProjectCorruptError, ProjectError, ProjectForeignSqlError, ProjectLockedError,
    ProjectNewerSchemaError, _CannotOpen, _ReadOnlyFile,
)


def disk_full(path: Path) -> bool:
    """Is the file system holding ``path`` out of space (for this user)?"""
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):  # AttributeError: no statvfs on Windows
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def probe(path: Path, mode: Mode, timeout: float, newest: int, *, shown: Path | None = None,
          guard: bool = True) -> int:
    """Check integrity, identity, version and the whole schema; in rw mode then the write
    lock and WAL.  Returns the file's schema version.  Writes nothing, except switching a
    rw file that somebody converted to another journal mode back to WAL (after all
    checks passed).  Messages name ``shown`` (default ``path``).

    In rw mode, when a ``-wal`` with content lies beside the file, a read-only *guard*
    connection is opened first and closed last: SQLite checkpoints a WAL into the file
    when its last connection closes, which would write a planted ``-wal`` into a file that
    is then refused; with the guard open the probe is never the last, and a read-only
    connection never checkpoints.  A hot ``-journal``
    (which SQLite rolls back into the file on the first read) is first rolled back and
    checked in a private copy: a journal that would make the file one Kestrel refuses
    is refused before it touches the file."""
    name = path if shown is None else shown
    conn: sqlite3.Connection | None = None
    keep: sqlite3.Connection | None = None
    try:
        journal, wal = Path(f"{path}-journal"), Path(f"{path}-wal")
        if mode == "rw" and guard and (journal.exists() or (wal.is_file() and wal.stat().st_size > 0)):
            keep = db.connect(path, "ro", timeout)
            try:
                keep.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                if not ("readonly" in str(exc).lower() and journal.exists()):
                    raise
                keep.close()
                keep = None
                probe_rolled_back_copy(path, timeout, newest)
        conn = db.connect(path, mode, timeout)
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise ProjectCorruptError(f"The project file '{name}' is damaged and cannot be opened; "
                                      "try a backup copy.", name)
        if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            raise NotAProjectError(f"'{name}' is not a Kestrel project file.", name)
        version = dbcheck.stored_version(conn)
        if version is None:
            raise ProjectCorruptError(f"The project file '{name}' has lost its version information "
                                      "and cannot be opened.", name)
        if version > newest:
            raise ProjectNewerSchemaError(f"'{name}' was saved by a newer version of Kestrel; update "
                                          "Kestrel to open it (the file was not changed).", name)
        refuse(name, dbcheck.inspect(conn, version))
        if mode == "rw":
            conn.execute("BEGIN IMMEDIATE")  # waits up to BUSY_TIMEOUT_S: opening says "locked" soon
            try:  # a no-op write: SQLite may have opened a write-protected file read-only
                conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
            finally:
                conn.execute("ROLLBACK")
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        return version
    except sqlite3.OperationalError as exc:
        msg = str(exc).lower()
        if "locked" in msg or "busy" in msg:
            raise ProjectLockedError(f"'{name}' is being changed by another program (perhaps another "
                                     "Kestrel window); close it there or open this one read-only.",
                                     name) from exc
        if "readonly" in msg or "read-only" in msg:
            raise _ReadOnlyFile() from exc
        if mode != "immutable" and "disk i/o error" in msg and disk_full(path):
            raise (_ReadOnlyFile() if mode == "rw" else _CannotOpen()) from exc  # no room for the WAL files
        if mode == "ro" and "unable to open" in msg:
            raise _CannotOpen() from exc
        raise ProjectCorruptError(f"The project file '{name}' could not be read ({exc}).", name) from exc
    except sqlite3.DatabaseError as exc:
        raise ProjectCorruptError(f"The project file '{name}' is damaged and cannot be opened; "
                                  "try a backup copy.", name) from exc
    finally:
        if conn is not None:
            conn.close()
        if keep is not None:
            keep.close()

def probe_rolled_back_copy(path: Path, timeout: float, newest: int) -> None:
    """Check what ``path`` becomes once SQLite rolls back its hot journal, on a private
    copy of both files (the project's own files are not touched)."""
    try:
        with tempfile.TemporaryDirectory(prefix="kestrel-journal-") as tmp:
            copy = Path(tmp) / "copy.kestrel"
            shutil.copyfile(path, copy)
            shutil.copyfile(f"{path}-journal", f"{copy}-journal")
            probe(copy, "rw", timeout, newest, shown=path, guard=False)
    except OSError as exc:
        raise ProjectError(f"Could not check the unfinished change (journal) of '{path}' before "
                           f"opening it ({exc.strerror}); the file was left unchanged.", path) from exc

def refuse(path: Path, found: dbcheck.Findings) -> None:
    """Raise for a file whose schema has problems (damaged) or foreign objects."""
    if found.problems:
        raise ProjectCorruptError(f"The project file '{path}' is damaged and cannot be opened: "
                                  f"{'; '.join(found.problems[:6])}. Try a backup copy.", path)
    if found.foreign:
        names = [f.what for f in found.foreign]
        raise ProjectForeignSqlError(
            f"'{path}' contains SQL that Kestrel did not create: {', '.join(names[:8])}"
            f"{f' and {len(names) - 8} more' if len(names) > 8 else ''}; it was not opened (nothing "
            "was run or changed). Open it in the Kestrel window, which offers to remove them after "
            "keeping a copy of the file (Project.strip_foreign_objects does the same).", path, names)
