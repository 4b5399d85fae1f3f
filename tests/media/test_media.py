"""Decoding: frame-accurate seeks on real and generated clips, checked independently."""
from __future__ import annotations

import bisect
import os

import av
import cv2
import numpy as np
import pytest

import mediagen
from core.media.decode import MediaError, VideoDecoder, frame_index, frame_times, probe

REAL_VIDEOS = ["bikes", "failing_audio", "bbb_webm", "city_mpg", "rotated", "iscc_mkv", "iscc_avi",
               "iscc_mov"]


def _opencv_frames(path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Frames by number, read sequentially by OpenCV (its own FFmpeg, auto-rotation on)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    out, n = {}, 0
    last = max(wanted)
    while n <= last:
        ok, bgr = cap.read()
        if not ok:
            break
        if n in wanted:
            out[n] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        n += 1
    cap.release()
    return out


@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_seek_matches_independent_decode(sample, name):
    path = sample(name)
    info = probe(path)
    times = frame_times(path)
    assert len(times) > 10
    rng = np.random.default_rng(7)
    # times inside frames (not on their starts), in random order so seeks go both ways
    picks = sorted(set(rng.integers(0, len(times) - 1, 6).tolist()) | {0, len(times) - 2})
    targets = {i: (times[i] + times[i + 1]) / 2 for i in picks}
    ref = _opencv_frames(path, set(picks))
    with VideoDecoder(path, max_size=None) as dec:
        for i in rng.permutation(picks):
            t = targets[int(i)]
            f = dec.frame_at(t)
            assert frame_index(times, f.time) == i, (name, t, f.time)
            if int(i) in ref:
                a, b = f.image, ref[int(i)]
                assert a.shape == b.shape, (name, a.shape, b.shape)
                diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
                assert diff < 3.0, (name, int(i), diff)
    if info.video.rotation:
        w, h = info.display_size
        assert f.image.shape[:2] == (h, w)


def test_rotated_clip_is_turned(sample):
    info = probe(sample("rotated"))
    assert info.video.rotation in (90, 270)
    with VideoDecoder(sample("rotated"), max_size=None) as dec:
        img = dec.frame_at(0.5).image
    assert img.shape[0] > img.shape[1]  # stored landscape, shown portrait


def _stream_offset(path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.start_time * s.time_base) - float(c.start_time or 0) / 1e6


@pytest.mark.parametrize("clip", ["clip.mp4", "clip.mkv", "clip.webm", "clip.avi", "clip.mpg",
                                  "clip.mov", "vfr.mp4", "video_only.mp4"])
def test_generated_clips_every_frame_by_time(media_dir, clip):
    path = media_dir / clip
    vfr = clip.startswith("vfr")
    expected = mediagen.frame_times(mediagen.STANDARD_DURATION, mediagen.STANDARD_FPS, vfr=vfr)
    off = _stream_offset(path)
    idx = frame_times(path)
    assert len(idx) == len(expected)
    assert np.allclose(idx - off, expected, atol=2e-3)
    with VideoDecoder(path, max_size=None) as dec:
        # forward, including mid-frame times, then a backwards pass
        for t in list(np.arange(0, mediagen.STANDARD_DURATION, 0.037)) + [2.9, 0.5, 1.7, 0.0]:
            want = bisect.bisect_right(expected, t - off + 1e-6) - 1
            f = dec.frame_at(t)
            assert mediagen.decode_frame_index(f.image) == max(want, 0), (clip, t)


def test_stepping_backwards_uses_recent_frames(media_dir):
    path = media_dir / "clip.mp4"
    times = frame_times(path)
    with VideoDecoder(path, max_size=None) as dec:
        dec.frame_at(times[60])
        seeks = dec.seeks
        for i in range(59, 40, -1):
            assert mediagen.decode_frame_index(dec.frame_at(times[i]).image) == i
        # the first step back decodes the frames before it once; the rest come from the cache
        assert dec.seeks <= seeks + 1


def test_probe_streams(media_dir):
    a = probe(media_dir / "audio.wav")
    assert a.has_audio and not a.has_video and abs(a.duration_s - 3.0) < 0.05
    v = probe(media_dir / "video_only.mp4")
    assert v.has_video and not v.has_audio and v.video.width == 320
    m = probe(media_dir / "clip.webm")
    assert m.container == "webm" and m.has_audio and m.has_video
    with pytest.raises(MediaError, match="no video"):
        VideoDecoder(media_dir / "audio.wav")


def test_huge_resolution_is_scaled_for_display(tmp_path):
    path = mediagen.make_huge(tmp_path / "huge.mp4")
    info = probe(path)
    assert info.video.width == 7680
    with VideoDecoder(path) as dec:
        f = dec.frame_at(0)
    assert f.image.shape[1] <= 1920 and f.source_size == (7680, 4320)


@pytest.mark.parametrize("make", ["zero", "text", "dir", "missing", "truncated", "corrupt"])
def test_bad_files_give_clear_errors(tmp_path, media_dir, make):
    src = media_dir / "clip.mp4"
    p = mediagen.make_bad(tmp_path / "bad.mp4", make, src, fraction=0.4, seed=3)
    if make in ("truncated", "corrupt"):
        # The header may survive: then opening works and decoding the damaged part must
        # give frames or a clear MediaError, never another exception.
        try:
            info = probe(p)
        except MediaError as e:
            assert "bad.mp4" in str(e)
            return
        with VideoDecoder(p, max_size=None) as dec:
            for t in np.linspace(0, info.duration_s, 12):
                try:
                    dec.frame_at(t)
                except MediaError:
                    pass
        return
    with pytest.raises(MediaError) as e:
        probe(p)
    msg = str(e.value)
    assert "bad.mp4" in msg and len(msg) < 300


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file regardless of permissions")
def test_unreadable_file(tmp_path, media_dir):
    p = tmp_path / "locked.mp4"
    p.write_bytes((media_dir / "clip.mp4").read_bytes())
    p.chmod(0)
    with pytest.raises(MediaError, match="permission"):
        probe(p)
