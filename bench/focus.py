"""FOCUS frame selection on an hour of real footage with a real bus planted in it.

    .venv/bin/python bench/focus.py [--minutes 60] [--fps 30] [--positions 3] [--seeds 2]
                                    [--budget-share 0.01] [--k 16] [--plant 8]
    .venv/bin/python bench/focus.py --index [--minutes 60] [--positions 2] [--rescore 12]

Builds (once, cached under ~/.cache/kestrel/bench/) a filler loop from the real samples sintel,
bbb_webm, failing_audio (airliner), chaplin and city_mpg (not bikes: its street montage holds a
real bus), re-encoded to one size and rate with x264 (a keyframe every 250 frames, no B-frames, so
pieces join by remuxing), and a plant: the real bus photo (ultralytics bus.jpg) panned for
``--plant`` seconds. Each position then remuxes an hour of filler with the plant at a known time
(seconds, no re-encode). Every FOCUS run starts with an empty description cache. Prints:

- frames scored as a share of all frames (goal ≤ 1 %);
- hit rate (a chosen frame inside the planted segment) of FOCUS vs uniform sampling of the same k
  frames, and vs the strong baseline "uniform sampling of the same scoring budget, then top-k by
  the same scorer";
- the selection's wall time over decoding the whole video at 1 fps in the same run (goal ≤ 0.2),
  and over decoding *and scoring* it at 1 fps (scoring extrapolated from the per-frame cost
  measured in the same run).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CACHE = Path(os.environ.get("KESTREL_BENCH_CACHE", Path.home() / ".cache" / "kestrel" / "bench"))
FILLER = ("sintel", "bbb_webm", "failing_audio", "chaplin", "city_mpg")


# -- building the media ---------------------------------------------------------------------

def _fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale to cover ``size`` and crop the centre (no black bars to give the models free hints)."""
    import cv2

    h, w = img.shape[:2]
    s = max(size[0] / w, size[1] / h)
    nw, nh = max(size[0], round(w * s)), max(size[1], round(h * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    x, y = (nw - size[0]) // 2, (nh - size[1]) // 2
    return np.ascontiguousarray(img[y:y + size[1], x:x + size[0]])


def filler_frames(names: tuple[str, ...], fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The real sample clips one after the other, resampled to ``fps`` by timestamp."""
    import av

    from core.media.samples import sample_path

    for name in names:
        with av.open(str(sample_path(name))) as c:
            s = c.streams.video[0]
            nxt = None
            for f in c.decode(s):
                if f.time is None:
                    continue
                nxt = f.time if nxt is None else nxt
                while f.time + 1e-6 >= nxt:
                    yield _fit(f.to_ndarray(format="rgb24"), size)
                    nxt += 1 / fps


def bus_frames(seconds: float, fps: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """The real bus photo, a 16:9 window panning down over the bus (SSD finds it in every frame)."""
    import cv2

    from core.media.samples import sample_path

    img = cv2.cvtColor(cv2.imread(str(sample_path("bus_jpg"))), cv2.COLOR_BGR2RGB)
    h = round(img.shape[1] * size[1] / size[0])
    n = max(1, round(seconds * fps))
    for i in range(n):
        y = round(100 + 300 * i / max(1, n - 1))
        yield _fit(img[y:y + h], size)


def encode(frames: Iterator[np.ndarray], out: Path, fps: int, size: tuple[int, int], gop: int) -> Path:
    """x264 with a fixed GOP and no B-frames: every piece encoded here can be joined to another at
    any keyframe by remuxing alone."""
    import av

    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.mp4")  # concurrent builders never share a temp file
    with av.open(str(tmp), "w") as dst:
        vs = dst.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        for n, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = n, Fraction(1, fps)
            for p in vs.encode(f):
                dst.mux(p)
        for p in vs.encode():
            dst.mux(p)
    os.replace(tmp, out)
    return out


def _gops(path: Path) -> tuple[list[list[tuple[bytes, int, bool]]], Fraction, int]:
    """A piece as GOPs of (data, relative pts, key) packets, its time base and frame duration in it."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        pk = [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in c.demux(s) if p.pts is not None and p.size]
        step = int(round(1 / (float(s.average_rate) * tb)))
    pts0 = min(p for _, p, _ in pk)
    gops: list[list[tuple[bytes, int, bool]]] = []
    for data, pts, key in pk:
        if key or not gops:
            gops.append([])
        gops[-1].append((data, pts - pts0, key))
    return gops, tb, step


def build_video(out: Path, filler: Path, plant: Path | None, seconds: float, plant_at: float) -> tuple[float, float]:
    """Loop ``filler`` for ``seconds``, with ``plant`` inserted at the first keyframe ≥ ``plant_at``.
    Returns the planted segment (start, end) in seconds ((nan, nan) without a plant)."""
    import av

    fg, tb, step = _gops(filler)
    pg = _gops(plant)[0] if plant is not None else []
    seg = (math.nan, math.nan)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.mp4")  # concurrent builders never share a temp file
    with av.open(str(filler)) as src, av.open(str(tmp), "w") as dst:
        vs = dst.add_stream_from_template(src.streams.video[0])
        t = 0  # output time in time-base units
        end = int(seconds / tb)
        i, planted = 0, plant is None
        while t < end:
            if not planted and t * tb >= plant_at:
                gops, planted = pg, True
                seg = (float(t * tb), math.nan)
            else:
                gops, i = [fg[i % len(fg)]], i + 1
            for gop in gops:
                base = gop[0][1]
                for data, pts, key in gop:
                    p = av.Packet(data)
                    p.pts = p.dts = t + pts - base
                    p.time_base, p.stream, p.is_keyframe, p.duration = tb, vs, key, step
                    dst.mux(p)
                t += len(gop) * step
            if gops is pg:
                seg = (seg[0], float(t * tb))
    os.replace(tmp, out)
    return seg


def pieces(fps: int, size: tuple[int, int], gop: int, plant_s: float, folder: Path = CACHE) -> tuple[Path, Path]:
    """The filler loop and the bus plant, encoded once and cached."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{size[0]}x{size[1]}_{fps}fps_g{gop}"
    filler = folder / f"focus_filler_{tag}.mp4"
    plant = folder / f"focus_bus_{plant_s:g}s_{tag}.mp4"
    if not filler.exists():
        encode(filler_frames(FILLER, fps, size), filler, fps, size, gop)
    if not plant.exists():
        encode(bus_frames(plant_s, fps, size), plant, fps, size, gop)
    return filler, plant


# -- the bench ------------------------------------------------------------------------------

def forget_descriptions() -> None:
    """Empty the embedded scorer's per-frame description cache and the in-process media indexes
    (bench only: timings of cold runs)."""
    from core.focus import scorers as fs
    from core.perception import index as mi

    fs.make_scorer("embedded")._desc.clear()
    mi._MEMORY.clear()


def decode_at_1fps(path: Path, duration: float) -> float:
    """Seconds to decode the whole video at 1 fps (frame_at at every second: decodes forward)."""
    from core.media.decode import VideoDecoder

    t0 = time.perf_counter()
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        for t in range(int(duration)):
            dec.frame_at(float(t))
    return time.perf_counter() - t0


def seek_cost(path: Path, times: list[float]) -> float:
    """Seconds to fetch these frames by seeking, in time order, with nothing scored."""
    from core.media.decode import VideoDecoder

    t0 = time.perf_counter()
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        for t in sorted(times):
            dec.frame_at(t)
    return time.perf_counter() - t0


def scoring_cost(path: Path, n: int = 48) -> float:
    """Seconds per frame of the embedded scorer alone (fresh frames, nothing cached)."""
    from core.focus import scorers as fs
    from core.media.decode import VideoDecoder

    sc = fs.make_scorer("embedded")
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        times = [float(t) for t in np.linspace(5, 3000, n)]
        frames = [dec.frame_at(t).image for t in times]
    t0 = time.perf_counter()
    for i in range(0, n, 8):
        sc.score(frames[i:i + 8], times[i:i + 8], "a bus", str(path) + "#cost")
    return (time.perf_counter() - t0) / n


def uniform_top_k(path: Path, budget: int, duration: float, k: int) -> list[float]:
    """The strong baseline: score ``budget`` evenly spaced frames, keep the best k (1 s apart)."""
    from core.focus import scorers as fs
    from core.media.decode import VideoDecoder

    sc = fs.make_scorer("embedded")
    times = [float(t) for t in (np.arange(budget) + 0.5) * duration / budget]
    scores = []
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        for i in range(0, budget, 8):
            ts = times[i:i + 8]
            scores += list(sc.score([dec.frame_at(t).image for t in ts], ts, "a bus", str(path) + "#uniform"))
    chosen: list[float] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if len(chosen) < k and all(abs(times[i] - c) >= 1.0 for c in chosen):
            chosen.append(times[i])
    return chosen


# -- the media index: first question (index build included), second question, AKS-style baseline -----

def aks_scores(path: Path, start: float, end: float, query: str = "a bus") -> tuple[list[float], list[float], float]:
    """The AKS-style baseline's work: every second in [start, end) decoded in file order and
    scored by the same full scorer. Returns (times, scores, seconds it took)."""
    from core.focus import scorers as fs
    from core.media.decode import VideoDecoder

    sc = fs.make_scorer("embedded")
    times = [float(t) + 0.5 for t in range(int(start), int(end))]
    scores: list[float] = []
    t0 = time.perf_counter()
    with VideoDecoder(path, max_size=(640, 360)) as dec:
        for i in range(0, len(times), 8):
            ts = times[i:i + 8]
            scores += list(sc.score([dec.frame_at(t).image for t in ts], ts, query, f"{path}#aks"))
    return times, scores, time.perf_counter() - t0


def top_k_apart(times: list[float], scores: list[float], k: int, gap: float = 1.0) -> list[float]:
    chosen: list[float] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if len(chosen) < k and all(abs(times[i] - c) >= gap for c in chosen):
            chosen.append(times[i])
    return chosen


def run_index_bench(minutes: float = 60, positions: int = 2, k: int = 16, rescore: int = 4,
                    without: bool = True, aks_sample_s: float = 60.0, aks_minutes: float = 3.0,
                    second_query: str = "people walking in the street", fps: int = 30, gop: int = 250,
                    plant_s: float = 8.0, log=print) -> dict:
    """FOCUS with the media index on ``minutes`` of footage with a real bus planted, each beside
    its baselines in the same run: decoding the file at 1 fps; FOCUS without the index (today's
    bandit, 1 % budget); uniform k frames; and the AKS-style baseline (every second scored by the
    same full scorer), whose cost is *extrapolated* from ``aks_sample_s`` seconds of the file scored
    in file order and whose hit rate is *measured* on a full ``aks_minutes`` file with the same
    plant. Each position gets a fresh project: the first question pays for the index."""
    import tempfile

    from core.focus.search import FocusRequest, select_frames
    from core.jobs import HeadlessState
    from core.media.decode import probe
    from core.perception import index as mi
    from core.perception import ops
    from core.store.project import Project

    size, seconds = (640, 360), minutes * 60
    filler, plant = pieces(fps, size, gop, plant_s)
    spots = [seconds * f for f in (0.137, 0.512, 0.871, 0.29, 0.66)[:positions]]
    out: dict = {"minutes": minutes, "positions": [], "k": k, "rescore": rescore, "cores": os.cpu_count(),
                 "load_start": os.getloadavg()[0]}
    log(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    tmp = Path(tempfile.mkdtemp(prefix="focus_index_"))
    decode_s = None
    for n, pos in enumerate(spots):
        path = CACHE / f"focus_index_{minutes:g}m_{n}.mp4"
        seg = build_video(path, filler, plant, seconds, pos)
        info = probe(path)
        if decode_s is None:
            decode_s = decode_at_1fps(path, info.duration_s)
            out["decode_1fps_s"] = decode_s
            log(f"video: {info.summary()}; decoding it at 1 fps takes {decode_s:.1f} s")
            sc = __import__("core.focus.scorers", fromlist=["make_scorer"]).make_scorer("embedded")
            sc.embed(["warm up"])  # models load once per process, before anything is timed
            mi._Models(mi.IndexConfig())
        row: dict = {"segment": seg}
        forget_descriptions()
        with Project.create(tmp / f"p{n}.kestrel") as project:
            mid = ops.register_media(project, info)
            t0 = time.perf_counter()
            idx, built = mi.ensure_index(project, mid, mi.IndexRequest(str(path)), HeadlessState())
            build_s = time.perf_counter() - t0
            res = select_frames(FocusRequest(str(path), "a bus", k=k, index=idx, rescore_frames=rescore), HeadlessState())
            first_s = time.perf_counter() - t0
            hits = sum(seg[0] <= f.time < seg[1] for f in res.frames)
            row.update(index_s=build_s, index_frames=len(idx), first_s=first_s, first_ratio=first_s / decode_s,
                       hits_index=hits, scored_index=res.frames_scored, from_index=res.from_index,
                       plan={k2: v for k2, v in idx.params["plan"].items() if k2 != "gate"})
            log(f"  bus at {seg[0]:7.1f}–{seg[1]:7.1f} s: index {len(idx)} frames in {build_s:.1f} s; first question "
                f"(index + selection) {first_s:.1f} s = ×{first_s / decode_s:.2f} of decoding at 1 fps; "
                f"{hits} of {len(res.frames)} frames on the bus ({res.frames_scored} scored, {res.from_index} from the index)")
            t0 = time.perf_counter()
            again, rebuilt = mi.ensure_index(project, mid, mi.IndexRequest(str(path)), HeadlessState())
            res2 = select_frames(FocusRequest(str(path), second_query, k=k, index=again, rescore_frames=rescore,
                                              thumbnails=False), HeadlessState())
            row.update(second_s=time.perf_counter() - t0, second_rebuilt=rebuilt, second_scored=res2.frames_scored,
                       second_from_index=res2.from_index)
            t1 = time.perf_counter()
            seek_cost(path, [f.time for f in res2.frames])
            row["thumbs_s"] = time.perf_counter() - t1
            log(f"  a second question (\"{second_query}\", index loaded from the project): {row['second_s']:.2f} s, "
                f"{res2.frames_scored} frames scored, {res2.from_index} from the index, rebuilt: {rebuilt}; "
                f"(the window's strip then decodes its {len(res2.frames)} thumbnails on the io pool: {row['thumbs_s']:.2f} s)")
        if without:
            forget_descriptions()
            res0 = select_frames(FocusRequest(str(path), "a bus", k=k, budget_share=0.01), HeadlessState())
            row.update(without_s=res0.wall_s, hits_without=sum(seg[0] <= f.time < seg[1] for f in res0.frames))
            log(f"  FOCUS without the index (1 % budget): {res0.wall_s:.1f} s = ×{res0.wall_s / decode_s:.2f} of decoding; "
                f"{row['hits_without']} frames on the bus")
        r = np.random.default_rng(0)
        row["uniform"] = float(np.mean([any(seg[0] <= t < seg[1] for t in (np.arange(k) + r.random()) * seconds / k)
                                        for _ in range(1000)]))
        out["positions"].append(row)
        path.unlink()
    # the AKS-style baseline: cost extrapolated from a measured stretch; hit rate on a whole short file
    path = CACHE / f"focus_index_{minutes:g}m_0.mp4"
    build_video(path, filler, plant, seconds, spots[0])
    forget_descriptions()
    _t, _s, took = aks_scores(path, seconds * 0.3, seconds * 0.3 + aks_sample_s)
    path.unlink()
    out["aks_per_s"] = took / aks_sample_s
    out["aks_est_s"] = took / aks_sample_s * seconds
    aks_hits = []
    for n, f in enumerate((0.137, 0.512, 0.871)[:max(1, positions)]):
        short = CACHE / f"focus_index_aks_{n}.mp4"
        seg = build_video(short, filler, plant, aks_minutes * 60, aks_minutes * 60 * f)
        forget_descriptions()
        ts, ss, _took = aks_scores(short, 0.0, probe(short, with_hash=False).duration_s)
        aks_hits.append(sum(seg[0] <= t < seg[1] for t in top_k_apart(ts, ss, k)))
        short.unlink()
    out["aks_hits"] = aks_hits
    rows = out["positions"]
    first = float(np.mean([r["first_s"] for r in rows]))
    out.update(first_s=first, first_ratio=first / decode_s, second_s=float(np.mean([r["second_s"] for r in rows])),
               vs_aks=first / out["aks_est_s"],
               hit_index=float(np.mean([r["hits_index"] > 0 for r in rows])),
               hit_without=float(np.mean([r["hits_without"] > 0 for r in rows])) if without else None,
               hit_aks=float(np.mean([h > 0 for h in aks_hits])),
               hit_uniform=float(np.mean([r["uniform"] for r in rows])), load_end=os.getloadavg()[0])
    log(f"\nAKS-style baseline (every second scored by the same full scorer): {out['aks_per_s'] * 1000:.0f} ms a "
        f"second of video, measured on {aks_sample_s:.0f} s in file order, so ≈ {out['aks_est_s']:.0f} s for "
        f"{minutes:g} min (extrapolated); its hit rate measured on whole {aks_minutes:g}-minute files with the same plant: "
        f"{out['hit_aks']:.2f} ({aks_hits} frames on the bus)")
    log(f"first question (index build + selection): {first:.1f} s = ×{out['first_ratio']:.2f} of a 1-fps decode "
        f"(goal ≤ 1), ×{out['vs_aks']:.3f} of the AKS-style baseline (goal ≤ 0.1); second question "
        f"{out['second_s']:.2f} s (goal ≤ 2 s)")
    log(f"hit rate over {len(rows)} positions: FOCUS with the index {out['hit_index']:.2f}"
        + (f", FOCUS without {out['hit_without']:.2f}" if without else "")
        + f", AKS-style {out['hit_aks']:.2f}, uniform k frames {out['hit_uniform']:.2f}; "
          f"load average {out['load_end']:.1f} at the end")
    return out


def main() -> int:
    from core.focus.search import FocusRequest, select_frames
    from core.jobs import HeadlessState
    from core.media.decode import probe

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--gop", type=int, default=250)
    ap.add_argument("--plant", type=float, default=8.0, help="seconds of bus")
    ap.add_argument("--positions", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget-share", type=float, default=0.01)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--no-strong", action="store_true", help="skip the uniform-budget + top-k baseline")
    ap.add_argument("--index", action="store_true",
                    help="the media-index bench (run_index_bench): first and second question, AKS-style baseline")
    ap.add_argument("--rescore", type=int, default=4, help="with --index: new frames rescored in the shortlist")
    args = ap.parse_args()
    if args.index:
        run_index_bench(args.minutes, args.positions, args.k, args.rescore)
        return 0
    size = (640, 360)
    seconds = args.minutes * 60
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    filler, plant = pieces(args.fps, size, args.gop, args.plant)
    positions = [seconds * f for f in (0.137, 0.512, 0.871, 0.29, 0.66)[:args.positions]]
    rows, decode_s, cost = [], None, None
    for n, pos in enumerate(positions):
        path = CACHE / f"focus_hour_{n}.mp4"
        seg = build_video(path, filler, plant, seconds, pos)
        info = probe(path, with_hash=False)
        if decode_s is None:
            print(f"video: {info.summary()}, {path.stat().st_size / 1e6:.0f} MB; filler {', '.join(FILLER)}")
            decode_s = decode_at_1fps(path, info.duration_s)
            cost = scoring_cost(path)
            print(f"baseline: decoding the whole video at 1 fps takes {decode_s:.1f} s; the embedded scorer "
                  f"costs {cost * 1000:.0f} ms a frame (so decode + score at 1 fps ≈ {decode_s + cost * info.duration_s:.0f} s)")
        for seed in range(args.seeds):
            forget_descriptions()  # every run starts cold, as a first question about a video does
            res = select_frames(FocusRequest(str(path), "a bus", k=args.k, seed=seed,
                                             budget_share=args.budget_share), HeadlessState())
            n_in = sum(seg[0] <= f.time < seg[1] for f in res.frames)
            rows.append(("focus", pos, seed, n_in, res.share, res.wall_s))
            if seed == 0:
                seek = seek_cost(path, [t for t, _ in res.scored])
                print(f"  (fetching those {len(res.scored)} frames alone, in time order, takes {seek:.1f} s = "
                      f"×{seek / decode_s:.2f} of decoding at 1 fps: a lower bound for any scorer)")
            print(f"  bus at {seg[0]:7.1f}–{seg[1]:7.1f} s, seed {seed}: FOCUS scored {res.frames_scored} of "
                  f"{res.total_frames} frames ({100 * res.share:.2f} %) in {res.wall_s:5.1f} s "
                  f"(×{res.wall_s / decode_s:.2f} of decoding at 1 fps); {n_in} of {len(res.frames)} frames on the bus"
                  + ("" if n_in else f"; {res.warnings[-1] if res.warnings else ''}"))
        if pos == positions[0]:
            t0 = time.perf_counter()
            again = select_frames(FocusRequest(str(path), "people walking in the street", k=args.k,
                                               seed=args.seeds - 1, budget_share=args.budget_share), HeadlessState())
            print(f"  a second query on the same video (same seed: its coarse frames are already described): "
                  f"{time.perf_counter() - t0:.1f} s, {again.frames_scored} frames scored")
        r = np.random.default_rng(0)
        uni = np.mean([any(seg[0] <= t < seg[1] for t in (np.arange(args.k) + r.random()) * info.duration_s / args.k)
                       for _ in range(1000)])
        rows.append(("uniform", pos, -1, float(uni), 0.0, 0.0))
        if not args.no_strong:
            budget = int(math.floor(args.budget_share * info.duration_s * args.fps))
            forget_descriptions()
            t0 = time.perf_counter()
            chosen = uniform_top_k(path, budget, info.duration_s, args.k)
            n_in = sum(seg[0] <= t < seg[1] for t in chosen)
            rows.append(("strong", pos, -1, n_in, 0.0, time.perf_counter() - t0))
            print(f"  uniform {budget} frames scored, then top-{args.k}: {n_in} frames on the bus "
                  f"({time.perf_counter() - t0:.1f} s)")
        path.unlink()
    f = [r for r in rows if r[0] == "focus"]
    s = [r for r in rows if r[0] == "strong"]
    print(f"\nframes scored: {100 * np.mean([r[4] for r in f]):.2f} % of all frames (goal ≤ 1 %)")
    print(f"hit rate over {len(positions)} positions × {args.seeds} seeds: FOCUS {np.mean([r[3] > 0 for r in f]):.2f} "
          f"({np.mean([r[3] for r in f]):.1f} of {args.k} frames on the bus), uniform k frames "
          f"{np.mean([r[3] for r in rows if r[0] == 'uniform']):.2f}"
          + (f", uniform budget + top-k {np.mean([r[3] > 0 for r in s]):.2f} ({np.mean([r[3] for r in s]):.1f} "
             f"of {args.k} on the bus)" if s else ""))
    wall = np.mean([r[5] for r in f])
    print(f"selection wall time {wall:.1f} s = ×{wall / decode_s:.2f} of decoding the whole video at 1 fps "
          f"(goal ≤ 0.2), ×{wall / (decode_s + cost * seconds):.2f} of decoding and scoring it at 1 fps; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
