"""Boxes of a media file as the detection formats see them: read from a project, stored back.

Every detection format (COCO, MOT Challenge, CVAT, Label Studio) exports the same thing, a
list of :class:`Box` (one per detection: frame, object id, class, box in pixels, score, verdict)
with the :class:`Frames` they belong to, and imports into the same thing, stored by
:func:`store_import` as a track ``"ground truth: <file name>"``.

How boxes live in a project (core.perception.analysis.tracks_for): a hidden track of kind
``boxes`` named after the model, one item per detection (``start_s`` the frame time, ``data``
with ``box`` [x1, y1, x2, y2] in pixels of the analysed frame, ``size`` [w, h] of that frame,
``track`` the tracker's object id, ``confirmed``). The analysed frame may be a scaled-down copy
(analysis ``max_size``): boxes are given here in pixels of the media's own frame. Such a track
may hold a million items, so it is read by range, never loaded whole.

Frame numbers are 0-based (MOT adds 1 itself): the frame on screen at a time (Frames.frame_of),
``floor(t * fps)`` give or take float error; a frame's own time is ``frame / fps``.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.handoff.base import HandoffError, ImportResult

log = logging.getLogger(__name__)

KIND = "boxes"  # the track kind of per-frame boxes
GROUND_TRUTH = "ground truth: "  # an imported track's name: this + the file's name
#: Items read per range read of a big track (a million boxes come in slices, with progress and cancel).
CHUNK_ITEMS = 50_000
#: The biggest file an import reads (a million COCO boxes are about 200 MB).
MAX_IMPORT_BYTES = 1 << 30
#: Frames of float error allowed when a time is turned into the frame on screen (Frames.frame_of).
FRAME_EPS = 1e-6


@dataclass(frozen=True)
class Box:
    t: float  # the frame time, seconds
    frame: int  # 0-based number of the frame on screen at t (Frames.frame_of)
    track: int  # object / track id (unique per box where the source has none)
    label: str  # class
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the frame
    score: float | None = None
    confirmed: bool | None = None  # Kestrel's verdict (None: not judged / imported)


@dataclass(frozen=True)
class Frames:
    """The frame grid of a media file: size as shown (after rotation), rate, length."""

    width: int
    height: int
    fps: float
    duration: float
    media_path: str

    def frame_of(self, t: float) -> int:
        """The frame on screen at ``t``: the last one starting at or before it, as the decoder
        gives it (core.media.decode: ``frame_at(1.5)`` of a 25 fps file is frame 37, which starts
        at 1.48 s; rounding would name frame 38). A detection's time is the moment the analysis
        sampled (``start + k / rate``), so this is the frame its boxes were found on. The small
        allowance absorbs float error: ``frame_of(time_of(n)) == n``."""
        return int(math.floor(float(t) * self.fps + FRAME_EPS))

    def nearest_frame(self, t: float) -> int:
        """The frame whose own timestamp is nearest ``t`` (a frame time another tool rounded)."""
        return int(round(float(t) * self.fps))

    def time_of(self, frame: int) -> float:
        return int(frame) / self.fps


# -- the media's frames ------------------------------------------------------------------------

def _positive(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def _video_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    for s in streams or ():
        if isinstance(s, dict) and (s.get("kind") or s.get("type")) == "video":
            return s
    return None


def frames_of(project: Any, media_id: int) -> Frames:
    """The frame grid of a media file from its row in the project; the file is probed when the
    row lacks the frame rate or size. HandoffError when neither says (no video, file gone)."""
    try:
        media = project.get_media(media_id)
    except KeyError:
        raise HandoffError(f"there is no media file {media_id} in this project") from None
    v = _video_stream(media.streams)
    fps = _positive(v.get("fps")) if v else 0.0
    w, h = (int(_positive(v.get("width"))), int(_positive(v.get("height")))) if v else (0, 0)
    rot = v.get("rotation") if v else 0  # degrees; -90 turns as 270 does
    ok = isinstance(rot, (int, float)) and not isinstance(rot, bool) and math.isfinite(rot)
    rotation = int(abs(rot)) if ok else 0
    duration = _positive(media.duration_s) or (_positive(v.get("duration_s")) if v else 0.0)
    if not (fps and w and h):
        from core.media.decode import MediaError, probe

        try:
            info = probe(media.path, with_hash=False)
        except (MediaError, OSError) as e:
            raise HandoffError(f"the frame rate and size of {media.path} are not in the project and the file "
                               f"cannot be read ({e})") from None
        pv = info.video
        if pv is None or not _positive(pv.fps) or not (pv.width and pv.height):
            raise HandoffError(f"{media.path} has no video frames to put boxes on")
        fps, w, h, rotation = float(pv.fps), int(pv.width), int(pv.height), int(pv.rotation)
        duration = duration or _positive(info.duration_s)
    if rotation % 180:
        w, h = h, w  # boxes are in pixels of the frame as shown
    return Frames(w, h, float(fps), float(duration), str(media.path))


# -- the project's boxes tracks ----------------------------------------------------------------

def _imported(meta: dict[str, Any]) -> bool:
    return bool(meta.get("imported"))


def box_tracks(project: Any, media_id: int) -> list[tuple[int, str, bool]]:
    """``(track id, name, imported)`` of every ``boxes`` track of the media file (no items read)."""
    return [(rec.id, rec.name, _imported(rec.meta)) for rec, _lod in project.track_heads(media_id, 0)
            if rec.kind == KIND]


def _pick_track(project: Any, media_id: int, track: str | None) -> tuple[Any, Any]:
    """The (TrackRecord without items, Lod) to read: the named boxes track, or the one of the
    newest detector run (object detections before faces and on-screen text), never an import."""
    heads = [(rec, lod) for rec, lod in project.track_heads(media_id, 0) if rec.kind == KIND]
    if track is not None:
        for rec, lod in heads:
            if rec.name == track:
                return rec, lod
        names = ", ".join(repr(r.name) for r, _ in heads) or "none"
        raise HandoffError(f"this media file has no boxes track {track!r} (its boxes tracks: {names})")
    own = [(rec, lod) for rec, lod in heads if not _imported(rec.meta)]
    if not own:
        raise HandoffError("this media file has no detections to export: analyse it with an object detector first")
    started = {r.id: r.started_at.timestamp() for r in project.list_runs(media_id)}

    def rank(pair: tuple[Any, Any]) -> tuple[int, float, int]:
        rec = pair[0]
        return (rec.meta.get("task") == "detect", started.get(rec.run_id, -math.inf), rec.run_id or 0)
    return max(own, key=rank)


def _chunks(t0: float, t1: float, n: int) -> list[tuple[float, float]]:
    """[t0, t1) in slices of about CHUNK_ITEMS items each (items spread evenly, as a guess)."""
    parts = max(1, math.ceil(n / CHUNK_ITEMS))
    if not math.isfinite(t1 - t0) or t1 <= t0:
        return [(t0, t1)]
    edges = [t0 + (t1 - t0) * i / parts for i in range(parts)] + [t1]
    return list(zip(edges[:-1], edges[1:]))


def finite_box(value: Any) -> tuple[float, float, float, float] | None:
    """``value`` as four finite floats (a box), or None when it is not that."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        out = tuple(float(v) for v in value)
    except OverflowError:  # an integer of 400 digits
        return None
    return out if all(math.isfinite(v) for v in out) else None  # type: ignore[return-value]


def collect(project: Any, media_id: int, *, start: float | None = None, end: float | None = None,
            track: str | None = None, confirmed_only: bool = False, state: Any = None
            ) -> tuple[Frames, list[Box], str]:
    """The boxes of one boxes track whose frame time is in [start, end) (None: open), read by
    range, sorted by (frame, track): ``(frames, boxes, the track's name)``. ``track`` names the
    track (default: the newest detector run's, never an imported one); ``confirmed_only`` keeps
    the boxes Kestrel confirmed. Boxes with no object id get unique ids above the file's own.
    HandoffError when the media has no detections."""
    from core.jobs import check

    frames = frames_of(project, media_id)
    rec, lod = _pick_track(project, media_id, track)
    n = lod.n if lod is not None else CHUNK_ITEMS
    lo = lod.t_min if lod is not None and lod.t_min is not None else -math.inf
    hi = math.nextafter(lod.t_max, math.inf) if lod is not None and lod.t_max is not None else math.inf
    if start is not None:
        lo = max(lo, float(start))
    if end is not None:
        hi = min(hi, float(end))
    raw: list[tuple[float, int | None, str, tuple[float, float, float, float], float | None, bool | None]] = []
    skipped = 0
    shared = project.track_shared(rec.id)
    scale = _Scaler(frames)
    slices = _chunks(lo, hi, n) if hi > lo else []
    for i, (a, b) in enumerate(slices):
        if state is not None:
            check(state)
            state.set_progress(i / len(slices), "reading boxes")
        for it in project.track_items(rec.id, a, b, starting=True, shared=shared):
            data = it.data if isinstance(it.data, dict) else {}
            verdict = data.get("confirmed")
            verdict = verdict if isinstance(verdict, bool) else None
            if confirmed_only and verdict is not True:
                continue
            box = scale(data.get("box"), data.get("size"))
            if box is None:
                skipped += 1
                continue
            tid = data.get("track")
            tid = tid if isinstance(tid, int) and not isinstance(tid, bool) else None
            score = it.confidence if it.confidence is None or math.isfinite(it.confidence) else None
            raw.append((float(it.start_s), tid, str(it.label), box, score, verdict))
    if skipped:
        log.info("%d items of track %r have no usable box; left out", skipped, rec.name)
    raw.sort(key=lambda r: r[0])
    ids = assign_ids([r[1] for r in raw])
    out = [Box(t, frames.frame_of(t), tid, label, box, score, verdict)
           for (t, _tid, label, box, score, verdict), tid in zip(raw, ids)]
    out.sort(key=lambda b: (b.frame, b.track))
    if state is not None:
        state.set_progress(1.0, "")
    return frames, out, rec.name


def for_export(project: Any, media_id: int, start: float | None, end: float | None,
               state: Any = None) -> tuple[Frames, list[Box], str]:
    """:func:`collect` for an export: HandoffError when the range holds no box (an empty file
    would read as "nothing there" rather than "nothing exported")."""
    frames, found, name = collect(project, media_id, start=start, end=end, state=state)
    if not found:
        raise HandoffError(f"the detections of {name} hold no boxes{range_text(start, end)}")
    return frames, found, name


def assign_ids(ids: list[int | None]) -> list[int]:
    """Object ids for boxes, in order: a box's own id, or (None) a new one of its own, counted on
    from the biggest id the boxes have, so no two boxes without an id share one."""
    next_id = max((i for i in ids if i is not None), default=0) + 1
    out = []
    for i in ids:
        if i is None:
            i, next_id = next_id, next_id + 1
        out.append(i)
    return out


def range_text(start: float | None, end: float | None) -> str:
    """" between 2 s and 10 s" (or " from …", " until …", ""): a range for a sentence."""
    if start is None and end is None:
        return ""
    if end is None:
        return f" from {start:g} s"
    return f" until {end:g} s" if start is None else f" between {start:g} s and {end:g} s"


class _Scaler:
    """A stored box (pixels of the analysed frame, ``size``, maybe scaled down) → four floats in
    pixels of the media's frame; None for a box that is not four finite numbers. The factors of
    the last size are kept: a track's boxes share one size (a million boxes are read here)."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self.size: Any = None
        self.k = (1.0, 1.0)

    def __call__(self, box: Any, size: Any) -> tuple[float, float, float, float] | None:
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(x1 + y1 + x2 + y2):
            return None
        if size != self.size:
            self.size, self.k = size, self._factors(size)
        kx, ky = self.k
        return (x1, y1, x2, y2) if kx == ky == 1.0 else (x1 * kx, y1 * ky, x2 * kx, y2 * ky)

    def _factors(self, size: Any) -> tuple[float, float]:
        sz = finite_box(list(size) + [1, 1]) if isinstance(size, (list, tuple)) and len(size) == 2 else None
        w, h = self.frames.width, self.frames.height
        if sz is None or sz[0] <= 0 or sz[1] <= 0 or (round(sz[0]), round(sz[1])) == (w, h):
            return (1.0, 1.0)
        return (w / sz[0], h / sz[1])


# -- storing an import -------------------------------------------------------------------------

def store_import(project: Any, media_id: int, boxes: list[Box], *, fmt: str, path: Path) -> ImportResult:
    """Store imported boxes as the track ``"ground truth: <file name>"`` (replacing an earlier
    import of a file of that name) in one transaction. HandoffError for an empty list."""
    path = Path(path)
    if not boxes:
        raise HandoffError(f"{path.name} holds no boxes to import")
    frames = frames_of(project, media_id)
    try:
        digest = _sha256(path)
    except OSError as e:
        raise HandoffError(f"cannot read {path}: {e.strerror or e}") from None
    step = 1.0 / frames.fps
    size = [frames.width, frames.height]
    items = [(b.t, b.t + step, b.label, b.score, None,
              {"box": [float(v) for v in b.box], "size": size, "track": int(b.track), "source": "ground truth"})
             for b in sorted(boxes, key=lambda b: (b.frame, b.track))]
    meta = {"imported": True, "format": fmt, "source": str(path), "sha256": digest}
    name = GROUND_TRUTH + path.name
    track_id = project.save_track(media_id, KIND, name, items, run_id=None, meta=meta)
    notes = []
    late = sum(1 for b in boxes if frames.duration and b.t > frames.duration)
    if late:
        notes.append(f"{late} boxes lie after the end of the media ({frames.duration:g} s)")
    ids = len({b.track for b in boxes})
    nframes = len({b.frame for b in boxes})
    return ImportResult(track_id, len(items), f"imported {len(items)} boxes of {ids} objects on {nframes} frames "
                                              f"from {path.name} as the track {name!r}", tuple(notes))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- what the format modules share: reading an import, writing an export --------------------------

def read_text(path: Path, what: str) -> str:
    """The text of a file to import (UTF-8, a BOM allowed), or HandoffError saying why not."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise HandoffError(f"{path} is not a file")
        if size > MAX_IMPORT_BYTES:
            raise HandoffError(f"{path.name} is {size / 2**20:.0f} MB, too big for {what} "
                               f"(at most {MAX_IMPORT_BYTES >> 20} MB)")
        data = path.read_bytes()
    except OSError as e:
        raise HandoffError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HandoffError(f"{path.name} is not {what}: not UTF-8 text (byte {e.start})") from None


def load_json(text: str, name: str, what: str) -> Any:
    """Parsed JSON, or HandoffError "<name> is not <what>: why" (deep nesting included)."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise HandoffError(f"{name} is not {what}: it is nested too deeply") from None
    except ValueError as e:
        raise HandoffError(f"{name} is not {what}: {str(e).splitlines()[0][:200]}") from None


def import_parsed(project: Any, media_id: int, path: Path, *, fmt: str, what: str, parse: Any,
                  state: Any = None) -> ImportResult:
    """Import a file through a format's ``parse(text, frames, path, state) -> (boxes, notes)``:
    read it (:func:`read_text`), parse it whole, then store it (:func:`store_import`)."""
    from dataclasses import replace

    path = Path(path)
    frames = frames_of(project, media_id)
    found, notes = parse(read_text(path, what), frames, path, state)
    if not found:
        raise HandoffError(f"{path.name} holds no boxes to import" + (f" ({notes[0]})" if notes else ""))
    res = store_import(project, media_id, found, fmt=fmt, path=path)
    if state is not None:
        state.set_progress(1.0, "")
    return replace(res, notes=tuple(notes) + res.notes)


def write_out(out: Path, data: bytes) -> Path:
    """Write an export atomically (temporary file + rename); HandoffError when it cannot be."""
    from core.exportsafe import write_replacing

    out = Path(out)
    if out.is_dir():
        raise HandoffError(f"{out} is a folder; give a file name to write")
    if not out.parent.is_dir():
        raise HandoffError(f"the folder {out.parent} does not exist")
    try:
        return write_replacing(out, data)
    except OSError as e:
        raise HandoffError(f"cannot write {out}: {e.strerror or e}") from None
