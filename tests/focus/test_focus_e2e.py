"""FOCUS end to end on real media with the real embedded scorer (SSD, MTCNN, EfficientNet, MiniLM).

A real bus (the ultralytics bus.jpg photo, panned for 6 s) is planted at known times into 5 minutes
of real footage (Sintel, Big Buck Bunny, an airliner phone clip, Chaplin, a city at night — none
has a bus), 320×180 at 15 fps so decoding stays cheap. With at most 2 % of the frames scored and
the query "a bus", the selection should contain a planted frame; we compare with what an analyst
gets without it: k frames sampled uniformly (the paper's baseline), and, as a stronger reference,
uniform sampling of the same *scoring* budget followed by the top-k scores.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.focus import build_video, pieces
from core.focus import scorers as fs
from core.focus.search import FocusRequest, select_frames
from core.jobs import HeadlessState
from core.media.decode import VideoDecoder

DURATION, FPS, PLANT_S, K = 300.0, 15, 6.0, 16
POSITIONS = (47.0, 131.0, 222.0)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> list[tuple[str, tuple[float, float]]]:
    filler, plant = pieces(FPS, (320, 180), FPS, PLANT_S)
    folder = tmp_path_factory.mktemp("focus_e2e")
    return [(str(out), build_video(out, filler, plant, DURATION, pos))
            for pos in POSITIONS for out in [folder / f"planted_{int(pos)}.mp4"]]


def inside(t: float, seg: tuple[float, float]) -> bool:
    return seg[0] <= t < seg[1]


def uniform_k_hit_rate(seg: tuple[float, float], trials: int = 200) -> float:
    """k evenly spaced frames with a random phase: the chance one lands in the segment."""
    r = np.random.default_rng(0)
    hits = [any(inside(t, seg) for t in (np.arange(K) + r.random()) * DURATION / K) for _ in range(trials)]
    return float(np.mean(hits))


def uniform_budget_top_k(path: str, seg: tuple[float, float], budget: int) -> tuple[bool, int]:
    """Score ``budget`` evenly spaced frames with the same scorer and keep the best k (1 s apart)."""
    sc = fs.make_scorer("embedded")
    times = list((np.arange(budget) + 0.5) * DURATION / budget)
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        frames = [dec.frame_at(t).image for t in times]
    scores = sc.score(frames, times, "a bus", path + "#uniform")
    chosen: list[float] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) < K and all(abs(times[i] - c) >= 1.0 for c in chosen):
            chosen.append(times[i])
    n = sum(inside(t, seg) for t in chosen)
    return n > 0, n


def test_focus_hits_a_planted_bus_where_uniform_sampling_mostly_does_not(planted):
    focus_hits, focus_in, uni, strong, strong_in = [], [], [], [], []
    for path, seg in planted:
        assert seg[1] - seg[0] == pytest.approx(PLANT_S)
        for seed in SEEDS:
            res = select_frames(FocusRequest(path, "a bus", k=K, seed=seed), HeadlessState())
            assert res.frames_scored <= 0.02 * res.total_frames and abs(res.total_frames - DURATION * FPS) < 2 * FPS
            n_in = sum(inside(f.time, seg) for f in res.frames)
            focus_hits.append(n_in > 0)
            focus_in.append(n_in)
            if n_in:  # the heatmap explains it: the arm holding the bus ranks first
                best = max(res.arms, key=lambda a: a.rank)
                assert best.start <= seg[1] and best.end >= seg[0]
            else:
                assert any("Low confidence" in w for w in res.warnings)  # it says it found nothing
        uni.append(uniform_k_hit_rate(seg))
        hit, n = uniform_budget_top_k(path, seg, math.floor(0.02 * DURATION * FPS))
        strong.append(hit)
        strong_in.append(n)
    f_rate, u_rate, s_rate = float(np.mean(focus_hits)), float(np.mean(uni)), float(np.mean(strong))
    print(f"\nplanted 6 s bus in {DURATION:.0f} s of real video, {len(POSITIONS)} positions × {len(SEEDS)} seeds, "
          f"budget 2 % ({math.floor(0.02 * DURATION * FPS)} of {int(DURATION * FPS)} frames), k = {K}:\n"
          f"  FOCUS                              hit rate {f_rate:.2f}, {np.mean(focus_in):.1f} of {K} frames on the bus\n"
          f"  uniform k frames                   hit rate {u_rate:.2f}\n"
          f"  uniform 2 % scored, then top-k     hit rate {s_rate:.2f}, {np.mean(strong_in):.1f} of {K} frames on the bus")
    assert f_rate >= u_rate + 0.3
    assert np.mean(focus_in) > 2 * np.mean(strong_in)  # when it finds the bus it shows several frames of it
