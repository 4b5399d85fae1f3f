"""Sanity checks for what a media file declares, Qt-free (used by core.media.decode and core.media.audio).

A damaged or hostile file may declare anything: a duration of 31,700 years in 20 KB, 255
audio channels, a sample rate of 2 GHz, a name that is not text. Kestrel believes a header
only when the bytes on disk can back it, measures the rest from the packets themselves, and
says what was wrong in a sentence.
"""
from __future__ import annotations

import math
import os
import stat
import time
import unicodedata
from pathlib import Path

# Below this many bits per second of media, a declared duration is not believed: even a
# still-picture slideshow or a 6 kb/s voice codec needs far more bytes than that.
MIN_PLAUSIBLE_BPS = 64.0
# Audio a reader accepts. 768 kHz is the highest rate converters record; below 1 kHz the
# header is damaged (telephone audio is 8 kHz; 1 Hz audio resampled to 16 kHz would be
# 16,000 times its size). Beyond 8 channels PyAV walks a frame's planes past the end of
# FFmpeg's array (a segmentation fault), so streams and frames with more are not read.
MAX_SAMPLE_RATE = 768_000
MIN_SAMPLE_RATE = 1_000
MAX_CHANNELS = 8
# Longest hole in an audio stream's timestamps that is filled with silence; a longer jump
# (a damaged timestamp, or a packet parked days later) ends the audio there.
MAX_AUDIO_GAP_S = 600.0
# Limits on measuring a file's real end by reading its packets.
_MEASURE_BUDGET_S = 4.0
_TAIL_PACKETS = 20_000
_NAME_MAX = 255


def display_name(path: str | os.PathLike, *, full: bool = False) -> str:
    """A file's name as one printable line: undecodable bytes as ``\\xff``, control
    characters (newlines, tabs) escaped, very long names shortened in the middle."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not full:
        text = text.rsplit("/", 1)[-1] or text
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
    if len(text) > 120:
        text = text[:60] + "…" + text[-40:]
    return text


def not_text(path: str | os.PathLike) -> str | None:
    """Why a path cannot be kept as text (None if it can)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start:e.end].encode("utf-8", "surrogateescape")
        return f"byte 0x{bad[0]:02x}" if bad else "an undecodable character"
    return None


def check_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``(path, problem)``: problem is a sentence (without the name) when ``path`` cannot be
    opened as a media file, else None. Never raises OSError."""
    p = Path(path)
    bad = not_text(p)
    if bad is not None:
        if not_text(p.name) is None:
            return p, (f"is in a folder whose name is not valid UTF-8 text ({bad}); Kestrel keeps file "
                       "paths as text in its projects: rename the folder or move the file, and open it again.")
        return p, (f"has a name that is not valid UTF-8 text ({bad}); Kestrel keeps file names as "
                   "text in its projects: rename the file and open it again.")
    longest = max((len(os.fsencode(part)) for part in p.parts), default=0)
    if longest > _NAME_MAX:
        return p, (f"cannot be opened: its name is {longest} bytes long and file systems allow "
                   f"{_NAME_MAX}.")
    try:
        st = p.stat()
    except FileNotFoundError:
        return p, "does not exist."
    except NotADirectoryError:
        return p, "does not exist (a folder in its path is a file)."
    except PermissionError:
        return p, "cannot be read (permission denied on its folder)."
    except OSError as e:
        return p, f"cannot be opened: {e.strerror or e}."
    if stat.S_ISDIR(st.st_mode):
        return p, "is a folder, not a media file."
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        return p, f"is {kind}, not a media file."
    if not os.access(p, os.R_OK):
        return p, "cannot be read (permission denied)."
    if st.st_size == 0:
        return p, "is empty (0 bytes)."
    return p, None


def finite_seconds(x) -> float:
    """A duration in seconds, or 0.0 when unknown, negative or not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def time_base(stream) -> float:
    """A stream's time base in seconds (1/90000 when the header gives none that is usable)."""
    tb = finite_seconds(stream.time_base) if stream.time_base else 0.0
    return tb or 1 / 90000


def human_duration(s: float) -> str:
    """'2 s', '3.5 min', '27.8 h', '11.6 days', '31,688 years'."""
    if not math.isfinite(s):
        return "an unbounded time"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 2 * 86400:
        return f"{s / 3600:.3g} h"
    if s < 2 * 365.25 * 86400:
        return f"{s / 86400:.3g} days"
    return f"{s / (365.25 * 86400):,.0f} years"


def plausible(duration: float, size_bytes: int) -> bool:
    """Can ``size_bytes`` of file hold ``duration`` seconds of media?"""
    return duration > 0 and size_bytes * 8.0 / duration >= MIN_PLAUSIBLE_BPS


def packets(container, streams, name: str = "", log=None):
    """``container.demux(streams)`` that never raises on damaged data: unreadable data ends it
    (that is where the file ends for anyone playing it), and a packet of a stream that appears
    mid-file (MPEG-PS/TS; PyAV raises IndexError for it) is skipped."""
    import av

    restarts = 0
    it = container.demux(streams)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except IndexError:  # the packet was read; a fresh demux goes on after it
            restarts += 1
            if restarts > 1000:
                return
            it = container.demux(streams)
        except (av.error.FFmpegError, OSError, ValueError, OverflowError) as e:
            if log is not None:
                log.warning("%s: reading stopped at damaged data (%s)", name, e)
            return


def _packet_end(pkt, origin: float) -> float | None:
    ts = pkt.pts if pkt.pts is not None else pkt.dts
    if ts is None or pkt.time_base is None:
        return None
    tb = float(pkt.time_base)
    # a packet's own duration counts for at most a second: a patched sample table can give
    # the last frame days
    end = ts * tb + min(max(0, pkt.duration or 0) * tb, 1.0) - origin
    return end if math.isfinite(end) else None


def _scan(container, streams, origin: float, *, limit: int | None, deadline: float) -> tuple[float | None, bool]:
    """Latest packet end seen from the current position, and whether the end was reached."""
    latest: float | None = None
    for n, pkt in enumerate(packets(container, streams)):  # damaged data ends the file
        if pkt.size:
            e = _packet_end(pkt, origin)
            if e is not None and (latest is None or e > latest):
                latest = e
        if (limit is not None and n >= limit) or (n % 512 == 0 and time.monotonic() > deadline):
            return latest, False
    return latest, True


def measured_end(container, streams, declared: float) -> float | None:
    """The time (media seconds) at which the last packet of ``streams`` ends, read from the
    packets: from the declared end backwards first (cheap where there is an index), else
    the whole file under a time budget. None when nothing could be read."""
    import av

    origin = finite_seconds((container.start_time or 0) / 1e6) if container.start_time else 0.0
    deadline = time.monotonic() + _MEASURE_BUDGET_S
    if declared > 0:
        try:
            container.seek(int(min(declared, 9e12) * 1e6), backward=True)
            latest, done = _scan(container, streams, origin, limit=_TAIL_PACKETS, deadline=deadline)
            if done and latest is not None and latest > 0:
                return latest
        except (av.error.FFmpegError, OSError, ValueError, OverflowError):
            pass
    try:
        container.seek(0)
    except (av.error.FFmpegError, OSError, ValueError):
        pass
    latest, _done = _scan(container, streams, origin, limit=None, deadline=deadline)
    return latest


def settle_duration(container, streams, size_bytes: int, name: str,
                    kind: str) -> tuple[tuple[float, str | None], bool]:
    """``((duration, note), read)``: the declared duration when the file can back it, else
    the one its packets show, with a sentence saying what was wrong (None when nothing was);
    ``read`` says whether packets were read (the container has moved)."""
    declared = finite_seconds(container.duration / 1e6) if container.duration else 0.0
    if declared <= 0:
        declared = max((finite_seconds(s.duration * s.time_base) if s.duration and s.time_base else 0.0
                        for s in streams), default=0.0)
    if plausible(declared, size_bytes):
        return (declared, None), False
    measured = finite_seconds(measured_end(container, streams, declared))
    if measured <= 0:
        return (declared, None), True
    if declared <= 0:
        return (measured, None), True
    if measured >= 0.9 * declared:  # the timestamps really do span it: a sparse file, or damaged timestamps
        return (declared, f"{name} spreads {size_bytes:,} bytes of {kind} over {human_duration(declared)}: "
                          "its timestamps may be damaged."), True
    note = (f"{name} declares a duration of {human_duration(declared)} but holds "
            f"{human_duration(measured)} of {kind}; using {human_duration(measured)}.")
    return (measured, note), True
