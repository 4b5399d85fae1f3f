"""Storage layer of a Kestrel project file (``.kestrel``): table layout, schema
migrations, the record types, row validation/decoding and SQLite plumbing.

Qt-free on purpose.  The public API is :mod:`core.store.project` (which re-exports the records);
everything here that reads a value from a file treats it as untrusted and raises
:class:`BadValue` (turned into ``ProjectCorruptError`` by ``core.store.project``) on anything odd.

How the schema evolves
----------------------
* A brand-new project is created straight from :data:`METADATA` and stamped with
  :data:`SCHEMA_VERSION`; migrations are *not* replayed for new files.
* An older file is brought forward on open by ``MIGRATIONS[n]`` (turns version *n* into
  *n + 1*), all steps in ONE transaction, after a backup copy ``<name>.bak-v<n>`` was taken.
* Migrations run with ``PRAGMA foreign_keys=OFF`` (so the SQLite "12-step" table rebuild
  -- create new table, copy, drop old, rename -- cannot cascade-delete child rows) and
  ``PRAGMA foreign_key_check`` must come back empty before the transaction commits.

To change the layout (example: version 1 -> 2):

1. edit the tables below so a fresh project gets the new layout;
2. bump ``SCHEMA_VERSION`` to 2;
3. write ``def _v1_to_v2(conn: Connection) -> None`` that turns a version-1 file into
   exactly that layout using plain SQL (``conn.exec_driver_sql("ALTER TABLE ...")``);
   do not use the tables below inside it: they describe the *newest* layout, not v1;
4. register it: ``MIGRATIONS[1] = _v1_to_v2``, and add a test that opens a v1 file;
5. tell :mod:`core.store.check` what the older layout lacks (``ADDED_COLUMNS[2]``; extend
   ``dbcheck.expected`` if a version adds tables or indexes): files are validated against
   the layout of their own version before the upgrade, and against METADATA after it.

The migration function must not commit, roll back or change PRAGMAs; raising aborts the
whole upgrade and leaves the file as it was.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any, Callable, Final, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.pool import QueuePool

from models.errors import KestrelError

#: ``PRAGMA application_id`` of every Kestrel project: the ASCII bytes "KSTR".
APPLICATION_ID = 0x4B535452
#: Layout version written by this build; files with a larger number are refused.
SCHEMA_VERSION = 4
FILE_EXTENSION = ".kestrel"
RUN_STATUSES = ("running", "ok", "failed", "cancelled")
FINISHED_STATUSES = RUN_STATUSES[1:]
#: dtype name -> stored (little-endian) numpy dtype.  Nothing else is stored or read.
ARRAY_DTYPES: Final[dict[str, str]] = {
    "bool": "|b1", "uint8": "|u1", "int8": "|i1", "uint16": "<u2", "int16": "<i2",
    "uint32": "<u4", "int32": "<i4", "uint64": "<u8", "int64": "<i8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
}
_MAX_NDIM: Final = 32

StrPath = str | os.PathLike[str]
Mode = Literal["rw", "ro", "immutable"]

METADATA = MetaData()

meta_table = Table(
    "meta",
    METADATA,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

media_table = Table(
    "media",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("duration_s", Float, nullable=True),
    Column("container", Text, nullable=False, server_default=""),
    Column("streams_json", Text, nullable=False, server_default="[]"),
    Column("added_at", Text, nullable=False),
    UniqueConstraint("path", "content_hash", name="uq_media_path_hash"),
)

runs_table = Table(
    "runs",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("producer", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("params_json", Text, nullable=False, server_default="{}"),
    # A run of a removed media file is meaningless (and must not be found by find_run
    # as a project-wide run), so it goes with the media.
    Column("media_id", Integer, ForeignKey("media.id", ondelete="CASCADE"), nullable=True),
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text, nullable=True),
    Column("duration_s", Float, nullable=True),
    Column("status", Text, nullable=False, server_default="running"),
    Column("error", Text, nullable=True),
    # v2: which process runs a 'running' run (host name, pid), so a run left 'running' by
    # a process that died can be marked failed when the project is next opened.
    Column("owner_host", Text, nullable=True),
    Column("owner_pid", Integer, nullable=True),
    CheckConstraint(
        "status IN ('running', 'ok', 'failed', 'cancelled')", name="ck_runs_status"
    ),
)
Index("ix_runs_lookup", runs_table.c.kind, runs_table.c.producer, runs_table.c.media_id)
Index("ix_runs_media", runs_table.c.media_id)

tracks_table = Table(
    "tracks",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("media_id", Integer, ForeignKey("media.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("meta_json", Text, nullable=False, server_default="{}"),
)
Index("ix_tracks_media", tracks_table.c.media_id, tracks_table.c.kind, tracks_table.c.name)
Index("ix_tracks_run", tracks_table.c.run_id)

items_table = Table(
    "items",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("track_id", Integer, ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("label", Text, nullable=False, server_default=""),
    Column("confidence", Float, nullable=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("data_json", Text, nullable=False, server_default="{}"),
    # v3: the part of ``data`` an item shares with others of its track (a detection's evidence,
    # frame size, model): ``item_shared`` row (track_id, shared_n); ``data_json`` holds the rest.
    Column("shared_n", Integer, nullable=True),
)
Index("ix_items_track_start", items_table.c.track_id, items_table.c.start_s)
Index("ix_items_run", items_table.c.run_id)

# v3: shared parts of item data, stored once per track (see items.shared_n)
item_shared_table = Table(
    "item_shared",
    METADATA,
    Column("track_id", Integer, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("data_json", Text, nullable=False),
)

# v4: a big track's items in blocks of consecutive items (by start time), a column each
# (core.store.items.Block): a million detections store as a few hundred rows, where a row per
# item costs SQLite seconds. ``run_id`` is the run of every item of the block; the times bound
# the block for range reads (t_min/t_max: its first and last start, e_max: its latest end).
item_blocks_table = Table(
    "item_blocks",
    METADATA,
    Column("track_id", Integer, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("t_min", Float, nullable=False),
    Column("t_max", Float, nullable=False),
    Column("e_max", Float, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("labels_json", Text, nullable=False),  # the block's distinct labels
    Column("own_json", Text, nullable=False, server_default="{}"),  # {index: data of its own}
    Column("columns", LargeBinary, nullable=False),  # starts, ends, confidences, label, shared, boxes
)
Index("ix_item_blocks_run", item_blocks_table.c.run_id)

# v3: what a track holds, kept at save/append time so a timeline of any size reads counts,
# never items: how many, their span, the longest item, items per label (and how many of them
# carry ``confirmed: true``), and the count of item starts per ``base_s`` bucket from ``t0_s``
# (little-endian int32) -- the level of detail a zoomed-out timeline draws.
track_lod_table = Table(
    "track_lod",
    METADATA,
    Column("track_id", Integer, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("t_min", Float, nullable=True),
    Column("t_max", Float, nullable=True),
    Column("max_len", Float, nullable=False, server_default="0"),
    Column("base_s", Float, nullable=False),
    Column("t0_s", Float, nullable=False),
    Column("counts", LargeBinary, nullable=False),
    Column("labels_json", Text, nullable=False, server_default="{}"),
)

arrays_table = Table(
    "arrays",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("media_id", Integer, ForeignKey("media.id", ondelete="CASCADE"), nullable=False),
    Column("key", Text, nullable=False),
    Column("dtype", Text, nullable=False),
    Column("shape_json", Text, nullable=False),
    Column("meta_json", Text, nullable=False, server_default="{}"),
    Column("data", LargeBinary, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    UniqueConstraint("media_id", "key", name="uq_arrays_media_key"),
)
Index("ix_arrays_run", arrays_table.c.run_id)

settings_table = Table(
    "settings",
    METADATA,
    Column("key", Text, primary_key=True),
    Column("value_json", Text, nullable=False),
)


def create_schema(conn: Connection) -> None:
    """Create every table of the newest layout (inside the caller's transaction)."""
    METADATA.create_all(conn)


Migration = Callable[[Connection], None]

def _v1_to_v2(conn: Connection) -> None:
    """v2: runs record the process that runs them (nullable ``owner_host``/``owner_pid``)."""
    conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN owner_host TEXT")
    conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN owner_pid INTEGER")


def _v2_to_v3(conn: Connection) -> None:
    """v3: items may share part of their data (``items.shared_n``, table ``item_shared``) and every
    track has its summary and count buckets (``track_lod``): the project fills them for the tracks
    stored before, once the upgrade is committed (core.store.trackstore.fill_summaries)."""
    conn.exec_driver_sql("ALTER TABLE items ADD COLUMN shared_n INTEGER")
    conn.exec_driver_sql(
        "CREATE TABLE item_shared (track_id INTEGER NOT NULL, n INTEGER NOT NULL, data_json TEXT NOT NULL, "
        "PRIMARY KEY (track_id, n), FOREIGN KEY(track_id) REFERENCES tracks (id) ON DELETE CASCADE)")
    conn.exec_driver_sql(
        "CREATE TABLE track_lod (track_id INTEGER NOT NULL, n INTEGER NOT NULL, t_min FLOAT, t_max FLOAT, "
        "max_len FLOAT DEFAULT '0' NOT NULL, base_s FLOAT NOT NULL, t0_s FLOAT NOT NULL, counts BLOB NOT NULL, "
        "labels_json TEXT DEFAULT '{}' NOT NULL, PRIMARY KEY (track_id), "
        "FOREIGN KEY(track_id) REFERENCES tracks (id) ON DELETE CASCADE)")


def _v3_to_v4(conn: Connection) -> None:
    """v4: big tracks may store their items in blocks (table ``item_blocks``); items stored
    before stay rows of ``items``, read as before."""
    item_blocks_table.create(conn)


#: ``MIGRATIONS[n]`` upgrades a version-``n`` file to version ``n + 1`` (see module doc).
MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


# ------------------------------------------------------------------------ records
class BadValue(KestrelError):
    """A value read from a project file failed validation (-> ProjectCorruptError)."""


@dataclass(frozen=True, slots=True)
class MediaRecord:
    id: int
    path: str
    content_hash: str
    size_bytes: int
    duration_s: float | None
    container: str
    streams: list[dict[str, Any]]
    added_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    kind: str
    producer: str
    version: str
    params: dict[str, Any]
    media_id: int | None
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    start_s: float
    end_s: float
    label: str = ""
    confidence: float | None = None
    run_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrackRecord:
    id: int
    media_id: int
    kind: str
    name: str
    run_id: int | None
    meta: dict[str, Any]
    items: tuple[ItemRecord, ...]


# ------------------------------------------------------- validation and SQLite plumbing
def dumps(value: Any) -> str:
    """Canonical JSON (sorted keys, no NaN) -- also what find_run compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def app_version() -> str:
    try:
        return "kestrel " + _importlib_metadata.version("kestrel")
    except _importlib_metadata.PackageNotFoundError:
        return "kestrel (unknown version)"


def v_json(value: Any, what: str, kind: type | None) -> Any:
    if not isinstance(value, str):
        raise BadValue(f"{what} is not text")
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadValue(f"{what} is not valid JSON") from exc
    if kind is not None and not isinstance(parsed, kind):
        raise BadValue(f"{what} has the wrong structure")
    return parsed


def v_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{what} is not a whole number")
    return value


def v_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadValue(f"{what} is not a number")
    return float(value)


def v_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{what} is not text")
    return value


def v_opt(check: Any, value: Any, what: str) -> Any:
    return None if value is None else check(value, what)


def v_time(value: Any, what: str) -> datetime:
    try:
        return datetime.fromisoformat(v_str(value, what))
    except ValueError as exc:
        raise BadValue(f"{what} is not a valid time") from exc


def check_finite(value: Any, what: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be finite")
    return float(value)


def check_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, not {type(value).__name__}")
    return dict(value)


def check_opt_id(value: Any, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{what} must be an int or None")
    return value


def item_values(item: ItemRecord | Mapping[str, Any]) -> dict[str, Any]:
    """Validate one item (an ItemRecord or a mapping with the same keys) into row values."""
    if isinstance(item, Mapping):
        item = ItemRecord(**item)
    if not isinstance(item, ItemRecord):
        raise TypeError(f"items must be ItemRecord or dict, not {type(item).__name__}")
    start = check_finite(item.start_s, "start_s")
    end = check_finite(item.end_s, "end_s")
    assert start is not None and end is not None
    if end < start:
        raise ValueError(f"item ends ({end}) before it starts ({start})")
    if not isinstance(item.label, str):
        raise TypeError("label must be a str")
    return {
        "start_s": start, "end_s": end, "label": item.label,
        "confidence": check_finite(item.confidence, "confidence", optional=True),
        "run_id": check_opt_id(item.run_id, "run_id"),
        "data_json": dumps(check_dict(item.data, "data")),
    }


def decode_array(row: Any, what: str) -> tuple[npt.NDArray[Any], dict[str, Any]]:
    """Rebuild an array from (dtype, shape_json, meta_json, data) without trusting any of it."""
    name = v_str(row.dtype, f"{what} data type")
    if name not in ARRAY_DTYPES:
        raise BadValue(f"{what} has an unsupported data type")
    shape = v_json(row.shape_json, f"{what} shape", list)
    if len(shape) > _MAX_NDIM or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise BadValue(f"{what} has an invalid shape")
    meta = v_json(row.meta_json, f"{what} metadata", dict)
    data = row.data
    if not isinstance(data, bytes):
        raise BadValue(f"{what} is not binary data")
    stored = np.dtype(ARRAY_DTYPES[name])
    if len(data) != math.prod(shape) * stored.itemsize:
        raise BadValue(f"{what} has {len(data)} bytes, which does not match its shape")
    if name == "bool":
        arr = np.frombuffer(data, dtype=np.uint8) != 0
    else:
        arr = np.frombuffer(data, dtype=stored).astype(stored.newbyteorder("="), copy=True)
    return arr.reshape(tuple(shape)), meta


def media_record(row: Any) -> MediaRecord:
    what = f"media {row.id}"
    streams = v_json(row.streams_json, f"{what} stream list", list)
    if not all(isinstance(s, dict) for s in streams):
        raise BadValue(f"{what} stream list has the wrong structure")
    return MediaRecord(
        id=v_int(row.id, what), path=v_str(row.path, f"{what} path"),
        content_hash=v_str(row.content_hash, f"{what} hash"),
        size_bytes=v_int(row.size_bytes, f"{what} size"),
        duration_s=v_opt(v_float, row.duration_s, f"{what} duration"),
        container=v_str(row.container, f"{what} container"), streams=streams,
        added_at=v_time(row.added_at, f"{what} time added"),
    )


def run_record(row: Any) -> RunRecord:
    what = f"run {row.id}"
    status = v_str(row.status, f"{what} status")
    if status not in RUN_STATUSES:
        raise BadValue(f"{what} has an unknown status")
    return RunRecord(
        id=v_int(row.id, what), kind=v_str(row.kind, f"{what} kind"),
        producer=v_str(row.producer, f"{what} producer"),
        version=v_str(row.version, f"{what} version"),
        params=v_json(row.params_json, f"{what} parameters", dict),
        media_id=v_opt(v_int, row.media_id, f"{what} media"),
        started_at=v_time(row.started_at, f"{what} start time"),
        finished_at=v_opt(v_time, row.finished_at, f"{what} end time"),
        duration_s=v_opt(v_float, row.duration_s, f"{what} duration"),
        status=status, error=v_opt(v_str, row.error, f"{what} error"),
    )


def track_record(row: Any, items: tuple[ItemRecord, ...]) -> TrackRecord:
    what = f"track {row.id}"
    return TrackRecord(
        id=v_int(row.id, what), media_id=v_int(row.media_id, f"{what} media"),
        kind=v_str(row.kind, f"{what} kind"), name=v_str(row.name, f"{what} name"),
        run_id=v_opt(v_int, row.run_id, f"{what} run"),
        meta=v_json(row.meta_json, f"{what} metadata", dict), items=items,
    )


def abspath(path: StrPath) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def connect(path: Path, mode: Mode, timeout: float, *, defensive: bool = True) -> sqlite3.Connection:
    """Open with a URI so SQLite never creates a missing file (mode=rw/ro), with SQLite's
    defensive settings: schema objects may not call functions with side effects
    (``trusted_schema=OFF``), cell sizes are checked on read (``cell_size_check``), and
    the schema cannot be edited behind SQLite's back (``SQLITE_DBCONFIG_DEFENSIVE``, which
    Python exposes only from 3.12 on: used where ``setconfig`` exists)."""
    query = {"rw": "mode=rw", "ro": "mode=ro", "immutable": "mode=ro&immutable=1"}[mode]
    conn = sqlite3.connect(
        f"{path.as_uri()}?{query}", uri=True, timeout=timeout,
        isolation_level=None, check_same_thread=False,
    )
    try:
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("PRAGMA cell_size_check=ON")
        if defensive and hasattr(conn, "setconfig") and hasattr(sqlite3, "SQLITE_DBCONFIG_DEFENSIVE"):
            conn.setconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE, True)  # Python >= 3.12
    except BaseException:
        conn.close()
        raise
    return conn


def make_engine(path: Path, mode: Mode, timeout: float, write_timeout: float | None = None,
                on_write_begin: Callable[[sqlite3.Connection], None] | None = None) -> Engine:
    """A pool of connections; reads wait ``timeout`` for a lock, write transactions (the
    ``kestrel_immediate`` execution option) ``write_timeout``, so a second writer waits for
    another one's long transaction instead of failing and losing its results.
    ``on_write_begin(dbapi_conn)`` runs once a write transaction holds the write lock (so the
    schema cannot change under it); if it raises, the transaction is rolled back unused."""
    read_only = mode != "rw"
    waits = {False: int(timeout * 1000), True: int((write_timeout or timeout) * 1000)}
    engine = create_engine(
        "sqlite://", creator=lambda: connect(path, mode, timeout),
        poolclass=QueuePool, pool_size=4, max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA trusted_schema=OFF")  # schema objects may not call functions
        cur.execute(f"PRAGMA busy_timeout={waits[False]}")
        cur.execute("PRAGMA query_only=ON" if read_only else "PRAGMA synchronous=FULL")
        cur.close()
        record.info["kestrel_busy_ms"] = waits[False]

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # pysqlite runs in autocommit (isolation_level=None); we issue BEGIN ourselves so
        # reads get a snapshot and writes take the write lock up front.
        immediate = bool(conn.get_execution_options().get("kestrel_immediate", False))
        info = conn.connection.info
        if info.get("kestrel_busy_ms") != waits[immediate]:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={waits[immediate]}")
            info["kestrel_busy_ms"] = waits[immediate]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        if immediate and on_write_begin is not None:
            dbapi_conn = conn.connection.driver_connection
            try:
                on_write_begin(dbapi_conn)
            except BaseException:
                dbapi_conn.execute("ROLLBACK")
                raise

    return engine


def this_owner() -> tuple[str, int]:
    """(host name, pid) of this process: the owner recorded with a 'running' run."""
    return socket.gethostname(), os.getpid()


def owner_alive(host: Any, pid: Any) -> bool:
    """Could the process that owns a 'running' run still be running it?  False when it
    has no owner or is a process of this host that no longer exists; True when unsure
    (another host, no permission to signal it, or Windows, where signal 0 is not a probe).
    A recycled pid reads as alive: the run is then left alone, never wrongly failed."""
    if not isinstance(host, str) or isinstance(pid, bool) or not isinstance(pid, int):
        return False
    if host != socket.gethostname() or pid == os.getpid() or os.name == "nt":
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def build_file(tmp: Path, schema_version: int, timeout: float) -> None:
    """Turn the empty file ``tmp`` into a new, complete project (WAL mode)."""
    raw = sqlite3.connect(tmp, isolation_level=None)
    try:  # the header (and so the application id) is written before anything else
        raw.execute(f"PRAGMA application_id={APPLICATION_ID:d}")
    finally:
        raw.close()
    engine = make_engine(tmp, "rw", timeout)
    try:
        with engine.execution_options(kestrel_immediate=True).begin() as conn:
            create_schema(conn)
            conn.execute(meta_table.insert(), [
                {"key": "schema_version", "value": str(schema_version)},
                {"key": "created_at", "value": now_iso()},
                {"key": "app_version", "value": app_version()},
            ])
    finally:
        engine.dispose()
    raw = sqlite3.connect(tmp, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
    finally:
        raw.close()


@contextmanager
def folder_lock(folder: Path, timeout_s: float = 30.0) -> Iterator[None]:
    """Make the processes creating projects in ``folder`` take turns (``flock`` on the folder
    itself; best effort: where that is impossible, hard links still never replace a file).
    TimeoutError when another one holds it for ``timeout_s``."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{folder} is locked") from None
                time.sleep(0.01)
            except OSError:
                break  # no locks on this file system
        yield
    finally:
        os.close(fd)  # releases the lock


def publish(tmp: Path, target: Path, *, replace: bool) -> bool:
    """Move the finished file ``tmp`` to ``target``.  Without ``replace`` a file that exists
    (or appeared meanwhile: another process creating the same project) is never replaced
    -- False, and ``tmp`` is left for the caller -- except an empty one.  Call it holding
    :func:`folder_lock`."""
    if replace or (target.exists() and target.stat().st_size == 0):
        remove_sidecars(target)
        os.replace(tmp, target)
        return True
    if target.exists():
        return False
    remove_sidecars(target)  # stale ones would be replayed into the new file
    try:  # unlike a rename, a link fails when the name exists
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links here (FAT, some shares): only the folder lock guards it
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
    unlink_db(tmp)
    return True


def remove_sidecars(path: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def unlink_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    remove_sidecars(path)


def unique_path(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def backup_copy(src: Path, mode: Mode, timeout: float, dest: Path, journal_mode: str = "WAL") -> None:
    """Consistent copy of ``src`` (WAL included) via the sqlite3 backup API.

    Written to a temporary file next to ``dest`` and renamed over it, so ``dest`` is either
    untouched or complete.  Backups (``journal_mode="DELETE"``) stay a single file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        source = connect(src, mode, timeout)
        try:
            target = sqlite3.connect(tmp, isolation_level=None)
            try:
                source.backup(target)
                target.execute(f"PRAGMA journal_mode={journal_mode}")
            finally:
                target.close()
        finally:
            source.close()
        remove_sidecars(dest)  # a stale -wal next to the new file would corrupt it
        os.replace(tmp, dest)
    except BaseException:
        unlink_db(tmp)
        raise



