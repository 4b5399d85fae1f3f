"""Shot detection accuracy and speed: PySceneDetect's detectors on cuts known to the frame.

    .venv/bin/python bench/shots.py [--quick]        # shot detection accuracy and speed
    .venv/bin/python bench/shots.py --features       # per-shot feature extraction speed

Ground truth, established without any detector:
- a montage of real clips (``make_montage``): segments of sample clips, each inside one shot
  of its source (checked by frame differences and by eye), re-encoded one after another at
  25 fps, so shot k starts exactly at the sum of the earlier segments' frame counts. It holds
  the hard cases: two shots of the same black-and-white film, two night shots of the same
  city, a 12-frame shot, hand-held phone footage, a 176×144 source blown up;
- bikes.mp4: hard cuts at frames 30, 76, 137, 187, 242 (1.20 3.04 5.48 7.48 9.68 s), found
  by grey-level frame differences and confirmed by eye on PNGs of the frames either side;
- city_mpg.mpg: one cut at frame 116 (same check); chaplin.mp4: no cut in 9.6 s of
  flickering black-and-white film (false-positive check);
- iscc_mp4 (60 s band session, 176×144): 18 hard cuts, labelled by eye from contact sheets
  of every frame pair where any cheap measure (luma/edge change, colour histogram, grey
  difference) rose, generously thresholded (73 candidates: the rest were drum-stick motion,
  an animated logo, and a keyframe "pulse" every 30 frames); its logo dissolve is ignored.

Every detector and threshold sees the same decoded frames (one pass per clip through
``core.tagging.shots.scan_cuts``). A detected cut counts when it is within one frame of a
true cut. Measured here (2 shared CPU cores, 49 known cuts over the six clips), hits / false
cuts / missed / hits one frame off:

    adaptive-luma@3 (the default)   49 /  1 /  0 / 0   (the false one: a phone clip's jolt)
    content@27 (PySceneDetect's)    47 / 13 /  2 / 1   (hue flips in dark red scenes, keyframe pulses)
    adaptive@3 (PySceneDetect's)    47 / 20 /  2 / 0
    histogram@0.1                   27 /  1 / 22 / 0   (misses every iscc cut)

An own rule (luma/edge change against an absolute and a neighbour-ratio threshold, grid-
searched on the same frames) did no better than adaptive-luma, so PySceneDetect's detector
is kept. Detection runs at ~20× real time (bikes, Sintel). Unlabelled Sintel shows the limits:
cuts inside fast action (frames 404, 409) are missed by every detector here.

``--features`` times ``shot_features`` on bikes.mp4 (no audio) and the Sintel trailer with
models loaded beforehand (their load times printed apart), as compute seconds per media
second, with the time spent inside each model; each clip twice, because torch (MTCNN)
tunes its kernels per picture size on first use and an archive run pays that once.
Measured (2 CPU cores shared with other jobs, load ~4, so ±2× between runs):
all models, Sintel (10 shots, 52 s, speech) 0.11–0.23 s per media second (4–9× real time;
OCR, SSD, Whisper, MTCNN in that order); bikes (6 shots in 10 s, no audio) 0.35 s warm,
0.78 s cold (MTCNN's first calls). Without faces and OCR: 0.12 (Sintel), 0.19 (bikes).
The cost is per shot (~0.3–0.6 s: 3 frames through SSD, MTCNN, the tagger, one OCR) plus
~0.04 s per second of audio (Whisper tiny); model loading ~5 s once per pool.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402

from core.jobs import HeadlessState  # noqa: E402
from core.media.samples import sample_path  # noqa: E402
from core.tagging.shots import detect_shots, make_detector, scan_cuts  # noqa: E402

#: (sample, first frame, frame count): each segment lies inside one shot of its source.
MONTAGE: tuple[tuple[str, int, int], ...] = (
    ("chaplin", 0, 50),
    ("chaplin", 150, 40),  # the same film scene 6 s later: a cut between look-alike shots
    ("city_mpg", 20, 60),
    ("city_mpg", 120, 45),  # night to night, same skyline
    ("bikes", 80, 50),
    ("fire2", 0, 25),  # hand-held phone footage, variable rate source
    ("bbb_6ch", 10, 100),
    ("bikes", 140, 12),  # a 0.48 s shot
    ("sintel", 430, 60),
    ("iscc_mp4", 250, 90),  # 176×144 source
    ("failing_audio", 0, 120),
    ("bbb_webm", 400, 60),
    ("rotated", 0, 40),
    ("bikes", 190, 40),
)
#: A second montage, other segments and order (held out while the detectors were compared).
MONTAGE_B: tuple[tuple[str, int, int], ...] = (
    ("sintel", 575, 40), ("chaplin", 60, 60), ("bbb_webm", 290, 70), ("city_mpg", 130, 50),
    ("iscc_mp4", 400, 80), ("bikes", 0, 28), ("bbb_6ch", 60, 70), ("bikes", 200, 30),
    ("failing_audio", 130, 100), ("sintel", 430, 20), ("iscc_mp4", 250, 60), ("fire2", 0, 25),
    ("chaplin", 200, 40),
)
#: Real clips' hard cuts (first frame of each new shot), labelled by eye (see the docstring).
KNOWN = {
    "bikes": [30, 76, 137, 187, 242],
    "city_mpg": [116],
    "chaplin": [],
    "iscc_mp4": [183, 243, 365, 395, 485, 552, 706, 741, 864, 923, 959, 1024, 1119, 1162, 1188, 1300,
                 1369, 1432],
}
#: Frame ranges where a detection is neither right nor wrong (gradual transitions).
DONT_CARE = {"iscc_mp4": [(105, 122)]}  # the logo dissolves into the drummer over 10 frames


def _frames(name: str, first: int, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    out = []
    with av.open(str(sample_path(name))) as c:
        for n, f in enumerate(c.decode(c.streams.video[0])):
            if n >= first:
                out.append(f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(out) == count:
                break
    if len(out) < count:
        raise ValueError(f"{name} has fewer than {first + count} frames")
    return out


def make_montage(path: str | Path, segments=MONTAGE, *, size: tuple[int, int] = (640, 360), fps: int = 25,
                 audio: np.ndarray | None = None, sample_rate: int = 16000) -> list[int]:
    """Write the segments back to back (H.264, ``fps``); return the true cut frames (shots 2..).

    ``audio``: mono float32 at ``sample_rate`` to mux as AAC beside the video (optional).
    """
    path = Path(path)
    cuts, n = [], 0
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.layout = "mono"
        for k, (name, first, count) in enumerate(segments):
            if k:
                cuts.append(n)
            for img in _frames(name, first, count, size):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = n
                out.mux(vs.encode(frame))
                n += 1
        out.mux(vs.encode(None))
        if as_ is not None:
            _mux_audio(out, as_, np.asarray(audio, np.float32), sample_rate)
    return cuts


def _mux_audio(out, stream, mono: np.ndarray, rate: int) -> None:
    from fractions import Fraction

    cc = stream.codec_context
    rs = av.AudioResampler(format=cc.format.name, layout="mono", rate=rate, frame_size=cc.frame_size or 1024)
    for a in range(0, len(mono), 1024):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None, a:a + 1024]), format="fltp", layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = rate, a, Fraction(1, rate)
        for part in rs.resample(fr):
            out.mux(stream.encode(part))
    for part in rs.resample(None):
        out.mux(stream.encode(part))
    out.mux(stream.encode(None))


def score(pred: list[int], true: list[int], tol: int = 1) -> tuple[int, int, int, list[int]]:
    """(hits, false cuts, missed cuts, offsets of the hits in frames): one match per true cut."""
    left = list(pred)
    hits, offsets = 0, []
    for t in true:
        near = [p for p in left if abs(p - t) <= tol]
        if near:
            p = min(near, key=lambda p: abs(p - t))
            left.remove(p)
            hits += 1
            offsets.append(p - t)
    return hits, len(left), len(true) - hits, offsets


CANDIDATES = {
    "adaptive-luma": (2.5, 3.0, 4.0),
    "content": (20.0, 27.0, 35.0),
    "adaptive": (2.5, 3.0, 4.0),
    "histogram": (0.05, 0.1, 0.2),
}


def features_bench() -> int:
    from core.tagging.features import FeatureConfig, ModelPool, shot_features

    pool = ModelPool()
    full = FeatureConfig()
    for name in (full.tagger, full.detector, full.faces, full.vad, full.asr, full.ocr, full.text_embed):
        t0 = time.perf_counter()
        pool.get(name)
        print(f"load {name:24s} {time.perf_counter() - t0:5.2f} s")
    for label, cfg in (("all models", full), ("no faces, no OCR", FeatureConfig(faces=None, ocr=None))):
        for clip, rep in (("bikes", "1st"), ("bikes", "2nd"), ("sintel", "1st"), ("sintel", "2nd")):
            p = str(sample_path(clip))
            shots = detect_shots(p, HeadlessState())
            before = dict(pool.seconds)
            t0 = time.perf_counter()
            shot_features(p, shots, HeadlessState(), cfg, pool)
            el = time.perf_counter() - t0
            dur = shots[-1].end
            inside = {k: v - before.get(k, 0.0) for k, v in pool.seconds.items() if v - before.get(k, 0.0) > 0.005}
            rest = el - sum(inside.values())
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(inside.items(), key=lambda kv: -kv[1]))
            print(f"{label:17s} {clip:7s} {rep} {len(shots):2d} shots, {dur:5.1f} s: {el:5.2f} s = {el / dur:.3f} s per "
                  f"media s ({dur / el:4.1f}× real time); models: {parts}; decoding and the rest {rest:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="default thresholds only, no speed runs")
    ap.add_argument("--features", action="store_true", help="time per-shot feature extraction instead")
    ap.add_argument("--min-shot", type=float, default=0.4)
    args = ap.parse_args()
    if args.features:
        return features_bench()
    tmp = Path(tempfile.mkdtemp(prefix="kestrel-shots-"))
    montage = tmp / "montage.mp4"
    montage_b = tmp / "montage_b.mp4"
    truth = {"montage": make_montage(montage), "montage_b": make_montage(montage_b, MONTAGE_B)}
    clips = {"montage": montage, "montage_b": montage_b}
    for name, cuts in KNOWN.items():
        clips[name] = sample_path(name)
        truth[name] = cuts
    cand = {k: (v[1],) for k, v in CANDIDATES.items()} if args.quick else CANDIDATES
    totals: dict[str, list[int]] = {}
    for clip, path in clips.items():
        fps = 25.0
        min_frames = max(1, int(round(args.min_shot * fps)))
        dets = {f"{k}@{thr:g}": make_detector(k, thr, min_frames) for k, thrs in cand.items() for thr in thrs}
        t0 = time.perf_counter()
        scan = scan_cuts(str(path), dets, HeadlessState())
        el = time.perf_counter() - t0
        print(f"\n{clip}: {len(scan.times)} frames, {len(truth[clip])} true cuts, one pass for "
              f"{len(dets)} detectors in {el:.1f} s")
        for name, cuts in scan.cuts.items():
            cuts = [c for c in cuts if not any(a <= c <= b for a, b in DONT_CARE.get(clip, ()))]
            h, fp, fn, off = score(cuts, truth[clip])
            tot = totals.setdefault(name, [0, 0, 0, 0])
            tot[0] += h
            tot[1] += fp
            tot[2] += fn
            tot[3] += sum(1 for o in off if o != 0)
            extra = f" false at {[c for c in cuts if all(abs(c - t) > 1 for t in truth[clip])]}" if fp else ""
            miss = f" missed {[t for t in truth[clip] if all(abs(c - t) > 1 for c in cuts)]}" if fn else ""
            print(f"  {name:16s} hits {h:2d}  false {fp:2d}  missed {fn:2d}  off-by-one {sum(o != 0 for o in off)}"
                  f"{extra}{miss}")
    print("\ntotal over all clips (hits / false / missed / off-by-one):")
    for name, (h, fp, fn, ob) in sorted(totals.items(), key=lambda kv: (kv[1][1] + kv[1][2], kv[0])):
        print(f"  {name:16s} {h:3d} / {fp:2d} / {fn:2d} / {ob}")
    if not args.quick:
        print("\nspeed of detect_shots (default detector), compute seconds per media second:")
        for name in ("bikes", "sintel"):
            p = sample_path(name)
            t0 = time.perf_counter()
            shots = detect_shots(str(p), HeadlessState())
            el = time.perf_counter() - t0
            print(f"  {name:8s} {len(shots):3d} shots over {shots[-1].end:.1f} s in {el:.2f} s "
                  f"= {el / shots[-1].end:.4f} s/s ({shots[-1].end / el:.0f}× real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
