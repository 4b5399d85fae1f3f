"""Anomaly events: thresholded, merged segments of the score, with reasons and feedback.

An event opens at the first window whose score reaches the threshold (the sensitivity's,
:func:`core.anomaly.score.sensitivity_threshold`), stays open while windows above it follow
within ``merge_gap_s`` *for the same cause*, and ends with the last such window. The cause
(its identity) is the top cue of its first window — for a new object, the cue and the class;
a later window continues the event while that cause still contributes ``REASON_MIN`` or is
again the top cue. Why: on busy footage, anomalies of different causes follow each other
closely (measured on the Sintel trailer: a planted bus, then unusual music, then birds, then
a bed, all within 2 s gaps), and one 17-s event labelled "bird" would hide the bus. Its reasons are the cues
whose contribution reached ``REASON_MIN`` somewhere in it (strongest first, with the text
at that cue's strongest window); the first one is its label and modality. The same
:class:`EventBuilder` runs over a file's curve and over a live source's windows, so live
alerts fire at the event's first window.

Feedback (confirm / dismiss) is stored twice — in the event's item data on the timeline,
and in the project setting ``anomaly.feedback`` (one entry per media and event, a later
verdict replacing an earlier one). The rule that uses it next time: each cue's weight is
its default × ``CONFIRM_FACTOR`` (1.25) per confirmed event that named it × ``DISMISS_FACTOR``
(0.8) per dismissed one, clamped to [``W_MIN``, ``W_MAX``] = [0.1, 1.5]. Weights are
recomputed from the whole log every time, so changing a verdict never counts twice.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from core.anomaly.score import CUES, DEFAULT_WEIGHTS, ScoreCurve
from core.timeline import Item, Track

log = logging.getLogger(__name__)

REASON_MIN = 0.2
MERGE_GAP_S = 2.0
CONFIRM_FACTOR, DISMISS_FACTOR = 1.25, 0.8
W_MIN, W_MAX = 0.1, 1.5
VERDICTS = ("confirmed", "dismissed")
FEEDBACK_KEY = "anomaly.feedback"
SCORE_TRACK = ("anomaly", "score")
EVENTS_TRACK = ("anomaly-events", "events")
THUMBS_KEY = "anomaly/thumbnails"


@dataclass(frozen=True)
class Reason:
    cue: str
    modality: str
    score: float  # the cue's largest contribution inside the event
    text: str
    time: float  # window where that happened
    # a reason that names an object: its box (pixels of a ``size`` = (w, h) frame) at ``time``, and
    # whether the object is confirmed (core.anomaly.evidence); None: the reason names no object
    box: tuple[float, float, float, float] | None = None
    size: tuple[int, int] | None = None
    confirmed: bool | None = None


@dataclass
class AnomalyEvent:
    start: float
    end: float
    peak: float
    peak_time: float
    reasons: list[Reason] = field(default_factory=list)
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)  # small RGB uint8
    feedback: str | None = None  # "confirmed" | "dismissed" | None

    @property
    def id(self) -> str:
        return f"ev-{int(round(self.start * 1000))}"

    @property
    def label(self) -> str:
        return self.reasons[0].text if self.reasons else "anomaly"

    @property
    def modality(self) -> str:
        return self.reasons[0].modality if self.reasons else ""

    @property
    def cues(self) -> list[str]:
        return [r.cue for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the thumbnail)."""
        return {"id": self.id, "start": round(self.start, 3), "end": round(self.end, 3), "peak": round(self.peak, 4),
                "peak_time": round(self.peak_time, 3), "modality": self.modality, "cues": self.cues,
                "reasons": [{**asdict(r), "score": round(r.score, 4), "time": round(r.time, 3)} for r in self.reasons],
                "feedback": self.feedback}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AnomalyEvent":
        """From stored data, trusting none of it: times and scores must be finite numbers
        (ValueError otherwise), and a feedback that is not one of :data:`VERDICTS` is read
        as no feedback (logged)."""
        nums = [float(d[k]) for k in ("start", "end", "peak", "peak_time")]
        reasons = [Reason(str(r["cue"]), str(r["modality"]), float(r["score"]), str(r["text"]), float(r["time"]),
                          _floats(r.get("box"), 4), _ints(r.get("size")),
                          r.get("confirmed") if isinstance(r.get("confirmed"), bool) else None)
                   for r in d.get("reasons", [])]
        if not all(math.isfinite(x) for x in nums + [v for r in reasons for v in (r.score, r.time)]):
            raise ValueError("an anomaly event has a time or score that is not a finite number")
        return cls(*nums, reasons, None, known_verdict(d.get("feedback"), "a stored anomaly event"))


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    """A stored box: ``n`` finite numbers, else None (a damaged box is no box)."""
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(x) for x in out) else None


def _ints(v: Any) -> tuple[int, int] | None:
    got = _floats(v, 2)
    return None if got is None or min(got) <= 0 else (int(got[0]), int(got[1]))


class EventBuilder:
    """Windows in, events out: ``push`` returns ``[("opened" | "updated" | "closed", event)]``."""

    def __init__(self, threshold: float, window_s: float, merge_gap_s: float = MERGE_GAP_S) -> None:
        self.threshold = float(threshold)
        self.window_s = float(window_s)
        self.merge_gap_s = float(merge_gap_s)
        self._open: AnomalyEvent | None = None
        self._best: dict[str, tuple[float, str, float]] = {}
        self._cause: tuple[str, str] = ("", "")

    def push(self, t: float, score: float, contrib: Mapping[str, float],
             reasons: Mapping[str, str]) -> list[tuple[str, AnomalyEvent]]:
        out: list[tuple[str, AnomalyEvent]] = []
        ev = self._open
        above = score >= self.threshold
        if ev is not None and ((not above and t - ev.end >= self.merge_gap_s - 1e-9)
                               or (above and not self._same_cause(contrib, reasons))):
            out.append(("closed", ev))
            self._open = ev = None
        if above:
            if ev is None:
                ev = self._open = AnomalyEvent(t, t + self.window_s, score, t)
                self._best = {}
                top = max(contrib, key=lambda c: contrib[c], default="")
                self._cause = (top, _subject(top, reasons.get(top, "")))
                kind = "opened"
            else:
                ev.end = t + self.window_s
                kind = "updated"
            if score > ev.peak:
                ev.peak, ev.peak_time = score, t
        if score >= self.threshold and ev is not None:
            for c, k in contrib.items():
                if k > self._best.get(c, (0.0, "", 0.0))[0]:
                    self._best[c] = (float(k), reasons.get(c, ""), float(t))
            ev.reasons = self._reasons()
            out.append((kind, ev))
        return out

    def _same_cause(self, contrib: Mapping[str, float], reasons: Mapping[str, str]) -> bool:
        cue, subject = self._cause
        top = max(contrib, key=lambda c: contrib[c], default="")
        if contrib.get(cue, 0.0) >= REASON_MIN or top == cue:
            return _subject(cue, reasons.get(cue, "")) == subject
        return False

    def flush(self) -> list[tuple[str, AnomalyEvent]]:
        ev, self._open = self._open, None
        return [("closed", ev)] if ev is not None else []

    def _reasons(self) -> list[Reason]:
        ranked = sorted(self._best.items(), key=lambda kv: -kv[1][0])
        keep = [(c, v) for i, (c, v) in enumerate(ranked) if v[0] >= REASON_MIN or i == 0]
        out = []
        for c, (k, text, at) in keep:
            cue = CUES.get(c)
            if k > 0:
                out.append(Reason(c, cue.modality if cue else "", k, text or (cue.title if cue else c), at))
        return out


def _subject(cue: str, reason: str) -> str:
    """What a cue is about, beyond its name: the class of a new object ("new object: bus")."""
    return reason.split(" (")[0] if cue == "new_class" else ""


def find_events(curve: ScoreCurve, threshold: float, merge_gap_s: float = MERGE_GAP_S) -> list[AnomalyEvent]:
    """Events of a whole score curve (the same builder live alerts use)."""
    b = EventBuilder(threshold, curve.window_s, merge_gap_s)
    events: list[AnomalyEvent] = []
    for i, t in enumerate(curve.times):
        contrib, reasons = curve.window(i)
        events += [e for kind, e in b.push(float(t), float(curve.score[i]), contrib, reasons) if kind == "closed"]
    events += [e for _k, e in b.flush()]
    return events


# -- feedback ----------------------------------------------------------------------------------

def weights_from_feedback(entries: Sequence[Mapping[str, Any]],
                          defaults: Mapping[str, float] = DEFAULT_WEIGHTS) -> dict[str, float]:
    """Cue weights after the analyst's verdicts (the rule in the module docstring)."""
    w = dict(defaults)
    for e in entries:
        f = {"confirmed": CONFIRM_FACTOR, "dismissed": DISMISS_FACTOR}.get(e.get("verdict"), 1.0)
        for c in e.get("cues", []):
            if c in w:
                w[c] *= f
    return {c: float(min(W_MAX, max(W_MIN, v))) for c, v in w.items()}


def known_verdict(value: Any, where: str = "the feedback log") -> str | None:
    """``value`` if it is one of :data:`VERDICTS`, else None: a verdict read from a project is
    trusted only when it is one Kestrel writes (anything else is logged and read as none)."""
    if value is None or (isinstance(value, str) and value in VERDICTS):
        return value
    log.warning("ignoring an unknown anomaly verdict in %s: %.80r", where, value)
    return None


def feedback_log(project: Any) -> list[dict[str, Any]]:
    """The stored verdicts: entries with a known verdict and a list of cue names; anything
    else in the setting is skipped (logged)."""
    got = project.get_setting(FEEDBACK_KEY, [])
    if not isinstance(got, list):
        if got:
            log.warning("ignoring the anomaly feedback log: it is not a list")
        return []
    out = []
    for e in got:
        if (isinstance(e, dict) and known_verdict(e.get("verdict"), f"setting {FEEDBACK_KEY!r}") is not None
                and isinstance(e.get("cues", []), list) and all(isinstance(c, str) for c in e.get("cues", []))):
            out.append(e)
        elif not (isinstance(e, dict) and e.get("verdict") not in VERDICTS):
            log.warning("ignoring a damaged entry of the anomaly feedback log")
    return out


def current_weights(project: Any | None) -> dict[str, float]:
    return weights_from_feedback(feedback_log(project)) if project is not None else dict(DEFAULT_WEIGHTS)


def set_feedback(project: Any, media_id: int, event: AnomalyEvent, verdict: str | None) -> dict[str, float]:
    """Confirm or dismiss an event (None clears the verdict); returns the new cue weights.

    Writes the project setting and the event's item on the timeline (call it on the
    project's writer thread), in one transaction with the read of the verdicts so far: a
    verdict another process stores meanwhile is never overwritten, a kill leaves both or neither."""
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS} or None, not {verdict!r}")
    with project.batch():
        return _set_feedback(project, media_id, event, verdict)


def _set_feedback(project: Any, media_id: int, event: AnomalyEvent, verdict: str | None) -> dict[str, float]:
    from core.perception import ops

    entries = [e for e in feedback_log(project) if not (e.get("media") == media_id and e.get("event") == event.id)]
    if verdict is not None:
        entries.append({"media": media_id, "event": event.id, "start": round(event.start, 3),
                        "end": round(event.end, 3), "cues": event.cues, "verdict": verdict,
                        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    project.set_setting(FEEDBACK_KEY, entries)
    event.feedback = verdict
    for tr in ops.load_tracks(project, media_id):
        if tr.key == EVENTS_TRACK:
            items = [Item(i.start, i.end, i.label, i.confidence, i.run_id,
                          {**i.data, "feedback": verdict} if i.data.get("id") == event.id else i.data)
                     for i in tr.items]
            ops.save_track(project, media_id, Track(tr.kind, tr.name, items, run_id=tr.run_id, meta=tr.meta))
    return weights_from_feedback(entries)


# -- storage on the timeline -------------------------------------------------------------------

def score_track(curve: ScoreCurve, run_id: int | None = None, meta: Mapping[str, Any] | None = None) -> Track:
    """The curve as a track of kind "anomaly": one item per window, confidence = score."""
    items = []
    for i, t in enumerate(curve.times):
        top = curve.top_cue(i)
        data = {c: round(float(v[i]), 3) for c, v in curve.contrib.items() if v[i] >= 0.01}
        items.append(Item(float(t), float(t) + curve.window_s, top, round(float(curve.score[i]), 4), run_id,
                          {"cues": data} if data else {}))
    return Track(SCORE_TRACK[0], SCORE_TRACK[1], items, run_id=run_id, meta=dict(meta or {}))


def events_track(events: Sequence[AnomalyEvent], run_id: int | None = None,
                 meta: Mapping[str, Any] | None = None) -> Track:
    """Events as a track of kind "anomaly-events" (label = top reason, confidence = peak)."""
    items = []
    for k, e in enumerate(events):
        d = e.to_dict()
        d["thumb"] = k if e.thumbnail is not None else -1
        items.append(Item(e.start, e.end, e.label, round(e.peak, 4), run_id, d))
    return Track(EVENTS_TRACK[0], EVENTS_TRACK[1], items, run_id=run_id, meta=dict(meta or {}))


def carry_feedback(events: Sequence[AnomalyEvent], old: Sequence[AnomalyEvent]) -> None:
    """A re-run keeps the analyst's verdicts on events that overlap the old ones by half."""
    for e in events:
        for o in old:
            inter = min(e.end, o.end) - max(e.start, o.start)
            if o.feedback and inter > 0.5 * min(e.end - e.start, o.end - o.start):
                e.feedback = o.feedback
                break


def rethreshold(curve: ScoreCurve, events: Sequence[AnomalyEvent], sensitivity: float) -> list[AnomalyEvent]:
    """Events of ``curve`` at another sensitivity, instantly (no recomputation); verdicts and
    thumbnails of the ``events`` shown so far carry over. (Their object evidence comes from
    ``core.anomaly.evidence.annotate_events`` with the pass's detections.)"""
    from core.anomaly.score import sensitivity_threshold

    out = find_events(curve, sensitivity_threshold(sensitivity))
    carry_feedback(out, events)
    for e in out:
        for o in events:
            if o.thumbnail is not None and o.start <= e.peak_time < o.end:
                e.thumbnail = o.thumbnail
    return out


def store_events(project: Any, media_id: int, curve: ScoreCurve, events: Sequence[AnomalyEvent],
                 run_id: int | None, meta: Mapping[str, Any] | None = None) -> None:
    """Write the score track, the events track and the thumbnails (existing Project methods only)."""
    from core.perception import ops

    thumbs = [e.thumbnail for e in events if e.thumbnail is not None]
    if thumbs and len({t.shape for t in thumbs}) == 1:
        project.put_array(media_id, THUMBS_KEY, np.stack(thumbs).astype(np.uint8),
                          meta={"events": [e.id for e in events if e.thumbnail is not None]}, run_id=run_id)
    else:
        for e in events:
            e.thumbnail = None
    ops.save_track(project, media_id, score_track(curve, run_id, meta))
    ops.save_track(project, media_id, events_track(events, run_id, meta))


def load_events(project: Any, media_id: int, tracks: Sequence[Any] | None = None) -> list[AnomalyEvent]:
    """The stored events (with thumbnails and feedback), in time order. ``tracks``: the
    media's tracks when the caller has loaded them already (not read again)."""
    from core.perception import ops

    if tracks is None:
        tracks = ops.load_tracks(project, media_id)
    tr = next((t for t in tracks if t.key == EVENTS_TRACK), None)
    if tr is None:
        return []
    events = []
    for it in tr.items:
        try:
            events.append(AnomalyEvent.from_dict(it.data))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            log.warning("skipping a stored anomaly event that cannot be read: %s", e)
    got = project.get_array(media_id, THUMBS_KEY)
    if got is not None:
        arr, meta = got
        ids = meta.get("events")
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or not isinstance(ids, list):
            log.warning("ignoring the stored anomaly thumbnails: they are not RGB pictures with event ids")
            return events
        for e in events:
            if e.id in ids and ids.index(e.id) < len(arr):
                e.thumbnail = arr[ids.index(e.id)]
    return events


# -- live ---------------------------------------------------------------------------------------

class LiveMonitor:
    """A live processor: ``feed(chunk) -> [(kind, event)]`` with kind "opened" (alert at the
    event's first window), "updated" or "closed" — the file pass's featurizer, scorer and
    event rules, one window at a time.

    ``chunk`` is a ``core.media.live.LiveChunk`` (kind "video"/"audio", stream ``time``, ``image`` or
    ``samples`` [channels, n] at ``sample_rate``). A window is complete when every stream the
    featurizer expects has reached its end — or one stream is ``LAG_S`` ahead (the other
    stalled: its part of the window counts as missing). An alert therefore comes at most one
    window (plus ~70 ms of compute) after the anomaly starts: use 0.5 s windows for a 1 s goal.
    Without a model (``set_model`` not called yet: the first minutes of a camera) the
    detectors run against a baseline of what was seen so far, refreshed every ``REFRESH``
    windows, and :attr:`status` says so. ``rows`` keeps every feature row, so the caller can
    train on the first minutes (``features()``) as a background job, then ``set_model``.
    """

    REFRESH = 10
    LAG_S = 2.0

    def __init__(self, featurizer: Any, *, sensitivity: float = 0.5, weights: Mapping[str, float] | None = None,
                 model: Any = None, baseline: Any = None) -> None:
        from core.anomaly.score import sensitivity_threshold

        self.featurizer = featurizer
        self.window_s = featurizer.cfg.window_s
        self.weights = weights
        self.builder = EventBuilder(sensitivity_threshold(sensitivity), self.window_s)
        self.rows: list[tuple[float, np.ndarray]] = []
        self.scores: list[tuple[float, float]] = []
        self._t0: float | None = None
        self._k = 0  # index of the next window to close
        self._frames: dict[int, list[np.ndarray]] = {}
        self._audio: list[tuple[float, np.ndarray, int]] = []
        self._clock = {"video": -np.inf, "audio": -np.inf}
        self._scorer: Any = None
        self.notes: list[str] = []
        self.set_model(model, baseline)

    @property
    def status(self) -> str:
        if self._fixed:
            return "anomaly network and detectors" if self._scorer.model is not None else "detectors only"
        return "learning the scene: detectors only, against what was seen so far"

    @classmethod
    def create(cls, cfg: Any, *, has_video: bool = True, has_audio: bool = True, **kw: Any) -> "LiveMonitor":
        """A monitor with the catalogue's detector (tracked) and VAD loaded; a model that cannot
        be loaded is left out and named in :attr:`notes`."""
        from core.anomaly.features import WindowFeaturizer
        from models.catalogue import ModelError, load_model

        notes, det, vad, tracker, confirmer = [], None, None, None, None
        try:
            det = load_model(cfg.detector) if has_video and cfg.detector else None
            if det is not None and cfg.track:
                from models.tracking import Tracker
                tracker = Tracker("bytetrack", frame_rate=1.0 / cfg.window_s)
        except Exception as e:  # ModelError, or tracking's missing package
            notes.append(f"object detection/tracking unavailable: {e}")
        if det is not None and getattr(cfg, "confirm", False):
            # causal: a detection counts from the window its track is confirmed in; the scene's
            # learned confusions apply when the caller passes them (``confusions``)
            from core.perception.confirm import Confirmer, SecondLook
            confirmer = Confirmer(SecondLook(det), confusions=kw.pop("confusions", None))
        try:
            vad = load_model(cfg.vad) if has_audio and cfg.vad else None
        except ModelError as e:
            notes.append(f"voice activity unavailable: {e}")
        classes = None if det is not None else _catalogue_classes(cfg.detector) if has_video else ()
        kw.pop("confusions", None)
        mon = cls(WindowFeaturizer(cfg, has_video=has_video, has_audio=has_audio, classes=classes, detector=det,
                                   vad=vad, tracker=tracker, confirmer=confirmer), **kw)
        mon.notes = notes
        return mon

    def set_model(self, model: Any, baseline: Any) -> None:
        """Use a trained model (or None) and the normal footage's baseline from now on."""
        from core.anomaly.score import OnlineScorer

        self._fixed = baseline is not None
        f = self.featurizer
        if baseline is not None:
            self._scorer = OnlineScorer(f.columns, self.window_s, baseline, model, self.weights,
                                        has_video=f.has_video, has_audio=f.has_audio)
            self._prime()

    def _prime(self) -> None:
        for t, r in self.rows[-self._scorer.history:]:
            self._scorer.remember(t, r)

    def features(self) -> Any:
        from core.anomaly.features import FeatureSet

        f = self.featurizer
        return FeatureSet(np.array([t for t, _ in self.rows]), np.vstack([r for _, r in self.rows]) if self.rows
                          else np.zeros((0, len(f.columns)), np.float32), f.columns, self.window_s,
                          f.has_video, f.has_audio)

    def feed(self, chunk: Any) -> list[tuple[str, AnomalyEvent]]:
        if chunk.kind not in ("video", "audio"):
            return []
        if self._t0 is None:
            self._t0 = float(chunk.time)
        m, w = self.featurizer.cfg.motion_samples, self.window_s
        t = float(chunk.time)
        k = int((t - self._t0) // w)
        if chunk.kind == "video" and chunk.image is not None and k >= self._k:
            slot = self._frames.setdefault(k, [])
            if len(slot) < m and t >= self._t0 + k * w + len(slot) * w / m - 1e-6:
                slot.append(chunk.image)
        elif chunk.kind == "audio" and chunk.samples is not None:
            x = np.asarray(chunk.samples, np.float32)
            self._audio.append((t, x.mean(axis=0) if x.ndim == 2 else x, int(chunk.sample_rate)))
            t += x.shape[-1] / max(1, int(chunk.sample_rate))
        self._clock[chunk.kind] = max(self._clock[chunk.kind], t)
        out: list[tuple[str, AnomalyEvent]] = []
        while self._ready():
            out += self._close_window()
        return out

    def _ready(self) -> bool:
        end = self._t0 + (self._k + 1) * self.window_s
        f = self.featurizer
        clocks = [c for kind, c in self._clock.items() if (f.has_video if kind == "video" else f.has_audio)]
        seen = [c for c in clocks if c > -np.inf]
        if seen and max(seen) >= self._t0 + self.LAG_S:
            clocks = seen  # a stream that never came (a camera without a microphone) is not waited for
        return bool(seen) and (min(clocks) >= end or max(clocks) >= end + self.LAG_S)

    def _close_window(self) -> list[tuple[str, AnomalyEvent]]:
        from core.anomaly.detectors import Baseline
        from core.anomaly.features import WindowInput
        from core.anomaly.score import OnlineScorer

        w = self.window_s
        a = self._t0 + self._k * w
        audio, rate = None, 16000
        if self._audio:
            rate = self._audio[0][2]
            audio = np.zeros(int(round(w * rate)), np.float32)
            for t, x, _sr in self._audio:
                s = int(round((t - a) * rate))
                lo, hi = max(0, s), min(len(audio), s + len(x))
                if hi > lo:
                    audio[lo:hi] = x[lo - s:hi - s]
            self._audio = [c for c in self._audio if c[0] + len(c[1]) / c[2] > a + w]
        row = self.featurizer.push(WindowInput(a, a + w, self._frames.pop(self._k, []), audio=audio,
                                               audio_rate=rate))
        self.rows.append((a, row))
        self._k += 1
        if not self._fixed and (self._scorer is None or len(self.rows) % self.REFRESH == 0):
            f = self.featurizer
            base = Baseline.from_features(self.features(), None, "what the camera showed so far")
            self._scorer = OnlineScorer(f.columns, w, base, None, self.weights, has_video=f.has_video,
                                        has_audio=f.has_audio)
            self.rows.pop()
            self._prime()  # history for the causal cues, without the window scored now
            self.rows.append((a, row))
        ws = self._scorer.push(a, row)
        self.scores.append((a, ws.score))
        return self.builder.push(a, ws.score, ws.contrib, ws.reasons)


def _catalogue_classes(name: str | None) -> tuple[str, ...]:
    """A detector's class names from the catalogue alone (its columns exist even if it fails)."""
    if not name:
        return ()
    from models.backends.coco import label_map
    from models.catalogue import ModelError, get_spec

    try:
        spec = get_spec(name)
    except ModelError:
        return ()
    return tuple(dict.fromkeys(label_map(spec.classes).values())) if isinstance(spec.classes, str) \
        else tuple(spec.classes or ())
