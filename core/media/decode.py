"""Media probing and decoding (PyAV), Qt-free.

Times everywhere in Kestrel are *media seconds*: seconds since the container's
start time, so video and audio of one file share one clock whatever their
streams' own start offsets are. Frames are found by timestamp, never by frame
count, so variable frame rate files land on the right frame.

A decoder object is not thread-safe: each worker owns its own.
"""
from __future__ import annotations

import bisect
import collections
import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Self

import numpy as np

from core.errors import KestrelError
from core.media.check import (MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_path, display_name,
                             finite_seconds, packets, settle_duration, time_base)

log = logging.getLogger(__name__)

#: Containers an analyst can open from the file dialog (anything FFmpeg reads works too).
MEDIA_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".ogg", ".wav", ".mp3", ".m4a", ".aac",
    ".flac", ".opus", ".oga",
)

# How far ahead of the current decode position a request may be and still be served by
# decoding forward instead of seeking; forward decoding is far cheaper than a seek that
# has to replay the group of pictures.
_FORWARD_WINDOW_S = 1.5
# Decoded frames kept (already converted) so stepping backwards stays cheap.
_RECENT_FRAMES = 48


class MediaError(KestrelError):
    """A file cannot be used; str() is a clear sentence for the analyst."""


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str  # "video" | "audio" | "subtitle" | "data" | "unusable" (a stream that cannot be decoded)
    codec: str
    duration_s: float | None = None
    # video
    width: int = 0
    height: int = 0
    fps: float = 0.0
    rotation: int = 0  # degrees counter-clockwise the picture must be turned for display
    frames: int = 0  # as the container declares it (0 if unknown)
    # audio
    sample_rate: int = 0
    channels: int = 0
    layout: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class MediaInfo:
    path: str
    size_bytes: int
    duration_s: float
    container: str
    streams: tuple[StreamInfo, ...] = field(default_factory=tuple)
    content_hash: str = ""
    # what was wrong with the file but did not stop it opening, one sentence each
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # every view divides by it or draws to it: never NaN, infinite or negative
        object.__setattr__(self, "duration_s", finite_seconds(self.duration_s))

    @property
    def video(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height as shown, after rotation."""
        v = self.video
        if v is None:
            return (0, 0)
        return (v.height, v.width) if v.rotation % 180 else (v.width, v.height)

    def summary(self) -> str:
        parts = [f"{self.container}", f"{self.duration_s:.2f} s"]
        if self.video:
            w, h = self.display_size
            parts.append(f"{self.video.codec} {w}×{h} @ {self.video.fps:.3g} fps")
        else:
            parts.append("no video")
        if self.audio:
            parts.append(f"{self.audio.codec} {self.audio.sample_rate} Hz ×{self.audio.channels}")
        else:
            parts.append("no audio")
        return ", ".join(parts)


def quick_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A content hash that stays fast on hour-long files.

    SHA-256 over the size and three 1 MiB slices (start, middle, end): enough to tell a
    moved file from a changed one without reading gigabytes on open.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        for off in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(off)
            h.update(f.read(chunk))
    return "qs256:" + h.hexdigest()


def _check_readable(path: str | os.PathLike) -> Path:
    p, problem = check_path(path)
    if problem is not None:
        # a missing file is named in full: the folder may be what is wrong
        raise MediaError(f"{display_name(p, full=problem.startswith('does not exist'))} {problem}")
    return p


WAV_TAIL_SLACK = 1 << 20  # bytes past a WAV's RIFF and data chunks that are still read (footers)


class _Capped(io.RawIOBase):
    """A file seen only up to ``size`` bytes (what FFmpeg's WAV demuxer may scan for chunks)."""

    def __init__(self, path: Path, size: int) -> None:
        self._f, self._size = open(path, "rb"), size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._size - self._f.tell()))
        return self._f.readinto(memoryview(b)[:n]) if n else 0

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            offset, whence = self._size + offset, 0
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


def _wav_riff_end(path: Path) -> int | None:
    """Where a WAV file's RIFF chunk ends, when far more bytes follow it (a 2 s WAV followed by
    10 GB of zeros: FFmpeg's demuxer walks them 8 bytes at a time looking for chunks, on every
    open, for minutes); None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    riff = int.from_bytes(head[4:8], "little")
    i = 12
    while i + 8 <= len(head):  # the data chunk's own size says where the samples end
        tag, n = head[i:i + 4], int.from_bytes(head[i + 4:i + 8], "little")
        if tag == b"data":
            if n in (0, 0xFFFFFFFF) or riff in (0, 0xFFFFFFFF):  # a streamed WAV: its length is unknown
                return None
            end = max(riff + 8, i + 8 + n) + WAV_TAIL_SLACK
            return end if size > end else None
        i += 8 + n + (n & 1)
    return None


def _open(path: Path):
    import av

    name = display_name(path)
    try:
        # Damaged tags are shown as replacement characters rather than failing the open.
        end = _wav_riff_end(path)
        if end is not None:
            return av.open(_Capped(path, end), mode="r", format="wav", timeout=10.0, metadata_errors="replace")
        return av.open(str(path), mode="r", timeout=10.0, metadata_errors="replace")
    except av.error.InvalidDataError as e:
        raise MediaError(f"{name} is not a media file FFmpeg can read, or is damaged "
                         f"({e.strerror or e}).") from e
    except av.error.EOFError as e:
        raise MediaError(f"{name} ends before its header does (the file may be truncated).") from e
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name} could not be opened: {getattr(e, 'strerror', None) or e}.") from e
    except (UnicodeError, ValueError, OverflowError, MemoryError) as e:
        raise MediaError(f"{name} could not be opened: its header is damaged ({type(e).__name__}).") from e


# (path, size, mtime) -> (duration, note): measuring a lying file's real end reads its
# packets, and every reader of the file needs the same answer.
_DURATIONS: dict[tuple[str, int, int], tuple[float, str | None]] = {}


def _usable(s) -> str | None:
    """Why stream ``s`` cannot be decoded (None if it can)."""
    cc = s.codec_context
    if cc is None:
        tag = ""
        try:
            tag = s.codec_tag or ""
        except Exception:
            pass
        return f"its {s.type} stream uses a codec FFmpeg cannot decode{f' ({tag})' if tag else ''}"
    if s.type == "audio":
        rate, ch = int(cc.sample_rate or 0), int(cc.channels or 0)
        if rate <= 0 or ch <= 0:
            return "its audio stream declares no sample rate or no channels"
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            return (f"its audio stream declares a sample rate of {rate:,} Hz (Kestrel reads "
                    f"{MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz)")
        if ch > MAX_CHANNELS:
            return f"its audio stream declares {ch} channels (at most {MAX_CHANNELS} are read)"
    if s.type == "video" and (int(cc.width or 0) > 32768 or int(cc.height or 0) > 32768):
        return f"its video stream declares a {cc.width}×{cc.height} picture"
    return None


def usable_stream(container, kind: str):
    """The first stream of ``kind`` ("video"/"audio") that can be decoded, or None."""
    group = container.streams.video if kind == "video" else container.streams.audio
    return next((s for s in group if _usable(s) is None), None)


def media_duration(container, path: Path, streams=None) -> tuple[float, str | None]:
    """``(seconds, note)``: the file's duration as its bytes can back it (see
    :func:`core.media.check.settle_duration`); the same answer for every reader of the file."""
    return _settle(container, path, streams)[:2]


def _settle(container, path: Path, streams=None) -> tuple[float, str | None, bool]:
    """:func:`media_duration`, and whether packets were read (the container then needs a
    seek, or a reopen, before use)."""
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key, st = None, None
    if key is not None and key in _DURATIONS:
        return (*_DURATIONS[key], False)
    if streams is None:
        streams = [s for s in (usable_stream(container, "video"), usable_stream(container, "audio")) if s]
    kind = "video" if any(s.type == "video" for s in streams) else "audio"
    got, moved = settle_duration(container, streams, st.st_size if st else 0, display_name(path), kind)
    if got[1]:
        log.warning("%s", got[1])
    if key is not None:
        if len(_DURATIONS) > 256:
            _DURATIONS.clear()
        _DURATIONS[key] = got
    return (*got, moved)


def probe(path: str | os.PathLike, *, with_hash: bool = True) -> MediaInfo:
    """Read what a file holds, and prove it decodes: a header alone is not enough.

    Whatever the file holds, the outcome is a MediaInfo or a MediaError whose text says
    what is wrong; what was doubtful but usable (a duration the bytes cannot back, a
    stream that cannot be decoded beside one that can) is in ``MediaInfo.notes``.
    """
    import av

    p = _check_readable(path)
    name = display_name(p)
    container = _open(p)
    try:
        return _probe(p, name, container, with_hash)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeError, ValueError, OverflowError, MemoryError) as e:
        log.info("probing %s failed", name, exc_info=True)  # the log file; one sentence for the analyst
        raise MediaError(f"{name} cannot be read: {getattr(e, 'strerror', None) or e} "
                         "(the file may be damaged).") from e
    finally:
        container.close()


def _probe(p: Path, name: str, container, with_hash: bool) -> MediaInfo:
    streams: list[StreamInfo] = []
    notes: list[str] = []
    unusable: list[str] = []
    for s in container.streams:
        kind = s.type
        cc = s.codec_context
        codec = (cc.name if cc is not None else None) or "?"
        dur = finite_seconds(s.duration * s.time_base) if s.duration and s.time_base else None
        why = _usable(s) if kind in ("video", "audio") else None
        if why is not None:
            unusable.append(why)
            notes.append(f"{name}: {why}; it is ignored.")
            log.warning("%s", notes[-1])
            streams.append(StreamInfo(index=s.index, kind="unusable", codec=codec, duration_s=dur))
        elif kind == "video":
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = finite_seconds(rate) if rate else 0.0
            streams.append(StreamInfo(
                index=s.index, kind="video", codec=codec, duration_s=dur,
                width=int(cc.width or 0), height=int(cc.height or 0),
                fps=fps if fps <= 1000 else 0.0, frames=max(0, int(s.frames or 0)),
            ))
        elif kind == "audio":
            layout = ""
            try:
                layout = cc.layout.name if cc.layout else ""
            except (ValueError, AttributeError):
                pass
            streams.append(StreamInfo(
                index=s.index, kind="audio", codec=codec, duration_s=dur,
                sample_rate=int(cc.sample_rate or 0), channels=int(cc.channels or 0), layout=layout,
            ))
        else:
            streams.append(StreamInfo(index=s.index, kind=kind, codec=codec, duration_s=dur))
    # the streams the player and the analysis will use: the first decodable of each kind
    playable = [st for st in (next((x for x in streams if x.kind == k), None) for k in ("video", "audio")) if st]
    if not playable:
        if unusable:
            raise MediaError(f"{name} cannot be opened: {'; '.join(unusable)}.")
        raise MediaError(f"{name} has neither a video nor an audio stream.")
    size = p.stat().st_size
    duration, note = media_duration(container, p, [container.streams[st.index] for st in playable])
    if note:
        notes.append(note)
    # Decode the first frame of each playable stream: truncated or corrupt files often
    # have a perfectly good header.
    rotation = 0
    for st in playable:
        first = _first_frame(container, st.index)
        if first is None:
            raise MediaError(f"{name}: the {st.kind} stream holds no decodable frame "
                             "(the file may be truncated or corrupt).")
        if st.kind == "video":
            rotation = _frame_rotation(first)
    if rotation:
        streams = [StreamInfo(**{**st.to_dict(), "rotation": rotation}) if st.kind == "video" else st
                   for st in streams]
    if duration <= 0:
        raise MediaError(f"{name} has no duration (the file may be truncated).")
    names = container.format.name.split(",")
    ext = p.suffix.lower().lstrip(".")
    fmt = ext if ext in names else names[0]
    try:
        content_hash = quick_hash(p) if with_hash else ""
    except OSError as e:
        raise MediaError(f"{name} cannot be read: {e.strerror or e}.") from e
    return MediaInfo(path=str(p.resolve()), size_bytes=size, duration_s=duration,
                     container=fmt, streams=tuple(streams), content_hash=content_hash,
                     notes=tuple(notes))


def _first_frame(container, index: int, max_packets: int = 2000):
    """The first frame of stream ``index`` that decodes; damaged packets before it are
    skipped (as players do), up to ``max_packets`` of them."""
    import av

    stream = container.streams[index]
    try:
        container.seek(0)
    except av.error.FFmpegError:
        pass
    cc = stream.codec_context
    for n, pkt in enumerate(packets(container, stream)):
        if n > max_packets:
            break
        try:
            frames = cc.decode(pkt)
        except (av.error.FFmpegError, ValueError) as e:
            log.debug("skipping an undecodable packet of stream %d: %s", index, e)
            continue
        if frames:
            return frames[0]
    return None


def _frame_rotation(frame) -> int:
    """Counter-clockwise degrees to turn this frame for display, from its display matrix."""
    try:
        angle = float(frame.rotation or 0)
    except Exception:
        angle = 0.0
    return int(round(angle / 90.0)) * 90 % 360


def rotate_image(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def fit_size(w: int, h: int, box: tuple[int, int] | None) -> tuple[int, int]:
    """Largest even size ≤ box with the aspect of w×h (never upscales)."""
    if not box or (w <= box[0] and h <= box[1]):
        return w, h
    s = min(box[0] / w, box[1] / h)
    return max(2, int(w * s) // 2 * 2), max(2, int(h * s) // 2 * 2)


@dataclass(frozen=True)
class Frame:
    """One decoded picture, ready for display (RGB, rotation applied)."""

    time: float  # media seconds of its presentation timestamp
    duration: float  # until the next frame (estimated at the stream's rate when unknown)
    image: np.ndarray = field(repr=False)  # H×W×3 uint8 RGB
    key_frame: bool = False
    source_size: tuple[int, int] = (0, 0)  # coded width, height before scaling

    @property
    def end(self) -> float:
        return self.time + self.duration


class ContainerReader:
    """A reader of one opened container (``self._c``): ``close()`` it, or use it in ``with``."""

    def close(self) -> None:
        try:
            self._c.close()
        except Exception:  # pragma: no cover
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoDecoder(ContainerReader):
    """Frame-accurate random access to one video stream.

    ``frame_at(t)`` returns the frame on screen at media time ``t``: the one with the
    largest timestamp ≤ t. Requests just ahead of the last one decode forward (playback,
    stepping); others seek to the keyframe before ``t`` and decode up to it, skipping the
    non-reference frames that cannot matter. The frames decoded just before the target are
    kept (unconverted) so stepping backwards does not replay the GOP each time.
    """

    def __init__(self, path: str | os.PathLike, *, max_size: tuple[int, int] | None = (1920, 1080),
                 threads: bool | None = None):
        import av

        self.path = _check_readable(path)
        self._av = av
        self._c = _open(self.path)
        self._s = usable_stream(self._c, "video")
        if self._s is None:
            self._c.close()
            raise MediaError(f"{display_name(self.path)} has no video stream that can be decoded.")
        cc = self._s.codec_context
        if threads is None:
            # Frame threads add latency to every seek (measured: p50 22 → 27 ms at 640×360)
            # but are needed to play large pictures in real time.
            threads = (cc.width or 0) * (cc.height or 0) > 1280 * 720
        if threads:
            self._s.thread_type = "AUTO"
        self._tb = time_base(self._s)
        self._origin = float(self._c.start_time) / 1e6 if self._c.start_time is not None else 0.0
        rate = self._s.average_rate or self._s.guessed_rate or self._s.base_rate
        fps = finite_seconds(rate) if rate else 0.0
        self.fps = fps if 0 < fps <= 1000 else 25.0
        self.max_size = max_size
        try:
            self.duration, _note, moved = _settle(self._c, self.path)
            if moved:
                self._c.seek(0)
        except av.error.FFmpegError:
            self.duration = 0.0
        self._demux: Iterator | None = None
        self._queue: collections.deque = collections.deque()  # decoded, not yet consumed
        self._target = 0.0  # the time being decoded towards (decides which frames to skip)
        self._skipped_max = -np.inf  # latest pts time skipped since the last seek
        self._pending = None  # a decoded av frame beyond the last request
        self._last: Frame | None = None
        # time -> (av frame or Frame, end time): frames just before recent targets
        self._recent: collections.OrderedDict[float, tuple] = collections.OrderedDict()
        self._recent_times: list[float] = []
        self._eof = False
        self._skip_ok = True
        self._back_margin = 0.0
        self.rotation = 0
        self.seeks = 0  # how many real seeks happened (for tests and benches)

    # -- public ---------------------------------------------------------------
    def close(self) -> None:
        self._recent.clear()
        self._queue.clear()
        self._pending = None
        super().close()

    def frame_at(self, t: float) -> Frame:
        t = float(t)
        t = max(0.0, t) if t == t else 0.0
        try:
            return self._frame_at(t)
        except MediaError:
            raise
        except (self._av.error.FFmpegError, OSError, ValueError, OverflowError, MemoryError) as e:
            log.debug("decoding at %.3f s failed", t, exc_info=True)
            raise MediaError(f"{display_name(self.path)}: no frame could be decoded at {t:.3f} s "
                             f"({getattr(e, 'strerror', None) or e}).") from e

    def _frame_at(self, t: float) -> Frame:
        hit = self._cached(t)
        if hit is not None:
            return hit
        last = self._last
        ahead = last is not None and last.time <= t and (t - last.time) <= _FORWARD_WINDOW_S
        # Stepping backwards: decode the frames before t too, so the next steps are cached.
        self._back_margin = (_RECENT_FRAMES / max(self.fps, 1.0)
                             if last is not None and 0 < last.time - t < 1.0 else 0.0)
        if not (ahead and self._demux is not None):
            self._seek(t)
        frame = self._decode_until(t)
        if frame is None or frame.time < self._skipped_max:
            # Landed after t (keyframe later than t after a seek), or a skipped frame was
            # the answer (very low or variable frame rate): back off and retry, no skipping.
            for back in (1.0, 3.0, 10.0, float("inf")):
                start = max(0.0, t - back)
                self._seek(start, skip=False)
                # From the very start, a first frame later than t is what is on screen at t
                # (video that begins after the audio, or a negative-time request).
                frame = self._decode_until(t, accept_first=start == 0.0)
                if frame is not None or start == 0.0:
                    break
        if frame is None:
            raise MediaError(f"{display_name(self.path)}: no frame could be decoded at {t:.3f} s.")
        return frame

    def next_frame(self) -> Frame | None:
        """The frame after the last one returned (None at the end)."""
        if self._last is None:
            return self.frame_at(0.0)
        if self._pending is not None:
            return self.frame_at(self._media_time(self._pending))
        f = self.frame_at(self._last.end + 1e-6)
        return None if f.time <= self._last.time else f

    # -- internals ------------------------------------------------------------
    def _media_time(self, av_frame) -> float:
        if av_frame.pts is None:
            return 0.0
        return av_frame.pts * self._tb - self._origin

    def _cached(self, t: float) -> Frame | None:
        i = bisect.bisect_right(self._recent_times, t) - 1
        if i < 0:
            return None
        key = self._recent_times[i]
        entry = self._recent.get(key)
        if entry is None:
            return None
        f, end = entry
        if not (key <= t < end):
            return None
        if not isinstance(f, Frame):  # convert on first use only
            f = self._convert(f, end)
            self._recent[key] = (f, end)
        self._recent.move_to_end(key)
        return f

    def _remember(self, f, end: float) -> None:
        key = f.time if isinstance(f, Frame) else self._media_time(f)
        if key in self._recent:
            if isinstance(f, Frame):
                self._recent[key] = (f, end)
            return
        self._recent[key] = (f, end)
        bisect.insort(self._recent_times, key)
        while len(self._recent) > _RECENT_FRAMES:
            old, _ = self._recent.popitem(last=False)
            i = bisect.bisect_left(self._recent_times, old)
            if i < len(self._recent_times) and self._recent_times[i] == old:
                del self._recent_times[i]

    def _seek(self, t: float, skip: bool = True) -> None:
        av = self._av
        pts = int(min((t + self._origin) / self._tb, 2.0 ** 62))
        try:
            if t <= 0.0:
                self._c.seek(0)  # the very start (timestamp searches in MPEG-PS can overshoot)
            else:
                self._c.seek(pts, stream=self._s, backward=True, any_frame=False)
        except (av.error.FFmpegError, OverflowError) as e:
            log.warning("seek to %.3f s failed (%s); decoding from the start", t, e)
            self._c.seek(0)
        self.seeks += 1
        self._demux = packets(self._c, self._s, display_name(self.path), log)
        self._queue.clear()
        self._pending = None
        self._last = None
        self._eof = False
        self._skip_ok = skip
        self._skipped_max = -np.inf

    def _next_av(self):
        """The next decoded frame in presentation order, or None at the end."""
        av = self._av
        if self._pending is not None:
            f, self._pending = self._pending, None
            return f
        cc = self._s.codec_context
        while not self._queue:
            if self._eof:
                return None
            pkt = next(self._demux, None)  # damaged data ends the stream (see packets())
            if pkt is None:
                self._eof = True
                return None
            # Frames that show well before the target and that nothing refers to need
            # not be decoded at all: that is most B-frames of a long GOP.
            far = pkt.pts is not None and (pkt.pts * self._tb - self._origin) < self._target - self._skip_margin()
            skip = self._skip_ok and far and pkt.size > 0
            want = "NONREF" if skip else "DEFAULT"
            if cc.skip_frame != want:
                cc.skip_frame = want
            try:
                frames = cc.decode(pkt)
            except (av.error.FFmpegError, ValueError) as e:
                # A damaged packet: skip it, as players do, rather than failing the seek.
                log.debug("skipping undecodable data: %s", e)
                continue
            if skip and pkt.pts is not None and not pkt.is_keyframe:
                # we cannot tell from the packet whether the decoder dropped it; assume so
                self._skipped_max = max(self._skipped_max, pkt.pts * self._tb - self._origin)
            self._queue.extend(frames)
        return self._queue.popleft()

    def _skip_margin(self) -> float:
        return max(0.25, 4.0 / max(self.fps, 1.0), self._back_margin)

    def _decode_until(self, t: float, accept_first: bool = False) -> Frame | None:
        """Decode forward until the frame shown at ``t``; None if the first is already past t."""
        eps = 1e-6
        self._target = t
        keep: collections.deque = collections.deque(maxlen=_RECENT_FRAMES // 2)
        prev = None
        while True:
            f = self._next_av()
            if f is None:
                break
            ft = self._media_time(f)
            if ft > t + eps and prev is None and accept_first:
                prev = f
                continue
            if ft > t + eps:
                self._pending = f
                break
            if prev is not None:
                keep.append((prev, ft))
            prev = f
        if prev is None:
            if self._eof and self._last is not None:
                return self._last
            return None
        safe_from = t - self._skip_margin() if self._skip_ok else -np.inf
        for f, end in keep:  # cheap backwards stepping later (only where nothing was skipped)
            if self._media_time(f) >= safe_from:
                self._remember(f, end)
        nxt = self._media_time(self._pending) if self._pending is not None else None
        pt = self._media_time(prev)
        end = nxt if nxt is not None and nxt > pt else pt + 1.0 / self.fps
        frame = self._convert(prev, end)
        # a frame the skip rule dropped may lie between prev and t: frame_at checks this
        self._skipped_max = self._skipped_max if self._skipped_max <= t else -np.inf
        self._last = frame
        self._remember(frame, end)
        return frame

    def _convert(self, f, end: float) -> Frame:
        t = self._media_time(f)
        rot = _frame_rotation(f)
        self.rotation = rot
        w, h = fit_size(f.width, f.height, self._coded_box(rot))
        img = f.to_ndarray(format="rgb24", width=w, height=h)
        img = np.ascontiguousarray(rotate_image(img, rot))  # decoders may pad rows
        return Frame(time=t, duration=max(end - t, 1e-6), image=img,
                     key_frame=bool(f.key_frame), source_size=(f.width, f.height))

    def _coded_box(self, rot: int) -> tuple[int, int] | None:
        if self.max_size is None:
            return None
        return (self.max_size[1], self.max_size[0]) if rot % 180 else self.max_size


def decode_thumbs(request: tuple[str, tuple[float, ...], tuple[int, int]], state) -> list[tuple[float, np.ndarray]]:
    """Job: small frames (fitting ``max_size``) at the given times of ``path`` (seeking; one
    decoder for all). ``request`` is ``(path, times, max_size)``."""
    path, times, max_size = request
    out = []
    with VideoDecoder(path, max_size=max_size) as dec:
        for n, t in enumerate(sorted(times)):
            if state.is_cancelled():
                break
            out.append((t, dec.frame_at(t).image))
            state.set_progress((n + 1) / len(times), "thumbnails")
    return out


def frame_times(path: str | os.PathLike, progress=None, cancelled=None, on_span=None) -> np.ndarray:
    """Presentation times (media seconds, sorted) of every video frame, by demuxing only.

    No decoding: this reads packet headers, so even an hour of video takes about a second.
    Gives exact frame numbers for variable frame rate files. ``on_span(seconds)`` is told the
    duration it reads through (a job's media span, for its ETA and throughput).
    """
    import av

    p = _check_readable(path)
    c = _open(p)
    try:
        s = usable_stream(c, "video")
        if s is None:
            return np.zeros(0)
        tb = time_base(s)
        origin = float(c.start_time) / 1e6 if c.start_time is not None else 0.0
        dur = media_duration(c, p)[0]
        if on_span is not None:
            on_span(dur)
        pts: list[int] = []
        first_key: int | None = None
        try:
            c.seek(0)
        except av.error.FFmpegError as e:
            raise MediaError(f"{display_name(p)} cannot be read: {e}.") from e
        for n, pkt in enumerate(packets(c, s, display_name(p), log)):
            if pkt.pts is not None and pkt.size:
                # Packets before the first keyframe (a stream cut mid-GOP), and leading
                # frames of an open GOP that show before it, cannot be decoded: decoders
                # drop them, so they are not frames an analyst can see or number.
                if first_key is None:
                    if not pkt.is_keyframe:
                        continue
                    first_key = pkt.pts
                if pkt.pts >= first_key:
                    pts.append(pkt.pts)
            if n % 2000 == 0:
                if cancelled is not None and cancelled():
                    raise InterruptedError
                if progress is not None and dur > 0 and pkt.pts is not None:
                    progress(min(1.0, (pkt.pts * tb - origin) / dur))
        arr = np.unique(np.asarray(pts, dtype=np.int64)) * tb - origin
        return arr
    finally:
        c.close()


def frame_index(times: np.ndarray, t: float) -> int:
    """Number (0-based) of the frame shown at ``t`` given the sorted frame times."""
    if len(times) == 0:
        return 0
    return max(0, int(np.searchsorted(times, t + 1e-6, side="right")) - 1)
