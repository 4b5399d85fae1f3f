"""Phantom rate and recall of object confirmation (core/perception/confirm.py), SSD at its default threshold.

    .venv/bin/python bench/phantoms.py [--minutes 10] [--fps 2] [--learn-minutes 1]

Empty scenes: real frames with nothing in them (a meadow and trees, a stream with plants, snowy
mountains, a desert, night towers, a white wall — frames of the sample clips, checked by eye),
held static for ``--minutes`` at the analysis rate with sensor-like noise (Gaussian, σ 3 levels)
and a slow light change (±4 % gain, a small offset drift), fed straight to the detector. Every
object found there is a phantom. Reported per 10 minutes: raw detections, raw tracks (IoU-linked
chains, what the timeline shows today), confirmed tracks (hits on a moving track or a second look
that agrees), and confirmed tracks once the scene's confusions are learned from its first
``--learn-minutes`` (the camera's normal footage, other noise) and suppressed — counted over the
rest and scaled to 10 minutes.

Object scenes: sample clips with real people, cars, a bicycle, an airliner (bikes, the phone
video, Chaplin, Sintel), and slow pans with noise over real photos (bus.jpg, zidane.jpg, a street). Ground
truth is a hand-made list of (clip, interval, class) for objects that are plainly there; recall is
the share of those the detector finds at all (before) and with a confirmed track (after); the
loss is relative to before (goal ≤ 5 %).

Cost: wall time of the detector alone over every frame, and of the confirmation (linking and the
second looks) in the same run, as a ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.media.decode import MediaError, VideoDecoder  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from core.perception.confirm import Confirmer, SceneConfusions, SecondLook  # noqa: E402
from models.catalogue import load_model  # noqa: E402

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


def clip_frames(name: str, a: float, b: float, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    with VideoDecoder(sample_path(name), max_size=SIZE) as dec:
        k = 0
        while a + k / fps < b:
            try:
                yield a + k / fps, dec.frame_at(a + k / fps).image
            except MediaError:
                return
            k += 1


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


class Meter:
    """Runs the detector and the confirmation over frames, timing each apart."""

    def __init__(self, ssd, look) -> None:
        self.ssd, self.look = ssd, look
        self.detect_s = self.confirm_s = 0.0
        self.frames = 0

    def run(self, frames: Iterator[tuple[float, np.ndarray]]):
        c = Confirmer(self.look)
        raw: list[tuple[float, list]] = []
        batch: list[tuple[float, np.ndarray]] = []

        def flush() -> None:
            t0 = time.perf_counter()
            dets = self.ssd.detect([img for _t, img in batch])
            t1 = time.perf_counter()
            for (t, img), d in zip(batch, dets):
                c.update(t, img, d)
                raw.append((t, d))
            self.detect_s += t1 - t0
            self.confirm_s += time.perf_counter() - t1
            self.frames += len(batch)
            batch.clear()

        for item in frames:
            batch.append(item)
            if len(batch) == 8:
                flush()
        if batch:
            flush()
        return raw, c.tracks()


def empty_scenes(m: Meter, minutes: float, learn_minutes: float, fps: float) -> list[tuple]:
    rows = []
    n, n_learn = int(minutes * 60 * fps), int(learn_minutes * 60 * fps)
    for k, (name, t, what) in enumerate(EMPTY):
        base = still(name, t)
        raw, tracks = m.run((i / fps, noisy(base, i, k)) for i in range(n))
        # the camera's normal footage: another stretch (other noise) of the same view
        learn_raw = [(i / fps, m.ssd.detect([noisy(base, i, 100 + k)])[0]) for i in range(n_learn)]
        sc = SceneConfusions()
        sc.suppress(sc.learn(learn_raw, (base.shape[1], base.shape[0])))
        size = (base.shape[1], base.shape[0])
        kept = [tr for tr in tracks if tr.confirmed and sc.matching(tr, size) is None]
        per10 = 10.0 / minutes
        rows.append((f"{name}@{t:g} {what}", sum(len(d) for _t, d in raw) * per10, len(tracks) * per10,
                     sum(tr.confirmed for tr in tracks) * per10, len(kept) * per10,
                     ", ".join(sorted({f"{tr.label}: {tr.reason}" for tr in tracks if tr.confirmed}))[:160],
                     ", ".join(c.label for c in sc.suppressed)))
    return rows


def object_scenes(m: Meter, fps: float) -> tuple[int, int, int, list[str]]:
    truth, before, after, notes = 0, 0, 0, []
    scenes = [(f"{n} {a:g}-{b:g}s", clip_frames(n, a, b, fps), gt) for n, a, b, gt in CLIPS]
    scenes += [(f"{n} pan", pan_frames(n, s, fps), [(0.0, s, c) for c in cls]) for n, s, cls in PANS]
    for title, frames, gt in scenes:
        raw, tracks = m.run(frames)
        for a, b, cls in gt:
            found = any(d.label == cls for t, dets in raw if a <= t < b for d in dets)
            kept = any(tr.confirmed and tr.label == cls and any(a <= t < b for _i, t, _d in tr.hits)
                       for tr in tracks)
            truth, before, after = truth + 1, before + found, after + kept
            if found and not kept:
                why = [tr.reason for tr in tracks if tr.label == cls and any(a <= t < b for _i, t, _d in tr.hits)]
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
    ssd = load_model("ssd-mobilenet-v2-coco")
    look = SecondLook(ssd, load_model("efficientnet-lite3"))
    m = Meter(ssd, look)
    print(f"SSD-MobileNet-v2 at its default score threshold {ssd.score}; {args.fps:g} frames/s; "
          f"empty scenes of {args.minutes:g} min each, confusions learned from {args.learn_minutes:g} min")
    rows = empty_scenes(m, args.minutes, args.learn_minutes, args.fps)
    print(f"\n{'empty scene':32} {'raw dets':>9} {'raw tracks':>10} {'confirmed':>9} {'+scene':>7}   per 10 min")
    tot = np.zeros(4)
    for name, d, tr, c, c2, why, sup in rows:
        tot += (d, tr, c, c2)
        print(f"{name:32} {d:9.1f} {tr:10.1f} {c:9.1f} {c2:7.1f}" + (f"   confirmed: {why}" if why else "")
              + (f"   learned: {sup}" if sup else ""))
    k = len(rows)
    print(f"{'mean per scene':32} {tot[0] / k:9.1f} {tot[1] / k:10.1f} {tot[2] / k:9.1f} {tot[3] / k:7.1f}")
    print(f"\nPHANTOMS per 10 min (mean over {k} empty scenes): before confirmation {tot[1] / k:.1f} tracks "
          f"({tot[0] / k:.0f} detections); confirmed {tot[2] / k:.2f}; confirmed with learned scene confusions "
          f"{tot[3] / k:.2f}   (goal 0)")
    truth, before, after, notes = object_scenes(m, args.fps)
    print(f"\nRECALL on object scenes ({truth} hand-labelled objects): before {before}/{truth}, "
          f"after {after}/{truth}; lost {1 - after / max(before, 1):.1%} of what the detector found   (goal <= 5 %)")
    for n in notes:
        print("  " + n)
    print(f"\nCOST over {m.frames} frames: detector {m.detect_s:.1f} s, confirmation {m.confirm_s:.1f} s "
          f"({look.classifier.kind}+{'redetect'} second looks); detector+confirmation / detector alone = "
          f"{(m.detect_s + m.confirm_s) / m.detect_s:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
