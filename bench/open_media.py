"""How fast an hour-long file opens, shows its waveform and seeks.

    .venv/bin/python bench/open_media.py [--seeks 200] [--minutes 60]

Builds (once, cached) a 1-hour 640×360 H.264/AAC file from the real Sintel trailer
(re-encoded at 15 fps with x264 defaults, so a keyframe every 250 frames, then looped by
remuxing), then prints Kestrel's numbers beside plain-PyAV baselines measured in the same
process, and their ratios:

- time to first frame: probe + decoder + first frame   vs  av.open + first decoded frame
- time to waveform overview (the app's first waveform) and to the exact peak pyramid
                                                        vs  decoding the whole audio track
- seek latency p50/p95 to random times                  vs  seek + decode forward, one thread
Goals (issue): first frame + overview ≤ 2 s, seek p95 ≤ 50 ms on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402

from core.media.audio import sparse_peaks  # noqa: E402
from core.jobs import HeadlessState  # noqa: E402
from core.media.decode import VideoDecoder, probe  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from core.media.waveform import WaveformRequest, build_waveform  # noqa: E402

CACHE = Path(os.environ.get("KESTREL_BENCH_CACHE", Path.home() / ".cache" / "kestrel" / "bench"))


def make_hour(minutes: int) -> Path:
    out = CACHE / f"sintel_loop_{minutes}min_640x360.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    unit = CACHE / "sintel_640x360_15fps.mp4"
    if not unit.exists():
        print("encoding one loop from the real Sintel trailer…", file=sys.stderr)
        src = av.open(str(sample_path("sintel")))
        dst = av.open(str(unit) + ".tmp.mp4", "w")
        vs = dst.add_stream("libx264", rate=15)
        vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
        as_ = dst.add_stream("aac", rate=48000)
        as_.layout = "stereo"
        rs = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        next_t = 0.0
        n = 0
        for frame in src.decode(src.streams.video[0], src.streams.audio[0]):
            if isinstance(frame, av.VideoFrame):
                if frame.time is None or frame.time + 1e-6 < next_t:
                    continue  # 24 → 15 fps
                next_t += 1 / 15
                f = frame.reformat(640, 360, format="yuv420p")
                f.pts, f.time_base = n, Fraction(1, 15)
                n += 1
                for p in vs.encode(f):
                    dst.mux(p)
            else:
                for o in rs.resample(frame):
                    o.pts = None
                    for p in as_.encode(o):
                        dst.mux(p)
        for s in (vs, as_):
            for p in s.encode():
                dst.mux(p)
        dst.close()
        src.close()
        os.replace(str(unit) + ".tmp.mp4", unit)
    print(f"remuxing the loop into {minutes} minutes…", file=sys.stderr)
    src = av.open(str(unit))
    loop_s = float(src.duration) / 1e6
    reps = int(np.ceil(minutes * 60 / loop_s))
    dst = av.open(str(out) + ".tmp.mp4", "w")
    ins = [src.streams.video[0], src.streams.audio[0]]
    outs = [dst.add_stream_from_template(s) for s in ins]
    for r in range(reps):
        src.seek(0)
        for pkt in src.demux(*ins):
            if pkt.dts is None:
                continue
            i = ins.index(pkt.stream)
            off = int(round(r * loop_s / pkt.time_base))
            pkt.pts += off
            pkt.dts += off
            pkt.stream = outs[i]
            dst.mux(pkt)
    dst.close()
    src.close()
    os.replace(str(out) + ".tmp.mp4", out)
    return out


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeks", type=int, default=200)
    ap.add_argument("--minutes", type=int, default=60)
    args = ap.parse_args()
    path = make_hour(args.minutes)
    info = probe(path, with_hash=False)
    print(f"file: {path.name}: {info.summary()}, {path.stat().st_size / 1e6:.0f} MB")
    rng = np.random.default_rng(1)
    targets = rng.uniform(0, info.duration_s - 1, args.seeks)

    # -- baselines: plain PyAV ---------------------------------------------------------
    t0 = time.perf_counter()
    c = av.open(str(path))
    next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
    base_first = time.perf_counter() - t0
    c.close()

    t0 = time.perf_counter()
    c = av.open(str(path))
    for f in c.decode(c.streams.audio[0]):
        f.to_ndarray()
    base_audio = time.perf_counter() - t0
    c.close()

    c = av.open(str(path))
    vs = c.streams.video[0]
    tb = float(vs.time_base)
    base_seeks = []
    for t in targets:
        s0 = time.perf_counter()
        c.seek(int(t / tb), stream=vs, backward=True)
        for f in c.decode(vs):
            if f.time >= t - 1e-6:
                f.to_ndarray(format="rgb24")
                break
        base_seeks.append(time.perf_counter() - s0)
    c.close()

    # -- Kestrel ----------------------------------------------------------------------
    t0 = time.perf_counter()
    info = probe(path)
    dec = VideoDecoder(path)
    dec.frame_at(0.0)
    k_first = time.perf_counter() - t0
    dec.close()

    t0 = time.perf_counter()
    sparse_peaks(path, 2048)
    k_overview = time.perf_counter() - t0

    t0 = time.perf_counter()
    build_waveform(WaveformRequest(str(path), sparse_above_s=1e9), HeadlessState())
    k_exact = time.perf_counter() - t0

    k_seeks = []
    with VideoDecoder(path) as dec:
        dec.frame_at(0)
        for t in targets:
            s0 = time.perf_counter()
            dec.frame_at(float(t))
            k_seeks.append(time.perf_counter() - s0)
        # scrubbing: small moves around one place, as dragging the playhead does
        scrub = []
        for t in 1800 + np.cumsum(rng.normal(0, 0.3, 100)):
            s0 = time.perf_counter()
            dec.frame_at(float(t))
            scrub.append(time.perf_counter() - s0)

    print()
    print(f"{'measure':42s} {'kestrel':>10s} {'baseline':>10s} {'ratio':>7s}")
    rows = [
        ("time to first frame (s)", k_first, base_first),
        ("time to waveform overview (s)", k_overview, base_audio),
        ("time to exact peak pyramid (s)", k_exact, base_audio),
        ("seek latency p50 (ms)", pct(k_seeks, 50), pct(base_seeks, 50)),
        ("seek latency p95 (ms)", pct(k_seeks, 95), pct(base_seeks, 95)),
    ]
    for name, k, b in rows:
        print(f"{name:42s} {k:10.3f} {b:10.3f} {k / b:7.2f}")
    print(f"{'scrub latency p50 / p95 (ms)':42s} {pct(scrub, 50):10.1f} {pct(scrub, 95):10.1f}")
    total = k_first + k_overview
    print(f"\nfirst frame + overview: {total:.2f} s (goal ≤ 2 s: {'met' if total <= 2 else 'NOT met'})")
    p95 = pct(k_seeks, 95)
    print(f"seek p95: {p95:.1f} ms (goal ≤ 50 ms: {'met' if p95 <= 50 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
