"""The shared pieces of the facts computed in code (:mod:`core.chat.grounding`, :mod:`core.chat.hearing`):
a fact, what part of the file perception covered in words, and the question patterns both use."""
from __future__ import annotations

import re
from dataclasses import dataclass

from core.chat.perception_log import PerceptionLog
from core.timefmt import clock


@dataclass(frozen=True)
class Fact:
    kind: str  # count | max | duration | when | presence | text | audio | video | speech | colour | view
    text: str
    value: float | None = None
    times: tuple[float, ...] = ()


WHEN_Q = re.compile(r"^\s*when\b|\bwhat time\b|\bat what (point|moment)\b|\bwhen did\b|\bwhen was\b", re.I)
LEAVE = re.compile(r"\b(leave|left|leaves|disappear\w*|go|gone|went|depart\w*|exit\w*|stop\w*|end\w*|last)\b", re.I)
YES_NO = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|has|have)\b", re.I)


def _looked(log: PerceptionLog, side: str = "seen") -> str:
    """The part of the file perception covered (``side``: "seen" by the visual models or "heard"
    by the audio ones), in words: "the whole file (00:00–10:00)" or "only 09:30–10:00 of the 10:00
    file (…the rest was not looked at…)". Where the log does not know what was covered (a log
    built from tracks alone), only the stretch of what it recorded is named, and nothing is claimed
    about the rest."""
    stretch = getattr(log, side)
    if stretch is None:
        a, b = log.span
        if b <= a:
            return "the perception log (nothing was recorded)"
        return f"what perception recorded ({clock(a)}–{clock(b)})"
    a, b = stretch
    if log.whole(stretch):
        return f"the whole file ({clock(0)}–{clock(log.duration or b)})"
    if log.duration:
        verb = "looked at" if side == "seen" else "listened to"
        return (f"only {clock(a)}–{clock(b)} of the {clock(log.duration)} file (the part perception covered; "
                f"the rest was not {verb} — analyse the file into a project for the whole of it)")
    return f"{clock(a)}–{clock(b)} (what perception covered)"


MOMENT_START = re.compile(r"\b(at|in|near|during|from) the (very )?(start|beginning|outset|opening|first frame)\b"
                          r"|\bat first\b", re.I)
MOMENT_END = re.compile(r"\b(at|in|near) the (very )?(end|last frame|close)\b", re.I)
MOMENT_AT = re.compile(r"\bat (?:\[?(\d{1,2}):(\d{2})\]?|(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)\b)", re.I)


def asked_moment(question: str, log: PerceptionLog) -> float | None:
    """The moment a question names itself ("at the start", "at the end", "at 00:05", "at 5 s"), or None."""
    if MOMENT_START.search(question):
        return min(log.frame_times or [0.0]) if log.seen is None else log.seen[0]
    if MOMENT_END.search(question):
        ends = [x for x in (log.seen[1] if log.seen else None, max(log.frame_times or [0.0])) if x is not None]
        return min(ends) if ends else None
    m = MOMENT_AT.search(question)
    if m:
        return float(m.group(3)) if m.group(3) else int(m.group(1)) * 60 + int(m.group(2))
    return None
