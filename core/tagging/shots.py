"""Shot boundaries: where the camera cuts, in media seconds and frame numbers.

PySceneDetect's detectors find the cuts; Kestrel decodes the frames itself (PyAV, scaled
to ``ANALYSIS_WIDTH`` by FFmpeg while converting, as PySceneDetect's own auto-downscale
does) and feeds them one by one through the detectors' public ``process_frame`` API.
Its own PyAV backend with ``SceneManager`` finds the very same cuts on bikes, iscc_mp4,
city_mpg and fire2 at the same speed (checked), but runs decoding on a thread of its own,
offers a job neither progress nor cancel, and numbers frames as ``pts × average rate``
(approximate in variable-rate files). Here each decoded frame keeps its real timestamp and
its real position, and a job can report progress and stop between any two frames.

Shots tile the file: the first starts at 0, each following one at the timestamp of its
first frame, the last ends at the file's duration. ``start_frame``/``end_frame`` count
frames as :func:`core.media.decode.frame_index` does (``end_frame`` exclusive). A file without
video (audio only) is one shot with no frames.

Which detector: ``bench/shots.py`` runs ContentDetector, AdaptiveDetector and
HistogramDetector over clips whose cuts are known to the frame (a montage of real clips
made at known frame counts, bikes.mp4, city_mpg.mpg, iscc_mp4 labelled by eye) from one
decoding pass; the default below scored best there (numbers in the bench's docstring).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from core.jobs import JobState, check, set_media_span
from core.media.decode import MediaError, frame_index, frame_times, probe
from core.tagging import TaggingError
from core.timeline import Item, Track

log = logging.getLogger(__name__)

SHOTS_VERSION = "1"
SHOTS_KIND = "tagging/shots"
SHOTS_PRODUCER = "core.tagging.shots"
ANALYSIS_WIDTH = 256  # PySceneDetect's default effective width: cuts do not need detail
DETECTORS = ("adaptive-luma", "content", "adaptive", "histogram")
#: Best on the bench's clips (1 error in 49 known cuts; ContentDetector's default made 15):
#: hue is noise in dark and red pictures, and a ratio to the neighbouring frames' change
#: keeps fast motion from reading as cuts.
DEFAULT_DETECTOR = "adaptive-luma"
#: Detector thresholds when none is given (PySceneDetect's defaults).
DEFAULT_THRESHOLDS = {"adaptive-luma": 3.0, "content": 27.0, "adaptive": 3.0, "histogram": 0.05}
#: AdaptiveDetector's floor on the change itself (its default is 15). 8 keeps cuts between
#: title cards on black (Sintel's credits) that 15 misses; 5 let a false cut through on iscc.
MIN_CONTENT_VAL = 8.0
DEFAULT_MIN_SHOT_S = 0.4
_PROGRESS_EVERY = 25  # frames between progress reports / cancel checks
_MAX_BAD_PACKETS = 200  # damaged packets skipped before the file is called unreadable


@dataclass(frozen=True)
class Shot:
    """One shot: ``[start, end)`` media seconds, frames ``[start_frame, end_frame)``."""

    index: int
    start: float
    end: float
    start_frame: int
    end_frame: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def mid(self) -> float:
        return 0.5 * (self.start + self.end)

    def to_row(self) -> list[float]:
        return [self.start, self.end, float(self.start_frame), float(self.end_frame)]


def shots_from_rows(rows: np.ndarray) -> list[Shot]:
    """Shots back from ``[n, 4]`` rows (start, end, start_frame, end_frame)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    return [Shot(i, float(a), float(b), int(round(c)), int(round(d))) for i, (a, b, c, d) in enumerate(rows)]


def shot_params(detector: str = DEFAULT_DETECTOR, threshold: float | None = None,
                min_shot_s: float = DEFAULT_MIN_SHOT_S) -> dict[str, Any]:
    """What decides the shots: equal params give equal shots (and reuse stored ones)."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown shot detector {detector!r}; known: {', '.join(DETECTORS)}")
    thr = DEFAULT_THRESHOLDS[detector] if threshold is None else float(threshold)
    return {"version": SHOTS_VERSION, "detector": detector, "threshold": float(thr),
            "min_shot_s": round(float(min_shot_s), 4), "width": ANALYSIS_WIDTH}


def make_detector(detector: str, threshold: float, min_frames: int):
    """A fresh PySceneDetect detector (stateful: one per file)."""
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, HistogramDetector

    if detector == "adaptive-luma":
        return AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_frames, luma_only=True,
                                min_content_val=MIN_CONTENT_VAL)
    if detector == "content":
        return ContentDetector(threshold=threshold, min_scene_len=min_frames)
    if detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_frames)
    if detector == "histogram":
        return HistogramDetector(threshold=threshold, min_scene_len=min_frames)
    raise ValueError(f"unknown shot detector {detector!r}; known: {', '.join(DETECTORS)}")


@dataclass
class Scan:
    """What one decoding pass saw: every decoded frame's time, and the cuts per detector."""

    times: np.ndarray  # [n] media seconds of the frames fed to the detectors
    cuts: dict[str, list[int]]  # detector name → indices into ``times`` of each shot's first frame
    fps: float
    bad_packets: int = 0


def scan_cuts(path: str, detectors: Mapping[str, Any], state: JobState, *,
              on_frame: Callable[[int, float, np.ndarray], None] | None = None,
              width: int = ANALYSIS_WIDTH) -> Scan:
    """Decode every frame once (scaled to ``width``, BGR) and feed it to each detector.

    ``detectors`` maps a name to a PySceneDetect ``SceneDetector``; their frame numbers are
    the decoded frames' positions, mapped back to real timestamps here. ``on_frame(i, t,
    bgr)`` sees each frame too (benches use it for their own measures).
    Raises TaggingError when nothing decodes, Cancelled when the job is stopped.
    """
    import av
    from scenedetect import FrameTimecode

    from pathlib import Path

    from core.media.decode import MediaError, _open
    try:
        container = _open(Path(path))  # as every reader opens (a WAV's tail it does not own is never scanned)
    except MediaError as e:
        raise TaggingError(f"{_name(path)} cannot be read for shot detection: {e}") from e
    try:
        if not container.streams.video:
            raise TaggingError(f"{_name(path)} has no video stream to find shots in.")
        s = container.streams.video[0]
        s.thread_type = "AUTO"  # two cores decode faster than one; order is unaffected
        tb = float(s.time_base)
        origin = float(container.start_time) / 1e6 if container.start_time is not None else 0.0
        duration = float(container.duration) / 1e6 if container.duration else 0.0
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 25.0
        cc = s.codec_context
        w = min(width, int(cc.width or width)) // 2 * 2 or width
        h = max(2, int(round((cc.height or w) * w / max(1, cc.width or w))) // 2 * 2)
        times: list[float] = []
        cuts: dict[str, list[int]] = {k: [] for k in detectors}
        bad = 0
        last_tc = None
        demux = container.demux(s)
        while True:
            try:
                pkt = next(demux)
            except StopIteration:
                break
            except (av.error.InvalidDataError, av.error.EOFError, OSError) as e:
                log.warning("%s: demuxing stopped early at frame %d: %s", _name(path), len(times), e)
                break
            try:
                frames = pkt.decode()
            except (av.error.InvalidDataError, av.error.EOFError, ValueError) as e:
                bad += 1  # a damaged packet: skip it, as players do
                if bad > _MAX_BAD_PACKETS and not times:
                    raise TaggingError(f"{_name(path)}: the video does not decode (the file is damaged).") from e
                continue
            except av.error.FFmpegError as e:
                bad += 1
                log.debug("skipping undecodable packet: %s", e)
                continue
            for f in frames:
                if f.pts is None:
                    t = times[-1] + 1.0 / fps if times else 0.0
                else:
                    t = f.pts * tb - origin
                if times and t <= times[-1]:
                    continue  # a duplicate or out-of-order timestamp would break the numbering
                img = f.to_ndarray(format="bgr24", width=w, height=h)
                n = len(times)
                times.append(t)
                tc = FrameTimecode(n, fps)
                last_tc = tc
                for name, det in detectors.items():
                    cuts[name].extend(c.frame_num for c in det.process_frame(tc, img))
                if on_frame is not None:
                    on_frame(n, t, img)
                if n % _PROGRESS_EVERY == 0:
                    check(state)
                    if duration > 0:
                        state.set_progress(min(0.99, t / duration), f"shots: frame {n}")
        if not times:
            raise TaggingError(f"{_name(path)}: no video frame could be decoded (the file is damaged or empty).")
        if last_tc is not None:
            for name, det in detectors.items():
                cuts[name].extend(c.frame_num for c in det.post_process(last_tc))
        return Scan(np.asarray(times), {k: sorted({c for c in v if 0 < c < len(times)}) for k, v in cuts.items()},
                    fps, bad)
    finally:
        container.close()


def shots_from_cuts(cut_times: list[float], frame_t: np.ndarray, duration: float) -> list[Shot]:
    """Shots tiling ``[0, duration]`` from the start times of shots 2.., numbered by ``frame_t``."""
    n_frames = len(frame_t)
    starts = [0.0] + sorted(t for t in cut_times if t > 0)
    end_all = max(duration, float(frame_t[-1]) if n_frames else 0.0)
    shots: list[Shot] = []
    for k, t0 in enumerate(starts):
        t1 = starts[k + 1] if k + 1 < len(starts) else end_all
        f0 = 0 if k == 0 else frame_index(frame_t, t0)
        f1 = frame_index(frame_t, t1) if k + 1 < len(starts) else n_frames
        shots.append(Shot(k, float(t0), float(t1), int(f0), int(f1)))
    return shots


def detect_shots(path: str, state: JobState, threshold: float | None = None,
                 min_shot_s: float = DEFAULT_MIN_SHOT_S, detector: str = DEFAULT_DETECTOR) -> list[Shot]:
    """Job: the shots of a file, in time order (at least one).

    ``threshold`` is the detector's own: for the default ``adaptive-luma`` (PySceneDetect's
    AdaptiveDetector on luma) the ratio of a frame's change to its neighbours' (default 3);
    ContentDetector: mean HSV change 0–255 (default 27). Cuts closer than ``min_shot_s`` to
    the previous one are dropped (flashes, strobes).
    """
    p = shot_params(detector, threshold, min_shot_s)
    state.set_progress(0.0, "shots: reading file")
    try:
        info = probe(path, with_hash=False)
    except MediaError as e:
        raise TaggingError(f"Cannot find shots: {e}") from e
    set_media_span(state, info.duration_s)  # as a stage of describe_file (part of its bar) this goes no further
    if not info.has_video:
        state.set_progress(1.0, "shots: audio only")
        return [Shot(0, 0.0, info.duration_s, 0, 0)]
    try:
        ft = frame_times(path, cancelled=state.is_cancelled)
    except InterruptedError:
        check(state)
        raise
    except MediaError as e:
        raise TaggingError(f"Cannot find shots: {e}") from e
    fps = info.video.fps or 25.0
    min_frames = max(1, int(math.ceil(p["min_shot_s"] * fps - 1e-6)))
    scan = scan_cuts(path, {detector: make_detector(detector, p["threshold"], min_frames)}, state)
    if scan.bad_packets:
        log.warning("%s: %d damaged video packets skipped while finding shots", _name(path), scan.bad_packets)
    if len(ft) == 0:
        ft = scan.times
    shots = shots_from_cuts([float(scan.times[i]) for i in scan.cuts[detector]], ft, info.duration_s)
    state.set_progress(1.0, f"shots: {len(shots)}")
    return shots


def shots_track(shots: list[Shot], run_id: int | None = None, name: str = "shots") -> Track:
    """A timeline track with one interval per shot (kind "shots", registered in core.timeline)."""
    items = [Item(s.start, s.end, f"shot {s.index + 1}", 1.0, run_id,
                  {"index": s.index, "frames": [s.start_frame, s.end_frame]}) for s in shots]
    return Track("shots", name, items, run_id=run_id, meta={"count": len(shots)})


# -- storage ---------------------------------------------------------------------------------

def _key(params: Mapping[str, Any]) -> str:
    return f"{SHOTS_KIND}/" + hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:16]


def store_shots(project: Any, media_id: int, shots: list[Shot], params: Mapping[str, Any], *,
                started_at: float | None = None, duration_s: float = 0.0, track: bool = True) -> int:
    """Record the run, the shot table and (with ``track``) the timeline track; returns the run id."""
    with project.batch():  # the run and what it produced commit together
        run_id = project.record_run(kind=SHOTS_KIND, producer=SHOTS_PRODUCER, version=SHOTS_VERSION,
                                    params=dict(params), media_id=media_id,
                                    started_at=time.time() if started_at is None else started_at,
                                    duration_s=duration_s)
        rows = np.asarray([s.to_row() for s in shots], np.float64).reshape(-1, 4)
        project.put_array(media_id, _key(params), rows, meta={"params": dict(params), "run_id": run_id},
                          run_id=run_id)
        if track:
            tr = shots_track(shots, run_id)
            project.save_track(media_id, tr.kind, tr.name,
                               [{"start_s": i.start, "end_s": i.end, "label": i.label, "confidence": i.confidence,
                                 "run_id": i.run_id, "data": i.data} for i in tr.items], run_id=run_id, meta=tr.meta)
    return run_id


def load_shots(project: Any, media_id: int, params: Mapping[str, Any]) -> list[Shot] | None:
    """Stored shots for exactly these params (a finished run and its table), or None."""
    run = project.find_run(SHOTS_KIND, SHOTS_PRODUCER, SHOTS_VERSION, dict(params), media_id)
    if run is None:
        return None
    got = project.get_array(media_id, _key(params))
    if got is None or got[1].get("params") != dict(params):
        return None
    shots = shots_from_rows(got[0])
    return shots or None


def _name(path: Any) -> str:
    return str(path).rsplit("/", 1)[-1]
