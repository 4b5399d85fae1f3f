"""Frame scorers for FOCUS: ``score(frames, times, query, source) -> probabilities in [0, 1]``.

Why an embedded scorer at all: no image-text model (BLIP, CLIP, SigLIP) ships in any package, so
out of the box Kestrel describes what its offline perception models see in and around a frame —
COCO objects and where they are (SSD), faces (MTCNN), ImageNet scene tags (EfficientNet-Lite3),
on-screen text (RapidOCR, only when the query asks about text: it costs ~0.1 s a 640×360 frame
with text, more than the other models together), the transcript near that time — and matches the
query against those descriptions with MiniLM sentence embeddings. A frame's description is
query-independent, so it is cached per (file, time): asking a second question of the same video
re-scores the frames already seen without running a vision model again.

Bring-your-own image-text models (``blip-itm-user``, ``clip-user``, ``siglip-user``) score pixels
directly through :mod:`models.backends.itm`. An example frame or region scores by visual
similarity (:func:`score_image_query`).
"""
from __future__ import annotations

import collections
import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from core.perception.describe import (  # noqa: F401  (one definition, shared with the index)
    CAL_CENTER, CAL_SCALE, TAG_MIN, Description, calibrate, describe, object_facet, plural, where_in_frame,
)
from models.loaded import held, keep, limit_threads

log = logging.getLogger(__name__)

TRANSCRIPT_WINDOW_S = 5.0
# Objects that are there (issue #17): a detection lifts a frame's reward only when a second look
# agrees (core.perception.confirm.SecondLook: the ImageNet classifier on the box crop, or for
# classes with no ImageNet counterpart the detector again on the enlarged, mirrored crop). FOCUS
# scores single frames, so there is no track to count hits on: a re-detection's agreement (the
# same model twice, correlated) confirms only a detection scored at least Rules.redetect_score.
# A detection the second look disagrees with does not count at all (a weak weight would still be
# a reward for a phantom), it stays in the frame's record (``Seen.looks``) with the look's verdict.
# The look is paid only where it could change the reward: for an object facet whose calibrated
# match with the query reaches RELEVANT_P (below it the facet cannot lift the frame's reward above
# that, so it is left out unchecked), and for at most LOOKS_PER_LABEL boxes of a class per frame.
CONFIRM = True  # False: raw detections count, as before (bench/focus.py's "before" run)
RELEVANT_P = 0.05
LOOKS_PER_LABEL = 3
# Faces smaller than this are not worth describing; MTCNN's image pyramid for 20 px faces costs
# 60 ms a 640×360 frame here, for 40 px 26 ms, and found 12 of the same 13 faces on the bench clips.
FACE_MIN_PX = 40
TEXT_HINTS = ("text", "sign", "says", "say", "written", "write", "reads", "read", "caption", "title", "word",
              "letter", "number", "plate", "label", "banner", "subtitle", "logo")
STOP = frozenset("a an the is are was were be of in on at to and or with when where what which who does do did "
                 "there this that it its any some for from by as into over under show me find frame frames".split())


class FrameScorer(Protocol):
    name: str

    def score(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str,
              source: str = "") -> np.ndarray: ...

    def known_words(self, query: str) -> list[str]: ...

    def has_cached(self, t: float, source: str, query: str) -> bool: ...


def words(query: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", query.lower()) if w not in STOP]


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """English words the scorers know: MiniLM's whole-word tokens plus COCO and ImageNet names."""
    from models.backends.coco import COCO90
    from models.backends.imagenet import IMAGENET_CLASSES
    from models.catalogue import get_spec, locate

    known: set[str] = set()
    try:
        where = locate(get_spec("minilm")).where
        if where:
            with open(f"{where}/model/vocab.txt", encoding="utf-8") as f:
                known |= {w.strip() for w in f if w.strip().isalpha()}
    except Exception:  # the vocabulary only sharpens a warning
        pass
    for name in list(COCO90.values()) + list(IMAGENET_CLASSES):
        known |= set(re.findall(r"[a-z0-9]+", name.lower()))
    return frozenset(known)


def known_words(query: str) -> list[str]:
    """The query's content words the scorers know; digits and quoted/upper-case text count (OCR can match them)."""
    if re.search(r"\"[^\"]+\"|\b[A-Z0-9]{2,}\b", query):
        return words(query) or [query]
    vocab = _vocabulary()
    return [w for w in words(query) if w in vocab]


def wants_text(query: str) -> bool:
    """Does the query ask about on-screen text? (Then OCR is worth its cost.)"""
    return bool(re.search(r"\"[^\"]+\"|\b[A-Z0-9]{2,}\b|\d", query)) or any(w in TEXT_HINTS for w in words(query))






@dataclass
class Seen:
    """What the models returned for one frame (query-independent, cached per (file, time)), and
    the second looks paid so far: ``looks[i]`` the verdict on ``dets[i]`` (absent: not looked at).
    The frame's :class:`Description` for a query is built from the confirmed detections only."""

    dets: tuple[Any, ...]
    faces: tuple[Any, ...]
    tags: tuple[Any, ...]
    size: tuple[int, int]
    ocr: str | None = None
    looks: dict[int, Any] = field(default_factory=dict)

    def labels(self) -> dict[str, list[int]]:
        """Each class's detections (indices), highest score first."""
        by: dict[str, list[int]] = collections.defaultdict(list)
        for i in sorted(range(len(self.dets)), key=lambda i: -self.dets[i].score):
            by[self.dets[i].label].append(i)
        return by

    def checked(self, label: str) -> bool:
        return all(i in self.looks for i in self.labels()[label][:LOOKS_PER_LABEL])

    def confirmed(self) -> list[Any]:
        return [d for i, d in enumerate(self.dets) if _agrees(self.looks.get(i), d)]

    def description(self, confirm: bool = True) -> Description:
        return describe(self.confirmed() if confirm else self.dets, self.faces, self.tags, self.size, self.ocr)


def _agrees(look: Any, det: Any) -> bool:
    """A second look confirms a single frame's detection: the classifier's agreement, or the
    re-detection's for a detection scored at least ``Rules.redetect_score`` (see CONFIRM)."""
    from core.perception.confirm import Rules

    if look is None or not look.agrees:
        return False
    return look.kind == "classifier" or det.score >= Rules().redetect_score




def default_threads() -> int | None:
    """1 on small machines (≤ 4 cores), else None (leave the libraries alone).

    The scorer runs OpenCV (SSD), LiteRT (tags) and torch (MTCNN, MiniLM) one after another on
    small batches; each runtime's thread pool keeps spinning after its call and starves the next.
    Measured on the 2-core machine, per 320×180 frame: 394 ms with the libraries' defaults,
    70 ms with one thread each (SSD 50, tags 7, faces 11, MiniLM 2)."""
    return 1 if (os.cpu_count() or 1) <= 4 else None


class _Embeddings:
    """MiniLM with a bounded text -> vector cache (descriptions repeat a lot across frames)."""

    def __init__(self, embedder: Any, size: int = 50000) -> None:
        self.embedder, self.size = embedder, size
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            for t, v in zip(new, self.embedder.embed(new)):
                self._cache[t] = v
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


class EmbeddedScorer:
    """The default scorer: offline perception -> text facets -> MiniLM cosine -> calibrated probability.

    A frame's reward is ``calibrate(max_f w_f * cos(query, facet_f))`` over its facets and the
    transcript within ±5 s; when OCR ran and the query quotes text, a fuzzy literal match of that
    text counts as a cosine too (MiniLM is poor at matching codes such as "KX-4471"). Object
    facets hold confirmed detections only (``confirm``; see CONFIRM): the second look runs once per
    (frame, box), only on the boxes whose facet could lift the reward to RELEVANT_P for the query.
    """

    name = "embedded"

    def __init__(self, embedder: Any, detector: Any = None, tagger: Any = None, faces: Any = None,
                 reader: Any = None, transcript: Sequence[tuple[float, float, str]] = (), ocr: bool | None = None,
                 cache_size: int = 200000, load_reader: Callable[[], Any] | None = None,
                 confirm: bool | None = None) -> None:
        self.embed = _Embeddings(embedder)
        self.detector, self.tagger, self.face_model, self.reader = detector, tagger, faces, reader
        self.transcript = sorted((float(a), float(b), str(t).strip()) for a, b, t in transcript if str(t).strip())
        self.ocr = ocr
        self.cache_size = cache_size
        self.threads = default_threads()
        self._desc: collections.OrderedDict[tuple[str, float], Seen] = collections.OrderedDict()
        self._load_reader = load_reader  # RapidOCR loads (0.8 s) only when a query first needs it
        self.confirm = confirm  # None: the module's CONFIRM
        self._look: Any = None
        self.looks_paid = 0  # boxes given a second look (the bench's cost count)

    @property
    def confirming(self) -> bool:
        return CONFIRM if self.confirm is None else bool(self.confirm)

    @property
    def look(self) -> Any:
        """The second look (core.perception.confirm.SecondLook) with this scorer's own models."""
        if self._look is None:
            from core.perception.confirm import SecondLook

            tagger = self.tagger if getattr(self.tagger, "classes", None) is not None else None
            self._look = SecondLook(self.detector, tagger)
        return self._look

    def to_check(self, seen: Seen, query: str) -> list[int]:
        """The boxes of ``seen`` a second look must see before it scores ``query``: those of the
        classes whose facet could lift the reward to RELEVANT_P, not looked at yet."""
        if not self.confirming or not seen.dets:
            return []
        labels = [(lab, ix) for lab, ix in seen.labels().items() if not seen.checked(lab)]
        if not labels:
            return []
        facets = [object_facet(lab, [seen.dets[i] for i in ix], seen.size[0]) for lab, ix in labels]
        q = self.embed([query])[0]
        p = calibrate(np.asarray([wt for _f, wt in facets]) * (self.embed([f for f, _w in facets]) @ q))
        return [i for (_lab, ix), pi in zip(labels, p) if pi >= RELEVANT_P
                for i in ix[:LOOKS_PER_LABEL] if i not in seen.looks]

    def known_words(self, query: str) -> list[str]:
        return known_words(query)

    def _needs_ocr(self, query: str) -> bool:
        want = self.ocr if self.ocr is not None else wants_text(query)
        if want and self.reader is None and self._load_reader is not None:
            load, self._load_reader = self._load_reader, None
            try:
                self.reader = load()
            except Exception as e:  # ModelError: without OCR the other facets still score
                if self.ocr:
                    raise
                log.warning("on-screen text is not read: %s", e)
        return bool(want) and self.reader is not None

    def _described(self, seen: Seen | None, query: str) -> bool:
        return seen is not None and (seen.ocr is not None or not self._needs_ocr(query))

    def has_cached(self, t: float, source: str, query: str) -> bool:
        """Whether ``query`` can be scored at ``t`` without the frame: described before, and every
        box that matters to the query looked at."""
        seen = self._desc.get((source, round(float(t), 4)))
        return self._described(seen, query) and not self.to_check(seen, query)

    def describe_frames(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str,
                        source: str = "") -> list[Description]:
        keys = [(source, round(float(t), 4)) for t in times]
        todo = [i for i, key in enumerate(keys) if not self.has_cached(times[i], source, query)]
        if any(frames[i] is None for i in todo):
            raise ValueError("a frame is needed for a time whose description is not cached")
        fresh = [i for i in todo if not self._described(self._desc.get(keys[i]), query)]
        imgs = [frames[i] for i in fresh]
        if imgs:
            dets = self.detector.detect(imgs) if self.detector else [[] for _ in imgs]
            tags = self.tagger.tags(imgs, top_k=3) if self.tagger else [[] for _ in imgs]
            faces = self.face_model.faces(imgs) if self.face_model else [[] for _ in imgs]
            ocr = self._needs_ocr(query)
            for n, i in enumerate(fresh):
                text = " ".join(r.text for r in self.reader.read(imgs[n])) if ocr else None
                h, w = imgs[n].shape[:2]
                self._desc[keys[i]] = Seen(tuple(dets[n]), tuple(faces[n]), tuple(tags[n]), (w, h), text)
        for i in todo:  # the second look, where it could change this query's reward
            seen = self._desc[keys[i]]
            self._desc.move_to_end(keys[i])
            want = self.to_check(seen, query)
            if want:
                self.looks_paid += len(want)
                for j, lk in zip(want, self.look.looks(frames[i], [seen.dets[j] for j in want], float(times[i]))):
                    seen.looks[j] = lk  # None: no look could be taken (the box stays unconfirmed)
        got = [self._desc[key] for key in keys]
        while len(self._desc) > self.cache_size:
            self._desc.popitem(last=False)
        return [seen.description(self.confirming) for seen in got]

    def speech_near(self, t: float) -> str:
        return " ".join(txt for a, b, txt in self.transcript
                        if a <= t + TRANSCRIPT_WINDOW_S and b >= t - TRANSCRIPT_WINDOW_S)

    def score(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str,
              source: str = "") -> np.ndarray:
        with limit_threads(self.threads, opencv=True):
            return self._score(frames, times, query, source)

    def _score(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str,
               source: str) -> np.ndarray:
        descs = self.describe_frames(frames, times, query, source)
        facet_lists = []
        for d, t in zip(descs, times):
            fs = list(d.facets)
            speech = self.speech_near(float(t))
            if speech:
                fs.append((speech, 1.0))
            facet_lists.append(fs)
        texts = [f for fs in facet_lists for f, _ in fs]
        q = self.embed([query])[0]
        sims = self.embed(texts) @ q if texts else np.zeros(0)
        literal = _quoted(query)
        out = np.zeros(len(times))
        pos = 0
        for i, fs in enumerate(facet_lists):
            w = np.asarray([wt for _, wt in fs])
            best = float(np.max(w * sims[pos:pos + len(fs)])) if fs else 0.0
            pos += len(fs)
            lit = _fuzzy_contains(descs[i].ocr, literal) if literal and descs[i].ocr else 0.0
            best = max(best, lit) if lit >= 0.8 else best  # most of the quoted text is on screen
            out[i] = best
        return calibrate(out)


def _quoted(query: str) -> str:
    m = re.search(r"\"([^\"]+)\"", query) or re.search(r"\b([A-Z0-9][A-Z0-9 \-]{2,})\b", query)
    return m.group(1).strip() if m else ""


def _fuzzy_contains(text: str, needle: str) -> float:
    """How well ``needle`` appears in ``text`` (0..1), ignoring case, spaces and punctuation."""
    a, b = re.sub(r"[^a-z0-9]", "", text.lower()), re.sub(r"[^a-z0-9]", "", needle.lower())
    if not a or not b:
        return 0.0
    if b in a:
        return 1.0
    m = difflib.SequenceMatcher(None, a, b).find_longest_match(0, len(a), 0, len(b))
    return m.size / len(b)


def image_embedding(tagger: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """Square roots of EfficientNet's 1000 class probabilities, unit length: the cosine of two such
    vectors is the Bhattacharyya coefficient of the two class distributions, in [0, 1]. Raw
    probability vectors would compare only the top class; square roots let the tail count."""
    e = np.sqrt(np.maximum(tagger.embed(list(images)), 0.0))
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def score_image_query(frames: Sequence[np.ndarray], example_image: np.ndarray, tagger: Any = None) -> np.ndarray:
    """Visual similarity of each frame to an example frame or region (cosine, in [0, 1])."""
    tagger = tagger or held("efficientnet-lite3")
    ex = image_embedding(tagger, [example_image])[0]
    return image_embedding(tagger, frames) @ ex


class _Uncached:
    def known_words(self, query: str) -> list[str]:
        return known_words(query)

    def has_cached(self, t: float, source: str, query: str) -> bool:
        return False


class ExampleScorer(_Uncached):
    """Scores frames by similarity to an example image (the query text is only a label)."""

    name = "example-image"

    def __init__(self, example: np.ndarray, tagger: Any) -> None:
        self.tagger = tagger
        self._ex = image_embedding(tagger, [example])[0]

    def known_words(self, query: str) -> list[str]:
        return ["<image>"]

    def score(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str = "",
              source: str = "") -> np.ndarray:
        return image_embedding(self.tagger, frames) @ self._ex


class ITMScorer(_Uncached):
    """A bring-your-own image-text model (models.backends.itm) behind the scorer protocol."""

    def __init__(self, matcher: Any, name: str) -> None:
        self.matcher, self.name = matcher, name

    def score(self, frames: Sequence[np.ndarray | None], times: Sequence[float], query: str,
              source: str = "") -> np.ndarray:
        return np.asarray(self.matcher.match(list(frames), query), float)


def make_scorer(name: str = "embedded", path: str | None = None, *, device: str | None = None,
                transcript: Sequence[tuple[float, float, str]] = (), ocr: bool | None = None, faces: bool = True,
                example: np.ndarray | None = None) -> FrameScorer:
    """A scorer by name ("embedded" or a catalogue image-text model with ``path``); models are loaded
    once per worker thread (models.loaded). Raises ModelError when a model is missing or of the wrong kind."""
    from models.catalogue import ModelError, get_spec

    if example is not None:
        return ExampleScorer(example, held("efficientnet-lite3"))
    if name == "embedded":
        cached = keep(("focus-embedded", bool(faces)), lambda: _embedded_scorer(faces))
        cached.ocr = ocr
        if ocr:
            cached._needs_ocr("")  # load RapidOCR now: a missing OCR model is a clear error, not failed frames
        cached.transcript = sorted((float(a), float(b), str(t).strip()) for a, b, t in transcript if str(t).strip())
        return cached
    spec = get_spec(name)
    if spec.task != "image-text":
        raise ModelError(f"{spec.title} is a {spec.task} model, not an image-text model; choose embedded, "
                         "blip-itm-user, clip-user or siglip-user.")
    return keep(("focus-itm", name, path), lambda: ITMScorer(held(name, user_path=path, device=device), name))


def _embedded_scorer(faces: bool) -> EmbeddedScorer:
    tags = held("efficientnet-lite3", threads=default_threads() or 2)
    return EmbeddedScorer(held("minilm"), held("ssd-mobilenet-v2-coco"), tags,
                          held("mtcnn-faces", min_face_size=FACE_MIN_PX) if faces else None,
                          load_reader=lambda: held("rapidocr"))


def score_isolated(scorer: FrameScorer, frames: list[np.ndarray | None], times: list[float], query: str,
                   source: str = "") -> tuple[np.ndarray, list[str]]:
    """Scores for a batch, NaN where the scorer failed: a failing batch is retried frame by frame so
    one bad frame costs only its own score. Returns (scores, error messages)."""
    from core.jobs import Cancelled

    try:
        v = np.asarray(scorer.score(frames, times, query, source), float).reshape(-1)
        if len(v) != len(frames):
            raise ValueError(f"{len(v)} scores for {len(frames)} frames")
        return np.where(np.isfinite(v), np.clip(v, 0.0, 1.0), np.nan), []
    except (Cancelled, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        if len(frames) == 1:
            return np.full(1, np.nan), [f"{type(e).__name__}: {e}"]
    out, errs = np.full(len(frames), np.nan), []
    for i in range(len(frames)):
        v, e = score_isolated(scorer, [frames[i]], [times[i]], query, source)
        out[i], errs = v[0], errs + e
    return out, errs


class SeekingScorer:
    """The selector's ``score_fn``: fetches frames by seeking (never a full decode), skips frames that
    cannot be decoded or where a seek lands well before the time asked (a broken stretch), scores
    the rest in one batch, and counts what went wrong so the job can say so."""

    def __init__(self, decoder: Any, scorer: FrameScorer, query: str, source: str, fps: float,
                 check: Callable[[], None] | None = None) -> None:
        self.dec, self.scorer, self.query, self.source, self._check = decoder, scorer, query, source, check
        self.tol = max(1.0, 3.0 / fps)
        self.broken = self.failed = self.cached = 0  # cached: scored without a decode
        self.errors: list[str] = []

    def __call__(self, times: list[float]) -> list[float | None]:
        if self._check is not None:
            self._check()
        out: list[float | None] = [None] * len(times)
        frames, keep = [], []
        for i, t in enumerate(times):
            img = None
            if self.scorer.has_cached(t, self.source, self.query):  # described before: no decode needed
                self.cached += 1
            else:
                try:
                    f = self.dec.frame_at(t)
                except Exception as e:  # MediaError, or FFmpeg's own errors from a damaged stream
                    log.warning("no frame at %.3f s: %s", t, e)
                    self.broken += 1
                    continue
                if f.time < t - self.tol:
                    self.broken += 1
                    continue
                img = f.image
            frames.append(img)
            keep.append(i)
        if frames:
            vals, errs = score_isolated(self.scorer, frames, [times[i] for i in keep], self.query, self.source)
            self.failed += len(errs)
            self.errors += errs[:max(0, 3 - len(self.errors))]
            for i, v in zip(keep, vals):
                out[i] = float(v) if np.isfinite(v) else None
        return out

    def warnings(self, attempts: int) -> list[str]:
        w = []
        if self.failed:
            w.append(f"The scorer failed on {self.failed} of {attempts} frames; they have no score "
                     f"(first error: {self.errors[0] if self.errors else '?'}).")
        if self.broken:
            w.append(f"{self.broken} frames could not be decoded (a seek landed on a broken stretch) and were skipped.")
        return w


def crop_region(img: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
    """The example region (normalised x1, y1, x2, y2) of a frame; the whole frame for None."""
    if box is None:
        return img
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in box)
    xa, xb, ya, yb = int(x1 * w), int(np.ceil(x2 * w)), int(y1 * h), int(np.ceil(y2 * h))
    if xb - xa < 8 or yb - ya < 8:
        raise ValueError("The example region is too small (under 8 pixels): draw a larger box.")
    return np.ascontiguousarray(img[ya:yb, xa:xb])
