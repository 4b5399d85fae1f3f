"""Tags of a shot, each with a kind, a confidence and where it came from.

Named from what the per-shot features saw (``ShotFeatures.info`` and the rows), plus the
archive-wide parts that need every shot at once: transcript/on-screen keywords by TF-IDF,
voices by clustering speaker fingerprints, and the clusters of the MMAE latent with a name
from the tags over-represented in them (see :mod:`core.tagging.index`).

Confidence is in [0, 1]; below :data:`LOW` a tag is shown greyed, never hidden. The analyst's
edits (accept, reject, rename, add from the vocabulary) are stored apart from the automatic
tags (:mod:`core.tagging.store`) and laid over them, so re-tagging never loses them.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

LOW = 0.35  # below: shown greyed
KINDS = ("object", "scene", "people", "speech", "voice", "keyword", "text", "shot", "cluster", "user")
STATES = ("auto", "accepted", "rejected", "user")

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just let me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves yeah oh okay ok um uh hmm gonna wanna got get go going know like
one two well really right thing things yes also back come came see said say says tell told want way
""".split())


def finite_number(v: Any) -> bool:
    """A JSON number that is a usable float: not a bool, not NaN/inf, not an integer beyond floats."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) < 1e300
    return isinstance(v, float) and math.isfinite(v)


@dataclass
class Tag:
    name: str
    kind: str
    confidence: float
    detail: str = ""
    state: str = "auto"  # auto | accepted | rejected | user

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confidence"] = round(float(self.confidence), 3)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Tag":
        """A tag from stored data, trusting none of it: ValueError when it has no name or its
        confidence is not a finite number; a kind or state Kestrel does not know reads as
        "user" / "auto", a confidence outside [0, 1] is clipped."""
        if not isinstance(d, Mapping):
            raise ValueError("a stored tag is not an object")
        name, conf = d.get("name"), d.get("confidence", 1.0)
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a stored tag has no name")
        if not finite_number(conf):
            raise ValueError(f"the tag {name[:60]!r} has a confidence that is not a number")
        kind, state, detail = d.get("kind", "user"), d.get("state", "auto"), d.get("detail", "")
        return cls(name, kind if kind in KINDS else "user", min(1.0, max(0.0, float(conf))),
                   detail if isinstance(detail, str) else "", state if state in STATES else "auto")

    @property
    def low(self) -> bool:
        return self.confidence < LOW and self.state == "auto"


def _plural(label: str, n: int) -> str:
    if n <= 1:
        return label
    if label == "person":
        return "people"
    return label + ("es" if label.endswith(("s", "sh", "ch", "x")) else "s")


def _imagenet_name(label: str) -> str:
    """The first, readable synonym of an ImageNet class ("seashore, coast, ..." → "seashore")."""
    return label.split(",")[0].strip().replace("_", " ")


# -- per-shot tags (from one shot's own features) ----------------------------------------------

def shot_tags(info: Mapping[str, Any], visual: Mapping[str, float] | None, audio: Mapping[str, float] | None,
              has_text: bool) -> list[Tag]:
    """Objects, scene, people, speech, on-screen text and shot type of one shot.

    ``visual``/``audio``: the shot's feature row by column name (None: modality missing).
    """
    tags: list[Tag] = []
    if visual is not None:
        # objects: the detector's mean count per sampled frame (1.0: in every frame) and the most at once
        for label, most in (info.get("objects") or {}).items():
            mean = float(visual.get(f"coco:{label}", 0.0))
            conf = min(1.0, 0.25 + 0.75 * min(1.0, mean))
            tags.append(Tag(label if most <= 1 else _plural(label, most), "object", conf,
                            f"{most} at most in one frame, {mean:.1f} per frame on average"))
        for label, p in (info.get("imagenet") or [])[:3]:
            if p >= 0.05:
                tags.append(Tag(_imagenet_name(label), "scene", min(1.0, float(p) * 1.5),
                                f"ImageNet '{label}' p={p:.2f}"))
        faces = int(info.get("faces", 0) or 0)
        persons = int((info.get("objects") or {}).get("person", 0))
        fmean = float(visual.get("faces_mean", 0.0))
        if faces:
            tags.append(Tag("1 face" if faces == 1 else f"{faces} faces", "people",
                            min(1.0, 0.4 + 0.6 * fmean / max(1, faces)), f"{fmean:.1f} faces per frame"))
        if persons >= 5:
            tags.append(Tag("crowd", "people", min(1.0, persons / 10), f"{persons} people in one frame"))
        area = float(info.get("face_area", 0.0) or 0.0)
        if faces and area >= 0.06:
            tags.append(Tag("close-up", "shot", min(1.0, area / 0.12), f"largest face {area:.0%} of the frame"))
        elif faces and area >= 0.01:
            tags.append(Tag("medium shot", "shot", 0.5 + 0.5 * min(1.0, area / 0.06), f"largest face {area:.0%}"))
        elif not faces:
            tags.append(Tag("wide shot", "shot", 0.4 if persons else 0.3, "no face large enough to frame"))
        # motion: mean grey-level change per second between sampled frames and the next (0.28 for
        # Chaplin's fixed camera with people walking); pan: global shift in frame widths per second
        motion, pan = float(visual.get("motion", 0.0)), abs(float(visual.get("pan", 0.0)))
        bright, sat = float(visual.get("brightness", 0.5)), float(visual.get("saturation", 0.5))
        if bright < 0.06:
            tags.append(Tag("black frame", "shot", min(1.0, 1.0 - bright / 0.06 * 0.5), f"brightness {bright:.2f}"))
        elif motion < 0.06 and pan < 0.03:
            tags.append(Tag("static", "shot", min(1.0, 1.0 - motion / 0.06 * 0.5), f"picture change {motion:.3f}/s"))
        elif pan >= 0.1:
            tags.append(Tag("camera moving", "shot", min(1.0, 0.4 + pan), f"global shift {pan:.2f} frame widths/s"))
        else:
            tags.append(Tag("moving", "shot", min(1.0, 0.3 + motion), f"picture change {motion:.3f}/s"))
        if sat < 0.04 and bright >= 0.06:
            tags.append(Tag("black and white", "scene", min(1.0, 1.0 - sat / 0.04 * 0.5), f"saturation {sat:.3f}"))
        if info.get("ocr"):
            lines = [str(t) for t in info["ocr"]]
            tags.append(Tag("on-screen text", "text", min(1.0, 0.5 + 0.1 * len(lines)), " / ".join(lines)[:200]))
    if audio is not None:
        voice, speech = float(audio.get("vad", 0.0)), float(audio.get("speech", 0.0))
        words = str(info.get("words", "") or "")
        if voice >= 0.2 or words:
            conf = max(voice, speech, 0.6 if len(words.split()) >= 3 else 0.0)
            tags.append(Tag("speech", "speech", min(1.0, conf), f"voice in {voice:.0%} of the shot"
                            + (f'; "{words[:80]}"' if words else "")))
        loud = float(audio.get("rms_db", -90.0))
        spoken = any(t.kind == "speech" for t in tags)
        if spoken:
            pass
        elif loud <= -50 and voice < 0.1:
            tags.append(Tag("silence", "speech", min(1.0, (-40 - loud) / 30), f"{loud:.0f} dB"))
        elif voice < 0.1 and loud > -35:
            tags.append(Tag("sound without speech", "speech", min(1.0, (loud + 45) / 25), f"{loud:.0f} dB, no voice"))
    return tags


# -- archive-wide tags -----------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}")
_CONTRACTION = re.compile(r"'(s|re|ve|ll|d|m|t)$")


def keywords(texts: Sequence[str], top: int = 3) -> list[list[tuple[str, float]]]:
    """TF-IDF keywords per text over all of them (the archive's shots): [(word, weight 0..1)]."""
    docs = [[w.lower().strip("'-") for w in _WORD.findall(t or "")] for t in texts]
    docs = [[w for w in d if w not in STOPWORDS and len(w) > 2 and not _CONTRACTION.search(w)] for d in docs]
    df = Counter(w for d in docs for w in set(d))
    n = max(1, len(docs))
    out = []
    for d in docs:
        tf = Counter(d)
        if not tf:
            out.append([])
            continue
        scores = {w: (c / len(d)) * math.log((1 + n) / (1 + df[w])) for w, c in tf.items()}
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        hi = max(s for _w, s in best) or 1.0
        out.append([(w, float(0.3 + 0.7 * s / hi)) for w, s in best])
    return out


def voices(fingerprints: np.ndarray, present: np.ndarray, threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster speaker fingerprints (MFCC statistics of the voiced frames) across the archive.

    Returns (voice id per shot, -1 where no voice; confidence per shot). Agglomerative
    clustering with average linkage on standardised fingerprints, cut at ``threshold`` × the
    median pairwise distance: a cheap fingerprint, so a voice tag is a grouping hint, not an
    identity.
    """
    n = len(present)
    ids, conf = np.full(n, -1, np.int64), np.zeros(n, np.float32)
    idx = np.flatnonzero(present)
    if idx.size == 0:
        return ids, conf
    if idx.size == 1:
        ids[idx] = 0
        conf[idx] = 0.5
        return ids, conf
    from sklearn.cluster import AgglomerativeClustering

    x = fingerprints[idx].astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    med = float(np.median(d[np.triu_indices(len(x), 1)])) or 1.0
    lab = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold * med, linkage="average",
                                  metric="euclidean").fit_predict(x)
    # number voices by first appearance; confidence from closeness to the voice's centre
    order = {c: i for i, c in enumerate(dict.fromkeys(lab))}
    for j, c in zip(idx, lab):
        ids[j] = order[c]
    for c in set(lab):
        members = np.flatnonzero(lab == c)
        centre = x[members].mean(0)
        dist = np.sqrt(((x[members] - centre) ** 2).sum(-1))
        conf[idx[members]] = np.clip(1.0 - dist / (threshold * med + 1e-9), 0.2, 1.0)
    return ids, conf


def voice_name(i: int) -> str:
    return f"voice {chr(ord('A') + i)}" if i < 26 else f"voice {i + 1}"


def cluster_names(tag_lists: Sequence[Sequence[Tag]], labels: np.ndarray, top: int = 3) -> dict[int, str]:
    """A readable name per cluster: the tags most over-represented in it (lift × support)."""
    n = len(tag_lists)
    overall = Counter(t.name for tags in tag_lists for t in {x.name: x for x in tags if x.kind != "cluster"}.values())
    names = {}
    for c in sorted(set(int(x) for x in labels)):
        members = [i for i in range(n) if labels[i] == c]
        inside = Counter(t.name for i in members for t in {x.name: x for x in tag_lists[i]
                                                          if x.kind != "cluster"}.values())
        scored = []
        for name, k in inside.items():
            support = k / len(members)
            lift = support / (overall[name] / n)
            if support >= 0.3 and (lift >= 1.15 or len(members) == n):
                scored.append((support * math.log(lift + 1e-9) if len(members) < n else support, name))
        best = [name for _s, name in sorted(scored, reverse=True)[:top]]
        names[c] = " · ".join(best) if best else f"group {c + 1}"
    return names
