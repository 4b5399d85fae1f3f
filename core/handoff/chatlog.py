"""A chat conversation about a media file as Markdown, with the frames it cites as PNGs.

Where it comes from: :func:`core.chat.history.save_chat` stores each question and answer as an
item of the media's ``("chat", "chat")`` track — at the media time asked about, the question
(first 500 characters) as its label, the answer, the model's name, the bitrate of the machine
stream it was given (``kbps``; ``human_kbps`` for a human-quality H.264 stream of the same
frames where measured), the times of the frames it saw, the citations (``[text, seconds]``) and
the boxes it cites (``evidence``) in the item's data — and a run of kind ``"chat"`` with the
whole question and when the answer was stored. The encoder's other settings are not stored,
so they are not written.

The Markdown: a title, the media file, the models that answered (with their catalogue
version where the catalogue knows the name), then per turn, in the order they were asked,
``**Q** (2026-12-06 14:03:12 UTC, at 00:01:05)`` and the question, ``**A**`` and the answer,
what the model was given, the frames the answer cites as ``![00:01:05](<stem>_frames/000123.png)``
(the frame on screen at the cited second, 0-based frame number ``round(time * fps)``, written
next to the ``.md``), and the citations and cited boxes as stored. Stored text is escaped, so
a question cannot become a link, an image fetched from elsewhere, or HTML in the reader.

Frames are decoded here, in the export job (never on the window's thread), and only from the
very file the project analysed (same size and content hash): a file that moved, changed or no
longer decodes gets a note in the Markdown and in the result, not a crash. With a range, the
turns kept are those asked about a time in it or citing one.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from core.chat.history import CHAT_TRACK
from core.exportsafe import write_replacing
from core.handoff.base import ExportResult, HandoffError
from core.handoff.boxes import write_out
from core.handoff.evidence import check_same_file, media_of
from core.handoff.transcript import range_items, stored_track
from core.jobs import HeadlessState, check
from core.timefmt import subtitle_stamp, timecode

SUFFIXES = (".md", ".markdown")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#!|~&])")
_LINE_START = re.compile(r"^([-+=]|\d+[.)])")  # a list item, a setext underline


@dataclass
class Turn:
    at: float  # media seconds asked about
    question: str
    answer: str
    model: str
    asked: datetime | None  # when the answer was stored (the chat run's start)
    order: tuple
    data: dict[str, Any]
    cited: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Still:
    """A cited second's frame: its number and the PNG's path relative to the .md, or why there is none."""

    frame: int | None = None
    time: float | None = None
    link: str = ""
    note: str = ""


# -- reading the conversation -------------------------------------------------------------------

def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _citations(data: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for c in data.get("citations") or ():
        if isinstance(c, (list, tuple)) and len(c) == 2 and _finite(c[1]) is not None and c[1] >= 0:
            out.append((str(c[0]), float(c[1])))
    return out


def turns_of(project: Any, media_id: int) -> list[Turn]:
    """Every stored question and answer about the media file, in the order they were asked."""
    tr = stored_track(project, media_id, *CHAT_TRACK)
    if tr is None:
        return []
    runs = {r.id: r for r in project.list_runs(media_id) if r.kind == "chat"}
    out = []
    for k, it in enumerate(range_items(project, tr.id, None, None)):
        data = it.data if isinstance(it.data, dict) else {}
        run = runs.get(it.run_id)
        full = run.params.get("question") if run is not None and isinstance(run.params, dict) else None
        question = full if isinstance(full, str) and full.startswith(it.label or "") else (it.label or "")
        asked = run.started_at if run is not None else None
        if asked is not None and asked.tzinfo is None:
            asked = asked.replace(tzinfo=timezone.utc)
        out.append(Turn(float(it.start_s), question, str(data.get("answer") or ""), str(data.get("model") or ""),
                        asked, (it.run_id is None, it.run_id or 0, k), data,
                        list(dict.fromkeys(t for _, t in _citations(data)))))
    return sorted(out, key=lambda t: t.order)


def in_range(turn: Turn, start: float | None, end: float | None) -> bool:
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    return any(lo <= t <= hi for t in [turn.at, *turn.cited])


# -- the cited frames ---------------------------------------------------------------------------

def the_analysed_file(rec: Any) -> tuple[Path | None, str]:
    """The media file, if it is here and is the one the project analysed; else why not."""
    p = Path(str(rec.path))
    try:
        if not p.is_file():
            return None, f"{rec.path} is not on this machine: the cited frames are not included"
        check_same_file(p, rec.content_hash)
    except HandoffError as e:
        return None, f"{e}; the cited frames are not included"
    except (OSError, ValueError) as e:
        return None, f"{rec.path} cannot be read ({getattr(e, 'strerror', None) or e}): the cited frames are not included"
    return p, ""


def write_stills(rec: Any, times: Iterable[float], folder: Path, state: Any) -> dict[float, Still]:
    """Decode the frame on screen at each second of ``times`` and write it as ``folder/NNNNNN.png``
    (a frame cited twice is written once); a second whose frame cannot be had gets a note."""
    from core.anomaly.export import thumbnail_png
    from core.media.decode import MediaError, VideoDecoder

    times = sorted(set(times))
    if not times:
        return {}
    path, why = the_analysed_file(rec)
    if path is None:
        return {t: Still(note=why) for t in times}
    try:
        dec = VideoDecoder(path, max_size=None)
    except (MediaError, OSError) as e:
        return {t: Still(note=f"the frames cannot be decoded any more: {e}") for t in times}
    out: dict[float, Still] = {}
    written: dict[int, Still] = {}
    with dec:
        for i, t in enumerate(times):
            check(state)
            state.set_progress(0.1 + 0.8 * i / len(times), "cited frames")
            try:
                frame = dec.frame_at(t)
                n = int(round(frame.time * dec.fps))
                if n not in written:
                    folder.mkdir(exist_ok=True)  # beside the .md, whose folder must exist
                    write_replacing(folder / f"{n:06d}.png", thumbnail_png(frame.image))
                    written[n] = Still(n, frame.time, f"{folder.name}/{n:06d}.png")
                out[t] = written[n]
            except MediaError as e:
                out[t] = Still(note=f"no frame at {timecode(t)}: {e}")
            except (OSError, ValueError) as e:
                raise HandoffError(f"cannot write the frame at {timecode(t)} to {folder}: "
                                   f"{getattr(e, 'strerror', None) or e}") from e
    return out


# -- the Markdown -------------------------------------------------------------------------------

def md(text: Any) -> str:
    """Stored text as Markdown that shows it as it is: no link, image, HTML, heading or list of its
    own. Its first line follows a prefix of Kestrel's ("**Q** ", "- Media file: "); the others
    start a line, where "1." or "-" would start a list."""
    lines = []
    for k, line in enumerate(str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")):
        line = _MD_SPECIAL.sub(r"\\\1", line.replace("\t", " "))
        if k:
            line = _LINE_START.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], line.lstrip())
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    # a line break stays one (two spaces), a blank line stays a paragraph break
    return "  \n".join(lines).replace("  \n  \n", "\n\n")


def hms(t: float) -> str:
    """``hh:mm:ss`` of a cited second, as the chat cites it."""
    return subtitle_stamp(round(t))[:8]


def _stamp(d: datetime | None) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if d is not None else "date not stored"


def model_line(name: str) -> str:
    """The model's name with its version from Kestrel's catalogue, where the catalogue has it."""
    from core.errors import KestrelError
    from models.catalogue import get_spec

    if not name:
        return "a model whose name was not stored"
    try:
        version = get_spec(name).version
    except KestrelError:
        return f"{md(name)} (not in Kestrel's catalogue: no version known)"
    return f"{md(name)} (catalogue version {md(version)})" if version else f"{md(name)} (no version in the catalogue)"


def _given(d: dict[str, Any]) -> str:
    """What the model was given and how long it took, from what was stored."""
    parts = []
    frames = [f for f in (d.get("frames") or ()) if _finite(f) is not None]
    if frames:
        parts.append(f"it saw {len(frames)} frame(s), {timecode(min(frames))}–{timecode(max(frames))}")
    kbps = _finite(d.get("kbps"))
    if kbps:
        human = _finite(d.get("human_kbps"))
        parts.append(f"as a machine stream of {kbps:g} kbit/s"
                     + (f" (a human-quality H.264 stream of the same frames: {human:g} kbit/s)" if human else ""))
    lat = d.get("latency") if isinstance(d.get("latency"), dict) else {}
    secs = {k: _finite(v) for k, v in lat.items()}
    if any(secs.values()):
        total = sum(v for v in secs.values() if v)
        parts.append(f"answered in {total:.1f} s (" + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s"
                                                              for k, v in secs.items() if v is not None) + ")")
    return "; ".join(parts)


def _evidence_lines(d: dict[str, Any]) -> list[str]:
    out = []
    for e in d.get("evidence") or ():
        if not isinstance(e, dict):
            continue
        t, cited = _finite(e.get("time")), _finite(e.get("cited"))
        box = e.get("box") if isinstance(e.get("box"), list) else []
        size = e.get("size") if isinstance(e.get("size"), list) else []
        verdict = {True: "confirmed", False: "unconfirmed"}.get(e.get("confirmed"), "not checked")
        score = _finite(e.get("score"))
        out.append(f"- {md(e.get('label', '?'))}"
                   + (f" {score:.2f}" if score is not None else "")
                   + (f" cited at {hms(cited)}" if cited is not None else "")
                   + (f", seen in the frame at {timecode(t)}" if t is not None else "")
                   + (f", box \\[{', '.join(f'{_finite(v) or 0:g}' for v in box)}\\]" if box else "")
                   + (f" of {'×'.join(md(v) for v in size)}" if size else "")
                   + f", {verdict}, from {md(e.get('source', 'perception'))}")
    return out


def turn_markdown(k: int, turn: Turn, stills: dict[float, Still]) -> str:
    d = turn.data
    out = [f"## {k}. At {hms(turn.at)}", "",
           f"**Q** ({_stamp(turn.asked)}, at {hms(turn.at)}) {md(turn.question)}", ""]
    answer = md(turn.answer) if turn.answer.strip() else "*(no answer)*"
    out += [f"**A** {answer}", ""]
    if d.get("partial") or d.get("error"):
        out += [f"*The answer is incomplete{': ' + md(d['error']) if d.get('error') else ''}.*", ""]
    given = _given(d)
    out += [f"Answered by {model_line(turn.model)}" + (f": {given}." if given else "."), ""]
    cites = _citations(d)
    if cites:
        out.append("Cited:")
        out.append("")
        for text, t in cites:
            s = stills.get(t, Still(note="not decoded"))
            if s.link:
                out.append(f"- {md(text)} → ![{hms(t)}]({quote(s.link)} \"frame {s.frame}, {timecode(s.time)}\")")
            else:
                out.append(f"- {md(text)} ({timecode(t)}): {md(s.note)}")
        out.append("")
    ev = _evidence_lines(d)
    if ev:
        out += ["Boxes the answer cites:", "", *ev, ""]
    return "\n".join(out)


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """Write the chat about the media file (the turns asked about or citing a time in
    ``[start, end]``) to ``out`` (``.md``), the frames it cites to ``<stem>_frames/`` next to
    it (see the module doc). A :class:`HandoffError` when there is no conversation (in the
    range), the suffix is not .md, or ``out`` cannot be written."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise HandoffError(f"a chat conversation is written as .md, not {out.suffix or 'a file without a suffix'} "
                           f"({out.name})")
    state = state if state is not None else HeadlessState()
    rec = media_of(project, media_id)
    name = Path(str(rec.path)).name
    state.set_progress(0.0, "reading the chat")
    turns = turns_of(project, media_id)
    if not turns:
        raise HandoffError(f"there is no chat conversation about {name}; ask a question about it first "
                           f"(Chat panel, or main.py chat)")
    turns = [t for t in turns if in_range(t, start, end)]
    if not turns:
        raise HandoffError(f"no chat question about {name} is about or cites a time between "
                           f"{timecode(start or 0.0)} and {'the end' if end is None else timecode(end)}")
    check(state)
    folder = out.parent / f"{out.stem}_frames"
    stills = write_stills(rec, [t for turn in turns for t in turn.cited], folder, state)
    check(state)
    notes = tuple(dict.fromkeys(s.note for s in stills.values() if s.note))
    models = list(dict.fromkeys(t.model for t in turns))
    head = [f"# Chat about {md(name)}", "",
            f"- Media file: {md(rec.path)}",
            f"- Project: {md(Path(str(project.path)).name)}",
            "- Models that answered: " + "; ".join(model_line(m) for m in models),
            f"- Questions: {len(turns)}"
            + ("" if start is None and end is None else
               f", those about or citing a time between {timecode(start or 0.0)} and "
               f"{'the end' if end is None else timecode(end)}"),
            f"- Exported by Kestrel on {_stamp(datetime.fromtimestamp(time.time(), timezone.utc))}. A question's "
            f"date is when its answer was stored (UTC); \"at\" is the media time it was about.", ""]
    if notes:
        head += [f"*{md(n)}*" for n in notes] + [""]
    text = "\n".join(head) + "\n" + "\n".join(turn_markdown(k, t, stills) for k, t in enumerate(turns, 1))
    path = write_out(out, text.encode("utf-8"))
    state.set_progress(1.0, "")
    pngs = sorted({folder / Path(s.link).name for s in stills.values() if s.link})
    return ExportResult((path, *pngs), f"{len(turns)} question(s), {len(pngs)} cited frame(s) → {path.name}",
                        {"turns": len(turns), "frames": len(pngs)}, notes)
