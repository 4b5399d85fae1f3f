"""Phantom rate and recall of object confirmation, measured through the real analysis job
(core/perception/analysis.py with core/perception/confirm.py), SSD at its default threshold.

    .venv/bin/python bench/phantoms.py [--minutes 10] [--fps 2] [--learn-minutes 1]

Empty scenes: real frames with nothing in them (a meadow and trees, a stream with plants, snowy
mountains, a desert, night towers, a white wall — frames of the sample clips, checked by eye),
held static for ``--minutes`` with sensor-like noise (Gaussian, σ 3 levels) and a slow light
change (±4 % gain, a small offset drift), written as a video file (H.264, one frame per sample)
and analysed by ``analyze`` as the window and ``main.py analyze`` do. Every object there is a
phantom. Three runs per scene, in the same process: the baseline (``confirm=False``: what the
timeline showed before — each class's presence intervals), confirmation on, and confirmation on
with the scene's confusions learned (``core.perception.ops.learn_confusions``, the window's "learn
this scene's confusions") from another ``--learn-minutes`` of the same view (other noise) and
passed through the request, as the window passes a project's stored ones. Reported per 10
minutes: raw detections, baseline objects (presence intervals), confirmed objects (distinct
confirmed tracks; goal 0).

Object scenes: sample clips with real people, cars, a bicycle, an airliner (bikes, the phone
video, Chaplin, Sintel) analysed over a range, and slow pans with noise over real photos
(bus.jpg, zidane.jpg, a street) written as files. Ground truth is a hand-made list of (clip,
interval, class) for objects that are plainly there; recall is the share of those the job finds
at all with confirmation off (before) and with a confirmed box (after); the loss is relative to
before (goal ≤ 5 %).

Cost: the job's compute time with confirmation over without, summed over the same scenes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jobs import HeadlessState  # noqa: E402
from core.media.decode import VideoDecoder  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from core.perception import ops  # noqa: E402
from core.perception.analysis import AnalysisRequest, analyze, tracks_for  # noqa: E402
from core.perception.confirm import is_confirmed  # noqa: E402

SSD = "ssd-mobilenet-v2-coco"
SIZE = (640, 360)
# (sample, time s): frames with no COCO object in them (looked at, one by one)
EMPTY = [("bbb_webm", 6.0, "meadow and trees"), ("bbb_webm", 12.0, "stream with plants"),
         ("sintel", 3.0, "snowy mountains"), ("sintel", 40.0, "desert dunes"),
         ("city_mpg", 1.0, "towers at night"), ("bikes", 0.5, "white wall")]
# (clip, start, end): a stretch sampled at the analysis rate; truth: (start, end, class)
CLIPS = [("bikes", 0.0, 10.0, [(1.2, 3.04, "car"), (3.04, 5.48, "car"), (5.48, 7.48, "car"),
                               (7.48, 9.68, "bicycle")]),
         ("failing_audio", 0.0, 11.0, [(0.0, 3.0, "airplane"), (4.0, 9.0, "person")]),
         ("chaplin", 0.0, 9.6, [(0.0, 9.6, "person")]),
         ("sintel", 5.0, 32.0, [(5.5, 9.0, "person"), (12.0, 17.0, "person"), (22.0, 24.0, "person"),
                                (28.5, 31.0, "person")])]
PANS = [("bus_jpg", 20.0, ["bus", "person"]), ("zidane_jpg", 20.0, ["person", "tie"]),
        ("vacation_jpg", 20.0, ["car"])]


def noisy(base: np.ndarray, i: int, seed: int) -> np.ndarray:
    """Frame ``i`` of a static scene: the base frame with sensor noise and a slow light change."""
    rng = np.random.default_rng(seed * 1_000_003 + i)
    gain = 1.0 + 0.04 * np.sin(i / 37.0) + 0.01 * np.sin(i / 5.3)
    out = base.astype(np.float32) * gain + 2.0 * np.sin(i / 91.0) + rng.normal(0.0, 3.0, base.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def still(name: str, t: float) -> np.ndarray:
    with VideoDecoder(sample_path(name), max_size=SIZE) as dec:
        return dec.frame_at(t).image


def pan_frames(name: str, seconds: float, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """A slow pan over a real photo: a window of 80 % of it sliding across, with noise."""
    import cv2

    img = cv2.cvtColor(cv2.imread(str(sample_path(name))), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    cw, ch = int(w * 0.8), int(h * 0.8)
    n = int(seconds * fps)
    for i in range(n):
        x = int((w - cw) * i / max(1, n - 1))
        y = int((h - ch) * 0.5 * (1 + np.sin(i / 10.0)) / 2)
        crop = cv2.resize(img[y:y + ch, x:x + cw], (SIZE[0], int(SIZE[0] * ch / cw)), interpolation=cv2.INTER_AREA)
        yield i / fps, noisy(crop, i, 7)


def write_clip(path: Path, frames: Iterator[tuple[float, np.ndarray]], fps: float) -> Path:
    """The frames as an H.264 file at ``fps`` (one frame per analysis sample)."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        stream = None
        for _t, img in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height, stream.pix_fmt = img.shape[1] // 2 * 2, img.shape[0] // 2 * 2, "yuv420p"
                stream.options = {"crf": "18"}
            img = np.ascontiguousarray(img[:stream.height, :stream.width])
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


class Job:
    """Runs the analysis job (SSD only) and keeps its compute time, per confirmation setting."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.seconds = {"off": 0.0, "on": 0.0, "on+scene": 0.0}

    def boxes(self, path: Path, start: float = 0.0, end: float | None = None, *, confirm: bool = True,
              confusions: tuple = ()) -> tuple[list, list]:
        """(box items, presence tracks) of one run."""
        req = AnalysisRequest(str(path), models=(SSD,), fps=self.fps, start=start, end=end, confirm=confirm,
                              confusions=confusions)
        t0 = time.perf_counter()
        res = analyze(req, HeadlessState())
        self.seconds["on+scene" if confusions else "on" if confirm else "off"] += time.perf_counter() - t0
        out = res.outputs[SSD]
        if out.error:
            raise SystemExit(out.error)
        tracks = tracks_for(out, 1.0 / self.fps)
        return ([it for tr in tracks if tr.kind == "boxes" for it in tr.items],
                [tr for tr in tracks if tr.kind == "detections"])


def confirmed_objects(boxes: list) -> dict[int, str]:
    """Distinct confirmed objects (the job's tracks): key → label."""
    return {it.data["evidence"]["object"]: it.label for it in boxes if is_confirmed(it.data)}


def empty_scenes(job: Job, folder: Path, minutes: float, learn_minutes: float) -> list[tuple]:
    rows = []
    fps = job.fps
    n, n_learn = int(minutes * 60 * fps), int(learn_minutes * 60 * fps)
    per10 = 10.0 / minutes
    for k, (name, t, what) in enumerate(EMPTY):
        base = still(name, t)
        scene = write_clip(folder / f"empty{k}.mp4", ((i / fps, noisy(base, i, k)) for i in range(n)), fps)
        normal = write_clip(folder / f"normal{k}.mp4", ((i / fps, noisy(base, i, 100 + k)) for i in range(n_learn)), fps)
        learned = ops.learn_confusions(ops.LearnRequest(str(normal), SSD, fps), HeadlessState())
        sc = tuple(ops.add_confusions(_Settings(), learned.confusions).entries)  # stored suppressed, as the panel does
        raw, presence = job.boxes(scene, confirm=False)
        on, _ = job.boxes(scene, confirm=True)
        learnt, _ = job.boxes(scene, confirm=True, confusions=sc)
        objs, objs2 = confirmed_objects(on), confirmed_objects(learnt)
        why = sorted({f"{it.label}: {it.data['evidence']['reason']}" for it in on if is_confirmed(it.data)})
        rows.append((f"{name}@{t:g} {what}", len(raw) * per10, sum(len(tr.items) for tr in presence) * per10,
                     len(objs) * per10, len(objs2) * per10, "; ".join(why)[:200],
                     ", ".join(c.label for c in sc if c.suppressed)))
    return rows


class _Settings:
    """A project's settings, in memory (ops.add_confusions stores the scene's list there)."""

    def __init__(self) -> None:
        self.values: dict = {}

    def get_setting(self, key, default=None):
        return self.values.get(key, default)

    def set_setting(self, key, value) -> None:
        self.values[key] = value


def object_scenes(job: Job, folder: Path) -> tuple[int, int, int, list[str]]:
    truth, before, after, notes = 0, 0, 0, []
    fps = job.fps
    scenes = [(f"{n} {a:g}-{b:g}s", sample_path(n), a, b, gt) for n, a, b, gt in CLIPS]
    for n, secs, cls in PANS:
        path = write_clip(folder / f"pan_{n}.mp4", pan_frames(n, secs, fps), fps)
        scenes.append((f"{n} pan", path, 0.0, None, [(0.0, secs, c) for c in cls]))
    for title, path, a0, b0, gt in scenes:
        raw, _ = job.boxes(path, a0, b0, confirm=False)
        on, _ = job.boxes(path, a0, b0, confirm=True)
        for a, b, cls in gt:
            found = any(it.label == cls and a <= it.start < b for it in raw)
            kept = any(it.label == cls and a <= it.start < b and is_confirmed(it.data) for it in on)
            truth, before, after = truth + 1, before + found, after + kept
            if found and not kept:
                why = sorted({it.data["evidence"]["reason"] for it in on if it.label == cls and a <= it.start < b})
                notes.append(f"{title} {cls} {a:g}-{b:g}s lost: {why[:2]}")
            elif not found:
                notes.append(f"{title} {cls} {a:g}-{b:g}s: the detector never finds it")
    return truth, before, after, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each empty scene")
    ap.add_argument("--learn-minutes", type=float, default=1.0, help="normal footage to learn confusions from")
    ap.add_argument("--fps", type=float, default=2.0)
    args = ap.parse_args()
    job = Job(args.fps)
    print(f"{SSD} through the analysis job at {args.fps:g} frames/s; empty scenes of {args.minutes:g} min each, "
          f"confusions learned from {args.learn_minutes:g} min of the same view")
    with tempfile.TemporaryDirectory(prefix="kestrel-phantoms-") as tmp:
        folder = Path(tmp)
        rows = empty_scenes(job, folder, args.minutes, args.learn_minutes)
        print(f"\n{'empty scene':32} {'raw dets':>9} {'baseline':>9} {'confirmed':>9} {'+scene':>7}   per 10 min")
        tot = np.zeros(4)
        for name, d, base, c, c2, why, sup in rows:
            tot += (d, base, c, c2)
            print(f"{name:32} {d:9.1f} {base:9.1f} {c:9.1f} {c2:7.1f}" + (f"   confirmed: {why}" if why else "")
                  + (f"   learned: {sup}" if sup else ""))
        k = len(rows)
        print(f"{'mean per scene':32} {tot[0] / k:9.1f} {tot[1] / k:9.1f} {tot[2] / k:9.1f} {tot[3] / k:7.1f}")
        print(f"\nPHANTOMS per 10 min (mean over {k} empty scenes, through the job): baseline (confirmation off) "
              f"{tot[1] / k:.1f} objects ({tot[0] / k:.0f} detections); confirmed {tot[2] / k:.2f}; confirmed with "
              f"the scene's learned confusions {tot[3] / k:.2f}   (goal 0)")
        truth, before, after, notes = object_scenes(job, folder)
    print(f"\nRECALL on object scenes ({truth} hand-labelled objects): baseline {before}/{truth}, "
          f"confirmed {after}/{truth}; lost {1 - after / max(before, 1):.1%} of what the detector found   (goal <= 5 %)")
    for n in notes:
        print("  " + n)
    on, off = job.seconds["on"], job.seconds["off"]
    print(f"\nCOST (the job's wall time over the same scenes and frames, model loading included): confirmation off "
          f"{off:.1f} s, on {on:.1f} s: {on / off:.2f}x   (bench/perception.py measures it warm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
