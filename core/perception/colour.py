"""The colour of a thing, from its pixels, named in a basic word (white, grey, black, red, orange,
yellow, green, blue, purple, pink, brown) with a confidence.

Why code and not a model: the embedded chat model reads no pixels, and asked "what colour is the
van?" it guesses ("red" for a white van). Here every pixel of the box gets a basic name from its
HSV values (a low saturation is white, grey or black by value; a chromatic pixel is named by hue,
dark orange is brown, pale red is pink); the names are weighted towards the box's centre, where
the object is (black pixels a little less: windows, tyres and shadows are dark on any object), and a name that is more common in a ring just outside the box than in the box's
core (the wall or the hedge behind the object) counts for less. The winner's share of the weight
is its confidence; a small box or a split vote is weak evidence and says so (``weak``).

numpy only: no model, no heavy import.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NAMES = ("white", "grey", "black", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
MAX_SIDE = 160  # boxes are subsampled to about this many pixels a side: the vote needs no more
WEAK_BELOW = 0.45  # a winning share under this is a split vote
DARK_WEIGHT = 0.6  # black pixels count less: windows, tyres and shadows are dark whatever the paint
MIN_SIDE = 12  # a box smaller than this (pixels) is too small to name reliably


@dataclass(frozen=True)
class Colour:
    """The named colour of a region: ``name``, its ``confidence`` (its share of the centre-weighted
    vote, lowered for tiny boxes) and the runners-up's shares."""

    name: str
    confidence: float
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def weak(self) -> bool:
        """A split vote: the winner's share is low, or a runner-up is close behind it."""
        second = max((v for n, v in self.shares.items() if n != self.name), default=0.0)
        return self.confidence < WEAK_BELOW or second >= 0.75 * self.confidence

    def describe(self) -> str:
        """"white (0.82)" or "grey (weak: 0.38; also white 0.31)"."""
        if not self.weak:
            return f"{self.name} ({self.confidence:.2f})"
        others = [f"{n} {s:.2f}" for n, s in self.shares.items() if n != self.name][:2]
        return f"{self.name} (weak: {self.confidence:.2f}" + (f"; also {', '.join(others)}" if others else "") + ")"


def pixel_names(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's basic colour name, as an index into :data:`NAMES` (``rgb``: ``...×3`` uint8)."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    chroma = mx - mn
    v = mx
    s = np.where(mx > 1e-6, chroma / np.maximum(mx, 1e-6), 0.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    c = np.maximum(chroma, 1e-6)
    h = np.where(mx == r, ((g - b) / c) % 6.0, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0)) * 60.0
    out = np.full(v.shape, NAMES.index("grey"), np.int8)
    grey = (s < 0.2) | (chroma < 0.08)
    out[grey & (v >= 0.72)] = NAMES.index("white")
    out[grey & (v < 0.72)] = NAMES.index("grey")
    hue = [("red", 0, 12), ("orange", 12, 40), ("yellow", 40, 70), ("green", 70, 165), ("blue", 165, 258),
           ("purple", 258, 290), ("pink", 290, 340), ("red", 340, 361)]
    col = ~grey
    for name, lo, hi in hue:
        out[col & (h >= lo) & (h < hi)] = NAMES.index(name)
    orange = col & (h >= 12) & (h < 45)
    red = col & ((h < 12) | (h >= 340))
    out[orange & (v < 0.6)] = NAMES.index("brown")  # dark orange
    out[red & (v < 0.45) & (s < 0.6)] = NAMES.index("brown")  # dull dark red
    out[col & ((h < 12) | (h >= 300)) & (s < 0.45) & (v > 0.7)] = NAMES.index("pink")  # pale red
    out[v < 0.2] = NAMES.index("black")
    out[grey & (v < 0.3)] = NAMES.index("black")
    return out


def _vote(names: np.ndarray, weights: np.ndarray) -> np.ndarray:
    hist = np.bincount(names.reshape(-1).astype(np.int64), weights=weights.reshape(-1), minlength=len(NAMES))
    total = hist.sum()
    return hist / total if total > 0 else hist


def _sub(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    step = max(1, int(max(x1 - x0, y1 - y0) // MAX_SIDE))
    return img[y0:y1:step, x0:x1:step]


def box_colour(image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> Colour | None:
    """The dominant named colour of ``box`` (x0, y0, x1, y1 in ``image``'s pixels; None: the whole
    image) of an RGB ``image``; None when the box holds no pixel."""
    h, w = image.shape[:2]
    if box is None:
        box = (0, 0, w, h)
    x0, y0 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
    x1, y1 = int(min(w, np.ceil(box[2]))), int(min(h, np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return None
    crop = _sub(image[..., :3], x0, y0, x1, y1)
    names = pixel_names(crop)
    ch, cw = names.shape
    yy, xx = np.mgrid[0:ch, 0:cw]
    dy, dx = (yy + 0.5) / ch - 0.5, (xx + 0.5) / cw - 0.5
    weights = np.exp(-(dx ** 2 + dy ** 2) / (2 * 0.22 ** 2))  # the object is at the centre, its backdrop at the edges
    weights = weights * np.where(names == NAMES.index("black"), DARK_WEIGHT, 1.0)
    inside = _vote(names, weights)
    core = _vote(names[(abs(dy) < 0.25) & (abs(dx) < 0.25)], np.ones(int(((abs(dy) < 0.25) & (abs(dx) < 0.25)).sum())))
    ring = _ring_vote(image, x0, y0, x1, y1)
    if ring is not None:
        # a name more common around the box than in its core is the backdrop showing through
        backdrop = np.clip(ring - core, 0.0, 1.0)
        inside = inside * (1.0 - np.clip(2.0 * backdrop, 0.0, 0.7))
        inside = inside / inside.sum() if inside.sum() > 0 else inside
    order = np.argsort(inside)[::-1]
    best = int(order[0])
    conf = float(inside[best])
    side = min(x1 - x0, y1 - y0)
    if side < MIN_SIDE:
        conf *= side / MIN_SIDE
    shares = {NAMES[i]: round(float(inside[i]), 3) for i in order[:4] if inside[i] > 0.02}
    return Colour(NAMES[best], round(conf, 3), shares)


def _ring_vote(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
    """The names in a band just outside the box (its surroundings), or None when the box fills the image."""
    h, w = image.shape[:2]
    pad = max(2, int(0.15 * max(x1 - x0, y1 - y0)))
    X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    big = _sub(image[..., :3], X0, Y0, X1, Y1)
    step = max(1, int(max(X1 - X0, Y1 - Y0) // MAX_SIDE))
    yy, xx = np.mgrid[Y0:Y1:step, X0:X1:step]
    out = ~((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1))
    if out.sum() < 16:
        return None
    return _vote(pixel_names(big)[out], np.ones(int(out.sum())))


def standout_colour(image: np.ndarray) -> tuple[Colour, tuple[int, int, int, int]] | None:
    """The colour of what stands out from the backdrop of a whole frame (for "what colour is the
    square?" when no detector knows squares): pixels named unlike the frame's border (the
    backdrop: names holding 15 % of a band along the edges), centre-weighted; with the box those
    pixels span in ``image``. None when nothing stands out (under 0.5 % of the frame)."""
    h, w = image.shape[:2]
    step = max(1, int(max(h, w) // (2 * MAX_SIDE)))
    small = image[::step, ::step, :3]
    names = pixel_names(small)
    sh, sw = names.shape
    band = max(1, int(0.08 * min(sh, sw)))
    edge = np.ones_like(names, bool)
    edge[band:-band, band:-band] = False
    border = _vote(names[edge], np.ones(int(edge.sum())))
    backdrop = {i for i, share in enumerate(border) if share >= 0.15}
    fg = ~np.isin(names, list(backdrop))
    if fg.sum() < 0.005 * names.size:
        return None
    yy, xx = np.mgrid[0:sh, 0:sw]
    dy, dx = (yy + 0.5) / sh - 0.5, (xx + 0.5) / sw - 0.5
    weights = np.exp(-(dx ** 2 + dy ** 2) / (2 * 0.3 ** 2))
    vote = _vote(names[fg], weights[fg])
    order = np.argsort(vote)[::-1]
    best = int(order[0])
    ys, xs = np.nonzero(fg & (names == best))
    box = (int(xs.min() * step), int(ys.min() * step), int((xs.max() + 1) * step), int((ys.max() + 1) * step))
    shares = {NAMES[i]: round(float(vote[i]), 3) for i in order[:4] if vote[i] > 0.02}
    return Colour(NAMES[best], round(float(vote[best]), 3), shares), box


def colourfulness(image: np.ndarray) -> float:
    """The share of a frame's pixels that have a hue (not white, grey or black): near 0 for a
    black-and-white picture."""
    step = max(1, int(max(image.shape[:2]) // (2 * MAX_SIDE)))
    names = pixel_names(image[::step, ::step, :3])
    return float(np.isin(names, [NAMES.index(n) for n in NAMES[3:]]).mean())
