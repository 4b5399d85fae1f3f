"""Makers for the scoring tests (tests/handoff/test_metrics.py, test_metrics_panel.py): motmetrics'
answer on the same boxes, and a real project with a detector run and an imported ground truth."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np

from core.handoff.boxes import Box, store_import
from core.perception.analysis import AnalysisRequest, ModelOutput, run_params
from core.perception.ops import store_analysis
from core.store.project import Project
from models.catalogue import get_spec
from models.types import Detection


def motmetrics_per_class(truth, pred, frames, mm):
    """motmetrics' precision, recall, IDF1, switches per class and overall: an accumulator per
    class fed every evaluated frame (ids in order), distances from mm.distances.iou_matrix."""
    labels = sorted({b.label for b in truth} | {b.label for b in pred})
    xywh = lambda bs: np.array([[b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]] for b in bs])  # noqa: E731
    accs = {label: mm.MOTAccumulator(auto_id=False) for label in labels}
    whole = mm.MOTAccumulator(auto_id=False)  # every class in one: ids kept apart, other classes never pair
    for f in frames:
        both_o, both_h = [], []
        for c, label in enumerate(labels):
            o = sorted((b for b in truth if b.frame == f and b.label == label), key=lambda b: b.track)
            h = sorted((b for b in pred if b.frame == f and b.label == label), key=lambda b: b.track)
            d = mm.distances.iou_matrix(xywh(o), xywh(h), max_iou=0.5) if o and h else np.empty((len(o), len(h)))
            accs[label].update([b.track for b in o], [b.track for b in h], d, frameid=f)
            both_o += [(c, b) for b in o]
            both_h += [(c, b) for b in h]
        d = np.full((len(both_o), len(both_h)), np.nan)
        for i, (ci, bo) in enumerate(both_o):
            for j, (cj, bh) in enumerate(both_h):
                if ci == cj:
                    d[i, j] = mm.distances.iou_matrix(xywh([bo]), xywh([bh]), max_iou=0.5)[0, 0]
        whole.update([c * 1000 + b.track for c, b in both_o], [c * 1000 + b.track for c, b in both_h], d, frameid=f)
    mh = mm.metrics.create()
    names = ["precision", "recall", "idf1", "num_switches", "num_objects", "num_predictions"]
    out = {label: mh.compute(accs[label], metrics=names, name=label).iloc[0] for label in labels}
    out[""] = mh.compute(whole, metrics=names, name="all").iloc[0]
    return out


def same(ours: float | None, theirs: float) -> bool:
    return (ours is None and math.isnan(theirs)) or (ours is not None and abs(ours - theirs) <= 1e-9)


MODEL = "ssd-mobilenet-v2-coco"
MEDIA_FPS = 10.0


def store_run(p: Project, mid: int, truth: list[Box], seed: int = 5) -> None:
    """A detector run over 10 s at 2 fps (stored by core.perception.ops.store_analysis): the
    truth's boxes, jittered, a few missed, an unconfirmed false positive (#77) every few frames."""
    rnd = random.Random(seed)
    spec = get_spec(MODEL)
    req = AnalysisRequest(path="/videos/clip.mp4", models=(MODEL,), fps=2.0)
    frames = []
    for i in range(20):
        t, f = i * 0.5, i * 5
        dets = [Detection(tuple(v + rnd.uniform(-2, 2) for v in b.box), b.label, 0.9, 1, b.track - 100)
                for b in truth if b.frame == f and rnd.random() > 0.1]
        if i % 4 == 1:
            dets.append(Detection((200.0, 150.0, 260.0, 230.0), "person", 0.4, 1, 77))
        frames.append((t, dets))
    def verdict(d: Detection) -> dict:  # the false positive (#77) is one Kestrel could not confirm
        ok = d.track_id != 77
        return {"confirmed": ok, "evidence": {"reason": f"{'' if ok else 'un'}confirmed: a fixture's verdict"}}
    out = ModelOutput(name=spec.name, title=spec.title, task=spec.task, version=spec.version or "1",
                      params=run_params(req, spec, 10.0), frames=frames, frame_size=(320, 240),
                      started_at=1.7e9, duration_s=2.5, evidence=[[verdict(x) for x in d] for _t, d in frames])
    store_analysis(p, mid, out, 0.5)


def ground_truth() -> list[Box]:
    """Two persons and a car annotated at every frame (10 fps) for 10 s, moving right."""
    out = []
    for f in range(100):
        t = f / MEDIA_FPS
        out += [Box(t, f, 101, "person", (10.0 + f, 20.0, 50.0 + f, 100.0)),
                Box(t, f, 102, "person", (150.0, 30.0 + f / 2, 190.0, 110.0 + f / 2)),
                Box(t, f, 103, "car", (60.0 + f / 4, 150.0, 140.0 + f / 4, 210.0))]
    return out


def make_project(tmp_path: Path, *, detector: bool = True, truth: list[Box] | None = None) -> tuple[Project, int, str]:
    p = Project.create(tmp_path / "p.kestrel")
    streams = [{"index": 0, "kind": "video", "codec": "h264", "width": 320, "height": 240, "fps": MEDIA_FPS,
                "rotation": 0, "duration_s": 10.0}]
    mid = p.add_media(str(tmp_path / "clip.mp4"), "sha256:x", 1, 10.0, "mp4", streams)
    truth = ground_truth() if truth is None else truth
    if detector:
        store_run(p, mid, truth)
    src = tmp_path / "gt.json"
    src.write_text("{}")  # the file's hash is part of the track's meta
    name = store_import(p, mid, truth, fmt="coco", path=src) and "ground truth: gt.json"
    return p, mid, name
