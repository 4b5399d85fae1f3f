"""Features per time window: what the picture and the sound did in each 0.5–1 s.

Why windows and not frames: an anomaly is something that *happens* — a bang, a bus that
pulls in, a crowd that forms — and one row per second is enough to say when, small enough
to train a network on minutes of footage on a CPU, and the same unit live and on files.

One code path: :class:`WindowFeaturizer.push` turns one window's frames, detections and
audio into one row. The file pass (``core.anomaly.pipeline.FileFeaturizer``) feeds it from a
decoder, reusing stored perception results when their settings match
(:func:`stored_perception`); a live source feeds it from chunks.

Columns (named, so models and detectors never depend on positions):

- vision: ``det_total``, ``track_enter``/``track_exit`` (track ids that appeared/vanished
  since the previous window), ``box_motion`` (mean centre shift of tracked boxes, in frame
  diagonals), ``box_area`` (boxes' area / frame area), ``frame_diff``/``frame_diff_max``
  (mean absolute difference of 64×36 grey frames, 0..1), ``brightness``, then ``n:<class>``
  (count) and ``p:<class>`` (best score) for every class the detector knows;
- audio: ``rms_db`` (window loudness, dBFS), ``rms_db_max`` (loudest 32 ms frame), ``onset_mean``
  /``onset_max`` (spectral flux of the log-mel spectrum, dB per band), ``vad`` and ``speech``
  (fraction of the window with voice / with transcribed speech), ``mel:NN`` (mean log-mel
  power per band, dB); with ``FeatureConfig.audio_embed`` (off by default) also ``emb:NNN``: a
  user's Wav2Vec2 / HuBERT encoder (``models/backends/audio_embed.py``) averaged over the window,
  the audio features of the anomaly paper's second version, fed to the fusion network's audio token.

Objects that are there (issue #17): with ``FeatureConfig.confirm`` (the default) the object
columns (``det_total``, ``track_*``, ``box_*``, ``n:*``, ``p:*``) count *confirmed* detections
only (:mod:`core.perception.confirm`: a moving track, or a second look that agrees, and not one
of the scene's learned confusions). The file pass confirms with a few windows of hindsight
(``core.anomaly.evidence.ObjectConfirmation``); a live source causally (a detection counts
from the window its track is confirmed in). Unconfirmed detections are kept as weak evidence,
never a cue. ``confirm=False`` is the old behaviour (every detection counts), kept as the
baseline that ``bench/anomaly.py`` measures against.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from core.media.spectrum import N_FFT, SAMPLE_RATE, SILENCE_DB, coverage, log_mel, resample

log = logging.getLogger(__name__)

FEATURES_VERSION = 2  # 2: object columns from confirmed detections (FeatureConfig.confirm)
GREY_SIZE = (64, 36)  # frame differences on thumbnails: cheap, and blind to compression noise
AUDIO_CHUNK_S = 60.0  # the file pass decodes and runs the VAD a minute at a time
DECODE_SIZE = (960, 540)  # the detector sees 300×300 anyway
VIDEO_BASE = ("det_total", "track_enter", "track_exit", "box_motion", "box_area", "frame_diff",
              "frame_diff_max", "brightness")
VAD_CONTEXT_S = 4.0  # audio before a live window that voice-activity detection also sees
AUDIO_BASE = ("rms_db", "rms_db_max", "onset_mean", "onset_max", "vad", "speech")
FEATURES_KIND = "anomaly/features"
GATE_MARGIN_S = 12.0  # the network's context (8 windows of ≤ 1 s) and some before each change


@dataclass(frozen=True)
class FeatureConfig:
    """What decides a feature row: equal configs give equal features (and reuse them)."""

    window_s: float = 1.0
    motion_samples: int = 4  # frames per window for the frame differences
    mel_bands: int = 32
    detector: str | None = "ssd-mobilenet-v2-coco"  # catalogue name; None: no detections
    vad: str | None = "silero-vad"
    asr: str | None = None  # e.g. "whisper-tiny": transcribe in the pass (slower); None: stored only
    track: bool = True
    confirm: bool = True  # object columns from confirmed detections only (see the module docstring)
    # an audio encoder of the catalogue (task "audio-embed": "wav2vec2-user", "hubert-user") and the
    # user's folder it loads from; None: no embedding columns (the default)
    audio_embed: str | None = None
    audio_embed_path: str | None = None
    # change gating (core.media.changes): over a long range only the windows where the picture or
    # the sound changes (and one every GateParams.static_every_s, on a keyframe) are computed; the
    # others hold the last computed row. Off: every window.
    gate: bool = True
    gate_params: Any = None  # core.media.changes.GateParams; None: its defaults

    def __post_init__(self) -> None:
        if not 0.5 <= float(self.window_s) <= 1.0:
            raise ValueError(f"window_s must be between 0.5 and 1.0 s, not {self.window_s}")
        if not 1 <= int(self.motion_samples) <= 30:
            raise ValueError("motion_samples must be 1..30")
        if not 16 <= int(self.mel_bands) <= 64:
            raise ValueError("mel_bands must be 16..64")

    def params(self) -> dict[str, Any]:
        emb = {"audio_embed": self.audio_embed, "audio_embed_path": self.audio_embed_path} if self.audio_embed else {}
        return {**emb, "version": FEATURES_VERSION, "window_s": float(self.window_s),
                "motion_samples": int(self.motion_samples), "mel_bands": int(self.mel_bands),
                "detector": self.detector, "vad": self.vad, "asr": self.asr, "track": bool(self.track),
                "confirm": bool(self.confirm), **({"gate": self.gates().params()} if self.gate else {})}

    def gates(self) -> Any:
        """The change gate's settings (core.media.changes.GateParams). The pass widens each active
        stretch by GATE_MARGIN_S: the network judges a window from the 8 before it, and those
        must be footage, not held repeats (core.anomaly.score.judged_only)."""
        from core.media.changes import GateParams
        return self.gate_params or GateParams(margin_s=GATE_MARGIN_S)


def video_columns(classes: Sequence[str]) -> tuple[str, ...]:
    return VIDEO_BASE + tuple(f"n:{c}" for c in classes) + tuple(f"p:{c}" for c in classes)


def audio_columns(bands: int, embed_dim: int = 0) -> tuple[str, ...]:
    return AUDIO_BASE + tuple(f"mel:{i:02d}" for i in range(bands)) + tuple(f"emb:{i:03d}" for i in range(embed_dim))


def sanitize(values: np.ndarray, columns: Sequence[str]) -> tuple[np.ndarray, str | None]:
    """Replace NaN by the column's median and ±inf by its finite extremes; say so.

    Why not zeros: 0 dB or a zero count can be far from a column's normal range and would
    itself look like an anomaly.
    """
    values = np.asarray(values, np.float32)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values, None
    out = values.copy()
    cols = np.nonzero(bad.any(axis=0))[0] if out.ndim == 2 else []
    for j in cols:
        col = out[:, j]
        fin = col[np.isfinite(col)]
        med, lo, hi = (float(np.median(fin)), float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0, 0.0)
        col[np.isnan(col)] = med
        col[np.isposinf(col)] = hi
        col[np.isneginf(col)] = lo
    names = ", ".join(columns[j] for j in cols[:6]) + ("…" if len(cols) > 6 else "")
    msg = (f"{int(bad.sum())} non-finite feature values (NaN/inf) in {len(cols)} column(s) ({names}) "
           "were replaced by the column's median or extremes")
    log.warning("%s", msg)
    return out, msg


@dataclass
class FeatureSet:
    """Feature rows of one media range: ``values[i]`` describes ``[times[i], times[i] + window_s)``."""

    times: np.ndarray  # [T] window starts, media seconds
    values: np.ndarray  # [T, D] float32
    columns: tuple[str, ...]
    window_s: float
    has_video: bool
    has_audio: bool
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    # gated passes: which windows were computed (the others hold the last computed row); None: all
    computed: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, np.float64).reshape(-1)
        if self.computed is not None:
            self.computed = np.asarray(self.computed, bool).reshape(-1)[:len(self.times)]
        self.values = np.asarray(self.values, np.float32).reshape(len(self.times), len(self.columns))
        self.columns = tuple(self.columns)
        self.values, msg = sanitize(self.values, self.columns)
        if msg and msg not in self.notes:
            self.notes.append(msg)

    def __len__(self) -> int:
        return len(self.times)

    def has(self, name: str) -> bool:
        return name in self.columns

    def col(self, name: str, default: float = 0.0) -> np.ndarray:
        """One column by name; a column this set lacks reads as ``default`` everywhere."""
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            return np.full(len(self.times), default, np.float32)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c[2:] for c in self.columns if c.startswith("n:"))

    def inside(self, t0: float, t1: float) -> np.ndarray:
        """Boolean mask of the windows lying inside [t0, t1] (a window may end exactly at t1)."""
        return (self.times >= t0 - 1e-6) & (self.times + self.window_s <= t1 + 1e-6)

    def meta(self) -> dict[str, Any]:
        start = float(self.times[0]) if len(self.times) else 0.0
        out = {"columns": list(self.columns), "start": start, "window_s": self.window_s,
               "has_video": self.has_video, "has_audio": self.has_audio, "notes": list(self.notes),
               "params": self.params}
        if self.computed is not None:  # the held windows as [first, end) index runs
            d = np.diff(np.concatenate([[0], (~self.computed).astype(np.int8), [0]]))
            out["held"] = [[int(a), int(b)] for a, b in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0])]
        return out

    @classmethod
    def from_stored(cls, values: np.ndarray, meta: dict[str, Any]) -> "FeatureSet":
        w = float(meta["window_s"])
        times = float(meta["start"]) + np.arange(values.shape[0]) * w
        computed = None
        if "held" in meta:
            computed = np.ones(values.shape[0], bool)
            for a, b in meta["held"]:
                computed[int(a):int(b)] = False
        return cls(times, values, tuple(meta["columns"]), w, bool(meta["has_video"]), bool(meta["has_audio"]),
                   list(meta.get("notes", [])), dict(meta.get("params", {})), computed)


@dataclass
class WindowInput:
    """Everything one window brought; the featurizer fills in what is missing.

    ``frames``: RGB uint8 pictures of the window in time order (a few are enough; the first
    is the one the detector sees when ``detections`` is None). ``audio``: mono float32
    samples covering the window, at ``audio_rate``. ``vad``/``speech``: fractions of the
    window with voice/transcribed speech when known (the file pass runs the VAD a minute at a
    time); None runs the featurizer's VAD on ``audio``.
    """

    start: float
    end: float
    frames: Sequence[np.ndarray] = ()
    detections: Sequence[Any] | None = None  # models.types.Detection, boxes in frame pixels
    frame_size: tuple[int, int] | None = None  # (w, h) the boxes refer to, when no frames are given
    audio: np.ndarray | None = None
    audio_rate: int = SAMPLE_RATE
    vad: float | None = None
    speech: float | None = None
    objects: bool = True  # False: leave the object columns for a later ``WindowFeaturizer.objects`` call
    embedding: np.ndarray | None = None  # the audio encoder's row for this window (None: computed here)


class WindowFeaturizer:
    """Turns one window at a time into a feature row; keeps the little state that spans windows
    (last grey frame, previous tracks, last spectrum frame, a tracker).

    ``detector``/``vad``/``tracker`` are optional model objects (``models.catalogue.load_model``
    results and ``models.tracking.Tracker``); without them, pass detections/VAD in the input.
    ``confirmer``: a ``core.perception.confirm.Confirmer`` that this featurizer feeds every
    window's first frame and detections (live: a detection counts in the object columns once
    its track is confirmed); None counts the detections it is given.
    """

    def __init__(self, cfg: FeatureConfig, *, has_video: bool = True, has_audio: bool = True,
                 classes: Sequence[str] | None = None, detector: Any = None, vad: Any = None,
                 tracker: Any = None, confirmer: Any = None, embedder: Any = None) -> None:
        self.cfg, self.has_video, self.has_audio = cfg, has_video, has_audio
        self.detector, self.vad, self.tracker = detector, vad, tracker  # model objects, or None
        self.confirmer = confirmer
        self.embedder = embedder  # models.types.AudioEmbedder (cfg.audio_embed), or None
        self.unconfirmed = 0  # detections left out of the object columns (live confirmation)
        if classes is None:
            classes = tuple(dict.fromkeys(getattr(detector, "classes", ()) or ()))
        self.classes = tuple(classes)
        cols: tuple[str, ...] = ()
        if has_video:
            cols += video_columns(self.classes)
        if has_audio:
            cols += audio_columns(cfg.mel_bands, int(getattr(embedder, "dim", 0)) if embedder is not None else 0)
        self.columns = cols
        self._index = {c: i for i, c in enumerate(cols)}
        self.nonfinite = 0
        self.reset()

    def reset(self) -> None:
        """Forget the previous window (a seek, a new file, a reconnect)."""
        self._grey: np.ndarray | None = None
        self._tracks: dict[int, tuple[float, float]] = {}
        self._prev_total = 0
        self._last_mel: np.ndarray | None = None
        self._vad_context = np.zeros(0, np.float32)  # the audio before this window (live VAD)
        if self.tracker is not None and hasattr(self.tracker, "reset"):
            self.tracker.reset()

    def push(self, w: WindowInput) -> np.ndarray:
        """The feature row of one window (float32, ``len(self.columns)``), finite."""
        row = np.zeros(len(self.columns), np.float32)
        if self.has_video:
            self._video(w, row)
        if self.has_audio:
            self._audio(w, row)
        bad = ~np.isfinite(row)
        if bad.any():
            self.nonfinite += int(bad.sum())
            log.warning("window at %.2f s: %d non-finite feature values set to 0", w.start, int(bad.sum()))
            row[bad] = 0.0
        return row

    # -- vision -------------------------------------------------------------------------
    def _video(self, w: WindowInput, row: np.ndarray) -> None:
        import cv2

        ix = self._index
        frames = [np.asarray(f) for f in w.frames if f is not None]
        size = w.frame_size
        if frames:
            size = (frames[0].shape[1], frames[0].shape[0])
        dets = list(w.detections) if w.detections is not None else None
        if dets is None and self.detector is not None and frames:
            dets = self.detector.detect([frames[0]])[0]
        dets = dets or []
        if self.tracker is not None and size and not any(getattr(d, "track_id", None) is not None for d in dets):
            dets = self.tracker.update(dets, (size[1], size[0]))
        if self.confirmer is not None and w.objects:
            tracks = self.confirmer.update(w.start, frames[0] if frames else None, dets)
            sc, fsize = getattr(self.confirmer, "confusions", None), getattr(self.confirmer, "frame_size", None)
            if sc is not None and sc.suppressed and fsize:
                for tr in tracks:  # the scene's suppressed confusions count as no object
                    c = sc.matching(tr, fsize)
                    tr.confusion = None if c is None else c.describe()
            kept = [d for d, tr in zip(dets, tracks) if tr.confirmed]
            self.unconfirmed += len(dets) - len(kept)
            dets = kept
        greys = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), GREY_SIZE, interpolation=cv2.INTER_AREA)
                 .astype(np.float32) / 255.0 for f in frames]
        diffs = []
        prev = self._grey
        for g in greys:
            if prev is not None:
                diffs.append(float(np.mean(np.abs(g - prev))))
            prev = g
        if greys:
            self._grey = greys[-1]
            row[ix["brightness"]] = float(np.mean([g.mean() for g in greys]))
        row[ix["frame_diff"]] = float(np.mean(diffs)) if diffs else 0.0
        row[ix["frame_diff_max"]] = float(np.max(diffs)) if diffs else 0.0
        if w.objects:
            self.objects(row, dets, size)

    def objects(self, row: np.ndarray, dets: Sequence[Any], size: tuple[int, int] | None) -> None:
        """Fill the object columns of ``row`` from ``dets`` (boxes in pixels of a ``size`` frame)
        and advance the object state. The file pass calls it a few windows late, once it knows
        which detections are confirmed (the window's row was pushed with ``objects=False``)."""
        ix = self._index
        if not self.has_video:
            return
        dets = list(dets)
        row[ix["det_total"]] = len(dets)
        area = 0.0
        fw, fh = (float(size[0]), float(size[1])) if size else (1.0, 1.0)
        diag = math.hypot(fw, fh) or 1.0
        tracks: dict[int, tuple[float, float]] = {}
        for d in dets:
            x1, y1, x2, y2 = (float(v) for v in d.box)
            area += max(0.0, x2 - x1) * max(0.0, y2 - y1) / max(fw * fh, 1.0)
            n, p = ix.get(f"n:{d.label}"), ix.get(f"p:{d.label}")
            if n is not None:
                row[n] += 1
                row[p] = max(row[p], float(d.score))
            tid = getattr(d, "track_id", None)
            if tid is not None:
                tracks[int(tid)] = ((x1 + x2) / 2, (y1 + y2) / 2)
        row[ix["box_area"]] = min(area, 4.0)
        if tracks or self._tracks:
            shared = tracks.keys() & self._tracks.keys()
            row[ix["track_enter"]] = len(tracks.keys() - self._tracks.keys())
            row[ix["track_exit"]] = len(self._tracks.keys() - tracks.keys())
            if shared:
                row[ix["box_motion"]] = float(np.mean([math.hypot(tracks[k][0] - self._tracks[k][0],
                                                                  tracks[k][1] - self._tracks[k][1]) / diag
                                                       for k in shared]))
        else:  # no track ids at all: count changes stand in for entries and exits
            row[ix["track_enter"]] = max(0, len(dets) - self._prev_total)
            row[ix["track_exit"]] = max(0, self._prev_total - len(dets))
        self._tracks = tracks
        self._prev_total = len(dets)

    # -- audio --------------------------------------------------------------------------
    def _audio(self, w: WindowInput, row: np.ndarray) -> None:
        ix = self._index
        n_win = max(N_FFT, int(round((w.end - w.start) * SAMPLE_RATE)))
        x = np.zeros(0, np.float32) if w.audio is None else np.asarray(w.audio, np.float32)
        if x.ndim == 2:  # [channels, n]
            x = x.mean(axis=0)
        x = resample(x.reshape(-1), int(w.audio_rate))
        if x.size and not np.isfinite(x).all():
            log.warning("window at %.2f s: non-finite audio samples set to 0", w.start)
            self.nonfinite += int((~np.isfinite(x)).sum())
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.clip(x[:n_win], -1.0, 1.0)
        if x.size < n_win:
            x = np.pad(x, (0, n_win - x.size))
        mel, frame_db = log_mel(x, self.cfg.mel_bands)
        row[ix["rms_db"]] = max(SILENCE_DB, 10 * math.log10(float(np.mean(x.astype(np.float64) ** 2)) + 1e-12))
        row[ix["rms_db_max"]] = float(frame_db.max())
        # spectral flux: how much louder each band got since the previous 16 ms frame
        first = mel[:1] if self._last_mel is None else self._last_mel[None]
        flux = np.maximum(mel - np.vstack([first, mel[:-1]]), 0.0).mean(axis=1)
        self._last_mel = mel[-1]
        row[ix["onset_mean"]] = float(flux.mean())
        row[ix["onset_max"]] = float(flux.max())
        m0 = ix["mel:00"]
        row[m0:m0 + self.cfg.mel_bands] = mel.mean(axis=0)
        if self.embedder is not None:
            e0, dim = ix["emb:000"], int(self.embedder.dim)
            emb = w.embedding
            if emb is None:  # live: the window's own audio, one stretch
                _t, feats = self.embedder.embed(x, hop_s=x.size / SAMPLE_RATE)
                emb = feats.mean(axis=0) if len(feats) else None
            if emb is not None and np.size(emb) == dim:
                row[e0:e0 + dim] = np.asarray(emb, np.float32).reshape(-1)
        vad = w.vad
        if vad is None and self.vad is not None and w.audio is not None:
            # Window by window (live): VAD sees the last VAD_CONTEXT_S before the window too. On
            # a lone 0.5 s window Silero calls music speech (72% against 0% for the same audio
            # in the file pass, which runs VAD over long chunks).
            ctx = self._vad_context
            y = np.concatenate([ctx, x]) if ctx.size else x
            segs = self.vad.segments(y)
            off = ctx.size / SAMPLE_RATE
            vad = coverage([(s.start, s.end) for s in segs], off, off + x.size / SAMPLE_RATE)
            self._vad_context = y[-int(VAD_CONTEXT_S * SAMPLE_RATE):]
        row[ix["vad"]] = float(vad or 0.0)
        row[ix["speech"]] = float(w.speech if w.speech is not None else (vad or 0.0))


# -- stored perception (reuse) --------------------------------------------------------------

@dataclass
class StoredPerception:
    """Perception results already in the project with settings that match this pass."""

    detections: dict[float, list] | None = None  # window start (rounded to ms) → detections
    frame_size: tuple[int, int] | None = None
    vad: list[tuple[float, float]] | None = None
    transcript: list[tuple[float, float]] | None = None
    notes: list[str] = field(default_factory=list)


def stored_perception(project: Any, media_id: int, path: str, cfg: FeatureConfig, start: float,
                      end: float, duration: float) -> StoredPerception:
    """Detections at the window rate, voice activity and a transcript, if the project holds
    them for exactly this range (and detector settings: fps = 1 / window), else None each."""
    from core.perception import ops
    from core.perception.analysis import AnalysisRequest
    from models.types import Detection

    out = StoredPerception()
    names = [n for n in (cfg.detector, cfg.vad, "whisper-base", "whisper-tiny") if n]
    req = AnalysisRequest(path, models=tuple(dict.fromkeys(names)), fps=1.0 / cfg.window_s, start=start,
                          end=end, track=cfg.track)
    runs = ops.cached_analysis(project, media_id, req, duration)
    if not runs:
        return out
    tracks = {(t.kind, t.name, t.run_id): t for t in ops.load_tracks(project, media_id)}
    det_run = runs.get(cfg.detector) if cfg.detector else None
    boxes = tracks.get(("boxes", cfg.detector, det_run)) if det_run else None
    if boxes is not None:
        by_t: dict[float, list] = {}
        for it in boxes.items:
            d = it.data
            by_t.setdefault(round(it.start, 3), []).append(Detection(
                tuple(float(v) for v in d["box"]), it.label, float(it.confidence),
                track_id=d.get("track")))
            if d.get("size"):
                out.frame_size = (int(d["size"][0]), int(d["size"][1]))
        out.detections = by_t
        out.notes.append(f"detections reused from the stored {cfg.detector} run #{det_run}")
    vad_run = runs.get(cfg.vad) if cfg.vad else None
    vad = tracks.get(("speech", "voice activity", vad_run)) if vad_run else None
    if vad is not None:
        out.vad = [(i.start, i.end) for i in vad.items]
        out.notes.append(f"voice activity reused from the stored run #{vad_run}")
    for name in ("whisper-base", "whisper-tiny"):
        run = runs.get(name)
        tr = tracks.get(("speech", "transcript", run)) if run else None
        if tr is not None:
            out.transcript = [(i.start, i.end) for i in tr.items]
            out.notes.append(f"speech from the stored {name} transcript (run #{run})")
            break
    return out


def feature_params(cfg: FeatureConfig, start: float, end: float, confusions: str = "") -> dict[str, Any]:
    """What decides a stored feature matrix: the config, the range and (with confirmation)
    the digest of the scene confusions that were suppressed (:func:`confusions_digest`)."""
    p = {**cfg.params(), "start": round(start, 3), "end": round(end, 3)}
    if confusions:
        p["confusions"] = confusions
    return p


def confusions_digest(confusions: Any) -> str:
    """A short digest of a scene's suppressed confusions ("" when none): features computed
    with other suppressions are other features."""
    rows = [] if confusions is None else [c for c in confusions.to_json() if c["suppressed"]]
    if not rows:
        return ""
    rows = sorted((r["label"], r["box"]) for r in rows)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:12]


def features_key(cfg: FeatureConfig, start: float, end: float, confusions: str = "") -> str:
    """The project array key for these settings: several configurations can coexist."""
    p = feature_params(cfg, start, end, confusions)
    return "anomaly/features/" + hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16]


def _gate_from(stored: Any) -> Any:
    """The GateParams a stored ``params["gate"]`` names (None: none stored)."""
    if not isinstance(stored, dict):
        return None
    from dataclasses import fields
    from core.media.changes import GateParams
    return GateParams(**{f.name: stored[f.name] for f in fields(GateParams) if f.name in stored})


def load_features(project: Any, media_id: int, cfg: FeatureConfig, start: float, end: float,
                  confusions: str = "") -> FeatureSet | None:
    """Stored features for exactly these settings (``confusions``: :func:`confusions_digest`
    of the scene's suppressed confusions), or None (then they are computed)."""
    got = project.get_array(media_id, features_key(cfg, start, end, confusions))
    if got is None:
        return None
    values, meta = got
    want = feature_params(cfg, start, end, confusions)
    if meta.get("params") != want:
        return None
    try:
        return FeatureSet.from_stored(values, meta)
    except (KeyError, TypeError, ValueError) as e:
        log.info("stored anomaly features not usable (%s); recomputing", e)
        return None


def store_features(project: Any, media_id: int, fs: FeatureSet, *, started_at: float, duration_s: float) -> int:
    """Record the run (provenance) and the feature matrix; returns the run id."""
    from models.catalogue import provenance_of

    p = fs.params
    devices = provenance_of([p.get(k) for k in ("detector", "vad", "asr", "audio_embed") if isinstance(p.get(k), str)])
    with project.batch():  # the run and what it produced commit together
        run_id = project.record_run(kind=FEATURES_KIND, producer="core.anomaly.features", version=str(FEATURES_VERSION),
                                    params={**p, **devices}, media_id=media_id, started_at=started_at,
                                    duration_s=duration_s)
        project.put_array(media_id, features_key(FeatureConfig(**{k: p[k] for k in (
            "window_s", "motion_samples", "mel_bands", "detector", "vad", "asr", "track", "confirm")},
            audio_embed=p.get("audio_embed"), audio_embed_path=p.get("audio_embed_path"),
            gate="gate" in p, gate_params=_gate_from(p.get("gate"))),
            p["start"], p["end"], p.get("confusions", "")),
            fs.values.astype(np.float32), meta=fs.meta(), run_id=run_id)
    return run_id
