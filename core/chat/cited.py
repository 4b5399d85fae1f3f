"""The boxes an answer cites: evidence on screen (#17 point 4).

An answer that names an object and cites a time ("4 people at [00:02]") rests on boxes perception
drew at that time. :func:`cited_boxes` finds them — in the stored perception first (the project's
boxes, with their verdicts), else in what the chat's own eyes saw in the frames given to the model —
so the chat panel can show them on the video when the time is clicked, whether or not that perception
was stored. Each box keeps its frame's pixels and size, its score and whether perception confirmed it
(:mod:`core.perception.confirm`): an unconfirmed box is evidence shown as weak, never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core.chat import STOP, Box, Citation, question_words
from core.chat.perception_log import OBJECT_KINDS, Observation, PerceptionLog
from core.perception.overlay import Evidence, OverlayBox

MAX_BOXES = 12  # per cited time: the most confident of each label first


@dataclass(frozen=True)
class CitedBox:
    """One box an answer cites, in the pixels of the frame it was seen in (``size``: that frame's width, height)."""

    cited: float  # the cited time (seconds, as the answer's link says it)
    time: float  # the sampled frame the box was seen in
    box: Box
    size: tuple[int, int]
    label: str
    score: float
    confirmed: bool | None  # perception's verdict; None: not checked (faces, the chat's own look)
    hold: float = 0.5  # how long the sample stands for (the perception step)
    source: str = "perception"  # "perception": the stored log; "chat": the chat's look at the model's frames


def named_labels(text: str, logs: Sequence[PerceptionLog], also: Sequence[str] = ()) -> set[str]:
    """The labels of boxed observations that ``text`` names (plurals and synonyms folded), plus ``also``
    (the labels the question named)."""
    words = question_words(text) - STOP
    low = text.lower()
    known = {o.label for log in logs for o in log.observations() if o.box is not None and o.kind in OBJECT_KINDS}
    return {lb for lb in known if lb.lower() in words or (" " in lb and lb.lower() in low)} | (set(also) & known)


def cited_boxes(text: str, cites: Sequence[Citation], logs: Sequence[tuple[PerceptionLog | None, str]],
                also: Sequence[str] = ()) -> list[CitedBox]:
    """The boxes of the objects ``text`` names (or the question named: ``also``) at each time it cites:
    per citation, the boxes of the sampled frame nearest the cited second (within half a second of it,
    or half a perception step), from the first of ``logs`` ((log, source) pairs) that has any."""
    present = [(lg, src) for lg, src in logs if lg is not None]
    labels = named_labels(text, [lg for lg, _s in present], also)
    out: list[CitedBox] = []
    if not labels:
        return out
    done: set[float] = set()
    for c in cites:
        if c.seconds in done:
            continue
        done.add(c.seconds)
        for lg, src in present:
            got = _at(lg, src, c.seconds, labels)
            if got:
                out += got
                break
    return out


def _at(log: PerceptionLog, source: str, t: float, labels: set[str]) -> list[CitedBox]:
    tol = max(0.5, log.step / 2) + 1e-6
    rows = [o for o in log.observations(t - tol, t + tol) if o.end is None and o.box is not None and o.size
            and o.kind in OBJECT_KINDS and o.label in labels and abs(o.time - t) <= tol]
    if not rows:
        return []
    tn = min({o.time for o in rows}, key=lambda x: (abs(x - t), x))
    here: list[Observation] = sorted((o for o in rows if abs(o.time - tn) < 1e-3),
                                     key=lambda o: (o.confirmed is False, -o.score))[:MAX_BOXES]
    hold = max(log.step, log.hold_s)
    return [CitedBox(t, o.time, tuple(float(v) for v in o.box), (int(o.size[0]), int(o.size[1])), o.label,
                     float(o.score), o.confirmed, hold, source) for o in here]


def on_screen(boxes: Sequence[CitedBox]) -> list[Evidence]:
    """The cited boxes as the player's evidence layer (:meth:`core.perception.overlay.OverlayModel.set_evidence`):
    each shown around the frame it was seen in, for as long as that sample stands."""
    out = []
    for b in boxes:
        w, h = b.size
        if w <= 0 or h <= 0:
            continue
        ob = OverlayBox(b.box[0] / w, b.box[1] / h, b.box[2] / w, b.box[3] / h, b.label, b.score, None,
                        "chat" if b.source == "chat" else "cited", b.time,
                        # the chat's own look made no verdict: drawn as unconfirmed (weak), never as a fact
                        confirmed=False if b.source == "chat" and b.confirmed is None else b.confirmed,
                        reason="the chat's own look at the frame given to the model" if b.source == "chat" else "",
                        cited=True)
        out.append(Evidence(ob, b.time - b.hold / 2, b.time + b.hold))
    return out
