"""The final anomaly score: the detectors and the network's calibrated z-score, combined.

Each cue c gives a score s_c in [0, 1] per window (the network's cues map its robust
z-score through smoothstep(Z_LO, Z_HI, z)). With weights w_c the final score is a
weighted noisy-OR::

    score = 1 − Π_c (1 − min(1, w_c · s_c))

Why noisy-OR: one strong cue is enough to call a window anomalous (a bang needs no
corroboration), two moderate cues together count for more than either, and the result stays
in [0, 1] so a sensitivity maps onto a fixed threshold. ``min(1, w_c · s_c)`` is the cue's
*contribution*; the largest one names the event's reason and modality.

Default weights (:data:`DEFAULT_WEIGHTS`): the specific detectors are trusted most (a new
object class 0.9, a sudden loud sound 0.85); the crowd, speech and frozen-picture cues 0.6;
the network 0.6 per modality, because its error says *that* a window is unusual but not
what is — alone it reaches the default threshold (0.55) only when it is very sure (z ≳ 11). The analyst's
confirm/dismiss feedback moves these weights (rule in :mod:`core.anomaly.events`).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from core.anomaly.detectors import Baseline, detector_scores, smoothstep
from core.anomaly.features import FeatureSet

Z_LO, Z_HI = 4.0, 12.0


@dataclass(frozen=True)
class Cue:
    name: str
    modality: str  # "video" | "audio"
    title: str
    weight: float


CUES: dict[str, Cue] = {c.name: c for c in (
    Cue("new_class", "video", "new object class", 0.9),
    Cue("crowd_jump", "video", "crowd count jump", 0.6),
    Cue("static_scene", "video", "static scene", 0.6),
    Cue("loud_sound", "audio", "sudden loud sound", 0.85),
    Cue("unusual_speech", "audio", "unusual speech", 0.6),
    Cue("network_video", "video", "unusual picture (network)", 0.6),
    Cue("network_audio", "audio", "unusual sound (network)", 0.6),
)}
DEFAULT_WEIGHTS: dict[str, float] = {c.name: c.weight for c in CUES.values()}


def sensitivity_threshold(sensitivity: float) -> float:
    """Sensitivity 0..1 → score threshold 0.85..0.25 (0.5 → 0.55): higher finds more."""
    return float(0.85 - 0.6 * min(1.0, max(0.0, float(sensitivity))))


def readable(col: str) -> str:
    """A feature column as words, for reasons."""
    if col == "n:_unseen":
        return "objects of classes absent from the normal footage"
    if col.startswith("n:"):
        return f"number of {col[2:]}"
    if col.startswith("mel:"):
        return f"sound in mel band {int(col[4:])}"
    if col.startswith("emb:"):
        return f"audio encoder feature {int(col[4:])}"
    return {"det_total": "number of objects", "track_enter": "objects entering", "track_exit": "objects leaving",
            "box_motion": "object motion", "box_area": "object size", "frame_diff": "picture change",
            "frame_diff_max": "sudden picture change", "brightness": "brightness", "rms_db": "loudness",
            "rms_db_max": "peak loudness", "onset_mean": "onsets", "onset_max": "sharp onset",
            "vad": "voice activity", "speech": "speech"}.get(col, col)


@dataclass
class ScoreCurve:
    """Per-window final score, each cue's weighted contribution and reason, the network's z."""

    times: np.ndarray
    window_s: float
    score: np.ndarray
    contrib: dict[str, np.ndarray]
    reasons: dict[str, list[str]]
    z: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    # modality -> real experts per token the network spent on each window (a mixture of
    # experts only; empty for dense blocks and without a network)
    experts: dict[str, np.ndarray] = field(default_factory=dict)

    def top_cue(self, i: int) -> str:
        best = max(self.contrib, key=lambda c: self.contrib[c][i], default="")
        return best if best and self.contrib[best][i] > 0 else ""

    def window(self, i: int) -> tuple[dict[str, float], dict[str, str]]:
        return ({c: float(v[i]) for c, v in self.contrib.items()},
                {c: r[i] for c, r in self.reasons.items()})


def combine(cue_scores: Mapping[str, np.ndarray],
            weights: Mapping[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted noisy-OR of the cues: (final score, contribution per cue)."""
    n = len(next(iter(cue_scores.values()))) if cue_scores else 0
    keep = np.ones(n)
    contrib = {}
    for c, s in cue_scores.items():
        k = np.minimum(1.0, float(weights.get(c, DEFAULT_WEIGHTS.get(c, 0.5))) * np.asarray(s, np.float64))
        contrib[c] = k
        keep *= 1.0 - k
    return 1.0 - keep, contrib


def network_cues(z: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for m in ("video", "audio"):
        zz = np.asarray(z.get(m, []), np.float64)
        s = smoothstep(Z_LO, Z_HI, zz)
        tops = z.get(f"{m}_top", [""] * len(zz))
        what = "picture" if m == "video" else "sound"
        out[f"network_{m}"] = (s, [f"{what} unlike the normal footage (network error z = {zz[i]:.1f}, most in "
                                   f"{readable(tops[i])})" if s[i] > 0 else "" for i in range(len(zz))])
    return out


def judged_only(z: Mapping[str, Any], computed: np.ndarray, context: int) -> dict[str, Any]:
    """The network's z-scores where it judged real footage: a window of a gated pass counts only
    when it and the ``context`` windows before it were computed (a held window repeats an
    earlier row, and a context of repeats is not footage the network learned from). Elsewhere
    the network is silent (z 0); the detectors' cues still read every window."""
    c = np.asarray(computed, bool)
    run = np.zeros(len(c), np.int64)  # computed windows in a row, ending here
    k = 0
    for i, ok in enumerate(c):
        k = k + 1 if ok else 0
        run[i] = k
    ok = run >= min(context, len(c))
    out = dict(z)
    for m in ("video", "audio"):
        if m in out:
            v = np.asarray(out[m], np.float64).copy()
            if len(v) == len(ok):
                v[~ok] = 0.0
                out[m] = v
                tops = out.get(f"{m}_top")
                if tops is not None:
                    out[f"{m}_top"] = [t if ok[i] else "" for i, t in enumerate(tops)]
    return out


def score_features(fs: FeatureSet, base: Baseline, model: Any = None,
                   weights: Mapping[str, float] | None = None, z: Mapping[str, Any] | None = None) -> ScoreCurve:
    """Score every window of ``fs``. ``model`` (a trained model, or None: detectors only)
    gives the network's z-scores unless ``z`` is passed precomputed."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    cues = {k: (v.scores, v.reasons) for k, v in detector_scores(fs, base).items()}
    if z is None and model is not None:
        z = model.zscores(fs)
        if fs.computed is not None:
            z = judged_only(z, fs.computed, int(model.config.get("net", {}).get("context", 8)))
    zz: dict[str, np.ndarray] = {}
    spent: dict[str, np.ndarray] = {}
    if z is not None:
        cues.update(network_cues(z))
        zz = {m: np.asarray(z[m], np.float64) for m in ("video", "audio") if m in z}
        spent = {m: np.asarray(z[f"experts_{m}"], np.float64) for m in ("video", "audio") if f"experts_{m}" in z}
    final, contrib = combine({k: v[0] for k, v in cues.items()}, w)
    return ScoreCurve(fs.times.copy(), fs.window_s, final, contrib, {k: v[1] for k, v in cues.items()}, zz, w,
                      spent)


@dataclass(frozen=True)
class WindowScore:
    time: float
    score: float
    contrib: dict[str, float]
    reasons: dict[str, str]
    z: dict[str, float]
    experts: dict[str, float] = field(default_factory=dict)  # real experts per token, per modality


class OnlineScorer:
    """Scores windows one at a time as a live source delivers them (same rules as files).

    Keeps the last ``history`` rows: enough for the network's context, the crowd cue's
    past median and a frozen-picture run of 2 × ``STATIC_S``.
    """

    def __init__(self, columns: Sequence[str], window_s: float, baseline: Baseline, model: Any = None,
                 weights: Mapping[str, float] | None = None, *, has_video: bool = True, has_audio: bool = True,
                 history: int = 64) -> None:
        self.columns = tuple(columns)
        self.window_s = float(window_s)
        self.baseline = baseline
        self.model = model
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.has_video, self.has_audio = has_video, has_audio
        self.history = max(history, 8)
        self._rows: collections.deque = collections.deque(maxlen=self.history)

    def remember(self, t: float, row: np.ndarray) -> None:
        """Add a past window without scoring it (history for the causal cues and the network)."""
        self._rows.append((float(t), np.asarray(row, np.float32)))

    def push(self, t: float, row: np.ndarray) -> WindowScore:
        self.remember(t, row)
        times = np.array([r[0] for r in self._rows])
        fs = FeatureSet(times, np.vstack([r[1] for r in self._rows]), self.columns, self.window_s,
                        self.has_video, self.has_audio)
        z = None
        if self.model is not None:
            zz = self.model.zscores(fs, np.array([len(fs) - 1]))
            z = {k: (v if isinstance(v, list) else np.asarray(v)) for k, v in zz.items()}
            n = len(fs)
            z = {k: ([""] * (n - 1) + list(v) if isinstance(v, list) else np.concatenate([np.zeros(n - 1), v]))
                 for k, v in z.items()}
        curve = score_features(fs, self.baseline, None, self.weights, z)
        i = len(fs) - 1
        contrib, reasons = curve.window(i)
        return WindowScore(float(t), float(curve.score[i]), contrib, reasons,
                           {m: float(v[i]) for m, v in curve.z.items()},
                           {m: float(v[i]) for m, v in curve.experts.items()})
