"""A timeline at any scale (#18 item 4): big tracks stored compactly with their counts, read by
range and level of detail, drawn as counts when zoomed out -- checked against the naive answer
over a few thousand items."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core.media.decode import MediaInfo, StreamInfo
from core.perception import ops
from core.perception.overlay import OverlayModel
from core.session import MediaSession
from core.store.project import Project
from core.timeline import Item, StoredTrack, Track

LABELS = ("person", "car", "dog", "bicycle")


def _items(n: int, seed: int = 0, span: float = 600.0) -> list[tuple]:
    """Box-like items: the evidence repeats per object track, a few long intervals and markers,
    one with odd data (integer box, a text) that cannot be packed the fast way."""
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        t = round(rnd.uniform(0, span), 3)
        obj = rnd.randrange(40)
        length = 0.5 if k % 97 else rnd.uniform(5, 60)
        if k % 211 == 0:
            length = 0.0
        data = {"box": [round(rnd.uniform(0, 300), 1), 1.5, 310.25, 200.0], "size": [640, 360],
                "model": "ssd", "track": obj, "confirmed": obj % 3 != 0,
                "evidence": {"reason": f"object {obj}", "hits": obj, "look": None}}
        if k % 500 == 7:
            data = {"box": [1, 2, 3, 4], "text": f"odd {k}"}
        out.append((t, t + length, LABELS[obj % len(LABELS)], round(rnd.random(), 3), None, data))
    return out


def _naive_overlap(items, t0, t1):
    return sorted([i for i in items if i[0] <= t1 and max(i[1], i[0]) >= t0], key=lambda i: i[0])


def _as_tuple(rec):
    return (rec.start_s, rec.end_s, rec.label, rec.confidence, rec.run_id, rec.data)


@pytest.fixture
def stored(tmp_path: Path):
    p = Project.create(tmp_path / "scale.kestrel")
    mid = p.add_media("/x.mp4", "h", 1, 600.0, "mp4", [])
    items = _items(3000)
    tid = p.save_track(mid, "detections", "boxes", items[:2500], meta={"model": "ssd"})
    assert p.append_items(tid, items[2500:]) == 500
    yield p, mid, tid, items
    p.close()


def test_range_and_count_reads_equal_the_naive_answer(stored):
    p, mid, tid, items = stored
    ordered = sorted(items, key=lambda i: i[0])
    # everything comes back whole: the shared part joined again, odd data untouched
    got = [_as_tuple(r) for r in p.load_tracks(mid)[0].items]
    assert sorted(got, key=lambda i: (i[0], i[1])) == sorted(ordered, key=lambda i: (i[0], i[1]))
    rnd = random.Random(1)
    for _ in range(25):
        a = rnd.uniform(-20, 620)
        b = a + rnd.choice([0.0, 0.7, 5.0, 80.0])
        want = _naive_overlap(items, a, b)
        assert sorted(map(_as_tuple, p.track_items(tid, a, b)), key=lambda i: (i[0], i[1])) == \
            sorted(want, key=lambda i: (i[0], i[1]))
        starting = [i for i in items if a <= i[0] < b]
        assert len(p.track_items(tid, a, b, starting=True)) == len(starting)
    assert len(p.track_items(tid, 0, 600, limit=10)) == 10
    lod = p.track_summary(tid)
    assert lod.n == 3000 and lod.t_min == min(i[0] for i in items) and lod.t_max == max(i[1] for i in items)
    assert abs(lod.max_len - max(i[1] - i[0] for i in items)) < 1e-9
    for label in LABELS:
        mine = [i for i in items if i[2] == label]
        assert lod.labels[label] == [len(mine), sum(1 for i in mine if i[5].get("confirmed") is True)]
    # counts per bucket: exact where the edges fall on the stored grid (0.5 s)
    for t0, t1, nb in ((0.0, 600.0, 60), (100.0, 150.0, 100), (-10.0, 700.0, 71)):
        edges = np.linspace(t0, t1, nb + 1)
        naive = np.histogram([i[0] for i in items], bins=edges)[0]
        naive[-1] -= sum(1 for i in items if i[0] == t1)  # histogram's last bin is closed
        assert np.array_equal(p.track_counts(tid, t0, t1, nb), naive)
    # rows are compact: far fewer shared parts than items
    n_shared = len(p.track_shared(tid))
    assert 40 <= n_shared < 100


def test_a_stored_track_answers_like_a_list(stored):
    p, mid, tid, items = stored
    small = ops.load_tracks(p, mid)[0]
    big = ops.load_timeline(p, mid, stored_above=1000)[0]
    assert isinstance(big, StoredTrack) and not isinstance(small, StoredTrack) and big.size == small.size == 3000
    assert ops.load_timeline(p, mid)[0].__class__ is not StoredTrack  # 3000 items: kept in memory by default
    rnd = random.Random(2)
    for _ in range(20):
        a = rnd.uniform(0, 600)
        b = a + rnd.choice([0.0, 1.0, 30.0, 400.0])
        assert big.in_range(a, b) == small.in_range(a, b)
        assert big.at(a, 0.1) == small.at(a, 0.1)
    edges = (0.0, 600.0, 120)
    assert np.array_equal(big.counts(*edges), small.counts(*edges))
    # partial results added in memory join the stored ones
    big.add([Item(10.0, 10.5, "person", 0.9)])
    assert big.size == 3001 and Item(10.0, 10.5, "person", 0.9) in big.in_range(10.0, 10.2)
    # the overlay's per-class counts come from the stored summary, not from the items
    tl_small, tl_big = MediaSession().timeline, MediaSession().timeline
    tl_small.set_track(Track("boxes", "ssd", list(small.items), meta={"task": "detect"}))
    stored_boxes = ops.load_timeline(p, mid, stored_above=1000)[0]
    stored_boxes.kind, stored_boxes.meta = "boxes", {"task": "detect"}
    tl_big.set_track(stored_boxes)
    before = stored_boxes.reads
    assert OverlayModel(tl_big).labels() == OverlayModel(tl_small).labels()
    assert OverlayModel(tl_big).confirmed_counts() == OverlayModel(tl_small).confirmed_counts()
    assert stored_boxes.reads == before
    rows = OverlayModel(tl_big).rows(100.0, 200.0, limit=50)
    assert len(rows) == 50 and [r[0] for r in rows] == [r[0] for r in OverlayModel(tl_small).rows(100.0, 200.0, limit=50)]
    assert all(100.0 <= it.end and it.start <= 200.0 and it.confidence >= 0.3 for it, _src in rows)


def test_the_view_draws_counts_zoomed_out_and_items_zoomed_in(stored, qtbot):
    from gui.views.timeline import TimelineView

    p, mid, tid, _items_ = stored
    s = MediaSession()
    s.set_media(MediaInfo(path="/x.mp4", size_bytes=1, duration_s=600.0, container="mp4",
                          streams=(StreamInfo(0, "video", "h264", 600.0, 640, 360, 25.0),)), mid)
    track = ops.load_timeline(p, mid, stored_above=1000)[0]
    s.timeline.set_track(track)
    view = TimelineView(s)
    qtbot.addWidget(view)
    view.resize(800, 200)
    view.grab()
    assert view.last_paint_mode[track.key] == "counts" and track.reads == 0  # no item was read
    s.set_view(300.0, 303.0)
    view.grab()
    assert view.last_paint_mode[track.key] == "items" and 0 < track.reads <= 2
    s.set_view(0.0, 600.0)
    reads = track.reads
    view.grab()
    assert track.reads == reads


def test_a_version_2_project_opens_and_gets_its_summaries(tmp_path: Path):
    path = tmp_path / "old.kestrel"
    with Project.create(path) as p:
        mid = p.add_media("/x.mp4", "h", 1, 600.0, "mp4", [])
        tid = p.save_track(mid, "detections", "person", [])
    items = _items(400, seed=3)
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("DROP TABLE item_shared; DROP TABLE track_lod; ALTER TABLE items DROP COLUMN shared_n; "
                    "DROP TABLE item_blocks; UPDATE meta SET value = '2' WHERE key = 'schema_version';")
    import json
    c.executemany("INSERT INTO items (track_id, start_s, end_s, label, confidence, run_id, data_json) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [(tid, s, e, lab, cf, None, json.dumps(d)) for s, e, lab, cf, _r, d in items])
    c.close()
    with Project.open(path) as p:
        assert p.schema_version == 4 and any("bak-v2" in w for w in p.warnings)
        lod = p.track_summary(tid)
        assert lod.n == 400 and lod.labels["person"][0] == sum(1 for i in items if i[2] == "person")
        assert len(p.load_tracks(mid)[0].items) == 400
        assert sum(p.track_counts(tid, 0.0, 600.0, 12)) == 400
        tr = ops.load_timeline(p, mid, stored_above=100)[0]
        assert isinstance(tr, StoredTrack) and len(tr.in_range(0, 600)) == 400
        p.append_items(tid, items[:10])  # the upgraded file takes new items the compact way
        assert p.track_summary(tid).n == 410


def test_the_detections_panel_lists_the_view_of_a_stored_track(stored, qtbot):
    from gui.panels.detections import DetectionsPanel

    p, mid, _tid, items = stored
    s = MediaSession()
    s.set_media(MediaInfo(path="/x.mp4", size_bytes=1, duration_s=600.0, container="mp4",
                          streams=(StreamInfo(0, "video", "h264", 600.0, 640, 360, 25.0),)), mid)
    boxes = ops.load_timeline(p, mid, stored_above=1000)[0]
    boxes.kind, boxes.meta = "boxes", {"task": "detect"}
    s.timeline.set_track(boxes)
    overlay = OverlayModel(s.timeline)
    panel = DetectionsPanel(s, overlay)
    qtbot.addWidget(panel)
    panel.refresh()
    assert panel.model.windowed and boxes._all is None  # never every box
    assert panel.classes.count() == len(LABELS) and panel.count.text().startswith("3000 detections")
    s.set_view(100.0, 110.0)
    panel.refresh_rows()
    want = [i for i in items if i[0] <= 110.0 and max(i[1], i[0]) >= 100.0 and i[3] >= overlay.min_score]
    assert len(panel.model.rows) == len(want) and f"{len(want)} in view" in panel.count.text()
