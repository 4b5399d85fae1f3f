"""core.handoff.metrics: precision, recall and IDF1 per class against a ground truth, equal to
py-motmetrics' on the same data (the issue's acceptance test), the rule of which frames count, and
the scores of a real project's detector run against an imported ground truth."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from core.handoff import metrics
from core.handoff.base import HandoffError
from core.handoff.boxes import Box, store_import
from core.jobs import Cancelled, HeadlessState
from core.perception.analysis import ModelOutput, run_params, AnalysisRequest
from core.perception.ops import store_analysis
from core.store.project import Project
from models.catalogue import get_spec
from models.types import Detection

FPS = 25.0
STEP = 5  # the detector samples every 5th frame (5 fps)
SAMPLED = list(range(0, 400, STEP))


def q(v: float) -> float:
    """Quarter pixels: exact in binary, so x + (x2 - x) == x2 and motmetrics' x, y, w, h boxes
    give bit-for-bit the same IoU as x1, y1, x2, y2."""
    return round(v * 4) / 4


def scene(seed: int) -> tuple[list[Box], list[Box]]:
    """Truth and predictions on SAMPLED: persons and cars moving, the detector's jitter, misses,
    false positives, a box of the wrong class, one too far off (IoU < 0.5), two persons whose ids
    swap halfway, a stretch with no truth but predictions, frames with truth and no predictions."""
    rnd = random.Random(seed)
    truth, pred = [], []
    objects = [(k, "person" if k < 4 else "car", rnd.uniform(0, 500), rnd.uniform(0, 300),
                rnd.uniform(-2, 2), rnd.uniform(-1, 1), rnd.uniform(30, 80), rnd.uniform(40, 120),
                rnd.randrange(0, 150), rnd.randrange(250, 400)) for k in range(7)]
    for f in SAMPLED:
        t = f / FPS
        for k, label, x, y, vx, vy, w, h, first, last in objects:
            if not first <= f <= last or 180 <= f < 220:  # 180..219: a stretch the truth holds nothing
                continue
            box = (q(x + vx * f), q(y + vy * f), q(x + vx * f + w), q(y + vy * f + h))
            truth.append(Box(t, f, 100 + k, label, box))
        for k, label, x, y, vx, vy, w, h, first, last in objects:
            if not first <= f <= last or rnd.random() < 0.12 or 300 <= f < 320:  # misses; 300..319: none found
                continue
            pid = k
            if k in (0, 1) and f >= 200:
                pid = 1 - k  # the tracker swaps the two persons' ids
            jx, jy = rnd.uniform(-6, 6), rnd.uniform(-6, 6)
            if rnd.random() < 0.05:
                jx += w * 0.8  # too far off to pair
            box = (q(x + vx * f + jx), q(y + vy * f + jy), q(x + vx * f + w + jx), q(y + vy * f + h + jy))
            wrong = label == "person" and rnd.random() < 0.04
            pred.append(Box(t, f, pid, "car" if wrong else label, box, round(rnd.uniform(0.3, 1), 3)))
        truth += [Box(t, f, 200 + k, "person", box) for k, box in crossing_truth(f)]
        pred += [Box(t, f, 90 + k, "person", box, 0.8) for k, box in crossing_pred(f)]
        for _ in range(rnd.choice((0, 0, 1, 2))):  # false positives, now and then a short-lived track
            x, y = rnd.uniform(0, 600), rnd.uniform(0, 400)
            pred.append(Box(t, f, 50 + rnd.randrange(5), rnd.choice(("person", "car")),
                            (q(x), q(y), q(x + 40), q(y + 60)), 0.31))
    return truth, pred


A, B = (400.0, 300.0, 440.0, 380.0), (410.0, 300.0, 450.0, 380.0)  # IoU 0.6
C, D = (100.0, 300.0, 140.0, 380.0), (118.0, 300.0, 158.0, 380.0)  # IoU 0.38: never the same object


def crossing_truth(f: int) -> list[tuple[int, tuple]]:
    """Where keeping an earlier pair differs from the best pairing of one frame alone."""
    return ([(0, A), (1, B)] if 330 <= f < 360 else []) + ([(2, C)] if 370 <= f < 400 else []) + (
        [(3, D)] if 375 <= f < 400 else [])


def crossing_pred(f: int) -> list[tuple[int, tuple]]:
    """330..339: #0 on A, #2 on B; then #0 moves between them (nearer B) and #1 takes A: the
    MOT rule keeps A with #0, B goes to #1 (one switch, not two). 370..374: #3 on C; then #3
    sits between C and D and #4 on C: keeping C with #3 leaves D and #4 unpaired (one match, not two)."""
    out = []
    if 330 <= f < 340:
        out += [(0, A), (2, B)]
    elif 340 <= f < 360:
        out += [(0, (408.0, 300.0, 448.0, 380.0)), (1, A)]
    if 370 <= f < 375:
        out += [(3, C)]
    elif 375 <= f < 400:
        out += [(3, (109.0, 300.0, 149.0, 380.0)), (4, C)]
    return out


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


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_precision_recall_idf1_equal_motmetrics_per_class(seed, monkeypatch):
    mm = pytest.importorskip("motmetrics")
    if not hasattr(np, "asfarray"):  # motmetrics 1.4.0's iou_matrix calls numpy's removed asfarray (NumPy 2)
        monkeypatch.setattr(np, "asfarray", lambda a: np.asarray(a, dtype=float), raising=False)
    truth, pred = scene(seed)
    got = metrics.score(pred, truth, fps=FPS, frames=set(SAMPLED))
    first, last = min(b.frame for b in truth), max(b.frame for b in truth)
    evaluated = [f for f in SAMPLED if first <= f <= last]  # the truth's span; inside it every sampled frame
    assert got.evaluated == len(evaluated) and got.candidates == len(SAMPLED) and got.window == STEP / 2
    want = motmetrics_per_class(truth, pred, evaluated, mm)
    rows = {c.label: c for c in got.classes} | {"": got.overall}
    assert set(rows) == set(want) == {"person", "car", ""}
    for label, c in rows.items():
        w = want[label]
        assert same(c.precision, w["precision"]), (label, c, w)
        assert same(c.recall, w["recall"]), (label, c, w)
        assert same(c.idf1, w["idf1"]), (label, c, w)
        assert (c.switches, c.truth, c.pred) == (w["num_switches"], w["num_objects"], w["num_predictions"]), label
    person = rows["person"]
    assert person.switches >= 1 and person.fp and person.fn and person.idtp < person.tp  # the scene did its job


def test_a_perfect_detector_scores_one_and_another_class_never_matches():
    truth, _pred = scene(4)
    got = metrics.score(truth, truth, fps=FPS, frames=set(SAMPLED))
    assert (got.overall.precision, got.overall.recall, got.overall.idf1) == (1.0, 1.0, 1.0)
    relabelled = [Box(b.t, b.frame, b.track, "dog", b.box) for b in truth]
    got = metrics.score(relabelled, truth, fps=FPS, frames=set(SAMPLED))
    assert got.overall.tp == 0 and got.overall.fp == got.overall.fn == len(truth)
    dog = next(c for c in got.classes if c.label == "dog")
    assert dog.recall is None and dog.precision == 0.0 and not dog.enough


def _box(f: int, track: int, x: float = 10.0, label: str = "person") -> Box:
    return Box(f / FPS, f, track, label, (x, 10.0, x + 40.0, 90.0))


def test_which_frames_count_dense_sparse_and_outside_the_truth():
    sampled = set(range(0, 100, 10))  # the detector every 10th frame
    pred = [_box(f, 1) for f in sorted(sampled)]
    # dense truth (every frame) of frames 20..59: sampled frames 20..50 count; outside the truth's span nothing
    dense = [_box(f, 7) for f in range(20, 60)]
    got = metrics.score(pred, dense, fps=FPS, frames=sampled)
    assert (got.evaluated, got.window, got.overall.tp, got.overall.fp) == (4, 0.5, 4, 0)
    # dense truth with a hole (nothing there at 30..39): frame 30 is evaluated as empty, its box a false positive
    holed = [b for b in dense if not 30 <= b.frame < 40]
    got = metrics.score(pred, holed, fps=FPS, frames=sampled)
    assert (got.evaluated, got.overall.tp, got.overall.fp) == (4, 3, 1)
    # sparse truth (every 20th frame, at 3, 23, 43...): each has the nearest sampled frame within 5;
    # the sampled frames between are not evaluated (the truth does not say what was there)
    sparse = [_box(f, 7) for f in range(3, 100, 20)]
    got = metrics.score(pred, sparse, fps=FPS, frames=sampled)
    assert (got.evaluated, got.window, got.overall.tp, got.overall.fp, got.overall.fn) == (5, 5.0, 5, 0, 0)
    assert "5 of the detector's 10 sampled frames" in got.frames_line() and "within 0.20 s" in got.frames_line()
    # a sampled frame with no detection still counts its truth as missed
    got = metrics.score([b for b in pred if b.frame != 40], dense, fps=FPS, frames=sampled)
    assert (got.overall.tp, got.overall.fn) == (3, 1)
    # by default (no frames given): the frames with a prediction, and the truth's between them
    got = metrics.score(pred[2:4], dense, fps=FPS)
    assert got.candidates == 11 and got.evaluated == 11 and got.overall.fn == 9
    with pytest.raises(HandoffError):
        metrics.score(pred, dense, fps=0.0)
    with pytest.raises(HandoffError):
        metrics.score(pred, dense, fps=FPS, iou=1.5)


# -- a real project: the detector's run stored as the analysis stores it, the truth imported --------
MODEL = "ssd-mobilenet-v2-coco"
MEDIA_FPS = 10.0


def store_run(p: Project, mid: int, truth: list[Box], seed: int = 5) -> None:
    """A detector run over 10 s at 2 fps (stored by core.perception.ops.store_analysis): the
    truth's boxes, jittered, a few missed, one false positive every few frames."""
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
    verdict = {"confirmed": True, "evidence": {"reason": "confirmed: a fixture's verdict", "hits": 20}}
    out = ModelOutput(name=spec.name, title=spec.title, task=spec.task, version=spec.version or "1",
                      params=run_params(req, spec, 10.0), frames=frames, frame_size=(320, 240),
                      started_at=1.7e9, duration_s=2.5, evidence=[[verdict] * len(d) for _t, d in frames])
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


def test_a_detector_run_against_an_imported_truth(tmp_path):
    p, mid, name = make_project(tmp_path)
    try:
        truth = ground_truth()
        got = metrics.score_tracks(p, mid, name)
        assert got.pred_name == MODEL and got.truth_name == name and got.sampled
        assert got.evaluated == got.candidates == 20 and got.window == 0.5  # 2 fps of a 10 fps file; truth at every frame
        assert got.frames_line() == "at the detector's 20 sampled frames, IoU ≥ 0.5"
        # the same numbers as score() on the same boxes at the run's frames
        from core.handoff.boxes import collect
        _f, pred, _n = collect(p, mid)
        again = metrics.score(pred, truth, fps=MEDIA_FPS, frames=set(range(0, 100, 5)))
        assert again.overall == got.overall and again.classes == got.classes
        assert got.overall.truth == 60 and got.overall.fp >= 5 and 0 < got.overall.fn < 15
        assert [c.label for c in got.classes] == ["person", "car"]
        # the job: the window's open project (or a project file), progress, cancel
        state = HeadlessState()
        assert metrics.score_job(metrics.ScoreRequest(p, mid, name), state).overall == got.overall
        cancelled = HeadlessState()
        cancelled.cancel()
        with pytest.raises(Cancelled):
            metrics.score_job(metrics.ScoreRequest(p, mid, name), cancelled)
        with pytest.raises(HandoffError, match="no ground-truth track"):
            metrics.score_tracks(p, mid, "ground truth: other.json")
    finally:
        p.close()
    assert metrics.score_job(metrics.ScoreRequest(str(tmp_path / "p.kestrel"), mid, name),
                             HeadlessState()).overall == got.overall


def test_no_detections_to_score_is_one_sentence(tmp_path):
    p, mid, name = make_project(tmp_path, detector=False)
    try:
        with pytest.raises(HandoffError, match="analyse the file with an object detector"):
            metrics.score_tracks(p, mid, name)
    finally:
        p.close()
