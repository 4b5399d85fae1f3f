"""Min/max peak pyramid of an audio stream, for waveforms that zoom from hours to samples.

Level 0 holds min and max of every ``BASE_BLOCK`` samples; each level above reduces the
one below by ``FACTOR``. Every level carries one row per channel plus a last row for the
mono mix (the mix's extremes cannot be derived from the channels' extremes). A view
picks the coarsest level that still gives at least one block per pixel, and below level
0 it reads the samples themselves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.media.audio import AudioReader, sparse_peaks
from core.media.check import MAX_AUDIO_GAP_S
from core.jobs import JobState, check, set_media_span

BASE_BLOCK = 256
FACTOR = 4
TOP_COLUMNS = 2048  # stop adding levels once a level is this small
VERSION = "1"  # bump when the pyramid's layout changes: cached copies are then rebuilt


@dataclass
class PeakPyramid:
    sample_rate: int
    channels: int
    levels: list[np.ndarray] = field(default_factory=list)  # [channels+1, n, 2] float32
    total_samples: int = 0
    complete: bool = False
    approximate: bool = False  # True for the sparse first overview
    base_block: int = BASE_BLOCK

    def block_size(self, level: int) -> int:
        return self.base_block * FACTOR ** level

    @property
    def duration(self) -> float:
        return self.total_samples / self.sample_rate if self.sample_rate else 0.0

    def level_for(self, samples_per_pixel: float) -> int:
        """Coarsest level with blocks no larger than one pixel; -1 means 'read samples'."""
        if samples_per_pixel < self.base_block or not self.levels:
            return -1
        lvl = int(np.floor(np.log(samples_per_pixel / self.base_block) / np.log(FACTOR)))
        return max(0, min(lvl, len(self.levels) - 1))

    def window(self, level: int, t0: float, t1: float, row: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times of block starts, mins, maxs) of ``row`` (-1 = mix) covering [t0, t1]."""
        arr = self.levels[level]
        bs = self.block_size(level)
        if self.approximate:
            bs = max(1, int(round(self.total_samples / max(1, arr.shape[1]))))
        a = max(0, int(t0 * self.sample_rate // bs))
        b = min(arr.shape[1], int(np.ceil(t1 * self.sample_rate / bs)) + 1)
        if b <= a:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        times = (np.arange(a, b) * bs) / self.sample_rate
        seg = arr[row, a:b]
        return times, seg[:, 0].astype(np.float32), seg[:, 1].astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"L{i}": lvl.astype(np.float16) for i, lvl in enumerate(self.levels)}

    def meta(self) -> dict:
        return {"sample_rate": self.sample_rate, "channels": self.channels,
                "total_samples": self.total_samples, "base_block": self.base_block,
                "factor": FACTOR, "levels": len(self.levels), "version": VERSION}

    @classmethod
    def from_arrays(cls, meta: dict, arrays: list[np.ndarray]) -> "PeakPyramid":
        ch = int(meta["channels"])
        if meta.get("version") != VERSION or int(meta.get("factor", 0)) != FACTOR:
            raise ValueError("waveform cache has another layout")
        for a in arrays:
            if a.ndim != 3 or a.shape[0] != ch + 1 or a.shape[2] != 2:
                raise ValueError("waveform cache has a bad shape")
        return cls(sample_rate=int(meta["sample_rate"]), channels=ch,
                   levels=[a.astype(np.float32) for a in arrays],
                   total_samples=int(meta["total_samples"]), complete=True,
                   base_block=int(meta.get("base_block", BASE_BLOCK)))


def reduce_level(level: np.ndarray) -> np.ndarray:
    """One level up: min of mins and max of maxes over groups of FACTOR blocks."""
    n = level.shape[1]
    m = (n + FACTOR - 1) // FACTOR
    pad = m * FACTOR - n
    if pad:
        level = np.concatenate([level, np.repeat(level[:, -1:, :], pad, axis=1)], axis=1)
    g = level.reshape(level.shape[0], m, FACTOR, 2)
    return np.stack([g[..., 0].min(axis=2), g[..., 1].max(axis=2)], axis=-1)


def build_levels(base: np.ndarray) -> list[np.ndarray]:
    levels = [base]
    while levels[-1].shape[1] > TOP_COLUMNS:
        levels.append(reduce_level(levels[-1]))
    return levels


class PyramidBuilder:
    """Accumulates decoded audio blocks into level-0 peaks, gaps filled with silence."""

    def __init__(self, sample_rate: int, channels: int, expected_samples: int = 0):
        self.sample_rate = sample_rate
        self.channels = channels
        # what the header promises sizes the first allocation only: the buffer grows with
        # what decodes (a damaged header may promise years)
        cap = max(16, min(expected_samples // BASE_BLOCK + 16, 1 << 20))
        self._peaks = np.zeros((channels + 1, cap, 2), np.float32)
        self._n = 0  # completed base blocks
        self._carry = np.zeros((channels, 0), np.float32)
        self._cursor = 0  # next expected sample index

    @property
    def samples(self) -> int:
        return self._cursor

    def feed(self, start: int, x: np.ndarray) -> None:
        while start > self._cursor:  # a hole in the stream: silence, a slice at a time
            gap = min(start - self._cursor, 1 << 20)
            self.feed(self._cursor, np.zeros((self.channels, gap), np.float32))
        if start < self._cursor:  # overlap: drop what we already have
            x = x[:, self._cursor - start:]
            if x.shape[1] == 0:
                return
        buf = np.concatenate([self._carry, x], axis=1) if self._carry.shape[1] else x
        nb = buf.shape[1] // BASE_BLOCK
        if nb:
            blocks = buf[:, :nb * BASE_BLOCK].reshape(self.channels, nb, BASE_BLOCK)
            mix = blocks.mean(axis=0, keepdims=True)
            allrows = np.concatenate([blocks, mix], axis=0)
            self._grow(self._n + nb)
            self._peaks[:, self._n:self._n + nb, 0] = allrows.min(axis=2)
            self._peaks[:, self._n:self._n + nb, 1] = allrows.max(axis=2)
            self._n += nb
        self._carry = buf[:, nb * BASE_BLOCK:].copy()
        self._cursor += x.shape[1]

    def _grow(self, need: int) -> None:
        if need > self._peaks.shape[1]:
            new = np.zeros((self._peaks.shape[0], max(need, int(self._peaks.shape[1] * 1.5)), 2), np.float32)
            new[:, :self._n] = self._peaks[:, :self._n]
            self._peaks = new

    def snapshot(self, final: bool = False) -> PeakPyramid:
        base = self._peaks[:, :self._n]
        if final and self._carry.shape[1]:
            c = self._carry
            mix = c.mean(axis=0, keepdims=True)
            rows = np.concatenate([c, mix], axis=0)
            tail = np.stack([rows.min(axis=1), rows.max(axis=1)], axis=-1)[:, None, :]
            base = np.concatenate([base, tail], axis=1)
        return PeakPyramid(sample_rate=self.sample_rate, channels=self.channels,
                           levels=build_levels(base.copy()) if base.shape[1] else [],
                           total_samples=self._cursor, complete=final)


@dataclass(frozen=True)
class WaveformRequest:
    path: str
    sparse_columns: int = 2048
    sparse_above_s: float = 120.0  # files longer than this get the instant sparse overview first


def build_waveform(req: WaveformRequest, state: JobState) -> PeakPyramid:
    """Job: the exact pyramid, with an approximate overview first for long files.

    Partial results are PeakPyramid snapshots; the last one covers the whole stream.
    """
    with AudioReader(req.path) as r:
        total = r.total_samples
        dur = r.duration
        set_media_span(state, dur)
        if dur > req.sparse_above_s:
            state.set_progress(0.0, "audio overview")
            peaks, sr = sparse_peaks(req.path, req.sparse_columns, cancelled=state.is_cancelled)
            state.set_partial_result(PeakPyramid(sample_rate=sr, channels=r.channels, levels=[peaks],
                                                 total_samples=total, approximate=True))
        b = PyramidBuilder(r.sample_rate, r.channels, total)
        last = time.monotonic()
        for start, x in _batched(r.blocks(), r.sample_rate * 4):
            if start - b.samples > MAX_AUDIO_GAP_S * r.sample_rate:
                break  # audio that starts days later: a damaged timestamp (blocks() ends such jumps)
            b.feed(start, x)
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                check(state)
                state.set_progress(b.samples / total if total else 0.0, "audio peaks")
                if dur <= req.sparse_above_s:
                    state.set_partial_result(b.snapshot())
        check(state)
        result = b.snapshot(final=True)
        state.set_progress(1.0, "audio peaks")
        return result


def _batched(blocks, min_samples: int):
    """Join contiguous decoded frames into chunks: numpy work per 1024-sample frame costs
    more than the decoding itself on an hour of audio."""
    parts: list[np.ndarray] = []
    start = nxt = 0
    have = 0
    for blk in blocks:
        if parts and blk.start != nxt:
            yield start, np.concatenate(parts, axis=1)
            parts, have = [], 0
        if not parts:
            start = blk.start
        parts.append(blk.samples)
        have += blk.samples.shape[1]
        nxt = blk.start + blk.samples.shape[1]
        if have >= min_samples:
            yield start, np.concatenate(parts, axis=1)
            parts, have = [], 0
    if parts:
        yield start, np.concatenate(parts, axis=1)


def read_samples(request: tuple[str, float, float], state: JobState) -> tuple[float, float, int, np.ndarray]:
    """Job: the raw samples of a short window, for sample-level zoom: ``(t0, t1, rate, rows)``
    with one row per channel and a last row for the mono mix (as the pyramid's levels)."""
    path, t0, t1 = request
    with AudioReader(path) as r:
        x = r.read(t0, t1)
        mix = x.mean(axis=0, keepdims=True)
        return t0, t1, r.sample_rate, np.concatenate([x, mix], axis=0)
