"""Exports of a tagged archive: per-shot metadata (JSON, CSV), subtitles (WebVTT, SRT) from the
stored transcript, and a sidecar JSON per media file.

What is exported is the stored index with the analyst's edits laid over it
(:func:`core.tagging.index.load_index`): rejected tags are left out unless asked for;
low-confidence tags are kept, with their confidence and ``"low": true``, as the UI shows them
greyed. Subtitle cues are built from the words with their times (``ShotFeatures.words``):
at most two lines of about 42 characters, about 7 s, never across a cut or a pause.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from core.exportsafe import dict_writer, inside, safe_name, unique_names, write_replacing
from core.tagging import TaggingError
from core.tagging.tags import finite_number
from core.timefmt import subtitle_stamp

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".kestrel-tags.json"
SIDECAR_FORMAT = "kestrel-tags"
SIDECAR_VERSION = 1
MAX_CHARS = 42  # per subtitle line (the usual broadcast limit)
MAX_LINES = 2
MAX_CUE_S = 7.0
PAUSE_S = 0.8  # a silence this long between two words starts a new cue
CSV_FIELDS = ("file", "media_id", "shot", "start", "end", "duration", "cluster", "description", "tags")


# -- per-shot records ------------------------------------------------------------------------------

def shot_records(project: Any, idx: Any = None, *, include_rejected: bool = False,
                 media_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """One JSON-able dict per shot of every indexed media file (or of ``media_ids``), in
    file then time order: file, media_id, shot (1-based), start, end, duration, cluster,
    description and tags [{name, kind, confidence, state, low, detail}]."""
    from core.tagging.index import load_index

    idx = idx if idx is not None else load_index(project)
    if idx is None or not len(idx):
        raise TaggingError("Nothing is tagged in this project yet: tag some media first.")
    wanted = None if media_ids is None else set(media_ids)
    out = []
    for i, ref in enumerate(idx.refs):
        if wanted is not None and ref.media_id not in wanted:
            continue
        tags = [t for t in idx.tags[i] if include_rejected or t.state != "rejected"]
        c = int(idx.clusters[i])
        out.append({"file": ref.path, "media_id": ref.media_id, "shot": ref.index + 1,
                    "start": round(ref.start, 3), "end": round(ref.end, 3), "duration": round(ref.end - ref.start, 3),
                    "cluster": idx.names.get(c, f"group {c + 1}" if c >= 0 else ""), "cluster_id": c,
                    "description": idx.describe[i] if i < len(idx.describe) else "",
                    "tags": [{"name": t.name, "kind": t.kind, "confidence": round(float(t.confidence), 3),
                              "state": t.state, "low": bool(t.low), "detail": t.detail} for t in tags]})
    return out


def records_json(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> str:
    return json.dumps({"format": "kestrel-shots", "version": 1, **(dict(meta) if meta else {}),
                       "shots": list(records)}, indent=1, ensure_ascii=False)


def records_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """CSV with one row per shot; ``tags`` is ``name|kind|confidence|state`` joined by "; ".
    Every cell is neutralised against spreadsheet formulas (:mod:`core.exportsafe`)."""
    buf = io.StringIO()
    w = dict_writer(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({**r, "tags": "; ".join(f"{t['name']}|{t['kind']}|{t['confidence']:.3f}|{t['state']}"
                                           for t in r["tags"])})
    return buf.getvalue()


# -- subtitles ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def split_lines(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """One line, or lines of at most ``max_chars`` split at spaces; two lines are balanced."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return [text] if text else []
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    two = [(max(i, len(text) - i - 1), i) for i in spaces if i <= max_chars and len(text) - i - 1 <= max_chars]
    if two:
        i = min(two)[1]
        return [text[:i], text[i + 1:]]
    import textwrap

    return textwrap.wrap(text, max_chars, break_long_words=False, break_on_hyphens=False)


def cues(words: Sequence[Sequence[Any]], boundaries: Sequence[float] = (), *, max_chars: int = MAX_CHARS,
         max_lines: int = MAX_LINES, max_s: float = MAX_CUE_S, pause_s: float = PAUSE_S) -> list[Cue]:
    """Readable cues from (start, end, word) triples: a new cue at a cut (``boundaries``: shot
    starts; a word belongs to the shot holding its middle), after a pause of ``pause_s``, when
    the text would not fit ``max_lines`` × ``max_chars``, when it would last over ``max_s``, or
    after a sentence's end once the cue is half full."""
    ws = sorted(((float(a), float(b), str(w).strip()) for a, b, w in words if str(w).strip()),
                key=lambda x: (x[0], x[1]))
    cuts = sorted(float(t) for t in boundaries if t > 0)

    def shot_of(a: float, b: float) -> int:
        mid = 0.5 * (a + b)
        return sum(1 for t in cuts if t <= mid)

    groups: list[list[tuple[float, float, str]]] = []
    cur: list[tuple[float, float, str]] = []
    for a, b, w in ws:
        if cur:
            text = " ".join(x[2] for x in cur)
            joined = f"{text} {w}"
            if (a - cur[-1][1] > pause_s or max(b, cur[-1][1]) - cur[0][0] > max_s
                    or shot_of(a, b) != shot_of(*cur[-1][:2])
                    or len(split_lines(joined, max_chars)) > max_lines
                    or (cur[-1][2][-1:] in ".?!" and len(text) >= max_chars // 2)):
                groups.append(cur)
                cur = []
        cur.append((a, b, w))
    if cur:
        groups.append(cur)
    out: list[Cue] = []
    for k, g in enumerate(groups):
        start = g[0][0]
        end = max(max(x[1] for x in g), start + 0.5)  # a zero-length word must still show
        nxt = [t for t in cuts if t > start + 0.001] + ([groups[k + 1][0][0]] if k + 1 < len(groups) else [])
        if nxt:  # never over the next cue, nor over a cut (ASR stretches a sentence's last word)
            end = max(min(end, min(nxt)), start + 0.001)
        out.append(Cue(start, end, tuple(split_lines(" ".join(x[2] for x in g), max_chars))))
    return out


def to_webvtt(cs: Sequence[Cue]) -> str:
    body = "".join(f"{k}\n{subtitle_stamp(c.start, '.')} --> {subtitle_stamp(c.end, '.')}\n{c.text}\n\n"
                   for k, c in enumerate(cs, 1))
    return "WEBVTT\n\n" + body


def to_srt(cs: Sequence[Cue]) -> str:
    return "".join(f"{k}\n{subtitle_stamp(c.start, ',')} --> {subtitle_stamp(c.end, ',')}\n{c.text}\n\n"
                   for k, c in enumerate(cs, 1))


def media_cues(project: Any, media_id: int) -> list[Cue]:
    """Cues of one media file from its current stored transcript (none: no words). A stored
    word that is not (start, end, text) with finite times is skipped (logged); shots or
    features that cannot be read at all raise :class:`TaggingError`."""
    from core.store.project import ProjectCorruptError
    from core.tagging.index import current

    try:
        got = current(project, media_id)
        if got is None:
            return []
        shots, feats = got
        starts = [float(s.start) for s in shots]
        words = list(feats.words)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, ProjectCorruptError) as e:
        log.warning("the stored shots or transcript of media %s cannot be read: %s: %s", media_id,
                    type(e).__name__, e)
        raise TaggingError(f"The stored transcript of media {media_id} is damaged.") from e
    good = [w for w in words if _is_word(w)]
    if len(good) != len(words):
        log.warning("skipping %d damaged words of the stored transcript of media %s", len(words) - len(good), media_id)
    return cues(good, [t for t in starts if math.isfinite(t)])


def _is_word(w: Any) -> bool:
    return (isinstance(w, (list, tuple)) and len(w) == 3 and isinstance(w[2], str)
            and all(finite_number(x) for x in w[:2])
            and w[0] <= w[1])


# -- sidecars and the whole export ----------------------------------------------------------------

def sidecar(project: Any, media_id: int, records: Sequence[Mapping[str, Any]], idx: Any = None) -> dict[str, Any]:
    """The sidecar of one media file: what it is, its shots with tags, its transcript cues."""
    m = project.get_media(media_id)
    shots = [{k: v for k, v in r.items() if k not in ("file", "media_id")} for r in records
             if r["media_id"] == media_id]
    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "generated_at": round(time.time(), 3),
            "media": {"path": str(m.path), "name": Path(m.path).name, "content_hash": m.content_hash,
                      "duration_s": m.duration_s},
            "method": getattr(idx, "method", None), "shots": shots,
            "transcript": [{"start": round(c.start, 3), "end": round(c.end, 3), "text": " ".join(c.lines)}
                           for c in _cues_or_none(project, media_id, "", []) or []]}


@dataclass
class ExportResult:
    folder: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def export_archive(project: Any, folder: str | os.PathLike, *, include_rejected: bool = False,
                   sidecars: str = "export", subtitles: bool = True, idx: Any = None) -> ExportResult:
    """Write ``shots.json``, ``shots.csv``, and per media file ``<stem>.vtt``/``<stem>.srt``
    (when it has words) and ``<stem>.kestrel-tags.json`` — in ``folder``, or with
    ``sidecars="media"`` next to the media file itself (``"none"``: no sidecars)."""
    if sidecars not in ("export", "media", "none"):
        raise ValueError("sidecars must be 'export', 'media' or 'none'")
    from core.tagging.index import load_index

    idx = idx if idx is not None else load_index(project)
    records = shot_records(project, idx, include_rejected=include_rejected)
    out = ExportResult(Path(folder), notes=list(getattr(idx, "problems", [])))
    try:
        out.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TaggingError(f"Cannot create the export folder {folder}: {e.strerror or e}") from e
    meta = {"project": str(project.path), "method": idx.method, "include_rejected": include_rejected}
    out.files.append(_write(out.folder / "shots.json", records_json(records, meta)))
    out.files.append(_write(out.folder / "shots.csv", records_csv(records)))
    media_ids = list(dict.fromkeys(r["media_id"] for r in records))
    beside = _beside_media(project, media_ids) if sidecars == "media" else {}
    for mid, stem in _stems(project, media_ids).items():
        if subtitles:
            cs = _cues_or_none(project, mid, stem, out.notes)
            if cs:
                out.files.append(_write(inside(out.folder, f"{stem}.vtt"), to_webvtt(cs)))
                out.files.append(_write(inside(out.folder, f"{stem}.srt"), to_srt(cs)))
            elif cs is not None:
                out.notes.append(f"{stem}: no speech transcribed, no subtitles")
        if sidecars == "none":
            continue
        path = inside(out.folder, stem + SIDECAR_SUFFIX) if sidecars == "export" else beside[mid]
        if isinstance(path, str):
            out.notes.append(path)
            continue
        text = json.dumps(sidecar(project, mid, records, idx), indent=1, ensure_ascii=False)
        try:
            out.files.append(_write(path, text))
        except OSError as e:
            out.notes.append(f"cannot write the sidecar {path}: {e.strerror or e}")
    return out


def _cues_or_none(project: Any, media_id: int, stem: str, notes: list[str]) -> list[Cue] | None:
    """The media's cues; None (and a note) when its stored transcript or shots are damaged."""
    try:
        return media_cues(project, media_id)
    except TaggingError:
        notes.append(f"{stem}: the stored transcript cannot be read (damaged), no subtitles")
        return None


def _stem_of(path: Any) -> str:
    """The stem of a stored path's last component, whichever separator it uses."""
    name = re.split(r"[\\/]", str(path))[-1]
    head, dot, _ext = name.rpartition(".")
    return head if dot and head.strip(".") else name


def _stems(project: Any, media_ids: Sequence[int]) -> dict[int, str]:
    """A file name stem per media file, made safe from its stored path (no separators, ``..``,
    control characters, reserved or overlong names: :func:`core.exportsafe.safe_name`) and
    unique in the export folder (``-<id>`` on a clash)."""
    return unique_names({mid: safe_name(_stem_of(project.get_media(mid).path), "media") for mid in media_ids})


def _beside_media(project: Any, media_ids: Sequence[int]) -> dict[int, Path | str]:
    """Per media file, the sidecar path beside it (``sidecars="media"``), or why there is none:
    only beside a media file that exists here, named by its absolute stored path without
    ``..``, with a safe stem unique in its folder."""
    out: dict[int, Path | str] = {}
    groups: dict[Path, dict[int, str]] = {}
    from core.media.decode import quick_hash

    for mid in media_ids:
        rec = project.get_media(mid)
        raw = str(rec.path)
        p = Path(raw)
        try:
            ok = "\x00" not in raw and p.is_absolute() and ".." not in p.parts and p.is_file()
            # A project names any path it likes: write only beside the very file it analysed
            # (same size and content hash), never beside some other file of the same name.
            same = ok and p.stat().st_size == rec.size_bytes and quick_hash(p) == rec.content_hash
        except (OSError, ValueError):
            ok = same = False
        if not ok:
            out[mid] = f"no sidecar beside {raw[:200]!r}: not a media file on this machine"
            continue
        if not same:
            out[mid] = f"no sidecar beside {raw[:200]!r}: that file is not the one this project analysed"
            continue
        groups.setdefault(p.parent, {})[mid] = safe_name(_stem_of(p.name), "media")
    for folder, names in groups.items():
        for mid, stem in unique_names(names).items():
            try:
                out[mid] = inside(folder, stem + SIDECAR_SUFFIX)
            except ValueError as e:
                out[mid] = f"no sidecar beside {folder}: {e}"
    return out


def _write(path: Path, text: str) -> Path:
    """Write whole or not at all (a reader never sees half a file), never through a link."""
    return write_replacing(path, text.encode("utf-8"))
