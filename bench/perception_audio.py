"""How fast the offline perception models run on real media, next to plain decoding.

    .venv/bin/python bench/perception_audio.py [--frames 24] [--repeats 3] [--no-base]

On the real Sintel trailer (52 s, dialogue over music), in one process:

- audio: decode-only baseline (AudioReader → mono, then resample to 16 kHz), then the
  real-time factor (processing seconds per second of audio; < 1 is faster than real
  time) of Silero VAD, Whisper tiny.en and Whisper base over the whole track;
- frames: decode-only baseline (VideoDecoder.frame_at at 640×360) for ``--frames``
  evenly spaced frames, then RapidOCR and EfficientNet-Lite3 tags per frame.

Load times are printed separately (the first whisper-base load also assembles its split
model.bin into the model cache). Timings are medians of ``--repeats`` runs for the audio
models and medians/p95 over frames for the image ones.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.media.audio import AudioReader  # noqa: E402
from core.media.decode import VideoDecoder  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from models.catalogue import load_model  # noqa: E402

SR = 16000


def to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono float32 to 16 kHz with FFmpeg's swresample (through PyAV)."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate
    rs = av.AudioResampler(format="flt", layout="mono", rate=SR)
    out = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(out).astype(np.float32)


def timed(fn, repeats: int = 1):
    """(median seconds, last result) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-base", action="store_true", help="skip Whisper base (the slowest)")
    args = ap.parse_args(argv)

    path = sample_path("sintel")
    with AudioReader(path) as r:
        dur, rate = r.duration, r.sample_rate
        t_dec, mono = timed(lambda: r.read(0, dur, mono=True)[0], args.repeats)
    t_rs, audio = timed(lambda: to_16k(mono, rate), args.repeats)
    print(f"sintel: {dur:.1f} s audio at {rate} Hz → {audio.size / SR:.1f} s at 16 kHz")
    print(f"{'audio step':<28}{'load s':>8}{'run s':>8}{'RTF':>8}   result")
    print(f"{'decode (baseline)':<28}{'':>8}{t_dec:>8.3f}{t_dec / dur:>8.4f}")
    print(f"{'resample to 16 kHz':<28}{'':>8}{t_rs:>8.3f}{t_rs / dur:>8.4f}")

    t_load, vad = timed(lambda: load_model("silero-vad"))
    t_run, segs = timed(lambda: vad.segments(audio), args.repeats)
    speech = sum(s.end - s.start for s in segs)
    print(f"{'VAD silero-vad':<28}{t_load:>8.2f}{t_run:>8.3f}{t_run / dur:>8.4f}   "
          f"{len(segs)} segments, {speech:.1f} s speech")

    for name in ("whisper-tiny",) + (() if args.no_base else ("whisper-base",)):
        t_load, asr = timed(lambda: load_model(name))
        reps = 1 if name == "whisper-base" else max(1, args.repeats - 1)
        t_run, out = timed(lambda: asr.transcribe(audio, language="en"), reps)
        text = " ".join(s.text for s in out)
        print(f"{'ASR ' + name:<28}{t_load:>8.2f}{t_run:>8.3f}{t_run / dur:>8.4f}   "
              f"{len(out)} segments: {text[:70]!r}…")

    with VideoDecoder(path, max_size=(640, 360)) as vd:
        times = np.linspace(0.5, vd.duration - 1.0, args.frames)
        dec, frames = [], []
        for t in times:
            t0 = time.perf_counter()
            frames.append(vd.frame_at(float(t)).image)
            dec.append(time.perf_counter() - t0)
    h, w = frames[0].shape[:2]
    print(f"\n{args.frames} frames at {w}×{h}")
    print(f"{'frame step':<28}{'load s':>8}{'p50 ms':>8}{'p95 ms':>8}   result")
    print(f"{'decode (baseline, seeking)':<28}{'':>8}{statistics.median(dec) * 1e3:>8.1f}"
          f"{p95(dec) * 1e3:>8.1f}")

    t_load, ocr = timed(lambda: load_model("rapidocr"))
    ocr.read(frames[0])  # the first call allocates onnxruntime's buffers
    per, found = [], 0
    for f in frames:
        t, regions = timed(lambda: ocr.read(f))
        per.append(t)
        found += len(regions)
    print(f"{'OCR rapidocr':<28}{t_load:>8.2f}{statistics.median(per) * 1e3:>8.1f}{p95(per) * 1e3:>8.1f}   "
          f"{found} text lines in {len(frames)} frames")

    t_load, tagger = timed(lambda: load_model("efficientnet-lite3"))
    tagger.tags(frames[:1])
    per, top = [], []
    for f in frames:
        t, tags = timed(lambda: tagger.tags([f], top_k=1))
        per.append(t)
        top.append(tags[0][0].label)
    common = max(set(top), key=top.count)
    print(f"{'tags efficientnet-lite3':<28}{t_load:>8.2f}{statistics.median(per) * 1e3:>8.1f}"
          f"{p95(per) * 1e3:>8.1f}   most frequent top-1: {common!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
