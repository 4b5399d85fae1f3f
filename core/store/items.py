"""How a track's items are stored compactly and summarised (Qt-free; :mod:`core.store.project` uses it).

A million detections are a million boxes that share most of their data (the frame size, the
model, one object track's evidence): :func:`pack_items` stores each item's own part in its row
and the shared part once per track (``item_shared``), and counts the items into a :class:`Lod`
(``track_lod``): how many, their span, per label, and per time bucket -- what a timeline zoomed
out draws instead of the items.  Everything read back is validated (:class:`BadValue`).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import compress, repeat
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from core.store.schema import (BadValue, ItemRecord, check_dict, check_finite, check_opt_id, dumps, v_float,
                               v_int, v_json, v_opt, v_str)

#: Count buckets of a track start this wide; a track longer than MAX_BUCKETS of them doubles it.
LOD_BASE_S: Final = 0.5
LOD_MAX_BUCKETS: Final = 1 << 20
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_fin = math.isfinite


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


# JSON as v_json reads it (NaN, Infinity refused), without its checks' overhead on the fast path
_DECODE = json.JSONDecoder(parse_constant=_no_constant).decode


class Lod:
    """A track's summary and count buckets (table ``track_lod``), built as items are stored."""

    def __init__(self, base_s: float = LOD_BASE_S, t0_s: float = 0.0, counts: npt.NDArray[Any] | None = None,
                 n: int = 0, t_min: float | None = None, t_max: float | None = None, max_len: float = 0.0,
                 labels: dict[str, list[int]] | None = None) -> None:
        self.base_s, self.t0_s = float(base_s), float(t0_s)
        self.counts = np.zeros(0, np.int64) if counts is None else counts.astype(np.int64)
        self.n, self.t_min, self.t_max, self.max_len = n, t_min, t_max, max_len
        self.labels: dict[str, list[int]] = {} if labels is None else labels
        self._one: list[float] = []

    @classmethod
    def from_row(cls, row: Any) -> "Lod":
        what = f"the summary of track {row.track_id}"
        base = v_float(row.base_s, f"{what} bucket width")
        if base <= 0:
            raise BadValue(f"{what} has a bucket width of {base}")
        data = row.counts
        if not isinstance(data, bytes) or len(data) % 4:
            raise BadValue(f"{what} has counts of the wrong size")
        labels = v_json(row.labels_json, f"{what} labels", dict)
        if not all(isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v) for v in labels.values()):
            raise BadValue(f"{what} labels have the wrong structure")
        return cls(base, v_float(row.t0_s, f"{what} start"), np.frombuffer(data, "<i4"),
                   v_int(row.n, f"{what} count"), v_opt(v_float, row.t_min, f"{what} first time"),
                   v_opt(v_float, row.t_max, f"{what} last time"), v_float(row.max_len, f"{what} longest item"),
                   labels)

    def add(self, starts: npt.ArrayLike, ends: npt.ArrayLike, labels: list[str], confirmed: list[str]) -> None:
        """Count items: their starts and ends, labels, and the labels of those confirmed."""
        s = np.asarray(starts, np.float64)
        if not len(s):
            return
        e = np.asarray(ends, np.float64)
        self.n += len(s)
        lo, hi = float(s.min()), float(e.max())
        self.t_min = lo if self.t_min is None else min(self.t_min, lo)
        self.t_max = hi if self.t_max is None else max(self.t_max, hi)
        self.max_len = max(self.max_len, float((e - s).max()))
        for label, k in Counter(labels).items():
            self.labels.setdefault(label, [0, 0])[0] += k
        for label, k in Counter(confirmed).items():
            self.labels.setdefault(label, [0, 0])[1] += k
        self._grow(float(s.min()), float(s.max()))
        idx = np.floor((s - self.t0_s) / self.base_s).astype(np.int64)
        np.clip(idx, 0, len(self.counts) - 1, out=idx)
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def _grow(self, lo: float, hi: float) -> None:
        """Make the buckets cover [lo, hi], doubling their width while there would be too many."""
        if not len(self.counts):
            self.t0_s = math.floor(lo / self.base_s) * self.base_s
            self.counts = np.zeros(1, np.int64)
        while True:
            first = min(self.t0_s, math.floor(lo / self.base_s) * self.base_s)
            last = max(self.t0_s + len(self.counts) * self.base_s, (math.floor(hi / self.base_s) + 1) * self.base_s)
            size = int(round((last - first) / self.base_s))
            if size <= LOD_MAX_BUCKETS:
                break
            self._coarsen()
        pad_left = int(round((self.t0_s - first) / self.base_s))
        pad_right = size - pad_left - len(self.counts)
        if pad_left or pad_right:
            self.counts = np.concatenate([np.zeros(pad_left, np.int64), self.counts, np.zeros(max(0, pad_right), np.int64)])
            self.t0_s = first

    def _coarsen(self) -> None:
        k = int(round(self.t0_s / self.base_s))
        c = self.counts
        if k % 2:  # keep t0 on the grid of the wider buckets
            c = np.concatenate([np.zeros(1, np.int64), c])
            self.t0_s -= self.base_s
        if len(c) % 2:
            c = np.concatenate([c, np.zeros(1, np.int64)])
        self.counts = c.reshape(-1, 2).sum(axis=1)
        self.base_s *= 2

    def row(self) -> tuple[Any, ...]:
        """(n, t_min, t_max, max_len, base_s, t0_s, counts bytes, labels_json) for ``track_lod``."""
        return (self.n, self.t_min, self.t_max, self.max_len, self.base_s, self.t0_s,
                np.clip(self.counts, 0, 2**31 - 1).astype("<i4").tobytes(), dumps(self.labels))

    def counts_between(self, edges: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """How many items start in each [edges[i], edges[i+1]): exact where the edges fall on
        the bucket grid (``t0_s + k * base_s``), shared in proportion inside a bucket otherwise."""
        x = np.asarray(edges, np.float64)
        if not len(self.counts):
            return np.zeros(max(0, len(x) - 1))
        key = (len(self.counts), self.n, self.t0_s, self.base_s)
        if getattr(self, "_cum_key", None) != key:  # prefix sums, kept until more items are counted
            self._cum = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.float64)
            self._grid = self.t0_s + np.arange(len(self._cum)) * self.base_s
            self._cum_key = key
        return np.diff(np.interp(x, self._grid, self._cum, left=0.0, right=float(self._cum[-1])))


class SharedParts:
    """The parts of item data a track's items share (table ``item_shared``), numbered."""

    def __init__(self, existing: dict[str, int] | None = None, limit: int = 4096) -> None:
        self.numbers: dict[str, int] = dict(existing or {})
        self.new: list[tuple[int, str]] = []
        self.limit = limit

    def number(self, rest_json: str) -> int | None:
        n = self.numbers.get(rest_json)
        if n is None:
            if len(self.numbers) >= self.limit:
                return None  # items that share little store their data whole
            n = self.numbers[rest_json] = len(self.numbers)
            self.new.append((n, rest_json))
        return n


def pack_items(items: Any, track_id: int, shared: SharedParts, lod: Lod, run_ids: set[int]) -> list[tuple[Any, ...]]:
    """Validate items (ItemRecord, a mapping of its fields, or a tuple ``(start_s, end_s, label,
    confidence, run_id, data)``) into rows of ``items`` (track_id, start_s, end_s, label,
    confidence, run_id, shared_n, data_json), counting them into ``lod`` and collecting their run
    ids.  A detection's box (four finite floats) stays in its row; the rest of its data is
    numbered once in ``shared`` when other items have the same, so a million boxes store as
    compact rows instead of a million copies of their evidence."""
    if isinstance(items, (list, tuple)):  # sharing pays while there are several items per part
        shared.limit = max(shared.limit, len(items) // 4)
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    confirmed: list[str] = []
    last: dict[Any, tuple[dict[str, Any], int | None, str]] = {}
    for item in items:
        if type(item) is tuple and len(item) == 6:
            s, e, label, conf, rid, data = item
        else:
            if isinstance(item, Mapping):
                item = ItemRecord(**item)
            if not isinstance(item, ItemRecord):
                raise TypeError(f"items must be ItemRecord, dict or tuple, not {type(item).__name__}")
            s, e, label, conf, rid, data = (item.start_s, item.end_s, item.label, item.confidence,
                                            item.run_id, item.data)
        if type(s) is not float:
            s = check_finite(s, "start_s")
        if type(e) is not float:
            e = check_finite(e, "end_s")
        if type(label) is not str:
            raise TypeError("label must be a str")
        if conf is not None and (type(conf) is not float or not _fin(conf)):
            conf = check_finite(conf, "confidence", optional=True)
        if rid is not None:
            if type(rid) is not int:
                check_opt_id(rid, "run_id")
            run_ids.add(rid)
        if type(data) is not dict:
            data = check_dict(data, "data")
        rest = data.copy()
        box = rest.pop("box", None)
        own = "{}"
        if box is not None:
            if type(box) is list and len(box) == 4:
                a, b, c, d = box
                if (type(a) is float and type(b) is float and type(c) is float and type(d) is float
                        and _fin(a + b + c + d)):
                    own = '{"box":[%r,%r,%r,%r]}' % (a, b, c, d)
                else:
                    rest["box"] = box
            else:
                rest["box"] = box
        key = rest.get("track")
        seen = last.get(key) if type(key) is int or key is None else None
        if seen is not None and seen[0] == rest:
            n, full = seen[1], seen[2]
        else:
            full = _ENCODE(rest)
            n = shared.number(full) if rest else None
            if type(key) is int or key is None:
                last[key] = (rest, n, full)
        if n is None and rest:  # nothing shared: the row holds all of it
            own = _ENCODE(data)
        if rest.get("confirmed") is True:
            confirmed.append(label)
        append((track_id, s, e, label, conf, rid, n, own))
    if rows:
        cols = list(zip(*rows))  # columns, transposed in C; times checked as arrays
        starts, ends = np.asarray(cols[1], np.float64), np.asarray(cols[2], np.float64)
        bad = ~(np.isfinite(starts) & np.isfinite(ends))
        if bad.any():
            raise ValueError("start_s and end_s must be finite")
        early = ends < starts
        if early.any():
            k = int(np.flatnonzero(early)[0])
            raise ValueError(f"item ends ({ends[k]}) before it starts ({starts[k]})")
        lod.add(starts, ends, list(cols[3]), confirmed)
    return rows


def shared_map(rows: Any, what: str) -> dict[int, dict[str, Any]]:
    """``item_shared`` rows (n, data_json) of one track, decoded."""
    return {v_int(r[0], f"{what} shared part"): v_json(r[1], f"{what} shared part", dict) for r in rows}


def item_from_row(row: Any, shared: dict[int, dict[str, Any]]) -> ItemRecord:
    """An item from (id, start_s, end_s, label, confidence, run_id, shared_n, data_json)."""
    rid, s, e, label, conf, run, n, data_json = row
    if data_json == "{}":
        data: dict[str, Any] = {}
    else:
        try:
            data = _DECODE(data_json) if type(data_json) is str else None
        except (ValueError, RecursionError):
            data = None
        if type(data) is not dict:
            data = v_json(data_json, f"item {rid} data", dict)  # says what is wrong
    if n is not None:
        part = shared.get(n)
        if part is None:
            raise BadValue(f"item {rid} refers to a missing shared part")
        data = {**part, **data}
    if not (type(s) is float and type(e) is float and _fin(s) and _fin(e) and type(label) is str
            and (conf is None or type(conf) is float and _fin(conf)) and (run is None or type(run) is int)):
        what = f"item {rid}"
        s, e, label = v_float(s, f"{what} start"), v_float(e, f"{what} end"), v_str(label, f"{what} label")
        conf, run = v_opt(v_float, conf, f"{what} confidence"), v_opt(v_int, run, f"{what} run")
    return ItemRecord(s, e, label, conf, run, data)


# -- blocks: a big track's items a column at a time (table ``item_blocks``) ------------------

#: Items per block, and the fewest items a track stores in blocks (fewer: a row each).
BLOCK_ITEMS: Final = 4096
BLOCK_MIN: Final = 4096
_COLS = (("starts", "<f8", 1), ("ends", "<f8", 1), ("confidences", "<f8", 1), ("labels", "<i4", 1),
         ("shared", "<i4", 1), ("boxes", "<f8", 4))
_ITEM_BYTES = sum(np.dtype(d).itemsize * k for _n, d, k in _COLS)


class ItemColumns(NamedTuple):
    """Items as six parallel sequences, the form a big track is stored from in blocks
    (:func:`pack_blocks`): a million detections need no tuple each."""
    starts: Sequence[Any]
    ends: Sequence[Any]
    labels: Sequence[Any]
    confidences: Sequence[Any]
    run_ids: Sequence[Any]
    datas: Sequence[Any]


def pack_blocks(c: ItemColumns, shared: SharedParts, lod: Lod, run_ids: set[int]) -> list[tuple[Any, ...]] | None:
    """Rows of ``item_blocks`` (n, count, t_min, t_max, e_max, run_id, labels_json, own_json,
    columns) for the items of ``c``, counted into ``lod``, their run collected into ``run_ids``;
    None (store them as rows, :func:`pack_items`) for fewer than :data:`BLOCK_MIN` items, more
    than one run, or a field whose type is not the plain one (floats, str, dict...).  A
    detection's box (four finite floats) goes to the block's box column; the rest of an item's
    data is numbered once in ``shared`` (items of one object share it) or kept as the item's
    own.  Items are stored by start time."""
    n = len(c.starts)
    none = type(None)
    if n < BLOCK_MIN or len({len(x) for x in c}) != 1:
        return None
    runs = set(c.run_ids)
    conf_types = set(map(type, c.confidences))
    if len(runs) != 1 or not (set(map(type, c.starts)) <= {float} and set(map(type, c.ends)) <= {float}
                              and set(map(type, c.labels)) <= {str} and conf_types <= {float, none}
                              and set(map(type, runs)) <= {int, none} and set(map(type, c.datas)) <= {dict}):
        return None
    run = next(iter(runs))
    starts = np.fromiter(c.starts, np.float64, n)
    ends = np.fromiter(c.ends, np.float64, n)
    if none in conf_types:  # NaN stands for "no confidence" (a stored one is always finite)
        conf = np.fromiter((np.nan if x is None else x for x in c.confidences), np.float64, n)
        given = conf[~np.isnan(conf)]
    else:
        conf = given = np.fromiter(c.confidences, np.float64, n)
    if not np.isfinite(given).all():
        raise ValueError("confidence must be finite")
    datas = c.datas
    boxes = list(map(dict.get, datas, repeat("box", n)))
    box_arr = np.full((n, 4), np.nan)
    boxed = np.zeros(n, bool)
    if set(map(type, boxes)) == {list} and set(map(len, boxes)) == {4}:
        try:
            arr = np.array(boxes)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.dtype == np.float64 and arr.shape == (n, 4):
            boxed = np.isfinite(arr).all(axis=1)
            box_arr[boxed] = arr[boxed]
    if not boxed.all():  # one by one: a box of plain floats is stored as such, any other stays data
        for i in np.flatnonzero(~boxed):
            b = boxes[i]
            if type(b) is list and len(b) == 4 and all(type(x) is float for x in b) and _fin(sum(b)):
                box_arr[i], boxed[i] = b, True
    label_names = list(dict.fromkeys(c.labels))
    code = {name: k for k, name in enumerate(label_names)}
    labels = np.fromiter(map(code.__getitem__, c.labels), np.int32, n)
    nums = np.full(n, -1, np.int32)
    own: dict[int, str] = {}
    last: dict[Any, tuple[dict[str, Any], int | None]] = {}
    confirmed = np.zeros(n, bool)
    all_boxed = bool(boxed.all())
    for i, data in enumerate(datas):
        if all_boxed or boxed[i]:
            rest = data.copy()
            del rest["box"]
        else:
            rest = data
        if not rest:
            continue
        key = rest.get("track")
        seen = last.get(key) if type(key) is int or key is None else None
        if seen is not None and seen[0] == rest:
            num = seen[1]
        else:
            num = shared.number(_ENCODE(rest))
            if type(key) is int or key is None:
                last[key] = (rest, num)
        if num is None:
            own[i] = _ENCODE(rest)
        else:
            nums[i] = num
        if rest.get("confirmed") is True:
            confirmed[i] = True
    _count(starts, ends, c.labels, list(compress(c.labels, confirmed.tolist())), lod)
    if run is not None:
        run_ids.add(run)
    order = np.argsort(starts, kind="stable")
    sorted_ = bool((order == np.arange(n)).all())
    if not sorted_:
        starts, ends, conf, labels, nums, box_arr = (a[order] for a in (starts, ends, conf, labels, nums, box_arr))
        back = np.empty(n, np.int64)
        back[order] = np.arange(n)
        own = {int(back[i]): js for i, js in own.items()}
    lat = np.maximum(starts, ends)
    labels_json = dumps(label_names)
    rows = []
    for k, a in enumerate(range(0, n, BLOCK_ITEMS)):
        b = min(n, a + BLOCK_ITEMS)
        body = b"".join(x[a:b].astype(d, copy=False).tobytes()
                        for x, (_n, d, _k) in zip((starts, ends, conf, labels, nums, box_arr), _COLS))
        mine = {str(i - a): js for i, js in own.items() if a <= i < b} if own else {}
        rows.append((k, b - a, float(starts[a]), float(starts[b - 1]), float(lat[a:b].max()), run, labels_json,
                     "{" + ",".join(f"{json.dumps(i)}:{js}" for i, js in mine.items()) + "}", body))
    return rows


def _count(starts: npt.NDArray[np.float64], ends: npt.NDArray[np.float64], labels: Sequence[str],
           confirmed: list[str], lod: Lod) -> None:
    """Check items' times (finite, none ending before it starts) and count them into ``lod``."""
    if not len(starts):
        return
    if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        raise ValueError("start_s and end_s must be finite")
    early = ends < starts
    if early.any():
        k = int(np.flatnonzero(early)[0])
        raise ValueError(f"item ends ({ends[k]}) before it starts ({starts[k]})")
    lod.add(starts, ends, list(labels), confirmed)


class Block:
    """One ``item_blocks`` row, checked and decoded (every value read from a file is validated)."""

    def __init__(self, row: Any, what: str) -> None:
        n, count, run = row.n, row.count, row.run_id
        self.what = what = f"{what} block {n}"
        if type(count) is not int or count <= 0 or count > 1 << 24:
            raise BadValue(f"{what} has a bad item count")
        self.count, self.run_id = count, v_opt(v_int, run, f"{what} run")
        self.t_min = v_float(row.t_min, f"{what} first start")
        data = row.columns
        if not isinstance(data, bytes) or len(data) != count * _ITEM_BYTES:
            raise BadValue(f"{what} has columns of the wrong size")
        cols, at = {}, 0
        for name, d, k in _COLS:
            size = np.dtype(d).itemsize * k * count
            cols[name] = np.frombuffer(data, d, count * k, at)
            at += size
        self.starts, self.ends, self.conf = cols["starts"], cols["ends"], cols["confidences"]
        self.boxes = cols["boxes"].reshape(count, 4)
        self.labels = v_json(row.labels_json, f"{what} labels", list)
        if not all(type(x) is str for x in self.labels):
            raise BadValue(f"{what} labels are not text")
        self.label_idx, self.shared = cols["labels"], cols["shared"]
        if count and (self.label_idx.min() < 0 or self.label_idx.max() >= len(self.labels)):
            raise BadValue(f"{what} refers to a missing label")
        if not (np.isfinite(self.starts).all() and np.isfinite(self.ends).all()):
            raise BadValue(f"{what} has times that are not finite")
        if np.isinf(self.conf).any():
            raise BadValue(f"{what} has a confidence that is not finite")
        none = np.isnan(self.boxes).all(axis=1)
        if not (np.isfinite(self.boxes).all(axis=1) | none).all():
            raise BadValue(f"{what} has a box that is not finite")
        self.boxed = ~none
        self.own = v_json(row.own_json, f"{what} item data", dict)

    def select(self, t0: float, t1: float, starting: bool) -> npt.NDArray[np.int64]:
        """Indices of the items that start in [t0, t1) (``starting``) or overlap [t0, t1]."""
        if starting:
            return np.flatnonzero((self.starts >= t0) & (self.starts < t1))
        return np.flatnonzero((self.starts <= t1) & (np.maximum(self.starts, self.ends) >= t0))

    def items(self, idx: Any, shared: dict[int, dict[str, Any]]) -> list[ItemRecord]:
        out = []
        starts, ends, conf, boxes = self.starts.tolist(), self.ends.tolist(), self.conf.tolist(), self.boxes
        labels, label_idx, nums, own, run = self.labels, self.label_idx, self.shared, self.own, self.run_id
        boxed = self.boxed
        for i in (range(self.count) if idx is None else idx.tolist()):
            num = int(nums[i])
            if num >= 0:
                part = shared.get(num)
                if part is None:
                    raise BadValue(f"{self.what} item {i} refers to a missing shared part")
                data = dict(part)
            else:
                data = {}
            mine = own.get(str(i))
            if mine is not None:
                if type(mine) is not dict:
                    raise BadValue(f"{self.what} item {i} has data that is not a mapping")
                data.update(mine)
            if boxed[i]:
                data["box"] = boxes[i].tolist()
            c = conf[i]
            out.append(ItemRecord(starts[i], ends[i], labels[int(label_idx[i])], None if c != c else c, run, data))
        return out
