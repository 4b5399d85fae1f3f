"""Evidence behind the anomaly pass's object cues: which detections count, and what an event shows.

Why: a detector's score is not evidence that an object is there (SSD's "surfboard" at 0.89 on a
static tree started an event 2 s before the real one). The pass therefore runs
:class:`core.perception.confirm.Confirmer` over its sampled frames — the second look (ImageNet
classifier on the box crop, or a mirrored re-detection) runs while the frame is decoded — and only
detections of *confirmed* tracks fill the object feature columns (``n:*``, ``p:*``, ``det_total``,
``track_*``, ``box_*``), so only they can raise the ``new_class``/``crowd_jump`` cues that open an
event. Unconfirmed detections are kept: stored, greyed, and named in an event's reasons as weak
evidence (cue ``unconfirmed_object``, score 0), never a cause.

Hindsight: a track is confirmed by hits in ``k`` of ``n`` sampled frames (moving) or by a second
look; :class:`ObjectConfirmation` holds each window's row back ``Rules.n - 1`` windows, so a
detection counts from the first frame of a track confirmed within that horizon (the event's onset
is the object's first frame, not the frame that confirmed it). Windows of the normal footage are
held until the normal footage has been seen whole: the scene's confusions (classes that fire on a
static region of it, :class:`core.perception.confirm.SceneConfusions`) are learned there, marked
suppressed, and apply to every window of the pass, the normal footage included.

The scene key: confusions live in the project's settings under a scene name
(:func:`core.perception.confirm.load_confusions`): ``AnomalyRequest.scene`` (``main.py anomalies
--scene NAME``: the camera), ``"default"`` when none is given. Learned entries are suppressed by
default; the analyst sees them (CLI output, the Anomalies panel) and restores one (``--restore-
confusion LABEL``, or unticking it in the panel); a restored entry stays in the list, unmarked, and
is not suppressed again when the pass learns it again.

Evidence on screen: every detection the pass looked at is stored as a ``"boxes"`` track (the analysis
job's item format: ``{"box", "size", "model", "confirmed", "evidence"}``), so the player overlay and
the Detections panel show an event's object box at its time, and an object reason of an event
carries its box, frame size and time (``Reason.box``/``size``/``time``).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from core.anomaly.events import AnomalyEvent, Reason
from core.timeline import Item, Track

OBJECT_CUES = ("new_class", "crowd_jump")
WEAK_CUE = "unconfirmed_object"
WEAK_MAX = 3  # unconfirmed objects named per event, at most
BOXES_KIND = "boxes"


def boxes_name(model: str) -> str:
    """The name of the pass's boxes track (beside the analysis job's, which is named ``model``)."""
    return f"{model} (anomaly pass)"


class _LazyDetector:
    """The detector for the re-detection look, loaded the first time a second look needs it
    (the pass may reuse stored detections and have none loaded)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._det: Any = None

    def detect(self, images: Sequence[np.ndarray]) -> list:
        if self._det is None:
            from models.catalogue import load_model
            self._det = load_model(self.name)
        return self._det.detect(images)


def second_look(detector: Any = None, name: str | None = None) -> Any:
    """The :class:`SecondLook` of the pass: the classifier (loaded on first use) and the re-detection
    with ``detector`` (or the catalogue's ``name``, loaded on first use)."""
    from core.perception.confirm import SecondLook

    if detector is None and name:
        detector = _LazyDetector(name)
    return SecondLook(detector)


class ObjectConfirmation:
    """Feeds a Confirmer window by window and releases each window's row with the detections that
    count (see the module docstring). ``normal``: the window indices (first, last) of the normal
    footage, where the scene's confusions are learned; None: nothing is learned."""

    def __init__(self, look: Any = None, rules: Any = None, confusions: Any = None,
                 normal: tuple[int, int] | None = None) -> None:
        from core.perception.confirm import Confirmer, Rules, SceneConfusions

        self.rules = rules or Rules()
        self.confirmer = Confirmer(look, self.rules)
        self.confusions = confusions if confusions is not None else SceneConfusions()
        self.normal = normal
        self.learned: list[Any] = []  # confusions learned in this pass (suppressed)
        self.lag = self.rules.n - 1
        self.size: tuple[int, int] | None = None
        self._pending: list[tuple[int, float, list, list, np.ndarray]] = []
        self._done_learning = normal is None
        self.counted = self.left_out = 0

    def add(self, i: int, t: float, image: np.ndarray | None, dets: Sequence[Any], size: tuple[int, int] | None,
            row: np.ndarray) -> list[tuple[int, np.ndarray, list]]:
        """One window (index ``i``, time ``t``, its first frame and detections, its row without the
        object columns); returns the windows now released: (index, row, detections that count)."""
        if size:
            self.size = (int(size[0]), int(size[1]))
        dets = list(dets)
        tracks = self.confirmer.update(t, image, dets)
        self._pending.append((i, float(t), dets, tracks, row))
        if not self._done_learning and self.normal is not None and i >= self.normal[1]:
            self._learn()
        return self._release(i)

    def flush(self) -> list[tuple[int, np.ndarray, list]]:
        if not self._done_learning:
            self._learn()
        return self._release(None)

    def _learn(self) -> None:
        a, b = self.normal or (0, -1)
        frames = [(t, dets) for i, t, dets, _tr, _r in self._pending if a <= i <= b]
        if frames and self.size:
            new = self.confusions.learn(frames, self.size, self.rules)
            self.confusions.suppress(new)
            self.learned = new
        self._done_learning = True

    def counts(self, track: Any) -> bool:
        """Whether a track counts now: confirmed, and not on one of the scene's suppressed confusions."""
        c = self.confusions.matching(track, self.size) if self.size and self.confusions.suppressed else None
        track.confusion = None if c is None else c.describe()
        return track.confirmed

    def _release(self, now: int | None) -> list[tuple[int, np.ndarray, list]]:
        out = []
        while self._pending:
            j = self._pending[0][0]
            if now is not None and (now - j < self.lag or not self._done_learning):
                break
            _j, _t, dets, tracks, row = self._pending.pop(0)
            kept = [d for d, tr in zip(dets, tracks) if self.counts(tr)]
            self.counted += len(kept)
            self.left_out += len(dets) - len(kept)
            out.append((j, row, kept))
        return out

    def records(self) -> list[dict[str, Any]]:
        """Every detection looked at, with its track's final verdict and evidence (time order)."""
        out = []
        for tr in self.confirmer.tracks():
            confirmed = self.counts(tr)
            ev = tr.evidence()
            for _i, t, d in tr.hits:
                out.append({"t": round(float(t), 3), "label": d.label, "score": round(float(d.score), 4),
                            "box": [round(float(v), 1) for v in d.box], "size": list(self.size or (0, 0)),
                            "confirmed": bool(confirmed), "evidence": ev, "track": tr.key})
        out.sort(key=lambda r: (r["t"], -r["score"]))
        return out


# -- the boxes track -----------------------------------------------------------------------------

def boxes_track(records: Sequence[Mapping[str, Any]], model: str, window_s: float, run_id: int | None = None,
                meta: Mapping[str, Any] | None = None) -> Track:
    """The pass's detections as a hidden ``"boxes"`` track in the analysis job's item format."""
    items = [Item(float(r["t"]), float(r["t"]) + window_s, str(r["label"]), float(r["score"]), run_id,
                  {"box": list(r["box"]), "size": list(r["size"]), "model": model, "confirmed": bool(r["confirmed"]),
                   "evidence": dict(r["evidence"]), "track": int(r["track"])})
             for r in records]
    return Track(BOXES_KIND, boxes_name(model), items, run_id=run_id, visible=False,
                 meta={"model": model, "task": "detect", "producer": "core.anomaly.pipeline", **dict(meta or {})})


def records_from_track(track: Track) -> list[dict[str, Any]]:
    """The records again from a stored boxes track (when the pass reuses stored features)."""
    out = []
    for it in track.items:
        d = it.data
        try:
            out.append({"t": round(float(it.start), 3), "label": it.label, "score": float(it.confidence),
                        "box": [float(v) for v in d["box"]], "size": [int(v) for v in d["size"]],
                        "confirmed": d.get("confirmed") is True, "evidence": dict(d.get("evidence") or {}),
                        "track": int(d.get("track", -1))})
        except (KeyError, TypeError, ValueError):
            continue
    return out


# -- events: reasons with their evidence ----------------------------------------------------------

def how_confirmed(evidence: Mapping[str, Any], n: int = 5) -> str:
    """"confirmed: classifier 0.83" / "confirmed: hits 4/5, moving" / the reason it is not."""
    if not evidence.get("confirmed"):
        return str(evidence.get("reason") or "unconfirmed")
    look = evidence.get("look") or {}
    if look.get("agrees"):
        return f"confirmed: {look.get('kind', 'second look')} {float(look.get('score', 0.0)):.2f}"
    return f"confirmed: hits {evidence.get('steady', '?')}/{n}, moving"


_NEW_OBJECT = re.compile(r"^new object: (?P<label>[^(]+?) \(detector score (?P<score>[0-9.]+)\)")


def _object_of(r: Reason) -> str | None:
    """The class a cue's reason is about (None: any class)."""
    if r.cue == "new_class":
        m = _NEW_OBJECT.match(r.text)
        return m.group("label").strip() if m else None
    if r.cue == "crowd_jump" and " people" in r.text:
        return "person"
    return None


def _with_evidence(r: Reason, rec: Mapping[str, Any]) -> Reason:
    how = how_confirmed(rec["evidence"])
    if r.cue == "new_class":
        text = _NEW_OBJECT.sub(lambda m: f"new object: {m.group('label')} ({how}; detector score "
                                         f"{m.group('score')})", r.text, count=1)
    else:
        text = f"{r.text} ({rec['label']} {how})"
    return replace(r, text=text, box=tuple(rec["box"]), size=tuple(rec["size"]), confirmed=True)


def annotate_events(events: Sequence[AnomalyEvent], records: Sequence[Mapping[str, Any]], window_s: float) -> None:
    """Give each event's object reasons their confirmed object's box (and how it was confirmed),
    name unconfirmed detections inside it as weak evidence, and order the reasons: confirmed object
    reasons first, then the other cues, strongest first, then the weak evidence."""
    by_t: dict[float, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        by_t[round(float(rec["t"]), 3)].append(rec)
    times = np.array(sorted(by_t)) if by_t else np.zeros(0)
    for e in events:
        strong: list[Reason] = []
        for r in (r for r in e.reasons if r.cue != WEAK_CUE):
            if r.cue in OBJECT_CUES:
                label = _object_of(r)
                cands = [rec for rec in by_t.get(round(r.time, 3), ()) if rec["confirmed"]
                         and (label is None or rec["label"] == label)]
                if cands:
                    r = _with_evidence(r, max(cands, key=lambda rec: rec["score"]))
            strong.append(r)
        strong.sort(key=lambda r: (0 if r.confirmed else 1, -r.score))
        weak: dict[str, Mapping[str, Any]] = {}
        inside = times[(times >= e.start - 1e-6) & (times < e.end - 1e-6)] if times.size else times
        for t in inside:
            for rec in by_t[round(float(t), 3)]:
                if not rec["confirmed"] and rec["score"] > weak.get(rec["label"], {"score": -1.0})["score"]:
                    weak[rec["label"]] = rec
        extra = [Reason(WEAK_CUE, "video", 0.0, f"weak evidence, not counted: {rec['label']} (detector score "
                                                  f"{rec['score']:.2f}, {how_confirmed(rec['evidence'])})",
                        float(rec["t"]), tuple(rec["box"]), tuple(rec["size"]), False)
                 for rec in sorted(weak.values(), key=lambda rec: -rec["score"])[:WEAK_MAX]]
        e.reasons = strong + extra


def started_by_unconfirmed(event: AnomalyEvent, curve: Any, records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an event opened on an object cue (the top cue of its first window) with no confirmed
    detection of that object in that window: what confirmation must make impossible
    (``bench/anomaly.py`` counts it)."""
    hit = np.nonzero(np.abs(np.asarray(curve.times) - event.start) < 1e-6)[0]
    if not hit.size:
        return False
    i = int(hit[0])
    top = curve.top_cue(i)
    if top not in OBJECT_CUES:
        return False
    label = _object_of(Reason(top, "video", 0.0, curve.reasons[top][i], event.start))
    return not any(rec["confirmed"] and (label is None or rec["label"] == label)
                   for rec in records if abs(float(rec["t"]) - event.start) < 1e-6)
