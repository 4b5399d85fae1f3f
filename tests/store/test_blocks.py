"""Big tracks stored in blocks (core.store.items.pack_blocks, table item_blocks): read back exactly as
the same items stored a row each, by range, by start, with limits; hostile blocks are refused."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.store import items as im
from core.store.errors import ProjectCorruptError
from core.store.project import Project
from core.store.schema import ItemRecord
from projectkit import raw


@pytest.fixture()
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(im, "BLOCK_ITEMS", 37)
    monkeypatch.setattr(im, "BLOCK_MIN", 50)


def _items(n: int, run: int | None, seed: int = 5) -> list[tuple]:
    """Detections as the analysis stores them, with the odd ones a store must keep exactly:
    no confidence, no box, a box of ints (kept in the data), data of an item's own, equal starts."""
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        t = round(rnd.uniform(0, 120), 1) if k % 17 else 60.0
        obj = rnd.randrange(6)
        data: dict = {"box": [rnd.uniform(0, 600), rnd.uniform(0, 300), rnd.uniform(600, 1200), rnd.uniform(300, 700)],
                      "size": [1280, 720], "track": obj, "confirmed": obj % 3 != 0,
                      "evidence": {"reason": f"object {obj}", "hits": obj * 2}}
        if k % 29 == 0:
            del data["box"]
        elif k % 31 == 0:
            data["box"] = [1, 2, 3, 4]
        if k % 23 == 0:
            data["note"] = f"looked twice at {k}"
        out.append((t, t + rnd.choice((0.0, 0.5, 3.0)), rnd.choice(("person", "car", "dog")),
                    None if k % 11 == 0 else round(rnd.random(), 3), run, data))
    return out


def _columns(items: list[tuple]) -> im.ItemColumns:
    return im.ItemColumns(*(list(col) for col in zip(*items)))


def _pair(path: Path, items: list[tuple], run_id: bool = True) -> tuple[Project, int, int]:
    p = Project.create(path)
    m = p.add_media("/v.mp4", "h", 1, 120.0, "mp4", [])
    run = p.record_run("analysis/detect", "ssd", "1", {}, m, 0.0, 1.0) if run_id else None
    items = [(*it[:4], run, it[5]) for it in items]
    rows = p.save_track(m, "boxes", "rows", items, run_id=run)
    blocks = p.save_track(m, "boxes", "blocks", _columns(items), run_id=run)
    return p, rows, blocks


def test_blocks_read_back_as_rows(tmp_path: Path, small_blocks: None) -> None:
    items = _items(400, None)
    rnd = random.Random(1)
    rnd.shuffle(items)  # stored sorted by start whatever the order given
    p, rows, blocks = _pair(tmp_path / "p.kestrel", items)
    with p:
        c = raw(p.path)
        assert c.execute("SELECT count(*) FROM item_blocks WHERE track_id = ?", (blocks,)).fetchone()[0] == 11
        assert c.execute("SELECT count(*) FROM items WHERE track_id = ?", (blocks,)).fetchone()[0] == 0
        c.close()
        a, b = p.load_track(rows).items, p.load_track(blocks).items
        assert len(b) == 400 and a == b
        assert sorted(it.data.get("box") == [1, 2, 3, 4] for it in b).count(True) > 0  # ints kept as data
        for _ in range(40):
            t0 = rnd.uniform(-5, 120)
            t1 = t0 + rnd.choice((0.0, 0.5, 7.0, 200.0))
            for starting in (False, True):
                for limit in (None, 1, 5, 60):
                    got = p.track_items(blocks, t0, t1, limit, starting=starting)
                    want = p.track_items(rows, t0, t1, limit, starting=starting)
                    assert [(i.start_s, i.end_s) for i in got] == [(i.start_s, i.end_s) for i in want]
                    if limit is None:  # the same items, equal starts in any order
                        assert sorted(map(repr, got)) == sorted(map(repr, want))
        sa, sb = p.track_summary(rows), p.track_summary(blocks)
        assert (sa.n, sa.t_min, sa.t_max, sa.max_len, sa.labels) == (sb.n, sb.t_min, sb.t_max, sb.max_len, sb.labels)
        # appended rows join the blocks; a replacement leaves no block behind
        p.append_items(blocks, [ItemRecord(1000.0, 1001.0, "late")])
        assert p.track_items(blocks, 999, 2000)[0].label == "late" and len(p.load_track(blocks).items) == 401
        p.save_track(p.list_media()[0].id, "boxes", "blocks", [ItemRecord(0.0, 1.0, "only")])
        assert [i.label for i in p.load_track(blocks).items] == ["only"]


def test_what_is_not_one_plain_run_is_stored_as_rows(small_blocks: None) -> None:
    items = _items(120, 1)
    assert im.pack_blocks(_columns(items), im.SharedParts(), im.Lod(), set()) is not None
    two_runs = [(*it[:4], 1 + k % 2, it[5]) for k, it in enumerate(items)]
    assert im.pack_blocks(_columns(two_runs), im.SharedParts(), im.Lod(), set()) is None
    numpy_times = [(float(k), k + 1, *it[2:]) for k, it in enumerate(items)]  # an int end
    assert im.pack_blocks(_columns(numpy_times), im.SharedParts(), im.Lod(), set()) is None
    assert im.pack_blocks(_columns(items[:40]), im.SharedParts(), im.Lod(), set()) is None  # too few
    with pytest.raises(ValueError, match="before it starts"):
        im.pack_blocks(_columns([(5.0, 1.0, *it[2:]) for it in items]), im.SharedParts(), im.Lod(), set())
    with pytest.raises(ValueError, match="finite"):
        im.pack_blocks(_columns([(float("nan"), 1.0, *it[2:]) for it in items]), im.SharedParts(), im.Lod(), set())


def test_data_that_is_not_shared_is_kept_per_item(small_blocks: None) -> None:
    items = [(float(k), k + 0.5, "x", 0.5, None, {"box": [0.0, 0.0, 1.0, 1.0], "unique": k}) for k in range(90)]
    shared = im.SharedParts(limit=10)
    blocks = im.pack_blocks(_columns(items), shared, im.Lod(), set())
    assert blocks is not None and len(shared.numbers) == 10

    class Row:
        def __init__(self, b: tuple) -> None:
            (self.n, self.count, self.t_min, self.t_max, self.e_max, self.run_id, self.labels_json,
             self.own_json, self.columns) = b
    parts = {n: __import__("json").loads(js) for js, n in shared.numbers.items()}
    back = [it for b in blocks for it in im.Block(Row(b), "t").items(None, parts)]
    assert [it.data for it in back] == [it[5] for it in items]


@pytest.mark.parametrize("sql", [
    "UPDATE item_blocks SET columns = substr(columns, 1, 100)",
    "UPDATE item_blocks SET count = 0",
    "UPDATE item_blocks SET count = 'many'",
    "UPDATE item_blocks SET labels_json = '[1, 2]'",
    "UPDATE item_blocks SET labels_json = '[]'",
    "UPDATE item_blocks SET own_json = '[]'",
    "UPDATE item_blocks SET own_json = '{\"0\": 5}'",
    "UPDATE item_blocks SET columns = zeroblob(length(columns))",  # shared part 0 of every item: still readable
    "DELETE FROM item_shared",
    "UPDATE item_blocks SET columns = CAST(replace(CAST(columns AS TEXT), 'a', 'b') AS BLOB)",
])
def test_hostile_blocks_are_refused(tmp_path: Path, small_blocks: None, sql: str) -> None:
    path = tmp_path / "h.kestrel"
    p, _rows, blocks = _pair(path, _items(120, None))
    c = raw(path)
    c.execute("UPDATE item_blocks SET own_json = '{\"0\": {\"k\": 1}}' WHERE n = 0")
    c.commit()
    c.execute(sql)
    c.commit()
    c.close()
    with p:
        try:
            got = p.load_track(blocks).items
            damaged = False
        except ProjectCorruptError as err:
            assert "damaged" in str(err) and str(path) in str(err)
            damaged = True
        else:  # whatever is read back was validated: finite times, known labels, mappings
            assert all(isinstance(i.data, dict) and i.start_s == i.start_s and isinstance(i.label, str) for i in got)
        if "count = " in sql or "DELETE" in sql or "labels_json" in sql or "own_json" in sql or "substr" in sql:
            assert damaged, sql
        try:
            p.track_items(blocks, 0, 120)
            assert not damaged
        except ProjectCorruptError:
            assert damaged
