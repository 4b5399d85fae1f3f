"""The timeline part of a project: tracks and their items (Qt-free; a base of
:class:`core.store.project.Project`, whose transaction plumbing and thread rules it uses).

Tracks are stored compactly (:mod:`core.store.items`): a small track's items a row each (each
item's own part in its row, what items share once per track, raw ``executemany`` inside the
write transaction); a big one given as :class:`~core.store.items.ItemColumns` in blocks of a few
thousand items a column at a time (``item_blocks``). Each track has a summary and count buckets
(``track_lod``) and is read by range (:meth:`TrackStore.track_items`) and by count
(:meth:`TrackStore.track_counts`), so a timeline never needs a whole file's items in memory.
"""
from __future__ import annotations

import gc
from operator import attrgetter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, CursorResult, delete, insert, select, update

from core.store import items as items_mod
from core.store import schema as db
from core.store.schema import (ItemRecord, TrackRecord, item_blocks_table, item_shared_table, items_table,
                               media_table, track_lod_table, tracks_table)


_START = attrgetter("start_s")


def new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class TrackStore:
    """Tracks and items of a :class:`~core.store.project.Project` (which provides ``_reading``,
    ``_writing``, ``_require`` and ``_require_runs``)."""

    # -- timeline -----------------------------------------------------------------------
    def save_track(self, media_id: int, kind: str, name: str,
                   items: Iterable[ItemRecord | Mapping[str, Any] | tuple[Any, ...]], run_id: int | None = None,
                   meta: Mapping[str, Any] | None = None, replace: bool = True) -> int:
        """Store a track with its items in one transaction and return its id.  With
        ``replace`` an existing track with the same (media_id, kind, name) keeps its id
        and gets the new items/run/meta; without it a second track is added.  Items are
        ItemRecords, mappings of their fields, tuples ``(start_s, end_s, label, confidence,
        run_id, data)``, or :class:`~core.store.items.ItemColumns` (the fastest form: a big track
        of one run is stored in blocks, a million detections in a few seconds); the track's
        summary and count buckets (:meth:`track_summary`, :meth:`track_counts`) are stored with them."""
        meta_json = db.dumps(db.check_dict({} if meta is None else meta, "meta"))
        db.check_opt_id(run_id, "run_id")
        t = tracks_table.c
        with self._writing() as conn:
            self._require(conn, media_table, media_id, "media")
            track_id: int | None = None
            if replace:
                ids = list(conn.execute(select(t.id).where(t.media_id == media_id, t.kind == kind,
                                                           t.name == name).order_by(t.id)).scalars())
                if ids:
                    track_id = ids[0]
                    conn.execute(delete(tracks_table).where(t.id.in_(ids[1:])))
                    conn.execute(delete(items_table).where(items_table.c.track_id == track_id))
                    conn.execute(delete(item_shared_table).where(item_shared_table.c.track_id == track_id))
                    conn.execute(delete(item_blocks_table).where(item_blocks_table.c.track_id == track_id))
                    conn.execute(update(tracks_table).where(t.id == track_id)
                                 .values(run_id=run_id, meta_json=meta_json))
            if track_id is None:
                track_id = new_id(conn.execute(insert(tracks_table).values(
                    media_id=media_id, kind=str(kind), name=str(name), run_id=run_id,
                    meta_json=meta_json)))
            self._insert_items(conn, track_id, items, items_mod.SharedParts(), items_mod.Lod(), [run_id])
            return track_id

    def _insert_items(self, conn: Connection, track_id: int, items: Iterable[Any], shared: items_mod.SharedParts,
                      lod: items_mod.Lod, run_ids: Iterable[int | None]) -> int:
        """Pack and insert items with the raw sqlite3 connection of this transaction (executemany:
        SQLAlchemy's per-row work would cost more than SQLite's), then store the track's summary."""
        wanted: set[int] = set()
        blocks = rows = None
        collecting = gc.isenabled()
        gc.disable()  # a million new rows: no collector passes over them while they are built
        try:
            if isinstance(items, items_mod.ItemColumns):
                shared.limit = max(shared.limit, len(items.starts) // 4)
                blocks = items_mod.pack_blocks(items, shared, lod, wanted)
                if blocks is None:
                    items = list(zip(*items))
            if blocks is None:
                rows = items_mod.pack_items(items, track_id, shared, lod, wanted)
        finally:
            if collecting:
                gc.enable()
        self._require_runs(conn, [*run_ids, *wanted])
        raw = conn.connection.driver_connection
        assert raw is not None
        if blocks:
            first = raw.execute("SELECT coalesce(max(n) + 1, 0) FROM item_blocks WHERE track_id = ?",
                                (track_id,)).fetchone()[0]
            raw.executemany("INSERT INTO item_blocks (track_id, n, count, t_min, t_max, e_max, run_id, labels_json, "
                            "own_json, columns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(track_id, first + b[0], *b[1:]) for b in blocks])
        if shared.new:
            raw.executemany("INSERT INTO item_shared (track_id, n, data_json) VALUES (?, ?, ?)",
                            [(track_id, n, js) for n, js in shared.new])
        if rows:
            raw.executemany("INSERT INTO items (track_id, start_s, end_s, label, confidence, run_id, shared_n, "
                            "data_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        raw.execute("INSERT OR REPLACE INTO track_lod (track_id, n, t_min, t_max, max_len, base_s, t0_s, counts, "
                    "labels_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (track_id, *lod.row()))
        return len(rows) if rows is not None else sum(b[1] for b in blocks or ())

    def append_items(self, track_id: int, items: Iterable[ItemRecord | Mapping[str, Any] | tuple[Any, ...]]) -> int:
        """Add items to an existing track (partial results of a running job); returns
        how many were added."""
        with self._writing() as conn:
            self._require(conn, tracks_table, track_id, "track")
            lod = self._lod(conn, track_id) or items_mod.Lod()
            sh = item_shared_table.c
            known = {js: n for n, js in conn.execute(select(sh.n, sh.data_json).where(sh.track_id == track_id))}
            return self._insert_items(conn, track_id, items, items_mod.SharedParts(known), lod, [])

    def _lod(self, conn: Connection, track_id: int) -> items_mod.Lod | None:
        row = conn.execute(select(track_lod_table).where(track_lod_table.c.track_id == track_id)).first()
        return None if row is None else items_mod.Lod.from_row(row)

    def _shared(self, conn: Connection, track_id: int) -> dict[int, dict[str, Any]]:
        sh = item_shared_table.c
        return items_mod.shared_map(conn.execute(select(sh.n, sh.data_json).where(sh.track_id == track_id)).all(),
                             f"track {track_id}")

    _ITEM_COLUMNS = "id, start_s, end_s, label, confidence, run_id, shared_n, data_json"

    def load_tracks(self, media_id: int) -> list[TrackRecord]:
        """All tracks of a media file with their items (sorted by start time), from one
        consistent snapshot.  This reads every item: for a timeline use :meth:`track_heads`
        and the range reads (:meth:`track_items`, :meth:`track_counts`)."""
        t = tracks_table.c
        with self._reading() as conn:
            track_rows = conn.execute(select(tracks_table).where(t.media_id == media_id).order_by(t.id)).all()
            return [self._with_items(conn, r) for r in track_rows]

    def _with_items(self, conn, row) -> TrackRecord:
        """The track of ``row`` with all its items (sorted by start time), read on ``conn``."""
        return db.track_record(row, tuple(self._all_items(conn, row.id)))

    def _all_items(self, conn, track_id: int) -> list[ItemRecord]:
        raw = conn.connection.driver_connection
        assert raw is not None
        shared = self._shared(conn, track_id)
        out = [items_mod.item_from_row(x, shared) for x in raw.execute(
            f"SELECT {self._ITEM_COLUMNS} FROM items WHERE track_id = ? ORDER BY start_s, id", (track_id,))]
        blocks = self._blocks(conn, track_id)
        if blocks:
            for b in blocks:
                out.extend(b.items(None, shared))
            out.sort(key=_START)  # stable: rows first among equal starts
        return out

    def _blocks(self, conn, track_id: int, *where: Any) -> list[items_mod.Block]:
        """The track's blocks (those meeting the conditions ``where``), checked."""
        bt = item_blocks_table.c
        rows = conn.execute(select(item_blocks_table).where(bt.track_id == track_id, *where).order_by(bt.n)).all()
        return [items_mod.Block(r, f"track {track_id}") for r in rows]

    def load_track(self, track_id: int) -> TrackRecord:
        """One track with all its items (sorted by start time)."""
        with self._reading() as conn:
            row = conn.execute(select(tracks_table).where(tracks_table.c.id == track_id)).first()
            if row is None:
                raise KeyError(f"there is no track with id {track_id!r} in this project")
            return self._with_items(conn, row)

    def track_heads(self, media_id: int, max_items: int) -> list[tuple[TrackRecord, items_mod.Lod | None]]:
        """Every track of a media file with its summary (core.store.items.Lod; None only in a
        file whose summaries are missing: then the items come too), and the items of the tracks
        with at most ``max_items`` of them -- none of the bigger ones (read those by range).
        One snapshot."""
        t = tracks_table.c
        with self._reading() as conn:
            track_rows = conn.execute(select(tracks_table).where(t.media_id == media_id).order_by(t.id)).all()
            raw = conn.connection.driver_connection
            assert raw is not None
            out = []
            for r in track_rows:
                lod = self._lod(conn, r.id)
                n = lod.n if lod is not None else int(raw.execute(
                    "SELECT count(*) FROM items WHERE track_id = ?", (r.id,)).fetchone()[0])
                items: tuple[ItemRecord, ...] = ()
                if n <= max_items or lod is None:
                    items = tuple(self._all_items(conn, r.id))
                out.append((db.track_record(r, items), lod))
            return out

    def track_summary(self, track_id: int) -> items_mod.Lod | None:
        """The track's summary and count buckets (n, t_min, t_max, max_len, labels: {label:
        [items, confirmed]}, counts_between(edges)), or None where none is stored."""
        with self._reading() as conn:
            self._require(conn, tracks_table, track_id, "track")
            return self._lod(conn, track_id)

    def track_items(self, track_id: int, t0: float, t1: float, limit: int | None = None, *,
                    starting: bool = False, shared: dict[int, dict[str, Any]] | None = None) -> list[ItemRecord]:
        """The items of a track that overlap [t0, t1] (``starting``: that start in [t0, t1)), by
        start time, at most ``limit`` of them: an indexed range read (no item is longer than the
        track's longest stored one, so the index is entered at ``t0 - max_len``), and the blocks
        whose bounds meet the range.  ``shared``: the track's shared parts (:meth:`track_shared`)
        a reader keeps, so they are not read again."""
        t0, t1 = float(t0), float(t1)
        cap = None if limit is None else max(0, int(limit))
        with self._reading() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            if starting:
                sql = f"SELECT {self._ITEM_COLUMNS} FROM items WHERE track_id = ? AND start_s >= ? AND start_s < ? " \
                      "ORDER BY start_s, id"
                args: list[Any] = [track_id, t0, t1]
            else:
                lod = self._lod(conn, track_id)
                if lod is None:
                    row = raw.execute("SELECT max(end_s - start_s) FROM items WHERE track_id = ?",
                                      (track_id,)).fetchone()
                    max_len = float(row[0] or 0.0)
                else:
                    max_len = lod.max_len
                sql = (f"SELECT {self._ITEM_COLUMNS} FROM items WHERE track_id = ? AND start_s >= ? AND start_s <= ? "
                       "AND max(end_s, start_s) >= ? ORDER BY start_s, id")
                args = [track_id, t0 - max_len, t1, t0]
            if cap is not None:
                sql += " LIMIT ?"
                args.append(cap)
            rows = raw.execute(sql, args).fetchall()
            bt = item_blocks_table.c
            blocks = self._blocks(conn, track_id, bt.t_min < t1, bt.t_max >= t0) if starting else \
                self._blocks(conn, track_id, bt.t_min <= t1, bt.e_max >= t0)
            picks = [(b, b.select(t0, t1, starting)) for b in sorted(blocks, key=lambda b: b.t_min)]
            needed = {r[6] for r in rows if r[6] is not None}
            for b, idx in picks:
                needed.update(int(x) for x in np.unique(b.shared[idx]) if x >= 0)
            if needed and (shared is None or not needed <= shared.keys()):
                shared = self._shared(conn, track_id)
            shared = shared or {}
            out = [items_mod.item_from_row(r, shared) for r in rows]
            for b, idx in picks:
                if cap is not None and len(out) >= cap:
                    out.sort(key=_START)
                    del out[cap:]
                    if not out or b.t_min > out[-1].start_s:
                        break
                    idx = idx[:cap]
                out.extend(b.items(idx, shared))
            if picks:
                out.sort(key=_START)
                if cap is not None:
                    del out[cap:]
            return out

    def track_shared(self, track_id: int) -> dict[int, dict[str, Any]]:
        """The parts of item data the track's items share, by number (see core.store.items)."""
        with self._reading() as conn:
            return self._shared(conn, track_id)

    def track_counts(self, track_id: int, t0: float, t1: float, buckets: int) -> npt.NDArray[np.float64]:
        """How many items of the track start in each of ``buckets`` equal parts of [t0, t1), from
        the stored count buckets (exact where the parts' edges fall on their grid)."""
        lod = self.track_summary(track_id)
        edges = np.linspace(float(t0), float(t1), max(1, int(buckets)) + 1)
        return np.zeros(len(edges) - 1) if lod is None else lod.counts_between(edges)

    def fill_summaries(self) -> int:
        """Count the tracks that have no summary yet (stored before file version 3) into
        ``track_lod``, in one transaction; how many were filled.  Runs when a project opens
        read-write (a read-only one reads such tracks whole instead)."""
        with self._reading() as conn:
            missing = list(conn.execute(select(tracks_table.c.id).where(
                tracks_table.c.id.not_in(select(track_lod_table.c.track_id)))).scalars())
        if not missing:
            return 0
        with self._writing() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            for track_id in missing:
                lod, starts, ends, labels, confirmed = items_mod.Lod(), [], [], [], []
                shared = self._shared(conn, track_id)
                for row in raw.execute(f"SELECT {self._ITEM_COLUMNS} FROM items WHERE track_id = ?", (track_id,)):
                    try:
                        rec = items_mod.item_from_row(row, shared)
                    except db.BadValue:
                        continue  # counted nowhere; reading it says what is wrong
                    starts.append(rec.start_s)
                    ends.append(max(rec.start_s, rec.end_s))
                    labels.append(rec.label)
                    if rec.data.get("confirmed") is True:
                        confirmed.append(rec.label)
                lod.add(starts, ends, labels, confirmed)
                raw.execute("INSERT OR REPLACE INTO track_lod (track_id, n, t_min, t_max, max_len, base_s, t0_s, "
                            "counts, labels_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (track_id, *lod.row()))
        return len(missing)

    def delete_track(self, track_id: int) -> None:
        with self._writing() as conn:
            self._require(conn, tracks_table, track_id, "track")
            conn.execute(delete(tracks_table).where(tracks_table.c.id == track_id))
