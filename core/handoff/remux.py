"""Stream copy into MP4 (no re-encoding): a media file, or a range of it that starts on a
keyframe, with optional chapters. Shared by the evidence package and the chaptered copy.

A stream copy keeps the source's pictures and sound bit for bit, so it is what a case file
wants; it can only start where every copied stream can be decoded from its first packet on
(a video keyframe; any packet of the audio codecs taken here starts a decode), and only with codecs the
MP4 container takes (:data:`MP4_CODECS`). :func:`copy_plan` says whether a cut allows it, and
why not. The end of a copied range needs no keyframe: every packet decoded before the end
(``dts < end``) is kept, so the few frames a B-frame stream shows just after the end come
along with the ones it needs (the clip may run a frame or two past the end; the actual times
are measured from the written file, :func:`clip_facts`).

Times are media seconds (from the container's start), as everywhere in Kestrel; the copy's
own clock starts at 0 at the first kept keyframe.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

from core.handoff.base import HandoffError
from core.jobs import Cancelled

#: Codecs (FFmpeg's names) that the MP4 muxer takes as they are. Every packet of the audio ones can
#: start a decode (as a player's seek does), so only the video stream needs a keyframe at a cut.
MP4_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4", "aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})
CHAPTER_TIME_BASE = Fraction(1, 1000)


@dataclass(frozen=True)
class Chapter:
    start: float  # media seconds
    end: float
    title: str


@dataclass(frozen=True)
class CopyPlan:
    copy: bool  # a stream copy is possible
    reason: str  # why (or why not), one sentence
    start: float  # where the copy starts: the keyframe at the requested start (media seconds)


def open_media(src: str | os.PathLike) -> tuple[Any, Any]:
    """``(MediaInfo, container)``: the source probed (which proves it decodes: a header alone is
    not enough) and opened by Kestrel's reader (a WAV's tail it does not own is never scanned);
    a :class:`HandoffError` with a sentence for a file that cannot be read."""
    from core.media.decode import MediaError, _open, probe

    try:
        info = probe(src, with_hash=False)
        return info, _open(Path(src))
    except MediaError as e:
        raise HandoffError(str(e)) from e


def chosen_streams(inp: Any) -> list[Any]:
    """The first decodable video stream and the first decodable audio stream (what Kestrel
    analysed); subtitles, data and further tracks are left out."""
    from core.media.decode import usable_stream

    return [s for s in (usable_stream(inp, "video"), usable_stream(inp, "audio")) if s is not None]


def origin_of(inp: Any) -> float:
    return float(inp.start_time) / 1e6 if inp.start_time is not None else 0.0


def codec_name(s: Any) -> str:
    """The codec's own name ("mp3"), not its decoder's ("mp3float")."""
    return str(s.codec_context.codec.canonical_name)


def mp4_problem(streams: Sequence[Any]) -> str | None:
    """Why these streams cannot be copied into MP4 as they are (None: they can)."""
    if not streams:
        return "it has neither video nor audio that can be decoded"
    for s in streams:
        if codec_name(s) not in MP4_CODECS:
            return f"its {s.type} codec ({codec_name(s)}) does not go into MP4 without re-encoding"
    return None


def copy_plan(inp: Any, streams: Sequence[Any], start: float) -> CopyPlan:
    """Whether ``[start, …)`` of ``inp`` can be stream-copied: the codecs go into MP4, and the
    video has a keyframe at ``start`` (within half a frame). Reads a few packets (no decoding)."""
    problem = mp4_problem(streams)
    if problem is not None:
        return CopyPlan(False, f"re-encoded: {problem}", start)
    v = next((s for s in streams if s.type == "video"), None)
    if v is None:
        return CopyPlan(True, "stream copy: audio only, and every audio packet can start a decode "
                              "(its first milliseconds may sound as after a player's seek)", start)
    if start <= 0.0:
        return CopyPlan(True, "stream copy: the range starts at the beginning of the file", 0.0)
    fps = float(v.average_rate or v.guessed_rate or 25)
    tol = 0.5 / max(fps, 1.0)
    import av

    try:
        kf = keyframe_before(inp, v, start + tol)
    except av.error.FFmpegError as e:  # a damaged index or packet: the re-encoder skips what it cannot read
        return CopyPlan(False, f"re-encoded: the keyframes could not be read ({getattr(e, 'strerror', None) or e})",
                        start)
    if kf is None or start - kf > tol:
        where = "no keyframe before it" if kf is None else f"the keyframe before it is at {kf:.3f} s"
        return CopyPlan(False, f"re-encoded: the range starts at {start:.3f} s, not on a keyframe ({where})", start)
    return CopyPlan(True, f"stream copy: the range starts on a keyframe ({kf:.3f} s)", kf)


def keyframe_before(inp: Any, v: Any, t: float) -> float | None:
    """The media time of the last video keyframe at or before ``t`` (None: none)."""
    origin = origin_of(inp)
    inp.seek(int((max(0.0, t) + origin) * 1e6), backward=True)
    best = None
    for p in inp.demux(v):
        if p.dts is None and p.pts is None:
            continue
        tb = p.time_base
        dts = float((p.dts if p.dts is not None else p.pts) * tb) - origin
        if dts > t:  # decode order: no later keyframe can show at or before t
            break
        pts = float((p.pts if p.pts is not None else p.dts) * tb) - origin
        if p.is_keyframe and pts <= t + 1e-9 and (best is None or pts > best):
            best = pts
    return best


def stream_copy(inp: Any, streams: Sequence[Any], out: Path, *, start: float = 0.0, end: float | None = None,
                chapters: Sequence[Chapter] = (), rotation: int = 0, cancelled: Callable[[], bool] | None = None,
                progress: Callable[[float], None] | None = None) -> Path:
    """Copy ``streams`` of ``inp`` between ``start`` (a keyframe: see :func:`copy_plan`) and
    ``end`` into an MP4 at ``out``, through a temporary file beside it (a cancel or a failure
    leaves nothing). ``chapters`` in media seconds, already flat and sorted. ``rotation``: the
    source's display turn (core.media.decode's MediaInfo), which the copy must keep (the copied
    stream parameters carry the display matrix; checked on the written file). Cancel raises
    :class:`core.jobs.Cancelled`; a muxer that refuses the packets, or a copy that lost the
    turn, :class:`HandoffError`."""
    import av

    out = Path(out)
    origin = origin_of(inp)
    span = (end if end is not None else max(start + 1e-3, float(inp.duration or 0) / 1e6)) - start
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".part.mp4", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with av.open(str(tmp), "w", format="mp4") as dst:
            outs = {s.index: dst.add_stream_from_template(s) for s in streams}
            if chapters and not hasattr(dst, "set_chapters"):  # PyAV before 15 (Kestrel pins 18.1)
                raise HandoffError(f"this PyAV ({av.__version__}) cannot write chapters; install the pinned version")
            if chapters:
                dst.set_chapters([{"id": k, "start": _ms(c.start - start), "end": _ms(c.end - start),
                                   "time_base": CHAPTER_TIME_BASE, "metadata": {"title": c.title}}
                                  for k, c in enumerate(chapters, 1)])
            inp.seek(int((max(0.0, start) + origin) * 1e6), backward=True)
            done = {s.index: False for s in streams}
            for k, p in enumerate(inp.demux(*streams)):
                if cancelled is not None and k % 200 == 0 and cancelled():
                    raise Cancelled()
                if p.pts is None and p.dts is None:
                    continue  # a flush packet
                tb = p.time_base
                pts = p.pts if p.pts is not None else p.dts
                dts = p.dts if p.dts is not None else p.pts
                t = float(pts * tb) - origin
                if start > 0 and t < start - 1e-6:
                    continue  # before the keyframe (audio, or leading pictures of an open GOP)
                if end is not None and float(dts * tb) - origin >= end:
                    done[p.stream.index] = True
                    if all(done.values()):
                        break
                    continue
                shift = round((Fraction(start) + Fraction(origin)) / tb)
                p.pts, p.dts = pts - shift, dts - shift
                p.stream = outs[p.stream.index]
                dst.mux(p)
                if progress is not None and k % 200 == 0:
                    progress(min(1.0, max(0.0, (t - start) / span)))
        _check_turn(tmp, rotation)
        os.replace(tmp, out)
        return out
    except av.error.FFmpegError as e:
        raise HandoffError(f"the streams could not be copied into MP4 ({getattr(e, 'strerror', None) or e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def _check_turn(path: Path, rotation: int) -> None:
    from core.media.decode import MediaError, probe

    try:
        info = probe(path, with_hash=False)
    except MediaError as e:
        raise HandoffError(f"the copy cannot be read back ({e})") from e
    got = info.video.rotation if info.video is not None else 0
    if got % 360 != rotation % 360:
        raise HandoffError(f"the copy shows the picture turned by {got}°, the source by {rotation}°")


def _ms(t: float) -> int:
    return int(round(max(0.0, t) * 1000))


@dataclass(frozen=True)
class ClipFacts:
    duration: float  # seconds, as the written file says
    codecs: tuple[str, ...]  # its streams' codecs, video first
    frames: int  # pictures decoded (0 without video)


def clip_facts(path: Path, *, decode: bool = False) -> ClipFacts:
    """What a written clip holds, read back from it (``decode``: count its pictures too)."""
    import av

    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type in ("video", "audio")]
        streams.sort(key=lambda s: s.type != "video")
        frames = 0
        if decode and c.streams.video:
            frames = sum(1 for _ in c.decode(c.streams.video[0]))
        return ClipFacts(float(c.duration or 0) / 1e6, tuple(codec_name(s) for s in streams), frames)


def read_chapters(path: Path) -> list[Chapter]:
    """The chapters of a media file, in seconds (as players read them)."""
    import av

    with av.open(str(path)) as c:
        return [Chapter(float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]),
                        str(ch["metadata"].get("title", ""))) for ch in c.chapters()]
