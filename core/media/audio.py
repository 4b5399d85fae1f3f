"""Audio decoding to float32 arrays (PyAV), Qt-free.

Samples come out as ``[channels, n]`` float32 in [-1, 1], planar, at the stream's own
rate; sample 0 is media time 0 (the container start), so audio and video share a clock.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from core.media.decode import ContainerReader, MediaError, _check_readable, _open, _settle, _usable
from core.media.check import MAX_AUDIO_GAP_S, MAX_CHANNELS, display_name, packets, time_base

log = logging.getLogger(__name__)

PLANES_SAFE = 8  # planar frames with this many channels or more are never read plane by plane


def samples_of(frame) -> np.ndarray:
    """``(channels, samples)`` of a decoded float frame, planar or packed, without touching a
    frame's planes when it has 8 or more (PyAV 18.1 walks a 9th plane of an 8-channel planar
    frame, past FFmpeg's array: a segfault). A packed frame is one plane, reshaped here."""
    ch = frame.layout.nb_channels
    if frame.format.is_planar:
        if ch >= PLANES_SAFE:
            raise ValueError(f"a planar audio frame with {ch} channels")
        return frame.to_ndarray()
    return frame.to_ndarray().reshape(-1, ch).T


@dataclass(frozen=True)
class AudioBlock:
    start: int  # first sample index (media time × rate)
    samples: np.ndarray  # [channels, n] float32


class AudioReader(ContainerReader):
    """Reads one audio stream: whole-file iteration, or a window by time (``with`` closes it)."""

    def __init__(self, path: str | os.PathLike, stream: int = 0):
        import av

        self._av = av
        self.path = _check_readable(path)
        self._c = _open(self.path)
        name = display_name(self.path)
        if not self._c.streams.audio:
            self._c.close()
            raise MediaError(f"{name} has no audio stream.")
        # ``stream`` counts the audio streams that can be decoded (0: the first of them)
        good = [s for s in self._c.streams.audio if _usable(s) is None]
        if stream >= len(good):
            why = _usable(self._c.streams.audio[0]) or "it has no such audio stream"
            self._c.close()
            raise MediaError(f"{name}: the audio cannot be read: {why}.")
        self._s = good[stream]
        cc = self._s.codec_context
        self.sample_rate = int(cc.sample_rate or 0)
        self.channels = int(cc.channels or 0)
        self._tb = time_base(self._s)
        self._origin = float(self._c.start_time) / 1e6 if self._c.start_time is not None else 0.0
        self._used = False
        try:
            self.duration, _note, self._used = _settle(self._c, self.path)
        except av.error.FFmpegError:
            self.duration = 0.0
        self._resampler = None
        self._resampler_key = None

    def _reopen(self) -> None:
        idx = self._s.index
        self._c.close()
        self._c = _open(self.path)
        self._s = self._c.streams[idx]

    @property
    def total_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    def _to_planar(self, frame) -> np.ndarray:
        ch = frame.layout.nb_channels
        if not 0 < ch <= MAX_CHANNELS:  # damaged data decoded as another layout: never touch its planes
            raise ValueError(f"an audio frame with {ch} channels")
        fmt = frame.format.name
        if fmt == "fltp" and ch < PLANES_SAFE:
            arr = frame.to_ndarray()
        else:
            # 8 planar channels: PyAV (18.1) lists a 9th plane and reads it past FFmpeg's array of 8
            # (a segfault); packed samples are one plane, reshaped here
            target = "fltp" if ch < PLANES_SAFE else "flt"
            key = (fmt, frame.layout.name, frame.sample_rate)
            if self._resampler is None or self._resampler_key != key:  # the layout may change mid-stream
                self._resampler = self._av.AudioResampler(format=target, layout=frame.layout,
                                                          rate=frame.sample_rate)
                self._resampler_key = key
            out = self._resampler.resample(frame)
            arr = np.concatenate([samples_of(o) for o in out], axis=1) if out else \
                np.zeros((self.channels, 0), np.float32)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape[0] != self.channels:
            # a mid-stream layout change: mix down/up to the declared channel count
            mono = arr.mean(axis=0, keepdims=True)
            arr = np.repeat(mono, self.channels, axis=0)
        return arr

    def _frame_start(self, frame, fallback: int) -> int:
        if frame.pts is None:
            return fallback
        return int(round((frame.pts * self._tb - self._origin) * self.sample_rate))

    def blocks(self, start_s: float = 0.0) -> Iterator[AudioBlock]:
        """Decode forward from ``start_s`` (seeking first when > 0). Damaged packets are skipped."""
        av = self._av
        if start_s > 0:
            try:
                self._c.seek(int(min((start_s + self._origin) / self._tb, 2.0 ** 62)), stream=self._s,
                             backward=True)
            except (av.error.FFmpegError, OverflowError) as e:
                log.warning("%s: audio seek to %.3f s failed (%s)", display_name(self.path), start_s, e)
                return
        elif self._used:
            # From the start, reopen rather than seek: after a seek some decoders (Vorbis)
            # swallow the first packet, and the first samples would be lost.
            self._reopen()
        self._used = True
        self._resampler = None
        cursor = None
        for packet in packets(self._c, self._s, display_name(self.path), log):  # damaged data ends it
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError) as e:
                log.debug("skipping undecodable audio packet: %s", e)
                continue
            for frame in frames:
                try:
                    arr = self._to_planar(frame)
                except (av.error.FFmpegError, ValueError) as e:
                    log.debug("skipping an audio frame that cannot be converted: %s", e)
                    continue
                if cursor is None:
                    cursor = self._frame_start(frame, 0)
                else:
                    # Trust timestamps only when they jump (a gap); otherwise count samples so
                    # rounding never opens one-sample holes between frames.
                    s = self._frame_start(frame, cursor)
                    if s - cursor > MAX_AUDIO_GAP_S * self.sample_rate:
                        # a jump of hours or days: a damaged timestamp, not a pause
                        log.warning("%s: the audio timestamps jump from %.1f s to %.1f s; the audio "
                                    "is taken to end there", display_name(self.path),
                                    cursor / self.sample_rate, s / self.sample_rate)
                        return
                    if abs(s - cursor) > self.sample_rate // 10:
                        cursor = s
                yield AudioBlock(cursor, arr)
                cursor += arr.shape[1]

    def read(self, start_s: float, end_s: float, *, mono: bool = False) -> np.ndarray:
        """Samples in [start_s, end_s) as [channels, n] (or [1, n] mixed). Pads silence past the end
        (by up to a second); a window is at most ``MAX_AUDIO_GAP_S`` long."""
        sr = self.sample_rate
        if self.duration > 0:  # silence past the end, but not days of it
            end_s = min(end_s, max(start_s, self.duration) + 1.0)
        a = max(0, int(round(start_s * sr)))
        # a window, not a whole file: at most MAX_AUDIO_GAP_S and 2^28 samples in all
        b = max(a, min(int(round(end_s * sr)), a + int(MAX_AUDIO_GAP_S * sr), a + (1 << 28) // self.channels))
        out = np.zeros((self.channels, b - a), np.float32)
        # Start well before: the first frames after a seek lack their decoder history
        # (overlapped transforms) and come out slightly wrong.
        for blk in self.blocks(max(0.0, start_s - 0.25)):
            s0, n = blk.start, blk.samples.shape[1]
            if s0 >= b:
                break
            lo, hi = max(a, s0), min(b, s0 + n)
            if hi > lo:
                out[:, lo - a:hi - a] = blk.samples[:, lo - s0:hi - s0]
        return out.mean(axis=0, keepdims=True) if mono else out


def sparse_peaks(path: str | os.PathLike, columns: int, *, cancelled=None) -> tuple[np.ndarray, int]:
    """Approximate min/max envelope: ``columns`` windows sampled across the file.

    Returns ``(peaks [channels+1, columns, 2] float32, sample_rate)``; row -1 is the mono
    mix. It looks only at the first decoded audio frame after each seek point, so short
    peaks between probes are missed: it is a placeholder until the exact pyramid is built.
    """
    with AudioReader(path) as r:
        dur = r.duration
        ch = r.channels
        out = np.zeros((ch + 1, columns, 2), np.float32)
        if dur <= 0:
            return out, r.sample_rate
        for i in range(columns):
            if cancelled is not None and cancelled():
                raise InterruptedError
            t = (i + 0.5) * dur / columns
            for blk in r.blocks(t):
                x = blk.samples
                if x.shape[1]:
                    out[:ch, i, 0] = x.min(axis=1)
                    out[:ch, i, 1] = x.max(axis=1)
                    m = x.mean(axis=0)
                    out[ch, i] = (m.min(), m.max())
                break
        return out, r.sample_rate


def load_mono(path: str | os.PathLike, rate: int = 16000, start_s: float = 0.0,
              end_s: float | None = None, cancelled=None, *, reader: "AudioReader | None" = None) -> np.ndarray:
    """Mono float32 audio at ``rate`` Hz for [start_s, end_s), resampled by FFmpeg.

    What speech models want (16 kHz mono). Sample 0 is ``start_s``; missing audio at the
    end (a stream that stops early) is padded with silence so times stay aligned, by up to
    ``MAX_AUDIO_GAP_S``: the buffer follows what decodes, never what a header promises.
    ``reader``: an open :class:`AudioReader` of ``path`` to read through (and leave open) —
    opening a day-long MP4 parses its whole index (a quarter of a second), so a job that reads
    many short pieces opens it once.
    """
    if reader is not None:
        return _load_mono(reader, rate, start_s, end_s, cancelled)
    with AudioReader(path) as r:
        return _load_mono(r, rate, start_s, end_s, cancelled)


def _load_mono(r: "AudioReader", rate: int, start_s: float, end_s: float | None, cancelled) -> np.ndarray:
    import av

    end = r.duration if end_s is None else end_s
    if r.duration > 0:
        end = min(end, max(start_s, r.duration) + 1.0)
    n_out = max(0, int(round((end - start_s) * rate)))
    out = _Buffer(n_out)
    rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
    src_rate = r.sample_rate
    layout = _layout_name(r.channels)
    pos = None
    for k, blk in enumerate(r.blocks(max(0.0, start_s))):
        if cancelled is not None and k % 200 == 0 and cancelled():
            raise InterruptedError
        t0 = blk.start / src_rate
        if t0 >= end:
            break
        if pos is None:
            pos = int(round((t0 - start_s) * rate))
        if r.channels < PLANES_SAFE:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(blk.samples), format="fltp", layout=layout)
        else:  # packed: PyAV would fill a 9th plane of 8 planar channels (see samples_of)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(blk.samples.T).reshape(1, -1), format="flt",
                                               layout=layout)
        frame.sample_rate = src_rate
        for o in rs.resample(frame):
            y = o.to_ndarray().reshape(-1)
            out.place(pos, y)
            pos += len(y)
    if pos is not None:
        for o in rs.resample(None):
            y = o.to_ndarray().reshape(-1)
            out.place(pos, y)
            pos += len(y)
    res = out.result(pad_to=n_out, max_pad=int(MAX_AUDIO_GAP_S * rate))
    # a down-mix of loud stereo can exceed full scale; models expect [-1, 1]
    return np.clip(res, -1.0, 1.0, out=res)


class _Buffer:
    """A float32 buffer of at most ``limit`` samples that grows with what is placed in it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = np.zeros(min(limit, 1 << 20), np.float32)
        self.filled = 0

    def place(self, pos: int, y: np.ndarray) -> None:
        a, b = max(0, pos), min(self.limit, pos + len(y))
        if b <= a:
            return
        if b > len(self.data):
            new = np.zeros(min(self.limit, max(b, 2 * len(self.data))), np.float32)
            new[:self.filled] = self.data[:self.filled]
            self.data = new
        self.data[a:b] = y[a - pos:b - pos]
        self.filled = max(self.filled, b)

    def result(self, pad_to: int, max_pad: int) -> np.ndarray:
        n = pad_to if pad_to - self.filled <= max_pad else self.filled
        if n <= len(self.data):
            return self.data[:n]
        out = np.zeros(n, np.float32)
        out[:self.filled] = self.data[:self.filled]
        return out


def _layout_name(channels: int) -> str:
    return {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 8: "7.1"}.get(
        channels, f"{channels}c")


def mono_float(samples, error: type[Exception], what: str, rate: int = 16000) -> np.ndarray:
    """``samples`` as one mono float32/float64 row (an (n, 1) or (1, n) array is flattened);
    ``error(...)`` naming ``what`` for anything else (stereo, ints, images)."""
    audio = np.asarray(samples)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1 or audio.dtype not in (np.float32, np.float64):
        raise error(f"{what} takes mono float32 audio at {rate} Hz, not an array of shape "
                    f"{audio.shape} and type {audio.dtype}.")
    return audio
