"""Grounding: the perception log as text, retrieval for a question, facts computed in code,
and the timestamps an answer cites.

Why: the embedded model is small — right when given the few relevant lines, unreliable at
counting or over long logs (shared/MODELS.md). So everything perception saw (objects with
positions, faces, on-screen text, transcript, audio and anomaly events, each with its time)
becomes short lines; MiniLM picks the lines that match the question; counts, durations and
"when" are computed here, in code, and handed to the model as facts it only has to word;
and the times in the answer are parsed so the chat panel can make them seek the player.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from core.chat import (STOP, SYNONYMS, TIME_RE, Citation, TextVectors, citations, fmt_span,  # noqa: F401
                       is_text_question, language_of, plural, question_words)
from core.timefmt import clock

Box = tuple[float, float, float, float]
OBJECT_KINDS = ("object", "face")


def position(box: Box, size: tuple[int, int] | None) -> str:
    """Where a box sits in its frame, in words ("top left", "centre")."""
    if not size or not size[0] or not size[1]:
        return ""
    cx, cy = (box[0] + box[2]) / 2 / size[0], (box[1] + box[3]) / 2 / size[1]
    col = "left" if cx < 0.33 else "right" if cx > 0.67 else "centre"
    row = "top" if cy < 0.33 else "bottom" if cy > 0.67 else ""
    return f"{row} {col}".strip() if (row or col != "centre") else "centre"


@dataclass(frozen=True)
class Observation:
    """One thing perceived: an instant sample (``end`` None) or an interval."""

    time: float
    kind: str  # object | face | text | speech | audio | anomaly | tag | <other track kind>
    label: str
    end: float | None = None
    box: Box | None = None
    size: tuple[int, int] | None = None
    score: float = 1.0
    track: int | None = None
    count: int = 1  # for presence intervals that already carry a count


@dataclass(frozen=True)
class LogLine:
    start: float
    end: float
    kind: str
    label: str
    text: str  # "[00:12–00:14] speech: "…""
    count: int = 1


class PerceptionLog:
    """The recent perception log: filled from project tracks (a recorded file) or, for a
    live stream, by the perception loop (``add_frame``, ``add_speech``, ``add_event``).

    ``horizon_s`` keeps only the recent minutes (live); ``step`` is the perception sample
    interval, used to merge samples into intervals and to decide "visible at t".
    """

    def __init__(self, horizon_s: float | None = None, step: float = 0.5, hold_s: float = 0.0) -> None:
        self.horizon_s = horizon_s
        self.step = float(step)
        self.hold_s = float(hold_s)  # a frame stands for the scene until the next one (sparse streams)
        self._obs: list[Observation] = []
        self._frames: set[float] = set()  # times perception looked at a frame

    def __len__(self) -> int:
        return len(self._obs)

    def add(self, obs: Observation) -> None:
        self._obs.append(obs)
        self._trim(obs.end if obs.end is not None else obs.time)

    def add_frame(self, time_s: float, detections: Sequence[Any] = (), faces: Sequence[Any] = (),
                  texts: Sequence[Any] = (), size: tuple[int, int] | None = None) -> None:
        """One perceived frame (models.types Detection/Face/TextRegion), even an empty one:
        "nothing seen at t" is information too."""
        self._frames.add(round(time_s, 3))
        for d in detections:
            self._obs.append(Observation(time_s, "object", d.label, None, tuple(d.box), size, float(d.score),
                                         getattr(d, "track_id", None)))
        for f in faces:
            self._obs.append(Observation(time_s, "face", "face", None, tuple(f.box), size, float(f.score)))
        for t in texts:
            if t.text.strip():
                self._obs.append(Observation(time_s, "text", t.text.strip(), None, tuple(t.box), size, float(t.score)))
        self._trim(time_s)

    def add_speech(self, start: float, end: float, text: str, score: float = 1.0) -> None:
        if text.strip():
            self.add(Observation(start, "speech", text.strip(), end, score=score))

    def add_event(self, start: float, end: float, kind: str, label: str, score: float = 1.0) -> None:
        self.add(Observation(start, kind, label, end, score=score))

    def _trim(self, now: float) -> None:
        if self.horizon_s is None:
            return
        h = now - self.horizon_s
        if self._obs and min(o.end if o.end is not None else o.time for o in self._obs[:64]) < h:
            self._obs = [o for o in self._obs if (o.end if o.end is not None else o.time) >= h]
            self._frames = {t for t in self._frames if t >= h}

    @property
    def frame_times(self) -> list[float]:
        return sorted(self._frames | {round(o.time, 3) for o in self._obs if o.end is None})

    @property
    def span(self) -> tuple[float, float]:
        ts = [o.time for o in self._obs] + [o.end for o in self._obs if o.end is not None] + list(self._frames)
        return (min(ts), max(ts)) if ts else (0.0, 0.0)

    def observations(self, t0: float | None = None, t1: float | None = None) -> list[Observation]:
        lo, hi = -math.inf if t0 is None else t0, math.inf if t1 is None else t1
        return [o for o in self._obs if (o.end if o.end is not None else o.time) >= lo and o.time <= hi]

    def labels(self) -> set[str]:
        return {o.label for o in self._obs if o.kind in OBJECT_KINDS or o.kind in ("tag", "audio", "anomaly")}

    # -- from project tracks ---------------------------------------------------------------
    @classmethod
    def from_tracks(cls, tracks: Iterable[Any], horizon_s: float | None = None) -> "PerceptionLog":
        """Timeline tracks (core.timeline.Track) as a log: per-sample boxes when stored (positions
        and counts), else presence intervals; transcripts; tags; events of any other kind."""
        tracks = list(tracks)
        steps = [i.end - i.start for t in tracks if t.kind == "boxes" for i in t.items[:1] if i.end > i.start]
        log = cls(horizon_s, step=min(steps) if steps else 0.5)
        boxed = {t.meta.get("task") for t in tracks if t.kind == "boxes"}
        for tr in tracks:
            if tr.kind == "boxes":
                task = tr.meta.get("task", "detect")
                kind = {"detect": "object", "faces": "face", "ocr": "text"}.get(task, "object")
                for it in tr.items:
                    d = it.data or {}
                    label = d.get("text", it.label) if kind == "text" else it.label
                    size = tuple(d["size"]) if d.get("size") else None
                    box = tuple(d["box"]) if d.get("box") else None
                    log._frames.add(round(it.start, 3))
                    log._obs.append(Observation(it.start, kind, label, None, box, size, it.confidence, d.get("track")))
            elif tr.kind in ("detections", "faces"):
                if {"detections": "detect", "faces": "faces"}[tr.kind] in boxed:
                    continue  # the per-sample boxes say the same, with positions
                kind = "object" if tr.kind == "detections" else "face"
                for it in tr.items:
                    n = int((it.data or {}).get("max_count", 1))
                    log._obs.append(Observation(it.start, kind, it.label.split(" ×")[0], it.end, score=it.confidence,
                                                count=n))
            elif tr.kind == "text":
                if "ocr" in boxed:
                    continue
                for it in tr.items:
                    log._obs.append(Observation(it.start, "text", it.label, it.end, score=it.confidence))
            elif tr.kind == "speech" and tr.name == "transcript":
                for it in tr.items:
                    log.add_speech(it.start, it.end, it.label, it.confidence)
            elif tr.kind == "tags":
                for it in tr.items:
                    log._obs.append(Observation(it.start, "tag", it.label, it.end, score=it.confidence))
            elif tr.kind in ("speech", "chat", "anomaly", "focus-arms", "focus", "waveform", "shots", "markers"):
                continue  # voice activity, chat history, curves and UI tracks are not perception
            else:  # anomaly events, audio events, notes…: whatever later capabilities add
                for it in tr.items:
                    log._obs.append(Observation(it.start, _event_kind(tr.kind), it.label, it.end,
                                                score=it.confidence))
        log._obs.sort(key=lambda o: o.time)
        return log

    # -- as text ---------------------------------------------------------------------------
    def lines(self, t0: float | None = None, t1: float | None = None) -> list[LogLine]:
        """The log as short, timestamped lines, samples merged into intervals."""
        obs = self.observations(t0, t1)
        out: list[LogLine] = []
        samples: dict[tuple[str, str], list[Observation]] = defaultdict(list)
        for o in obs:
            if o.end is None:
                samples[(o.kind, o.label if o.kind != "text" else _norm(o.label))].append(o)
            else:
                out.append(_interval_line(o))
        for (kind, _label), rows in samples.items():
            for seg in _segments(rows, self.step):
                out.append(_sample_line(kind, seg, self.step))
        return sorted(out, key=lambda ln: (ln.start, ln.kind))

    def presence(self, label: str, t0: float | None = None, t1: float | None = None
                 ) -> list[tuple[float, float, int]]:
        """Intervals where ``label`` was seen, with the most seen at once: (start, end, count)."""
        rows = [o for o in self.observations(t0, t1) if o.label == label and o.kind in OBJECT_KINDS + ("tag",)]
        out = [(o.time, o.end, o.count) for o in rows if o.end is not None]
        for seg in _segments([o for o in rows if o.end is None], self.step):
            per = Counter(round(o.time, 3) for o in seg)
            out.append((seg[0].time, seg[-1].time + self.step, max(per.values())))
        return sorted(out)

    def count_at(self, label: str, t: float) -> tuple[int, float] | None:
        """How many ``label`` perception saw in the sample nearest ``t`` (and that sample's time);
        None when no frame was looked at within 1.5 steps of ``t`` (or ``hold_s`` before it)."""
        times = self.frame_times
        near = [ft for ft in times if abs(ft - t) <= 1.5 * self.step]
        if not near and self.hold_s:
            near = [max((ft for ft in times if t - self.hold_s <= ft <= t), default=None)]
            near = [x for x in near if x is not None]
        if near:
            ft = min(near, key=lambda x: abs(x - t))
            n = sum(1 for o in self._obs if o.end is None and o.label == label and abs(o.time - ft) < 1e-3)
            return n, ft
        for s, e, n in self.presence(label):
            if s <= t <= e:
                return n, t
        return None


def _event_kind(track_kind: str) -> str:
    k = track_kind.lower()
    return "anomaly" if "anomal" in k else "audio" if "audio" in k or "sound" in k else k


def _norm(s: str) -> str:
    return re.sub(r"\W+", "", s.lower())


def _segments(rows: list[Observation], step: float) -> list[list[Observation]]:
    rows = sorted(rows, key=lambda o: o.time)
    segs: list[list[Observation]] = []
    for o in rows:
        if segs and o.time - segs[-1][-1].time <= 1.5 * step + 1e-6:
            segs[-1].append(o)
        else:
            segs.append([o])
    return segs


def _sample_line(kind: str, seg: list[Observation], step: float) -> LogLine:
    a, b = seg[0].time, seg[-1].time + step
    per = Counter(round(o.time, 3) for o in seg)
    n = max(per.values())
    label = seg[0].label
    busiest = [o for o in seg if round(o.time, 3) == max(per, key=lambda k: (per[k], -k))]
    where = sorted({p for o in busiest if o.box and (p := position(o.box, o.size))})
    at = f" ({', '.join(where)})" if where else ""
    score = max(o.score for o in seg)
    if kind == "text":
        body = f'on-screen text: "{label}"{at}'
    elif kind == "face":
        body = f"face{'s' if n > 1 else ''}: up to {n} at once{at}"
    else:
        tracks = {o.track for o in seg if o.track is not None}
        many = f", up to {n} at once" if n > 1 else ""
        ids = f", {len(tracks)} tracked" if len(tracks) > 1 else ""
        body = f"seen: {label}{many}{ids}{at}, score {score:.2f}"
    return LogLine(a, b, kind, label, f"{fmt_span(a, b)} {body}", n)


def _interval_line(o: Observation) -> LogLine:
    end = o.end if o.end is not None else o.time
    if o.kind == "speech":
        body = f'someone says: "{o.label}"'
    elif o.kind == "text":
        body = f'on-screen text: "{o.label}"'
    elif o.kind in OBJECT_KINDS:
        body = f"seen: {o.label}" + (f", up to {o.count} at once" if o.count > 1 else "")
    elif o.kind == "tag":
        body = f"scene: {o.label}"
    elif o.kind == "audio":
        body = f"audio event: {o.label} ({o.score:.2f})"
    elif o.kind == "anomaly":
        body = f"anomaly: {o.label} (score {o.score:.2f})"
    else:
        body = f"{o.kind}: {o.label}"
    return LogLine(o.time, end, o.kind, o.label, f"{fmt_span(o.time, end)} {body}", o.count)


# -- retrieval -------------------------------------------------------------------------------

def _body(line: LogLine) -> str:
    return line.text.split("] ", 1)[-1]


MAX_EMBEDDED_LINES = 2000  # log lines embedded per question, at most


def retrieve(question: str, lines: Sequence[LogLine], *, k: int = 8, at: float | None = None,
             window_s: float = 60.0, index: TextVectors | None = None, margin: float = 0.2) -> list[LogLine]:
    """The ``k`` lines that best match the question — MiniLM cosine, plus shared words, plus
    nearness to the asked time — within ``margin`` of the best; returned in time order."""
    if not lines:
        return []
    words = question_words(question) - STOP
    cheap = []
    for ln in lines:
        lw = set(re.findall(r"[a-z]+", _body(ln).lower()))
        s = 0.12 * len(words & lw)
        if at is not None:
            d = 0.0 if ln.start <= at <= ln.end else min(abs(at - ln.start), abs(at - ln.end))
            s += 0.15 * math.exp(-d / max(window_s, 1.0))
        cheap.append(s)
    if index is not None and len(lines) > MAX_EMBEDDED_LINES:
        # a project may store 10^5 lines in the window: only the best by words and time are
        # embedded (MiniLM on every one took minutes), the rest keep their cheap score
        ranked = np.argsort(np.asarray(cheap), kind="stable")[::-1][:MAX_EMBEDDED_LINES]
        lines = [lines[i] for i in sorted(ranked)]
        cheap = [cheap[i] for i in sorted(ranked)]
    vecs = index.vectors([question] + [_body(ln) for ln in lines]) if index else None
    scores = [(float(vecs[0] @ vecs[i + 1]) if vecs is not None else 0.0) + c for i, c in enumerate(cheap)]
    order = np.argsort(scores)[::-1][:k]
    # lines far below the best one only distract a small model ("person" lines for a spoken answer)
    keep = [i for i in order if scores[i] >= scores[order[0]] - margin] if len(order) else []
    return sorted((lines[i] for i in keep), key=lambda ln: ln.start)


# -- facts computed in code -----------------------------------------------------------------

@dataclass(frozen=True)
class Fact:
    kind: str  # count | duration | when | presence
    text: str
    value: float | None = None
    times: tuple[float, ...] = ()


COUNT_Q = re.compile(r"\bhow many\b|\bcount\b|\bnumber of\b", re.I)
DURATION_Q = re.compile(r"\bhow long\b|\bfor how many (seconds|minutes)\b|\bduration\b", re.I)
WHEN_Q = re.compile(r"^\s*when\b|\bwhat time\b|\bat what (point|moment)\b|\bwhen did\b|\bwhen was\b", re.I)
PRESENCE_Q = re.compile(r"^\s*(is|are|was|were|do|does|did|can)\b.*\b(there|anyone|anybody|someone|any|a|an)\b"
                        r"|\b(see|visible|present)\b", re.I)
LEAVE = re.compile(r"\b(leave|left|leaves|disappear\w*|go|gone|went|depart\w*|exit\w*|stop\w*|end\w*)\b", re.I)


@dataclass
class Grounding:
    """What the model is given for one question, and what the code already knows."""

    question: str
    at: float | None
    kind: str  # count | duration | when | presence | open
    labels: list[str]  # log labels the question is about
    facts: list[Fact] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    direct: str | None = None  # the answer computed in code (counts, durations, when)
    text_question: bool = False
    language: str = "en"

    @property
    def count(self) -> int | None:
        return next((int(f.value) for f in self.facts if f.kind == "count" and f.value is not None), None)


def target_labels(question: str, log: PerceptionLog) -> list[str]:
    """The labels in the log (or COCO class names) the question names; plurals and synonyms folded."""
    from models.backends.coco import COCO90

    words = question_words(question) - STOP
    q = question.lower()
    known = log.labels() | set(COCO90.values()) | {"face"}
    hits = [lb for lb in known if lb.lower() in words or (" " in lb and lb.lower() in q)]
    if not hits and any(SYNONYMS.get(w) == "person" for w in words):
        hits = ["person"]
    present = log.labels()
    return sorted(hits, key=lambda lb: (lb not in present, lb))


def ground(question: str, log: PerceptionLog, *, at: float | None = None, window_s: float = 60.0,
           k: int = 8, index: TextVectors | None = None, extra_lines: Sequence[LogLine] = ()) -> Grounding:
    """Facts computed from the log and the retrieved lines, for ``question`` asked about time ``at``."""
    t_end = at if at is not None else log.span[1]
    t0 = max(0.0, t_end - window_s)
    labels = target_labels(question, log)
    kind = ("count" if COUNT_Q.search(question) else "duration" if DURATION_Q.search(question)
            else "when" if WHEN_Q.search(question) else "presence" if PRESENCE_Q.search(question) and labels
            else "open")
    g = Grounding(question, at, kind, labels, text_question=is_text_question(question),
                  language=language_of(question))
    win = f"{clock(t0)}–{clock(t_end)}"
    for label in labels[:2]:
        spans = log.presence(label, t0, t_end + log.step)
        name = plural(label, 2)
        if kind == "count":
            now = log.count_at(label, t_end)
            most = max((n for _s, _e, n in spans), default=0)
            if now is not None:
                n, ft = now
                g.facts.append(Fact("count", f"At [{clock(ft)}] perception counts {n} {plural(label, n)} "
                                    f"in the frame.", n, (ft,)))
                g.direct = g.direct or f"{n} {plural(label, n)} at [{clock(ft)}] (counted by Kestrel " \
                                       f"from the detector log)."
            g.facts.append(Fact("count" if now is None else "max", f"Most {name} seen at once between "
                                f"[{clock(t0)}] and [{clock(t_end)}]: {most}.", most))
            if now is None:
                g.direct = g.direct or f"At most {most} {plural(label, most)} at once in {win} (counted by " \
                                       f"Kestrel from the detector log)."
        elif kind == "duration":
            total = sum(e - s for s, e, _n in spans)
            parts = ", ".join(fmt_span(s, e) for s, e, _ in spans) or "never"
            g.facts.append(Fact("duration", f"{label} visible for {total:.0f} s in total between "
                                f"[{clock(t0)}] and [{clock(t_end)}]: {parts}.", total,
                                tuple(x for s, e, _ in spans for x in (s, e))))
            g.direct = g.direct or (f"The {label} was visible for about {total:.0f} s ({parts})." if spans
                                    else f"No {label} was seen in {win}.")
        elif kind == "when":
            if spans:
                first, last = spans[0][0], spans[-1][1]
                g.facts.append(Fact("when", f"{label} first seen at [{clock(first)}], last seen at "
                                    f"[{clock(last)}] ({len(spans)} appearance(s)).", None, (first, last)))
                g.direct = g.direct or (f"The {label} was last seen at [{clock(last)}]." if LEAVE.search(question)
                                        else f"The {label} first appeared at [{clock(first)}].")
            else:
                g.facts.append(Fact("when", f"No {label} was seen in {win}."))
        elif kind == "presence":
            now = log.count_at(label, t_end)
            if now is not None and now[0] > 0:
                g.facts.append(Fact("presence", f"Yes: at [{clock(now[1])}] perception sees {now[0]} "
                                    f"{plural(label, now[0])}.", now[0], (now[1],)))
            elif spans:
                g.facts.append(Fact("presence", f"{label} seen earlier: " + ", ".join(
                    fmt_span(s, e) for s, e, _ in spans[-3:]) + f"; not at [{clock(t_end)}].", 0,
                                    tuple(s for s, _e, _n in spans[-3:])))
            else:
                g.facts.append(Fact("presence", f"No: perception saw no {label} in {win}.", 0))
    if kind in ("count", "presence") and not labels:
        g.kind = "open"
    best = best_text(question, log, t0, t_end + log.step, index) if g.text_question else None
    if best:
        g.facts.append(Fact("text", f'The text reads "{best[0]}" (read in the frame at [{clock(best[1])}]).',
                            None, (best[1],)))
        g.direct = g.direct or f'The text reads "{best[0]}" [{clock(best[1])}].'
    lines = log.lines(max(0.0, t0 - window_s), t_end + log.step) + list(extra_lines)
    if best:  # the other OCR lines only tempt a small model into quoting the wrong one
        words = set(best[0].lower().split())
        lines = [ln for ln in lines if ln.kind != "text" or set(ln.label.lower().split()) & words]
    g.lines = retrieve(question, lines, k=k, at=t_end, window_s=window_s, index=index)
    return g


def best_text(question: str, log: PerceptionLog, t0: float, t1: float,
              index: TextVectors | None = None) -> tuple[str, float] | None:
    """The on-screen text that best matches a question, joined with the lines right under or above it
    in the same frame ("cero" + "emisiones"), and its time. A small model handed ten OCR lines
    picks the wrong one; the choice is made here: shared words (forgiving spelling and language:
    "emissions" ~ "emisiones"), then MiniLM, then the latest and most confident."""
    from difflib import SequenceMatcher

    rows = [o for o in log.observations(t0, t1) if o.kind == "text" and o.label.strip()]
    if not rows:
        return None
    qw = [w for w in question_words(question) - STOP if len(w) >= 4 and w not in ("text", "says", "sign", "read")]
    texts = list(dict.fromkeys(o.label for o in rows))
    vecs = index.vectors([question] + texts) if index is not None else None
    sim = {t: float(vecs[0] @ vecs[i + 1]) if vecs is not None else 0.0 for i, t in enumerate(texts)}

    def score(o: Observation) -> tuple[float, float, float]:
        words = re.findall(r"\w{3,}", o.label.lower())
        lexical = max((SequenceMatcher(None, q, w).ratio() for q in qw for w in words), default=0.0)
        return (round(lexical, 1) if lexical >= 0.75 else 0.0, sim[o.label] + 0.1 * o.score, o.time)

    best = max(rows, key=score)
    same = sorted((o for o in rows if abs(o.time - best.time) < 1e-3 and o.box and best.box), key=lambda o: o.box[1])
    phrase = [best]
    if best.box:
        h = best.box[3] - best.box[1]
        for o in same:  # the block of lines around it: close vertically, overlapping horizontally
            if o is not best and abs(o.box[1] - best.box[1]) < 1.6 * h and min(o.box[2], best.box[2]) > max(
                    o.box[0], best.box[0]):
                phrase.append(o)
    phrase.sort(key=lambda o: (o.box or (0, 0))[1])
    return " ".join(o.label for o in phrase), best.time


NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven "
                                            "twelve".split())}


def reconcile(answer: str, g: Grounding) -> tuple[str, bool]:
    """The model's words, unless they contradict a count computed in code, or quote none of the
    on-screen text the question is about: then the code's answer (``corrected`` True). A small
    model is trusted neither to count nor to pick the right line of OCR."""
    if g.text_question and g.direct and g.kind == "open":
        said = re.sub(r"\W+", " ", answer.lower())
        want = [w for w in re.sub(r"\W+", " ", g.direct.split('"')[1].lower()).split() if len(w) >= 2]
        return (answer, False) if any(w in said.split() for w in want) else (g.direct, True)
    if g.kind != "count" or g.count is None or not g.direct:
        return answer, False
    body = TIME_RE.sub(" ", answer)
    nums = {int(x) for x in re.findall(r"\b\d+\b", body)}
    nums |= {v for w, v in NUMBER_WORDS.items() if re.search(rf"\b{w}\b", body, re.I)}
    if nums == {g.count} or (g.count == 0 and re.search(r"\bno\b|\bnone\b|\bnobody\b", body, re.I) and not nums - {0}):
        return answer, False
    return g.direct, True
