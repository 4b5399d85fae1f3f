"""The bits: what the machine stream's pictures cost on a real codec, and the yardstick it is held to.

:class:`MachineCodec` turns one composed picture into libx264 (or libx265) packets through PyAV
— with FFmpeg regions-of-interest side data (the ``addroi`` filter) carrying the quantiser
offsets the encoder planned — and decodes them again: the *decoded* image is what the receiving
model sees, and the packets' real byte count is the bitrate the meter shows.

:class:`HumanQualityStream` and :func:`human_quality_kbps` encode the same frames as a person
would watch them (libx264 CRF 23, the source frame rate, full size): the yardstick the machine
stream's bitrate is compared with.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

Roi = tuple[int, int, int, int, float]  # x, y, width, height in encoded pixels; quantiser offset (−1..1)


def pick_codec(codec: str) -> str:
    """"h264" or "hevc"; hevc falls back to h264 (logged) when PyAV's FFmpeg lacks libx265."""
    if codec not in ("h264", "hevc"):
        raise ValueError("codec must be 'h264' or 'hevc'")
    import av

    if codec == "hevc" and "libx265" not in av.codecs_available:
        log.warning("this PyAV build has no libx265; encoding H.264 instead")
        return "h264"
    return codec


class MachineCodec:
    """One picture in, its packet(s) and the picture decoded from them out.

    ``codec``: "h264" or "hevc" (as :func:`pick_codec` returns it); ``gop``: 1 is intra-only;
    ``preset``: x264/x265's speed preset. The encoder is reopened when the picture size or the
    CRF changes (rate control raises it while the stream is over its cap).
    """

    def __init__(self, codec: str, *, gop: int = 1, preset: str = "veryfast") -> None:
        self.codec, self.gop, self.preset = codec, gop, preset
        self._enc: Any = None
        self._dec: Any = None
        self._enc_key: tuple = ()

    def encode(self, t: float, pic: np.ndarray, crf: int, rois: Sequence[Roi] = ()) -> tuple[bytes, np.ndarray]:
        """The packet bytes of RGB picture ``pic`` at stream time ``t``, and the RGB image they decode to."""
        import av

        h, w = pic.shape[:2]
        self._open(w, h, crf)
        vf = av.VideoFrame.from_ndarray(pic, format="rgb24").reformat(format="yuv420p")
        vf.pts = int(round(t * 1000))
        vf.time_base = Fraction(1, 1000)
        vf = with_roi(vf, rois)
        packets = list(self._enc.encode(vf))
        if not packets:  # an encoder that buffers despite zerolatency: drain it for this frame
            packets = list(self._enc.encode(None))
            self._enc = None
        data = b"".join(bytes(p) for p in packets)
        decoded = None
        for p in packets:
            for fr in self._dec.decode(p):
                decoded = fr.to_ndarray(format="rgb24")
        if decoded is None:
            raise RuntimeError(f"{self.codec}: the encoded frame at {t:.2f} s did not decode")
        return data, decoded

    def _open(self, w: int, h: int, crf: int) -> None:
        import av

        key = (w, h, crf)
        if self._enc is not None and key == self._enc_key:
            return
        name = "libx265" if self.codec == "hevc" else "libx264"
        enc = av.CodecContext.create(name, "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base = Fraction(1, 1000)
        enc.gop_size = self.gop
        enc.max_b_frames = 0
        # zerolatency: one packet out per frame in. qcomp=1: the same quality for every frame —
        # without lookahead, CRF otherwise lets the quantiser drift ~10 steps up after the first
        # frame (measured: 82 kB, then 11 kB per intra frame of the same scene).
        opts = {"preset": self.preset, "tune": "zerolatency", "crf": str(crf)}
        if name == "libx265":
            opts["x265-params"] = f"log-level=none:keyint={self.gop}:min-keyint=1:bframes=0:qcomp=1"
        else:
            opts["x264-params"] = f"keyint={self.gop}:min-keyint=1:qcomp=1"
        enc.options = opts
        enc.open()
        self._enc, self._enc_key = enc, key
        self._dec = av.CodecContext.create("hevc" if self.codec == "hevc" else "h264", "r")


def with_roi(vf: Any, rois: Sequence[Roi]) -> Any:
    """``vf`` with FFmpeg's regions-of-interest side data attached (the ``addroi`` filter), which
    libx264/libx265 turn into quantiser offsets. The first region takes precedence where they
    overlap, so a whole-frame background offset goes last."""
    if not rois:
        return vf
    import av.filter

    g = av.filter.Graph()
    last = g.add_buffer(width=vf.width, height=vf.height, format="yuv420p", time_base=Fraction(1, 1000))
    for x, y, w, h, q in rois:
        f = g.add("addroi", f"x={x}:y={y}:w={w}:h={h}:qoffset={q:.3f}")
        last.link_to(f)
        last = f
    sink = g.add("buffersink")
    last.link_to(sink)
    g.configure()
    g.push(vf)
    return g.pull()


# -- the yardstick: the same frames as a person would watch them ---------------------------------

def human_quality_kbps(frames: Sequence[tuple[float, np.ndarray]] | str, *, fps: float | None = None,
                       crf: int = 23, preset: str = "medium", start: float = 0.0,
                       end: float | None = None) -> float:
    """What a person-oriented stream of the same frames costs: libx264 CRF 23 (x264's default
    quality), full size, every frame at the source rate, normal GOP with B-frames.

    ``frames``: (time, RGB image) pairs, or a file path whose [start, end) is decoded and encoded
    frame by frame (never held in memory as a whole)."""
    if isinstance(frames, str):
        return _human_from_file(frames, crf=crf, preset=preset, start=start, end=end)
    if not frames:
        return 0.0
    d = np.diff([t for t, _ in frames])
    enc = HumanQualityStream(fps or (1.0 / float(np.median(d)) if len(d) else 25.0), crf, preset)
    for t, img in frames:
        enc.add(t, img)
    return enc.finish()


class HumanQualityStream:
    """A person-oriented H.264 stream of the same frames, for the meter beside the machine stream:
    ``add`` every frame, read ``kbps``. ``tune="zerolatency"`` suits a live meter (packets come out
    at once); the bench's yardstick keeps x264's defaults (``preset="medium"``, lookahead, B-frames)."""

    def __init__(self, fps: float, crf: int = 23, preset: str = "medium", tune: str | None = None) -> None:
        self.fps, self.crf, self.preset, self.tune = fps, crf, preset, tune
        self._enc: Any = None
        self.total = 0
        self.t0: float | None = None
        self.t1 = 0.0

    def add(self, t: float, img: np.ndarray) -> None:
        import av

        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        if self._enc is None:
            self._enc = av.CodecContext.create("libx264", "w")
            self._enc.width, self._enc.height, self._enc.pix_fmt = w, h, "yuv420p"
            self._enc.time_base = Fraction(1, 1000)
            self._enc.framerate = Fraction(round(self.fps * 1000), 1000)
            tune = {"tune": self.tune} if self.tune else {}
            self._enc.options = {"preset": self.preset, "crf": str(self.crf), **tune}
            self.t0 = t
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24").reformat(format="yuv420p")
        vf.pts = int(round((t - (self.t0 or 0.0)) * 1000))
        vf.time_base = Fraction(1, 1000)
        self.total += sum(p.size for p in self._enc.encode(vf))
        self.t1 = t

    @property
    def kbps(self) -> float:
        """Bits so far over the time covered (undercounts by the encoder's lookahead until ``finish``)."""
        duration = self.t1 - (self.t0 or 0.0) + 1.0 / self.fps
        return self.total * 8 / 1000 / duration if self._enc is not None else 0.0

    def finish(self) -> float:
        if self._enc is not None:
            self.total += sum(p.size for p in self._enc.encode(None))
        return self.kbps


def _human_from_file(path: str, *, crf: int, preset: str, start: float, end: float | None) -> float:
    import av

    with av.open(path, metadata_errors="replace") as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        fps = float(vs.average_rate or vs.guessed_rate or 25)
        enc = HumanQualityStream(fps, crf, preset)
        if start > 0:
            c.seek(int(start / vs.time_base), stream=vs, backward=True)
        for f in c.decode(vs):
            if f.time is None or f.time < start - 1e-6:
                continue
            if end is not None and f.time >= end:
                break
            enc.add(float(f.time), f.to_ndarray(format="rgb24"))
    return enc.finish()
