"""A day of one fixed camera: perception and anomalies over 24 hours, FOCUS, the timeline at 1M
detections and Ray, each beside its baseline in the same run (issue #18).

    .venv/bin/python bench/longfootage.py [--part perception|anomaly|focus|timeline|ray|all]
                                          [--hours 24] [--baseline-minutes 10] [--json OUT]
    .venv/bin/python bench/longfootage.py --build-only --hours 24     # just make (or find) the file

The footage (built once, cached under ~/.cache/kestrel/bench/longfootage/, deterministic): one
real scene (a frame of a real sample clip: "wall", the bikes clip's white bus roof seen from
above, as bench/anomaly.py uses it; or "desert", Sintel's dunes) held still by a fixed camera at
640×360, 12 fps, H.264 (x264 CRF 23, a keyframe every 2 s like a real camera, no B-frames) with
AAC mono 16 kHz audio of quiet room noise. Every frame has its own Gaussian sensor noise (σ 3
levels) and a slow auto-exposure flicker (±1 %); the light drifts over the "day" (clouds, dusk,
night) in levels 0.95–1.25 of the scene's gain, changing only by slow ramps over a 64 s segment.
Planted events at known times (a ground-truth JSON beside the file): people walking in (two
people cut from the real ultralytics bus photo, left to right or right to left), a vehicle
driving through (the car cut from the real vacation photo), a loud sound (pygame's real
boom.wav). The first stretch (``normal`` in the JSON, ≈ 10 minutes) has every light level and no
event: the footage an analyst marks as normal (``anomalies --normal``).

Built fast: a handful of distinct 64 s segments of video (normal holds at each light level in
several noise variants, light ramps, one segment per event) are encoded once each, then joined by
remuxing their packets with new timestamps (no re-encode), so 24 hours cost minutes. The audio is
cheap and is encoded in one continuous AAC stream while joining (AAC joined per segment would
click at every join); 64 s holds a whole number of video frames, 2 s GOPs and 1024-sample AAC
frames, so the boom's first sample lands where the JSON says (tests/test_longfootage_gen.py).

The harness runs Kestrel's real jobs: ``analyze`` (SSD + tracking at 2 fps; ``--models``) and the
anomaly pass (``run_anomalies`` with the JSON's normal stretch) over the whole file with change
gating (``gate=True`` where the request has the field) and the ungated baseline (``gate=False``)
over the first ``--baseline-minutes`` of the file after the normal stretch, in the same run; the
baseline's day is extrapolated from its slice (said so in the output). Printed: compute s / media s
(goal ≤ 0.02 for perception + anomalies over 24 h), every planted event found or missed with its
onset error (goal ±1 s), false events per hour (goal ≤ 1), the gating rates from the runs'
provenance. FOCUS, the timeline and Ray call bench/focus.py ``run_index_bench``,
bench/timeline_scale.py ``run`` and bench/cluster.py ``run`` when they exist.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.open_media import CACHE  # noqa: E402

GEN_VERSION = 3
SIZE, FPS, RATE = (640, 360), 12, 16000
SEGMENT_S = 64.0  # whole frames, 2 s GOPs and 1024-sample AAC frames at 16 kHz
GOP_S = 2.0
CRF = 23
LEVELS = (0.95, 1.05, 1.15, 1.25)  # the scene's light (gain on the base frame), night … full day
NOISE_SIGMA = 3.0  # sensor noise, levels of 255
AUDIO_NOISE = 0.002  # quiet room noise (≈ -54 dBFS)
SCENES = {"wall": ("bikes", 0.5), "desert": ("sintel", 40.0)}
# the cut-outs, from real photos: sample, crop box (pixels), height at 360 lines, speed px/s at 640 wide
# (sizes at which SSD finds each one on the scene at 0.7-0.97 wherever it walks: a tighter crop of
# the second man, or either at 190-200 lines, drops to 0-0.5 and would plant people no detector sees)
CUTOUTS = {"person": ("bus_jpg", (40, 380, 240, 910), 220, 55.0),
           "person2": ("bus_jpg", (205, 380, 370, 880), 220, 50.0),
           "car": ("vacation_jpg", (1470, 440, 2420, 920), 130, 140.0)}
# the events of a day, in order of appearance: (kind, cut-out or sound, direction +1 → / -1 ←)
EVENT_CYCLE = (("person", "person", 1), ("loud sound", "boom", 0), ("vehicle", "car", -1),
               ("person", "person2", -1), ("vehicle", "car", 1), ("person", "person", -1),
               ("loud sound", "boom", 0), ("person", "person2", 1), ("vehicle", "car", -1),
               ("loud sound", "boom", 0), ("person", "person", 1), ("vehicle", "car", 1))
LABELS = {"person": ("person",), "vehicle": ("car", "truck", "bus"), "loud sound": ()}


@dataclass(frozen=True)
class Spec:
    """What decides the footage (equal specs give the same file)."""

    hours: float = 24.0
    events: int | None = None  # None: 10 a day, at least 3
    scene: str = "wall"
    size: tuple[int, int] = SIZE
    fps: int = FPS
    segment_s: float = SEGMENT_S
    seed: int = 18
    variants: int = 3  # noise variants of each normal hold

    @property
    def slots(self) -> int:
        return max(2, int(math.ceil(self.hours * 3600 / self.segment_s - 1e-9)))

    @property
    def n_events(self) -> int:
        return self.events if self.events is not None else max(3, int(round(10 * self.hours / 24)))

    def tag(self) -> str:
        return (f"{self.scene}_{self.size[0]}x{self.size[1]}_{self.fps}fps_s{self.segment_s:g}_v{self.variants}"
                f"_g{GEN_VERSION}")

    def name(self) -> str:
        return f"day_{self.tag()}_{self.hours:g}h_e{self.n_events}_seed{self.seed}"


@dataclass(frozen=True)
class Segment:
    """One distinct piece: light from ``g0`` to ``g1`` (a hold when equal), noise variant, and
    at most one event (kind, cut-out or sound, direction, offset in the segment)."""

    g0: float
    g1: float
    variant: int
    event: tuple | None = None

    def key(self) -> str:
        ev = "" if self.event is None else "_" + "_".join(str(v).replace(" ", "-") for v in self.event)
        return f"{self.g0:.2f}-{self.g1:.2f}_n{self.variant}{ev}"


# -- the plan: which segment plays in each slot, and the ground truth -----------------------------

def plan(spec: Spec) -> tuple[list[Segment], list[dict], tuple[float, float]]:
    """Segments slot by slot, the planted events (kind, onset, end, …) and the normal stretch."""
    rng = np.random.default_rng(spec.seed)
    n, top = spec.slots, len(LEVELS) - 1
    # the normal stretch: down through every level and back up a step (a passing cloud), no event
    normal_levels = [top, top - 1, top - 2, top - 3, top - 2] if n >= 24 else [top, top - 1]
    levels: list[tuple[int, int]] = []  # (from, to) level index per slot
    for a in normal_levels:
        last = levels[-1][1] if levels else a
        if last != a:
            levels.append((last, a))
        levels.append((a, a))
    n_normal = min(len(levels), n // 2)
    levels = levels[:n_normal]
    # the day: full light at the start and the end, night in the middle, a few clouds
    # (a file shorter than a day is its first hours: daylight, and a cloud)
    day = [round(top * (0.5 + 0.5 * math.cos(2 * math.pi * i * spec.segment_s / 86400))) for i in range(n)]
    for _c in range(max(1, round(spec.hours / 4)) if n >= n_normal + 12 else 0):
        c = int(rng.integers(n_normal, max(n_normal + 1, n - 8)))
        w = int(rng.integers(3, 9))
        for i in range(c, min(n, c + w)):
            day[i] = max(0, day[i] - 1)
    while len(levels) < n:
        last, want = levels[-1][1], day[len(levels)]
        step = 0 if want == last else (1 if want > last else -1)
        levels.append((last, last + step))
    # the events: spread over the day after the normal stretch, each in a hold slot of its own
    holds = [i for i in range(n_normal, n) if levels[i][0] == levels[i][1]]
    if len(holds) < spec.n_events:  # a short file: in any slot after the normal stretch
        holds = list(range(n_normal, n))
    k = min(spec.n_events, len(holds))
    picks: list[int] = []
    for j in range(k):
        lo, hi = int(j * len(holds) / k), int((j + 1) * len(holds) / k)
        picks.append(holds[int(rng.integers(lo, max(lo + 1, hi)))])
    segs: list[Segment] = []
    events: list[dict] = []
    for i, (a, b) in enumerate(levels):
        ev = None
        if i in picks:
            kind, what, sign = EVENT_CYCLE[picks.index(i) % len(EVENT_CYCLE)]
            lo = 0.1 * spec.segment_s  # the whole event inside its segment, 2 s to spare
            offset = round(float(rng.uniform(lo, max(lo, spec.segment_s - event_seconds(spec, kind, what) - 2))), 2)
            ev = (kind, what, sign, offset)
            events.append(ground_truth(spec, ev, i * spec.segment_s))
        variant = int(rng.integers(spec.variants)) if a == b and ev is None else 0
        segs.append(Segment(LEVELS[a], LEVELS[b], variant, ev))
    return segs, events, (0.0, n_normal * spec.segment_s)


def _cut_geometry(spec: Spec, what: str) -> tuple[int, int, float]:
    """(width, height, speed px/s) of a cut-out in this footage's size."""
    _s, (x1, y1, x2, y2), h, v = CUTOUTS[what]
    scale = spec.size[1] / 360
    h = int(round(h * scale))
    return int(round(h * (x2 - x1) / (y2 - y1))), h, v * spec.size[0] / 640


def event_seconds(spec: Spec, kind: str, what: str) -> float:
    """How long an event lasts: a sound, its length; an object, from first to last pixel in view."""
    if kind == "loud sound":
        return len(boom()) / RATE
    w, _h, v = _cut_geometry(spec, what)
    return (spec.size[0] + w) / v


def ground_truth(spec: Spec, ev: tuple, slot_start: float) -> dict:
    """An event's record: an object's onset is the first frame it shows in (its edge crossing the
    frame's), its end when it has left (``half_in`` / ``half_out``: when half of it is in view);
    a sound's onset is its first sample (boom.wav starts at full level), its end its last sample
    above 5 % of its peak."""
    kind, what, sign, offset = ev
    t0 = slot_start + offset
    if kind == "loud sound":
        x = boom()
        loud = np.nonzero(np.abs(x) > 0.05 * np.abs(x).max())[0]
        return {"kind": kind, "what": "pygame boom.wav", "onset": round(t0 + float(loud[0]) / RATE, 3),
                "end": round(t0 + float(loud[-1]) / RATE, 3), "visible_from": None, "visible_to": None}
    w, _h, v = _cut_geometry(spec, what)
    W = spec.size[0]
    return {"kind": kind, "what": f"{what} ({CUTOUTS[what][0]}), {'left→right' if sign > 0 else 'right→left'}",
            "onset": round(t0, 3), "end": round(t0 + (W + w) / v, 3),
            "visible_from": round(t0, 3), "visible_to": round(t0 + (W + w) / v, 3),
            "half_in": round(t0 + 0.5 * w / v, 3), "half_out": round(t0 + (W + 0.5 * w) / v, 3),
            "labels": list(LABELS[kind])}


# -- rendering one segment -------------------------------------------------------------------------

def _base(spec: Spec) -> np.ndarray:
    import cv2

    from bench.phantoms import still

    name, at = SCENES[spec.scene]
    return cv2.resize(still(name, at), spec.size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _cutout(spec: Spec, what: str) -> np.ndarray:
    import cv2

    from core.media.samples import sample_path

    sample, (x1, y1, x2, y2), _h, _v = CUTOUTS[what]
    img = cv2.cvtColor(cv2.imread(str(sample_path(sample))), cv2.COLOR_BGR2RGB)[y1:y2, x1:x2]
    w, h, _v = _cut_geometry(spec, what)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)


_BOOM: list[np.ndarray] = []


def boom() -> np.ndarray:
    """pygame's real boom.wav, mono at 16 kHz, peak 0.9."""
    if not _BOOM:
        import av

        from core.media.samples import sample_path

        with av.open(str(sample_path("boom_wav"))) as c:
            rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            x = np.concatenate([o.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])
                                for o in rs.resample(f)] + [o.to_ndarray().reshape(-1) for o in rs.resample(None)])
        _BOOM.append((0.9 * x / max(1e-6, float(np.abs(x).max()))).astype(np.float32))
    return _BOOM[0]


def segment_frames(spec: Spec, seg: Segment, base: np.ndarray) -> Iterator[np.ndarray]:
    """The segment's frames: the scene in its light (a linear ramp g0 → g1), a slow flicker that is
    periodic over the segment (so segments join without a step), an object passing, sensor noise."""
    n = int(round(spec.segment_s * spec.fps))
    rng = np.random.default_rng([spec.seed, zlib.crc32(("frames " + seg.key()).encode())])
    cut = None
    if seg.event is not None and seg.event[0] != "loud sound":
        cut = _cutout(spec, seg.event[1])
        _w, _h, v = _cut_geometry(spec, seg.event[1])
    W, H = spec.size
    for k in range(n):
        t = k / spec.fps
        gain = seg.g0 + (seg.g1 - seg.g0) * k / n
        gain *= 1.0 + 0.01 * math.sin(2 * math.pi * 3 * k / n)
        img = base.copy()
        if cut is not None and t >= seg.event[3]:
            h, w = cut.shape[:2]
            d = v * (t - seg.event[3])
            x = int(round(-w + d)) if seg.event[2] > 0 else int(round(W - d))
            y = H - h - int(round(20 * H / 360))
            a, b = max(0, x), min(W, x + w)
            if a < b:
                img[y:y + h, a:b] = cut[:, a - x:b - x]
        img *= gain
        img += rng.standard_normal(img.shape, dtype=np.float32) * NOISE_SIGMA
        yield np.clip(img, 0, 255).astype(np.uint8)


def segment_audio(spec: Spec, seg: Segment) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, zlib.crc32(("audio " + seg.key()).encode())])
    n = int(round(spec.segment_s * RATE))
    x = rng.normal(0.0, AUDIO_NOISE, n).astype(np.float32)
    if seg.event is not None and seg.event[0] == "loud sound":
        b, i = boom(), int(round(seg.event[3] * RATE))
        x[i:i + len(b)] += b[:n - i]
    return np.clip(x, -1, 1)


def encode_segment(spec: Spec, seg: Segment, base: np.ndarray, out: Path) -> Path:
    """The segment's video: x264 (fixed GOP, no B-frames, CRF), the same parameters for every segment."""
    import av

    gop = int(round(GOP_S * spec.fps))
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.mp4")
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("libx264", rate=spec.fps)
        vs.width, vs.height, vs.pix_fmt = spec.size[0], spec.size[1], "yuv420p"
        vs.options = {"preset": "veryfast", "crf": str(CRF),
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        for k, img in enumerate(segment_frames(spec, seg, base)):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts, fr.time_base = k, Fraction(1, spec.fps)
            for p in vs.encode(fr):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    os.replace(tmp, out)
    return out


# -- joining: video packets with new timestamps (no re-encode), audio encoded in one go ----------------

def _packets(path: Path) -> tuple[list, Any]:
    """A segment's video packets (data, pts, key) and their time base."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in c.demux(v) if p.pts is not None and p.size], v.time_base


def join(spec: Spec, slots: list[Segment], files: dict[str, Path], out: Path) -> None:
    """The slots' video packets one after the other, and the day's audio (each slot's samples) as one
    continuous AAC stream, interleaved as a camera writes them. (AAC encoded per segment and joined
    clicks at every join — a decoder starts each piece without its predecessor's overlap — which the
    anomaly pass rightly hears as a sharp onset every 64 s.)"""
    import av

    pk = {k: _packets(p) for k, p in files.items()}
    sounds: dict[str, np.ndarray] = {}
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.mp4")
    with av.open(str(files[slots[0].key()])) as src, av.open(str(tmp), "w") as dst:
        vs = dst.add_stream_from_template(src.streams.video[0])
        as_ = dst.add_stream("aac", rate=RATE)
        as_.layout, as_.bit_rate = "mono", 24000
        vtb = src.streams.video[0].time_base
        vstep = int(round(1 / (spec.fps * vtb)))
        per_slot = int(round(spec.segment_s * RATE))
        for i, seg in enumerate(slots):
            vp, _tb = pk[seg.key()]
            if seg.key() not in sounds:
                sounds[seg.key()] = segment_audio(spec, seg)
            audio = sounds[seg.key()]
            voff, v0, ai = int(round(i * spec.segment_s / vtb)), vp[0][1], 0
            for k, (data, pts, key) in enumerate(vp):
                p = av.Packet(data)
                p.pts = p.dts = voff + pts - v0
                p.time_base, p.stream, p.is_keyframe, p.duration = vtb, vs, key, vstep
                dst.mux(p)
                upto = per_slot if k == len(vp) - 1 else min(per_slot, (k + 1) * RATE // spec.fps)
                while ai < upto:  # per_slot is a whole number of 1024-sample frames
                    af = av.AudioFrame.from_ndarray(audio[None, ai:ai + 1024].copy(), format="flt", layout="mono")
                    af.sample_rate, af.pts, af.time_base = RATE, i * per_slot + ai, Fraction(1, RATE)
                    for q in as_.encode(af):
                        dst.mux(q)
                    ai += 1024
        for q in as_.encode(None):
            dst.mux(q)
    os.replace(tmp, out)


def build(spec: Spec, folder: Path | None = None, log=print) -> tuple[Path, dict]:
    """The footage and its ground truth (cached: built once per spec)."""
    folder = (folder or CACHE / "longfootage")
    out, meta_path = folder / f"{spec.name()}.mp4", folder / f"{spec.name()}.json"
    if out.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        _slots, events, normal = plan(spec)  # the truth is the plan's (cheap): a file built before a
        if meta["events"] != events:  # change of how onsets are defined gets the current definition
            meta.update(events=events, normal=list(normal))
            meta_path.write_text(json.dumps(meta, indent=1))
        return out, meta
    t0 = time.perf_counter()
    seg_dir = folder / f"segments_{spec.tag()}_seed{spec.seed}"
    seg_dir.mkdir(parents=True, exist_ok=True)
    slots, events, normal = plan(spec)
    distinct = list(dict.fromkeys(slots))
    base = _base(spec)
    files = {}
    for j, seg in enumerate(distinct):
        f = seg_dir / f"{seg.key()}.mp4"
        if not f.exists():
            log(f"  encoding segment {j + 1}/{len(distinct)}: {seg.key()}")
            encode_segment(spec, seg, base, f)
        files[seg.key()] = f
    t_enc = time.perf_counter() - t0
    log(f"  joining {len(slots)} slots of {spec.segment_s:g} s by remuxing…")
    join(spec, slots, files, out)
    meta = {"version": GEN_VERSION, "spec": {f.name: getattr(spec, f.name) for f in fields(spec)},
            "path": str(out), "duration_s": len(slots) * spec.segment_s, "fps": spec.fps,
            "size": list(spec.size), "audio_rate": RATE, "gop_s": GOP_S, "crf": CRF,
            "normal": list(normal), "events": events,
            "light": [[round(i * spec.segment_s, 3), s.g0, s.g1] for i, s in enumerate(slots)],
            "distinct_segments": len(distinct), "encode_s": round(t_enc, 1),
            "build_s": round(time.perf_counter() - t0, 1), "size_bytes": out.stat().st_size}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out, json.loads(meta_path.read_text())  # the same whether built now or found


def packet_counts(path: Path) -> dict:
    """Video packets, keyframes and audio packets, by demuxing (no decoding)."""
    import av

    n = {"video_packets": 0, "keyframes": 0, "audio_packets": 0}
    with av.open(str(path)) as c:
        for p in c.demux(c.streams.video[0], c.streams.audio[0]):
            if p.size:
                if p.stream.type == "video":
                    n["video_packets"] += 1
                    n["keyframes"] += bool(p.is_keyframe)
                else:
                    n["audio_packets"] += 1
    return n


# -- the harness --------------------------------------------------------------------------------

def _with_gate(cls, gate: bool) -> dict:
    """``gate=...`` where the request has the field (the lead's change gating), else nothing."""
    return {"gate": gate} if any(f.name == "gate" for f in fields(cls)) else {}


def _in(events: list[dict], a: float, b: float) -> list[dict]:
    return [e for e in events if a <= e["onset"] < b]


def _provenance(d: Any) -> Any:
    """The gate's part of a run's provenance (params, notes), JSON-safe."""
    if isinstance(d, dict):
        return {k: _provenance(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_provenance(v) for v in d]
    return d if isinstance(d, (str, int, float, bool, type(None))) else str(d)


def perception_run(path: Path, meta: dict, start: float, end: float, gate: bool, models: tuple, fps: float) -> dict:
    """The analyze job over [start, end): its cost, each planted object found or missed (a confirmed
    detection of its class while it is in view), confirmed objects elsewhere per hour."""
    from core.jobs import HeadlessState
    from core.perception.analysis import AnalysisRequest, analyze, planned_frames

    req = AnalysisRequest(str(path), models=models, fps=fps, start=start, end=end, **_with_gate(AnalysisRequest, gate))
    t0 = time.perf_counter()
    res = analyze(req, HeadlessState(bar=True, label=f"analyze {'gated' if gate else 'dense'}"))
    wall = time.perf_counter() - t0
    span = end - start
    found: dict[str, Any] = {}
    stray: set = set()
    stray_n = 0
    truth = [e for e in _in(meta["events"], start, end) if e["kind"] != "loud sound"]
    for out in res.outputs.values():
        if out.task != "detect" or out.error:
            continue
        ev = out.evidence or [[{"confirmed": True}] * len(d) for _t, d in out.frames]
        for (t, dets), verdicts in zip(out.frames, ev):
            for d, v in zip(dets, verdicts):
                if not v.get("confirmed"):
                    continue
                hit = [e for e in truth if d.label in e["labels"] and e["visible_from"] - 0.5 <= t <= e["visible_to"] + 0.5]
                for e in hit:
                    k = f"{e['kind']} at {e['onset']:.1f}"
                    found[k] = min(found.get(k, math.inf), t - e["onset"])  # the first confirmed sighting
                if not hit and not any(e["visible_from"] - 2 <= t <= e["visible_to"] + 2 for e in truth):
                    stray_n += 1
                    stray.add((out.name, d.label, d.track_id))
    params = {n: _provenance(o.params.get("gate")) for n, o in res.outputs.items() if o.params.get("gate")}
    planted = {f"{e['kind']} at {e['onset']:.1f}": found.get(f"{e['kind']} at {e['onset']:.1f}") for e in truth}
    return {"start": start, "end": end, "media_s": span, "gate": gate, "wall_s": wall, "compute_s": res.compute_s,
            "ratio": res.compute_s / span, "planted": planted, "errors": {n: o.error for n, o in res.outputs.items() if o.error},
            "confirmed_elsewhere": stray_n, "stray_tracks": len(stray),
            "stray_tracks_per_hour": len(stray) / (span / 3600), "gate_provenance": params,
            "frames": {n: len(o.frames) for n, o in res.outputs.items() if o.frames},
            "planned_frames": planned_frames(start, end, fps)}


def anomaly_run(path: Path, meta: dict, end: float, gate: bool) -> dict:
    """The anomaly pass over [0, end) learning from the JSON's normal stretch: its cost, each planted
    event found (an event overlapping it) with its onset error, the other events per hour."""
    from core.anomaly.pipeline import AnomalyRequest, run_anomalies
    from core.jobs import HeadlessState
    from core.store.project import Project

    normal = tuple(meta["normal"])
    with tempfile.TemporaryDirectory() as tmp, Project.create(Path(tmp) / "a.kestrel") as project:
        t0 = time.perf_counter()
        r = run_anomalies(project, str(path), HeadlessState(bar=True, label=f"anomalies {'gated' if gate else 'dense'}"),
                          normal=normal, end=end, thumbnails=False, **_with_gate(AnomalyRequest, gate))
        wall = time.perf_counter() - t0
    truth = _in(meta["events"], normal[1], end)
    planted, matched = {}, set()
    for e in truth:
        near = [x for x in r.events if x.start <= e["end"] + 1.0 and x.end >= e["onset"] - 1.0]
        err = min((x.start - e["onset"] for x in near), key=abs) if near else None
        planted[f"{e['kind']} at {e['onset']:.1f}"] = err
        matched.update(id(x) for x in near)
    other = [x for x in r.events if id(x) not in matched and x.start >= normal[1]]
    scored_h = max(1e-9, (end - normal[1]) / 3600)
    gate_prov = {k: _provenance(v) for k, v in r.features.params.items() if "gate" in k}
    return {"end": end, "media_s": end, "gate": gate, "wall_s": wall, "compute_s": r.compute_s,
            "ratio": r.compute_s / end, "timings": {k: round(v, 2) for k, v in r.timings.items()},
            "planted": planted, "other_events": len(other), "other_per_hour": len(other) / scored_h,
            "other": [(round(x.start, 1), round(x.end, 1), x.label) for x in other[:40]],
            "gate_provenance": gate_prov, "notes": [n for n in r.notes if "gat" in n.lower() or "sampl" in n.lower()]}


def _onsets(planted: dict) -> str:
    return "; ".join(f"{k}: {'MISSED' if v is None else f'{v:+.1f} s'}" for k, v in planted.items()) or "none in range"


def extrapolate(r: dict, seconds: float) -> float:
    """A slice's compute time scaled to ``seconds`` of media; training (paid once) is not scaled."""
    once = r.get("timings", {}).get("train", 0.0)
    return once + (r["compute_s"] - once) * seconds / r["media_s"]


def _print_run(name: str, r: dict, extrapolate_to: float | None = None) -> None:
    ext = ""
    if extrapolate_to:
        r["extrapolated_s"] = extrapolate(r, extrapolate_to)
        ext = (f" → {r['extrapolated_s']:.0f} s = {r['extrapolated_s'] / extrapolate_to:.4f}× for the whole file "
               f"(EXTRAPOLATED from this slice{', training counted once' if 'timings' in r else ''})")
    print(f"  {name}: {r['media_s']:.0f} s of media, compute {r['compute_s']:.1f} s (wall {r['wall_s']:.1f} s) "
          f"= {r['ratio']:.4f}× real time{ext}")
    print(f"    planted: {_onsets(r['planted'])}")
    if "other_events" in r:
        print(f"    other (false) events: {r['other_events']} = {r['other_per_hour']:.2f} per hour (goal ≤ 1)"
              + (f": {r['other'][:8]}" if r["other"] else ""))
        print(f"    timings: {r['timings']}")
    else:
        print(f"    confirmed objects outside the planted events: {r['stray_tracks']} tracks "
              f"({r['stray_tracks_per_hour']:.2f} per hour, {r['confirmed_elsewhere']} detections); "
              f"frames analysed: {r['frames']} of {r['planned_frames']} at the full rate"
              + (f"; errors {r['errors']}" if r["errors"] else ""))
    print(f"    gating (run provenance): {json.dumps(r['gate_provenance']) if r['gate_provenance'] else 'none recorded'}"
          + (f"; notes: {r['notes']}" if r.get("notes") else ""))


def perception_and_anomalies(path: Path, meta: dict, args, parts: set) -> dict:
    dur = float(meta["duration_s"])
    b0 = float(meta["normal"][1])
    b1 = min(dur, b0 + args.baseline_minutes * 60)
    from core.perception.analysis import AnalysisRequest

    gated = bool(_with_gate(AnalysisRequest, True))
    out: dict[str, Any] = {}
    models = tuple(m for m in args.models.split(",") if m)
    if "perception" in parts:
        print(f"\n== perception ({', '.join(models)} at {args.fps:g} fps, tracking, confirmation) ==")
        if not gated:
            print("  (AnalysisRequest has no gate field yet: the 'gated' run below is the ungated job)")
        g = perception_run(path, meta, 0.0, dur, True, models, args.fps)
        b = perception_run(path, meta, b0, b1, False, models, args.fps)
        _print_run("whole file, gated", g)
        _print_run(f"baseline (gate off), {b['media_s'] / 60:.0f} min slice {b0:.0f}–{b1:.0f} s", b, dur)
        out["perception"] = {"gated": g, "baseline": b, "speedup": b["extrapolated_s"] / max(g["compute_s"], 1e-12)}
        print(f"  gated vs baseline (extrapolated) over the whole file: {out['perception']['speedup']:.1f}× cheaper")
    if "anomaly" in parts:
        print(f"\n== anomalies (normal stretch {b0:.0f} s learned; sensitivity default) ==")
        g = anomaly_run(path, meta, dur, True)
        b = anomaly_run(path, meta, b1, False)
        _print_run("whole file, gated", g)
        _print_run(f"baseline (gate off), 0–{b1:.0f} s (normal stretch + {b1 - b0:.0f} s)", b, dur)
        # the gated run judged on the baseline's slice, for a like-for-like comparison
        sl = {k: v for k, v in g["planted"].items() if b0 <= float(k.rsplit(" ", 1)[1]) < b1}
        other_sl = sum(1 for s, _e, _l in g["other"] if s < b1) if len(g["other"]) < 40 else None
        print(f"    gated, on the baseline's slice: planted {_onsets(sl)}; other events {other_sl}")
        out["anomaly"] = {"gated": g, "baseline": b, "speedup": b["extrapolated_s"] / max(g["compute_s"], 1e-12)}
        print(f"  gated vs baseline (extrapolated) over the whole file: {out['anomaly']['speedup']:.1f}× cheaper")
    if "perception" in out and "anomaly" in out:
        tot = out["perception"]["gated"]["ratio"] + out["anomaly"]["gated"]["ratio"]
        base = (out["perception"]["baseline"]["extrapolated_s"] + out["anomaly"]["baseline"]["extrapolated_s"]) / dur
        found = out["anomaly"]["gated"]["planted"]
        ok_on = all(v is not None and abs(v) <= 1.0 for v in found.values())
        fph = out["anomaly"]["gated"]["other_per_hour"]
        print(f"\n== perception + anomalies over {dur / 3600:.2f} h ==\n"
              f"  gated: {tot:.4f}× real time = {tot * dur / 60:.1f} min of compute (goal ≤ 0.02× over 24 h: "
              f"{'met' if tot <= 0.02 else 'NOT met'}); baseline (extrapolated from its slice): {base:.4f}× = "
              f"{base * dur / 60:.1f} min")
        print(f"  anomalies: every planted event found with onset within ±1 s: {'yes' if ok_on else 'NO'}; "
              f"false events per hour {fph:.2f} (goal ≤ 1: {'met' if fph <= 1 else 'NOT met'})")
        out["total"] = {"gated_ratio": tot, "baseline_ratio_extrapolated": base, "onsets_ok": ok_on,
                        "false_per_hour": fph}
    return out


def _other_part(name: str, module: str, fn: str, **kw) -> dict | None:
    """A part another bench provides; "not available yet" when it does not exist."""
    import importlib

    print(f"\n== {name} ==")
    try:
        f = getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        print(f"  not available yet ({module}.{fn}: {e})")
        return None
    r = f(**kw)
    for k, v in (r or {}).items():
        print(f"  {k}: {v}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="all",
                    help="perception|anomaly|focus|timeline|ray|all, or several comma-separated")
    ap.add_argument("--hours", type=float, default=24.0, help="length of the footage (0.25 for a quick check)")
    ap.add_argument("--events", type=int, default=None, help="planted events (default: 10 a day, at least 3)")
    ap.add_argument("--scene", choices=tuple(SCENES), default="wall")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--baseline-minutes", type=float, default=10.0,
                    help="the ungated baseline runs over this much footage after the normal stretch")
    ap.add_argument("--models", default="ssd-mobilenet-v2-coco", help="perception models (comma-separated)")
    ap.add_argument("--fps", type=float, default=2.0, help="perception sampling rate")
    ap.add_argument("--focus-minutes", type=float, default=None,
                    help="FOCUS on this much footage (default: an hour, or --hours when shorter)")
    ap.add_argument("--detections", type=int, default=1_000_000, help="timeline: items in the file")
    ap.add_argument("--build-only", action="store_true", help="build (or find) the footage, print its numbers, stop")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args()
    every = {"perception", "anomaly", "focus", "timeline", "ray"}
    parts = every if args.part == "all" else set(args.part.split(","))
    if not parts <= every:
        ap.error(f"--part: unknown {', '.join(sorted(parts - every))}")

    spec = Spec(hours=args.hours, events=args.events, scene=args.scene, seed=args.seed)
    t0 = time.perf_counter()
    path, meta = build(spec, log=lambda m: print(m, file=sys.stderr))
    found_s = time.perf_counter() - t0
    from core.media.decode import probe

    info = probe(path, with_hash=False)
    print(f"footage: {path} ({path.stat().st_size / 1e9:.2f} GB), {info.summary()}")
    print(f"  built in {meta['build_s']:.0f} s ({meta['distinct_segments']} distinct {spec.segment_s:g} s segments "
          f"encoded in {meta['encode_s']:.0f} s, the rest remuxed)" + (" — cached" if found_s < meta["build_s"] / 2 else ""))
    print(f"  normal stretch {meta['normal'][0]:g}–{meta['normal'][1]:g} s; planted: "
          + ", ".join(f"{e['kind']} {e['onset']:.1f}–{e['end']:.1f} s" for e in meta["events"]))
    result: dict[str, Any] = {"footage": {**meta, "probe_duration_s": info.duration_s, "summary": info.summary()}}
    if args.build_only:
        t1 = time.perf_counter()
        counts = packet_counts(path)
        print(f"  packets: {counts} (counted by demuxing in {time.perf_counter() - t1:.0f} s)")
        result["footage"]["packets"] = counts
    def save() -> None:  # after every part: a long run stopped half-way keeps what it measured
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))

    save()
    if not args.build_only:
        if parts & {"perception", "anomaly"}:
            result.update(perception_and_anomalies(path, meta, args, parts))
            save()
        if "focus" in parts:
            result["focus"] = _other_part("FOCUS: a first and a second question on an hour (index vs AKS-style)",
                                          "bench.focus", "run_index_bench",
                                          minutes=args.focus_minutes or min(60.0, round(args.hours * 60)))
            save()
        if "timeline" in parts:
            result["timeline"] = _other_part(f"timeline with {args.detections:,} detections", "bench.timeline_scale",
                                             "run", n=args.detections)
            save()
        if "ray" in parts:
            result["ray"] = _other_part("Ray: 2 local workers against 1", "bench.cluster", "run")
            save()
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
