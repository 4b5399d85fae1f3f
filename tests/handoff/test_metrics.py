"""core.handoff.metrics: precision, recall and IDF1 per class against a ground truth, equal to
py-motmetrics' on the same data (the issue's acceptance test), the rule of which frames count, and
the scores of a real project's detector run against an imported ground truth."""
from __future__ import annotations

import random

import numpy as np
import pytest

from core.handoff import metrics
from core.handoff.base import HandoffError
from core.handoff.boxes import Box
from core.jobs import Cancelled, HeadlessState
from scorekit import MEDIA_FPS, MODEL, ground_truth, make_project, motmetrics_per_class, same

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


def test_class_names_match_whatever_their_case():
    truth = [_box(f, 1, label="Person ") for f in range(0, 50, 5)]
    pred = [_box(f, 9, label="person") for f in range(0, 50, 5)]
    got = metrics.score(pred, truth, fps=FPS)
    assert [c.label for c in got.classes] == ["person"] and got.overall.recall == 1.0


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
        confirmed = metrics.score_tracks(p, mid, name, confirmed_only=True)  # the 5 unconfirmed FPs left out
        assert confirmed.confirmed_only and confirmed.overall.fp == got.overall.fp - 5
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
