"""The hand-off jobs: one export, one import, as ``fn(request, state)`` (Qt-free).

Both name the project and the media file as the analyst does (a project file's path, a media
file's path) and go through the registry of :mod:`core.handoff.base`. The command line
(``main.py export|import``, :mod:`core.handoff.cli`) gives a project path: the job opens it
with the store's own checks (a damaged, locked, newer or read-only project is one sentence) and
closes it. The window gives its open :class:`~core.store.project.Project` instead: the job uses
it and leaves it open. Threads: the window runs :func:`import_job` on its database worker (an
import writes a track) and :func:`export_job` on the I/O pool (an export only reads).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cliargs import UsageError
from core.handoff.base import ExportResult, Format, HandoffError, ImportResult, export_with, get_format, import_with
from core.jobs import check, set_media_span


class RangeError(HandoffError, UsageError):
    """A range the media file cannot give (it starts past the file's end): a bad argument only
    the file could reveal, so the command line exits 2."""


@dataclass(frozen=True)
class ExportRequest:
    project: Any  # a project file's path (str), or the window's open Project
    media: str  # the media file's path, as the project registered it (resolved here)
    fmt: str  # a name of core.handoff.base.FORMATS
    out: str  # the file (or, for a folder format, the folder) to write
    start: float | None = None  # seconds; None: the file's start
    end: float | None = None  # seconds; None: the file's end


@dataclass(frozen=True)
class ImportRequest:
    project: Any  # a project file's path (str), or the window's open Project
    media: str
    fmt: str  # a name of FORMATS that can import
    file: str  # the file to read


def export_job(req: ExportRequest, state: Any) -> ExportResult:
    """Write the media file's work in ``req.fmt`` to ``req.out``; the format's result."""
    fmt = available(get_format(req.fmt))
    out = check_out(Path(req.out).expanduser(), folder=fmt.suffix == "")
    state.set_progress(0.0, "opening the project")
    with opened(req.project, writes=None) as project:
        rec = media_row(project, req.media)
        not_an_input(out, project)
        duration = rec.duration_s
        if req.start is not None and duration is not None and req.start >= duration:
            raise RangeError(f"the range starts at {req.start:g} s, past the end of {Path(rec.path).name} "
                             f"({duration:.2f} s long)")
        if duration is not None:
            set_media_span(state, max(0.0, min(req.end if req.end is not None else duration, duration)
                                      - (req.start or 0.0)))
        check(state)
        result = export_with(fmt.name, project, rec.id, out, start=req.start, end=req.end, state=state)
    _finish(state, "written")
    return result


@dataclass(frozen=True)
class EventRequest:
    """The evidence package of one stored anomaly event (the Anomalies panel's button)."""
    project: Any  # a path, or the window's open Project
    media: str
    event: str  # the event's id, e.g. "ev-65200"
    out: str  # the folder the package goes in
    pad: float = 2.0


def event_job(req: EventRequest, state: Any) -> ExportResult:
    """Package ``req.event`` (core.handoff.evidence.export_event) into a new folder in ``req.out``."""
    from core.handoff.evidence import export_event

    out = check_out(Path(req.out).expanduser(), folder=True)
    state.set_progress(0.0, "opening the project")
    with opened(req.project, writes=None) as project:
        rec = media_row(project, req.media)
        check(state)
        result = export_event(project, rec.id, req.event, out, pad=req.pad, state=state)
    _finish(state, "written")
    return result


def import_job(req: ImportRequest, state: Any) -> ImportResult:
    """Read ``req.file`` in ``req.fmt`` and store it as a track of the media file; the format's result."""
    fmt = available(get_format(req.fmt, importing=True))
    src = Path(req.file).expanduser()
    if not src.is_file():
        raise HandoffError(f"{src} does not exist" if not src.exists() else f"{src} is not a file")
    state.set_progress(0.0, "opening the project")
    with opened(req.project, writes="an import") as project:
        rec = media_row(project, req.media)
        check(state)
        result = import_with(fmt.name, project, rec.id, src, state=state)
    _finish(state, "stored")
    return result


def _finish(state: Any, text: str) -> None:
    """100 % once: a format that reported its own end has ended the bar already."""
    if getattr(state, "progress", 0.0) < 1.0:
        state.set_progress(1.0, text)


def available(fmt: Format) -> Format:
    """``fmt`` when its module is in this Kestrel (a registry row whose module is missing is one
    sentence, not an import traceback)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(fmt.module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise HandoffError(f"the {fmt.title} format is not available in this installation of Kestrel")
    return fmt


@contextmanager
def opened(project: Any, *, writes: str | None) -> Iterator[Any]:
    """The project a job works in: an open Project as it is (left open), or a path opened with
    the store's checks and closed afterwards. With ``writes`` (what would be stored) a read-only
    project is refused. A missing project is not created: there would be no media in it."""
    from core.store.project import Project, ProjectError

    own = isinstance(project, (str, os.PathLike))
    p = Project.open(Path(project).expanduser()) if own else project
    try:
        if writes and p.read_only:
            raise ProjectError(f"{p.path} is read-only, so {writes} cannot be stored in it.", p.path)
        yield p
    finally:
        if own:
            p.close()


def media_row(project: Any, media: str) -> Any:
    """The project's newest row for the media file at ``media`` (core.media.decode.probe registers
    files by their resolved path), or a HandoffError that says what to do."""
    path = Path(media).expanduser()
    rec = project.find_media(str(path.resolve())) or project.find_media(str(path))
    if rec is None:
        name = "the project" if getattr(project, "is_temporary", False) else Path(str(project.path)).name
        raise HandoffError(f"{path.name} is not in project {name}; open or analyse it there first.")
    return rec


def not_an_input(out: Path, project: Any) -> None:
    """Refuse an output that would replace the project file (or its journal) or a media file the
    project holds: an export never destroys what it was made from."""
    target = out.resolve()
    proj = Path(str(project.path)).resolve()
    if target in {proj, *(proj.with_name(proj.name + x) for x in ("-wal", "-shm", "-journal"))}:
        raise HandoffError(f"{out} is the project file; writing there would replace it: choose another name")
    if project.find_media(str(target)) is not None:
        raise HandoffError(f"{out} is a media file of this project; writing there would replace it: "
                           "choose another name")


def check_out(out: Path, *, folder: bool) -> Path:
    """``out`` when it can be written: its folder exists and is writable; a file format's
    ``out`` is not a folder (and a folder format's is not a file). Checked before any work."""
    if not str(out).strip() or out.name == "":
        raise HandoffError("the output path is empty; choose a file or folder to write")
    if out.exists() and out.is_dir() != folder:
        raise HandoffError(f"{out} is a folder; choose a file name" if not folder
                           else f"{out} is a file; choose a folder for this format")
    parent = out if folder and out.is_dir() else out.parent
    while folder and not parent.exists() and parent != parent.parent:
        parent = parent.parent  # a folder format makes its folder: the nearest existing one must be writable
    if not parent.is_dir():
        raise HandoffError(f"the folder {parent} does not exist; create it or choose another")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HandoffError(f"the folder {parent} cannot be written to (permission denied)")
    return out
