"""Grounding a question in the perception log: retrieval, facts computed in code, and the check
of the model's answer against them.

Why: the embedded model is small — right when given the few relevant lines, unreliable at
counting or over long logs (shared/MODELS.md). So from the log of everything perception saw
(:mod:`core.chat.perception_log`, short timestamped lines), MiniLM picks the lines that match
the question; counts, durations, "when" and the on-screen text asked about are computed here,
in code, and handed to the model as facts it only has to word; and an answer that contradicts
them is replaced (:func:`reconcile`). The times an answer cites are parsed by
:func:`core.chat.citations`, so the chat panel can make them seek the player.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.chat import (STOP, SYNONYMS, TIME_RE, TextVectors, fmt_span, is_text_question, language_of, plural,
                       question_words)
from core.chat.perception_log import LogLine, Observation, PerceptionLog
from core.timefmt import clock


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


def question_kind(question: str, labels: Sequence[str]) -> str:
    """count | duration | when | presence | open: which fact the question asks for."""
    if COUNT_Q.search(question):
        return "count"
    if DURATION_Q.search(question):
        return "duration"
    if WHEN_Q.search(question):
        return "when"
    if PRESENCE_Q.search(question) and labels:
        return "presence"
    return "open"


def ground(question: str, log: PerceptionLog, *, at: float | None = None, window_s: float = 60.0,
           k: int = 8, index: TextVectors | None = None, extra_lines: Sequence[LogLine] = ()) -> Grounding:
    """Facts computed from the log and the retrieved lines, for ``question`` asked about time ``at``."""
    t_end = at if at is not None else log.span[1]
    t0 = max(0.0, t_end - window_s)
    labels = target_labels(question, log)
    kind = question_kind(question, labels)
    g = Grounding(question, at, kind, labels, text_question=is_text_question(question),
                  language=language_of(question))
    if kind in _FACTS:
        asked = _Window(log, question, t0, t_end)
        for label in labels[:2]:
            facts, direct = _FACTS[kind](asked, label, log.presence(label, t0, t_end + log.step))
            g.facts += facts
            g.direct = g.direct or direct
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


# -- one label's facts, per kind of question: (facts, the answer computed in code or None) ------

_Spans = list[tuple[float, float, int]]  # PerceptionLog.presence: (start, end, most at once)


@dataclass(frozen=True)
class _Window:
    """The question and the stretch of the log it is asked about: [t0, t_end]."""

    log: PerceptionLog
    question: str
    t0: float
    t_end: float

    @property
    def text(self) -> str:
        return f"{clock(self.t0)}–{clock(self.t_end)}"

    @property
    def between(self) -> str:
        return f"between [{clock(self.t0)}] and [{clock(self.t_end)}]"


def _count_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    now = w.log.count_at(label, w.t_end)
    most = max((n for _s, _e, n in spans), default=0)
    facts, direct = [], None
    if now is not None:
        n, ft = now
        facts.append(Fact("count", f"At [{clock(ft)}] perception counts {n} {plural(label, n)} in the frame.",
                          n, (ft,)))
        direct = f"{n} {plural(label, n)} at [{clock(ft)}] (counted by Kestrel from the detector log)."
    facts.append(Fact("count" if now is None else "max",
                      f"Most {plural(label, 2)} seen at once {w.between}: {most}.", most))
    if now is None:
        direct = (f"At most {most} {plural(label, most)} at once in {w.text} "
                  f"(counted by Kestrel from the detector log).")
    return facts, direct


def _duration_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    total = sum(e - s for s, e, _n in spans)
    parts = ", ".join(fmt_span(s, e) for s, e, _ in spans) or "never"
    fact = Fact("duration", f"{label} visible for {total:.0f} s in total {w.between}: {parts}.", total,
                tuple(x for s, e, _ in spans for x in (s, e)))
    if spans:
        return [fact], f"The {label} was visible for about {total:.0f} s ({parts})."
    return [fact], f"No {label} was seen in {w.text}."


def _when_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    if not spans:
        return [Fact("when", f"No {label} was seen in {w.text}.")], None
    first, last = spans[0][0], spans[-1][1]
    fact = Fact("when", f"{label} first seen at [{clock(first)}], last seen at [{clock(last)}] "
                f"({len(spans)} appearance(s)).", None, (first, last))
    if LEAVE.search(w.question):
        return [fact], f"The {label} was last seen at [{clock(last)}]."
    return [fact], f"The {label} first appeared at [{clock(first)}]."


def _presence_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    now = w.log.count_at(label, w.t_end)
    if now is not None and now[0] > 0:
        n, ft = now
        return [Fact("presence", f"Yes: at [{clock(ft)}] perception sees {n} {plural(label, n)}.", n, (ft,))], None
    if spans:
        recent = spans[-3:]
        seen = ", ".join(fmt_span(s, e) for s, e, _ in recent)
        return [Fact("presence", f"{label} seen earlier: {seen}; not at [{clock(w.t_end)}].", 0,
                     tuple(s for s, _e, _n in recent))], None
    return [Fact("presence", f"No: perception saw no {label} in {w.text}.", 0)], None


_FACTS: dict[str, Callable[[_Window, str, _Spans], tuple[list[Fact], str | None]]] = {
    "count": _count_facts, "duration": _duration_facts, "when": _when_facts, "presence": _presence_facts}


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
