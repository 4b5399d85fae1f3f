"""Perception speed on this machine: each model's throughput and the analysis job's cost.

    .venv/bin/python bench/perception.py [--seconds 52]

On a real 640×360 clip (the Sintel trailer re-encoded by bench/open_media.py, or made
here), prints next to a decode-only baseline measured in the same run:
- frames per second of every available visual model, and real-time factor of audio models;
- the analysis job (detection + tracking at 2 fps sampling): compute time / media time, with the
  confirmation of detected objects (core/perception/confirm.py: linking and second looks) and
  without it (``AnalysisRequest(confirm=False)``, the baseline), alternated in the same run; the
  best of ``--repeats`` runs each.
Goals: detection + tracking at 2 fps ≤ 0.25 of real time on 2 cores (issue #7); confirmation
costs ≤ 1.3× the job without it (issue #17).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.open_media import CACHE, make_hour  # noqa: E402
from core.perception.analysis import AnalysisRequest, analyze, planned_frames  # noqa: E402
from core.media.audio import load_mono  # noqa: E402
from core.jobs import HeadlessState  # noqa: E402
from core.media.decode import VideoDecoder, probe  # noqa: E402
from models.catalogue import ModelError, load_catalogue, load_model, locate  # noqa: E402

FALL_MODEL = "fall_detection/models/best.pt"


def clip_640x360() -> Path:
    unit = CACHE / "sintel_640x360_15fps.mp4"
    if not unit.exists():
        make_hour(1)  # builds the unit clip on the way
    return unit


def user_weights() -> dict[str, str]:
    from models.catalogue import package_dir
    d = package_dir("fall_detection")
    return {"yolo-user": str(d.parent / FALL_MODEL)} if d and (d.parent / FALL_MODEL).exists() else {}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=52.0, help="how much of the clip to use")
    ap.add_argument("--frames", type=int, default=16, help="frames per model for the fps figures")
    ap.add_argument("--repeats", type=int, default=2, help="runs of the job per setting (the best counts)")
    ap.add_argument("--job-only", action="store_true", help="skip the per-model figures")
    args = ap.parse_args()
    path = clip_640x360()
    info = probe(path)
    span = min(args.seconds, info.duration_s)
    print(f"clip: {path.name}, {info.summary()}; using {span:.0f} s")

    # -- baseline: decoding the frames the job samples at 2 fps ------------------------------
    times = [k / 2.0 for k in range(planned_frames(0.0, span, 2.0))]  # the job's plan at 2 fps
    t0 = time.perf_counter()
    with VideoDecoder(path) as dec:
        frames = [dec.frame_at(float(t)).image for t in times]
    decode_s = time.perf_counter() - t0
    print(f"\nbaseline: decode {len(times)} frames at 2 fps sampling: {decode_s:.2f} s "
          f"({decode_s / span:.3f} of real time, {len(times) / decode_s:.0f} frames/s)")

    # -- each model ------------------------------------------------------------------------
    weights = user_weights()
    if not args.job_only:
        model_figures(frames, times, decode_s, span, path, weights, args.frames)
    job_figures(path, span, decode_s, args.repeats)
    return 0


def model_figures(frames, times, decode_s, span, path, weights, n_frames) -> None:
    print(f"\n{'model':28s} {'task':10s} {'throughput':>16s} {'vs decode':>10s}")
    audio = None
    for spec in load_catalogue().values():
        if spec.task not in ("detect", "faces", "ocr", "image-tags", "vad", "asr"):
            continue
        if not locate(spec, weights.get(spec.name)).available:
            print(f"{spec.name:28s} {spec.task:10s} {'not available':>16s}")
            continue
        try:
            m = load_model(spec, user_path=weights.get(spec.name))
        except ModelError as e:
            print(f"{spec.name:28s} {spec.task:10s} failed: {e}")
            continue
        if spec.task in ("vad", "asr"):
            if audio is None:
                audio = load_mono(path, 16000, 0.0, span)
            fn = m.segments if spec.task == "vad" else m.transcribe
            fn(audio[:16000])  # warm up
            t0 = time.perf_counter()
            fn(audio)
            dt = time.perf_counter() - t0
            print(f"{spec.name:28s} {spec.task:10s} {dt / span:12.3f} RTF {'':>10s}")
            continue
        batch = frames[:n_frames]
        call = {"detect": lambda b: m.detect(b), "faces": lambda b: m.faces(b),
                "ocr": lambda b: [m.read(f) for f in b], "image-tags": lambda b: m.tags(b)}[spec.task]
        call(batch[:1])  # warm up
        t0 = time.perf_counter()
        call(batch)
        dt = time.perf_counter() - t0
        fps = len(batch) / dt
        print(f"{spec.name:28s} {spec.task:10s} {fps:10.1f} fr/s {decode_s / len(times) / (dt / len(batch)):10.2f}")


def job_figures(path, span: float, decode_s: float, repeats: int) -> None:
    """The job (detection + tracking at 2 fps), confirmation off and on, alternated."""
    print()
    for models in (("ssd-mobilenet-v2-coco",), ("ssd-mobilenet-v2-coco", "mtcnn-faces")):
        req = AnalysisRequest(str(path), models=models, fps=2.0, end=span)
        for confirm in (False, True):  # warm: models loaded, the classifier held
            analyze(replace(req, end=2.0, confirm=confirm), HeadlessState())
        best: dict[bool, float] = {}
        cpu: dict[bool, float] = {}  # process CPU time: less swayed by other work on a shared machine
        for _ in range(max(1, repeats)):
            for confirm in (False, True):
                t0, c0 = time.perf_counter(), time.process_time()
                res = analyze(replace(req, confirm=confirm), HeadlessState())
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                best[confirm] = min(best.get(confirm, dt), dt)
                cpu[confirm] = min(cpu.get(confirm, dc), dc)
                if res.errors:
                    print(f"  errors: {res.errors}")
        off, on = best[False], best[True]
        name = "+".join(models)
        print(f"job {name} + tracking @ 2 fps, confirmation off: {off:.2f} s for {span:.0f} s → {off / span:.3f} "
              f"of real time (decode-only baseline {decode_s / span:.3f}, ×{off / decode_s:.1f})")
        print(f"job {name} + tracking @ 2 fps, confirmation on:  {on:.2f} s → {on / span:.3f} of real time; "
              f"on / off = {on / off:.3f}x   (goal ≤ 1.3x: {'met' if on / off <= 1.3 else 'NOT met'})")
        print(f"  CPU time (all threads): off {cpu[False]:.2f} s, on {cpu[True]:.2f} s: on / off = "
              f"{cpu[True] / cpu[False]:.3f}x")
        if models == ("ssd-mobilenet-v2-coco",):
            print(f"  goal ≤ 0.25 of real time (with confirmation): {'met' if on / span <= 0.25 else 'NOT met'}")
            out = res.outputs["ssd-mobilenet-v2-coco"]
            n = np.mean([len(d) for _t, d in out.frames])
            ok = sum(e["confirmed"] for f in (out.evidence or []) for e in f)
            print(f"  ({n:.1f} detections per sampled frame; {ok} of {sum(len(d) for _t, d in out.frames)} "
                  f"confirmed in the last run)")


if __name__ == "__main__":
    sys.exit(main())
