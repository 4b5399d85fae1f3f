"""What an answer rests on: the frames of the asked window, and what perception finds in them.

The chat job (:mod:`core.chat.session`) takes the window's frames (a live buffer, a list, or a
file decoded at a few frames per second), encodes them, and hands the model a few of the
encoded frames. The embedded model reads no pixels: its eyes are perception run on the
*decoded*, low-bitrate frames (:class:`Eyes`), whose findings become a log of their own and
one line per frame. For a file with no stored tracks, :func:`perceive_file` runs the
perception job to make the log the question is grounded in.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from core.chat import Seen, seen_from
from core.chat.encoder import EncodedFrame
from core.chat.perception_log import LogLine, PerceptionLog, position
from core.jobs import JobState
from core.timefmt import clock

Frames = Sequence[tuple[float, np.ndarray]]
HEARING = {"vad", "asr", "speaker-embed", "audio-tags", "sounds"}  # the audio side's tasks (core.perception.listen)
NO_VIDEO = "No video for this answer ({}); answering from the perception log only."


# -- the window's frames ------------------------------------------------------------------------

def window_frames(frames: Frames | Callable[[float, float], Frames] | None, source: str, at: float | None,
                  window_s: float, sample_fps: float) -> tuple[list[tuple[float, np.ndarray]], str]:
    """The frames of the ``window_s`` seconds before ``at`` (None: the latest), at most
    ``sample_fps`` of them a second, and a note when there are none (the answer then rests on
    the log alone). ``frames``: (time, RGB) pairs, a callable ``(t0, t1) -> frames`` (e.g.
    ``RingBuffer.frames``), or None to decode the window of the file ``source``."""
    got, note = _raw_window(frames, source, at, window_s, sample_fps)
    out: list[tuple[float, np.ndarray]] = []
    for f in got:  # a live buffer holds every frame: the encoder needs no more than sample_fps
        if not out or f[0] - out[-1][0] >= 0.999 / sample_fps:
            out.append(f)
    return out, note


def _raw_window(frames: Frames | Callable[[float, float], Frames] | None, source: str, at: float | None,
                window_s: float, sample_fps: float) -> tuple[list[tuple[float, np.ndarray]], str]:
    span = getattr(getattr(frames, "__self__", None), "span", None)  # a RingBuffer's bound method
    if at is None and span and span[1] > 0:  # "now" on a live feed: decode only the last window
        at = float(span[1])
    if at is None and source and frames is None:  # a file's "now" is its end
        from core.media.decode import probe
        try:
            at = probe(source, with_hash=False).duration_s
        except Exception as e:
            return [], NO_VIDEO.format(e)
    t1 = at if at is not None else float("inf")
    t0 = (at - window_s) if at is not None else -float("inf")
    try:
        if callable(frames):
            got = list(frames(t0 if at is not None else 0.0, t1))
            if at is None and got:  # "now": the latest window
                last = got[-1][0]
                got = [f for f in got if f[0] >= last - window_s]
        elif frames is not None:
            got = [f for f in frames if t0 <= f[0] <= t1]
        elif source:
            got = file_frames(source, max(0.0, at - window_s), at, sample_fps)
        else:
            got = []
    except Exception as e:  # LiveError, MediaError, a dropped camera: answer from the log
        return [], NO_VIDEO.format(e)
    if not got:
        return [], "No video frames in this window (camera disconnected?); answering from the log only."
    return got, ""


def file_frames(path: str, start: float, end: float | None, fps: float,
                max_size: tuple[int, int] = (1280, 720)) -> list[tuple[float, np.ndarray]]:
    """Frames of a file from ``start`` to ``end`` at ``fps`` (decoded forward, never per-frame seeks)."""
    from core.media.decode import MediaError, VideoDecoder, probe

    info = probe(path, with_hash=False)
    end = info.duration_s if end is None else min(end, info.duration_s)
    out = []
    with VideoDecoder(path, max_size=max_size) as dec:
        for t in np.arange(max(0.0, start), max(start, end) + 1e-6, 1.0 / fps):
            try:
                f = dec.frame_at(float(t))
            except MediaError:
                continue
            if not out or f.time > out[-1][0]:
                out.append((float(f.time), f.image))
    return out


def pick_frames(sent: list[EncodedFrame], at: float, n: int) -> list[EncodedFrame]:
    """The ``n`` sent frames the model gets: the latest at or before ``at``, then spread back in time."""
    before = [f for f in sent if f.time <= at + 1e-6] or sent
    if len(before) <= n:
        return before
    idx = np.unique(np.round(np.linspace(0, len(before) - 1, n)).astype(int))
    return [before[i] for i in idx]


# -- what perception finds ------------------------------------------------------------------------

def perceive_file(path: str, *, start: float = 0.0, end: float | None = None, fps: float = 2.0,
                  models: Sequence[str] = ("ssd-mobilenet-v2-coco", "whisper-tiny"),
                  state: JobState | None = None) -> tuple[PerceptionLog, list[str]]:
    """Run the perception job over [start, end] of a file (for a file with no stored tracks)
    and return its log, with the errors of models that failed (the others still count)."""
    from core.jobs import HeadlessState
    from core.media.decode import probe
    from core.perception.analysis import AnalysisRequest, analyze, tracks_for

    res = analyze(AnalysisRequest(path=path, models=tuple(models), fps=fps, start=start, end=end),
                  state or HeadlessState())
    tracks = [tr for out in res.outputs.values() if not out.error for tr in tracks_for(out, 1.0 / fps)]
    log = PerceptionLog.from_tracks(tracks)
    log.describe_media(probe(path, with_hash=False))
    stretch = (max(0.0, start), min(end, res.media_duration) if end is not None else res.media_duration)
    tasks = {out.task for out in res.outputs.values() if not out.error}
    if tasks - HEARING:
        log.seen = stretch  # what the facts "over the file" may claim: this stretch, not the file
    if tasks & HEARING:
        log.heard = stretch
    return log, [f"{k}: {v}" for k, v in res.errors.items()]


def seen_near(log: PerceptionLog, t: float, shape: tuple[int, ...]) -> list[Seen]:
    """The log's boxes at the sample nearest ``t``, scaled to this frame's size (for region scoring)."""
    obs = [o for o in log.observations(t - 1.5 * log.step, t + 1.5 * log.step) if o.box is not None and o.end is None]
    if not obs:
        return []
    tn = min({o.time for o in obs}, key=lambda x: abs(x - t))
    h, w = shape[:2]
    out = []
    for o in obs:
        if abs(o.time - tn) > 1e-3:
            continue
        sx, sy = (w / o.size[0], h / o.size[1]) if o.size and o.size[0] and o.size[1] else (1.0, 1.0)
        b = o.box
        out.append(Seen("object" if o.kind == "object" else o.kind, o.label,
                        (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), o.score))
    return out


class Eyes:
    """Perception on the frames the model receives (decoded from the low-bitrate stream).

    The detector (SSD) is loaded on first use; OCR only when a question needs reading text
    (both held by :mod:`models.loaded`). Either may be given (tests pass their own), and either
    failing to load is a note, not an error: the answer then rests on the log alone.
    """

    def __init__(self, detector: Any = None, reader: Any = None) -> None:
        self.detector, self.reader = detector, reader
        self.notes: list[str] = []
        self._tried: set[str] = set()

    def _load(self, what: str) -> Any:
        if what in self._tried:
            return getattr(self, what)
        self._tried.add(what)
        if getattr(self, what) is None:
            from models.catalogue import ModelError
            from models.loaded import held
            try:
                setattr(self, what, held("ssd-mobilenet-v2-coco" if what == "detector" else "rapidocr"))
            except ModelError as e:
                self.notes.append(f"no {'detection' if what == 'detector' else 'text reading'} on the frames: {e}")
        return getattr(self, what)

    def look(self, image: np.ndarray, *, read_text: bool = False) -> list[Seen]:
        """What perception sees in one frame. Text is read in the whole frame: crops cut tightly
        around a region read worse than the frame, whose backdrop is flat anyway."""
        out: list[Seen] = []
        det = self._load("detector")
        if det is not None:
            out += seen_from(det.detect([image])[0])
        if read_text and (ocr := self._load("reader")) is not None:
            out += seen_from(texts=ocr.read(image))
        return out


def held_eyes() -> Eyes:
    """This thread's eyes over the catalogue's detector and OCR, kept by :func:`models.loaded.keep`."""
    from models.loaded import keep
    return keep("chat.eyes", Eyes)


def add_seen(log: PerceptionLog, f: EncodedFrame, seen: list[Seen]) -> None:
    """What the eyes saw in a frame given to the model, added to ``log`` as that frame's perception."""
    from models.types import Detection, Face, TextRegion

    log.add_frame(f.time, detections=[Detection(s.box, s.label, s.score) for s in seen if s.kind == "object"],
                  faces=[Face(s.box, s.score) for s in seen if s.kind == "face"],
                  texts=[TextRegion(s.box, s.label, s.score) for s in seen if s.kind == "text"],
                  size=f.size)


def frame_line(f: EncodedFrame, seen: list[Seen]) -> LogLine:
    """One log line saying what a frame given to the model shows."""
    objs: dict[str, list[str]] = {}
    for s in seen:
        if s.kind != "text":
            objs.setdefault(s.label, []).append(position(s.box, f.size))
    parts = [f"{lb} ×{len(p)}" if len(p) > 1 else f"{lb} ({p[0]})" for lb, p in objs.items()]
    texts = [f'"{s.label}"' for s in seen if s.kind == "text"]
    what = ", ".join(parts) or "nothing perception recognises"
    if texts:
        what += "; text " + ", ".join(texts)
    body = f"[{clock(f.time)}] frame given to the model ({f.size[0]}×{f.size[1]}) shows: {what}"
    return LogLine(f.time, f.time, "frame", "frame", body)
