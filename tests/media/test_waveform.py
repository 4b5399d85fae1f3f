"""Audio decoding and the peak pyramid, checked against samples decoded independently."""
from __future__ import annotations

import av
import numpy as np
import pytest

import mediagen
from core.media.audio import AudioReader, sparse_peaks
from core.jobs import Cancelled, HeadlessState
from core.media.waveform import BASE_BLOCK, FACTOR, PeakPyramid, PyramidBuilder, WaveformRequest, build_waveform


def _decode_all(path) -> tuple[np.ndarray, int]:
    """Every sample, decoded the plainest way (no seeking): [channels, n].

    Only the first frame's timestamp is used, to put sample 0 at the container's start
    as Kestrel does (a webm's audio may begin a few ms in).
    """
    chunks = []
    first = None
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        origin = float(c.start_time or 0) / 1e6
        rs = av.AudioResampler(format="fltp", layout=s.layout, rate=s.rate)
        for frame in c.decode(s):
            if first is None and frame.pts is not None:
                first = int(round((frame.time - origin) * s.rate))
            for o in rs.resample(frame):
                chunks.append(o.to_ndarray())
        x = np.concatenate(chunks, axis=1).astype(np.float32)
        if first and first > 0:
            x = np.concatenate([np.zeros((x.shape[0], first), np.float32), x], axis=1)
        return x, s.rate


def _ref_peaks(x: np.ndarray) -> np.ndarray:
    n = x.shape[1] // BASE_BLOCK
    rows = np.concatenate([x, x.mean(axis=0, keepdims=True)], axis=0)[:, :n * BASE_BLOCK]
    b = rows.reshape(rows.shape[0], n, BASE_BLOCK)
    return np.stack([b.min(axis=2), b.max(axis=2)], axis=-1)


@pytest.mark.parametrize("name", ["failing_audio", "bbb_6ch", "crunching_mp3", "bbb_webm", "sintel"])
def test_peaks_match_decoded_samples(sample, name):
    path = sample(name)
    x, sr = _decode_all(path)
    pyr = build_waveform(WaveformRequest(str(path), sparse_above_s=1e9), HeadlessState())
    assert pyr.complete and pyr.sample_rate == sr and pyr.channels == x.shape[0]
    ref = _ref_peaks(x)
    base = pyr.levels[0]
    n = min(ref.shape[1], base.shape[1])
    assert n >= ref.shape[1] - 2
    err = np.abs(base[:, :n] - ref[:, :n]).max()
    assert err < 1e-4, (name, err)
    # every level is the reduction of the one below
    for lo, hi in zip(pyr.levels, pyr.levels[1:]):
        m = lo.shape[1] // FACTOR
        g = lo[:, :m * FACTOR].reshape(lo.shape[0], m, FACTOR, 2)
        assert np.allclose(hi[:, :m, 0], g[..., 0].min(axis=2))
        assert np.allclose(hi[:, :m, 1], g[..., 1].max(axis=2))


def test_tone_lands_where_it_was_put(media_dir):
    pyr = build_waveform(WaveformRequest(str(media_dir / "clip.mp4")), HeadlessState())
    start, end, _f, amp = mediagen.STANDARD_TONE
    times, mins, maxs = pyr.window(0, 0, pyr.duration, row=-1)
    loud = times[maxs > amp / 2]
    assert abs(loud.min() - start) < 0.05 and abs(loud.max() - end) < 0.05
    assert 0.45 < maxs.max() < 0.55


def test_window_read_matches_whole_decode(sample):
    path = sample("failing_audio")
    x, sr = _decode_all(path)
    with AudioReader(path) as r:
        for t0 in (0.0, 1.234, 3.5):
            w = r.read(t0, t0 + 0.2)
            a = int(round(t0 * sr))
            ref = x[:, a:a + w.shape[1]]
            # the container may place the first sample a few samples off zero
            best = min(np.abs(w[:, k:] - ref[:, :ref.shape[1] - k]).max() for k in range(0, 64))
            best = min(best, min(np.abs(w[:, :w.shape[1] - k] - ref[:, k:]).max() for k in range(0, 64)))
            assert best < 1e-3, t0


def test_failing_audio_covers_the_whole_file(sample):
    """The phone clip's audio stops early: the waveform ends there, no crash, no invented sound."""
    path = sample("failing_audio")
    pyr = build_waveform(WaveformRequest(str(path)), HeadlessState())
    assert pyr.duration > 1.0


def test_gap_in_timestamps_becomes_silence():
    b = PyramidBuilder(1000, 1)
    b.feed(0, np.ones((1, 512), np.float32))
    b.feed(1024, np.ones((1, 512), np.float32))  # 512 samples missing
    p = b.snapshot(final=True)
    assert p.total_samples == 1536
    assert p.levels[0][0, 2, 1] == 0.0 and p.levels[0][0, 4, 1] == 1.0


def test_sparse_overview_and_cancel(media_dir):
    peaks, sr = sparse_peaks(media_dir / "clip.mp4", 64)
    assert peaks.shape == (3, 64, 2) and sr == 48000
    assert peaks[:, :, 1].max() > 0.3  # it saw the tone
    got = []
    st = HeadlessState(on_partial=got.append)
    pyr = build_waveform(WaveformRequest(str(media_dir / "clip.mp4"), sparse_above_s=0.0), st)
    assert got and got[0].approximate and pyr.complete and not pyr.approximate
    st2 = HeadlessState()
    st2.cancel()
    with pytest.raises(Cancelled):
        build_waveform(WaveformRequest(str(media_dir / "clip.mp4")), st2)


def test_pyramid_roundtrip_arrays():
    b = PyramidBuilder(8000, 2)
    rng = np.random.default_rng(0)
    b.feed(0, rng.uniform(-1, 1, (2, 8000 * 300)).astype(np.float32))
    p = b.snapshot(final=True)
    arrays = [a for _k, a in sorted(p.to_arrays().items(), key=lambda kv: int(kv[0][1:]))]
    q = PeakPyramid.from_arrays(p.meta(), arrays)
    assert len(q.levels) == len(p.levels) > 1
    assert np.allclose(q.levels[0], p.levels[0], atol=1e-3)
    assert q.level_for(10) == -1 and q.level_for(BASE_BLOCK) == 0
    assert q.level_for(BASE_BLOCK * FACTOR ** 2) == 2
