"""Change gating: where in a file anything changes, measured cheaply, so the expensive models
run where they can learn something and static stretches are sampled sparsely.

One pass in file order reads every packet of the video (no decoding: a coded frame's size is
the encoder's own measure of how much the picture changed since the frame it refers to — a
fixed camera's still scene codes to small, steady P-frames; a person walking in, a car, a light
switched on, a cut make them jump) and decodes the audio to its energy per bin. Each measure is
compared with the file's own floor around it (the quiet minutes within ±15 minutes, so a slow dusk or
a noisy sensor raise the floor, not the alarm). A bin above its floor by a margin is *active*;
active bins are widened by ``margin_s`` on both sides.

:meth:`ChangeMap.plan` turns that into sample times: the full rate inside active stretches,
and one frame every ``static_every_s`` elsewhere, placed on a keyframe (decoding a keyframe
costs one frame, not a group of pictures — "keyframes first when sampling sparsely"). Each
sample carries its *hold*: how long its result stands for (until the next sample). Nothing that
changes is skipped: a stretch is only sparse where neither the picture's coded size nor the
sound rose above the floor. The rates and thresholds go into the run's provenance
(:meth:`ChangeMap.provenance`).

A file whose packets carry no timestamps, or whose demuxing fails, gives no map
(:func:`scan_changes` raises :class:`MediaError`); callers then sample densely and say so.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import warnings
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.jobs import check, set_media_span
from core.media.check import display_name, finite_seconds, packets, time_base
from core.media.decode import MediaError, _check_readable, _open, usable_stream

log = logging.getLogger(__name__)

CHANGES_VERSION = 1
MAX_SPAN_S = 8 * 86400.0  # a longer range is not gated (its bins would not fit; such spans are damaged files)


@dataclass(frozen=True)
class GateParams:
    """What decides where the models run (recorded with every gated run)."""

    bin_s: float = 0.5  # the change measures' resolution
    video_k: float = 1.0  # active: above the top of the quiet spread by this many spreads …
    video_rel: float = 0.30  # … or by this share of the quiet level, whichever is more
    audio_db: float = 8.0  # active: this many dB above the audio floor
    margin_s: float = 2.0  # each active stretch widened by this on both sides
    floor_window_s: float = 1800.0  # the floor: quiet blocks within this much footage around a bin
    static_every_s: float = 30.0  # one sample this often where nothing changes
    # a coded frame this large against the file's keyframes is motion whatever the floor says
    # (a film or a handheld shot moves throughout: its "quiet" minutes are not still)
    still_share: float = 0.25
    # keyframes compared with the keyframe before (blocks of a 64×36 grey thumbnail, the picture's
    # overall shift taken out): a block this much brighter or darker (0..1) is a change, whatever
    # the coded sizes say (smooth motion of a flat object codes cheaply)
    key_change: float = 0.04
    min_span_s: float = 600.0  # shorter ranges are sampled densely (cheap anyway; nothing to gain)

    def params(self) -> dict[str, Any]:
        return {"version": CHANGES_VERSION, **asdict(self)}


@dataclass
class ChangeMap:
    """Per-bin change measures of [start, end) of one file (see the module docstring)."""

    start: float
    end: float
    params: GateParams
    video: np.ndarray | None  # mean coded bytes per frame in each bin (NaN: no frame starts there)
    audio_db: np.ndarray | None  # energy in dB (full scale) per bin (NaN: no audio there)
    keyframes: np.ndarray  # keyframe times (s), sorted
    keyframe_bytes: float = 0.0  # the median coded size of a keyframe
    # per keyframe: how much its picture differs from the keyframe before (the largest block
    # change less the picture's overall shift; NaN for the first or an undecodable one)
    key_change: np.ndarray | None = None
    frames: np.ndarray | None = None  # video frames starting in each bin (sparse timestamps leave none)
    scan_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    _active: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_bins(self) -> int:
        return max(1, int(math.ceil((self.end - self.start) / self.params.bin_s - 1e-9)))

    def bin_times(self) -> np.ndarray:
        return self.start + np.arange(self.n_bins) * self.params.bin_s

    # -- what is active ---------------------------------------------------------------
    def video_active(self) -> np.ndarray:
        if self.video is None:
            return np.zeros(self.n_bins, bool)
        floor, top = rolling_floor(self.video, self._floor_bins())
        p = self.params
        # above the top of the quiet spread by that spread again (or a share of the level)
        thr = top + np.maximum(p.video_k * (top - floor), p.video_rel * floor)
        if self.keyframe_bytes > 0:
            thr = np.minimum(thr, p.still_share * self.keyframe_bytes)
        with np.errstate(invalid="ignore"):
            active = np.nan_to_num(self.video, nan=-np.inf) > thr
        return active | self.key_active()

    def key_active(self) -> np.ndarray:
        """Bins between two keyframes whose pictures differ (see GateParams.key_change)."""
        out = np.zeros(self.n_bins, bool)
        kc = self.key_change
        if kc is None or kc.size < 2:
            return out
        floor, _top = rolling_floor(kc, max(8, int(self.params.floor_window_s / max(self._gop(), 0.1))))
        with np.errstate(invalid="ignore"):  # well above the sensor's own flicker, and above key_change
            hit = np.nan_to_num(kc, nan=0.0) > np.maximum(self.params.key_change, 4.0 * floor)
        for k in np.nonzero(hit)[0]:
            a = self.keyframes[k - 1] if k > 0 else self.start
            b = self.keyframes[k]
            i0 = max(0, int(math.floor((a - self.start) / self.params.bin_s)))
            i1 = min(self.n_bins, int(math.ceil((b - self.start) / self.params.bin_s)) + 1)
            out[i0:i1] = True
        return out

    def _gop(self) -> float:
        return float(np.median(np.diff(self.keyframes))) if self.keyframes.size > 1 else 1.0

    def audio_active(self) -> np.ndarray:
        if self.audio_db is None:
            return np.zeros(self.n_bins, bool)
        floor, _top = rolling_floor(self.audio_db, self._floor_bins())
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(self.audio_db, nan=-np.inf) > floor + self.params.audio_db

    def active(self) -> np.ndarray:
        """Bins where the picture or the sound changes, widened by ``margin_s``."""
        if self._active is None:
            raw = self.video_active() | self.audio_active()
            self._active = dilate(raw, int(math.ceil(self.params.margin_s / self.params.bin_s)))
        return self._active

    def intervals(self, which: str = "any") -> list[tuple[float, float]]:
        """Active stretches as (start, end) seconds; ``which``: "any", "video" or "audio"."""
        m = int(math.ceil(self.params.margin_s / self.params.bin_s))
        raw = (self.active() if which == "any" else
               dilate(self.video_active() if which == "video" else self.audio_active(), m))
        return runs(raw, self.start, self.params.bin_s, self.end)

    def active_share(self) -> float:
        return float(self.active().mean()) if self.n_bins else 0.0

    def is_active(self, t0: float, t1: float) -> bool:
        """True if any bin overlapping [t0, t1) is active."""
        a = self.active()
        i0 = max(0, int(math.floor((t0 - self.start) / self.params.bin_s)))
        i1 = min(len(a), int(math.ceil((t1 - self.start) / self.params.bin_s)))
        return bool(a[i0:max(i1, i0 + 1)].any()) if i0 < len(a) else False

    # -- where to sample ----------------------------------------------------------------
    def plan(self, fps: float, static_every_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sample times and holds: every ``1/fps`` on the grid ``start + k/fps`` inside active
        stretches; elsewhere the first grid time at or after a keyframe, one per
        ``static_every_s``. Times are sorted and unique; ``holds[i]`` is how long sample i
        stands for (up to the next sample, or the end)."""
        step = 1.0 / max(fps, 1e-6)
        every = self.params.static_every_s if static_every_s is None else static_every_s
        n = int(math.floor((self.end - self.start) * fps + 1e-9))
        n = max(1, n)
        k = np.arange(n)
        grid = self.start + k * step
        grid = grid[grid < self.end - 1e-9] if n > 1 else grid
        act = self.active()
        bi = np.minimum(((grid - self.start) / self.params.bin_s).astype(np.int64), len(act) - 1)
        chosen = act[bi].copy()
        chosen[0] = True  # the first frame always
        # static refreshes: the keyframe nearest after each multiple of static_every
        kf = self.keyframes[(self.keyframes >= self.start) & (self.keyframes < self.end)]
        marks = self.start + np.arange(0.0, self.end - self.start, max(every, step))
        if kf.size:
            j = np.searchsorted(kf, marks)
            cand = np.where(j < kf.size, kf[np.minimum(j, kf.size - 1)], marks)
            # a keyframe farther than one interval away does not stand for this mark
            cand = np.where(cand - marks < every, cand, marks)
        else:
            cand = marks
        if self.frames is not None:  # a mark with no frame starting within its interval has nothing new
            c = np.concatenate([[0], np.cumsum(self.frames)])
            b0 = np.clip(((marks - self.start) / self.params.bin_s).astype(np.int64), 0, len(self.frames))
            b1 = np.clip(np.ceil((marks + every - self.start) / self.params.bin_s).astype(np.int64), 0,
                         len(self.frames))
            cand = cand[(c[b1] - c[b0]) > 0]
        gi = np.minimum(np.ceil((cand - self.start) * fps - 1e-6).astype(np.int64), len(grid) - 1)
        chosen[np.clip(gi, 0, len(grid) - 1)] = True
        times = grid[chosen]
        holds = np.diff(np.append(times, self.end))
        return times, np.maximum(holds, 1e-6)

    def provenance(self, fps: float | None = None) -> dict[str, Any]:
        """The gate's settings and what it decided, for a run's parameters."""
        out: dict[str, Any] = {"gate": self.params.params(), "active_share": round(self.active_share(), 4),
                               "active_stretches": len(self.intervals()), "keyframes": int(self.keyframes.size),
                               "scan_s": round(self.scan_s, 2)}
        if fps:
            times, _h = self.plan(fps)
            span = max(self.end - self.start, 1e-9)
            out["rates"] = {"active_fps": fps, "static_every_s": self.params.static_every_s,
                            "samples": int(times.size), "dense_samples": int(math.floor(span * fps + 1e-9)) or 1}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def _floor_bins(self) -> int:
        return max(8, int(round(self.params.floor_window_s / self.params.bin_s)))


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` widened by ``r`` bins on both sides."""
    if r <= 0 or not mask.any():
        return mask.copy()
    c = np.concatenate([[0], np.cumsum(mask.astype(np.int64))])
    n = len(mask)
    i = np.arange(n)
    lo, hi = np.maximum(0, i - r), np.minimum(n, i + r + 1)
    return (c[hi] - c[lo]) > 0


def runs(mask: np.ndarray, start: float, bin_s: float, end: float) -> list[tuple[float, float]]:
    """True runs of ``mask`` as (start, end) seconds."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    a, b = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return [(start + i * bin_s, min(end, start + j * bin_s)) for i, j in zip(a, b)]


def rolling_floor(x: np.ndarray, window: int, block: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """The quiet level of ``x`` around each bin, and the top of its normal spread.

    ``x`` is cut into blocks of ``block`` bins; each block gives its median and its 95th
    percentile. Around each block (±window/2) the *lower quartile* of those block statistics
    is taken: quiet blocks set the level, so a busy stretch cannot raise it (it takes three
    busy blocks in four around a bin to move it). NaN bins are ignored; a stretch with no data
    takes the file's values."""
    n = len(x)
    block = max(4, min(block, max(4, window // 4)))
    nb = int(math.ceil(n / block))
    pad = np.full(nb * block, np.nan)
    pad[:n] = x
    blocks = pad.reshape(nb, block)
    with warnings.catch_warnings():  # an all-NaN block (no frame in it) is expected: it is filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        bmed = np.nanmedian(blocks, axis=1)
        bhi = np.nanpercentile(blocks, 95.0, axis=1)
    fill_m = np.nanmedian(bmed) if np.isfinite(bmed).any() else 0.0
    fill_h = np.nanmedian(bhi) if np.isfinite(bhi).any() else 0.0
    bmed = np.where(np.isfinite(bmed), bmed, fill_m)
    bhi = np.where(np.isfinite(bhi), bhi, fill_h)
    half = max(1, (window // block) // 2)
    fm, fh = np.empty(nb), np.empty(nb)
    for i in range(nb):  # nb is small: a day at 0.5 s bins in blocks of 60 s is 1440 blocks
        lo, hi = max(0, i - half), min(nb, i + half + 1)
        fm[i] = np.percentile(bmed[lo:hi], 25.0)
        fh[i] = np.percentile(bhi[lo:hi], 25.0)
    return np.repeat(fm, block)[:n], np.maximum(np.repeat(fh, block)[:n], np.repeat(fm, block)[:n])


# -- the scan ------------------------------------------------------------------------------

def scan_changes(path: str | os.PathLike, *, start: float = 0.0, end: float | None = None,
                 params: GateParams | None = None, state: Any = None, audio: bool = True) -> ChangeMap:
    """One file-order pass over [start, end): coded frame sizes, keyframe times, audio energy.

    Cached in this process by (path, size, mtime, range, params): the analysis job and the
    anomaly pass over the same file share one scan. Raises :class:`MediaError` when the file
    cannot be demuxed or its video packets carry no timestamps."""
    params = params or GateParams()
    p = _check_readable(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, round(float(start), 3),
           None if end is None else round(float(end), 3), params.bin_s, bool(audio))
    with _LOCK:  # the measures depend on the bins only: other thresholds reuse the same scan
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return replace(hit, params=params, _active=None)
    cm = _scan(p, float(start), end, params, state, audio)
    with _LOCK:
        _CACHE[key] = cm
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
    return cm


_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def _scan(p: Path, start: float, end: float | None, params: GateParams, state: Any, audio: bool) -> ChangeMap:
    import av

    t_scan = time.perf_counter()
    name = display_name(p)
    try:
        c = _open(p)
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name} cannot be read for change gating ({e}).") from e
    try:
        vs = usable_stream(c, "video")
        aus = usable_stream(c, "audio") if audio else None
        if vs is None:
            raise MediaError(f"{name} has no video stream to gate.")
        dur = finite_seconds(c.duration / 1e6) if c.duration else 0.0
        if end is None:
            end = dur or 0.0
        origin = float(c.start_time) / 1e6 if c.start_time is not None else 0.0
        vtb = time_base(vs)
        atb = time_base(aus) if aus is not None else None
        if end is None or end <= start:
            end = max(dur, start + params.bin_s)
        span = end - start
        if span > MAX_SPAN_S:
            raise MediaError(f"{name} claims {span / 86400:.0f} days of footage in one range: change gating is "
                             "off for it.")
        if state is not None:
            set_media_span(state, span)
        n = max(1, int(math.ceil(span / params.bin_s - 1e-9)))
        vbytes, vframes = np.zeros(n), np.zeros(n)
        kbytes, kframes = np.zeros(n), np.zeros(n)
        asq, acount = np.zeros(n), np.zeros(n)
        keyframes: list[float] = []
        ksizes: list[int] = []
        kpts: list[int] = []
        kmap: dict[int, np.ndarray] = {}  # keyframe pts → its blocks (frame threads return them late)
        stamped = 0
        if start > 0:
            try:
                c.seek(int(max(0.0, start - 10.0 + origin) / vtb), stream=vs, backward=True, any_frame=False)
            except (av.error.FFmpegError, OverflowError):
                c.seek(0)
        try:  # the keyframes only feed a 64×36 thumbnail: the deblocking filter buys nothing there;
            # keyframes are independent, so two decode at once on two threads
            vs.codec_context.options = {**dict(vs.codec_context.options or {}), "skip_loop_filter": "all"}
            vs.thread_type = "FRAME"
            vs.codec_context.thread_count = min(2, os.cpu_count() or 1)
        except (AttributeError, TypeError, ValueError):
            pass
        streams = [vs] + ([aus] if aus is not None else [])
        acc = aus.codec_context if aus is not None else None
        last_report = time.monotonic()
        done_v = False
        for pkt in packets(c, streams, name, log):
            if pkt.stream.index == vs.index:
                if pkt.size == 0:
                    continue
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                if ts is None:
                    continue
                stamped += 1
                t = ts * vtb - origin
                if t >= end:
                    done_v = True
                    if aus is None:
                        break
                    continue
                if pkt.is_keyframe:
                    if t < start:
                        continue
                    keyframes.append(t)
                    kpts.append(ts)
                    _key_blocks(vs.codec_context, pkt, kmap)
                if t < start:
                    continue
                b = int((t - start) / params.bin_s)
                if 0 <= b < n:
                    if pkt.is_keyframe:
                        kbytes[b] += pkt.size
                        kframes[b] += 1
                        ksizes.append(pkt.size)
                    else:
                        vbytes[b] += pkt.size
                        vframes[b] += 1
                now = time.monotonic()
                if state is not None and now - last_report > 0.25:
                    last_report = now
                    check(state)
                    state.set_progress(min(1.0, (t - start) / span), "looking for change")
            elif acc is not None:
                if pkt.pts is None or pkt.size == 0:
                    continue
                ta = pkt.pts * atb - origin
                if ta >= end:
                    if done_v:
                        break
                    continue
                if ta + 1.0 < start:
                    continue
                try:
                    frames = acc.decode(pkt)
                except (av.error.FFmpegError, ValueError):
                    continue
                for f in frames:
                    _add_energy(f, atb, origin, start, params.bin_s, asq, acount)
        _key_blocks(vs.codec_context, None, kmap)  # the frames still in the decoder's threads
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{name} could not be scanned for change ({e}).") from e
    finally:
        c.close()
    if stamped == 0:
        raise MediaError(f"{name}: its video packets carry no timestamps, so change cannot be measured.")
    if state is not None:
        state.set_progress(1.0, "change measured")
    notes: list[str] = []
    if vframes.sum() > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            video = np.where(vframes > 0, vbytes / np.maximum(vframes, 1), np.nan)
    else:  # intra-only video (MJPEG…): the keyframes' own sizes
        with np.errstate(invalid="ignore", divide="ignore"):
            video = np.where(kframes > 0, kbytes / np.maximum(kframes, 1), np.nan)
        notes.append("every frame is a keyframe: change measured from frame sizes")
    audio_db = None
    if acount.sum() > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            audio_db = np.where(acount > 0, 10 * np.log10(asq / np.maximum(acount, 1) + 1e-12), np.nan)
    elif audio and aus is None:
        notes.append("no audio track: the picture alone decides")
    order = np.argsort(np.asarray(keyframes, np.float64), kind="stable")
    kf = np.asarray(keyframes, np.float64)[order]
    kc = key_changes([kmap.get(kpts[i]) for i in order])
    kb = float(np.median(ksizes)) if ksizes and vframes.sum() > 0 else 0.0
    return ChangeMap(start, float(end), params, video, audio_db, kf, kb, kc, vframes + kframes,
                     time.perf_counter() - t_scan, notes)


KEY_GRID = (16, 9)  # blocks of the keyframe comparison (each 4×4 pixels of a 64×36 thumbnail)


def _key_blocks(cc, pkt, out: dict[int, np.ndarray]) -> None:
    """Decode a keyframe's packet alone (None: flush) and file the block means (KEY_GRID, 0..1)
    of whatever frames come out under their pts."""
    import av
    try:
        frames = cc.decode(pkt)
    except (av.error.FFmpegError, ValueError):
        return
    for f in frames:
        if f.pts is None:
            continue
        g = f.to_ndarray(format="gray", width=KEY_GRID[0] * 4, height=KEY_GRID[1] * 4).astype(np.float32)
        out[int(f.pts)] = g.reshape(KEY_GRID[1], 4, KEY_GRID[0], 4).mean(axis=(1, 3)) / 255.0


def key_changes(blocks: list[np.ndarray | None]) -> np.ndarray:
    """Per keyframe, the largest block change from the keyframe before, less the median block
    change (a cloud, dusk or the camera's exposure moves every block alike)."""
    out = np.full(len(blocks), np.nan)
    for k in range(1, len(blocks)):
        a, b = blocks[k - 1], blocks[k]
        if a is None or b is None or a.shape != b.shape:
            continue
        d = b - a
        out[k] = float(np.max(np.abs(d - np.median(d))))
    return out


def _add_energy(f, tb: float, origin: float, start: float, bin_s: float, asq: np.ndarray, acount: np.ndarray) -> None:
    if f.pts is None or not f.samples:
        return
    x = f.to_ndarray()
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2 and x.shape[0] > 1 and f.format.is_planar:
        sq = np.mean(x * x, axis=0)
    else:
        sq = (x.reshape(-1) ** 2)
        ch = len(f.layout.channels) or 1
        if not f.format.is_planar and ch > 1:
            sq = sq.reshape(-1, ch).mean(axis=1)
    sr = f.sample_rate or 1
    t0 = f.pts * tb - origin - start
    b0 = int(math.floor(t0 / bin_s))
    b1 = int(math.floor((t0 + len(sq) / sr) / bin_s))
    n = len(asq)
    if b0 == b1:
        if 0 <= b0 < n:
            asq[b0] += float(sq.sum())
            acount[b0] += len(sq)
        return
    idx = np.floor((t0 + np.arange(len(sq)) / sr) / bin_s).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    if ok.any():
        asq += np.bincount(idx[ok], weights=sq[ok], minlength=n)[:n]
        acount += np.bincount(idx[ok], minlength=n)[:n]


def iter_plan(dec: Any, times: np.ndarray, holds: np.ndarray | None = None, *, max_failures: int = 50):
    """``(t, frame, hold)`` for each planned time, decoded in file order by ``dec``
    (a :class:`core.media.decode.VideoDecoder`: it decodes forward between close samples and
    seeks only to jump over a sparse stretch). A time with no decodable frame is skipped and
    its hold given to the sample before; after ``max_failures`` in a row the rest is skipped."""
    failures = 0
    for i, t in enumerate(times):
        try:
            frame = dec.frame_at(float(t))
        except MediaError as e:
            log.warning("no frame at %.2f s: %s", t, e)
            failures += 1
            if failures >= max_failures:
                log.warning("%d planned samples in a row without a frame: the rest is skipped", failures)
                return
            continue
        failures = 0
        yield float(t), frame, float(holds[i]) if holds is not None else 0.0
