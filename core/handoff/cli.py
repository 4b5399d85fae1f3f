"""The ``export`` and ``import`` commands (no window): the hand-off jobs the File menu runs.

    python main.py export MEDIA --project P --format FMT --out PATH [--start S --end E]
    python main.py import MEDIA --project P --format FMT FILE

A progress bar on stderr, then the result's summary, the files written and the notes (what was
left out, and why) on stdout. Exit 0 when done; 2 for a usage error (a format that does not
exist, an end before the start, a range past the file's end); 1 for what the project, the file
or the format refused (one ``kestrel: …`` line, see :mod:`core.cli`); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from core import cliargs
from core.handoff.base import FORMATS


def time_value(text: str) -> float:
    """An argparse type: seconds (``75.5``) or ``MM:SS`` / ``HH:MM:SS(.mmm)`` into the file."""
    from core.timefmt import parse_time  # the one parser of clock times on Kestrel's command lines

    try:
        t = parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (use seconds or HH:MM:SS.mmm)") from None
    if not math.isfinite(t) or t > cliargs.MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is not a time within the length of a media file")
    return t


time_value.__name__ = "a time"


def _formats(importing: bool) -> list:
    return [f for f in FORMATS.values() if f.can_import or not importing]


def _epilog(importing: bool) -> str:
    rows = [f"  {f.name:12s} {f.title}: {f.description}" if f.description else f"  {f.name:12s} {f.title}"
            for f in _formats(importing)]
    return "formats:\n" + "\n".join(rows)


def _common(ap: argparse.ArgumentParser, importing: bool) -> None:
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.epilog = _epilog(importing)
    ap.add_argument("media", metavar="MEDIA", help="the media file, as it is in the project")
    ap.add_argument("--project", required=True, metavar="P", help="the .kestrel project that holds the media's work")
    names = [f.name for f in _formats(importing)]
    ap.add_argument("--format", required=True, choices=names, metavar="FORMAT",
                    help=f"one of: {', '.join(names)} (listed below)")


def add_export_arguments(ap: argparse.ArgumentParser) -> None:
    _common(ap, importing=False)
    ap.add_argument("--out", required=True, metavar="PATH",
                    help="the file to write (for evidence: a folder, made if missing); written whole or not at all")
    ap.add_argument("--start", type=time_value, default=None, metavar="S",
                    help="from this time: seconds or HH:MM:SS(.mmm) (default: the file's start)")
    ap.add_argument("--end", type=time_value, default=None, metavar="E",
                    help="to this time: seconds or HH:MM:SS(.mmm) (default: the file's end)")


def add_import_arguments(ap: argparse.ArgumentParser) -> None:
    _common(ap, importing=True)
    ap.add_argument("file", metavar="FILE", help="the file to import (ground truth, a colleague's corrections)")


def run_export(args: argparse.Namespace) -> int:
    from core.handoff.jobs import ExportRequest, export_job

    if args.start is not None and args.end is not None and args.end <= args.start:
        raise cliargs.BadArgument(f"argument --end: {args.end:g} s is not after --start ({args.start:g} s)")
    req = ExportRequest(project=args.project, media=args.media, fmt=args.format, out=args.out,
                        start=args.start, end=args.end)
    result = _with_bar(export_job, req, Path(args.media).name)
    print(result.summary)
    for p in result.paths:
        print(f"  wrote {p}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from core.handoff.jobs import ImportRequest, import_job

    req = ImportRequest(project=args.project, media=args.media, fmt=args.format, file=args.file)
    result = _with_bar(import_job, req, Path(args.file).name)
    print(result.summary)
    print(f"  track #{result.track_id}: {result.items} items")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def _with_bar(job, req, label: str):
    """``job(req, state)`` with a progress bar on stderr; a bar left mid-line is ended before an
    error line, so the error starts a line of its own."""
    from core.jobs import HeadlessState

    state = HeadlessState(bar=True, label=label[:24])
    try:
        return job(req, state)
    except BaseException:
        state.end_line()
        raise
