"""The multi-track timeline model (Qt-free).

A timeline holds tracks of items for one media file. An item is an interval
(``end > start``) or a marker (``end == start``) with a label, a confidence and the id of
the run that produced it. How a track *looks* is data: its kind names an entry of
``TRACK_KINDS`` (style, colour, row height), so a new capability adds a kind and its
tracks appear with no new widget.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import Iterable

from core.events import EventGroup


@dataclass(frozen=True)
class TrackKind:
    name: str
    title: str
    style: str = "intervals"  # "intervals" | "markers" | "curve" | "heat" | "hidden"
    color: str = "#4c9be8"  # or "auto": a colour per track name (class)
    height: int = 22
    order: int = 50  # sort key among tracks


# Later capabilities register their kinds here (register_kind) — detections, speech,
# anomalies, keyframes, tags… — and the view draws them from this table alone.
TRACK_KINDS: dict[str, TrackKind] = {}


def register_kind(kind: TrackKind) -> TrackKind:
    TRACK_KINDS[kind.name] = kind
    return kind


register_kind(TrackKind("markers", "Markers", style="markers", color="#f2c14e", order=0))
register_kind(TrackKind("notes", "Notes", style="intervals", color="#8bc34a", order=5))
register_kind(TrackKind("detections", "Detections", color="auto", order=20))
register_kind(TrackKind("speech", "Speech", color="#c678dd", order=15))
register_kind(TrackKind("text", "On-screen text", color="#56b6c2", order=18))
register_kind(TrackKind("shots", "Shots", color="#98c379", order=40))
# each shot's top tags (archive tagging, gui/panels/tags.py), right under its shot
register_kind(TrackKind("shot-tags", "Shot tags", color="#ef9f76", order=41))
register_kind(TrackKind("anomaly", "Anomaly score", style="curve", color="#e06c75", height=40, order=10))
register_kind(TrackKind("faces", "Faces", color="#e5c07b", order=17))
register_kind(TrackKind("tags", "Scene tags", color="#d19a66", order=45))
register_kind(TrackKind("anomaly-events", "Anomaly events", color="#ff5c5c", order=11))
register_kind(TrackKind("focus-arms", "Frame search", style="heat", color="#ffb347", height=18, order=12))
register_kind(TrackKind("focus", "Selected frames", style="markers", color="#ffd166", order=13))
register_kind(TrackKind("chat", "Chat", style="markers", color="#61afef", order=14))
# real experts per token a mixture-of-experts network spent, one curve per modality (anomaly pass)
register_kind(TrackKind("experts", "Experts spent", style="curve", color="#7fd1b9", height=32, order=11))
# per-frame boxes feed the player's overlay and the detections table, not a timeline row
register_kind(TrackKind("boxes", "Boxes", style="hidden", order=99))


def kind_of(name: str) -> TrackKind:
    return TRACK_KINDS.get(name) or TrackKind(name, name.title())


@dataclass(frozen=True)
class Item:
    start: float
    end: float
    label: str = ""
    confidence: float = 1.0
    run_id: int | None = None
    data: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_marker(self) -> bool:
        return self.end <= self.start

    def covers(self, t: float, tol: float = 0.0) -> bool:
        return self.start - tol <= t <= max(self.end, self.start) + tol


@dataclass
class Track:
    kind: str
    name: str
    items: list[Item] = field(default_factory=list)  # sorted by start
    run_id: int | None = None
    id: int | None = None  # project row id once stored
    meta: dict = field(default_factory=dict)
    visible: bool = True

    def __post_init__(self) -> None:
        self.items.sort(key=lambda i: (i.start, i.end))
        self._starts = [i.start for i in self.items]

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def style(self) -> TrackKind:
        return kind_of(self.kind)

    def add(self, items: Iterable[Item]) -> None:
        self.items.extend(items)
        self.items.sort(key=lambda i: (i.start, i.end))
        self._starts = [i.start for i in self.items]

    def in_range(self, t0: float, t1: float) -> list[Item]:
        """Items overlapping [t0, t1]; O(log n + k) for tracks without very long items."""
        hi = bisect.bisect_right(self._starts, t1)
        return [it for it in self.items[:hi] if max(it.end, it.start) >= t0]

    def at(self, t: float, tol: float = 0.0) -> list[Item]:
        return [it for it in self.in_range(t - tol, t + tol) if it.covers(t, tol)]


class Timeline:
    """Tracks for one media file, plus the view range the timeline shows.

    Events: ``tracks_changed()`` when tracks are added/removed/replaced,
    ``items_added(track)`` for partial results, ``duration_changed(float)``.
    """

    def __init__(self, duration: float = 0.0):
        self.events = EventGroup("tracks_changed", "items_added", "duration_changed")
        self._tracks: dict[tuple[str, str], Track] = {}
        self._duration = float(duration)

    @property
    def duration(self) -> float:
        return self._duration

    @duration.setter
    def duration(self, value: float) -> None:
        value = float(value)
        if value != self._duration:
            self._duration = value
            self.events.duration_changed.emit(value)

    @property
    def tracks(self) -> list[Track]:
        # within a kind, the busiest tracks first (people before the odd kite)
        return sorted(self._tracks.values(), key=lambda t: (t.style.order, t.kind, -len(t.items), t.name))

    def track(self, kind: str, name: str) -> Track | None:
        return self._tracks.get((kind, name))

    def set_track(self, track: Track) -> Track:
        self._tracks[track.key] = track
        self.events.tracks_changed.emit()
        return track

    def add_items(self, kind: str, name: str, items: Iterable[Item], run_id: int | None = None) -> Track:
        tr = self._tracks.get((kind, name))
        if tr is None:
            tr = self.set_track(Track(kind, name, list(items), run_id=run_id))
        else:
            tr.add(items)
            self.events.items_added.emit(tr)
        return tr

    def remove_track(self, kind: str, name: str) -> None:
        if self._tracks.pop((kind, name), None) is not None:
            self.events.tracks_changed.emit()

    def clear(self) -> None:
        self._tracks.clear()
        self.events.tracks_changed.emit()

    def with_run(self, run_id: int) -> "list[Track]":
        return [t for t in self._tracks.values() if t.run_id == run_id]


def relabel(item: Item, label: str) -> Item:
    return replace(item, label=label)
