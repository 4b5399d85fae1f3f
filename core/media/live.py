"""Live sources: a camera, a network stream, or a file played as live — with reconnects.

One source serves every live feature (anomaly alerts, chat). ``LiveSource.chunks`` runs on
a worker (it blocks on the network) and yields decoded video frames and audio chunks with
a *stream clock* that keeps running across reconnects, so times stay monotonic for the
analyst. When a stream drops, it reconnects with exponential backoff and says so through
``on_status``; a source that never connects gives up after ``give_up_s`` with a clear error.
The ``RingBuffer`` keeps the recent minutes (JPEG-compressed) for "what happened a minute
ago" and for recording the seconds around an event (:func:`record_clip`).

:func:`live_job` is the reader the window runs on its ``live`` pool: it pulls chunks from a
``LiveSource``, keeps them in a ring buffer, feeds every chunk to the registered processors
(plain objects with ``feed(chunk) -> list``; anomaly alerts and chat's perception log plug in
here) on that worker thread, and hands the UI what it must show — the newest frame (at most ~20
per second), status lines, and whatever the processors return — as :class:`LiveUpdate` partial
results.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.media.audio import PLANES_SAFE, samples_of
from core.errors import KestrelError
from core.errors import describe as describe_error
from core.media.decode import MediaError, fit_size, rotate_image

log = logging.getLogger(__name__)

NETWORK = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt|rtp)://", re.I)


class LiveError(KestrelError):
    """The source cannot be used; str() says what to do."""


@dataclass(frozen=True)
class LiveChunk:
    kind: str  # "video" | "audio" | "status"
    time: float  # stream seconds since the source first started
    wall: float  # time.time() when it was decoded
    image: np.ndarray | None = None  # RGB H×W×3 (video)
    samples: np.ndarray | None = None  # [channels, n] float32 (audio)
    sample_rate: int = 0
    text: str = ""  # status messages ("reconnecting in 2 s…")


def describe(spec: str | int) -> str:
    s = str(spec)
    if s.isdigit():
        return f"camera {s}"
    return s if NETWORK.match(s) else Path(s).name


class LiveSource:
    """Yields decoded chunks from ``spec``: a webcam index ("0"), a URL, or a file path.

    Files are paced to real time (``realtime``), so a recorded clip behaves like a camera.
    """

    def __init__(self, spec: str | int, *, realtime: bool | None = None, max_size=(1280, 720),
                 reconnect: bool = True, backoff: tuple[float, float] = (0.5, 8.0),
                 open_timeout: float = 5.0, read_timeout: float = 5.0, give_up_s: float = 60.0,
                 loop: bool = False, audio: bool = True,
                 on_status: Callable[[str], None] | None = None):
        self.spec = str(spec)
        self.is_file = not (self.spec.isdigit() or NETWORK.match(self.spec))
        if self.is_file and not Path(self.spec).exists():
            raise LiveError(f"{self.spec} does not exist.")
        self.realtime = self.is_file if realtime is None else realtime
        self.max_size = max_size
        self.reconnect = reconnect and not self.is_file
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.give_up_s = give_up_s
        self.loop = loop
        self.audio = audio
        self.on_status = on_status or (lambda msg: log.info("%s: %s", describe(self.spec), msg))
        self.connected = threading.Event()
        self.reconnects = 0
        self._clock0: float | None = None  # wall time that stream time 0 maps to
        self._offset = 0.0  # stream time added to a new connection's own timestamps

    # -- opening -------------------------------------------------------------------------
    def _open(self):
        import av

        opts: dict[str, str] = {}
        fmt = None
        url = self.spec
        if self.spec.isdigit():
            fmt, url = "v4l2", f"/dev/video{self.spec}"
        elif url.lower().startswith(("rtsp", "rtsps")):
            opts["rtsp_transport"] = "tcp"
        if "://" in url:  # a network stream: probe 1 s of it, not FFmpeg's default 5 s
            opts.update(analyzeduration="1000000", probesize="200000")
        try:
            return av.open(url, format=fmt, options=opts, metadata_errors="replace",
                           timeout=(self.open_timeout, self.read_timeout))
        except (av.error.FFmpegError, OSError) as e:
            raise LiveError(f"{describe(self.spec)}: cannot open ({e}).") from e

    # -- reading -------------------------------------------------------------------------
    def chunks(self, cancelled: Callable[[], bool] = lambda: False) -> Iterator[LiveChunk]:
        delay = self.backoff[0]
        first_fail: float | None = None
        while not cancelled():
            try:
                container = self._open()
            except LiveError as e:
                if not self.reconnect:
                    raise
                now = time.monotonic()
                first_fail = first_fail or now
                if now - first_fail > self.give_up_s:
                    raise LiveError(f"{describe(self.spec)}: no connection for {self.give_up_s:.0f} s; "
                                    "check the address and that the camera is on.") from e
                yield from self._status(f"cannot connect ({e}); retrying in {delay:.1f} s")
                if self._wait(delay, cancelled):
                    return
                delay = min(delay * 2, self.backoff[1])
                continue
            first_fail = None
            delay = self.backoff[0]
            self.connected.set()
            yield from self._status("connected" if not self.reconnects else "reconnected")
            try:
                ended = yield from self._read(container, cancelled)
            finally:
                self.connected.clear()
                try:
                    container.close()
                except Exception:
                    pass
            if cancelled():
                return
            if self.is_file:
                if self.loop:
                    continue
                return
            if not self.reconnect:
                raise LiveError(f"{describe(self.spec)}: the stream ended.")
            self.reconnects += 1
            yield from self._status(f"stream dropped ({ended}); reconnecting in {delay:.1f} s")
            if self._wait(delay, cancelled):
                return
            delay = min(delay * 2, self.backoff[1])

    def _status(self, msg: str) -> Iterator[LiveChunk]:
        self.on_status(msg)
        yield LiveChunk("status", self.now(), time.time(), text=msg)

    @staticmethod
    def _wait(seconds: float, cancelled: Callable[[], bool]) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cancelled():
                return True
            time.sleep(min(0.05, end - time.monotonic()))
        return False

    def now(self) -> float:
        """Current stream time by the wall clock (0 before the first frame)."""
        return 0.0 if self._clock0 is None else time.time() - self._clock0

    def _read(self, container, cancelled) -> Iterator[LiveChunk]:
        import av

        streams = [s for s in container.streams if s.type == "video"][:1]
        if self.audio:
            streams += [s for s in container.streams if s.type == "audio"][:1]
        if not streams:
            raise LiveError(f"{describe(self.spec)}: no video or audio stream.")
        origin: float | None = None
        last_t = self._offset
        resampler = None
        if self._clock0 is None:
            self._clock0 = time.time()
        # a reconnect continues the clock where the wall clock is now
        self._offset = max(self._offset, self.now())
        base = self._offset
        try:
            for packet in container.demux(*streams):
                if cancelled():
                    return "cancelled"
                try:  # the empty packet at the end flushes the decoder's last frames
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    log.debug("undecodable packet: %s", e)
                    continue
                for f in frames:
                    if f.time is None:
                        continue
                    if origin is None:
                        origin = f.time
                    t = base + (f.time - origin)
                    if self.realtime:
                        due = self._clock0 + t
                        if self._wait(max(0.0, due - time.time()), cancelled):
                            return "cancelled"
                    last_t = max(last_t, t)
                    if isinstance(f, av.VideoFrame):
                        w, h = fit_size(f.width, f.height, self.max_size)
                        img = rotate_image(f.to_ndarray(format="rgb24", width=w, height=h),
                                           int(round(float(f.rotation or 0) / 90)) * 90 % 360)
                        yield LiveChunk("video", t, time.time(), image=np.ascontiguousarray(img))
                    else:
                        if resampler is None:  # packed from 8 channels on: see core.media.audio.samples_of
                            resampler = av.AudioResampler(format="fltp" if f.layout.nb_channels < PLANES_SAFE
                                                          else "flt", layout=f.layout, rate=f.sample_rate)
                        for o in resampler.resample(f):
                            yield LiveChunk("audio", t, time.time(), samples=samples_of(o).astype(np.float32),
                                            sample_rate=o.sample_rate)
        except (av.error.FFmpegError, OSError) as e:
            self._offset = max(last_t, self.now())
            return str(e)
        self._offset = max(last_t, self.now())
        return "end of stream"


class RingBuffer:
    """The last ``seconds`` of video (JPEG in memory) and audio, by stream time."""

    def __init__(self, seconds: float = 120.0, jpeg_quality: int = 80, max_width: int = 960):
        self.seconds = seconds
        self.quality = jpeg_quality
        self.max_width = max_width
        self._video: collections.deque[tuple[float, bytes, tuple[int, int]]] = collections.deque()
        self._audio: collections.deque[tuple[float, np.ndarray, int]] = collections.deque()
        self._lock = threading.Lock()

    def push(self, chunk: LiveChunk) -> None:
        import cv2

        with self._lock:
            if chunk.kind == "video" and chunk.image is not None:
                img = chunk.image
                if img.shape[1] > self.max_width:
                    s = self.max_width / img.shape[1]
                    img = cv2.resize(img, (self.max_width, int(img.shape[0] * s) // 2 * 2),
                                     interpolation=cv2.INTER_AREA)
                ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if ok:
                    self._video.append((chunk.time, buf.tobytes(), (img.shape[1], img.shape[0])))
            elif chunk.kind == "audio" and chunk.samples is not None:
                self._audio.append((chunk.time, chunk.samples, chunk.sample_rate))
            horizon = chunk.time - self.seconds
            while self._video and self._video[0][0] < horizon:
                self._video.popleft()
            while self._audio and self._audio[0][0] < horizon:
                self._audio.popleft()

    @property
    def span(self) -> tuple[float, float]:
        with self._lock:
            if not self._video:
                return (0.0, 0.0)
            return (self._video[0][0], self._video[-1][0])

    def frames(self, t0: float, t1: float) -> list[tuple[float, np.ndarray]]:
        import cv2

        with self._lock:
            sel = [(t, b) for t, b, _ in self._video if t0 <= t <= t1]
        return [(t, cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()) for t, b in sel]

    def frame_at(self, t: float) -> tuple[float, np.ndarray] | None:
        with self._lock:
            best = None
            for ft, b, _ in self._video:
                if ft <= t:
                    best = (ft, b)
                else:
                    break
        if best is None:
            return None
        import cv2
        return best[0], cv2.imdecode(np.frombuffer(best[1], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()

    def audio(self, t0: float, t1: float) -> tuple[np.ndarray, int]:
        with self._lock:
            sel = [(t, x, sr) for t, x, sr in self._audio if t0 <= t <= t1]
        if not sel:
            return np.zeros((1, 0), np.float32), 0
        sr = sel[0][2]
        ch = sel[0][1].shape[0]
        return np.concatenate([x for _t, x, s in sel if s == sr and x.shape[0] == ch], axis=1), sr

    def write_clip(self, t0: float, t1: float, path: str | Path, fps: float = 15.0) -> Path:
        """Record [t0, t1] of the buffer to an mp4 (H.264 + AAC when audio was kept)."""
        import av

        frames = self.frames(t0, t1)
        if not frames:
            raise MediaError(f"nothing buffered between {t0:.1f} and {t1:.1f} s")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = frames[0][1].shape[:2]
        w, h = w // 2 * 2, h // 2 * 2
        from fractions import Fraction
        with av.open(str(path), "w") as out:
            vs = out.add_stream("libx264", rate=int(round(fps)))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.time_base = Fraction(1, 1000)
            last = -1
            for t, img in frames:
                pts = int(round((t - t0) * 1000))
                if pts <= last:  # a camera that stamps two frames alike: the encoder needs a rising clock
                    continue
                last = pts
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
                fr.pts = pts
                fr.time_base = Fraction(1, 1000)
                for p in vs.encode(fr):
                    out.mux(p)
            for p in vs.encode():
                out.mux(p)
        return path


def record_clip(ring: RingBuffer, t0: float, t1: float, path: str | Path, *, wait_s: float = 15.0) -> Path:
    """Job: wait (at most ``wait_s``) until the stream has passed ``t1`` so the clip has its tail,
    then record [t0, t1] of ``ring`` to ``path``."""
    deadline = time.monotonic() + wait_s
    while ring.span[1] < t1 and time.monotonic() < deadline:
        time.sleep(0.1)
    return ring.write_clip(t0, t1, path)


# -- the reader job ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveRequest:
    spec: str
    ring_seconds: float = 180.0
    realtime: bool | None = None
    loop: bool = False
    processors: tuple = field(default=(), compare=False)
    ring: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class LiveUpdate:
    kind: str  # "frame" | "status" | "event"
    time: float
    wall: float
    image: Any = None
    text: str = ""
    payload: Any = None


def live_job(req: LiveRequest, state) -> str:
    """Job: read the source until cancelled or it ends; returns why it stopped."""
    src = LiveSource(req.spec, realtime=req.realtime, loop=req.loop)
    ring: RingBuffer = req.ring
    last_frame = 0.0
    for chunk in src.chunks(state.is_cancelled):
        if chunk.kind == "status":
            state.set_partial_result(LiveUpdate("status", chunk.time, chunk.wall, text=chunk.text))
            continue
        ring.push(chunk)
        for proc in req.processors:
            try:
                for ev in proc.feed(chunk) or ():
                    state.set_partial_result(LiveUpdate("event", chunk.time, time.time(), payload=ev))
            except Exception as e:  # a broken processor must not stop the camera
                log.exception("live processor %r failed", proc)
                state.set_partial_result(LiveUpdate("status", chunk.time, time.time(),
                                                    text=f"{type(proc).__name__} stopped: {describe_error(e)}"))
                req = LiveRequest(req.spec, req.ring_seconds, req.realtime, req.loop,
                                  tuple(p for p in req.processors if p is not proc), ring)
        if chunk.kind == "video" and chunk.wall - last_frame >= 0.05:
            last_frame = chunk.wall
            state.set_partial_result(LiveUpdate("frame", chunk.time, chunk.wall, image=chunk.image))
    return "ended"
