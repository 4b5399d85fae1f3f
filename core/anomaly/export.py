"""Exporting anomaly events: a table (CSV), a document (JSON), and a clip per event (mp4).

Files are written next to their final name and renamed into place, so a failed or
interrupted export never leaves a truncated file under the name the analyst asked for.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from core.anomaly.events import AnomalyEvent
from core.anomaly.score import CUES
from core.exportsafe import fixed, inside, unique_names, writer
from core.media.decode import MediaError, fit_size, probe, rotate_image

CSV_FIELDS = ("id", "start", "end", "peak", "peak_time", "modality", "cues", "reasons", "feedback")


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write to a new temporary file beside ``path`` (created exclusively: a link planted under
    a predictable name is never written through), then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_new_temp(path.parent, f".{path.name}.", ".part"))
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _new_temp(folder: Path, prefix: str, suffix: str) -> str:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    return name


def events_csv(events: Sequence[AnomalyEvent]) -> str:
    """One row per event; cues and reasons joined with " | ". Every cell is neutralised against
    spreadsheet formulas (:mod:`core.exportsafe`): reasons carry text from the footage."""
    buf = io.StringIO()
    w = writer(buf)
    w.writerow(CSV_FIELDS)
    for e in events:
        w.writerow([e.id, fixed(e.start, 3), fixed(e.end, 3), fixed(e.peak, 4), fixed(e.peak_time, 3), e.modality,
                    " | ".join(e.cues), " | ".join(f"{r.modality}/{r.cue}: {r.text}" for r in e.reasons),
                    e.feedback or ""])
    return buf.getvalue()


def export_events_csv(events: Sequence[AnomalyEvent], path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), events_csv(events).encode("utf-8"))


def export_events_json(events: Sequence[AnomalyEvent], path: str | os.PathLike,
                       meta: Mapping[str, Any] | None = None) -> Path:
    """``{"meta": {...}, "events": [...]}`` — meta says where they came from (media, threshold…)."""
    doc = {"meta": dict(meta or {}), "events": [e.to_dict() for e in events]}
    return _atomic_write(Path(path), json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"))


def export_clip(src: str | os.PathLike, start: float, end: float, out: str | os.PathLike, *, pad: float = 2.0,
                max_size: tuple[int, int] = (1280, 720), cancelled: Callable[[], bool] | None = None) -> Path:
    """Re-encode [start − pad, end + pad] of ``src`` to an H.264/AAC mp4 (audio if there is any).

    Re-encoding, not stream copy: a cut must start on the exact second, and keyframes rarely
    fall there. Times are media seconds (from the container start), as everywhere in Kestrel.
    """
    import av

    a, b = max(0.0, start - pad), end + pad
    if b <= a:
        raise MediaError(f"empty clip range {a:.2f}–{b:.2f} s")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    info = probe(src, with_hash=False)
    rot = info.video.rotation if info.video is not None else 0  # applied to the pixels: players differ
    from core.media.decode import _open
    inp = _open(Path(src))  # MediaError with a sentence; a WAV's tail it does not own is never scanned
    try:
        origin = float(inp.start_time) / 1e6 if inp.start_time is not None else 0.0
        vin = inp.streams.video[0] if inp.streams.video else None
        ain = inp.streams.audio[0] if inp.streams.audio else None
        if vin is None and ain is None:
            raise MediaError(f"{Path(src).name} has neither video nor audio")
        tmp = Path(_new_temp(out.parent, f".{out.stem}.", ".part.mp4"))  # exclusively: never through a link
        with av.open(str(tmp), "w", format="mp4") as dst:
            vs = as_ = None
            rs = None
            if vin is not None:
                cw, ch = vin.codec_context.width or 2, vin.codec_context.height or 2
                w, h = fit_size(*((ch, cw) if rot % 180 else (cw, ch)), max_size)
                rate = vin.average_rate or vin.guessed_rate or 25
                vs = dst.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
                vs.width, vs.height, vs.pix_fmt = w // 2 * 2, h // 2 * 2, "yuv420p"
                # frame times kept as they are (variable frame rate phones): a fine time base
                # for both muxer and encoder, not 1/fps, which would merge close frames
                vs.time_base = vs.codec_context.time_base = Fraction(1, 90000)
            if ain is not None:
                sr = int(ain.codec_context.sample_rate or 48000)
                layout = "mono" if (ain.codec_context.channels or 1) == 1 else "stereo"
                as_ = dst.add_stream("aac", rate=sr)
                as_.layout = layout
                rs = av.AudioResampler(format="fltp", layout=layout, rate=sr,
                                       frame_size=as_.codec_context.frame_size or 1024)
            inp.seek(int((a + origin) * 1e6), backward=True)
            streams = [s for s in (vin, ain) if s is not None]
            done = {s.index: False for s in streams}
            samples = 0
            last_pts = -1
            for k, frame in enumerate(_frames(inp, streams)):
                if cancelled is not None and k % 50 == 0 and cancelled():
                    raise InterruptedError
                t = (frame.time if frame.time is not None else 0.0) - origin
                idx = vin.index if isinstance(frame, av.VideoFrame) else ain.index
                if t > b:
                    done[idx] = True
                    if all(done.values()):
                        break
                    continue
                if isinstance(frame, av.VideoFrame):
                    pts = int(round((t - a) * 90000))
                    if t + 1e-6 < a or pts <= last_pts:  # before the cut, or a repeated timestamp
                        continue
                    last_pts = pts
                    if rot:
                        sw, sh = (vs.height, vs.width) if rot % 180 else (vs.width, vs.height)
                        img = rotate_image(frame.to_ndarray(format="rgb24", width=sw, height=sh), rot)
                        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(
                            format="yuv420p")
                    else:
                        f = frame.reformat(width=vs.width, height=vs.height, format="yuv420p")
                    f.pts, f.time_base = pts, Fraction(1, 90000)
                    for p in vs.encode(f):
                        dst.mux(p)
                else:
                    if t + frame.samples / max(frame.sample_rate, 1) < a:
                        continue
                    frame.pts = None
                    for o in rs.resample(frame):
                        o.pts, o.time_base = samples, Fraction(1, o.sample_rate)
                        samples += o.samples
                        for p in as_.encode(o):
                            dst.mux(p)
            if rs is not None:
                for o in rs.resample(None):
                    o.pts, o.time_base = samples, Fraction(1, o.sample_rate)
                    samples += o.samples
                    for p in as_.encode(o):
                        dst.mux(p)
            for s in (vs, as_):
                if s is not None:
                    for p in s.encode(None):
                        dst.mux(p)
        os.replace(tmp, out)
        return out
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        inp.close()


def _frames(inp, streams):
    import av

    for packet in inp.demux(*streams):
        try:
            yield from packet.decode()
        except av.error.FFmpegError:  # a damaged packet: skip it, as players do
            continue


def export_event_clips(src: str | os.PathLike, events: Sequence[AnomalyEvent], folder: str | os.PathLike, *,
                       pad: float = 2.0, limit: int = 10) -> list[Path]:
    """A clip per event (the ``limit`` highest-scoring), named by start time and top cue, in
    ``folder`` whatever the stored events say: a cue Kestrel does not know is named "event",
    and two events that would share a name get ``-<n>``."""
    chosen = sorted(events, key=lambda e: -e.peak)[:max(0, limit)]
    chosen = sorted(chosen, key=lambda e: e.start)
    names = unique_names({k: clip_stem(e) for k, e in enumerate(chosen, 1)})
    return [export_clip(src, e.start, e.end, inside(folder, names[k] + ".mp4"), pad=pad)
            for k, e in enumerate(chosen, 1)]


def export_events(src: str | os.PathLike, events: Sequence[AnomalyEvent], folder: str | os.PathLike) -> list[Path]:
    """Job (the window's Export…): ``events.csv``, ``events.json`` and a clip per event in ``folder``."""
    out = Path(folder)
    files = [export_events_csv(events, out / "events.csv"), export_events_json(events, out / "events.json")]
    files += export_event_clips(src, events, out)
    return files


def live_record_folder(project_path: str | os.PathLike | None) -> Path:
    """Where a live alert's clip is recorded: ``<project>-events`` beside the project (made if
    missing), or ``~/kestrel-events-events`` without one."""
    base = Path(str(project_path)).with_suffix("") if project_path is not None else Path.home() / "kestrel-events"
    d = Path(str(base) + "-events")
    d.mkdir(parents=True, exist_ok=True)
    return d


def clip_stem(e: AnomalyEvent) -> str:
    """``anomaly_01m05_20s_loud-sound``: start time and top cue (one of Kestrel's cues)."""
    cue = e.cues[0] if e.cues and e.cues[0] in CUES else "event"
    t = float(e.start)
    t = min(t, 1e7) if math.isfinite(t) and t > 0 else 0.0
    return f"anomaly_{int(t // 60):02d}m{t % 60:05.2f}s_{cue.replace('_', '-')}".replace(".", "_", 1)


def thumbnail_png(img: np.ndarray) -> bytes:
    """An event thumbnail (RGB array) as PNG bytes, for reports and the clipboard."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    if not ok:
        raise ValueError("the thumbnail could not be encoded")
    return buf.tobytes()
