"""Objects that are there: which detections count as present, with the evidence recorded.

Why: a detector's score is not evidence that an object is there. SSD reports a "surfboard" at
0.89 on a static tree and a "vase" at 0.92 on a white wall, and it does so in every frame, so
"it fired several times" is no evidence either when the box never moves. A detection counts as
present here only when one of these holds:

1. **hits on a moving track**: the IoU-linked chain of same-label detections has hits in at
   least ``k`` of ``n`` consecutive sampled frames *and* its box moved (``Rules.moved``); a box
   that stays put is exactly what a detector's confusion with the background looks like, so
   hits alone never confirm a static track;
2. **a second look that agrees**: the ImageNet classifier that ships (``efficientnet-lite3``) on
   the enlarged box crop, counting the ImageNet classes of :mod:`core.perception.coco_imagenet`
   as the COCO class (a bus box is confirmed by "minibus"); for classes with no ImageNet
   counterpart (person, surfboard...) the same detector on the enlarged crop, mirrored (a
   different view of the same pixels: a real person is a person mirrored and closer, a texture
   that happened to excite the "person" filters usually is not). A box that covers most of the
   frame has no context left to enlarge: the re-detection then sees the mirrored frame. The
   classifier (an independent model) confirms even a one-frame glimpse; the re-detection (the
   same model again, correlated) needs ``Rules.look_hits`` hits. Where the classifier says no
   but still gives the class some probability (``Rules.weak_share``), the re-detection decides;
   where it gives none, its no stands (a detector re-finds its own confusions: the wall's vase);

and the track is not one of the scene's learned confusions (:class:`SceneConfusions`: classes
that fire on a static region of a camera's normal footage, suppressed there, undoable).
Everything else is kept, *unconfirmed*, with its evidence: hits, motion, the second look's label
and score, and why it was not confirmed — visible (greyed, filterable), never a fact.

Where it plugs in: the analysis job (core/perception/analysis.py, ``_run_visual``) feeds each
detector's frames to a :class:`Confirmer` right after detection and tracking, while the frame is
still decoded (the second look needs its pixels, once per track; ``AnalysisRequest.confirm``
turns it off, ``AnalysisRequest.confusions`` brings the scene's confusions, and the run's params
record the rules: :func:`provenance`). ``tracks_for`` writes ``confirmed`` and ``evidence`` into
each box item's data (:func:`item_evidence`); a class's presence track shown by default counts
confirmed detections only, the rest go to a hidden "<class> (unconfirmed)" track. Readers ask
:func:`is_confirmed` (an item stored before confirmation existed is unconfirmed): the overlay
greys the rest, and anomaly cues, chat facts, tags and FOCUS rewards read confirmed ones only.
The scene's confusions belong to the project (per camera / source: :func:`load_confusions`),
learned from its normal footage (core.perception.ops.learn_confusions) and shown to the analyst.

Qt-free; the models load through ``models.loaded.held`` when a second look first needs them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from core.perception.coco_imagenet import COCO_TO_IMAGENET
from models.types import Box, Detection

CLASSIFIER = "efficientnet-lite3"


@dataclass(frozen=True)
class Rules:
    """When a track counts as present. ``k`` of ``n``: hits in at least k of any n consecutive
    sampled frames (2 fps: 3 of 5 is 1.5 s of presence in 2.5 s). ``link_iou``/``max_gap``: a
    detection joins a track of its label whose last box overlaps it by this IoU, missed frames
    allowed in between. ``moved``: 1 − IoU of a box with the track's first box, above which the
    track moves. ``class_share``/``class_rank``: the classifier agrees when the COCO class's
    ImageNet classes hold this share of its probability, or one of them is in its top
    ``class_rank``. ``redetect_iou``: the re-detection agrees with a box of the same label this
    close. ``crops``: the classifier looks at the box grown by each of these factors (tight, with
    context) and agrees if one view does; the re-detection uses ``enlarge``. ``looks``: second
    looks tried per track (at its first hits) before it counts as disagreeing. ``look_hits``: an
    agreeing re-detection confirms a track seen in at least this many of ``n`` consecutive frames
    (the same detector twice is correlated evidence: sensor noise makes one-frame flashes that it
    re-finds); ``classifier_hits``: the same for the classifier, an independent model, whose
    agreement confirms a car glimpsed in one sampled frame. ``redetect_score``: a re-detection
    confirms a track whose best score reaches this, or one seen in all ``n`` consecutive frames
    (noise flashes on snowy rocks sit just above the detector's threshold, 0.41–0.43, and the
    detector re-finds a few of them).
    ``weak_share``: where the classifier disagrees but still gives the class this share (a bicycle
    locked to a post: "jinrikisha", bicycle 0.12), the re-detection decides; below it (a white
    wall's "vase": 0.000) the classifier's no stands — the detector re-finds its own confusions."""

    k: int = 3
    n: int = 5
    link_iou: float = 0.3
    max_gap: int = 2
    moved: float = 0.5
    class_share: float = 0.2
    class_rank: int = 1
    redetect_iou: float = 0.4
    enlarge: float = 1.6
    crops: tuple[float, ...] = (1.15, 1.6)
    looks: int = 2
    look_hits: int = 2
    classifier_hits: int = 1
    redetect_score: float = 0.5
    weak_share: float = 0.03


@dataclass(frozen=True)
class Look:
    """One second look at a box: how (``classifier`` or ``redetect``), whether it agrees, and
    what it saw (the classifier's best ImageNet label, or the re-detection's label) with score."""

    kind: str
    agrees: bool
    label: str
    score: float
    at: float = 0.0  # the frame's time
    share: float = 0.0  # the classifier's probability for the COCO class's ImageNet classes

    def describe(self) -> str:
        verdict = "agrees" if self.agrees else "disagrees"
        seen = f"{self.label} {self.score:.2f}" if self.label else "nothing"
        return f"{self.kind} {verdict} ({seen})"


@dataclass
class ObjectTrack:
    """A chain of one label's detections across sampled frames (linked by tracker id or IoU),
    its second looks, and its verdict (``confirmed``, ``reason``, ``evidence()``)."""

    key: int
    label: str
    hits: list[tuple[int, float, Detection]] = field(default_factory=list)  # (frame index, time, det)
    looks: list[Look] = field(default_factory=list)
    confusion: str | None = None  # the scene confusion that suppressed it, if one did
    rules: Rules = field(default_factory=Rules, repr=False)

    @property
    def start(self) -> float:
        return self.hits[0][1]

    @property
    def end(self) -> float:
        return self.hits[-1][1]

    @property
    def best(self) -> Detection:
        return max((d for _i, _t, d in self.hits), key=lambda d: d.score)

    # steady and motion, kept up to date as hits are appended (the analysis job asks for the
    # verdict at every frame: recounting a 10-minute track each time would be quadratic)
    _seen: int = field(default=0, repr=False, compare=False)
    _steady: int = field(default=0, repr=False, compare=False)
    _motion: float = field(default=0.0, repr=False, compare=False)
    _first: Box | None = field(default=None, repr=False, compare=False)

    def _count(self) -> None:
        n = len(self.hits)
        if n < self._seen or (self._seen and self.hits[0][2].box != self._first):
            self._seen, self._steady, self._motion = 0, 0, 0.0  # hits replaced, not appended: recount
        if n == self._seen:
            return
        first = self._first = self.hits[0][2].box
        for k in range(self._seen, n):
            i, j = self.hits[k][0], k
            while j >= 0 and i - self.hits[j][0] < self.rules.n:
                j -= 1
            self._steady = max(self._steady, k - j)
            self._motion = max(self._motion, 1.0 - iou(first, self.hits[k][2].box))
        self._seen = n

    @property
    def steady(self) -> int:
        """The most hits in any ``n`` consecutive sampled frames."""
        self._count()
        return self._steady

    @property
    def motion(self) -> float:
        """How far the box moved: max over hits of 1 − IoU with the first box (0 = never moved)."""
        if not self.hits:
            return 0.0
        self._count()
        return self._motion

    @property
    def agreeing_look(self) -> Look | None:
        return next((lk for lk in self.looks if lk.agrees), None)

    @property
    def confirmed(self) -> bool:
        return self.verdict()[0]

    @property
    def reason(self) -> str:
        """Why the track is (not) confirmed, in one line an analyst can read."""
        return self.verdict()[1]

    def verdict(self) -> tuple[bool, str]:
        """(confirmed, why), by the rules of the module's docstring."""
        hits = f"hits {self.steady}/{self.rules.n}"
        if self.confusion:
            return False, f"unconfirmed: a learned confusion of this scene ({self.confusion})"
        look = self.agreeing_look
        by_classifier = look is not None and look.kind == "classifier"
        need = self.rules.classifier_hits if by_classifier else self.rules.look_hits
        strong = by_classifier or self.best.score >= self.rules.redetect_score or self.steady >= self.rules.n
        if look is not None and self.steady >= need and strong:
            return True, f"confirmed: second look {look.describe()}, {hits}"
        if self.steady >= self.rules.k and self.motion >= self.rules.moved:
            return True, f"confirmed: {hits}, moving"
        why = [hits if self.steady < self.rules.k else f"{hits} but static"]
        why += [(look or lk).describe() for lk in self.looks[:1]] or ["no second look"]
        return False, "unconfirmed: " + ", ".join(why)

    def evidence(self) -> dict[str, Any]:
        """What the verdict rests on, as plain data (for a track's stored ``data``)."""
        look = self.agreeing_look or (self.looks[0] if self.looks else None)
        return {"confirmed": self.confirmed, "reason": self.reason, "hits": len(self.hits),
                "steady": self.steady, "motion": round(self.motion, 3),
                "look": None if look is None else {"kind": look.kind, "agrees": look.agrees,
                                                    "label": look.label, "score": round(look.score, 3)},
                "confusion": self.confusion}


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def enlarged(box: Box, w: int, h: int, factor: float) -> tuple[int, int, int, int]:
    """The box grown ``factor`` times about its centre (a square around the larger side, so a
    classifier that stretches its input sees the object's shape), shifted inside the image and
    clipped to it; integer pixels."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1], 8.0) * factor
    x1, y1 = cx - side / 2, cy - side / 2
    x1 = min(max(x1, 0.0), max(0.0, w - side))
    y1 = min(max(y1, 0.0), max(0.0, h - side))
    x2, y2 = min(float(w), x1 + side), min(float(h), y1 + side)
    return int(x1), int(y1), max(int(x1) + 2, int(round(x2))), max(int(y1) + 2, int(round(y2)))


# -- second looks -------------------------------------------------------------------------

def imagenet_ids(label: str) -> frozenset[int]:
    """The ImageNet-1k class ids that count as COCO class ``label`` (empty: no counterpart)."""
    from models.backends.imagenet import IMAGENET_CLASSES

    ids: set[int] = set()
    for item in COCO_TO_IMAGENET.get(label, ()):
        if isinstance(item, tuple):
            ids.update(range(item[0], item[1] + 1))
        else:
            ids.add(IMAGENET_CLASSES.index(item))
    return frozenset(ids)


class ClassifierLook:
    """The ImageNet classifier on the enlarged box crop, for classes with an ImageNet counterpart."""

    kind = "classifier"

    def __init__(self, tagger: Any = None, rules: Rules = Rules()) -> None:
        self._tagger = tagger
        self.rules = rules

    @property
    def tagger(self) -> Any:
        if self._tagger is None:
            from models.loaded import held

            self._tagger = held(CLASSIFIER)
        return self._tagger

    def can_see(self, label: str) -> bool:
        return label in COCO_TO_IMAGENET

    def looks(self, image: np.ndarray, dets: Sequence[Detection], t: float = 0.0) -> list[Look]:
        if not dets:
            return []
        h, w = image.shape[:2]
        views = len(self.rules.crops)
        crops = []
        for d in dets:
            for f in self.rules.crops:
                x1, y1, x2, y2 = enlarged(d.box, w, h, f)
                crops.append(image[y1:y2, x1:x2])
        probs = self.tagger.embed(crops)
        classes = self.tagger.classes
        out = []
        for j, d in enumerate(dets):
            ids = imagenet_ids(d.label)
            seen = []
            for p in probs[j * views:(j + 1) * views]:
                top = np.argsort(-p, kind="stable")[:self.rules.class_rank]
                share = float(sum(p[i] for i in ids))
                agrees = bool(ids) and (share >= self.rules.class_share or any(int(i) in ids for i in top))
                best = max(ids, key=lambda i: p[i]) if agrees else int(top[0])
                seen.append(Look(self.kind, agrees, classes[best], float(share if agrees else p[best]), t, share))
            out.append(max(seen, key=lambda lk: (lk.agrees, lk.share)))
        return out


class RedetectLook:
    """The same detector on the enlarged crop, mirrored: agrees when it finds the same label on
    the same place again (at its own score threshold)."""

    kind = "redetect"

    def __init__(self, detector: Any, rules: Rules = Rules()) -> None:
        self.detector = detector
        self.rules = rules

    def looks(self, image: np.ndarray, dets: Sequence[Detection], t: float = 0.0) -> list[Look]:
        if not dets:
            return []
        h, w = image.shape[:2]
        crops, where = [], []
        for d in dets:
            x1, y1, x2, y2 = enlarged(d.box, w, h, self.rules.enlarge)
            crops.append(np.ascontiguousarray(image[y1:y2, x1:x2][:, ::-1]))
            cw = x2 - x1  # the box in the mirrored crop's pixels
            where.append((cw - (d.box[2] - x1), d.box[1] - y1, cw - (d.box[0] - x1), d.box[3] - y1))
        out = []
        for d, box, found in zip(dets, where, self.detector.detect(crops)):
            same = [(iou(box, f.box), f) for f in found if f.label == d.label]
            match = max(same, key=lambda m: m[0], default=(0.0, None))
            if match[1] is not None and match[0] >= self.rules.redetect_iou:
                out.append(Look(self.kind, True, d.label, match[1].score, t))
            else:
                other = max(found, key=lambda f: f.score, default=None)
                out.append(Look(self.kind, False, "" if other is None else other.label,
                                0.0 if other is None else other.score, t))
        return out


class SecondLook:
    """The classifier where the class has an ImageNet counterpart, the re-detection otherwise
    (when a detector is given), and where the classifier disagrees but gives the class at least
    ``rules.weak_share``."""

    def __init__(self, detector: Any = None, tagger: Any = None, rules: Rules = Rules()) -> None:
        self.classifier = ClassifierLook(tagger, rules)
        self.redetect = RedetectLook(detector, rules) if detector is not None else None
        # the classifier could not load or run: its classes get no second look (the re-detection
        # alone would re-find the detector's own confusions), the others keep the re-detection
        self.classifier_off = False

    def min_hits(self, label: str) -> int:
        """Hits a track needs (in ``n`` consecutive frames) before this look is worth its cost: one
        for the classifier (its agreement confirms a glimpse), ``look_hits`` for the re-detection
        (the same detector again: its agreement confirms only a track seen that often, so a look
        at a one-frame flash is wasted — the detector run on a crop costs as much as on a frame)."""
        if self.classifier.can_see(label) and not self.classifier_off:
            return self.classifier.rules.classifier_hits
        return self.redetect.rules.look_hits if self.redetect is not None else 1

    def looks(self, image: np.ndarray, dets: Sequence[Detection], t: float = 0.0) -> list[Look | None]:
        by_cls = [i for i, d in enumerate(dets) if self.classifier.can_see(d.label)]
        by_det = [i for i, d in enumerate(dets) if not self.classifier.can_see(d.label)]
        out: list[Look | None] = [None] * len(dets)
        if self.classifier_off:
            by_cls = []
        for i, lk in zip(by_cls, self.classifier.looks(image, [dets[i] for i in by_cls], t)):
            out[i] = lk
            if not lk.agrees and lk.share >= self.classifier.rules.weak_share:
                by_det.append(i)  # the classifier half-sees it: let the re-detection decide
        if self.redetect is not None:
            for i, lk in zip(by_det, self.redetect.looks(image, [dets[i] for i in by_det], t)):
                if out[i] is not None:  # the classifier's weak share rides along as evidence
                    lk = replace(lk, kind="classifier (weak) + redetect", share=out[i].share)
                out[i] = lk if out[i] is None or lk.agrees else out[i]
        return out


# -- linking and confirming ---------------------------------------------------------------

class Confirmer:
    """Decide, frame by frame, which detections belong to confirmed tracks.

    Detections join the open track of their label that carries the same tracker ``track_id``
    (the analysis job's ByteTrack ids), else the one whose last box overlaps them most (IoU).

    Feed every sampled frame in order with ``update(t, image, detections)`` (frames with no
    detections too: they age the tracks); the second look runs on the frame's pixels at a
    track's first hits, so no frame has to be kept. ``tracks()`` gives every track with its
    verdict and evidence; ``verdicts()`` each detection's track. ``look`` is a
    :class:`SecondLook` (or anything with its ``looks``), None for hits only; ``confusions``
    a scene's :class:`SceneConfusions`.
    """

    def __init__(self, look: Any = None, rules: Rules = Rules(), confusions: SceneConfusions | None = None,
                 frame_size: tuple[int, int] | None = None) -> None:
        self.look = look
        self.rules = rules
        self.confusions = confusions
        self.frame_size = frame_size
        self._tracks: list[ObjectTrack] = []
        self._open: list[ObjectTrack] = []
        self._frame = -1
        self.look_calls = 0

    def update(self, t: float, image: np.ndarray | None, detections: Sequence[Detection]) -> list[ObjectTrack]:
        """Link this frame's detections into tracks; the track of each detection, in order."""
        self._frame += 1
        fi = self._frame
        if image is not None:
            self.frame_size = (image.shape[1], image.shape[0])
        self._open = [tr for tr in self._open if fi - tr.hits[-1][0] <= self.rules.max_gap + 1]
        pairs = sorted(((iou(tr.hits[-1][2].box, d.box), ti, di) for ti, tr in enumerate(self._open)
                        for di, d in enumerate(detections) if tr.label == d.label
                        and tr.hits[-1][0] < fi), reverse=True)
        owner: dict[int, ObjectTrack] = {}
        used: set[int] = set()
        for di, d in enumerate(detections):  # the tracker's id (ByteTrack, in the analysis job) links first
            ti = next((ti for ti, tr in enumerate(self._open) if d.track_id is not None and tr.label == d.label
                       and tr.hits[-1][2].track_id == d.track_id and tr.hits[-1][0] < fi), None)
            if ti is not None and ti not in used:
                used.add(ti)
                owner[di] = self._open[ti]
        for v, ti, di in pairs:
            if v < self.rules.link_iou:
                break
            if ti in used or di in owner:
                continue
            used.add(ti)
            owner[di] = self._open[ti]
        for di, d in enumerate(detections):
            tr = owner.get(di)
            if tr is None:
                tr = ObjectTrack(len(self._tracks) + 1, d.label, rules=self.rules)
                self._tracks.append(tr)
                self._open.append(tr)
                owner[di] = tr
            tr.hits.append((fi, float(t), d))
        if self.look is not None and image is not None:
            need = getattr(self.look, "min_hits", None)  # a look may wait for a track's hits (SecondLook)
            want = [di for di, d in enumerate(detections)
                    if len(owner[di].looks) < self.rules.looks and owner[di].agreeing_look is None
                    and (need is None or owner[di].steady >= need(d.label))]
            if want:
                self.look_calls += 1
                for di, lk in zip(want, self.look.looks(image, [detections[di] for di in want], float(t))):
                    if lk is not None:
                        owner[di].looks.append(lk)
        return [owner[di] for di in range(len(detections))]

    def tracks(self) -> list[ObjectTrack]:
        if self.confusions is not None and self.frame_size:
            for tr in self._tracks:
                c = self.confusions.matching(tr, self.frame_size)
                tr.confusion = None if c is None else c.describe()
        return list(self._tracks)


def confirm(frames: Iterable[tuple[float, Sequence[Detection]]], image_at: Callable[[float], np.ndarray] | None = None,
            look: Any = None, rules: Rules = Rules(), confusions: SceneConfusions | None = None,
            frame_size: tuple[int, int] | None = None) -> list[ObjectTrack]:
    """Every track of a model run's sampled frames (``ModelOutput.frames``: ``(t, [Detection])``),
    with its verdict. ``image_at(t)`` gives the frame for a second look (None: hits only)."""
    c = Confirmer(look if image_at is not None else None, rules, confusions, frame_size)
    for t, dets in frames:
        image = image_at(t) if image_at is not None and dets else None
        c.update(t, image, list(dets))
    return c.tracks()


def with_verdicts(frames: Sequence[tuple[float, Sequence[Detection]]], tracks: Sequence[ObjectTrack]
                  ) -> list[tuple[float, list[tuple[Detection, ObjectTrack]]]]:
    """The frames again, each detection paired with its track (and so its verdict)."""
    of = {id(d): tr for tr in tracks for _i, _t, d in tr.hits}
    return [(t, [(d, of[id(d)]) for d in dets if id(d) in of]) for t, dets in frames]


# -- a scene's confusions -----------------------------------------------------------------

@dataclass(frozen=True)
class Confusion:
    """A class that fires on a static region of a camera's normal footage. ``box`` is in
    fractions of the frame (x1, y1, x2, y2); ``share``: the fraction of the footage's sampled
    frames it fired in; ``suppressed``: whether it is suppressed there now (undoable)."""

    label: str
    box: Box
    share: float
    score: float
    suppressed: bool = False

    def describe(self) -> str:
        x1, y1, x2, y2 = self.box
        return (f"{self.label} on a static region ({x1:.2f},{y1:.2f})-({x2:.2f},{y2:.2f}), "
                f"in {self.share:.0%} of the normal footage, score up to {self.score:.2f}")


@dataclass
class SceneConfusions:
    """A scene's (a camera's) learned confusions: a list the analyst sees, marks and unmarks —
    nothing is deleted. ``learn`` adds candidates; ``suppress``/``restore`` flip the mark."""

    entries: list[Confusion] = field(default_factory=list)
    min_share: float = 0.3  # fired in at least this share of the normal footage's frames
    max_motion: float = 0.3  # and its box stayed put (1 − IoU with its first box)
    match_iou: float = 0.3

    def learn(self, frames: Sequence[tuple[float, Sequence[Detection]]], frame_size: tuple[int, int],
              rules: Rules = Rules()) -> list[Confusion]:
        """The classes that fire on a static region of ``frames`` (a camera's normal footage,
        with nothing of interest in it), added as candidates (not suppressed yet); returned."""
        n = max(1, len(frames))
        w, h = frame_size
        new = []
        for tr in confirm(frames, rules=replace(rules, max_gap=max(rules.max_gap, 4))):
            if len(tr.hits) / n < self.min_share or tr.motion > self.max_motion:
                continue
            boxes = np.array([d.box for _i, _t, d in tr.hits], dtype=np.float64)
            x1, y1, x2, y2 = np.median(boxes, axis=0)
            c = Confusion(tr.label, (x1 / w, y1 / h, x2 / w, y2 / h), len(tr.hits) / n, tr.best.score)
            if not any(e.label == c.label and iou(e.box, c.box) >= self.match_iou for e in self.entries):
                self.entries.append(c)
                new.append(c)
        return new

    def _mark(self, label: str, box: Box | None, value: bool) -> int:
        count = 0
        for i, e in enumerate(self.entries):
            if e.label == label and (box is None or iou(e.box, box) >= self.match_iou):
                self.entries[i] = replace(e, suppressed=value)
                count += 1
        return count

    def suppress(self, label: str | Iterable[Confusion], box: Box | None = None) -> int:
        """Mark a class (optionally only near ``box``, frame fractions), or the given entries, as
        this scene's confusion; how many entries changed."""
        if isinstance(label, str):
            return self._mark(label, box, True)
        return sum(self._mark(c.label, c.box, True) for c in label)

    def restore(self, label: str, box: Box | None = None) -> int:
        """Undo ``suppress``: the entries stay in the list, unmarked."""
        return self._mark(label, box, False)

    @property
    def suppressed(self) -> list[Confusion]:
        return [e for e in self.entries if e.suppressed]

    def matching(self, track: ObjectTrack, frame_size: tuple[int, int]) -> Confusion | None:
        """The suppressed confusion a track falls on (same label, same place), if any."""
        w, h = frame_size
        x1, y1, x2, y2 = median_box(track)
        where = (x1 / w, y1 / h, x2 / w, y2 / h)
        return next((e for e in self.suppressed if e.label == track.label
                     and iou(e.box, where) >= self.match_iou), None)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"label": e.label, "box": [round(v, 4) for v in e.box], "share": round(e.share, 3),
                 "score": round(e.score, 3), "suppressed": e.suppressed} for e in self.entries]

    @classmethod
    def from_json(cls, rows: Iterable[dict[str, Any]]) -> SceneConfusions:
        return cls([Confusion(str(r["label"]), tuple(float(v) for v in r["box"]), float(r["share"]),
                              float(r["score"]), bool(r.get("suppressed", False))) for r in rows])


MEDIAN_SAMPLE = 257  # hits a track's median box is taken over (evenly spread): a day-long track stays cheap


def median_box(track: ObjectTrack) -> np.ndarray:
    """The median box of a track's hits, over at most MEDIAN_SAMPLE of them evenly spread (the
    whole track when shorter), cached until the track gains hits: a static object held across
    a day of windows is asked once per window."""
    n = len(track.hits)
    cached = getattr(track, "_median", None)
    if cached is not None and cached[0] == n:
        return cached[1]
    idx = np.linspace(0, n - 1, min(n, MEDIAN_SAMPLE)).round().astype(np.int64) if n else np.zeros(0, np.int64)
    box = np.median(np.array([track.hits[i][2].box for i in idx], dtype=np.float64), axis=0)
    track._median = (n, box)
    return box


# -- where a scene's confusions live: the project's settings, one entry per scene -----------

CONFUSIONS_KEY = "scene-confusions/"


def load_confusions(project: Any, scene: str = "default") -> SceneConfusions:
    """The scene's confusions stored in ``project`` (empty when none were learned). ``scene``
    names a camera or source; the project's default scene is used when there is no better key."""
    rows = project.get_setting(CONFUSIONS_KEY + scene, []) if project is not None else []
    try:
        return SceneConfusions.from_json(rows or [])
    except (KeyError, TypeError, ValueError):  # a damaged entry: learn again rather than crash
        return SceneConfusions()


def save_confusions(project: Any, confusions: SceneConfusions, scene: str = "default") -> None:
    """Store the scene's confusions (all entries, marked or not: the analyst's undo list)."""
    project.set_setting(CONFUSIONS_KEY + scene, confusions.to_json())


def stored_scenes(project: Any) -> list[str]:
    """The scenes with stored confusions (for the panel that shows them)."""
    keys = project.setting_keys(CONFUSIONS_KEY)
    return [k[len(CONFUSIONS_KEY):] for k in keys]


# -- what readers ask of a stored item --------------------------------------------------------

# The analysis tasks whose boxes this module checks. Faces (MTCNN's own three-stage cascade) and
# on-screen text are not objects in this sense: their items carry no verdict.
CHECKED_TASKS = ("detect",)
LEGACY_REASON = "unconfirmed: stored before Kestrel checked detections (analyse the file again to check)"


def is_confirmed(item_data: Any) -> bool:
    """Whether a stored object detection counts as present: the ``data`` of a box item (a
    "boxes" track of a detector) or of a presence item (a "detections" track), as written by
    :func:`core.perception.analysis.tracks_for`.

    True only where the analysis job confirmed it (``data["confirmed"] is True``). Anything
    else is unconfirmed: an explicit False, a run with confirmation off, and an item stored
    before confirmation existed (no ``"confirmed"`` key: nobody checked it, so it is kept and
    shown greyed, never a fact — analysing the file again checks it). Every reader (overlay,
    detections panel, chat facts, anomaly cues, tags, FOCUS rewards) asks this, not the score."""
    return isinstance(item_data, dict) and item_data.get("confirmed") is True


def why(item_data: Any) -> str:
    """The one-line reason stored with an item's verdict (the legacy reason where none is)."""
    if not isinstance(item_data, dict) or "confirmed" not in item_data:
        return LEGACY_REASON
    ev = item_data.get("evidence")
    reason = ev.get("reason") if isinstance(ev, dict) else None
    return str(reason) if reason else ("confirmed" if is_confirmed(item_data) else "unconfirmed")


def provenance(rules: Rules | None, confusions: Iterable[Confusion] = ()) -> dict[str, Any] | bool:
    """What decided the verdicts of a run, for its params (False: confirmation was off): the
    rules, the second look's classifier, and the scene confusions suppressed in it."""
    if rules is None:
        return False
    from dataclasses import asdict

    return {"rules": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(rules).items()},
            "classifier": CLASSIFIER, "redetect": "the same detector, enlarged crop, mirrored",
            "confusions": SceneConfusions([c for c in confusions if c.suppressed]).to_json()}


def item_evidence(track: ObjectTrack) -> dict[str, Any]:
    """A track's verdict as an item's data: ``{"confirmed": bool, "evidence": {...}}`` (the
    evidence: reason, hits, steady, motion, the second look, the confusion, the object's key)."""
    ev = track.evidence()
    ok = bool(ev.pop("confirmed"))
    ev["object"] = track.key
    return {"confirmed": ok, "evidence": ev}
