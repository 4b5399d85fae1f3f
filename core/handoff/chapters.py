"""An MP4 copy of a media file with a chapter per anomaly event and per tagged shot, for
players and editors that step through chapters.

The copy is a **stream copy** of the whole file (its first video and first audio stream, bit
for bit; nothing is re-encoded): a file whose codecs MP4 does not take is refused with a
sentence, never converted behind the analyst's back. ``start``/``end`` choose which events
and shots become chapters (clipped to the range); the copy itself stays whole, so its times
are the source's.

MP4 chapters are a flat list of ``[start, end)`` that covers the file from its start: a
player shows each chapter until the next one begins, so gaps and overlaps cannot be said.
Kestrel's rules, in this order:

* **events win**: an anomaly event is a chapter ``Anomaly: <label> (score 0.83)`` over its own
  span; one that begins inside an earlier event starts where that one ends, and one wholly
  inside an earlier event adds its title to it (``…; Anomaly: …``); events the analyst
  dismissed are left out;
* **shots are cut around events**: a tagged shot is a chapter ``Shot 3: person, street, speech``
  (its strongest tags that are not rejected or doubtful) over what of it no event covers, so a
  shot with an event in its middle shows as two chapters with the same title; a shot without
  tags is no chapter;
* **gaps are filled** with chapters titled :data:`FILLER`, from 0 s to the end of the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from core.handoff import remux
from core.handoff.base import ExportResult, HandoffError
from core.handoff.evidence import check_same_file, media_of, stored_events, tagged_shots, time_range
from core.handoff.remux import Chapter
from core.jobs import set_media_span

FILLER = "(no event or tag)"
MAX_TAGS = 4  # in a shot's chapter title
MIN_S = 0.001  # chapter times are whole milliseconds


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """Write ``out`` (an .mp4): a stream copy of the media file with a chapter per anomaly event
    and per tagged shot between ``start`` and ``end`` (None: the whole file)."""
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".m4v"):
        raise HandoffError(f"a copy with chapters is an MP4 file: name it .mp4, not {out.name!r}")
    if out.is_dir():
        raise HandoffError(f"{out} is a folder; name the MP4 file to write")
    media = media_of(project, media_id)
    src = Path(media.path)
    info, inp = remux.open_media(src)
    try:
        rng = time_range(start, end, info.duration_s)
        check_same_file(src, media.content_hash)
        streams = remux.chosen_streams(inp)
        problem = remux.mp4_problem(streams)
        if problem is not None:
            raise HandoffError(f"{src.name} cannot be copied into MP4 without re-encoding: {problem}")
        notes: list[str] = []
        events = stored_events(project, media_id, rng.start, rng.end, notes)
        dismissed = [e for e in events if e.feedback == "dismissed"]
        if dismissed:
            notes.append(f"{len(dismissed)} dismissed anomaly event{'s' if len(dismissed) != 1 else ''} left out")
        shots = tagged_shots(project, media_id, rng, notes)
        marked = flat_chapters([e for e in events if e.feedback != "dismissed"], shots, rng.start, rng.end)
        if not marked:
            where = " in this range" if start is not None or end is not None else ""
            raise HandoffError(f"{src.name} has no anomaly events or tagged shots{where} to make chapters of: "
                               "find its anomalies or tag it first")
        chapters = fill_gaps(marked, info.duration_s)
        set_media_span(state, info.duration_s)
        if state is not None:
            state.set_progress(0.0, "copying")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            remux.stream_copy(inp, streams, out, start=0.0, end=None, chapters=chapters,
                              rotation=info.video.rotation if info.video is not None else 0,
                              cancelled=None if state is None else state.is_cancelled,
                              progress=None if state is None else lambda f: state.set_progress(f, "copying"))
        except OSError as e:
            raise HandoffError(f"{out} could not be written: {e.strerror or e}") from e
    finally:
        inp.close()
    if state is not None:
        state.set_progress(1.0, "")
    n_ev = sum(c.title.startswith("Anomaly:") for c in marked)
    n_shot = len(marked) - n_ev
    return ExportResult((out,), f"{out.name}: a copy of {src.name} with {len(chapters)} chapters "
                                f"({n_ev} for anomaly events, {n_shot} for shots)",
                        {"chapters": len(chapters), "events": n_ev, "shots": n_shot}, tuple(notes))


def event_title(e: Any) -> str:
    return f"Anomaly: {e.label} (score {e.peak:.2f})"


def shot_title(shot: Mapping[str, Any]) -> str:
    """``Shot 3: person, street, speech``: the shot's strongest tags that are not rejected or
    doubtful (low confidence); "" for a shot without any."""
    tags = [t for t in shot.get("tags", []) if t.get("state") != "rejected" and not t.get("low")]
    tags.sort(key=lambda t: (t.get("state") not in ("accepted", "user"), -float(t.get("confidence", 0.0))))
    names = list(dict.fromkeys(str(t["name"]) for t in tags))[:MAX_TAGS]
    return f"Shot {shot['shot']}: {', '.join(names)}" if names else ""


def flat_chapters(events: Sequence[Any], shots: Sequence[Mapping[str, Any]], t0: float, t1: float) -> list[Chapter]:
    """The marked chapters (events, then shots cut around them: see the module docstring),
    clipped to ``[t0, t1]``, sorted and never overlapping."""
    evs: list[Chapter] = []
    for e in sorted(events, key=lambda e: (e.start, -e.peak)):
        a, b = max(float(e.start), t0), min(float(e.end), t1)
        title = event_title(e)
        if evs and a < evs[-1].end:
            prev = evs[-1]
            if b <= prev.end:
                evs[-1] = Chapter(prev.start, prev.end, f"{prev.title}; {title}")
                continue
            a = prev.end
        if b - a >= MIN_S:
            evs.append(Chapter(a, b, title))
    taken = sorted(evs, key=lambda c: c.start)
    pieces: list[Chapter] = []
    for s in sorted(shots, key=lambda s: (s["start"], s["end"])):
        title = shot_title(s)
        if not title:
            continue
        new = [Chapter(a, b, title) for a, b in _uncovered(max(float(s["start"]), t0), min(float(s["end"]), t1), taken)
               if b - a >= MIN_S]
        pieces += new
        taken = sorted(taken + new, key=lambda c: c.start)  # overlapping shots (a damaged index): the first wins
    return sorted(evs + pieces, key=lambda c: c.start)


def _uncovered(a: float, b: float, taken: Sequence[Chapter]) -> list[tuple[float, float]]:
    """The parts of ``[a, b)`` that no chapter in ``taken`` (sorted) covers."""
    out, t = [], a
    for c in taken:
        if c.end <= t or c.start >= b:
            continue
        if c.start > t:
            out.append((t, c.start))
        t = max(t, c.end)
    if t < b:
        out.append((t, b))
    return out


def fill_gaps(marked: Sequence[Chapter], duration: float) -> list[Chapter]:
    """The marked chapters with :data:`FILLER` chapters between them, from 0 s to ``duration``."""
    out: list[Chapter] = []
    t = 0.0
    for c in marked:
        if c.start - t >= MIN_S:
            out.append(Chapter(t, c.start, FILLER))
        out.append(c)
        t = c.end
    if duration - t >= MIN_S:
        out.append(Chapter(t, duration, FILLER))
    return out
