"""Per-shot features in three modalities — visual, audio, text — any of which may be missing.

``shot_features(path, shots, state, models=FeatureConfig())`` describes every shot with one
float32 row per modality and a presence mask per modality, plus a JSON-able ``info`` dict
per shot with the human-readable parts (top ImageNet labels, COCO objects, faces, words,
on-screen text) that tags are named from.

- visual (a few frames per shot, found by seeking, never by decoding the whole file):
  EfficientNet-Lite3's 1000 ImageNet probabilities (mean over the frames), the SSD COCO
  class histogram (mean count per frame of the detections a Confirmer confirms over the
  shot's frames, see ``_confirmed``; the others are kept in ``info["unconfirmed"]``), faces (MTCNN; optional, the costliest model),
  colour (saturation-weighted hue, saturation, brightness, contrast, colourfulness), motion
  (grey-level change between each sampled frame and the next one, global shift by phase
  correlation, change from the first to the last sample), on-screen text area, shot length;
- audio (the file decoded once at 16 kHz mono, a minute at a time): log-mel mean/std per
  band, loudness (RMS dB, mean/max/std of 32 ms frames), spectral flux, voice share (Silero
  VAD), transcribed-speech share, and a cheap speaker fingerprint: MFCC mean/std over the
  voiced frames. The mel filterbank and framing are the anomaly features' (one definition);
- text: the transcript words that fall in the shot (faster-whisper, run once per file on
  minute chunks cut at shot boundaries, so a shot's words come from one pass) and the text
  read in the middle frame (RapidOCR), embedded together with MiniLM (384-d).

Models are held by :mod:`models.loaded` (once per thread); a :class:`ModelPool` counts their use;
results are stored per media file with the run that made them (``store_features``) and
reused when the parameters — model names, frame count, the shots themselves — are equal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from core.media.spectrum import HOP, N_FFT, SILENCE_DB, coverage, log_mel
from core.jobs import JobState, check
from core.media.decode import MediaError, VideoDecoder, probe
from core.tagging import TaggingError
from core.tagging.shots import Shot, shots_from_rows

log = logging.getLogger(__name__)

# 2: the coco:<class> columns and info["objects"] count confirmed detections only (a Confirmer
# over the shot's frames; FeatureConfig.confirm), unconfirmed ones go to info["unconfirmed"]
FEATURES_VERSION = "2"
FEATURES_KIND = "tagging/features"
FEATURES_PRODUCER = "core.tagging.features"
MODALITIES = ("visual", "audio", "text")
TEXT_DIM = 384  # MiniLM's
SR = 16000
AUDIO_CHUNK_S = 60.0
GREY = (64, 36)  # thumbnails for motion: cheap, blind to compression noise
VISUAL_BASE = ("duration_s", "log_duration", "faces_mean", "faces_max", "face_area_max", "hue_cos", "hue_sin",
               "saturation", "brightness", "contrast", "colourfulness", "motion", "motion_max", "pan",
               "change", "text_area", "text_lines")
AUDIO_BASE = ("rms_db", "rms_db_max", "rms_db_std", "onset_mean", "onset_max", "vad", "speech")


@dataclass(frozen=True)
class FeatureConfig:
    """Which models describe a shot (catalogue names; None leaves that part out, as zeros)."""

    tagger: str | None = "efficientnet-lite3"
    detector: str | None = "ssd-mobilenet-v2-coco"
    faces: str | None = "mtcnn-faces"
    vad: str | None = "silero-vad"
    asr: str | None = "whisper-tiny"
    ocr: str | None = "rapidocr"
    text_embed: str | None = "minilm"
    frames_per_shot: int = 3
    mel_bands: int = 32
    mfcc: int = 13
    top_k: int = 5
    decode_size: tuple[int, int] = (960, 540)
    face_side: int = 640  # frames are shrunk to this longer side for MTCNN (its cost grows with pixels)
    language: str | None = None
    confirm: bool = True  # count a COCO class only where a Confirmer confirms it (see _confirmed)

    def __post_init__(self) -> None:
        if not 1 <= int(self.frames_per_shot) <= 16:
            raise ValueError("frames_per_shot must be 1..16")
        if not 16 <= int(self.mel_bands) <= 64 or not 1 <= int(self.mfcc) < int(self.mel_bands):
            raise ValueError("mel_bands must be 16..64 and mfcc 1..mel_bands-1")

    def params(self) -> dict[str, Any]:
        return {"tagger": self.tagger, "detector": self.detector, "faces": self.faces, "vad": self.vad,
                "asr": self.asr, "ocr": self.ocr, "text_embed": self.text_embed,
                "frames_per_shot": int(self.frames_per_shot), "mel_bands": int(self.mel_bands),
                "mfcc": int(self.mfcc), "top_k": int(self.top_k), "decode_size": list(self.decode_size),
                "face_side": int(self.face_side), "language": self.language,
                "confirm": bool(self.confirm)}


def visual_columns(cfg: FeatureConfig) -> tuple[str, ...]:
    """Column names depend on the config only, so every file tagged with it lines up."""
    cols = list(VISUAL_BASE)
    if cfg.tagger:
        from models.backends.imagenet import IMAGENET_CLASSES
        cols += [f"in:{c}" for c in IMAGENET_CLASSES]
    cols += [f"coco:{c}" for c in detector_classes(cfg)]
    return tuple(cols)


def detector_classes(cfg: FeatureConfig) -> tuple[str, ...]:
    if not cfg.detector:
        return ()
    from models.backends.coco import label_map
    from models.catalogue import ModelError, get_spec

    try:
        return tuple(dict.fromkeys(label_map(get_spec(cfg.detector).classes or "coco90").values()))
    except (ModelError, ValueError) as e:
        raise TaggingError(f"Feature model {cfg.detector!r} has no class list: {e}") from e


def audio_columns(cfg: FeatureConfig) -> tuple[str, ...]:
    b, m = int(cfg.mel_bands), int(cfg.mfcc)
    return (AUDIO_BASE + tuple(f"mel_mean:{i:02d}" for i in range(b)) + tuple(f"mel_std:{i:02d}" for i in range(b))
            + tuple(f"mfcc_mean:{i:02d}" for i in range(1, m + 1)) + tuple(f"mfcc_std:{i:02d}" for i in range(1, m + 1)))


@dataclass
class ShotFeatures:
    """Rows per shot: ``values[m]`` float32 ``[n, D_m]``, ``present[m]`` bool ``[n]`` (m in MODALITIES).

    A row whose modality is missing is all zeros. ``info[i]`` is JSON-able; ``words`` holds
    the file's transcript as (start, end, word) in media seconds.
    """

    shots: list[Shot]
    values: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    columns: dict[str, tuple[str, ...]]
    info: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    words: list[tuple[float, float, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.shots)

    def col(self, modality: str, name: str) -> np.ndarray:
        return self.values[modality][:, self.columns[modality].index(name)]


# -- models -----------------------------------------------------------------------------------

class ModelPool:
    """The feature models, as :mod:`models.loaded` holds them (each loaded once per thread, shared
    with every other user of the same model), counted: one pool can serve many files.

    ``loads`` counts the loads this pool caused (0 for a model some other user loaded first),
    ``calls`` model invocations and ``seconds`` the time inside them, per name (what a reuse test
    or a bench looks at). Not a cache of its own: the models stay in :mod:`models.loaded`.
    """

    def __init__(self, device: str | None = None, options: Mapping[str, Mapping[str, Any]] | None = None):
        self.device = device
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.loads: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()  # time spent inside each model

    def get(self, name: str | None) -> Any:
        if not name:
            return None
        from models import loaded
        from models.catalogue import ModelError

        options = {**({"device": self.device} if self.device else {}), **self.options.get(name, {})}
        if loaded.is_held(name, **options):
            return loaded.held(name, **options)
        try:
            model = loaded.held(name, **options)
        except ModelError as e:
            raise TaggingError(f"Feature model {name!r} cannot be used: {e} "
                               "(leave it out of the feature settings to tag without it).") from e
        self.loads[name] += 1
        return model

    def run(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        model = self.get(name)
        self.calls[name] += 1
        t0 = time.perf_counter()
        try:
            return getattr(model, method)(*args, **kwargs)
        finally:
            self.seconds[name] += time.perf_counter() - t0


# -- the job ----------------------------------------------------------------------------------

def shot_features(path: str, shots: Sequence[Shot], state: JobState, models: FeatureConfig | None = None,
                  pool: ModelPool | None = None, media_index: Any = None) -> ShotFeatures:
    """Job: features of every shot of ``path`` (see the module docstring). ``media_index`` (the
    file's core.perception.index.MediaIndex, built with the same tagger): a shot with indexed
    frames inside it takes its ImageNet probabilities from them instead of running the tagger."""
    cfg = models or FeatureConfig()
    if media_index is not None and media_index.params.get("tagger") != cfg.tagger:
        media_index = None
    pool = pool or ModelPool()
    shots = list(shots)
    if not shots:
        raise TaggingError("There are no shots to describe.")
    try:
        info = probe(path, with_hash=False)
    except MediaError as e:
        raise TaggingError(f"Cannot describe shots: {e}") from e
    n = len(shots)
    vcols, acols = visual_columns(cfg), audio_columns(cfg)
    feats = ShotFeatures(shots, {"visual": np.zeros((n, len(vcols)), np.float32),
                                 "audio": np.zeros((n, len(acols)), np.float32),
                                 "text": np.zeros((n, TEXT_DIM), np.float32)},
                         {m: np.zeros(n, bool) for m in MODALITIES},
                         {"visual": vcols, "audio": acols, "text": tuple(f"minilm:{i}" for i in range(TEXT_DIM))},
                         [{"start": round(s.start, 3), "end": round(s.end, 3)} for s in shots],
                         params=feature_params(shots, cfg, media_index))
    # progress shares: visual work is per shot; audio per minute; text embedding is small
    v_share = 0.7 if info.has_video else 0.0
    a_share = (0.95 - v_share) if info.has_audio else 0.0
    ocr_text: list[list[str]] = [[] for _ in shots]
    if info.has_audio:
        _audio(path, info.duration_s, shots, cfg, pool, feats, state, 0.0, a_share)
    if info.has_video:
        _visual(path, shots, cfg, pool, feats, ocr_text, state, a_share, v_share, media_index)
    check(state)
    state.set_progress(0.95, "features: text")
    _text(shots, cfg, pool, feats, ocr_text)
    for m in MODALITIES:  # a model can return NaN on a black frame or silence; never store one
        bad = ~np.isfinite(feats.values[m])
        if bad.any():
            feats.notes.append(f"{int(bad.sum())} non-finite {m} values set to 0")
            feats.values[m][bad] = 0.0
    state.set_progress(1.0, "features: done")
    return feats


def sample_times(shot: Shot, k: int) -> list[float]:
    """``k`` times spread inside the shot, away from its edges (fades, the cut itself)."""
    return [shot.start + (i + 0.5) / k * shot.duration for i in range(k)]


def _visual(path, shots, cfg, pool, feats, ocr_text, state, base, share, media_index=None) -> None:
    import cv2

    from_index = 0

    vals = feats.values["visual"]
    ix = {c: i for i, c in enumerate(feats.columns["visual"])}
    in0 = ix.get(f"in:{_first_imagenet()}") if cfg.tagger else None
    classes = detector_classes(cfg)
    failed: set[str] = set()
    with VideoDecoder(path, max_size=tuple(cfg.decode_size)) as dec:
        for si, shot in enumerate(shots):
            check(state)
            state.set_progress(base + share * si / len(shots), f"features: shot {si + 1}/{len(shots)}")
            frames, pairs = [], []
            seen: set[float] = set()
            for t in sample_times(shot, cfg.frames_per_shot):
                try:
                    f = dec.frame_at(t)
                    if f.time in seen or not (shot.start - 1e-6 <= f.time < shot.end):
                        continue
                    seen.add(f.time)
                    nxt = dec.next_frame()
                except MediaError as e:
                    log.warning("no frame at %.2f s: %s", t, e)
                    continue
                frames.append(f.image)
                if nxt is not None and nxt.time < shot.end and nxt.image.shape == f.image.shape:
                    pairs.append((f.image, nxt.image, max(nxt.time - f.time, 1e-3)))
            row, inf = vals[si], feats.info[si]
            row[ix["duration_s"]] = shot.duration
            row[ix["log_duration"]] = math.log1p(max(shot.duration, 0.0))
            if not frames:
                feats.notes.append(f"shot {si + 1}: no frame could be decoded")
                continue
            feats.present["visual"][si] = True
            greys = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), GREY, interpolation=cv2.INTER_AREA)
                     .astype(np.float32) / 255.0 for f in frames]
            _colour(frames, row, ix, inf)
            _motion(pairs, greys, row, ix, inf)
            h, w = frames[0].shape[:2]
            rows = media_index.inside(shot.start, shot.end) if media_index is not None else ()
            if cfg.tagger and len(rows):  # the media index described frames of this shot with this tagger
                probs = media_index.probs[rows].astype(np.float32)
                inf["imagenet_from"] = f"media index ({len(rows)} frames)"
                from_index += 1
            elif cfg.tagger and "tagger" not in failed:
                probs = _guard(lambda: pool.run(cfg.tagger, "embed", frames), "tagger", failed, feats)
            else:
                probs = None
            if probs is not None:
                # int8 softmax: probabilities under 1/256 read as 0 and a flat row keeps
                # only ~2/3 of its mass; renormalise so every row is a distribution
                probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-6)
                mean = probs.mean(axis=0)
                row[in0:in0 + mean.size] = mean
                top = np.argsort(-mean, kind="stable")[:cfg.top_k]
                inf["imagenet"] = [[_imagenet(j), round(float(mean[j]), 4)] for j in top]
            if cfg.detector and "detector" not in failed:
                dets = _guard(lambda: pool.run(cfg.detector, "detect", frames), "detector", failed, feats)
                if dets is not None:
                    kept, doubt = _confirmed(frames, dets, cfg, pool, failed, feats)
                    counts = [Counter(d.label for d in fd) for fd in kept]
                    for c in classes:
                        row[ix[f"coco:{c}"]] = float(np.mean([k[c] for k in counts]))
                    most = Counter()
                    for k in counts:
                        most |= k  # the largest count of each class in any one frame
                    inf["objects"] = dict(most.most_common())
                    if doubt:  # kept and visible, never counted
                        inf["unconfirmed"] = doubt
            if cfg.faces and "faces" not in failed:
                small = [_shrink(f, cfg.face_side) for f in frames]
                fh, fw = small[0].shape[:2]
                faces = _guard(lambda: pool.run(cfg.faces, "faces", small), "faces", failed, feats)
                if faces is not None:
                    nums = [len(ff) for ff in faces]
                    area = max((((fc.box[2] - fc.box[0]) * (fc.box[3] - fc.box[1])) / float(fw * fh)
                                for ff in faces for fc in ff), default=0.0)
                    row[ix["faces_mean"]], row[ix["faces_max"]] = float(np.mean(nums)), float(max(nums))
                    row[ix["face_area_max"]] = area
                    inf["faces"] = int(max(nums))
                    inf["face_area"] = round(float(area), 4)
            if cfg.ocr and "ocr" not in failed:
                mid = frames[len(frames) // 2]
                regions = _guard(lambda: pool.run(cfg.ocr, "read", mid), "ocr", failed, feats)
                if regions:
                    ocr_text[si] = [r.text for r in regions]
                    row[ix["text_lines"]] = len(regions)
                    row[ix["text_area"]] = min(1.0, sum((r.box[2] - r.box[0]) * (r.box[3] - r.box[1])
                                                        for r in regions) / float(w * h))
                    inf["ocr"] = ocr_text[si]
    if from_index:
        feats.notes.append(f"ImageNet probabilities of {from_index} of {len(shots)} shots read from the media index")


def _shrink(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = side / max(h, w)
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(2, int(w * s)), max(2, int(h * s))), interpolation=cv2.INTER_AREA)


def _guard(fn, what: str, failed: set[str], feats: ShotFeatures):
    """Run one model call; a model that fails is reported once and left out for the rest of the file."""
    try:
        return fn()
    except TaggingError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # every backend raises its own types
        failed.add(what)
        msg = f"the {what} failed ({type(e).__name__}: {e}); its features are zero for this file"
        log.error("%s", msg)
        feats.notes.append(msg)
        return None


def _colour(frames: list[np.ndarray], row: np.ndarray, ix: dict[str, int], inf: dict) -> None:
    import cv2

    hc = hs = sat = val = con = col = 0.0
    for f in frames:
        small = cv2.resize(f, (160, 90), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)
        ang = hsv[..., 0] * (np.pi / 90.0)  # OpenCV hue is 0..180
        s, v = hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
        wsum = float(s.sum()) or 1.0
        hc += float((np.cos(ang) * s).sum() / wsum) * min(1.0, float(s.mean()) * 4)
        hs += float((np.sin(ang) * s).sum() / wsum) * min(1.0, float(s.mean()) * 4)
        sat, val, con = sat + float(s.mean()), val + float(v.mean()), con + float(v.std())
        rgb = small.astype(np.float32)
        rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        # Hasler & Süsstrunk's colourfulness, /100 so typical footage reads 0..1
        col += (math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))) / 100
    k = float(len(frames))
    for name, v in (("hue_cos", hc), ("hue_sin", hs), ("saturation", sat), ("brightness", val), ("contrast", con),
                    ("colourfulness", col)):
        row[ix[name]] = v / k
    inf["colour"] = {"hue": round(math.degrees(math.atan2(hs, hc)) % 360, 1), "saturation": round(sat / k, 3),
                     "brightness": round(val / k, 3), "colourfulness": round(col / k, 3)}


def _motion(pairs, greys, row: np.ndarray, ix: dict[str, int], inf: dict) -> None:
    """Per second: mean grey change between a sampled frame and the next, and the global
    shift between them (phase correlation, in frame widths) — a pan reads as shift."""
    import cv2

    diffs, shifts = [], []
    for a, b, dt in pairs:
        ga = cv2.resize(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), GREY, interpolation=cv2.INTER_AREA).astype(np.float32)
        gb = cv2.resize(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), GREY, interpolation=cv2.INTER_AREA).astype(np.float32)
        diffs.append(float(np.mean(np.abs(ga - gb))) / 255.0 / dt)
        (dx, dy), _ = cv2.phaseCorrelate(ga.astype(np.float64), gb.astype(np.float64))
        shifts.append(math.hypot(dx / GREY[0], dy / GREY[1]) / dt)
    if diffs:
        row[ix["motion"]], row[ix["motion_max"]] = float(np.mean(diffs)), float(np.max(diffs))
        row[ix["pan"]] = float(np.median(shifts))
    if len(greys) > 1:
        row[ix["change"]] = float(np.mean(np.abs(greys[-1] - greys[0])))
    inf["motion"] = round(float(row[ix["motion"]]), 4)


def _confirmed(frames, dets, cfg, pool, failed, feats):
    """The detections that count (issue #17: an object counts only with evidence): a
    :class:`core.perception.confirm.Confirmer` over the shot's sampled frames confirms a track
    by hits on a moving box or by a second look that agrees (the ImageNet classifier on the box
    crop, or the detector again on the enlarged, mirrored crop). Returns (per frame, the
    confirmed detections; per unconfirmed class, its best score and why). ``cfg.confirm`` off:
    every detection counts, as before version 2. A second look that cannot run: nothing is
    counted for the rest of the file (noted) — an unchecked detection is not a fact."""
    if not cfg.confirm:
        return dets, {}
    if "confirm" in failed:  # failed on an earlier shot: nothing checked, nothing counted
        return [[] for _ in dets], {}
    from core.perception.confirm import CLASSIFIER, Confirmer, SecondLook

    try:
        tagger = pool.get(cfg.tagger) if cfg.tagger == CLASSIFIER and "tagger" not in failed else None
        look = SecondLook(pool.get(cfg.detector), tagger)
        c = Confirmer(look)
        owners = [c.update(float(i), f, list(fd)) for i, (f, fd) in
                  enumerate(zip(frames, dets))]
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:  # a model error (TaggingError, ModelError, a runtime's own)
        failed.add("confirm")
        feats.notes.append(f"detections could not be confirmed ({type(e).__name__}: {e}); "
                           "no object is counted for the rest of the file")
        return [[] for _ in dets], {}
    kept = [[d for d, tr in zip(fd, own) if tr.confirmed] for fd, own in zip(dets, owners)]
    doubt: dict[str, dict[str, Any]] = {}
    for tr in c.tracks():
        if not tr.confirmed and tr.label not in doubt:
            doubt[tr.label] = {"score": round(float(tr.best.score), 3), "why": tr.reason}
    return kept, doubt


def _first_imagenet() -> str:
    from models.backends.imagenet import IMAGENET_CLASSES
    return IMAGENET_CLASSES[0]


def _imagenet(j: int) -> str:
    from models.backends.imagenet import IMAGENET_CLASSES
    return IMAGENET_CLASSES[int(j)]


# -- audio ------------------------------------------------------------------------------------

def audio_chunks(shots: Sequence[Shot], duration: float, target: float = AUDIO_CHUNK_S) -> list[tuple[float, float]]:
    """Pieces of about ``target`` seconds, cut at a shot boundary when one lies in the last
    two thirds of the piece: speech rarely runs across a cut, so a shot's words come whole."""
    bounds = sorted({s.start for s in shots if 0 < s.start < duration})
    out, a = [], 0.0
    while a < duration - 1e-6:
        b = min(duration, a + target)
        if b < duration:
            inside = [t for t in bounds if a + target / 3 <= t <= b]
            if inside:
                b = inside[-1]
        out.append((a, b))
        a = b
    return out


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II rows 0..n_out-1: MFCCs from log-mel."""
    k = np.arange(n_out)[:, None]
    m = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * m + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    d[0] /= math.sqrt(2.0)
    return d.astype(np.float32)


def _audio(path, duration, shots, cfg, pool, feats, state, base, share) -> None:
    from core.media.audio import load_mono

    mels, dbs, times, speech, words = [], [], [], [], []
    chunks = audio_chunks(shots, duration)
    for ci, (a, b) in enumerate(chunks):
        check(state)
        state.set_progress(base + share * ci / len(chunks), f"features: audio {a:.0f}–{b:.0f} s")
        try:
            x = load_mono(path, SR, a, b, cancelled=state.is_cancelled)
        except InterruptedError:
            check(state)
            raise
        except (MediaError, OSError, ValueError) as e:
            feats.notes.append(f"the audio cannot be decoded ({e}); audio features are missing")
            return
        except Exception as e:  # FFmpeg's own error types
            if type(e).__module__.startswith("av"):
                feats.notes.append(f"the audio cannot be decoded ({e}); audio features are missing")
                return
            raise
        mel, db = log_mel(x, cfg.mel_bands)
        mels.append(mel)
        dbs.append(db)
        times.append(a + (np.arange(len(db)) * HOP + N_FFT / 2) / SR)
        here: list[tuple[float, float]] | None = None
        if cfg.vad and x.size:
            here = [(a + s.start, a + s.end) for s in pool.run(cfg.vad, "segments", x)]
            speech += here
        # Whisper invents words where nobody speaks ("Thank you." over Chaplin's music, "You" on
        # a tone): with voice activity known, transcribe only chunks that hold some, and keep only
        # words that overlap a voiced segment (±0.3 s)
        if cfg.asr and x.size >= SR // 4 and (here is None or here):
            for seg in pool.run(cfg.asr, "transcribe", x, language=cfg.language):
                words += [(a + w0, a + w1, w) for w0, w1, w in (seg.words or ()) if w.strip()
                          and (here is None or coverage(here, a + w0 - 0.3, a + w1 + 0.3) > 0)]
    if not mels:
        return
    mel, db, t = np.concatenate(mels), np.concatenate(dbs), np.concatenate(times)
    voiced = _inside(t, speech)
    dct = dct_matrix(cfg.mfcc + 1, cfg.mel_bands)
    vals, ix = feats.values["audio"], {c: i for i, c in enumerate(feats.columns["audio"])}
    b, m = cfg.mel_bands, cfg.mfcc
    flux_all = np.r_[0.0, np.maximum(mel[1:] - mel[:-1], 0.0).mean(axis=1)]
    word_spans = [(w0, w1) for w0, w1, _ in words]
    feats.words = sorted(((round(w0, 3), round(w1, 3), w) for w0, w1, w in words), key=lambda w: w[0] + w[1])
    for si, shot in enumerate(shots):
        sel = np.arange(*np.searchsorted(t, [shot.start, shot.end], side="left"))
        if sel.size == 0:  # shorter than one hop: the nearest frame stands for it
            sel = np.array([int(np.argmin(np.abs(t - shot.mid)))])
        row, sm, sdb = vals[si], mel[sel], db[sel]
        lin = np.mean(10 ** (sdb.astype(np.float64) / 10))
        row[ix["rms_db"]] = max(SILENCE_DB, 10 * math.log10(lin + 1e-12))
        row[ix["rms_db_max"]], row[ix["rms_db_std"]] = float(sdb.max()), float(sdb.std())
        fl = flux_all[sel]
        row[ix["onset_mean"]], row[ix["onset_max"]] = float(fl.mean()), float(fl.max())
        row[ix["vad"]] = coverage(speech, shot.start, shot.end)
        row[ix["speech"]] = coverage(word_spans, shot.start, shot.end)
        m0 = ix["mel_mean:00"]
        row[m0:m0 + b], row[m0 + b:m0 + 2 * b] = sm.mean(axis=0), sm.std(axis=0)
        vsel = sm[voiced[sel]]
        if len(vsel):
            cc = vsel @ dct[1:].T
            c0 = ix["mfcc_mean:01"]
            row[c0:c0 + m], row[c0 + m:c0 + 2 * m] = cc.mean(axis=0), cc.std(axis=0)
        feats.present["audio"][si] = True
        feats.info[si].update(loudness_db=round(float(row[ix["rms_db"]]), 1), voice=round(float(row[ix["vad"]]), 3),
                              speaker_frames=int(len(vsel)))


def _inside(t: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """Which of the sorted times ``t`` lie in one of the (non-overlapping) spans."""
    out = np.zeros(t.shape, bool)
    for a, b in spans:
        out[slice(*np.searchsorted(t, [a, b], side="left"))] = True
    return out


def words_in(shot: Shot, words: Sequence[tuple[float, float, str]]) -> list[str]:
    """The words whose middle falls inside the shot (a word said across a cut goes to one side)."""
    return [w for a, b, w in words if shot.start <= 0.5 * (a + b) < shot.end]


def _text(shots, cfg, pool, feats, ocr_text) -> None:
    texts = []
    mids = np.asarray([0.5 * (a + b) for a, b, _ in feats.words], np.float64)
    for si, shot in enumerate(shots):
        lo, hi = np.searchsorted(mids, [shot.start, shot.end], side="left")
        said = " ".join(w for _, _, w in feats.words[lo:hi]).strip()
        shown = " ".join(ocr_text[si]).strip()
        feats.info[si]["words"] = said
        texts.append(" ".join(p for p in (said, shown) if p))
    todo = [i for i, s in enumerate(texts) if s]
    if todo and cfg.text_embed:
        emb = np.asarray(pool.run(cfg.text_embed, "embed", [texts[i] for i in todo]), np.float32)
        feats.values["text"][todo] = emb[:, :TEXT_DIM]
        feats.present["text"][todo] = True


# -- storage ----------------------------------------------------------------------------------

def shots_digest(shots: Sequence[Shot]) -> str:
    rows = np.round(np.asarray([s.to_row() for s in shots], np.float64), 4)
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


def feature_params(shots: Sequence[Shot], cfg: FeatureConfig, media_index: Any = None) -> dict[str, Any]:
    """What decides the features: equal params → the stored ones are reused. Probabilities read
    from a media index are other features than the tagger's on the shot's own frames: its
    sampling settings are part of the params."""
    p = {"version": FEATURES_VERSION, "config": cfg.params(), "shots": shots_digest(shots), "n_shots": len(shots)}
    if media_index is not None and media_index.params.get("tagger") == cfg.tagger:
        p["media_index"] = {k: media_index.params.get(k) for k in ("version", "tagger", "size", "static_every_s",
                                                                     "active_gap_s", "start", "end")}
    return p


#: The feature parameters that name a catalogue model (their devices go into the run's provenance).
MODEL_KEYS = ("tagger", "detector", "faces", "vad", "asr", "ocr", "text_embed", "audio_embed")


def _key(params: Mapping[str, Any]) -> str:
    return f"{FEATURES_KIND}/" + hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:16]


def store_features(project: Any, media_id: int, feats: ShotFeatures, params: Mapping[str, Any] | None = None, *,
                   started_at: float | None = None, duration_s: float = 0.0) -> int:
    """Record the run and the matrices (one array per modality and mask); returns the run id."""
    from models.catalogue import provenance_of

    params = dict(params if params is not None else feats.params)
    devices = provenance_of([v for k, v in params.items() if isinstance(v, str) and k in MODEL_KEYS])
    with project.batch():  # the run and what it produced commit together
        run_id = project.record_run(kind=FEATURES_KIND, producer=FEATURES_PRODUCER, version=FEATURES_VERSION,
                                    params={**params, **devices}, media_id=media_id,
                                    started_at=time.time() if started_at is None else started_at,
                                    duration_s=duration_s)
        key = _key(params)
        meta = {"params": params, "run_id": run_id, "columns": {m: list(c) for m, c in feats.columns.items()
                                                               if m != "text"},
                "info": feats.info, "notes": feats.notes, "words": [list(w) for w in feats.words]}
        project.put_array(media_id, f"{key}/shots", np.asarray([s.to_row() for s in feats.shots], np.float64),
                          meta=meta, run_id=run_id)
        for m in MODALITIES:
            project.put_array(media_id, f"{key}/{m}", feats.values[m].astype(np.float32), run_id=run_id)
            project.put_array(media_id, f"{key}/{m}/present", feats.present[m].astype(bool), run_id=run_id)
    return run_id


def load_features(project: Any, media_id: int, params: Mapping[str, Any]) -> ShotFeatures | None:
    """Stored features for exactly these params (from a finished run), or None."""
    params = dict(params)
    if project.find_run(FEATURES_KIND, FEATURES_PRODUCER, FEATURES_VERSION, params, media_id) is None:
        return None
    key = _key(params)
    head = project.get_array(media_id, f"{key}/shots")
    if head is None or head[1].get("params") != params:
        return None
    rows, meta = head
    values, present = {}, {}
    for m in MODALITIES:
        v, p = project.get_array(media_id, f"{key}/{m}"), project.get_array(media_id, f"{key}/{m}/present")
        if v is None or p is None or v[0].shape[0] != rows.shape[0]:
            return None
        values[m], present[m] = v[0].astype(np.float32), p[0].astype(bool)
    cols = {m: tuple(c) for m, c in meta.get("columns", {}).items()}
    cols["text"] = tuple(f"minilm:{i}" for i in range(values["text"].shape[1]))
    return ShotFeatures(shots_from_rows(rows), values, present, cols, list(meta.get("info", [])), params,
                        list(meta.get("notes", [])), [tuple(w) for w in meta.get("words", [])])


def cached_shot_features(project: Any, media_id: int, path: str, shots: Sequence[Shot], state: JobState,
                         models: FeatureConfig | None = None, pool: ModelPool | None = None) -> ShotFeatures:
    """Stored features when the params match, else computed, stored and returned."""
    from core.perception.index import load_index

    cfg = models or FeatureConfig()
    media_index = load_index(project, media_id) if cfg.tagger else None  # the file's, if it has one
    params = feature_params(shots, cfg, media_index)
    got = load_features(project, media_id, params)
    if got is not None:
        state.set_progress(1.0, "features: reused")
        return got
    t0, c0 = time.time(), time.perf_counter()
    feats = shot_features(path, shots, state, cfg, pool, media_index)
    store_features(project, media_id, feats, params, started_at=t0, duration_s=time.perf_counter() - c0)
    return feats
