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
