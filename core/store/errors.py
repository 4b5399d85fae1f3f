"""The errors of :mod:`core.store.project` (re-exported there) and the raw header check that runs
before SQLite opens a file.  Qt-free."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core.store.schema import APPLICATION_ID, StrPath
from core.errors import KestrelError

_SQLITE_MAGIC = b"SQLite format 3\x00"


class ProjectError(KestrelError):
    """A project file could not be opened, read or written; ``str()`` is for the analyst."""

    def __init__(self, message: str, path: StrPath | None = None) -> None:
        super().__init__(message)
        self.path: str | None = None if path is None else os.fspath(path)


class NotAProjectError(ProjectError):
    """The file is not a Kestrel project (empty, text, random bytes, another app's db)."""


class ProjectCorruptError(ProjectError):
    """The file is a Kestrel project but damaged (truncated, malformed, invalid rows)."""


class ProjectNewerSchemaError(ProjectError):
    """The project was written by a newer Kestrel; it was not touched."""


class ProjectLockedError(ProjectError):
    """Another program holds the write lock on the project."""


class ProjectReadOnlyError(ProjectError):
    """A write was attempted on a project that is open read-only."""


class ProjectForeignSqlError(ProjectError):
    """The file carries SQL that Kestrel did not create (triggers, views, extra tables or
    indexes); it was not opened.  ``objects`` names them; see strip_foreign_objects."""

    def __init__(self, message: str, path: StrPath | None = None, objects: Iterable[str] = ()) -> None:
        super().__init__(message, path)
        self.objects: list[str] = list(objects)


class _ExistsError(ProjectError):
    """Internal: the file to create exists (or appeared meanwhile); open_or_create opens it."""


class _ReadOnlyFile(KestrelError):
    """Internal: SQLite opened the file but cannot write to it."""


class _CannotOpen(KestrelError):
    """Internal: a plain read-only open failed (WAL side files cannot be created)."""


def _check_side_files(path: Path) -> None:
    """SQLite opens ``-wal``, ``-shm`` and ``-journal`` beside a project by name: one that is a
    pipe (opening or writing it blocks forever), a folder, a device or a link (writes would
    land in another file) is refused before SQLite sees it."""
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(f"{path}{suffix}")
        if os.path.lexists(side) and (side.is_symlink() or not side.is_file()):
            raise ProjectError(f"'{path}' was not opened: '{side.name}' beside it is not a plain file (a "
                               "folder, pipe, device or link); remove or rename it, then open the project "
                               "again.", path)


def _check_header(path: Path) -> None:
    """Reject non-projects from the raw header, before SQLite opens (and could touch) them."""
    _check_side_files(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise ProjectError(f"Could not read '{path}' ({exc.strerror}).", path) from exc
    if not head:
        raise NotAProjectError(f"'{path}' is empty, so it is not a Kestrel project.", path)
    if not head.startswith(_SQLITE_MAGIC):
        raise NotAProjectError(f"'{path}' is not a Kestrel project file.", path)
    if len(head) < 100:
        raise ProjectCorruptError(f"The project file '{path}' is cut short and cannot be opened.", path)
    if int.from_bytes(head[68:72], "big") != APPLICATION_ID:
        raise NotAProjectError(
            f"'{path}' is a database of another program, not a Kestrel project; it was left untouched.",
            path,
        )
