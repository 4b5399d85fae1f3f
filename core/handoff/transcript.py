"""The transcript as subtitles: SubRip (``.srt``) and WebVTT (``.vtt``), with who speaks.

Where it comes from (the analysis stores both; :func:`core.perception.analysis.tracks_for` and
:func:`core.perception.listen.tracks`):

* the track ``("speech", "transcript")``: one item per Whisper segment, its text as the label,
  ``data["words"]`` = ``[[start, end, word], ...]`` in media seconds, and ``data["speech"]``
  False where no voice supports the segment (Whisper writes "You" over a bang). Such
  segments are *left out* of the subtitles (a note counts them): Kestrel does not put words in
  a speaker's mouth that no voice said. A segment stored without word times is one block of
  text over the segment's own times.
* the track ``("speakers", "speakers")``: one item per diarization turn, labelled as the
  analyst sees it ("Speaker 1"); ``data["speaker"]`` None is a voice not told apart.

Each word goes to the speaker whose turn overlaps it most (a word in no turn, or in an
unknown voice's, has no speaker); the cues are built by :func:`core.tagging.export.cues`
(two lines of about 42 characters, about 7 s, a new cue after a pause) over each run of one
speaker's words, so a cue never holds two speakers. WebVTT marks the speaker with a voice
span, ``<v Speaker 1>text`` (``&``, ``<``, ``>`` of the text escaped), SRT, which has no voice
tag, with the usual ``Speaker 1: text``. A cue without a speaker has no mark.

Times are the media file's, also with a range: the cues are those whose words (their middle)
fall in ``[start, end]``, their times clipped to it, *not* shifted to start at 0 — a subtitle
file for a cut clip is the evidence package's job (:mod:`core.handoff.evidence`).

Whisper's word confidences are not stored (models.backends.asr keeps the segment's
``exp(avg_logprob)`` only), so no cue is marked "unclear": that would be a guess.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from core.handoff.base import ExportResult, HandoffError
from core.handoff.boxes import write_out
from core.handoff.evidence import media_of
from core.jobs import HeadlessState, check
from core.tagging.export import Cue, cues, to_srt, to_webvtt

TRANSCRIPT = ("speech", "transcript")
SPEAKERS = ("speakers", "speakers")
SUFFIXES = {".srt": "srt", ".vtt": "vtt"}

Word = tuple[float, float, str]


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    label: str | None  # as stored ("Speaker 1"); None: a voice not told apart


@dataclass(frozen=True)
class SpokenCue:
    cue: Cue
    speaker: str | None


# -- what the project holds --------------------------------------------------------------------

def stored_track(project: Any, media_id: int, kind: str, name: str) -> Any | None:
    """The newest track ``(kind, name)`` of the media file, without its items (a TrackRecord)."""
    found = [rec for rec, _lod in project.track_heads(media_id, 0) if (rec.kind, rec.name) == (kind, name)]
    return max(found, key=lambda r: r.id) if found else None


def range_items(project: Any, track_id: int, start: float | None, end: float | None) -> list[Any]:
    """The track's items overlapping ``[start, end]`` (None: open), read by range."""
    return project.track_items(track_id, -math.inf if start is None else start, math.inf if end is None else end)


def _word(w: Any) -> Word | None:
    """A stored word ``[start, end, text]`` with finite times in order, or None."""
    if not (isinstance(w, (list, tuple)) and len(w) == 3 and isinstance(w[2], str)):
        return None
    try:
        a, b = float(w[0]), float(w[1])
    except (TypeError, ValueError):
        return None
    return (a, b, w[2]) if math.isfinite(a) and math.isfinite(b) and a <= b and w[2].strip() else None


def transcript_words(items: Sequence[Any], start: float | None, end: float | None) -> tuple[list[Word], dict[str, int]]:
    """The words of the transcript items whose middle falls in ``[start, end]``, and what was
    left out: ``unsupported`` segments (no voice heard), ``damaged`` words."""
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    words: list[Word] = []
    left = {"unsupported": 0, "damaged": 0}
    for it in items:
        data = it.data if isinstance(it.data, dict) else {}
        if data.get("speech") is False:
            left["unsupported"] += 1
            continue
        raw = data.get("words")
        if isinstance(raw, list) and raw:
            got = [_word(w) for w in raw]
            left["damaged"] += sum(1 for w in got if w is None)
            seg = [w for w in got if w is not None]
        else:  # no word times: the segment is one block of text
            w = _word([it.start_s, it.end_s, it.label or ""])
            seg = [w] if w else []
        words += [w for w in seg if lo <= 0.5 * (w[0] + w[1]) <= hi]
    words.sort(key=lambda w: (w[0], w[1]))
    return words, left


def speaker_turns(items: Sequence[Any]) -> list[Turn]:
    out = []
    for it in items:
        data = it.data if isinstance(it.data, dict) else {}
        a, b = float(it.start_s), float(it.end_s)
        if not (math.isfinite(a) and math.isfinite(b) and b >= a):
            continue
        label = " ".join(str(it.label or "").split())
        out.append(Turn(a, b, None if ("speaker" in data and data["speaker"] is None) or not label else label))
    return sorted(out, key=lambda t: (t.start, t.end))


# -- who says which word, and the cues -----------------------------------------------------------

def speaker_of(turns: Sequence[Turn], starts: Sequence[float], longest: float, a: float, b: float) -> str | None:
    """The label of the turn that overlaps ``[a, b]`` most (holds ``a`` for a word of no length);
    ``starts``: the turns' starts, ``longest``: the longest turn (bounds the search)."""
    best, best_ov = None, 0.0
    j = bisect.bisect_right(starts, b) - 1
    while j >= 0 and starts[j] >= a - longest:
        t = turns[j]
        ov = min(b, t.end) - max(a, t.start) if b > a else (1.0 if t.start <= a <= t.end else 0.0)
        if ov > best_ov:
            best, best_ov = t, ov
        j -= 1
    return best.label if best is not None else None


def spoken_cues(words: Sequence[Word], turns: Sequence[Turn]) -> list[SpokenCue]:
    """Cues over each run of one speaker's words (see the module doc); the last cue of a run
    never reaches over the next run's first word."""
    starts = [t.start for t in turns]
    longest = max((t.end - t.start for t in turns), default=0.0)
    runs: list[tuple[str | None, list[Word]]] = []
    for w in words:
        who = speaker_of(turns, starts, longest, w[0], w[1]) if turns else None
        if runs and runs[-1][0] == who:
            runs[-1][1].append(w)
        else:
            runs.append((who, [w]))
    out: list[SpokenCue] = []
    for k, (who, ws) in enumerate(runs):
        cs = cues(ws)
        if cs and k + 1 < len(runs):
            nxt = runs[k + 1][1][0][0]
            last = cs[-1]
            cs[-1] = replace(last, end=max(min(last.end, nxt), last.start + 0.001))
        out += [SpokenCue(c, who) for c in cs]
    return out


def clip(cs: Sequence[SpokenCue], start: float | None, end: float | None) -> list[SpokenCue]:
    """The cues with their times inside ``[start, end]`` (media times, not shifted)."""
    out = []
    for sc in cs:
        a = sc.cue.start if start is None else max(sc.cue.start, start)
        b = sc.cue.end if end is None else min(sc.cue.end, end)
        if b > a:
            out.append(SpokenCue(replace(sc.cue, start=a, end=b), sc.speaker))
    return out


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webvtt_text(cs: Sequence[SpokenCue], note: str = "") -> str:
    """WebVTT with a ``<v Speaker>`` voice span per cue that has a speaker, and an optional NOTE."""
    marked = [Cue(sc.cue.start, sc.cue.end,
                  tuple((f"<v {_vtt_escape(sc.speaker)}>" if sc.speaker and i == 0 else "") + _vtt_escape(line)
                        for i, line in enumerate(sc.cue.lines)))
              for sc in cs]
    text = to_webvtt(marked)
    if note:  # a NOTE block may hold neither "-->" nor a blank line
        note = " ".join(note.replace("-->", "->").split())
        text = text.replace("WEBVTT\n\n", f"WEBVTT\n\nNOTE {note}\n\n", 1)
    return text


def srt_text(cs: Sequence[SpokenCue]) -> str:
    """SubRip with ``Speaker 1: `` before the first line of each cue that has a speaker."""
    return to_srt([Cue(sc.cue.start, sc.cue.end,
                       tuple((f"{sc.speaker}: " if sc.speaker and i == 0 else "") + line
                             for i, line in enumerate(sc.cue.lines)))
                   for sc in cs])


# -- the export ---------------------------------------------------------------------------------

def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """Write the media file's transcript between ``start`` and ``end`` to ``out``: SubRip for
    ``.srt``, WebVTT for ``.vtt`` (see the module doc). A :class:`HandoffError` when the suffix
    is another, the media has no transcript or no speech in the range, or ``out`` cannot be
    written."""
    out = Path(out)
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise HandoffError(f"a transcript is written as .srt or .vtt, not {out.suffix or 'a file without a suffix'} "
                           f"({out.name})")
    state = state if state is not None else HeadlessState()
    rec = media_of(project, media_id)
    name = Path(str(rec.path)).name
    state.set_progress(0.0, "reading the transcript")
    tr = stored_track(project, media_id, *TRANSCRIPT)
    if tr is None:
        raise HandoffError(f"{name} has no transcript; run analysis with an ASR model (whisper-tiny or "
                           f"whisper-base) first")
    words, left = transcript_words(range_items(project, tr.id, start, end), start, end)
    check(state)
    notes: list[str] = []
    if left["unsupported"]:
        notes.append(f"{left['unsupported']} transcript segment(s) Whisper wrote where no voice was heard were "
                     f"left out")
    if left["damaged"]:
        notes.append(f"{left['damaged']} damaged word(s) of the stored transcript were skipped")
    if not words:
        where = "" if start is None and end is None else \
            f" between {0.0 if start is None else start:g} s and {'the end' if end is None else f'{end:g} s'}"
        raise HandoffError(f"{name} has no transcribed speech{where}" + (f" ({notes[0]})" if notes else ""))
    sp = stored_track(project, media_id, *SPEAKERS)
    turns = speaker_turns(range_items(project, sp.id, start, end)) if sp is not None else []
    if sp is None:
        notes.append("no speakers are stored (run analysis with resemblyzer-voices): the cues carry no speaker")
    cs = clip(spoken_cues(words, turns), start, end)
    check(state)
    if sp is not None and any(c.speaker is None for c in cs):
        notes.append(f"{sum(1 for c in cs if c.speaker is None)} cue(s) fall in no told-apart speaker's turn "
                     f"and carry no speaker")
    note = f"Kestrel: the transcript of {name} by {tr.meta.get('model') or 'an unnamed model'}" + (
        f", speakers by {sp.meta.get('model') or 'an unnamed model'}" if sp is not None else "") + "; media times"
    text = webvtt_text(cs, note) if fmt == "vtt" else srt_text(cs)
    path = write_out(out, text.encode("utf-8"))
    state.set_progress(1.0, "")
    speakers = sorted({c.speaker for c in cs if c.speaker})
    summary = (f"{len(cs)} cue(s), {len(words)} word(s)"
               + (f", {len(speakers)} speaker(s)" if speakers else "") + f" → {path.name}")
    return ExportResult((path,), summary, {"cues": len(cs), "words": len(words), "speakers": len(speakers)},
                        tuple(notes))
