"""What the player draws over the picture: boxes at the playhead, filtered (Qt-free; perception's
results, :mod:`core.perception`).

Boxes come from the timeline's hidden "boxes" tracks (one per model run): each item is
one detection at a sampled time, valid until the next sample, with its box in the pixels
of the frame that was analysed (``data["size"]``), so it scales to any display size.

Object detections carry a verdict (:func:`core.perception.confirm.is_confirmed`): confirmed
boxes are drawn as always, unconfirmed ones greyed with a "?" (``OverlayBox.confirmed`` False)
— boxes stored before confirmation existed among them — and ``show_unconfirmed`` hides them.
Faces and on-screen text are not checked (``confirmed`` None).

Evidence (:meth:`OverlayModel.set_evidence`) is a transient layer over these: the boxes a chat
answer cites at the time it cites (``OverlayBox.cited``), drawn apart from the tracks' boxes and
regardless of their filter, until it is cleared or replaced.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from core.events import EventGroup
from core.perception.confirm import CHECKED_TASKS, is_confirmed, why
from core.timeline import Item, StoredTrack, Timeline, Track


@dataclass(frozen=True)
class OverlayBox:
    x1: float  # fractions of the frame's width/height
    y1: float
    x2: float
    y2: float
    label: str
    score: float
    track: int | None
    source: str
    time: float
    text: str = ""  # what OCR read, for "text" boxes
    confirmed: bool | None = None  # object detections: the verdict; None: not checked (faces, text)
    reason: str = ""  # why (not) confirmed
    cited: bool = False  # evidence an answer cites (set_evidence), not a track's box
    truth: bool = False  # a box of an imported ground truth (File ▸ Import…), never a detection

    @property
    def caption(self) -> str:
        if self.text:
            return f"“{self.text}”"
        if self.truth:
            return f"truth: {self.label}"
        name = f"? {self.label}" if self.confirmed is False else self.label
        return f"cited: {name}" if self.cited else name


@dataclass(frozen=True)
class Evidence:
    """A box shown as evidence from ``start`` to ``end`` (seconds), whatever the filter."""

    box: OverlayBox
    start: float
    end: float


class OverlayModel:
    """Events: ``changed()`` when the filter (classes, confidence, on/off) changes."""

    def __init__(self, timeline: Timeline):
        self.timeline = timeline
        self.events = EventGroup("changed")
        self.enabled = True
        self.min_score = 0.3
        self.hidden: set[str] = set()  # labels switched off
        self.show_unconfirmed = True  # unconfirmed detections drawn greyed; False: not drawn or listed
        self.evidence: list[Evidence] = []  # the boxes an answer cites (set_evidence), drawn over the rest
        self.show_truth = True  # an imported ground truth's boxes drawn apart (truth_tracks)

    def set_enabled(self, on: bool) -> None:
        if on != self.enabled:
            self.enabled = on
            self.events.changed.emit()

    def set_min_score(self, value: float) -> None:
        value = float(value)
        if value != self.min_score:
            self.min_score = value
            self.events.changed.emit()

    def set_show_unconfirmed(self, on: bool) -> None:
        if bool(on) != self.show_unconfirmed:
            self.show_unconfirmed = bool(on)
            self.events.changed.emit()

    def set_evidence(self, evidence: list[Evidence]) -> None:
        """Show these cited boxes (replacing any shown); an empty list clears them."""
        if list(evidence) != self.evidence:
            self.evidence = list(evidence)
            self.events.changed.emit()

    def clear_evidence(self) -> None:
        self.set_evidence([])

    def set_label_visible(self, label: str, visible: bool) -> None:
        before = label in self.hidden
        (self.hidden.discard if visible else self.hidden.add)(label)
        if before == visible:
            self.events.changed.emit()

    def labels(self) -> dict[str, int]:
        """Every label in the box tracks, with how many boxes carry it (a stored track's from its
        stored summary: no box is read)."""
        out: dict[str, int] = {}
        for tr, per_label in self._label_counts():
            for label, (n, _ok) in per_label.items():
                out[label] = out.get(label, 0) + n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def confirmed_counts(self) -> dict[str, tuple[int, int]]:
        """Per label of the checked (object) boxes: (confirmed, unconfirmed) counts."""
        out: dict[str, tuple[int, int]] = {}
        for tr, per_label in self._label_counts():
            if checked(tr):
                for label, (n, ok) in per_label.items():
                    c, u = out.get(label, (0, 0))
                    out[label] = (c + ok, u + n - ok)
        return out

    def _label_counts(self) -> list[tuple[Track, dict[str, tuple[int, int]]]]:
        """Per box track: label -> (boxes, confirmed boxes); a stored track's summary (counted
        when it was stored, plus any boxes added since), a small track's items counted here."""
        out = []
        for tr in self.box_tracks():
            per: dict[str, tuple[int, int]] = {}
            if isinstance(tr, StoredTrack):
                per = {label: (int(v[0]), int(v[1])) for label, v in tr.labels.items()}
                extra = tr._extra.items
            else:
                extra = tr.items
            for it in extra:
                n, ok = per.get(it.label, (0, 0))
                per[it.label] = (n + 1, ok + is_confirmed(it.data))
            out.append((tr, per))
        return out

    def box_tracks(self):
        """The detectors' box tracks: what is counted, listed and filtered as detections."""
        return [t for t in self.timeline.tracks if t.kind == "boxes" and not t.meta.get("imported")]

    def truth_tracks(self):
        """Imported ground truths (core.handoff.boxes.store_import): drawn apart, never counted
        or listed as detections."""
        return [t for t in self.timeline.tracks if t.kind == "boxes" and t.meta.get("imported")]

    def set_show_truth(self, on: bool) -> None:
        if bool(on) != self.show_truth:
            self.show_truth = bool(on)
            self.events.changed.emit()

    def accepts(self, it: Item, is_checked: bool = False) -> bool:
        """Passes the filter: score, class, and (for checked object boxes) the unconfirmed switch."""
        if is_checked and not self.show_unconfirmed and not is_confirmed(it.data):
            return False
        return it.confidence >= self.min_score and it.label not in self.hidden

    def boxes_at(self, t: float) -> list[OverlayBox]:
        if not self.enabled:
            return self.evidence_at(t)
        out = []
        for tr in self.box_tracks():
            ch = checked(tr)
            for it in tr.at(t):
                if it.start <= t < it.end and self.accepts(it, ch):
                    b = to_box(it, tr.name, ch)
                    if b is not None:
                        out.append(b)
        if self.show_truth:
            for tr in self.truth_tracks():
                for it in tr.at(t):
                    if it.start <= t < it.end and it.label not in self.hidden:
                        b = to_box(it, tr.name)
                        if b is not None:
                            out.append(replace(b, truth=True))
        return out + self.evidence_at(t)

    def evidence_at(self, t: float) -> list[OverlayBox]:
        """The cited boxes shown at ``t`` (drawn even when the tracks' boxes are switched off)."""
        return [e.box for e in self.evidence if e.start <= t < e.end]

    def rows(self, t0: float | None = None, t1: float | None = None,
             limit: int | None = None) -> list[tuple[Item, str]]:
        """The accepted detections in time order (the detections table): all of them, or those
        in [t0, t1], the first ``limit`` (each track is read by range, at most ``limit`` boxes
        of it, so a day of detections is never read whole for the table)."""
        lo = -float("inf") if t0 is None else t0
        hi = float("inf") if t1 is None else t1
        rows = []
        for tr in self.box_tracks():
            ch = checked(tr)
            if limit is None:
                got = tr.items if t0 is None and t1 is None and not tr.is_stored else tr.in_range(lo, hi)
                rows += [(it, tr.name) for it in got if self.accepts(it, ch)]
                continue
            cap = max(1, limit)
            while True:  # read more while the filter leaves fewer than asked (at most 64× as many)
                got = tr.in_range(lo, hi, cap)
                mine = [(it, tr.name) for it in got if self.accepts(it, ch)]
                if len(mine) >= limit or len(got) < cap or cap >= 64 * limit:
                    break
                cap *= 4
            rows += mine[:limit]
        rows.sort(key=lambda r: (r[0].start, -r[0].confidence))
        return rows if limit is None else rows[:limit]


def checked(track) -> bool:
    """Whether a box track's items carry a verdict (an object detector's boxes)."""
    return track.meta.get("task", "detect") in CHECKED_TASKS


def to_box(it: Item, source: str, is_checked: bool = False) -> OverlayBox | None:
    box, size = it.data.get("box"), it.data.get("size")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = float(size[0]), float(size[1])
    except (TypeError, ValueError, IndexError):
        return None
    if w <= 0 or h <= 0:
        return None
    track = it.data.get("track")
    text = it.data.get("text")
    return OverlayBox(x1 / w, y1 / h, x2 / w, y2 / h, it.label, it.confidence,
                      int(track) if isinstance(track, (int, float)) else None, source, it.start,
                      text if isinstance(text, str) else "",
                      is_confirmed(it.data) if is_checked else None, why(it.data) if is_checked else "")
