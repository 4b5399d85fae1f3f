"""Kestrel project file (``.kestrel``): one SQLite database accessed through SQLAlchemy Core.

Qt-free: the GUI wraps this module, it never imports PySide6.

File format
    SQLite in WAL mode, ``PRAGMA application_id = 0x4B535452`` ("KSTR"), a ``meta`` table
    holding ``schema_version`` / ``created_at`` / ``app_version``.  Tables and migrations
    live in :mod:`core.store.schema`.  Nothing is ever pickled: JSON (validated on read) and
    raw little-endian array bytes with an allow-listed dtype and a checked shape.

Opening a file someone else sent
    The 100-byte SQLite header is checked *before* SQLite touches the file, so a text
    file, random bytes or another program's database is rejected (NotAProjectError)
    without being opened, let alone modified.  Then ``PRAGMA quick_check``, the meta
    table and the schema version are verified, ``trusted_schema`` is switched off and
    every JSON value / number / blob read back is type-checked (ProjectCorruptError).

    Before anything is written, the whole schema is compared with what Kestrel creates
    (:mod:`core.store.check`): a missing or changed table, column or index is
    ProjectCorruptError; SQL that Kestrel did not create (triggers, views, extra tables
    or indexes) is ProjectForeignSqlError, and :meth:`Project.strip_foreign_objects`
    removes it when the analyst agrees.  Connections run with SQLite's defensive settings.

Durability
    Every public write method is one ``BEGIN IMMEDIATE ... COMMIT`` transaction with
    ``synchronous=FULL``, so there is no separate "save": a committed write survives a
    crash.  ``with project.batch():`` groups several write calls into ONE transaction (a
    run and everything it produced commit together, or not at all).  A run left
    'running' by a process that died is marked failed when the file is next opened
    read-write.  "Save As" is a consistent copy made with the sqlite3 backup API.

Threads
    The engine uses a QueuePool of ``check_same_thread=False`` connections: every call
    checks a connection out for its own duration, so no connection is ever used by two
    threads at once.  Read methods (``get_*``, ``list_*``, ``find_*``, ``load_track(s)``, ``track_*``) are
    safe from any thread, concurrently with each other and with writes (WAL readers see
    the last committed state and never wait for the writer).  Write methods (``add_*``,
    ``start_run``/``finish_run``, ``save_track``, ``append_items``, ``delete_*``,
    ``remove_media``, ``put_array``, ``set_setting``) should be called from ONE thread
    (the GUI's writer worker); SQLite serialises concurrent writers (threads or processes):
    a write waits up to WRITE_BUSY_TIMEOUT_S (60 s) for another one's transaction, reads
    never wait for writers.  ``open``,
    ``create``, ``save_as``, ``close`` and ``discard`` belong to the thread that owns the
    Project, and ``close`` must only be called once the workers have stopped using it.

Errors
    File/data problems raise :class:`ProjectError` subclasses whose ``str()`` is a
    sentence for the analyst (with ``.path``); bad arguments raise ``TypeError`` /
    ``ValueError`` and unknown ids raise ``KeyError`` (programming errors).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.store import check as dbcheck
from core.store.trackstore import TrackStore, new_id as _new_id

from core.store import opening as projectopen
from core.store import schema as db
from core.store.schema import (
    APPLICATION_ID, ARRAY_DTYPES, FILE_EXTENSION, FINISHED_STATUSES, MIGRATIONS, SCHEMA_VERSION,
    ItemRecord, MediaRecord, Mode, RunRecord, StrPath, TrackRecord, arrays_table,
    media_table, meta_table, runs_table, settings_table, tracks_table,
)
from core.store.errors import (
    NotAProjectError, ProjectCorruptError, ProjectError, ProjectForeignSqlError, ProjectLockedError,
    ProjectNewerSchemaError, ProjectReadOnlyError, _CannotOpen, _check_header, _ExistsError, _ReadOnlyFile,
)

__all__ = [
    "FILE_EXTENSION", "MIGRATIONS", "SCHEMA_VERSION", "ARRAY_DTYPES", "Project", "MediaRecord",
    "RunRecord", "ItemRecord", "TrackRecord", "ProjectError", "NotAProjectError",
    "ProjectCorruptError", "ProjectNewerSchemaError", "ProjectLockedError", "ProjectReadOnlyError",
    "ProjectForeignSqlError",
]



# ----------------------------------------------------------------------------- project
class Project(TrackStore):
    """An open ``.kestrel`` project.  Create instances with :meth:`create`, :meth:`open`
    or :meth:`create_temporary`; see the module docstring for thread rules."""

    SCHEMA_VERSION: int = SCHEMA_VERSION
    APPLICATION_ID: int = APPLICATION_ID
    FILE_EXTENSION: str = FILE_EXTENSION
    BUSY_TIMEOUT_S: float = 2.0  # reads, and the write-lock check when opening
    WRITE_BUSY_TIMEOUT_S: float = 60.0  # how long a write waits for another writer

    def __init__(self, path: Path, *, mode: Mode, schema_version: int,
                 warnings: list[str], is_temporary: bool = False) -> None:
        self._path = path
        self._mode: Mode = mode
        self._read_only = mode != "rw"
        self._schema_version = schema_version
        self._closed = False
        self._saved_elsewhere = False
        self.warnings: list[str] = warnings
        self.is_temporary = is_temporary
        self._schema_cookie: int | None = None  # PRAGMA schema_version last checked by a write
        self._engine = db.make_engine(path, mode, self.BUSY_TIMEOUT_S, self.WRITE_BUSY_TIMEOUT_S,
                                      on_write_begin=self._check_schema_unchanged)
        self._batch = threading.local()  # .conn: this thread's open batch transaction
        self._write_engine = self._engine.execution_options(kestrel_immediate=True)

    # -- properties / lifecycle -------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        flags = " read-only" if self._read_only else ""
        return f"<Project {str(self._path)!r}{flags}{' closed' if self._closed else ''}>"

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close all connections (idempotent).  A temporary project that was saved
        elsewhere with save_as deletes its untitled file here."""
        if self._closed:
            return
        self._closed = True
        self._engine.dispose()
        if self.is_temporary and self._saved_elsewhere:
            db.unlink_db(self._path)

    def discard(self) -> None:
        """Close a temporary project and delete its file (the user chose "Don't save")."""
        if not self.is_temporary:
            raise ValueError("only a temporary project can be discarded")
        self.close()
        db.unlink_db(self._path)

    # -- create / open ------------------------------------------------------------------
    @classmethod
    def create(cls, path: StrPath, *, overwrite: bool = False) -> Project:
        """Create a new empty project; an existing non-empty file is refused unless
        ``overwrite``.  The file appears atomically (built next to it, then hard-linked in
        place), and never replaces a file that appeared meanwhile (another process
        creating the same project): see :meth:`open_or_create`."""
        target = db.abspath(path)
        cls._create_file(target, overwrite=overwrite)
        return cls._open(target, read_only=False, is_temporary=False)

    @classmethod
    def open_or_create(cls, path: StrPath) -> Project:
        """Open the project at ``path``, or create it if there is none (or only an empty
        file).  Safe when several processes do it at once: one creates the file, the
        others open that same file, and nobody's results are replaced."""
        target = db.abspath(path)
        for _ in range(3):
            if target.exists() and not (target.is_file() and target.stat().st_size == 0):
                return cls.open(target)
            try:
                return cls.create(target)
            except _ExistsError:
                continue  # someone else created it meanwhile: open theirs
        return cls.open(target)

    @classmethod
    def create_temporary(cls, directory: StrPath) -> Project:
        """Create an untitled project in ``directory`` (for "New" before a name is chosen).
        Every write is already durable; save_as moves the user on to a named file."""
        folder = db.abspath(directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"Could not create the folder '{folder}' ({exc.strerror}).", folder) from exc
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = folder / f"untitled-{stamp}-{secrets.token_hex(3)}{FILE_EXTENSION}"
        cls._create_file(target, overwrite=False)
        return cls._open(target, read_only=False, is_temporary=True)

    @classmethod
    def open(cls, path: StrPath, *, read_only: bool = False) -> Project:
        """Open an existing project.  Falls back to read-only (with a ``warnings`` entry)
        when the file or its folder is not writable; upgrades older files (see dbschema)."""
        return cls._open(db.abspath(path), read_only=read_only, is_temporary=False)

    @classmethod
    def _create_file(cls, target: Path, *, overwrite: bool) -> None:
        if target.is_dir():
            raise ProjectError(f"'{target}' is a folder; choose a file name for the project.", target)
        if not target.parent.is_dir():
            raise ProjectError(f"The folder '{target.parent}' does not exist.", target)
        exists = _ExistsError(f"'{target}' already exists; choose another name or confirm overwriting it.", target)
        if target.exists() and target.stat().st_size > 0 and not overwrite:
            raise exists
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent)
        except OSError as exc:
            raise ProjectError(f"Could not create a project in '{target.parent}' ({exc.strerror}).", target) from exc
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            db.build_file(tmp, cls.SCHEMA_VERSION, cls.BUSY_TIMEOUT_S)
            with db.folder_lock(target.parent):  # creators in this folder take turns from here
                if not db.publish(tmp, target, replace=overwrite):
                    raise exists
        except TimeoutError:
            db.unlink_db(tmp)
            raise ProjectLockedError(f"Another program is creating a project in '{target.parent}'; try "
                                     "again in a moment.", target) from None
        except BaseException as exc:
            db.unlink_db(tmp)
            if isinstance(exc, ProjectError):
                raise
            if isinstance(exc, (OSError, sqlite3.Error, sa_exc.SQLAlchemyError)):
                raise ProjectError(f"Could not create the project '{target}' ({exc}).", target) from exc
            raise

    @classmethod
    def _open(cls, path: Path, *, read_only: bool, is_temporary: bool) -> Project:
        if not path.exists():
            raise ProjectError(f"The project file '{path}' does not exist.", path)
        if not path.is_file():
            raise ProjectError(f"'{path}' is not a file, so it cannot be opened as a project.", path)
        if not os.access(path, os.R_OK):
            raise ProjectError(f"You do not have permission to read '{path}'.", path)
        _check_header(path)
        ro_warning = (f"'{path}' cannot be written to, so it was opened read-only and saving is "
                      "disabled; use Save As to keep your changes in a new file.")
        warnings: list[str] = []
        mode: Mode = "ro" if read_only else "rw"
        if mode == "rw" and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            mode = "ro"
            warnings.append(ro_warning)
        version = -1
        if mode == "rw":
            try:
                version = cls._probe(path, "rw")
            except _ReadOnlyFile:
                mode = "ro"
                full = projectopen.disk_full(path)
                warnings.append(f"The disk holding '{path}' is full, so the project was opened read-only and "
                                "saving is disabled; free some space and open it again." if full else ro_warning)
        if mode == "ro":
            try:
                version = cls._probe(path, "ro")
            except (_CannotOpen, _ReadOnlyFile):
                if Path(f"{path}-journal").exists():  # immutable would show a half-written change
                    raise ProjectError(f"'{path}' has an unfinished change (the '-journal' file beside it) "
                                       "that SQLite must undo before the project can be read, and it cannot "
                                       "be written to; copy both files somewhere writable and open the "
                                       "copy.", path) from None
                mode = "immutable"
                version = cls._probe(path, "immutable")
                wal = Path(f"{path}-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    warnings.append(f"The most recent changes to '{path}' may not be shown, because "
                                    "they were never merged into the file and its folder is read-only.")
        project = cls(path, mode=mode, schema_version=version, warnings=warnings, is_temporary=is_temporary)
        try:
            if version < cls.SCHEMA_VERSION:
                project._migrate(version)
            if not project._read_only:
                project._fail_dead_runs()
                try:  # tracks from before file version 3 get their summaries (once)
                    project.fill_summaries()
                except (ProjectLockedError, ProjectReadOnlyError):
                    pass  # read whole until a later open fills them
        except BaseException:
            project._engine.dispose()
            raise
        return project

    @classmethod
    def _probe(cls, path: Path, mode: Mode) -> int:
        """Check the file read-only before it is used (core.store.opening.probe): integrity,
        identity, version and the whole schema, then the write lock in rw mode."""
        return projectopen.probe(path, mode, cls.BUSY_TIMEOUT_S, cls.SCHEMA_VERSION)

    def _check_schema_unchanged(self, conn: sqlite3.Connection) -> None:
        """Run inside every write transaction once it holds the write lock: if the schema
        changed since the last check (another program planted a trigger, a view or a table
        while the project was open), it is checked again and the write refused -- SQL that
        Kestrel did not create would otherwise run as part of Kestrel's own write."""
        path = self._path
        try:
            cookie = int(conn.execute("PRAGMA schema_version").fetchone()[0])
            if cookie == self._schema_cookie:
                return
            found = dbcheck.inspect(conn, self._schema_version)
        except sqlite3.DatabaseError as exc:
            raise ProjectCorruptError(f"The project file '{path}' was damaged while it was open ({exc}), so "
                                      "nothing more is saved to it.", path) from exc
        if found.problems:
            raise ProjectCorruptError(f"The project file '{path}' was changed by another program while it "
                                      f"was open ({'; '.join(found.problems[:6])}), so nothing more is saved "
                                      "to it.", path)
        if found.foreign:
            names = [f.what for f in found.foreign]
            raise ProjectForeignSqlError(
                f"Another program added SQL that Kestrel did not create to '{path}' while it was open: "
                f"{', '.join(names[:8])}{f' and {len(names) - 8} more' if len(names) > 8 else ''}; the "
                "change was not saved and nothing was run. Reopen the project to remove them.", path, names)
        self._schema_cookie = cookie

    @classmethod
    def strip_foreign_objects(cls, path: StrPath) -> list[str]:
        """Remove the SQL that Kestrel did not create (triggers, views, virtual or extra tables
        and indexes, generated columns) from the project at ``path`` -- only with the analyst's
        consent, which is the caller's to ask.  A copy ``<name>.bak-foreign-sql`` is kept
        first.  Returns what was removed (empty: nothing to remove, nothing written)."""
        target = db.abspath(path)
        if not target.is_file():
            raise ProjectError(f"The project file '{target}' does not exist.", target)
        _check_header(target)
        try:
            return dbcheck.strip(target, cls.BUSY_TIMEOUT_S, cls.WRITE_BUSY_TIMEOUT_S)
        except dbcheck.Damaged as exc:
            raise ProjectCorruptError(f"The project file '{target}' is damaged ({exc}); nothing was "
                                      "removed.", target) from exc
        except (OSError, sqlite3.Error) as exc:
            raise ProjectError(f"Could not remove the foreign SQL from '{target}' ({exc}); the file was "
                               "left unchanged.", target) from exc

    def _fail_dead_runs(self) -> None:
        """Mark failed the runs left 'running' by a process of this host that has ended (or
        by nobody known): their results are incomplete and must never be reused."""
        c = runs_table.c
        with self._reading() as conn:
            rows = conn.execute(select(c.id, c.owner_host, c.owner_pid).where(c.status == "running")).all()
        dead = [r.id for r in rows if not db.owner_alive(r.owner_host, r.owner_pid)]
        if dead:
            try:
                with self._writing() as conn:
                    conn.execute(update(runs_table).where(c.id.in_(dead), c.status == "running").values(
                        status="failed", error="the process that ran it ended before it finished"))
            except (ProjectLockedError, ProjectReadOnlyError):
                pass  # never found by find_run anyway; marked on a later open

    def _migrate(self, old: int) -> None:
        """Back the file up, then apply MIGRATIONS[old .. SCHEMA_VERSION-1] in ONE transaction."""
        path, new = self._path, type(self).SCHEMA_VERSION
        if self._read_only:
            raise ProjectReadOnlyError(f"'{path}' was made by an older Kestrel and must be upgraded, which "
                                       "is impossible while it is read-only; copy it somewhere writable.", path)
        if any(v not in MIGRATIONS for v in range(old, new)):
            raise ProjectError(f"'{path}' uses file version {old}, which this Kestrel cannot upgrade.", path)
        backup = db.unique_path(path.with_name(f"{path.name}.bak-v{old}"))
        try:
            db.backup_copy(path, self._mode, self.BUSY_TIMEOUT_S, backup, journal_mode="DELETE")
        except (OSError, sqlite3.Error) as exc:
            raise ProjectError(f"Could not back up '{path}' before upgrading it ({exc}); the file was "
                               "left unchanged.", path) from exc
        with self._write_engine.connect() as conn:
            # Table rebuilds must not cascade: FK enforcement off, checked before commit.
            dbapi_conn = conn.connection.driver_connection
            assert dbapi_conn is not None
            dbapi_conn.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    for version in range(old, new):
                        MIGRATIONS[version](conn)
                    found = dbcheck.inspect(dbapi_conn, new)
                    if found.problems or found.foreign:
                        raise ValueError("the upgraded file does not have the expected layout: " + "; ".join(
                            found.problems + [f.what for f in found.foreign]))
                    if conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise ValueError("foreign key check failed after upgrading")
                    conn.execute(update(meta_table).where(meta_table.c.key == "schema_version")
                                 .values(value=str(new)))
                    conn.execute(sqlite_insert(meta_table).values(key="upgraded_by", value=db.app_version())
                                 .on_conflict_do_update(index_elements=["key"], set_={"value": db.app_version()}))
            except Exception as exc:
                raise ProjectError(f"Upgrading '{path}' from file version {old} failed ({exc}); the file "
                                   f"was left unchanged and a copy is at '{backup}'.", path) from exc
            finally:
                conn.invalidate()  # never return the FK-less connection to the pool
        self._schema_version = new
        self.warnings.append(f"'{path}' was upgraded to the current file version; a copy of the old "
                             f"file was kept at '{backup}'.")

    def save_as(self, new_path: StrPath) -> Project:
        """Copy the project (consistently, via the SQLite backup API) to ``new_path``,
        replacing any file there, and return a new writable Project opened on it.  This
        project stays open; the caller closes it (a temporary one then deletes itself)."""
        self._check_open()
        dest = db.abspath(new_path)
        if dest == self._path or (dest.exists() and os.path.samefile(dest, self._path)):
            raise ProjectError(f"The project is already stored in '{dest}'.", dest)
        if dest.is_dir():
            raise ProjectError(f"'{dest}' is a folder; choose a file name for the project.", dest)
        if not dest.parent.is_dir():
            raise ProjectError(f"The folder '{dest.parent}' does not exist.", dest)
        try:
            db.backup_copy(self._path, self._mode, self.BUSY_TIMEOUT_S, dest)
        except (OSError, sqlite3.Error) as exc:
            raise ProjectError(f"Could not save the project as '{dest}' ({exc}).", dest) from exc
        new = type(self)._open(dest, read_only=False, is_temporary=False)
        if self.is_temporary:
            self._saved_elsewhere = True
        return new

    # -- transaction plumbing ---------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ProjectError(f"The project '{self._path}' has been closed.", self._path)

    def _translate(self, exc: sa_exc.DBAPIError) -> ProjectError:
        path, msg = self._path, str(exc.orig).lower()
        if "readonly" in msg or "read-only" in msg:
            if not self._read_only:
                self._read_only = True
                self.warnings.append(f"'{path}' became read-only, so saving is disabled; use Save As "
                                     "to keep your changes in a new file.")
            return ProjectReadOnlyError(f"'{path}' cannot be written to, so the change was not saved; "
                                        "use Save As to keep your work in a new file.", path)
        if "locked" in msg or "busy" in msg:
            return ProjectLockedError(f"'{path}' is being changed by another program, so the change was "
                                      "not saved; try again in a moment.", path)
        if "malformed" in msg or "not a database" in msg or "corrupt" in msg:
            return ProjectCorruptError(f"The project file '{path}' is damaged ({exc.orig}).", path)
        if "full" in msg:
            return ProjectError(f"The disk holding '{path}' is full, so the change was not saved.", path)
        return ProjectError(f"A database error occurred in '{path}' ({exc.orig}).", path)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the write calls made in the block (on this thread) into ONE transaction:
        it commits at the end, or rolls back entirely on any exception -- so a run and
        everything it produced are stored together or not at all.  Each call inside stays
        atomic on its own (a savepoint); reads inside the block see the block's writes.
        Nested batches join the outer one.  Other threads' writes wait for the commit."""
        if getattr(self._batch, "conn", None) is not None:
            with self._writing():
                yield
            return
        self._check_writable()
        try:
            with self._write_engine.begin() as conn:
                self._batch.conn = conn
                try:
                    yield
                finally:
                    self._batch.conn = None
        except db.BadValue as exc:
            raise ProjectCorruptError(f"Part of the project '{self._path}' is damaged ({exc}).",
                                      self._path) from exc
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ProjectReadOnlyError(f"The project '{self._path}' is open read-only, so changes cannot "
                                       "be saved; use Save As to keep them in a new file.", self._path)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        self._check_open()
        try:
            batch = getattr(self._batch, "conn", None)
            if batch is not None:  # read this thread's uncommitted batch
                yield batch
                return
            with self._engine.connect() as conn:
                yield conn
        except db.BadValue as exc:
            raise ProjectCorruptError(f"Part of the project '{self._path}' is damaged ({exc}), so it "
                                      "could not be read.", self._path) from exc
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One BEGIN IMMEDIATE transaction; committed on success, rolled back on any error.
        Inside a batch of this thread: a savepoint of the batch's transaction instead."""
        self._check_writable()
        try:
            batch = getattr(self._batch, "conn", None)
            if batch is not None:
                with batch.begin_nested():
                    yield batch
                return
            with self._write_engine.begin() as conn:
                yield conn
        except db.BadValue as exc:
            raise ProjectCorruptError(f"Part of the project '{self._path}' is damaged ({exc}).",
                                      self._path) from exc
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc) from exc

    @staticmethod
    def _require(conn: Connection, table: Table, row_id: Any, what: str) -> None:
        if conn.execute(select(table.c.id).where(table.c.id == row_id)).first() is None:
            raise KeyError(f"there is no {what} with id {row_id!r} in this project")

    @staticmethod
    def _require_runs(conn: Connection, run_ids: Iterable[int | None]) -> None:
        wanted = {r for r in run_ids if r is not None}
        if wanted:
            found = set(conn.execute(select(runs_table.c.id).where(runs_table.c.id.in_(wanted))).scalars())
            if wanted - found:
                raise KeyError(f"there is no run with id {min(wanted - found)} in this project")

    # -- media --------------------------------------------------------------------------
    def add_media(self, path: StrPath, content_hash: str, size_bytes: int, duration_s: float | None,
                  container: str, streams: list[dict[str, Any]]) -> int:
        """Register a media file and return its id.  Idempotent: the same path with the
        same content_hash returns the existing id (nothing is updated).  The same path
        with a *different* hash (the file changed on disk) adds a NEW row with a new id;
        the old row and its results are kept, and find_media(path) returns the newest."""
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
            raise ValueError("size_bytes must be a non-negative int")
        if not isinstance(streams, list) or not all(isinstance(s, Mapping) for s in streams):
            raise TypeError("streams must be a list of dicts")
        values = {
            "path": os.fspath(path), "content_hash": str(content_hash), "size_bytes": size_bytes,
            "duration_s": db.check_finite(duration_s, "duration_s", optional=True),
            "container": str(container), "streams_json": db.dumps([dict(s) for s in streams]),
        }
        with self._writing() as conn:
            existing = conn.execute(select(media_table.c.id).where(
                media_table.c.path == values["path"],
                media_table.c.content_hash == values["content_hash"])).scalar()
            if existing is not None:
                return int(existing)
            result = conn.execute(insert(media_table).values(added_at=db.now_iso(), **values))
            return _new_id(result)

    def get_media(self, media_id: int) -> MediaRecord:
        with self._reading() as conn:
            row = conn.execute(select(media_table).where(media_table.c.id == media_id)).first()
            if row is None:
                raise KeyError(f"there is no media with id {media_id!r} in this project")
            return db.media_record(row)

    def list_media(self) -> list[MediaRecord]:
        with self._reading() as conn:
            rows = conn.execute(select(media_table).order_by(media_table.c.id)).all()
            return [db.media_record(r) for r in rows]

    def find_media(self, path: StrPath) -> MediaRecord | None:
        """The newest media row registered under exactly this path, or None."""
        with self._reading() as conn:
            row = conn.execute(select(media_table).where(media_table.c.path == os.fspath(path))
                               .order_by(media_table.c.id.desc()).limit(1)).first()
            return None if row is None else db.media_record(row)

    def remove_media(self, media_id: int) -> None:
        """Delete a media row with its runs, tracks, items and arrays."""
        with self._writing() as conn:
            self._require(conn, media_table, media_id, "media")
            conn.execute(delete(media_table).where(media_table.c.id == media_id))

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, kind: str, producer: str, version: str, params: Mapping[str, Any],
                  media_id: int | None = None) -> int:
        """Record that a computation started (status 'running'); returns the run id."""
        params_json = db.dumps(db.check_dict(params, "params"))
        host, pid = db.this_owner()
        with self._writing() as conn:
            if media_id is not None:
                self._require(conn, media_table, media_id, "media")
            result = conn.execute(insert(runs_table).values(
                kind=str(kind), producer=str(producer), version=str(version), params_json=params_json,
                media_id=media_id, started_at=db.now_iso(), status="running", owner_host=host, owner_pid=pid))
            return _new_id(result)

    def finish_run(self, run_id: int, status: str = "ok", error: str | None = None) -> None:
        """Mark a running run 'ok', 'failed' or 'cancelled'; fills finished_at/duration_s."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        with self._writing() as conn:
            row = conn.execute(select(runs_table.c.started_at, runs_table.c.status)
                               .where(runs_table.c.id == run_id)).first()
            if row is None:
                raise KeyError(f"there is no run with id {run_id!r} in this project")
            if row.status != "running":
                raise ValueError(f"run {run_id} has already finished ({row.status})")
            finished = db.now_iso()
            try:
                duration: float | None = max(0.0, (datetime.fromisoformat(finished)
                                                   - db.v_time(row.started_at, "start")).total_seconds())
            except (db.BadValue, TypeError):
                duration = None
            conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(
                finished_at=finished, duration_s=duration, status=status,
                error=None if error is None else str(error)))

    def record_run(self, kind: str, producer: str, version: str, params: Mapping[str, Any],
                   media_id: int | None, started_at: float, duration_s: float, status: str = "ok",
                   error: str | None = None) -> int:
        """Record a run that already finished where it ran (a worker that measured its own
        start, as Unix time, and duration); returns its id."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        params_json = db.dumps(db.check_dict(params, "params"))
        start = datetime.fromtimestamp(float(started_at), tz=timezone.utc)
        end = start + timedelta(seconds=max(0.0, float(duration_s)))
        with self._writing() as conn:
            if media_id is not None:
                self._require(conn, media_table, media_id, "media")
            result = conn.execute(insert(runs_table).values(
                kind=str(kind), producer=str(producer), version=str(version), params_json=params_json,
                media_id=media_id, started_at=start.isoformat(), finished_at=end.isoformat(),
                duration_s=max(0.0, float(duration_s)), status=status,
                error=None if error is None else str(error)))
            return _new_id(result)

    def list_runs(self, media_id: int | None = None) -> list[RunRecord]:
        """All runs (media_id=None) or the runs of one media file, oldest first."""
        stmt = select(runs_table).order_by(runs_table.c.id)
        if media_id is not None:
            stmt = stmt.where(runs_table.c.media_id == media_id)
        with self._reading() as conn:
            return [db.run_record(r) for r in conn.execute(stmt).all()]

    def find_run(self, kind: str, producer: str, version: str, params: Mapping[str, Any],
                 media_id: int | None = None) -> RunRecord | None:
        """The latest run with status 'ok' and exactly these inputs (params compared as
        canonical JSON, so key order does not matter but 1 != 1.0), or None. The device a run
        used ("device", "device_note", "devices": provenance) is not compared: a result is reused
        on any device."""
        col = runs_table.c
        params = {k: v for k, v in params.items() if k not in ("device", "device_note", "devices")}
        stored = func.json_remove(col.params_json, "$.device", "$.device_note", "$.devices")
        stmt = (select(runs_table)
                .where(col.kind == str(kind), col.producer == str(producer), col.version == str(version),
                       stored == db.dumps(db.check_dict(params, "params")), col.status == "ok",
                       col.media_id.is_(None) if media_id is None else col.media_id == media_id)
                .order_by(col.finished_at.desc(), col.id.desc()).limit(1))
        with self._reading() as conn:
            row = conn.execute(stmt).first()
            return None if row is None else db.run_record(row)

    # -- arrays -------------------------------------------------------------------------
    def put_array(self, media_id: int, key: str, array: npt.ArrayLike,
                  meta: Mapping[str, Any] | None = None, run_id: int | None = None) -> None:
        """Store (or replace) a numpy array cache under (media_id, key).  Only the dtypes in
        ARRAY_DTYPES are allowed; the bytes are stored little-endian, never pickled."""
        arr = np.asarray(array)
        name = arr.dtype.name
        if name not in ARRAY_DTYPES:
            raise ValueError(f"arrays of dtype {arr.dtype} cannot be stored; allowed: {sorted(ARRAY_DTYPES)}")
        values = {
            "dtype": name, "shape_json": db.dumps([int(n) for n in arr.shape]),
            "meta_json": db.dumps(db.check_dict({} if meta is None else meta, "meta")),
            "data": np.ascontiguousarray(arr, dtype=np.dtype(ARRAY_DTYPES[name])).tobytes(),
            "run_id": db.check_opt_id(run_id, "run_id"),
        }
        with self._writing() as conn:
            self._require(conn, media_table, media_id, "media")
            self._require_runs(conn, [run_id])
            conn.execute(sqlite_insert(arrays_table).values(media_id=media_id, key=str(key), **values)
                         .on_conflict_do_update(index_elements=["media_id", "key"], set_=values))

    def get_array(self, media_id: int, key: str) -> tuple[npt.NDArray[Any], dict[str, Any]] | None:
        """The (writable copy of the) array and its meta dict, or None if absent."""
        a = arrays_table.c
        with self._reading() as conn:
            row = conn.execute(select(a.dtype, a.shape_json, a.meta_json, a.data)
                               .where(a.media_id == media_id, a.key == str(key))).first()
            return None if row is None else db.decode_array(row, f"cached array '{key}'")

    # -- settings -----------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._reading() as conn:
            row = conn.execute(select(settings_table.c.value_json)
                               .where(settings_table.c.key == str(key))).first()
            return default if row is None else db.v_json(row.value_json, f"setting '{key}'", None)

    def setting_keys(self, prefix: str = "") -> list[str]:
        """The stored settings' keys that start with ``prefix``, sorted."""
        with self._reading() as conn:
            rows = conn.execute(select(settings_table.c.key)).all()
        return sorted(str(r.key) for r in rows if str(r.key).startswith(prefix))

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value (TypeError/ValueError otherwise)."""
        value_json = db.dumps(value)
        with self._writing() as conn:
            conn.execute(sqlite_insert(settings_table).values(key=str(key), value_json=value_json)
                         .on_conflict_do_update(index_elements=["key"], set_={"value_json": value_json}))
