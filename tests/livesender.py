"""Serve a media file as a live MPEG-TS stream over TCP on localhost, paced to real time.

    python tests/livesender.py CLIP PORT [--loop]

The first client to connect gets the stream (FFmpeg's own TCP listener); used by the tests
of live sources to play a real camera that can be stopped and restarted.
"""
from __future__ import annotations

import sys
import time

import av


def main() -> int:
    clip, port = sys.argv[1], int(sys.argv[2])
    loop = "--loop" in sys.argv
    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
    src = av.open(clip)
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    vout = out.add_stream("libx264", rate=int(round(float(vin.average_rate or 25))))
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.options = {"preset": "ultrafast", "tune": "zerolatency"}
    aout = None
    if ain is not None:
        aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
        aout.layout = "stereo"
    rs = av.AudioResampler(format="fltp", layout="stereo", rate=ain.codec_context.sample_rate) if ain else None
    t0 = time.time()
    offset = 0.0
    try:
        while True:
            src.seek(0)
            last = 0.0
            for frame in src.decode(*(s for s in (vin, ain) if s is not None)):
                if frame.time is None:
                    continue
                t = offset + frame.time
                last = max(last, frame.time)
                delay = t0 + t - time.time()
                if delay > 0:
                    time.sleep(delay)  # a camera delivers in real time
                if isinstance(frame, av.VideoFrame):
                    f = frame.reformat(format="yuv420p")
                    f.pts = None
                    for p in vout.encode(f):
                        out.mux(p)
                else:
                    for o in rs.resample(frame):
                        o.pts = None
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
