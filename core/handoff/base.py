"""The contract of the hand-off formats, and their registry.

A format is a module of this package with, as it applies:

* ``export(project, media_id, out, *, start=None, end=None, state=None) -> ExportResult``: write
  the media file's work between ``start`` and ``end`` (seconds; None: its whole length) to
  ``out`` (a file, or a folder for formats that write several), atomically;
* ``import_file(project, media_id, path, *, state=None) -> ImportResult``: read ``path`` and
  store it as a track of the media file (an analyst's ground truth, a colleague's corrections).

``state`` is a :class:`core.jobs.JobState` (progress, cancel) or None. What cannot be done is
a :class:`HandoffError` with a sentence for the analyst. :data:`FORMATS` names every format and
where it lives; the command line (``main.py export|import``) and the window's File menu both
go through :func:`export_with` and :func:`import_with`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import KestrelError


class HandoffError(KestrelError):
    """An export or import that cannot be done: the file, the range, what the project lacks."""


@dataclass(frozen=True)
class ExportResult:
    paths: tuple[Path, ...]  # every file written
    summary: str  # one line for the analyst: what was written, how much
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"boxes": 1200, "frames": 300}
    notes: tuple[str, ...] = ()  # what was left out, and why


@dataclass(frozen=True)
class ImportResult:
    track_id: int
    items: int
    summary: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    name: str  # as the command line takes it
    title: str  # as the File menu shows it
    module: str  # core.handoff.<module>
    suffix: str  # the output's suffix; "" for a folder
    can_import: bool = False
    description: str = ""


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("coco", "COCO JSON (detections)", "core.handoff.coco", ".json", True,
           "boxes per sampled frame; images carry their times"),
    Format("mot", "MOT Challenge CSV (tracks)", "core.handoff.mot", ".txt", True,
           "frame, id, box, score per line"),
    Format("cvat", "CVAT for video 1.1 XML (tracks)", "core.handoff.cvat", ".xml", True,
           "tracks of boxes, keyframes at the sampled frames"),
    Format("labelstudio", "Label Studio video JSON (tracks)", "core.handoff.labelstudio", ".json", True,
           "videorectangle regions in percent of the frame"),
    Format("srt", "SubRip subtitles (transcript)", "core.handoff.transcript", ".srt", False,
           "the transcript with its speakers"),
    Format("vtt", "WebVTT subtitles (transcript)", "core.handoff.transcript", ".vtt", False,
           "the transcript with <v Speaker> voices"),
    Format("markdown", "Chat conversation (Markdown)", "core.handoff.chatlog", ".md", False,
           "questions, answers, their times and the frames they cite"),
    Format("evidence", "Evidence package (clip + SHA-256 sidecar)", "core.handoff.evidence", "", False,
           "the clip, its sidecar with hashes, times, models and scores"),
    Format("chapters", "MP4 copy with chapters (events, tags)", "core.handoff.chapters", ".mp4", False,
           "a copy of the media with a chapter per event and tag"),
)}


def get_format(name: str, *, importing: bool = False) -> Format:
    fmt = FORMATS.get(name)
    if fmt is None or (importing and not fmt.can_import):
        names = ", ".join(f.name for f in FORMATS.values() if f.can_import or not importing)
        raise HandoffError(f"unknown {'import' if importing else 'export'} format {name!r}; one of: {names}")
    return fmt


def _module(fmt: Format) -> Any:
    return importlib.import_module(fmt.module)


def export_with(fmt: str, project: Any, media_id: int, out: Path, *, start: float | None = None,
                end: float | None = None, state: Any = None) -> ExportResult:
    """Export through format ``fmt``'s module (a :class:`HandoffError` for a bad range)."""
    if start is not None and end is not None and end <= start:
        raise HandoffError(f"the range ends ({end:g} s) before it starts ({start:g} s)")
    return _module(get_format(fmt)).export(project, media_id, Path(out), start=start, end=end, state=state)


def import_with(fmt: str, project: Any, media_id: int, path: Path, *, state: Any = None) -> ImportResult:
    """Import ``path`` through format ``fmt``'s module."""
    return _module(get_format(fmt, importing=True)).import_file(project, media_id, Path(path), state=state)
