"""Generate test media with PyAV, so a test knows exactly which frame and sound is where.

Why: real clips (core.media.samples) show how the app copes with the world, but only clips we
make can say "frame 37 is at 1.48 s and there is a 440 Hz tone from 1.0 to 2.0 s".

Frame scheme (``render_frame`` draws it, ``frame_signature`` describes it, and
``decode_frame_index`` reads it back from a decoded RGB frame), for a W x H frame
(both even, W >= 96, H >= 64) showing frame index i:

* Code strip, rows ``[0, S)`` with ``S = max(8, H // 8)``: ``CODE_BITS`` (12) cells, each
  ``W // 12`` px wide, left to right the bits of ``i`` from most to least significant;
  a 1 is white (255, 255, 255), a 0 black. Frames 0..4095 are told apart exactly and
  the strip survives any lossy codec (read the mean of each cell's inner half).
* Bar band, rows ``[S, H - S)``: background colour with a white vertical bar
  ``max(4, W // 16)`` px wide whose left edge is at ``x = (i * max(1, W // 64)) %
  (W - bar_width)``: it moves right, so motion is visible.
* Background, everywhere not covered above (the bottom rows ``[H - S, H)`` are pure
  background): RGB ``(32 + (7 i) % 192, 96, 224 - (7 i) % 192)``; the colour drifts
  slowly, so consecutive frames look alike and no frame is a "cut".

Audio is silence except where ``tone=(start_s, end_s, freq_hz, amplitude)`` (or a list
of them) adds a sine of that amplitude (full scale 1.0) on every channel.

Frame i of a constant-rate clip starts at ``i / fps``; ``frame_times`` gives the exact
start times of both constant- and variable-rate clips, counted from the stream's
``start_time``. That is 0 in every container except MPEG-PS (.mpg), whose muxer starts the
clock at about 0.53 s, as real .mpg files do: subtract ``stream.start_time``.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODE_BITS = 12
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
Tone = tuple[float, float, float, float]

# Encoders are tried in order and the first that PyAV's bundled FFmpeg has is used.
_VIDEO_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("libx264", "mpeg4"), ".mov": ("libx264", "mpeg4"), ".m4v": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"), ".webm": ("libvpx", "libvpx-vp9"),
    ".avi": ("mpeg4", "msmpeg4"), ".mpg": ("mpeg2video", "mpeg1video"),
    ".mpeg": ("mpeg2video", "mpeg1video"), ".ts": ("libx264", "mpeg2video"),
}
_AUDIO_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("aac",), ".mov": ("aac",), ".m4v": ("aac",), ".m4a": ("aac",),
    ".mkv": ("aac", "libopus"), ".webm": ("libopus", "libvorbis"),
    # PCM first in AVI: MP3's encoder delay makes the AVI muxer shift video frames 1..n
    # by one frame (frame 1 lands at 2/fps), which would defeat exact timing in tests.
    ".avi": ("pcm_s16le", "libmp3lame"), ".mpg": ("mp2",), ".mpeg": ("mp2",),
    ".ts": ("aac", "mp2"), ".wav": ("pcm_s16le",), ".mp3": ("libmp3lame",),
    ".ogg": ("libopus", "libvorbis"), ".opus": ("libopus",), ".flac": ("flac",),
}
_VIDEO_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast"},  # keeps B-frames, so pts != dts as in real files
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}
# Fine time base for variable frame rate clips (the MP4/MPEG-TS clock).
VFR_TIME_BASE = Fraction(1, 90000)

STANDARD_DURATION = 3.0
STANDARD_FPS = 25
STANDARD_SIZE = (320, 240)
STANDARD_TONE: Tone = (1.0, 2.0, 440.0, 0.5)


@dataclass(frozen=True)
class FrameSignature:
    """What ``render_frame(index, size)`` drew, with the regions a test should look at.

    Boxes are ``(x0, y0, x1, y1)``, half-open, in pixels.
    """

    index: int
    bits: tuple[int, ...]
    code_cells: tuple[tuple[int, int, int, int], ...]
    bar_box: tuple[int, int, int, int]
    background: tuple[int, int, int]
    background_box: tuple[int, int, int, int]


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if w < 96 or h < 64 or w % 2 or h % 2:
        raise ValueError(f"frame size {w}x{h}: need even sizes, at least 96x64")


def frame_signature(index: int, size: tuple[int, int]) -> FrameSignature:
    """Describe frame *index* of a clip of *size* (see the module docstring)."""
    _check_size(size)
    if not 0 <= index < 2**CODE_BITS:
        raise ValueError(f"frame index {index} outside 0..{2**CODE_BITS - 1}")
    w, h = size
    strip = max(8, h // 8)
    cell = w // CODE_BITS
    bits = tuple((index >> (CODE_BITS - 1 - k)) & 1 for k in range(CODE_BITS))
    cells = tuple((k * cell, 0, (k + 1) * cell, strip) for k in range(CODE_BITS))
    bar_w = max(4, w // 16)
    bar_x = (index * max(1, w // 64)) % (w - bar_w)
    drift = (7 * index) % 192
    return FrameSignature(index, bits, cells, (bar_x, strip, bar_x + bar_w, h - strip),
                          (32 + drift, 96, 224 - drift), (0, h - strip, w, h))


def render_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """The H x W x 3 uint8 RGB picture of frame *index*."""
    sig = frame_signature(index, size)
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = sig.background
    for bit, (x0, y0, x1, y1) in zip(sig.bits, sig.code_cells):
        img[y0:y1, x0:x1] = 255 * bit
    x0, y0, x1, y1 = sig.bar_box
    img[y0:y1, x0:x1] = 255
    return img


def decode_frame_index(rgb: np.ndarray) -> int:
    """Read the frame index back from a decoded H x W x 3 RGB frame's code strip."""
    h, w = rgb.shape[:2]
    sig = frame_signature(0, (w, h))
    value = 0
    for x0, y0, x1, y1 in sig.code_cells:
        mx, my = (x1 - x0) // 4, (y1 - y0) // 4
        value = (value << 1) | int(rgb[y0 + my:y1 - my, x0 + mx:x1 - mx].mean() > 127)
    return value


def frame_times(duration: float, fps: float, vfr: bool = False) -> list[float]:
    """Start time in seconds of every frame ``make_clip`` writes.

    Constant rate: ``i / fps``. Variable rate: gaps alternate ``1/fps`` and ``2.5/fps``
    (0.04 s and 0.1 s at 25 fps), rounded to ``VFR_TIME_BASE`` ticks.
    """
    if not vfr:
        return [i / fps for i in range(round(duration * fps))]
    gaps = (round(1 / (fps * VFR_TIME_BASE)), round(2.5 / (fps * VFR_TIME_BASE)))
    ticks, k, out = 0, 0, []
    while ticks * VFR_TIME_BASE < duration:
        out.append(float(ticks * VFR_TIME_BASE))
        ticks += gaps[k % 2]
        k += 1
    return out


def audio_signal(duration: float, sample_rate: int, channels: int,
                 tone: Tone | Sequence[Tone] | None) -> np.ndarray:
    """The ``channels x samples`` float32 waveform ``make_clip`` encodes."""
    n = round(duration * sample_rate)
    mono = np.zeros(n, np.float64)
    tones: Sequence[Tone] = [] if tone is None else (
        [tone] if isinstance(tone[0], (int, float)) else tone)  # type: ignore[list-item]
    t = np.arange(n) / sample_rate
    for start, end, freq, amp in tones:
        on = (t >= start) & (t < end)
        mono[on] += amp * np.sin(2 * np.pi * freq * (t[on] - start))
    return np.clip(np.tile(mono, (channels, 1)), -1.0, 1.0).astype(np.float32)


def _encoder(kind: str, wanted: str | None, ext: str) -> str:
    table = _VIDEO_CODECS if kind == "video" else _AUDIO_CODECS
    candidates = (wanted,) if wanted else table.get(ext, ())
    if not candidates:
        raise ValueError(f"no default {kind} codec for {ext!r}; pass one explicitly")
    for name in candidates:
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises several types for "no such encoder"
            continue
    raise ValueError(f"none of the {kind} encoders {candidates} exists in PyAV's FFmpeg")


def make_clip(path: str | Path, *, duration: float = STANDARD_DURATION,
              fps: int = STANDARD_FPS, size: tuple[int, int] = STANDARD_SIZE,
              video: bool = True, audio: bool = True, sample_rate: int = 48000,
              channels: int = 2, vcodec: str | None = None, acodec: str | None = None,
              tone: Tone | Sequence[Tone] | None = None, vfr: bool = False,
              gop: int | None = None, video_options: dict[str, str] | None = None) -> Path:
    """Write a clip whose frames and sounds follow the module's scheme; return its path.

    Codecs default from the extension (see ``_VIDEO_CODECS``/``_AUDIO_CODECS``). *gop*
    forces a keyframe exactly every *gop* frames. *vfr* needs a container with real
    timestamps (mp4, mov, mkv, webm), not avi or mpg.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if not (video or audio):
        raise ValueError("a clip needs video, audio or both")
    if audio and channels not in _LAYOUTS:
        raise ValueError(f"{channels} audio channels: use one of {sorted(_LAYOUTS)}")
    if vfr and ext in (".avi", ".mpg", ".mpeg"):
        raise ValueError(f"{ext} cannot carry variable frame-rate timestamps")
    vname = _encoder("video", vcodec, ext) if video else None
    aname = _encoder("audio", acodec, ext) if audio else None
    if video:
        _check_size(size)
    if aname:
        rates = av.Codec(aname, "w").audio_rates
        if rates and sample_rate not in rates:
            raise ValueError(f"{aname} cannot encode {sample_rate} Hz; use one of {rates}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(path), "w") as out:
            vstream = _add_video_stream(out, vname, fps, size, gop, vfr,
                                        video_options) if vname else None
            astream = out.add_stream(aname, rate=sample_rate) if aname else None
            if astream is not None:
                astream.layout = _LAYOUTS[channels]
            if vstream is not None:
                _write_video(out, vstream, duration, fps, size, vfr)
            if astream is not None:
                _write_audio(out, astream, audio_signal(duration, sample_rate, channels, tone))
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a half-written clip that looks valid
        raise
    return path


def _add_video_stream(out: av.container.OutputContainer, name: str, fps: int,
                      size: tuple[int, int], gop: int | None, vfr: bool,
                      extra: dict[str, str] | None) -> av.VideoStream:
    stream = out.add_stream(name, rate=fps, options={**_VIDEO_OPTIONS.get(name, {}),
                                                     **(extra or {})})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if name in ("mpeg4", "msmpeg4", "mpeg2video", "mpeg1video"):
        stream.bit_rate = 4_000_000  # the default 200 kb/s smears the background colour
    if gop:
        stream.codec_context.gop_size = gop
        if name == "libx264":  # x264 also inserts keyframes at scene cuts unless told not to
            stream.codec_context.options = {
                **stream.codec_context.options,
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    if vfr:
        stream.codec_context.time_base = VFR_TIME_BASE
    return stream


def _write_video(out: av.container.OutputContainer, stream: av.VideoStream,
                 duration: float, fps: int, size: tuple[int, int], vfr: bool) -> None:
    tb = VFR_TIME_BASE if vfr else Fraction(1, fps)
    for i, t in enumerate(frame_times(duration, fps, vfr)):
        frame = av.VideoFrame.from_ndarray(render_frame(i, size), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = round(Fraction(t) / tb) if vfr else i
        frame.time_base = tb
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_audio(out: av.container.OutputContainer, stream: av.AudioStream,
                 signal: np.ndarray) -> None:
    cc = stream.codec_context
    layout = stream.layout.name
    resampler = av.AudioResampler(format=cc.format.name, layout=layout, rate=cc.sample_rate,
                                  frame_size=cc.frame_size or 1024)
    chunk = 1024
    for start in range(0, signal.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(signal[:, start:start + chunk]), format="fltp", layout=layout)
        frame.sample_rate = cc.sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, cc.sample_rate)
        for part in resampler.resample(frame):
            out.mux(stream.encode(part))
    for part in resampler.resample(None):
        out.mux(stream.encode(part))
    out.mux(stream.encode(None))


def make_audio_only(path: str | Path, *, duration: float = STANDARD_DURATION,
                    sample_rate: int = 48000, channels: int = 2,
                    tone: Tone | Sequence[Tone] | None = STANDARD_TONE,
                    acodec: str | None = None) -> Path:
    """An audio-only file (.wav = PCM s16le, .m4a = AAC, .mp3, .ogg/.opus, .flac)."""
    return make_clip(path, duration=duration, video=False, sample_rate=sample_rate,
                     channels=channels, tone=tone, acodec=acodec)


def make_video_only(path: str | Path, *, duration: float = STANDARD_DURATION,
                    fps: int = STANDARD_FPS, size: tuple[int, int] = STANDARD_SIZE,
                    vcodec: str | None = None, vfr: bool = False,
                    gop: int | None = None) -> Path:
    """A clip with a video stream and no audio stream at all."""
    return make_clip(path, duration=duration, fps=fps, size=size, audio=False,
                     vcodec=vcodec, vfr=vfr, gop=gop)


def make_huge(path: str | Path, *, size: tuple[int, int] = (7680, 4320),
              frames: int = 2) -> Path:
    """A few 8K H.264 frames (x264 ultrafast, level chosen by x264): a memory/size test."""
    return make_clip(path, duration=frames / STANDARD_FPS, size=size, audio=False,
                     vcodec="libx264", video_options={"preset": "ultrafast"})


def standard_set(directory: str | Path) -> dict[str, Path]:
    """The clips the ``media_dir`` fixture provides, keyed by a short name.

    All are ``STANDARD_DURATION`` s, ``STANDARD_FPS`` fps, ``STANDARD_SIZE``, with
    ``STANDARD_TONE`` in the audio, except where the name says otherwise.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tone = STANDARD_TONE
    clips = {ext: make_clip(d / f"clip.{ext}", tone=tone)
             for ext in ("mp4", "mkv", "webm", "avi", "mpg", "mov")}
    clips["vfr_mp4"] = make_clip(d / "vfr.mp4", tone=tone, vfr=True)
    clips["audio_wav"] = make_audio_only(d / "audio.wav", tone=tone)
    clips["video_only_mp4"] = make_video_only(d / "video_only.mp4")
    return clips


def read_rgb(path: str | Path) -> np.ndarray:
    """A real photo (e.g. ``sample("bus_jpg")``) as an RGB uint8 array, as the models take it."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# --- damaged files -----------------------------------------------------------------------

def make_zero_byte(path: str | Path) -> Path:
    """An empty file, as left by a recorder that crashed before writing anything."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_text_as_mp4(path: str | Path) -> Path:
    """A plain text file with a video's name: the extension must not be trusted."""
    path = Path(path)
    path.write_text("This is not a video. It is a text file named like one.\n" * 20)
    return path


def truncate_copy(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first *fraction* of *src*: an interrupted download or recording.

    An MP4 written by PyAV/FFmpeg keeps its index (moov) at the end, so a truncated copy
    loses it and typically cannot be opened at all.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} outside 0..1")
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def corrupt_copy(src: str | Path, dst: str | Path, seed: int = 0) -> Path:
    """Copy *src* with random byte runs overwritten in its middle 60 %.

    The first and last 20 % (container header and, for MP4, the index) are kept, so the
    file still opens and the damage shows up as decode errors. Deterministic per *seed*:
    ``max(8, size // 20000)`` runs of 16..256 random bytes.
    """
    dst = Path(dst)
    shutil.copyfile(src, dst)
    data = bytearray(dst.read_bytes())
    lo, hi = int(len(data) * 0.2), int(len(data) * 0.8)
    if hi - lo < 256:
        raise ValueError(f"{src} is too small ({len(data)} bytes) to corrupt meaningfully")
    rng = random.Random(seed)
    for _ in range(max(8, len(data) // 20000)):
        run = rng.randint(16, 256)
        start = rng.randrange(lo, hi - run)
        data[start:start + run] = rng.randbytes(run)
    dst.write_bytes(bytes(data))
    return dst


BAD_KINDS = ("empty", "zero", "text", "dir", "missing", "truncated", "corrupt")


def make_bad(path: str | Path, kind: str, src: str | Path | None = None, *, fraction: float = 0.5,
             seed: int = 0) -> Path:
    """A file at *path* that is not a readable clip, of one of ``BAD_KINDS``: "empty" (or "zero",
    a zero-byte file), "text" (a text file named like a video), "dir" (a folder), "missing"
    (nothing there), "truncated" (the first *fraction* of *src*) or "corrupt" (*src* with byte
    runs overwritten, per *seed*)."""
    path = Path(path)
    if kind in ("empty", "zero"):
        make_zero_byte(path)
    elif kind == "text":
        make_text_as_mp4(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "truncated":
        truncate_copy(src, path, fraction)
    elif kind == "corrupt":
        corrupt_copy(src, path, seed=seed)
    elif kind != "missing":
        raise ValueError(f"unknown kind of bad file {kind!r}; one of {BAD_KINDS}")
    return path


def decode_mono(source: bytes | str | Path, rate: int = 16000) -> np.ndarray:
    """The first audio stream of a file (or of its bytes) as mono float32 at ``rate``."""
    import io

    out = []
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
        out += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(out).astype(np.float32)


def espeak(text: str, *, voice: str | None = None, pitch: int | None = None, wpm: int | None = None,
           rate: int = 16000) -> np.ndarray:
    """espeak-ng saying ``text`` (in ``voice`` at ``pitch``, ``wpm`` words a minute; espeak-ng's
    defaults where None): mono float32 at ``rate``. Raises RuntimeError without espeak-ng."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: apt-get install espeak-ng (the speech tests need it)")
    args = ([] if voice is None else ["-v", voice]) + ([] if pitch is None else ["-p", str(int(pitch))]) \
        + ([] if wpm is None else ["-s", str(int(wpm))])
    wav = subprocess.run(["espeak-ng", "--stdout", *args, text], capture_output=True, check=True, timeout=60).stdout
    return decode_mono(wav, rate)


def speak(text: str, rate: int = 16000, wpm: int | None = None) -> np.ndarray:
    """espeak-ng saying ``text``: mono float32 at ``rate`` (fails the test clearly without espeak-ng),
    at ``wpm`` words a minute (espeak-ng's default, 175, when None)."""
    import shutil

    import pytest

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: apt-get install espeak-ng (the speech tests need it)", pytrace=False)
    return espeak(text, wpm=wpm, rate=rate)


# --- lying headers and odd streams (tests/media/test_robust_media.py, tests/media/test_fuzz_media.py) ---

def patch_mkv_duration(src: str | Path, dst: str | Path, duration_ms: float) -> Path:
    """Copy a Matroska/WebM file with its Segment Info *Duration* (milliseconds at the
    default timecode scale) overwritten: a header that lies about the length."""
    import struct

    data = bytearray(Path(src).read_bytes())
    i = data.find(b"\x44\x89")  # EBML id of Duration, then its size byte (float of 4 or 8 bytes)
    if i < 0 or data[i + 2] not in (0x84, 0x88):
        raise ValueError(f"{src} has no Duration element to patch")
    if data[i + 2] == 0x88:
        data[i + 3:i + 11] = struct.pack(">d", duration_ms)
    else:
        data[i + 3:i + 7] = struct.pack(">f", duration_ms)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def patch_wav_header(src: str | Path, dst: str | Path, *, channels: int | None = None,
                     sample_rate: int | None = None) -> Path:
    """Copy a WAV file with its ``fmt`` chunk's channel count and/or sample rate replaced
    (the data chunk is unchanged): 255 channels, 0 channels, a rate of 2 GHz…"""
    import struct

    data = bytearray(Path(src).read_bytes())
    i = data.find(b"fmt ")
    if i < 0:
        raise ValueError(f"{src} has no fmt chunk")
    if channels is not None:
        data[i + 10:i + 12] = struct.pack("<H", channels)
    if sample_rate is not None:
        data[i + 12:i + 16] = struct.pack("<I", sample_rate)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def replace_bytes(src: str | Path, dst: str | Path, old: bytes, new: bytes) -> Path:
    """Copy *src* with every *old* replaced by *new* (same length: offsets stay valid), e.g.
    an ``avc1`` sample entry renamed to a codec tag no decoder knows."""
    if len(old) != len(new):
        raise ValueError("old and new must have the same length")
    data = Path(src).read_bytes()
    if old not in data:
        raise ValueError(f"{old!r} does not occur in {src}")
    dst = Path(dst)
    dst.write_bytes(data.replace(old, new))
    return dst


def make_bad_tags(path: str | Path, *, duration: float = 1.0) -> Path:
    """An audio file (mkv or mp4, AAC) whose title tags (container and stream) hold bytes
    that are not UTF-8, as some recorders and taggers write them."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        out.metadata["title"] = "QQQQ container title"
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "stereo"
        stream.metadata["title"] = "QQQQ stream title"
        _write_audio(out, stream, audio_signal(duration, 48000, 2, STANDARD_TONE))
    data = path.read_bytes()
    if data.count(b"QQQQ") < 1:
        raise ValueError(f"the muxer for {path.suffix} did not write the title tag")
    path.write_bytes(data.replace(b"QQQQ", b"\xff\xfe\xc3\x28"))
    return path


def make_sparse_video(path: str | Path, *, gap_s: float = 1e6, size: tuple[int, int] = (160, 120)) -> Path:
    """Two H.264 frames, the second ``gap_s`` seconds after the first (real timestamps, not
    a lying header): mp4/mov (track timescale 25) or mkv."""
    path = Path(path)
    ext = path.suffix.lower()
    opts = {"video_track_timescale": "25"} if ext in (".mp4", ".mov", ".m4v") else {}
    with av.open(str(path), "w", options=opts) as out:
        vs = out.add_stream("libx264", rate=25, options={"preset": "veryfast", "bf": "0"})
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        packets = []
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(render_frame(i, size), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            packets += vs.encode(frame)
        packets += vs.encode(None)
        for pkt in packets:
            if pkt.pts:  # the second frame: days later
                pkt.pts = pkt.dts = int(round(gap_s / pkt.time_base))
            out.mux(pkt)
    return path


def make_sparse_audio(path: str | Path, *, gap_s: float = 1e6, duration: float = 1.0) -> Path:
    """Matroska AAC: ``duration`` s of tone from 0 s, then the same again ``gap_s`` s later
    (real timestamps): a stream whose packets span days but hold two seconds of sound."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "mono"
        cc = stream.codec_context
        signal = audio_signal(duration, 48000, 1, (0.0, duration, 440.0, 0.5))
        packets = []
        for offset in (0, int(gap_s * 48000)):
            for start in range(0, signal.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal[:, start:start + 1024]),
                                                   format="fltp", layout="mono")
                frame.sample_rate = cc.sample_rate
                frame.pts, frame.time_base = offset + start, Fraction(1, 48000)
                packets += stream.encode(frame)
        packets += stream.encode(None)
        for pkt in packets:
            out.mux(pkt)
    return path


def cut_copy(src: str | Path, dst: str | Path, seconds: float) -> Path:
    """The first *seconds* of *src* as a new file of the same container, packets copied
    (no re-encoding, so a real clip keeps its real codecs): small real inputs for fuzzing."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=inp.format.name.split(",")[0]) as out:
        keep = [s for s in inp.streams if s.type in ("video", "audio")]
        outs = {s.index: out.add_stream_from_template(s) for s in keep}
        origin = (inp.start_time or 0) / 1e6
        for pkt in inp.demux(keep):
            if pkt.size == 0:
                continue
            if pkt.pts is not None and pkt.pts * pkt.time_base - origin >= seconds:
                continue
            pkt.stream = outs[pkt.stream.index]
            out.mux(pkt)
    return dst


def write_av(path: str | Path, frames, audio: np.ndarray, *, fps: int, rate: int, size: tuple[int, int]) -> Path:
    """An H.264 + AAC mono file from ``frames`` (rgb24 arrays of ``size``, one per 1/fps; any
    iterable, so a long scene can be rendered frame by frame) and mono float32 ``audio`` at
    ``rate``, interleaved as a camera or an editor writes it."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"preset": "veryfast"}
        as_ = c.add_stream("aac", rate=rate)
        as_.layout = "mono"
        i = 0
        for k, img in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts, fr.time_base = k, Fraction(1, fps)
            for p in vs.encode(fr):
                c.mux(p)
            while i < min(len(audio), (k + 1) * rate // fps):
                af = av.AudioFrame.from_ndarray(audio[None, i:i + 1024].copy(), format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = rate, i, Fraction(1, rate)
                for p in as_.encode(af):
                    c.mux(p)
                i += 1024
        for st in (vs, as_):
            for p in st.encode(None):
                c.mux(p)
    return Path(path)
