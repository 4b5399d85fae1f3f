"""How Kestrel writes a time, in one place: every clock an analyst reads, a file stores or a model
is asked to cite comes from here.

- :func:`timecode` ``hh:mm:ss.mmm``: the player, FOCUS selections, exports an analyst reads.
- :func:`subtitle_stamp` ``hh:mm:ss,mmm`` / ``hh:mm:ss.mmm``: SRT and WebVTT cues.
- :func:`clock` ``mm:ss`` (``h:mm:ss`` past an hour), whole seconds: what a chat model cites.
- :func:`clock_cs` ``mm:ss.ss`` (``h:mm:ss.ss`` past an hour): command-line listings of events and shots.

And the one way a time is read from a command line: :func:`parse_time` (``SS``, ``MM:SS``, ``HH:MM:SS``).
"""
from __future__ import annotations

import re


def _ms(t: float) -> tuple[int, int, int, int]:
    ms = int(round(max(0.0, float(t)) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return h, m, s, ms


def timecode(t: float) -> str:
    """``hh:mm:ss.mmm``"""
    return subtitle_stamp(t, ".")


def subtitle_stamp(t: float, sep: str = ",") -> str:
    """``hh:mm:ss,mmm`` (SRT) or with ``sep="."`` (WebVTT)."""
    h, m, s, ms = _ms(t)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def clock(t: float) -> str:
    """``mm:ss``, ``h:mm:ss`` past an hour, rounded to whole seconds."""
    h, rest = divmod(int(round(max(0.0, float(t)))), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def clock_cs(t: float) -> str:
    """``mm:ss.ss``, ``h:mm:ss.ss`` past an hour."""
    m, s = divmod(max(0.0, float(t)), 60.0)
    return f"{int(m):02d}:{s:05.2f}" if m < 60 else f"{int(m // 60)}:{int(m % 60):02d}:{s:05.2f}"


_TIME = re.compile(r"^\s*(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)\s*$")


def parse_time(text: str) -> float:
    """Seconds from ``SS``, ``MM:SS`` or ``HH:MM:SS`` (fractions allowed)."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"not a time: {text!r} (use seconds, MM:SS or HH:MM:SS)")
    a, b, s = m.groups()
    parts = [float(x) for x in (a, b) if x is not None]
    total = float(s)
    for k, p in enumerate(reversed(parts)):
        total += p * 60 ** (k + 1)
    return total
