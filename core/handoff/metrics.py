"""How far to trust the detector on the analyst's own footage: precision, recall and IDF1 per
class against an imported ground truth (Qt-free; the Detections panel shows them).

What is counted, so that the numbers are exactly those of the MOT tools (py-motmetrics, the
CLEAR MOT metrics of Bernardin & Stiefelhagen 2008 and the ID metrics of Ristani et al. 2016):

* **Classes apart.** A box of one class never matches a box of another: every class is scored
  on its own (its own object ids, its own matching), and the overall row sums the classes' counts.
  Class names match whatever their case and spacing ("Person" of an annotation tool is "person").
* **Per frame** (TP, FP, FN): a truth box and a predicted box may pair when their IoU ≥ ``iou``
  (0.5). A pair that matched in an earlier frame (the same truth id with the same predicted id)
  is kept first while its IoU allows; the rest are paired by the Hungarian method
  (``scipy.optimize.linear_sum_assignment``) on 1 − IoU. Paired truth boxes are TPs, unpaired truth
  boxes FNs, unpaired predicted boxes FPs. A pair whose truth object was paired with another
  predicted id before is an ID switch (counted, and still a TP). Precision = TP / (TP + FP),
  recall = TP / (TP + FN).
* **IDF1**: one global matching of truth ids to predicted ids (each at most one) that maximises
  the ID true positives, IDTP = the frames where the two ids' boxes overlap with IoU ≥ ``iou``;
  IDFN = truth boxes − IDTP, IDFP = predicted boxes − IDTP, IDF1 = 2·IDTP / (2·IDTP + IDFP + IDFN).

**Which frames count** (:func:`score`'s rule). Only the frames where the detector looked: its
sampled frames (``frames``; by default the frames with a predicted box, plus the truth's frames
between the first and last of those). A frame that is evaluated counts all its boxes: truth
boxes with no prediction are misses, predictions with no truth box false positives. The truth
box of a sampled frame is the one annotated at that exact frame; where the truth is annotated
at other frames than the detector sampled, it is the nearest annotated frame within half the
smaller of the two steps (the detector's sampling step, the truth's annotation step; the earlier
on a tie). Then:

* where the truth is annotated at least as densely as the detector samples, a sampled frame with
  no annotated frame that near holds nothing (the annotator saw no object there): its
  predictions are false positives;
* where the truth is sparser than the detector samples, such a frame is not evaluated (the truth
  does not say what was there);
* sampled frames before the first or after the last annotated frame (by more than that half
  step) are not evaluated: the annotator did not look there.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np

from core.handoff.base import HandoffError
from core.handoff.boxes import Box, Frames, box_tracks, collect, frames_of

#: Fewer truth boxes than this and a percentage is not a measurement: the panel says so instead.
MIN_TRUTH = 10
#: A run's sampled frames are listed from its parameters up to this many (else: the frames with boxes).
MAX_SAMPLED = 2_000_000


@dataclass(frozen=True)
class ClassScore:
    """The counts of one class (``label``; the overall row's is ``""``) and what follows from them."""

    label: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    idtp: int = 0
    switches: int = 0

    @property
    def truth(self) -> int:
        """Truth boxes in the evaluated frames."""
        return self.tp + self.fn

    @property
    def pred(self) -> int:
        """Predicted boxes in the evaluated frames."""
        return self.tp + self.fp

    @property
    def idfp(self) -> int:
        return self.pred - self.idtp

    @property
    def idfn(self) -> int:
        return self.truth - self.idtp

    @property
    def precision(self) -> float | None:
        """None where the detector predicted nothing (0 / 0)."""
        return self.tp / self.pred if self.pred else None

    @property
    def recall(self) -> float | None:
        """None where the truth holds nothing."""
        return self.tp / self.truth if self.truth else None

    @property
    def idf1(self) -> float | None:
        n = self.truth + self.pred
        return 2 * self.idtp / n if n else None

    @property
    def enough(self) -> bool:
        """Enough truth boxes for the percentages to mean something (:data:`MIN_TRUTH`)."""
        return self.truth >= MIN_TRUTH


@dataclass(frozen=True)
class Scores:
    """Per class and overall, with which frames were evaluated and how."""

    overall: ClassScore
    classes: tuple[ClassScore, ...]  # most truth boxes first
    iou: float
    evaluated: int  # frames evaluated
    candidates: int  # the detector's frames considered (sampled, or with boxes when sampling is unknown)
    window: float  # the half step a truth frame may lie from a sampled frame, in frames (0: exact)
    fps: float
    sampled: bool = True  # candidates are the detector's sampled frames (False: only the frames with boxes)
    pred_name: str = ""
    truth_name: str = ""
    confirmed_only: bool = False  # only the detections Kestrel confirmed were scored

    def frames_line(self) -> str:
        """Where it was evaluated, in one line: "at the detector's 1 200 sampled frames, IoU ≥ 0.5"."""
        what = "sampled frames" if self.sampled else "frames with a detection or a truth box"
        if self.evaluated == self.candidates:
            text = f"at the detector's {_n(self.candidates)} {what}"
        else:
            text = f"at {_n(self.evaluated)} of the detector's {_n(self.candidates)} {what} (those the ground truth covers)"
        if self.window >= 1:
            text += f", each with the nearest ground-truth frame within {self.window / self.fps:.2f} s"
        if not self.sampled:
            text += " (the run's samples with nothing found are not recorded)"
        return text + f", IoU ≥ {self.iou:g}"


def _n(n: int) -> str:
    return f"{n:,}".replace(",", " ")


# -- matching, as the CLEAR MOT metrics do it ----------------------------------------------------

def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N×4, x1 y1 x2 y2) with every box of ``b`` (M×4): N×M."""
    a_min, a_max = a[:, None, :2], a[:, None, 2:]
    b_min, b_max = b[None, :, :2], b[None, :, 2:]
    i_size = np.maximum(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0)
    i_vol = np.prod(i_size, axis=-1)
    a_vol = np.prod(np.maximum(a_max - a_min, 0), axis=-1)
    b_vol = np.prod(np.maximum(b_max - b_min, 0), axis=-1)
    u_vol = a_vol + b_vol - i_vol
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(i_vol == 0, 0.0, i_vol / u_vol)


def _iou1(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """:func:`_iou` of one pair, the same arithmetic in plain floats (a frame's few boxes are
    quicker so than through arrays, and give the same bits)."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    i = iw * ih
    if i == 0:
        return 0.0
    u = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0) + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) - i
    return i / u


def _pairs(truth: list[Box], pred: list[Box], max_dist: float) -> dict[tuple[int, int], float]:
    """``{(i, j): 1 - IoU}`` of the pairs that may pair (1 - IoU ≤ ``max_dist``)."""
    if len(truth) * len(pred) <= 256:
        out = {}
        for i, t in enumerate(truth):
            for j, p in enumerate(pred):
                d = 1.0 - _iou1(t.box, p.box)
                if d <= max_dist:
                    out[(i, j)] = d
        return out
    dist = 1.0 - _iou(np.array([b.box for b in truth], dtype=np.float64),
                      np.array([b.box for b in pred], dtype=np.float64))
    ii, jj = np.nonzero(dist <= max_dist)
    return {(int(i), int(j)): float(dist[i, j]) for i, j in zip(ii, jj)}


def _assign(dist: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost pairs of ``dist`` (NaN: may not pair), as many pairs as possible first. A
    pair that may not pair costs more than any set of real ones (the same construction as
    motmetrics', so ties fall the same way)."""
    from scipy.optimize import linear_sum_assignment

    valid = np.isfinite(dist)
    if not valid.any():
        return []
    costs = dist
    if not valid.all():
        c = np.abs(dist[valid]).max() + 1
        costs = np.where(valid, dist, 2 * min(dist.shape) * c + 1)
    rows, cols = linear_sum_assignment(costs)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if valid[i, j]]


class _Class:
    """One class's running counts over the evaluated frames, in frame order."""

    def __init__(self, max_dist: float):
        self.max_dist = max_dist
        self.tp = self.fp = self.fn = self.switches = 0
        self.paired: dict[int, int] = {}  # truth id -> the predicted id it was last paired with
        self.overlaps: dict[tuple[int, int], int] = defaultdict(int)  # (truth id, pred id) -> frames with IoU ≥ thr

    def frame(self, truth: list[Box], pred: list[Box]) -> None:
        n, m = len(truth), len(pred)
        pairs = _pairs(truth, pred, self.max_dist) if n and m else {}
        if not pairs:
            self.fn += n
            self.fp += m
            return
        oids, hids = [b.track for b in truth], [b.track for b in pred]
        for key in {(oids[i], hids[j]) for i, j in pairs}:  # once a frame, even where a file repeats an id
            self.overlaps[key] += 1
        o_done, h_done = [False] * n, [False] * m
        matched = 0
        for i, o in enumerate(oids):  # pairs that held in earlier frames hold while they overlap
            h = self.paired.get(o)
            if h is None:
                continue
            j = next((j for j in range(m) if not h_done[j] and hids[j] == h), None)
            if j is not None and (i, j) in pairs:
                o_done[i] = h_done[j] = True
                matched += 1
        rest = [(i, j) for i, j in pairs if not (o_done[i] or h_done[j])]
        rows, cols = Counter(i for i, _j in rest), Counter(j for _i, j in rest)
        if any(rows[i] > 1 or cols[j] > 1 for i, j in rest):  # a choice to make: the Hungarian method
            dist = np.full((n, m), np.nan)
            for i, j in rest:
                dist[i, j] = pairs[(i, j)]
            rest = _assign(dist)
        # (else each pair is the only one of its truth and its prediction: every one of them is taken)
        for i, j in rest:
            o, h = oids[i], hids[j]
            if o in self.paired and self.paired[o] != h:
                self.switches += 1
            self.paired[o] = h
            matched += 1
        self.tp += matched
        self.fn += n - matched
        self.fp += m - matched

    def result(self, label: str) -> ClassScore:
        """The counts, with IDTP from the one global matching of truth ids to predicted ids."""
        return ClassScore(label, self.tp, self.fp, self.fn, _id_matching(self.overlaps), self.switches)


def _id_matching(overlaps: dict[tuple[int, int], int]) -> int:
    """The most frames of overlap a matching of truth ids to predicted ids (each at most one) can
    gather: the ID true positives. Solved apart for each group of ids that overlap one another
    (a day of footage has thousands of ids, each overlapping a few: no ids × ids matrix)."""
    from scipy.optimize import linear_sum_assignment

    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(x: tuple[str, int]) -> tuple[str, int]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for o, h in overlaps:
        parent[root(("o", o))] = root(("h", h))
    groups: dict[tuple[str, int], list[tuple[tuple[int, int], int]]] = defaultdict(list)
    for (o, h), k in overlaps.items():
        groups[root(("o", o))].append(((o, h), k))
    total = 0
    for pairs in groups.values():
        oi = {o: n for n, o in enumerate(sorted({o for (o, _h), _k in pairs}))}
        hi = {h: n for n, h in enumerate(sorted({h for (_o, h), _k in pairs}))}
        w = np.zeros((len(oi), len(hi)))
        for (o, h), k in pairs:
            w[oi[o], hi[h]] = k
        rows, cols = linear_sum_assignment(w, maximize=True)
        total += int(w[rows, cols].sum())
    return total


# -- which frames, which truth ---------------------------------------------------------------------

def _step(frames: list[int]) -> float:
    """The usual gap between consecutive frames of a sorted list (its median); inf for one frame."""
    if len(frames) < 2:
        return math.inf
    return float(np.median(np.diff(np.asarray(frames, dtype=np.int64))))


def _by_frame(boxes: Iterable[Box]) -> dict[int, list[Box]]:
    out: dict[int, list[Box]] = defaultdict(list)
    for b in boxes:
        out[b.frame].append(b)
    return out


def _truth_at(candidates: list[int], truth: dict[int, list[Box]]) -> tuple[list[tuple[int, list[Box]]], float]:
    """The evaluated frames with their truth boxes (see the module's rule), and the window."""
    annotated = sorted(truth)
    if not annotated:
        return [], 0.0
    step_d, step_t = _step(candidates), _step(annotated)
    window = min(step_d, step_t) / 2
    if not math.isfinite(window):
        window = 0.0
    sparse = step_t > step_d
    lo, hi = annotated[0] - window, annotated[-1] + window
    out = []
    for f in candidates:
        if f < lo or f > hi:
            continue
        if f in truth:
            out.append((f, truth[f]))
            continue
        k = bisect.bisect_left(annotated, f)
        near = [g for g in (annotated[k - 1] if k else None, annotated[k] if k < len(annotated) else None)
                if g is not None and abs(g - f) <= window]
        if near:
            out.append((f, truth[min(near, key=lambda g: (abs(g - f), g))]))
        elif not sparse:
            out.append((f, []))
    return out, window


def score(pred: list[Box], truth: list[Box], *, iou: float = 0.5, fps: float, frames: set[int] | None = None,
          state: Any = None) -> Scores:
    """Precision, recall and IDF1 per class and overall of ``pred`` against ``truth`` at the frames
    the detector looked at (``frames``: its sampled frames; default: the frames with a predicted
    box, and the truth's frames between the first and the last of those). See the module's rule."""
    from core.jobs import check

    if not (0.0 < iou <= 1.0):
        raise HandoffError(f"the IoU threshold must be in (0, 1], not {iou!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise HandoffError(f"the frame rate must be a positive number, not {fps!r}")
    order = lambda b: (b.frame, b.track)  # noqa: E731 -- a frame's boxes by id, as the MOT tools take them
    p_at, t_at = _by_frame(sorted(pred, key=order)), _by_frame(sorted(truth, key=order))
    if frames is not None:
        candidates = sorted({int(f) for f in frames})
    elif p_at:
        first, last = min(p_at), max(p_at)
        candidates = sorted(set(p_at) | {f for f in t_at if first <= f <= last})
    else:
        candidates = sorted(t_at)
    evaluated, window = _truth_at(candidates, t_at)
    max_dist = 1.0 - iou
    per: dict[str, _Class] = {}
    for k, (f, tbs) in enumerate(evaluated):
        if state is not None and k % 2000 == 0:
            check(state)
            state.set_progress(k / max(1, len(evaluated)), "matching boxes")
        pbs = p_at.get(f, [])
        t_cls, p_cls = _by_frame_label(tbs), _by_frame_label(pbs)
        for label in t_cls.keys() | p_cls.keys():
            acc = per.get(label)
            if acc is None:
                acc = per[label] = _Class(max_dist)
            acc.frame(t_cls.get(label, []), p_cls.get(label, []))
    classes = sorted((acc.result(label) for label, acc in per.items()), key=lambda c: (-c.truth, c.label))
    overall = ClassScore("", *(sum(getattr(c, f) for c in classes) for f in ("tp", "fp", "fn", "idtp", "switches")))
    return Scores(overall, tuple(classes), float(iou), len(evaluated), len(candidates), window, float(fps))


def _by_frame_label(boxes: list[Box]) -> dict[str, list[Box]]:
    """A frame's boxes by class; "Person" in an annotation tool is Kestrel's "person"."""
    out: dict[str, list[Box]] = defaultdict(list)
    for b in boxes:
        out[" ".join(b.label.split()).casefold()].append(b)
    return out


# -- from a project ------------------------------------------------------------------------------

def sampled_frames(project: Any, media_id: int, pred_track: str, frames: Frames) -> set[int] | None:
    """The frames the run behind ``pred_track`` sampled: ``start + k / fps`` for ``t < end`` from its
    parameters. None where they cannot be known: a change-gated run (its samples follow the
    footage), a track with no run, a run with no rate."""
    rec = next((r for r, _lod in project.track_heads(media_id, 0) if r.kind == "boxes" and r.name == pred_track), None)
    if rec is None or rec.run_id is None:
        return None
    run = next((r for r in project.list_runs(media_id) if r.id == rec.run_id), None)
    params = run.params if run is not None else {}
    rate, start = params.get("fps"), params.get("start", 0.0)
    end = params.get("end", frames.duration)
    if "gate" in params or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (rate, start, end)):
        return None
    if rate <= 0 or (end - start) * rate > MAX_SAMPLED:
        return None
    k = np.arange(max(1, int(math.ceil((end - start) * rate + 1e-9)) + 1))
    t = start + k / rate
    t = t[(t < end - 1e-9) | (k == 0)]
    return {frames.frame_of(x) for x in t.tolist()}


def score_tracks(project: Any, media_id: int, truth_track: str, *, pred_track: str | None = None,
                 iou: float = 0.5, confirmed_only: bool = False, state: Any = None) -> Scores:
    """Score a boxes track (default: the newest detector run's; ``confirmed_only``: the detections
    Kestrel confirmed) against the imported ground truth ``truth_track``, at the detector's sampled
    frames; both read by range."""
    from core.jobs import SubProgress

    tracks = box_tracks(project, media_id)
    if not any(name == truth_track for _id, name, _imp in tracks):
        raise HandoffError(f"this media file has no ground-truth track {truth_track!r}")
    if pred_track is None and not any(not imp for _id, _name, imp in tracks):
        raise HandoffError(f"no detections to score against {truth_track!r}: analyse the file with an "
                           "object detector first")
    sub = (lambda lo, hi, text: SubProgress(state, lo, hi, text)) if state is not None else (lambda *_a: None)
    grid, pred, pred_name = collect(project, media_id, track=pred_track, confirmed_only=confirmed_only,
                                    state=sub(0.0, 0.45, "detections: "))
    _grid, truth, truth_name = collect(project, media_id, track=truth_track, state=sub(0.45, 0.6, "ground truth: "))
    if not truth:
        raise HandoffError(f"the ground truth {truth_track!r} holds no boxes to score against")
    sampled = sampled_frames(project, media_id, pred_name, grid)
    result = score(pred, truth, iou=iou, fps=grid.fps, frames=sampled, state=sub(0.6, 1.0, ""))
    return replace(result, sampled=sampled is not None, pred_name=pred_name, truth_name=truth_name,
                   confirmed_only=confirmed_only)


@dataclass(frozen=True)
class ScoreRequest:
    """What the Detections panel asks: the detector's boxes against an imported ground truth."""

    project: Any  # the window's open Project (only read), or a project file's path
    media_id: int
    truth_track: str  # "ground truth: <file name>"
    pred_track: str | None = None  # None: the newest detector run's boxes
    iou: float = 0.5
    confirmed_only: bool = False  # score only the detections Kestrel confirmed


def score_job(req: ScoreRequest, state: Any) -> Scores:
    """The job behind the panel's table (reads the project by range; never writes)."""
    from core.handoff.jobs import opened
    from core.jobs import set_media_span

    with opened(req.project, writes=None) as project:
        set_media_span(state, frames_of(project, req.media_id).duration)
        return score_tracks(project, req.media_id, req.truth_track, pred_track=req.pred_track, iou=req.iou,
                            confirmed_only=req.confirmed_only, state=state)
