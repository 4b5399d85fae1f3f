"""Tests of tests/mediagen.py: generated clips read back with PyAV as documented."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen as mg

EXPECTED_CODECS = {  # file -> (video decoder, audio decoder)
    "clip.mp4": ("h264", "aac"), "clip.mov": ("h264", "aac"), "clip.mkv": ("h264", "aac"),
    "clip.webm": ("vp8", "opus"), "clip.avi": ("mpeg4", "pcm_s16le"),
    "clip.mpg": ("mpeg2video", "mp2"), "vfr.mp4": ("h264", "aac"),
    "video_only.mp4": ("h264", None), "audio.wav": (None, "pcm_s16le"),
}


def decode_video(path: Path) -> list[tuple[float, int, np.ndarray]]:
    """(seconds from the stream's start, decoded frame index, RGB) for every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = float((s.start_time or 0) * s.time_base)
        out = []
        for f in c.decode(s):
            rgb = f.to_ndarray(format="rgb24")
            out.append((float(f.time) - start, mg.decode_frame_index(rgb), rgb))
        return out


def decode_audio_mono(path: Path) -> tuple[np.ndarray, int]:
    """First channel as float32, resampled to nothing but a known sample format."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=s.layout.name, rate=rate)
        parts = [r.to_ndarray()[0] for f in c.decode(s) for r in resampler.resample(f)]
        parts += [r.to_ndarray()[0] for r in resampler.resample(None)]
    return np.concatenate(parts), rate


def rms(x: np.ndarray, rate: int, t0: float, t1: float) -> float:
    seg = x[int(t0 * rate):int(t1 * rate)]
    return float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))


def test_standard_set_has_every_file(media_dir: Path) -> None:
    assert sorted(p.name for p in media_dir.iterdir()) == sorted(EXPECTED_CODECS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CODECS))
def test_streams_and_duration(media_dir: Path, name: str) -> None:
    vcodec, acodec = EXPECTED_CODECS[name]
    with av.open(str(media_dir / name)) as c:
        assert [s.codec_context.name for s in c.streams.video] == ([vcodec] if vcodec else [])
        assert [s.codec_context.name for s in c.streams.audio] == ([acodec] if acodec else [])
        assert c.duration is not None
        assert abs(c.duration / av.time_base - mg.STANDARD_DURATION) < 0.1
        if vcodec:
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == mg.STANDARD_SIZE
        if acodec:
            a = c.streams.audio[0]
            assert (a.codec_context.sample_rate, a.codec_context.channels) == (48000, 2)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mov", "clip.mkv", "clip.webm",
                                  "clip.avi", "clip.mpg", "video_only.mp4"])
def test_every_frame_is_where_the_scheme_says(media_dir: Path, name: str) -> None:
    frames = decode_video(media_dir / name)
    n = round(mg.STANDARD_DURATION * mg.STANDARD_FPS)
    assert [idx for _, idx, _ in frames] == list(range(n))
    for t, idx, rgb in frames:
        assert t == pytest.approx(idx / mg.STANDARD_FPS, abs=1e-3), (name, idx)
        sig = mg.frame_signature(idx, mg.STANDARD_SIZE)
        x0, y0, x1, y1 = sig.background_box
        got = rgb[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).mean(axis=0)
        assert np.abs(got - sig.background).max() < 12, (name, idx, got, sig.background)
        bx0, by0, bx1, by1 = sig.bar_box
        assert rgb[by0 + 4:by1 - 4, bx0 + 1:bx1 - 1].mean() > 200, (name, idx)


def test_render_frame_matches_signature() -> None:
    size = (160, 96)
    for i in (0, 1, 77, 4095):
        img = mg.render_frame(i, size)
        assert img.shape == (96, 160, 3)
        assert mg.decode_frame_index(img) == i
        sig = mg.frame_signature(i, size)
        assert tuple(img[-1, 0]) == sig.background
    with pytest.raises(ValueError):
        mg.frame_signature(4096, size)
    with pytest.raises(ValueError):
        mg.render_frame(0, (95, 64))


def test_vfr_timestamps_really_vary(media_dir: Path) -> None:
    frames = decode_video(media_dir / "vfr.mp4")
    times = [t for t, _, _ in frames]
    assert [idx for _, idx, _ in frames] == list(range(len(frames)))
    expected = mg.frame_times(mg.STANDARD_DURATION, mg.STANDARD_FPS, vfr=True)
    assert times == pytest.approx(expected, abs=1e-3)
    gaps = {round(b - a, 3) for a, b in zip(times, times[1:])}
    assert gaps == {0.04, 0.1}
    with av.open(str(media_dir / "vfr.mp4")) as c:
        pts = [p.pts for p in c.demux(video=0) if p.pts is not None]
        tb = c.streams.video[0].time_base
    deltas = {round(float((b - a) * tb), 3) for a, b in zip(sorted(pts), sorted(pts)[1:])}
    assert deltas == {0.04, 0.1}, "the variation must be in the container, not only decoded"


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.webm", "clip.avi",
                                  "clip.mpg", "clip.mov", "audio.wav"])
def test_tone_is_only_where_asked(media_dir: Path, name: str) -> None:
    x, rate = decode_audio_mono(media_dir / name)
    start, end, _freq, amp = mg.STANDARD_TONE
    sine_rms = amp / np.sqrt(2)
    assert rms(x, rate, start + 0.1, end - 0.1) == pytest.approx(sine_rms, rel=0.1)
    assert rms(x, rate, 0.0, start - 0.1) < 0.01
    assert rms(x, rate, end + 0.1, mg.STANDARD_DURATION - 0.1) < 0.01


def test_tone_frequency_and_several_tones(tmp_path: Path) -> None:
    tones = [(0.2, 0.6, 1000.0, 0.3), (1.2, 1.6, 250.0, 0.6)]
    path = mg.make_audio_only(tmp_path / "two.wav", duration=2.0, channels=1, tone=tones)
    x, rate = decode_audio_mono(path)
    assert len(x) == 2 * rate
    for t0, freq in ((0.2, 1000.0), (1.2, 250.0)):
        seg = x[int(t0 * rate):int((t0 + 0.4) * rate)]
        peak = np.fft.rfftfreq(len(seg), 1 / rate)[np.argmax(np.abs(np.fft.rfft(seg)))]
        assert peak == pytest.approx(freq, abs=5)
    expected = mg.audio_signal(2.0, rate, 1, tones)[0]
    assert np.abs(expected - x).max() < 1e-3  # PCM: only 16-bit rounding


@pytest.mark.parametrize("ext,codec", [("m4a", "aac"), ("mp3", "mp3float")])
def test_compressed_audio_only(tmp_path: Path, ext: str, codec: str) -> None:
    path = mg.make_audio_only(tmp_path / f"a.{ext}", duration=1.5)
    with av.open(str(path)) as c:
        assert not c.streams.video
        assert c.streams.audio[0].codec_context.name == codec
        assert abs(c.duration / av.time_base - 1.5) < 0.1


def test_gop_gives_exact_keyframe_interval(tmp_path: Path) -> None:
    path = mg.make_video_only(tmp_path / "gop.mp4", duration=2.0, gop=10)
    with av.open(str(path)) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert keys == [0, 10, 20, 30, 40]


@pytest.mark.slow
def test_huge_frames(tmp_path: Path) -> None:
    path = mg.make_huge(tmp_path / "huge.mp4")
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (7680, 4320)
        frames = list(c.decode(v))
    assert [mg.decode_frame_index(f.to_ndarray(format="rgb24")) for f in frames] == [0, 1]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="variable frame-rate"):
        mg.make_clip(tmp_path / "x.avi", vfr=True)
    with pytest.raises(ValueError, match="cannot encode 44100 Hz"):
        mg.make_clip(tmp_path / "x.webm", sample_rate=44100)
    with pytest.raises(ValueError, match="no default video codec"):
        mg.make_clip(tmp_path / "x.xyz")
    assert not list(tmp_path.iterdir()), "refused clips leave no file behind"


def test_damage_helpers(media_dir: Path, tmp_path: Path) -> None:
    src = media_dir / "clip.mp4"
    data = src.read_bytes()

    empty = mg.make_zero_byte(tmp_path / "empty.mp4")
    assert empty.stat().st_size == 0

    text = mg.make_text_as_mp4(tmp_path / "text.mp4")
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(text))

    half = mg.truncate_copy(src, tmp_path / "half.mp4")
    assert half.read_bytes() == data[:len(data) // 2]

    bad = mg.corrupt_copy(src, tmp_path / "bad.mp4", seed=3)
    damaged = bad.read_bytes()
    assert len(damaged) == len(data)
    lo, hi = int(len(data) * 0.2), int(len(data) * 0.8)
    assert damaged[:lo] == data[:lo] and damaged[hi:] == data[hi:]
    assert damaged[lo:hi] != data[lo:hi]
    again = mg.corrupt_copy(src, tmp_path / "bad2.mp4", seed=3).read_bytes()
    assert again == damaged, "same seed, same damage"
    assert mg.corrupt_copy(src, tmp_path / "bad3.mp4", seed=4).read_bytes() != damaged
    with av.open(str(bad)) as c:  # header and index intact: it still opens
        assert c.streams.video[0].codec_context.name == "h264"


def test_frame_times_cfr_and_vfr() -> None:
    assert mg.frame_times(0.2, 25) == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    vfr = mg.frame_times(0.5, 25, vfr=True)
    assert vfr == pytest.approx([0.0, 0.04, 0.14, 0.18, 0.28, 0.32, 0.42, 0.46])
    assert all(Fraction(t).limit_denominator(90000) * 90000 % 1 == 0 for t in vfr)
