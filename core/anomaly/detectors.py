"""Interpretable detectors beside the network: each says *why* a window is odd.

Every detector maps the feature rows to a per-window score in [0, 1] and, where the score
is above zero, a reason string an analyst can check against the picture or the sound. They
are causal — window t uses windows ≤ t only — so a live camera gets the same answers as a
file. They compare with a :class:`Baseline` taken from the normal footage; without normal
footage the baseline is the whole range (medians and MADs ignore rare events; a class counts
as usual when it is present in at least ``USUAL_SHARE`` of the windows) and the notes say so.

The cues and their rules (thresholds are in the constants below):

``new_class`` (video)      a class never detected in the normal footage, detected with
                           score p: smoothstep(0.5, 0.85, p).
``crowd_jump`` (video)     people count (``n:person``, else all detections) above both the
                           median of the previous ``JUMP_PAST`` windows and the normal 95th
                           percentile by d: smoothstep(1.5, 4, d).
``loud_sound`` (audio)     the loudest 32 ms frame rises d dB above the previous windows'
                           level and e dB above the normal footage's 95th percentile:
                           smoothstep(6, 18, d) · smoothstep(−3, 6, e).
``unusual_speech`` (audio) speech covering f of the window where the normal footage has a
                           speech share u < 0.15: smoothstep(0.25, 0.75, f) · (1 − u / 0.15).
``static_scene`` (video)   the picture has not changed (frame difference < ``STATIC_DIFF``)
                           for r seconds: smoothstep(10, 20, r) — a frozen or covered camera —
                           unless the normal footage itself is mostly static.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.anomaly.features import FeatureSet

USUAL_SHARE = 0.2
JUMP_PAST = 5
STATIC_DIFF = 0.003
STATIC_S = 10.0
SPEECH_RARE = 0.15
DETECTOR_CUES = ("new_class", "crowd_jump", "loud_sound", "unusual_speech", "static_scene")
_STAT_COLUMNS = ("det_total", "n:person", "rms_db", "rms_db_max", "onset_max", "frame_diff_max", "speech")


def smoothstep(a: float, b: float, x: np.ndarray | float) -> np.ndarray:
    t = np.clip((np.asarray(x, np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class Baseline:
    """What "normal" looks like for the detectors (JSON-serialisable)."""

    source: str  # for the analyst: "normal footage 0–30 s" or "the whole range (no normal footage)"
    windows: int
    classes_seen: list[str]
    stats: dict[str, list[float]] = field(default_factory=dict)  # column → [median, MAD, p95, max]
    speech_share: float = 0.0
    static_share: float = 0.0

    @classmethod
    def from_features(cls, fs: FeatureSet, mask: np.ndarray | None = None, source: str = "") -> "Baseline":
        """From the windows in ``mask``; None (no normal footage) → the whole range."""
        whole = mask is None or not np.any(mask)
        m = np.ones(len(fs), bool) if whole else np.asarray(mask, bool)
        n = int(m.sum())
        if whole:
            seen = [c for c in fs.classes if n and np.mean(fs.col(f"n:{c}")[m] > 0) >= USUAL_SHARE]
            source = source or "the whole range (no normal footage marked)"
        else:
            seen = [c for c in fs.classes if (fs.col(f"n:{c}")[m] > 0).any()]
        stats = {}
        for c in _STAT_COLUMNS:
            if fs.has(c) and n:
                x = fs.col(c)[m].astype(np.float64)
                med = float(np.median(x))
                stats[c] = [med, float(np.median(np.abs(x - med))), float(np.percentile(x, 95)), float(x.max())]
        speech = float(fs.col("speech")[m].mean()) if fs.has("speech") and n else 0.0
        static = float(np.mean(fs.col("frame_diff_max")[m] < STATIC_DIFF)) if fs.has("frame_diff_max") and n else 0.0
        return cls(source, n, seen, stats, speech, static)

    def stat(self, col: str, k: int, default: float) -> float:
        s = self.stats.get(col)
        return float(s[k]) if s else default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Baseline":
        return cls(**d)


@dataclass
class CueTrack:
    """One detector's output: score per window and the reason where the score is > 0."""

    scores: np.ndarray
    reasons: list[str]


def _past_median(x: np.ndarray, k: int, fill: float) -> np.ndarray:
    """Median of the k windows before each window (``fill`` where there are none)."""
    out = np.full(len(x), fill, np.float64)
    for t in range(1, len(x)):
        out[t] = float(np.median(x[max(0, t - k):t]))
    return out


def new_class(fs: FeatureSet, base: Baseline) -> CueTrack:
    T = len(fs)
    scores = np.zeros(T)
    reasons = [""] * T
    if not fs.has_video:
        return CueTrack(scores, reasons)
    seen = set(base.classes_seen)
    for c in fs.classes:
        if c in seen:
            continue
        p = fs.col(f"p:{c}")
        s = smoothstep(0.5, 0.85, p)
        for t in np.nonzero(s > scores)[0]:
            scores[t] = s[t]
            reasons[t] = f"new object: {c} (detector score {p[t]:.2f}), never seen in the normal footage"
    return CueTrack(scores, reasons)


def crowd_jump(fs: FeatureSet, base: Baseline) -> CueTrack:
    T = len(fs)
    if not fs.has_video:
        return CueTrack(np.zeros(T), [""] * T)
    col = "n:person" if fs.has("n:person") else "det_total"
    what = "people" if col == "n:person" else "objects"
    x = fs.col(col).astype(np.float64)
    p95 = base.stat(col, 2, 0.0)
    ref = np.maximum(_past_median(x, JUMP_PAST, p95), p95)
    d = x - ref
    s = smoothstep(1.5, 4.0, d)
    reasons = [f"crowd jump: {int(x[t])} {what}, usually about {ref[t]:.0f}" if s[t] > 0 else "" for t in range(T)]
    return CueTrack(s, reasons)


def loud_sound(fs: FeatureSet, base: Baseline) -> CueTrack:
    T = len(fs)
    if not fs.has_audio:
        return CueTrack(np.zeros(T), [""] * T)
    peak = fs.col("rms_db_max").astype(np.float64)
    level = fs.col("rms_db").astype(np.float64)
    p95 = base.stat("rms_db_max", 2, float(np.median(peak)) if T else -60.0)
    before = _past_median(level, 3, base.stat("rms_db", 0, -60.0))
    d = peak - before
    e = peak - p95
    s = smoothstep(6.0, 18.0, d) * smoothstep(-3.0, 6.0, e)
    reasons = [f"sudden loud sound: peak {peak[t]:.0f} dBFS, {d[t]:.0f} dB above the moment before "
               f"and {e[t]:+.0f} dB against the normal footage's loudest" if s[t] > 0 else "" for t in range(T)]
    return CueTrack(s, reasons)


def unusual_speech(fs: FeatureSet, base: Baseline) -> CueTrack:
    T = len(fs)
    if not fs.has_audio or base.speech_share >= SPEECH_RARE:
        return CueTrack(np.zeros(T), [""] * T)
    f = fs.col("speech").astype(np.float64)
    s = smoothstep(0.25, 0.75, f) * (1.0 - base.speech_share / SPEECH_RARE)
    reasons = [f"speech in {f[t] * 100:.0f}% of the window, where there is usually none "
               f"({base.speech_share * 100:.0f}% of the normal footage)" if s[t] > 0 else "" for t in range(T)]
    return CueTrack(s, reasons)


def static_scene(fs: FeatureSet, base: Baseline) -> CueTrack:
    T = len(fs)
    if not fs.has_video or base.static_share >= 0.5:
        return CueTrack(np.zeros(T), [""] * T)
    still = fs.col("frame_diff_max") < STATIC_DIFF
    run = np.zeros(T)
    for t in range(T):
        run[t] = (run[t - 1] + fs.window_s if t else fs.window_s) if still[t] else 0.0
    s = smoothstep(STATIC_S, 2 * STATIC_S, run)
    reasons = [f"the picture has not changed for {run[t]:.0f} s (frozen or covered camera?)" if s[t] > 0 else ""
               for t in range(T)]
    return CueTrack(s, reasons)


DETECTORS = {"new_class": new_class, "crowd_jump": crowd_jump, "loud_sound": loud_sound,
             "unusual_speech": unusual_speech, "static_scene": static_scene}


def detector_scores(fs: FeatureSet, base: Baseline) -> dict[str, CueTrack]:
    """Every detector's scores and reasons for the windows of ``fs``."""
    return {name: fn(fs, base) for name, fn in DETECTORS.items()}
