"""The multi-track timeline model (Qt-free).

A timeline holds tracks of items for one media file. An item is an interval
(``end > start``) or a marker (``end == start``) with a label, a confidence and the id of
the run that produced it. How a track *looks* is data: its kind names an entry of
``TRACK_KINDS`` (style, colour, row height), so a new capability adds a kind and its
tracks appear with no new widget.

A track of any size answers the same questions -- ``in_range``, ``at``, ``size``, ``counts`` (how
many items start per bucket, what a zoomed-out view draws) -- whether its items are in a list
(:class:`Track`) or stay in the project and are read by range (:class:`StoredTrack`, through an
:class:`ItemSource` the session gives it), so a day of detections never sits in memory whole.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Iterable, Protocol

import numpy as np

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
        self._index()

    def _index(self) -> None:
        self._starts = [i.start for i in self.items]
        self._max_len = max((i.end - i.start for i in self.items), default=0.0)
        self.__dict__.pop("_starts_arr", None)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def style(self) -> TrackKind:
        return kind_of(self.kind)

    def add(self, items: Iterable[Item]) -> None:
        self.items.extend(items)
        self.items.sort(key=lambda i: (i.start, i.end))
        self._index()

    def in_range(self, t0: float, t1: float, limit: int | None = None) -> list[Item]:
        """Items overlapping [t0, t1] by start time (the first ``limit`` of them); O(log n + k)
        where k counts the items starting in [t0 - the longest item, t1]."""
        if len(self._starts) != len(self.items):  # items appended to the list directly
            self._index()
        lo = bisect.bisect_left(self._starts, t0 - self._max_len)
        hi = bisect.bisect_right(self._starts, t1)
        out = [it for it in self.items[lo:hi] if max(it.end, it.start) >= t0]
        return out if limit is None else out[:max(0, limit)]

    def at(self, t: float, tol: float = 0.0) -> list[Item]:
        return [it for it in self.in_range(t - tol, t + tol) if it.covers(t, tol)]

    @property
    def size(self) -> int:
        """How many items the track holds."""
        return len(self.items)

    @property
    def is_stored(self) -> bool:
        """True where the items stay in the project and are read by range (StoredTrack)."""
        return False

    def counts(self, t0: float, t1: float, buckets: int) -> np.ndarray:
        """How many items start in each of ``buckets`` equal parts of [t0, t1) (floats)."""
        edges = np.linspace(float(t0), float(t1), max(1, int(buckets)) + 1)
        arr = self.__dict__.get("_starts_arr")
        if arr is None or len(arr) != len(self.items):
            if len(self._starts) != len(self.items):
                self._index()
            arr = self.__dict__["_starts_arr"] = np.asarray(self._starts, dtype=np.float64)
        return np.diff(np.searchsorted(arr, edges, side="left")).astype(np.float64)

    def count_in(self, t0: float, t1: float) -> float:
        """How many items start in [t0, t1) (what ``counts`` sums to)."""
        return float(self.counts(t0, t1, 1).sum())


class ItemSource(Protocol):
    """Where a StoredTrack's items are: the project, read by range (core.perception.ops.StoredItems)."""

    size: int
    max_len: float  # the longest item, seconds

    def starting_in(self, t0: float, t1: float) -> list[Item]:
        """Items whose start is in [t0, t1), by start."""
        ...

    def overlapping(self, t0: float, t1: float, limit: int | None = None) -> list[Item]:
        """Items overlapping [t0, t1], by start, at most ``limit``."""
        ...

    def counts(self, t0: float, t1: float, buckets: int) -> np.ndarray:
        """Items starting per equal bucket of [t0, t1) (stored counts, no item is read)."""
        ...


class StoredTrack(Track):
    """A big track whose items stay in the project: reads go by time range through ``source``
    in chunks of about ``CHUNK_ITEMS`` items (the last ``CACHED_CHUNKS`` kept), so the overlay's
    ``at(t)`` and a zoomed-in view read a few hundred rows, and a zoomed-out view reads
    ``counts`` (stored count buckets) and no item at all.  ``items`` reads every item: only for
    jobs that need them all, never the window's paint path.  Items added while a job runs
    (partial results) are kept in memory beside the stored ones."""

    CHUNK_ITEMS = 500
    CACHED_CHUNKS = 256
    MAX_CHUNKS_PER_READ = 16

    def __init__(self, kind: str, name: str, source: ItemSource, span: tuple[float, float],
                 run_id: int | None = None, id: int | None = None, meta: dict | None = None,
                 visible: bool = True, labels: dict[str, list[int]] | None = None):
        self.kind, self.name, self.run_id, self.id = kind, name, run_id, id
        self.meta = dict(meta or {})
        self.visible = visible
        self.source = source
        self.span = (float(span[0]), float(span[1]))
        self.labels = dict(labels or {})  # label -> [items, confirmed items] (stored summary)
        width = max(self.span[1] - self.span[0], 1e-3)
        self.chunk_s = max(0.5, width * self.CHUNK_ITEMS / max(1, source.size))
        self._chunks: OrderedDict[int, list[Item]] = OrderedDict()
        self._extra = Track(kind, name)  # added in memory (partial results)
        self._all: list[Item] | None = None  # every stored item, once ``items`` was asked for
        self.reads = 0  # how many times the source was asked (tests, benches)

    def __repr__(self) -> str:
        return f"StoredTrack({self.kind!r}, {self.name!r}, size={self.size}, id={self.id})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def items(self) -> list[Item]:  # type: ignore[override]
        """Every item, read once and then kept (a job that needs them all reads them all; the
        window's views never ask)."""
        if self._all is None:
            self.reads += 1
            self._all = self.source.overlapping(-math.inf, math.inf)
        if self._extra.items:
            return sorted(self._all + self._extra.items, key=lambda i: (i.start, i.end))
        return self._all

    @property
    def size(self) -> int:
        return self.source.size + self._extra.size

    @property
    def is_stored(self) -> bool:
        return True

    def add(self, items: Iterable[Item]) -> None:
        self._extra.add(items)

    def _chunk(self, k: int) -> list[Item]:
        got = self._chunks.get(k)
        if got is None:
            self.reads += 1
            got = self.source.starting_in(k * self.chunk_s, (k + 1) * self.chunk_s)
            self._chunks[k] = got
            while len(self._chunks) > self.CACHED_CHUNKS:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(k)
        return got

    def in_range(self, t0: float, t1: float, limit: int | None = None) -> list[Item]:
        k0 = math.floor((t0 - self.source.max_len) / self.chunk_s)
        k1 = math.floor(t1 / self.chunk_s)
        if k1 - k0 + 1 <= self.MAX_CHUNKS_PER_READ:
            out = [it for k in range(k0, k1 + 1) for it in self._chunk(k)
                   if it.start <= t1 and max(it.end, it.start) >= t0]
        else:
            self.reads += 1
            out = self.source.overlapping(t0, t1, limit)
        if self._extra.items:
            out = sorted(out + self._extra.in_range(t0, t1), key=lambda i: (i.start, i.end))
        return out if limit is None else out[:max(0, limit)]

    def counts(self, t0: float, t1: float, buckets: int) -> np.ndarray:
        out = np.asarray(self.source.counts(t0, t1, buckets), dtype=np.float64)
        return out + self._extra.counts(t0, t1, buckets) if self._extra.items else out


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
        return sorted(self._tracks.values(), key=lambda t: (t.style.order, t.kind, -t.size, t.name))

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
