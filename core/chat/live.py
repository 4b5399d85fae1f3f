"""The chat's live processors (run on the live worker, Qt-free): :class:`LivePerception` keeps
the recent minutes of the chat's perception log from the live frames, :class:`LiveStreamMeter`
encodes the feed as the machine-oriented stream and as a human-quality one and reports both
bitrates as :class:`StreamRate` readings. A processor is a plain object with ``feed(chunk) ->
events``; the window's live controller calls it on its worker and hands the events to the UI.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class LivePerception:
    """A live processor (run on the live worker): the detector at ``fps`` on the live frames,
    into the recent minutes of the chat's perception log — what a question on a live feed is
    grounded in, and what steers the live meter's stream (the headless command's loop, in the
    window). Qt-free. ``snapshot()`` gives an answer its own copy to read on another worker."""

    def __init__(self, fps: float = 2.0, horizon_s: float = 300.0, model: str = "ssd-mobilenet-v2-coco",
                 detector: Any = None) -> None:
        self.fps, self.horizon_s, self.model = fps, horizon_s, model
        self.detector = detector
        self.note = ""  # why there is no live detection, when there is none
        self.latest: list = []  # Seen of the last perceived frame (the meter's regions)
        self._tried = False  # a load failed: not tried again
        self._lock = threading.Lock()
        self._new_log()

    def _new_log(self) -> None:
        from core.chat.perception_log import PerceptionLog

        self.log = PerceptionLog(self.horizon_s, step=1.0 / self.fps)
        self._last_t: float | None = None
        self._looked = -math.inf
        self.latest = []

    def feed(self, chunk: Any) -> list:
        if chunk.kind != "video" or chunk.image is None:
            return []
        t = chunk.time
        with self._lock:
            if self._last_t is not None and t < self._last_t - 0.5:  # a new stream: its clock starts again
                self._new_log()
            self._last_t = t
            if t - self._looked < 0.999 / self.fps:
                return []
            self._looked = t
        det = self._detector()
        if det is None:
            return []
        from core.chat import seen_from

        found = det.detect([chunk.image])[0]
        h, w = chunk.image.shape[:2]
        with self._lock:
            self.log.add_frame(t, found, size=(w, h))
            self.latest = seen_from(found)
        return []

    def _detector(self) -> Any:
        """The given detector, or the catalogue's (models.loaded holds it for the live worker's thread);
        None, with ``note`` saying why, when it cannot load (tried once)."""
        if self.detector is not None or self._tried:
            return self.detector
        from models.catalogue import ModelError
        from models.loaded import held
        try:
            return held(self.model)
        except ModelError as e:
            self._tried = True
            self.note = f"no detection on the live feed ({e}); answers rest on the frames sent"
            log.warning("%s", self.note)
            return None

    def snapshot(self) -> Any:
        """A copy of the log as it is now (public API only: frames looked at, then what was seen)."""
        from core.chat.perception_log import PerceptionLog

        with self._lock:
            frames, obs = self.log.frame_times, self.log.observations()
        out = PerceptionLog(self.horizon_s, step=1.0 / self.fps)
        for t in frames:
            out.add_frame(t)
        for o in obs:
            out.add(o)
        return out


@dataclass(frozen=True)
class StreamRate:
    """One reading of the live meter (a live processor event; numbers only).

    ``kbps``: the machine-oriented stream over the last ``window_s`` of stream time;
    ``human_kbps``: a human-quality H.264 stream (CRF 23, every frame, full decoded size) of
    the same frames over the same window; ``size``: the machine stream's last encoded frame.
    """

    time: float
    kbps: float
    human_kbps: float
    window_s: float
    frames_in: int  # source frames since the stream (re)started
    frames_sent: int
    size: tuple[int, int]
    source_size: tuple[int, int]
    codec: str
    cost_ms: float  # the meter's own encoding time per source frame (both streams)

    @property
    def ratio(self) -> float:
        return self.human_kbps / self.kbps if self.kbps > 0 else math.inf


class LiveStreamMeter:
    """A live processor (``feed(chunk) -> events``, run on the live worker): encodes the feed as
    the machine-oriented stream — the same encoder settings and sampling rate an answer uses —
    and as a human-quality H.264 stream, and reports both bitrates as a :class:`StreamRate` at
    most every ``every_s`` of stream time. Qt-free; the UI thread never encodes.

    A new stream (its clock starting again) or a long drop resets both encoders. ``question``
    (the last one asked, set from the UI thread) and ``perception``'s latest boxes steer the
    machine stream as in an answer.
    """

    def __init__(self, settings: Any = None, *, sample_fps: float = 8.0, window_s: float = 10.0,
                 every_s: float = 0.5, human: bool = True, perception: LivePerception | None = None) -> None:
        self.settings = settings
        self.perception = perception  # its latest boxes steer the stream's sharp regions, as in an answer
        self.sample_fps, self.window_s, self.every_s, self.human = sample_fps, window_s, every_s, human
        self.question: str | None = None
        self.encoder_thread: int | None = None  # the thread that encoded last (tests check it is not the UI's)
        self._lock = threading.Lock()  # an old stream's last chunk may overlap the next stream's first
        self._reset()

    def _reset(self) -> None:
        self._enc: Any = None
        self._human: Any = None
        self._first: tuple[float, Any] | None = None  # held until the second frame gives the frame rate
        self._totals: deque[tuple[float, int]] = deque()  # (time, human bytes so far)
        self._last_t: float | None = None
        self._last_wall = 0.0
        self._pushed = -math.inf
        self._reported = -math.inf
        self._frames = 0
        self._cost = 0.0
        self._size = (0, 0)

    def feed(self, chunk: Any) -> list[StreamRate]:
        if chunk.kind != "video" or chunk.image is None:
            return []
        with self._lock:
            return self._feed(chunk.time, chunk.wall, chunk.image)

    def _feed(self, t: float, wall: float, image: Any) -> list[StreamRate]:
        import time as _time

        if self._last_t is not None and (t < self._last_t - 0.5 or wall - self._last_wall > 5.0):
            self._reset()
        self._last_t, self._last_wall = t, wall
        self.encoder_thread = threading.get_ident()
        t0 = _time.perf_counter()
        if self._enc is None:
            from core.chat import RegionScorer, TextVectors
            from core.chat.encoder import EncoderSettings
            # regions matched to the question by shared words: loading MiniLM here, beside the
            # compute worker's copy, would cost a second model and race transformers' lazy imports
            self._enc = (self.settings or EncoderSettings()).make(RegionScorer(TextVectors(load=False)))
        self._frames += 1
        if self.human:
            self._add_human(t, image)
        if t - self._pushed >= 0.999 / self.sample_fps:
            self._pushed = t
            seen = list(self.perception.latest) if self.perception is not None and self.question else None
            sent = self._enc.push(t, image, seen, self.question)
            if sent is not None:
                self._size = sent.size
        self._cost += _time.perf_counter() - t0
        if t - self._reported < self.every_s or self._enc.stats.frames_sent == 0:
            return []
        self._reported = t
        st = self._enc.stats
        return [StreamRate(t, self._enc.recent_kbps(self.window_s), self._human_kbps(), self.window_s,
                           self._frames, st.frames_sent, self._size, (image.shape[1], image.shape[0]),
                           self._enc.codec, 1000 * self._cost / self._frames)]

    def _add_human(self, t: float, image: Any) -> None:
        from core.chat.codec import HumanQualityStream

        if self._human is None:
            if self._first is None or t <= self._first[0]:
                self._first = (t, image)
                return
            fps = min(120.0, max(1.0, 1.0 / (t - self._first[0])))
            self._human = HumanQualityStream(fps, crf=23, preset="veryfast", tune="zerolatency")
            self._human.add(*self._first)
            self._totals.append((self._first[0], self._human.total))
            self._first = None
        self._human.add(t, image)
        self._totals.append((t, self._human.total))
        while len(self._totals) > 2 and self._totals[1][0] <= t - self.window_s:
            self._totals.popleft()

    def _human_kbps(self) -> float:
        """Bytes of the frames after the window's first one, over the time they cover."""
        if len(self._totals) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._totals[0], self._totals[-1]
        return (b1 - b0) * 8 / 1000 / (t1 - t0) if t1 > t0 else 0.0
