"""A per-media index of question-independent features, computed once and stored in the project.

Why: FOCUS, chat and tagging all ask "what does this frame show?" of the same video, and the
answer does not depend on the question. Computing it once per file (``build_index``) and
storing it (``store_index``) makes every later question a cheap lookup followed by a small
rescore of a shortlist (FOCUS: :mod:`core.focus.search`), instead of a fresh pass of the
vision models over the video.

Per sampled frame the index holds:

- the image embedding's source: EfficientNet-Lite3's 1000 ImageNet probabilities (float16;
  :meth:`MediaIndex.image_embedding` gives their unit-length square roots, whose cosine is the
  Bhattacharyya coefficient of two frames' class distributions — the same vector FOCUS's
  example-image search and tagging's visual features use; the catalogue's int8 TFLite graph
  exposes no usable penultimate layer);
- its objects (SSD boxes, normalised, with the second look's verdict per box: the classifier on
  the crop, or the mirrored re-detection; :meth:`MediaIndex.confirmed` keeps those that count),
  faces (MTCNN), and on-screen text when ``IndexConfig.ocr`` names an OCR model (off by
  default: RapidOCR costs ~0.1 s a frame with text, more than all the other models together);
- its description as text facets (:mod:`core.perception.describe`, the FOCUS scorer's own) with
  their MiniLM vectors, so a question is matched against a whole file in milliseconds
  (:meth:`MediaIndex.match`);
- and for the file, the transcript segments the analysis job stored (with their vectors).

Which frames: keyframes first, decoded with ``skip_frame = NONKEY`` in one file-order pass (a
keyframe costs one frame's decode, never a group of pictures). Where ``core.media.changes``
finds the picture or sound changing, every keyframe is kept, plus a decoded frame wherever
keyframes are further apart than ``active_gap_s``; where nothing changes, one keyframe per
``static_every_s``. The rates, the gate's settings and the counts go into the run's provenance
(``MediaIndex.params["plan"]``). Without a change map (a file whose packets carry no times)
every keyframe is kept, and the provenance says so.

Staleness: ``load_index`` returns None (so the caller rebuilds) when the stored index was made
with other settings, another index version, another range, or for other file contents.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from core.jobs import JobState, SubProgress, check, set_media_span
from core.perception.describe import calibrate, describe

log = logging.getLogger(__name__)

INDEX_VERSION = 1
INDEX_KIND = "perception/index"
PRODUCER = "core.perception.index"
KEY = "perception/index"
TRANSCRIPT_WINDOW_S = 5.0  # a frame's speech: the transcript within this many seconds (as FOCUS's scorer)
LOOKS_PER_LABEL = 3  # second looks per class per frame (as FOCUS's scorer)
BATCH = 8
# verdict codes of a box: which second look agreed (or -1 not looked at, 0 disagreed)
KINDS = ("classifier", "redetect", "classifier (weak) + redetect")
NOT_LOOKED, DISAGREED = -1, 0


@dataclass(frozen=True)
class IndexConfig:
    """Which models describe a frame, and how densely frames are sampled (see the module docstring)."""

    detector: str | None = "ssd-mobilenet-v2-coco"
    tagger: str = "efficientnet-lite3"
    faces: str | None = "mtcnn-faces"
    text_embed: str = "minilm"
    ocr: str | None = None
    static_every_s: float = 30.0
    active_gap_s: float = 10.0
    size: tuple[int, int] = (320, 180)  # frames are decoded to fit this (SSD and the tagger see 300 and 280 px)
    looks: bool = True  # second looks on the boxes (confirmed objects); False: every box counts
    # the re-detection look (the detector again on the mirrored crop) costs as much as the frame's
    # own detection; off, the boxes of classes the classifier cannot judge stay "pending" (not looked
    # at): they count only as candidates for a first stage, and FOCUS looks at them when it rescores
    redetect: bool = False
    face_min_px: int = 20  # at 320×180; FOCUS uses 40 px at 640×360

    def __post_init__(self) -> None:
        if not (self.static_every_s > 0 and self.active_gap_s > 0):
            raise ValueError("static_every_s and active_gap_s must be positive")
        if min(self.size) < 32:
            raise ValueError("the index frame size must be at least 32 pixels a side")

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        return {**d, "version": INDEX_VERSION}


@dataclass(frozen=True)
class IndexRequest:
    path: str
    config: IndexConfig = IndexConfig()
    transcript: tuple[tuple[float, float, str], ...] = ()
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True)
class IndexedBox:
    """One detection in an indexed frame; ``box`` normalised (x1, y1, x2, y2 in 0..1)."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    verdict: int  # NOT_LOOKED, DISAGREED, or 1 + the index of the agreeing look's kind in KINDS

    @property
    def look_kind(self) -> str:
        return KINDS[self.verdict - 1] if self.verdict > 0 else ""


@dataclass
class MediaIndex:
    """The index of one media file (see the module docstring). Arrays are row-aligned with ``times``."""

    params: dict[str, Any]
    times: np.ndarray  # (n,) seconds, sorted
    keyframe: np.ndarray  # (n,) bool: decoded as a keyframe
    probs: np.ndarray  # (n, 1000) float16: EfficientNet-Lite3 ImageNet probabilities
    objects: np.ndarray  # (m, 8) float32: frame, label id, score, x1, y1, x2, y2 (0..1), verdict
    labels: list[str]
    faces: np.ndarray  # (f, 6) float32: frame, score, x1, y1, x2, y2 (0..1)
    ocr: dict[int, str]  # frame -> text read there (only when OCR ran)
    size: tuple[int, int]  # the frames' size when described (w, h)
    facets: list[str]  # every distinct facet text
    facet_vecs: np.ndarray  # (u, d) float16 MiniLM vectors of ``facets``
    facet_of: np.ndarray  # (q, 3) float32: frame, facet id, weight
    speech: list[tuple[float, float, str]] = field(default_factory=list)
    speech_vecs: np.ndarray = field(default_factory=lambda: np.zeros((0, 384), np.float16))
    duration: float = 0.0
    build_s: float = 0.0

    def __len__(self) -> int:
        return int(len(self.times))

    # -- per frame -------------------------------------------------------------------------
    @staticmethod
    def _rows(table: np.ndarray, i: int) -> np.ndarray:
        """The rows of frame ``i`` of a table sorted by its frame column."""
        if not len(table):
            return table
        col = table[:, 0]
        return table[int(np.searchsorted(col, i, side="left")):int(np.searchsorted(col, i, side="right"))]

    def boxes(self, i: int) -> list[IndexedBox]:
        rows = self._rows(self.objects, i)
        return [IndexedBox(self.labels[int(r[1])], float(r[2]), (float(r[3]), float(r[4]), float(r[5]), float(r[6])),
                           int(r[7])) for r in rows]

    def confirmed(self, i: int) -> list[IndexedBox]:
        """The objects that count in frame ``i``: agreed by a second look (every box when the index
        was built without looks). A re-detection alone confirms only a box scored at least the
        rules' ``redetect_score`` (as FOCUS and the analysis job count it)."""
        from core.perception.confirm import Rules

        if not self.params.get("looks", True):
            return self.boxes(i)
        floor = Rules().redetect_score
        return [b for b in self.boxes(i) if b.verdict > 0 and (b.look_kind == "classifier" or b.score >= floor)]

    def pending(self, i: int) -> list[IndexedBox]:
        """Boxes not looked at that a single-frame look could still confirm (see ``confirmed``)."""
        from core.perception.confirm import Rules

        if not self.params.get("looks", True):
            return []
        floor = Rules().redetect_score
        return [b for b in self.boxes(i) if b.verdict == NOT_LOOKED and b.score >= floor]

    def face_boxes(self, i: int) -> list[tuple[float, tuple[float, float, float, float]]]:
        rows = self._rows(self.faces, i)
        return [(float(r[1]), (float(r[2]), float(r[3]), float(r[4]), float(r[5]))) for r in rows]

    def tags(self, i: int, top_k: int = 3) -> list[Any]:
        from models.backends.imagenet import IMAGENET_CLASSES
        from models.types import Tag

        p = self.probs[i].astype(np.float32)
        return [Tag(IMAGENET_CLASSES[j], float(p[j]), int(j)) for j in np.argsort(-p, kind="stable")[:top_k]]

    def nearest(self, t: float) -> int:
        """The indexed frame closest to ``t``."""
        j = int(np.searchsorted(self.times, t))
        cand = [c for c in (j - 1, j) if 0 <= c < len(self.times)]
        return min(cand, key=lambda c: abs(self.times[c] - t))

    def inside(self, t0: float, t1: float) -> np.ndarray:
        """Indices of the frames in [t0, t1)."""
        return np.arange(int(np.searchsorted(self.times, t0)), int(np.searchsorted(self.times, t1)))

    def image_embedding(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Unit-length square roots of the class probabilities (cosine = Bhattacharyya coefficient)."""
        p = self.probs if rows is None else self.probs[rows]
        e = np.sqrt(np.maximum(p.astype(np.float32), 0.0))
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    # -- questions -------------------------------------------------------------------------
    def match(self, query_vec: np.ndarray, *, speech: bool = True) -> np.ndarray:
        """Per indexed frame, the calibrated probability that it answers the query whose MiniLM
        vector is ``query_vec``: ``calibrate(max_f w_f · cos(query, facet_f))`` over the frame's
        facets and the transcript within ±5 s — the FOCUS scorer's reward, from stored text."""
        n = len(self.times)
        best = np.zeros(n)
        q = np.asarray(query_vec, np.float32).reshape(-1)
        if len(self.facet_of):
            sims = self.facet_vecs.astype(np.float32) @ q
            fr = self.facet_of[:, 0].astype(np.int64)
            val = self.facet_of[:, 2] * sims[self.facet_of[:, 1].astype(np.int64)]
            np.maximum.at(best, fr, val)
        if speech and self.speech:
            ss = self.speech_vecs.astype(np.float32) @ q
            for (a, b, _txt), s in zip(self.speech, ss):
                lo, hi = np.searchsorted(self.times, a - TRANSCRIPT_WINDOW_S), np.searchsorted(
                    self.times, b + TRANSCRIPT_WINDOW_S, side="right")
                best[lo:hi] = np.maximum(best[lo:hi], s)
        return calibrate(best)

    def candidates(self, query_vec: np.ndarray, k: int = 8, min_gap_s: float = 5.0) -> list[tuple[float, float]]:
        """The ``k`` best-matching indexed times (time, probability), at least ``min_gap_s`` apart."""
        p = self.match(query_vec)
        out: list[tuple[float, float]] = []
        for i in np.argsort(-p, kind="stable"):
            t = float(self.times[i])
            if all(abs(t - u) >= min_gap_s for u, _ in out):
                out.append((t, float(p[i])))
            if len(out) >= k:
                break
        return sorted(out)


# -- the plan: which frames --------------------------------------------------------------

@dataclass
class Plan:
    keyframes: np.ndarray  # keyframe times to describe (decoded with skip_frame)
    extra: np.ndarray  # other times (decoded in file order)
    provenance: dict[str, Any]


def _keyframe_times(path: str, start: float, end: float) -> np.ndarray:
    """Keyframe times from the packets alone (no decoding), for files without a change map."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        origin = float(c.start_time) / 1e6 if c.start_time is not None else 0.0
        kf = [float(p.pts) * tb - origin for p in c.demux(s) if p.is_keyframe and p.pts is not None]
    kf = np.asarray(sorted(kf), float)
    return kf[(kf >= start - 1e-6) & (kf < end)]


def _fill(lo: float, hi: float, gap: float) -> list[float]:
    """Times inside (lo, hi) so that no two neighbours of ``[lo, *new, hi]`` are more than ``gap`` apart."""
    n = int(math.ceil((hi - lo) / gap - 1e-9)) - 1
    return [lo + (hi - lo) * (j + 1) / (n + 1) for j in range(n)] if n > 0 else []


def plan_samples(path: str, cfg: IndexConfig, start: float, end: float, state: JobState | None = None) -> Plan:
    """Which frames the index describes (see the module docstring)."""
    from core.media.decode import MediaError

    prov: dict[str, Any] = {"static_every_s": cfg.static_every_s, "active_gap_s": cfg.active_gap_s}
    cm = None
    try:
        from core.media.changes import scan_changes

        cm = scan_changes(path, start=start, end=end, state=state)
        kf = np.asarray(cm.keyframes, float)
        kf = kf[(kf >= start - 1e-6) & (kf < end)]
        prov["sampler"] = "core.media.changes"
        prov["gate"] = cm.provenance()
    except (ImportError, MediaError) as e:
        kf = _keyframe_times(path, start, end)
        prov["sampler"] = "keyframes"
        prov["note"] = f"no change map ({type(e).__name__}): every keyframe is described"
    keep: list[float] = []
    for j, t in enumerate(kf):
        nxt = kf[j + 1] if j + 1 < len(kf) else end
        if cm is None or not keep or cm.is_active(t, nxt) or cm.is_active(keep[-1], t) \
                or t - keep[-1] >= cfg.static_every_s - 1e-6:
            keep.append(float(t))
    extra: list[float] = []
    edges = [start] + keep + [end]
    for a, b in zip(edges[:-1], edges[1:]):
        active = cm is None or cm.is_active(a, b)
        gap = cfg.active_gap_s if active else cfg.static_every_s
        if b - a > gap:
            extra += _fill(a, b, gap)
    if not keep:
        extra = [start] + extra
    prov.update(keyframes_total=int(len(kf)), keyframes_used=len(keep), extra_frames=len(extra),
                samples=len(keep) + len(extra), span_s=round(end - start, 3))
    return Plan(np.asarray(keep, float), np.asarray(sorted(set(extra)), float), prov)


def _index_size(w: int, h: int, box: tuple[int, int]) -> tuple[int, int]:
    s = min(1.0, box[0] / max(1, w), box[1] / max(1, h))
    return max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)


def decode_keyframes(path: str, times: np.ndarray, size: tuple[int, int], rotation: int = 0,
                     state: JobState | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(time, RGB image at ``size``) for the keyframes at ``times``: one file-order pass that hands
    the decoder the keyframes' packets alone (a keyframe costs one frame's decode; a decoder told
    to skip the other packets still pays for each: 4.8 s against 1.2 s over an hour of 30 fps)."""
    import av

    from core.media.decode import rotate_image

    if not len(times):
        return
    want = np.asarray(times, float)
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.skip_frame = "NONKEY"
        s.thread_type = "AUTO"
        origin = float(c.start_time) / 1e6 if c.start_time is not None else 0.0
        if want[0] > 30:
            c.seek(int((want[0] - 1 + origin) / float(s.time_base)), stream=s, backward=True)
        raw = (size[1], size[0]) if rotation % 180 else size
        for f in _keyframes_of(c, s):
            if f.pts is None:
                continue
            t = float(f.pts * s.time_base) - origin
            j = int(np.argmin(np.abs(want - t)))
            if abs(want[j] - t) > 1e-3:
                if t > want[-1] + 1e-3:
                    return
                continue
            if state is not None:
                check(state)
            img = f.reformat(width=raw[0], height=raw[1], format="rgb24").to_ndarray()
            yield float(want[j]), rotate_image(img, rotation)


def _keyframes_of(c: Any, s: Any) -> Iterator[Any]:
    """The decoded keyframes of stream ``s``, in file order, from their packets alone."""
    for p in c.demux(s):
        if p.is_keyframe:
            yield from s.codec_context.decode(p)
    yield from s.codec_context.decode(None)


def decode_times(path: str, times: np.ndarray, size: tuple[int, int],
                 state: JobState | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Other planned frames, in file order (the decoder seeks only to jump over long stretches)."""
    import cv2

    from core.media.decode import MediaError, VideoDecoder

    if not len(times):
        return
    with VideoDecoder(path, max_size=(size[0] * 2, size[1] * 2)) as dec:
        for t in sorted(float(x) for x in times):
            if state is not None:
                check(state)
            try:
                img = dec.frame_at(t).image
            except MediaError as e:
                log.warning("index: no frame at %.2f s: %s", t, e)
                continue
            if img.shape[1] != size[0] or img.shape[0] != size[1]:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            yield t, img


# -- building ------------------------------------------------------------------------------

class _Models:
    def __init__(self, cfg: IndexConfig) -> None:
        from models.loaded import held

        self.threads = 1 if (os.cpu_count() or 1) <= 4 else None
        # Each model in turn may use every core of a small machine: the index runs them one after
        # another on batches of 8 (core.focus.scorers.default_threads's one-thread rule is for
        # single frames, where the pools' spinning costs more than a second core gives). Measured
        # on 2 cores, per frame: SSD 47 -> 39 ms, tags 17 -> 10, faces 15 -> 10 (75 -> 61 ms in all)
        self.wide = (os.cpu_count() or 1) if self.threads else None
        self.tagger = held(cfg.tagger, threads=max(2, self.wide or 2))
        self.detector = held(cfg.detector) if cfg.detector else None
        self.faces = held(cfg.faces, min_face_size=cfg.face_min_px) if cfg.faces else None  # the device setting
        self.reader = held(cfg.ocr) if cfg.ocr else None
        self.embedder = held(cfg.text_embed)
        self.look = None
        if cfg.looks and self.detector is not None:
            from core.perception.confirm import SecondLook

            self.look = SecondLook(self.detector if cfg.redetect else None, self.tagger)


def _worth_a_look(look: Any, det: Any) -> bool:
    """A single frame's box can only be confirmed by the classifier, or by a re-detection (when
    the index pays for it) of a box scored at least ``redetect_score``: other looks are never paid."""
    from core.perception.confirm import Rules

    return look.classifier.can_see(det.label) or (look.redetect is not None and det.score >= Rules().redetect_score)


class _Builder:
    def __init__(self, cfg: IndexConfig, models: _Models, size: tuple[int, int]) -> None:
        self.cfg, self.m, self.size = cfg, models, size
        self.times: list[float] = []
        self.key: list[bool] = []
        self.probs: list[np.ndarray] = []
        self.objects: list[list[float]] = []
        self.faces: list[list[float]] = []
        self.labels: dict[str, int] = {}
        self.ocr: dict[int, str] = {}
        self.looks_paid = 0

    def _detect(self, imgs: list[np.ndarray]) -> list[Any]:
        if self.m.detector is None:
            return [[] for _ in imgs]
        from models.loaded import limit_threads

        with limit_threads(self.m.wide, opencv=True, torch=False):
            return self.m.detector.detect(imgs)

    def _faces(self, imgs: list[np.ndarray]) -> list[Any]:
        if self.m.faces is None:
            return [[] for _ in imgs]
        from models.loaded import limit_threads

        with limit_threads(self.m.wide):
            return self.m.faces.faces(imgs)

    def add(self, batch: list[tuple[float, np.ndarray]], key: bool) -> None:
        from models.loaded import limit_threads

        imgs = [im for _t, im in batch]
        w, h = self.size
        with limit_threads(self.m.threads, opencv=True):
            probs = self.m.tagger.embed(imgs)
            dets = self._detect(imgs)
            faces = self._faces(imgs)
            for n, (t, img) in enumerate(batch):
                i = len(self.times)
                self.times.append(float(t))
                self.key.append(key)
                self.probs.append(probs[n].astype(np.float16))
                verdicts = [NOT_LOOKED] * len(dets[n])
                if self.m.look is not None and dets[n]:
                    by: dict[str, list[int]] = collections.defaultdict(list)
                    for j in sorted(range(len(dets[n])), key=lambda j: -dets[n][j].score):
                        by[dets[n][j].label].append(j)
                    want = [j for ix in by.values() for j in ix[:LOOKS_PER_LABEL]
                            if _worth_a_look(self.m.look, dets[n][j])]
                    if want:
                        self.looks_paid += len(want)
                        for j, lk in zip(want, self.m.look.looks(img, [dets[n][j] for j in want], float(t))):
                            verdicts[j] = (NOT_LOOKED if lk is None else DISAGREED if not lk.agrees
                                           else 1 + KINDS.index(lk.kind))
                elif self.m.look is None:
                    verdicts = [1] * len(dets[n])
                for d, v in zip(dets[n], verdicts):
                    lab = self.labels.setdefault(d.label, len(self.labels))
                    x1, y1, x2, y2 = d.box
                    self.objects.append([i, lab, d.score, x1 / w, y1 / h, x2 / w, y2 / h, v])
                for f in faces[n]:
                    x1, y1, x2, y2 = f.box
                    self.faces.append([i, f.score, x1 / w, y1 / h, x2 / w, y2 / h])
                if self.m.reader is not None:
                    text = " ".join(r.text for r in self.m.reader.read(img)).strip()
                    if text:
                        self.ocr[i] = text

    def finish(self, params: dict[str, Any], transcript: Sequence[tuple[float, float, str]], duration: float,
               build_s: float) -> MediaIndex:
        order = np.argsort(np.asarray(self.times), kind="stable")
        remap = np.empty(len(order), np.int64)
        remap[order] = np.arange(len(order))
        objects = np.asarray(self.objects, np.float32).reshape(-1, 8)
        faces = np.asarray(self.faces, np.float32).reshape(-1, 6)
        if len(objects):  # rows sorted by frame (MediaIndex._rows), a frame's boxes in detection order
            objects[:, 0] = remap[objects[:, 0].astype(np.int64)]
            objects = objects[np.argsort(objects[:, 0], kind="stable")]
        if len(faces):
            faces[:, 0] = remap[faces[:, 0].astype(np.int64)]
            faces = faces[np.argsort(faces[:, 0], kind="stable")]
        probs = np.stack(self.probs)[order] if self.probs else np.zeros((0, 1000), np.float16)
        idx = MediaIndex(params, np.asarray(self.times, float)[order], np.asarray(self.key, bool)[order], probs,
                         objects, list(self.labels), faces, {int(remap[i]): s for i, s in self.ocr.items()},
                         self.size, [], np.zeros((0, 384), np.float16), np.zeros((0, 3), np.float32),
                         duration=duration, build_s=build_s)
        texts, rows = describe_all(idx)
        vecs = self.m.embedder.embed(texts) if texts else np.zeros((0, 384), np.float32)
        idx.facets, idx.facet_vecs, idx.facet_of = texts, np.asarray(vecs, np.float16), rows
        speech = [(float(a), float(b), str(s).strip()) for a, b, s in transcript if str(s).strip()]
        idx.speech = sorted(speech)
        if idx.speech:
            idx.speech_vecs = np.asarray(self.m.embedder.embed([s for _a, _b, s in idx.speech]), np.float16)
        return idx


@dataclass(frozen=True)
class _Box:  # what describe() reads of a detection or face
    label: str
    score: float
    box: tuple[float, float, float, float]


def frame_description(idx: MediaIndex, i: int, pending: bool = True) -> Any:
    """Frame ``i``'s :class:`~core.perception.describe.Description` in pixels of ``idx.size``: its
    confirmed objects and (``pending``) the boxes a look could still confirm. The stored facets
    (what ``match`` ranks by) include the pending ones: they make a frame a *candidate*; a reader
    that states what is there (chat's facts, tags) reads ``confirmed`` only."""
    w, h = idx.size
    boxes = idx.confirmed(i) + (idx.pending(i) if pending else [])
    dets = [_Box(b.label, b.score, (b.box[0] * w, b.box[1] * h, b.box[2] * w, b.box[3] * h)) for b in boxes]
    faces = [_Box("face", s, (x1 * w, y1 * h, x2 * w, y2 * h)) for s, (x1, y1, x2, y2) in idx.face_boxes(i)]
    return describe(dets, faces, idx.tags(i), (w, h), idx.ocr.get(i))


def describe_all(idx: MediaIndex) -> tuple[list[str], np.ndarray]:
    """Every frame's facets: (distinct texts, rows of (frame, text id, weight))."""
    ids: dict[str, int] = {}
    rows: list[tuple[int, int, float]] = []
    for i in range(len(idx)):
        for text, wt in frame_description(idx, i).facets:
            rows.append((i, ids.setdefault(text, len(ids)), wt))
    return list(ids), np.asarray(rows, np.float32).reshape(-1, 3)


def build_index(req: IndexRequest, state: JobState) -> MediaIndex:
    """Job: describe the planned frames of ``req.path`` (see the module docstring)."""
    from core.media.decode import MediaError, probe
    from models.catalogue import provenance_of

    t0 = time.perf_counter()
    cfg = req.config
    info = probe(req.path, with_hash=False)
    if info.video is None:
        raise MediaError(f"{info.path.rsplit('/', 1)[-1]} has no video to index.")
    start = max(0.0, float(req.start))
    end = float(info.duration_s if req.end is None else min(req.end, info.duration_s))
    set_media_span(state, end - start)
    state.set_progress(0.0, "index: where the picture changes")
    plan = plan_samples(info.path, cfg, start, end, SubProgress(state, 0.0, 0.1, "index: ", forward=False))
    w, h = info.display_size
    rot = int(info.video.rotation or 0)
    size = _index_size(w, h, cfg.size)
    state.set_progress(0.1, "index: loading models")
    b = _Builder(cfg, _Models(cfg), size)
    total = max(1, len(plan.keyframes) + len(plan.extra))
    done = 0

    def feed(frames: Iterator[tuple[float, np.ndarray]], key: bool) -> None:
        nonlocal done
        batch: list[tuple[float, np.ndarray]] = []
        for t, img in frames:
            batch.append((t, img))
            if len(batch) >= BATCH:
                check(state)
                b.add(batch, key)
                done += len(batch)
                batch = []
                state.set_progress(0.1 + 0.85 * done / total, f"index: {done}/{total} frames")
        if batch:
            b.add(batch, key)
            done += len(batch)

    feed(decode_keyframes(info.path, plan.keyframes, size, rot, state), True)
    feed(decode_times(info.path, plan.extra, size, state), False)
    if not b.times:
        raise MediaError(f"{info.path.rsplit('/', 1)[-1]}: no frame could be decoded to index.")
    state.set_progress(0.96, "index: describing")
    params = {**cfg.params(), "start": round(start, 3), "end": round(end, 3),
              **provenance_of([cfg.tagger, cfg.detector, cfg.faces, cfg.ocr, cfg.text_embed])}
    plan.provenance.update(described=len(b.times), looks=b.looks_paid, frame_size=list(size))
    params["plan"] = plan.provenance
    idx = b.finish(params, req.transcript, info.duration_s, 0.0)
    idx.build_s = time.perf_counter() - t0
    state.set_progress(1.0, "index: done")
    return idx


# -- storing ---------------------------------------------------------------------------------

def _wanted(cfg: IndexConfig, start: float, end: float | None) -> dict[str, Any]:
    return {**cfg.params(), "start": round(start, 3), **({} if end is None else {"end": round(end, 3)})}


def _same(params: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in want.items())


def store_index(project: Any, media_id: int, idx: MediaIndex, *, started_at: float | None = None) -> int:
    """Record the run (provenance) and the index arrays in one transaction; returns the run id."""
    media = project.get_media(media_id)
    started = time.time() - idx.build_s if started_at is None else started_at
    meta = {"params": idx.params, "labels": idx.labels, "size": list(idx.size), "facets": idx.facets,
            "ocr": {str(k): v for k, v in idx.ocr.items()}, "speech": [list(s) for s in idx.speech],
            "duration": idx.duration, "build_s": round(idx.build_s, 3), "content_hash": media.content_hash}
    frames = np.column_stack([idx.times, idx.keyframe.astype(float)]) if len(idx) else np.zeros((0, 2))
    with project.batch():
        run_id = project.record_run(kind=INDEX_KIND, producer=PRODUCER, version=str(INDEX_VERSION),
                                    params=idx.params, media_id=media_id, started_at=started,
                                    duration_s=idx.build_s)
        project.put_array(media_id, f"{KEY}/frames", frames.astype(np.float64), meta=meta, run_id=run_id)
        for name, arr in (("probs", idx.probs.astype(np.float16)), ("objects", idx.objects.astype(np.float32)),
                          ("faces", idx.faces.astype(np.float32)), ("facet_vecs", idx.facet_vecs.astype(np.float16)),
                          ("facet_of", idx.facet_of.astype(np.float32)),
                          ("speech_vecs", idx.speech_vecs.astype(np.float16))):
            project.put_array(media_id, f"{KEY}/{name}", arr, meta={"run": run_id}, run_id=run_id)
    return run_id


def load_index(project: Any, media_id: int, config: IndexConfig | None = None, *, start: float = 0.0,
               end: float | None = None) -> MediaIndex | None:
    """The stored index, or None when there is none or it is stale: another version, other
    settings (``config``; None accepts any settings of this version), another range, or made
    for other file contents. A stale index is never misread: the caller builds a new one."""
    got = project.get_array(media_id, f"{KEY}/frames")
    if got is None:
        return None
    frames, meta = got
    params = meta.get("params") or {}
    if params.get("version") != INDEX_VERSION:
        return None
    if config is not None and not _same(params, _wanted(config, start, end)):
        return None
    try:
        if meta.get("content_hash") != project.get_media(media_id).content_hash:
            return None
        parts = {}
        for name in ("probs", "objects", "faces", "facet_vecs", "facet_of", "speech_vecs"):
            a = project.get_array(media_id, f"{KEY}/{name}")
            if a is None:
                return None
            parts[name] = a[0]
        for name in ("objects", "faces"):  # MediaIndex._rows reads them sorted by frame
            t = parts[name]
            parts[name] = t[np.argsort(t[:, 0], kind="stable")] if t.ndim == 2 and len(t) else t
        n = len(frames)
        if len(parts["probs"]) != n or len(parts["facet_vecs"]) != len(meta["facets"]) \
                or len(parts["speech_vecs"]) != len(meta["speech"]):
            raise ValueError("the index's parts do not line up")
        return MediaIndex(params, frames[:, 0].astype(float), frames[:, 1] > 0.5, parts["probs"], parts["objects"],
                          [str(x) for x in meta["labels"]], parts["faces"],
                          {int(k): str(v) for k, v in meta.get("ocr", {}).items()},
                          (int(meta["size"][0]), int(meta["size"][1])), [str(x) for x in meta["facets"]],
                          parts["facet_vecs"], parts["facet_of"],
                          [(float(a), float(b), str(s)) for a, b, s in meta["speech"]], parts["speech_vecs"],
                          float(meta.get("duration", 0.0)), float(meta.get("build_s", 0.0)))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        log.info("stored index of media %s not usable (%s); it will be rebuilt", media_id, e)
        return None


def ensure_index(project: Any, media_id: int, req: IndexRequest, state: JobState) -> tuple[MediaIndex, bool]:
    """The stored index for these settings, else a new one built and stored (for the command line
    and benches, which own their project; the window loads, builds and stores on its own pools).
    Returns (index, built)."""
    idx = load_index(project, media_id, req.config, start=req.start, end=req.end)
    if idx is not None:
        return idx, False
    idx = build_index(req, state)
    store_index(project, media_id, idx)
    return idx, True


_MEMORY: collections.OrderedDict = collections.OrderedDict()
_MEMORY_LOCK = threading.Lock()


def memory_index(req: IndexRequest, state: JobState) -> MediaIndex:
    """An index kept in this process only (no project: ``select`` without ``--project``), by file
    (path, size, modification time) and settings; the last 4 are kept."""
    st = os.stat(req.path)
    key = (os.path.realpath(req.path), st.st_size, st.st_mtime_ns, repr(req.config), req.start, req.end,
           req.transcript)
    with _MEMORY_LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            _MEMORY.move_to_end(key)
            return hit
    idx = build_index(req, state)
    with _MEMORY_LOCK:
        _MEMORY[key] = idx
        while len(_MEMORY) > 4:
            _MEMORY.popitem(last=False)
    return idx
