"""FOCUS's first stage on the media index (core.perception.index): a shortlist of arms.

Scoring an hour's frames with the full scorer costs minutes; the index already holds what the
vision models saw in a sparse, change-gated sample of frames, with the descriptions' MiniLM
vectors. A question is matched against every indexed frame in milliseconds
(:meth:`MediaIndex.match`: the full scorer's own reward, computed from the stored facets), the
arms (clips) are ranked by their best indexed frame — an arm without one stands for what the
last indexed frame before it showed, since the change gate sampled it sparsely only where
nothing changed — and the bandit runs on the ``shortlist`` best arms only, with the full scorer.

The indexed frames inside the shortlisted arms are the bandit's coarse pulls and cost nothing:
their descriptions are handed to the scorer (:func:`seed_scorer`), so it scores them without
decoding; the scorer decodes a frame only for a box of interest that a second look must still
confirm (the index leaves re-detection looks to this stage), for on-screen text the index did
not read, and for the ``rescore_frames`` new frames of the fine stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.perception.index import DISAGREED, KINDS, NOT_LOOKED, MediaIndex


@dataclass(frozen=True)
class FirstStage:
    arms: tuple[int, ...]  # shortlisted arm indices, best first
    preferred: tuple[int, ...]  # frame indices (on the selector's grid) of the indexed frames in them
    prior: np.ndarray  # per arm: the first-stage probability
    best: float  # the best first-stage probability anywhere


def seed_scorer(scorer: Any, idx: MediaIndex, source: str, fps: float, size: tuple[int, int]) -> int:
    """Hand the indexed frames' descriptions to an EmbeddedScorer's cache (boxes in pixels of
    ``size``, the decoder's frames), keyed as the selector asks for them (``round(t·fps)/fps``).
    Frames it already holds are left alone (they may carry looks paid since). Returns how many."""
    from core.focus.scorers import Seen
    from core.perception.confirm import Look, Rules
    from models.types import Detection, Face

    w, h = size
    floor = Rules().redetect_score
    n = 0
    for i, t in enumerate(idx.times):
        key = (source, round(round(float(t) * fps) / fps, 4))
        if key in scorer._desc:
            continue
        dets, looks = [], {}
        for j, b in enumerate(idx.boxes(i)):
            dets.append(Detection((b.box[0] * w, b.box[1] * h, b.box[2] * w, b.box[3] * h), b.label, b.score))
            if b.verdict > 0:
                looks[j] = Look(KINDS[b.verdict - 1], True, b.label, b.score, float(t))
            elif b.verdict == DISAGREED:
                looks[j] = Look("classifier", False, "", 0.0, float(t))
            elif b.verdict == NOT_LOOKED and b.score < floor and idx.params.get("looks", True):
                looks[j] = None  # a single frame's re-detection could not confirm it: never worth a look
        if not idx.params.get("looks", True):
            looks = {j: Look("classifier", True, d.label, d.score, float(t)) for j, d in enumerate(dets)}
        faces = [Face((x1 * w, y1 * h, x2 * w, y2 * h), s) for s, (x1, y1, x2, y2) in idx.face_boxes(i)]
        ocr = idx.ocr.get(i, "") if idx.params.get("ocr") else None
        scorer._desc[key] = Seen(tuple(dets), tuple(faces), tuple(idx.tags(i)), (w, h), ocr, looks)
        n += 1
    return n


def first_stage(idx: MediaIndex, query_vec: np.ndarray, sel: Any, shortlist: int) -> FirstStage:
    """Rank the selector's arms by the index (see the module docstring); keep ``shortlist``."""
    p = idx.match(query_vec)
    fps = sel.fps
    grid = np.clip(np.round(idx.times * fps).astype(np.int64), 0, sel.n_frames - 1)
    arm_of = np.searchsorted(sel.edges, grid, side="right") - 1
    prior = np.full(sel.n_arms, -1.0)
    np.maximum.at(prior, arm_of, p)
    # an arm with no indexed frame: what the last indexed frame before it showed (its hold)
    starts = sel.edges[:-1]
    for a in np.flatnonzero(prior < 0):
        j = int(np.searchsorted(grid, starts[a], side="right")) - 1
        prior[a] = p[j] if j >= 0 else (p[0] if len(p) else 0.0)
    order = np.lexsort((np.arange(sel.n_arms), -prior))
    arms = tuple(int(a) for a in order[:max(1, min(int(shortlist), sel.n_arms))])
    chosen = set(arms)
    preferred = tuple(sorted({int(j) for j, a in zip(grid, arm_of) if int(a) in chosen}))
    return FirstStage(arms, preferred, prior, float(p.max()) if len(p) else 0.0)


def budget(stage: FirstStage, rescore_frames: int, sel: Any) -> int:
    """The bandit's budget: the indexed frames in the shortlist (free), a centre frame for each
    shortlisted arm without one, and ``rescore_frames`` new frames for the fine stage."""
    with_index = {int(np.searchsorted(sel.edges, j, side="right") - 1) for j in stage.preferred}
    empty = sum(1 for a in stage.arms if a not in with_index)
    return int(min(sel.n_frames, len(stage.preferred) + empty + max(0, int(rescore_frames))))


def shortlist_for(k: int) -> int:
    """Arms to shortlist for k frames: enough that the picks spread (≥ 4), about one arm per 2 picks."""
    return max(4, int(math.ceil(k / 2)))
