"""Serve a media file as a live MPEG-TS stream over TCP on localhost, paced to real time.

    python tests/livesender.py CLIP PORT [--loop] [--start SECONDS]

The first client to connect gets the stream (FFmpeg's own TCP listener); used by the tests
of live sources to play a real camera that can be stopped and restarted. ``--start`` begins
the stream at that second of the clip. Once a client is connected, the sender prints
``t0 WALL`` (``time.time()`` at which the clip's ``--start`` second is due on the wire; the
clip's second ``s`` is sent at ``WALL + s - start``), so a receiver can measure its latency.
Frames carry the stream's own clock (pts) and the sound keeps its channel layout and level.
"""
from __future__ import annotations

import sys
import time
from fractions import Fraction

import av


def main() -> int:
    clip, port = sys.argv[1], int(sys.argv[2])
    loop = "--loop" in sys.argv
    start = float(sys.argv[sys.argv.index("--start") + 1]) if "--start" in sys.argv else 0.0
    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
    src = av.open(clip)
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    vrate = int(round(float(vin.average_rate or 25)))
    vout = out.add_stream("libx264", rate=vrate)
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.options = {"preset": "ultrafast", "tune": "zerolatency"}
    aout = None
    if ain is not None:
        aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
        aout.layout = layout = "mono" if ain.codec_context.channels == 1 else "stereo"  # levels as they are
    rs = av.AudioResampler(format="fltp", layout=layout, rate=ain.codec_context.sample_rate) if ain else None
    t0 = time.time()
    print(f"t0 {t0:.6f}", flush=True)
    offset = 0.0
    vpts, apts = -1, 0
    try:
        while True:
            src.seek(int(start / vin.time_base), stream=vin) if start else src.seek(0)
            last = 0.0
            for frame in src.decode(*(s for s in (vin, ain) if s is not None)):
                if frame.time is None or frame.time < start - 1e-6:
                    continue
                t = offset + frame.time - start
                last = max(last, frame.time - start)
                delay = t0 + t - time.time()
                if delay > 0:
                    time.sleep(delay)  # a camera delivers in real time
                if isinstance(frame, av.VideoFrame):
                    f = frame.reformat(format="yuv420p")
                    f.pts, f.time_base = round(t * vrate), Fraction(1, vrate)  # the stream's own clock
                    if f.pts <= vpts:
                        continue
                    vpts = f.pts
                    for p in vout.encode(f):
                        out.mux(p)
                else:
                    for o in rs.resample(frame):
                        o.pts, o.time_base = apts, Fraction(1, o.sample_rate)
                        apts += o.samples
                        for p in aout.encode(o):
                            out.mux(p)
            offset += last
            if not loop:
                break
    except (BrokenPipeError, av.error.FFmpegError, OSError):
        return 0
    finally:
        try:
            out.close()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
