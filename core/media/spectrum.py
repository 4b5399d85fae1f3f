"""Audio-feature basics that every capability computes alike: 16 kHz mono, 32 ms frames every
16 ms, a Hann window, log-mel bands floored at :data:`SILENCE_DB` (:func:`log_mel`), and how
much of a span segments cover.

The anomaly features (``core.anomaly.features``) and the tagging features
(``core.tagging.features``) both frame and filter sound this way, so both read it from here
rather than from each other.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512  # 32 ms at 16 kHz
HOP = 256
SILENCE_DB = -100.0


@lru_cache(maxsize=8)
def mel_filterbank(bands: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT, fmin: float = 50.0) -> np.ndarray:
    """Triangular HTK-mel filters, [bands, n_fft // 2 + 1], each normalised to unit area."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(fmin), mel(sr / 2), bands + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((bands, freqs.size), np.float32)
    for b in range(bands):
        lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[b] = np.clip(np.minimum(up, down), 0, None)
        s = fb[b].sum()
        if s > 0:
            fb[b] /= s
    return fb


@lru_cache(maxsize=1)
def hann() -> np.ndarray:
    """The periodic Hann window of one ``N_FFT`` frame (float32)."""
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def log_mel(x: np.ndarray, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel power (dB) ``[T, bands]`` and frame loudness (dB) ``[T]`` of 16 kHz mono ``x`` in
    ``N_FFT`` frames every ``HOP`` samples, both floored at ``SILENCE_DB`` (float32)."""
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    nf = 1 + (x.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:nf]
    win = hann()
    spec = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 / (win.sum() ** 2 / 4)
    mel = np.maximum(10 * np.log10(spec @ mel_filterbank(bands).T + 1e-10), SILENCE_DB).astype(np.float32)
    db = np.maximum(10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12), SILENCE_DB)
    return mel, db.astype(np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by FFT (for live chunks at 44.1/48 kHz); exact enough for features."""
    if sr_in == sr_out or x.size == 0:
        return x.astype(np.float32, copy=False)
    n_out = max(1, int(round(x.size * sr_out / sr_in)))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = n_out // 2 + 1
    spec = spec[:keep] if keep <= spec.size else np.pad(spec, (0, keep - spec.size))
    return (np.fft.irfft(spec, n_out) * (n_out / x.size)).astype(np.float32)


def coverage(segments: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Fraction of [t0, t1) covered by (start, end) segments (assumed not to overlap much)."""
    if t1 <= t0:
        return 0.0
    tot = sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in segments)
    return float(min(1.0, tot / (t1 - t0)))
