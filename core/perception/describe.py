"""What one frame shows, as short text facets that a sentence embedding can match to a question.

Shared by FOCUS's scorer (core.focus.scorers), the per-media index (core.perception.index) and
whoever reads the index (chat, tagging): one definition of a frame's description, so a frame
described at index time and a frame described at question time say the same thing.

A facet is ``(text, weight)``: one per object class with count and position ("3 people on the
left"), faces, ImageNet tags (weighted by their probability), on-screen text, and the whole
sentence. Each facet is matched separately so one strong match is not diluted by the rest of
the scene. ``calibrate`` maps a MiniLM cosine to a probability (see CAL_CENTER).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# cosine -> probability: p = 1 / (1 + exp(-(cos - CAL_CENTER) / CAL_SCALE)), a logistic fitted (and
# re-fitted on every test run: tests/focus/test_focus.py::fit_calibration) to MiniLM cosines of queries
# ("a bus", "is there a bus?", "someone next to a bus", ...) against the facets this module writes
# ("a bus in the centre", "3 buses on the left", ...): each COCO class against itself (match) and
# every other class (mismatch), the two groups weighted equally, so p = 0.5 where a match and a
# mismatch are equally likely. The fit is steep (scale 0.03): template pairs separate cleanly; a
# paraphrase ("people walking" vs "3 people in the centre", cos 0.36) scores lower than it should.
CAL_CENTER = 0.381
CAL_SCALE = 0.029
TAG_MIN = 0.15  # ImageNet tags below this probability are not described (top-1 always is)
_PLURAL = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}


def calibrate(cos: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.asarray(cos, float) - CAL_CENTER) / CAL_SCALE))


def plural(label: str, n: int) -> str:
    if n == 1:
        return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"
    head, _, last = label.rpartition(" ")
    many = _PLURAL.get(last) or (last + "es" if last.endswith(("s", "sh", "ch", "x")) else last + "s")
    return f"{n} {head + ' ' if head else ''}{many}"


def where_in_frame(box: Sequence[float], w: int) -> str:
    cx = (box[0] + box[2]) / 2 / max(1, w)
    return "on the left" if cx < 1 / 3 else "on the right" if cx > 2 / 3 else "in the centre"


@dataclass(frozen=True)
class Description:
    """What perception saw in one frame: (text, weight) facets; ``ocr`` None when OCR did not run."""

    facets: tuple[tuple[str, float], ...]
    ocr: str | None = None


def object_facet(label: str, dets: Sequence[Any], w: int) -> tuple[str, float]:
    """One class's facet: count and where, weighted by its best score (see :func:`describe`)."""
    spots = sorted({where_in_frame(d.box, w) for d in dets}, key=("on the left", "in the centre", "on the right").index)
    return f"{plural(label, len(dets))} {' and '.join(spots)}", 0.7 + 0.3 * max(d.score for d in dets)


def describe(dets: Sequence[Any], faces: Sequence[Any], tags: Sequence[Any], size: tuple[int, int],
             ocr: str | None = None) -> Description:
    """Facets: one per object class with count and position, faces, ImageNet tags (weighted by their
    probability), on-screen text, and the whole sentence. Each facet is matched separately so one
    strong match is not diluted by the rest of the scene."""
    w, h = size
    facets: list[tuple[str, float]] = []
    by: dict[str, list[Any]] = collections.defaultdict(list)
    for d in dets:
        by[d.label].append(d)
    for label, ds in sorted(by.items(), key=lambda kv: -max(d.score for d in kv[1])):
        facets.append(object_facet(label, ds, w))
    if faces:
        big = max((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces) / max(1, w * h)
        facets.append(("a close-up of a face" if big > 0.08 and len(faces) == 1 else plural("face", len(faces)), 0.9))
    for i, t in enumerate(tags):
        if i == 0 or t.score >= TAG_MIN:
            facets.append((plural(t.label, 1), 0.6 + 0.4 * min(1.0, t.score / 0.5)))
    if ocr:
        facets.append((ocr, 1.0))
    if len(facets) > 1:
        facets.append(("; ".join(f for f, _ in facets), 1.0))
    return Description(tuple(facets), ocr)
