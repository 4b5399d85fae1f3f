"""A file with a million detections: how fast it is stored, opened and drawn, beside the old path.

    .venv/bin/python bench/timeline_scale.py [--n 1000000] [--hours 24] [--no-baseline]

Builds (in a temporary folder) what an analysis of a busy 24-hour camera stores: SSD-like
detections at 2 frames/s of objects that come and go (people, cars, bicycles, dogs…; each object
a track of moving boxes, about 80% of them confirmed with their evidence), turned into tracks by
the analysis job's own ``core.perception.analysis.tracks_for`` (a hidden "boxes" track with every
detection, a presence track per class), then measures, each beside its baseline in the same run:

- store: ``ops.save_track`` of every track in one transaction (compact rows, raw executemany,
  the stored counts)   vs   the previous path (SQLAlchemy insert of every row's whole JSON);
- open: the session's load (``core.session.load_stored``: big tracks stay in the project) and the
  first paint of the timeline (TimelineView 1600×400, offscreen), then the Detections panel's
  refresh   vs   loading every item (``ops.load_tracks``) and the same first paint; each in a
  fresh process, with its peak memory growth (ru_maxrss after minus RSS before, psutil);
- zoom and scroll: 50 wheel steps (×0.8 each, from the whole day in to about a second, around a
  busy time) and 50 scroll steps each at a 10-minute and a 20-second view, timing each frame's
  ``set_view`` + paint (``grab``): p50/p95/max.

Goals (issue #18): stored ≤ 5 s; opened with the timeline drawn ≤ 2 s and ≤ 300 MB; zoom and
scroll ≤ 50 ms a frame (2-core CPU). ``run(n)`` returns the numbers (bench/longfootage.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

LABELS = (("person", 0.55), ("car", 0.25), ("bicycle", 0.07), ("truck", 0.05), ("dog", 0.04),
          ("backpack", 0.02), ("handbag", 0.02))
STEP = 0.5  # 2 frames/s
FRAME = (1280, 720)


def detections(n: int, hours: float, seed: int = 18):
    """A ModelOutput of an SSD-like run with about ``n`` detections over ``hours``: objects arrive
    at random, stay 5 s to 10 min (mean 1 min), move, and carry their track's verdict."""
    from core.perception.analysis import ModelOutput
    from models.types import Detection

    rnd = random.Random(seed)
    dur = hours * 3600.0
    frames: dict[int, list] = {}
    verdicts: dict[int, list] = {}
    names, weights = zip(*LABELS)
    total, obj = 0, 0
    while total < n:
        obj += 1
        label = rnd.choices(names, weights)[0]
        life = min(600.0, max(5.0, rnd.expovariate(1 / 60.0)))
        k0 = int(rnd.uniform(0, max(1.0, dur - life)) / STEP)
        x, y = rnd.uniform(0, FRAME[0] - 200), rnd.uniform(0, FRAME[1] - 200)
        vx, vy = rnd.uniform(-6, 6), rnd.uniform(-3, 3)
        w, h = rnd.uniform(30, 200), rnd.uniform(40, 200)
        ok = rnd.random() < 0.8
        ev = {"confirmed": ok, "evidence": {
            "confirmed": ok, "reason": ("confirmed: 12 hits over 6.0 s, moving" if ok else
                                        "unconfirmed: 3 hits but static, no second look"),
            "hits": int(life / STEP), "steady": int(life / STEP), "motion": round(rnd.random(), 3),
            "look": None if not ok else {"kind": "classifier", "agrees": True, "label": label,
                                         "score": round(rnd.uniform(0.3, 0.9), 3)},
            "confusion": None}}
        for k in range(k0, k0 + int(life / STEP)):
            if total >= n:
                break
            x = min(max(0.0, x + vx + rnd.uniform(-1, 1)), FRAME[0] - w)
            y = min(max(0.0, y + vy + rnd.uniform(-1, 1)), FRAME[1] - h)
            frames.setdefault(k, []).append(Detection((x, y, x + w, y + h), label, round(rnd.uniform(0.3, 0.95), 3),
                                                      track_id=obj))
            verdicts.setdefault(k, []).append(ev)
            total += 1
    keys = sorted(frames)
    return ModelOutput("ssd-mobilenet-v2-coco", "SSD", "detect", "1", {"fps": 2.0},
                       frames=[(k * STEP, frames[k]) for k in keys], frame_size=FRAME,
                       evidence=[verdicts[k] for k in keys])


def _old_save_track(project, media_id: int, track) -> int:
    """The store path before #18: every row validated into a dict with its whole data as JSON
    and inserted through SQLAlchemy (what Project.save_track did)."""
    from sqlalchemy import insert

    from core.store import schema as db

    rows = [db.item_values({"start_s": i.start, "end_s": i.end, "label": i.label, "confidence": i.confidence,
                            "run_id": i.run_id, "data": i.data}) for i in track.items]
    with project._writing() as conn:
        tid = project.save_track(media_id, track.kind, track.name, [], run_id=track.run_id, meta=track.meta)
        if rows:
            conn.execute(insert(db.items_table), [{**r, "track_id": tid} for r in rows])
    return tid


def build(folder: Path, n: int, hours: float, baseline: bool) -> dict:
    """Both projects (new path, and the old one as baseline): store times and what was stored."""
    from core.perception import ops
    from core.perception.analysis import tracks_for
    from core.store.project import Project

    t = time.perf_counter()
    out = detections(n, hours)
    gen_s = time.perf_counter() - t
    res: dict = {"detections": sum(len(d) for _t, d in out.frames), "hours": hours, "generate_s": round(gen_s, 2)}
    for mode in (("new", "old") if baseline else ("new",)):
        p = Project.create(folder / f"{mode}.kestrel")
        mid = p.add_media("/day.mp4", "day", 1, hours * 3600.0, "mp4", [])
        run = p.record_run("analysis/detect", out.name, "1", {}, mid, time.time(), 1.0)
        tracks = tracks_for(out, STEP, run)
        t, c = time.perf_counter(), time.process_time()
        with p.batch():
            for tr in tracks:
                (ops.save_track if mode == "new" else _old_save_track)(p, mid, tr)
        res[f"store_{mode}_s"] = round(time.perf_counter() - t, 2)
        res[f"store_{mode}_cpu_s"] = round(time.process_time() - c, 2)
        res["items_stored"] = sum(tr.size for tr in tracks)
        res["tracks"] = len(tracks)
        p.close()
        res[f"file_{mode}_mb"] = round((folder / f"{mode}.kestrel").stat().st_size / 1e6
                                       + (os.path.getsize(f"{folder / mode}.kestrel-wal")
                                          if os.path.exists(f"{folder / mode}.kestrel-wal") else 0) / 1e6, 1)
        del tracks
    del out
    return res


def _pcts(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1)}


def open_and_draw(path: Path, mode: str, frames: bool) -> dict:
    """In this (fresh) process: open the project, load as the window does (``new``: the session's
    load; ``old``: every item), draw the timeline once, refresh the Detections panel; then time
    zoom and scroll frames."""
    import psutil
    from PySide6.QtWidgets import QApplication

    from core.media.decode import MediaInfo, StreamInfo
    from core.perception import ops
    from core.perception.overlay import OverlayModel
    from core.session import MediaSession, load_stored
    from core.store.project import Project
    from core.timeline import StoredTrack, Track
    from gui.panels.detections import DetectionsPanel
    from gui.views.timeline import TimelineView

    app = QApplication.instance() or QApplication([])
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t, cpu = time.perf_counter(), time.process_time()
    p = Project.open(path)
    mid = p.list_media()[0].id
    dur = p.list_media()[0].duration_s
    if mode == "new":
        _wave, tracks, _events = load_stored(p, mid)
    else:
        tracks = ops.load_tracks(p, mid)
    t_load = time.perf_counter() - t
    s = MediaSession()
    s.set_media(MediaInfo(path="/day.mp4", size_bytes=1, duration_s=dur, container="mp4",
                          streams=(StreamInfo(0, "video", "h264", dur, 1280, 720, 25.0),)), mid)
    for tr in tracks:
        s.timeline.set_track(tr)
    boxes = next(tr for tr in tracks if tr.kind == "boxes")
    # every detection as a visible row too (the boxes track itself is hidden): a million items drawn
    every = (StoredTrack("detections", "every box", boxes.source, boxes.span, labels=boxes.labels)
             if isinstance(boxes, StoredTrack) else Track("detections", "every box", boxes.items))
    s.timeline.set_track(every)
    view = TimelineView(s)
    view.resize(1600, 400)
    view.grab()
    t_open, cpu_open = time.perf_counter() - t, time.process_time() - cpu
    overlay = OverlayModel(s.timeline)
    panel = DetectionsPanel(s, overlay)
    t2 = time.perf_counter()
    panel.refresh()
    t_panel = time.perf_counter() - t2
    rss1 = proc.memory_info().rss
    peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = {f"open_{mode}_s": round(t_open, 2), f"open_{mode}_cpu_s": round(cpu_open, 2),
           f"load_{mode}_s": round(t_load, 2),
           f"panel_{mode}_s": round(t_panel, 2), f"panel_{mode}_text": panel.count.text(),
           f"peak_growth_{mode}_mb": round(max(peak1 - max(rss0, peak0), rss1 - rss0) / 1e6, 1),
           f"rss_growth_{mode}_mb": round((rss1 - rss0) / 1e6, 1),
           f"items_in_memory_{mode}": sum(0 if tr.is_stored else tr.size for tr in tracks)}
    if frames:
        # a busy moment to zoom into: where the boxes' counts peak
        c = boxes.counts(0, dur, 1440)
        focus = (int(np.argmax(c)) + 0.5) * dur / 1440
        zoom = []
        modes: set[str] = set()
        s.set_view(0, dur)
        view.grab()
        modes |= set(view.last_paint_mode.values())
        for _ in range(50):
            t0, t1 = s.view
            a = time.perf_counter()
            s.set_view(focus - (focus - t0) * 0.8, focus + (t1 - focus) * 0.8)
            view.grab()
            zoom.append(time.perf_counter() - a)
            modes |= set(view.last_paint_mode.values())
        res[f"zoom_{mode}"] = _pcts(zoom) | {"last_view_s": round(s.view[1] - s.view[0], 2)}
        for span in (600.0, 20.0):
            s.set_view(focus - span / 2, focus + span / 2)
            view.grab()
            pans = []
            for _ in range(50):
                t0, t1 = s.view
                a = time.perf_counter()
                s.set_view(t0 + span * 0.1, t1 + span * 0.1)  # Shift+wheel: a tenth of the view
                view.grab()
                pans.append(time.perf_counter() - a)
                modes |= set(view.last_paint_mode.values())
            res[f"scroll_{int(span)}s_{mode}"] = _pcts(pans)
        res[f"paint_modes_{mode}"] = sorted(modes)
        res[f"source_reads_{mode}"] = getattr(every, "reads", None)
    p.close()
    del app
    return res


def _child(path: Path, mode: str, frames: bool) -> dict:
    r = subprocess.run([sys.executable, __file__, "--open", str(path), "--mode", mode] + ([] if frames else ["--no-frames"]),
                       capture_output=True, text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    if r.returncode != 0:
        raise RuntimeError(f"the {mode} open failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(n: int = 1_000_000, hours: float = 24.0, baseline: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="kestrel-timeline-") as d:
        folder = Path(d)
        res = build(folder, n, hours, baseline)
        res |= _child(folder / "new.kestrel", "new", True)
        if baseline:
            res |= _child(folder / "old.kestrel", "old", True)
            res["store_ratio_new_vs_old"] = round(res["store_new_s"] / max(res["store_old_s"], 1e-9), 3)
            res["open_ratio_new_vs_old"] = round(res["open_new_s"] / max(res["open_old_s"], 1e-9), 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="detections (default 1,000,000)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the old store and load paths")
    ap.add_argument("--open", type=Path, help=argparse.SUPPRESS)  # the child: open one project
    ap.add_argument("--mode", choices=("new", "old"), default="new", help=argparse.SUPPRESS)
    ap.add_argument("--no-frames", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.open is not None:
        print(json.dumps(open_and_draw(args.open, args.mode, not args.no_frames)))
        return 0
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(wall times grow with other work on the machine; CPU times less)")
    res = run(args.n, args.hours, not args.no_baseline)
    print(f"{res['detections']:,} detections over {args.hours:g} h ({res['items_stored']:,} items in "
          f"{res['tracks']} tracks; generated in {res['generate_s']} s)")
    for k, v in res.items():
        print(f"  {k}: {v}")
    print("goals: store ≤ 5 s; open + timeline drawn ≤ 2 s and ≤ 300 MB; zoom/scroll ≤ 50 ms a frame (p95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
