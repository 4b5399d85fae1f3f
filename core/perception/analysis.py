"""The perception job: run the chosen models over a file (or a range) and make tracks.

``analyze(request, state)`` is a plain job: it decodes frames at the requested rate in file
order (never seeking per frame), batches them per visual model (core.perception.batching), tracks
detections, runs the audio models on 16 kHz mono, and reports partial results as it goes.
A model that fails to load or to run is reported and skipped; the others carry on.
``tracks_for`` turns a model's output into timeline tracks; storing and reusing them is in
:mod:`core.perception.ops`.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.media.audio import load_mono
from core.jobs import JobState, SubProgress, check, set_media_span
from core.media.changes import ChangeMap, GateParams, iter_plan, scan_changes
from core.perception.batching import GPU_BATCH, batch_sizes, slices
from core.media.decode import MediaError, VideoDecoder, probe
from core.timeline import Item, Track

log = logging.getLogger(__name__)

VISUAL_TASKS = ("detect", "faces", "ocr", "image-tags")
AUDIO_TASKS = ("vad", "asr", "speaker-embed", "audio-tags")  # the last two: core.perception.listen
DEFAULT_MODELS = ("ssd-mobilenet-v2-coco", "mtcnn-faces", "silero-vad", "whisper-tiny")
ASR_CHUNK_S = 60.0
# A frame on screen longer than this (a gap in the timestamps) is sampled this long only.
HOLD_S = 10.0


@dataclass(frozen=True)
class AnalysisRequest:
    path: str
    models: tuple[str, ...] = DEFAULT_MODELS
    fps: float = 2.0
    start: float = 0.0
    end: float | None = None  # None: to the end of the file
    user_paths: tuple[tuple[str, str], ...] = ()  # (model name, local path) for bring-your-own
    device: str | None = None
    batch: int = 4  # frames per model call on the CPU
    gpu_batch: int = GPU_BATCH  # … and for a model on a CUDA device (core.perception.batching)
    track: bool = True
    max_size: tuple[int, int] = (1920, 1080)  # frames larger than this are scaled down first
    # Objects that are there (core.perception.confirm): each detector's boxes are checked right
    # after detection (hits on a moving track, or a second look that agrees). Off: nothing is
    # confirmed (every box stays unconfirmed — the baseline of the cost bench, never facts).
    confirm: bool = True
    # the scene's confusions (core.perception.confirm.Confusion, from load_confusions(project).entries):
    # the suppressed ones leave their tracks unconfirmed. The caller loads them; the job stays project-free.
    confusions: tuple = ()
    # models whose licence the analyst accepted (BirdNET: non-commercial; off until named here)
    accept_licences: tuple[str, ...] = ()
    # change gating (core.media.changes): over a long range (≥ gate_params.min_span_s) the
    # models run at ``fps`` where the picture or the sound changes and once every
    # ``static_every_s`` elsewhere, each sample's result standing until the next. Off: every
    # 1/fps, the whole range (the baseline).
    gate: bool = True
    gate_params: GateParams | None = None


@dataclass
class ModelOutput:
    name: str
    title: str
    task: str
    version: str
    params: dict[str, Any]
    frames: list[tuple[float, list]] = field(default_factory=list)  # (time, detections/faces/text/tags)
    segments: list = field(default_factory=list)  # SpeechSegment, media times
    frame_size: tuple[int, int] = (0, 0)
    classes: tuple[str, ...] = ()
    started_at: float = 0.0
    duration_s: float = 0.0
    error: str | None = None
    device: str = "cpu"
    # per frame of ``frames``, per detection: {"confirmed": bool, "evidence": {...}} (detectors
    # with confirmation on; None otherwise) — core.perception.confirm.item_evidence
    evidence: list[list[dict]] | None = None
    # per frame of ``frames``: how long its result stands (gated runs: until the next sample);
    # None: one step (1 / fps) each
    holds: list[float] | None = None
    gating: dict[str, Any] | None = None  # what the change gate decided (provenance; gated runs)


@dataclass
class AnalysisResult:
    outputs: dict[str, ModelOutput]
    media_duration: float
    compute_s: float = 0.0
    # models that do not apply to this file (audio models on a file without audio, visual
    # models on one without video): name → why. Not run, not in ``outputs``, nothing to store.
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> dict[str, str]:
        return {k: o.error for k, o in self.outputs.items() if o.error}


@dataclass(frozen=True)
class AnalysisPartial:
    """What one model produced since the last partial: frames or segments, media times."""

    model: str
    task: str
    frames: tuple = ()
    segments: tuple = ()
    frame_size: tuple[int, int] = (0, 0)
    evidence: tuple = ()  # per frame, the detections' verdicts so far (detectors; may change later)


def run_params(req: AnalysisRequest, spec, end: float) -> dict[str, Any]:
    """The inputs that decide a model's output: equal params → the stored result is reused."""
    p: dict[str, Any] = {"start": round(req.start, 3), "end": round(end, 3),
                         "thresholds": dict(spec.thresholds)}
    g = gate_params(req, end)
    if g is not None:
        p["gate"] = g.params()
    if spec.task in VISUAL_TASKS:
        p.update(fps=req.fps, max_size=list(req.max_size))
        if spec.task == "detect":
            p["track"] = bool(req.track)
            p["confirm"] = confirm_params(req)
    user = dict(req.user_paths).get(spec.name)
    if user:
        p["weights"] = user
    return p


def gate_params(req: AnalysisRequest, end: float) -> GateParams | None:
    """The change gate's settings when this request's range is gated, else None."""
    g = req.gate_params or GateParams()
    return g if req.gate and end - req.start >= g.min_span_s else None


def confirm_params(req: AnalysisRequest) -> dict[str, Any] | bool:
    """The confirmation rules, classifier and suppressed scene confusions of a detector's run
    (provenance; a change of any of them means another result), False when off."""
    from core.perception.confirm import Rules, provenance

    return provenance(Rules() if req.confirm else None, req.confusions)


def planned_frames(start: float, end: float, fps: float) -> int:
    """How many frames the range asks for at ``fps`` (for progress: the plan itself is lazy)."""
    return max(1, int(math.floor(min((end - start) * fps, 1e12) + 1e-9)))


def sample_frames(dec: VideoDecoder, start: float, end: float, fps: float, *, hold_s: float = HOLD_S,
                  max_failures: int = 50):
    """``(t, frame)`` at ``start + k / fps`` for ``t < end``, decoded as the plan goes.

    The plan follows what decodes, not what the header declares: a frame that stays on
    screen for more than ``hold_s`` (a gap in the timestamps: one frame, then the next
    days later) is sampled for ``hold_s`` and the plan jumps to the next frame; past the last
    frame it stops. Where no frame decodes the plan leaps ahead, twice as far after each
    failure (a damaged stretch costs a few tries, not one per sample), and gives up after
    ``max_failures`` in a row.
    """
    hold = max(2, int(math.ceil(hold_s * fps)))
    k, same, failures, shown = 0, 0, 0, None
    while True:
        t = start + k / fps
        if t >= end - 1e-9 and k > 0:
            return
        try:
            frame = dec.frame_at(t)
        except MediaError as e:
            log.warning("no frame at %.2f s: %s", t, e)
            failures += 1
            if failures >= max_failures:
                log.warning("%d samples in a row without a frame: the rest of the range is skipped", failures)
                return
            k += 1 << min(failures - 1, 40)
            continue
        failures = 0
        same = same + 1 if frame.time == shown else 0
        shown = frame.time
        if same >= hold:
            if frame.end <= t:
                return  # past the last frame: the video ends before the declared duration
            k = max(k + 1, int(math.ceil((frame.end - start) * fps - 1e-9)))
            continue
        yield t, frame
        k += 1


def _load(name: str, req: AnalysisRequest):
    from models.catalogue import ModelError, get_spec, load_model

    spec = get_spec(name)
    try:
        extra = {"licence_accepted": True} if name in req.accept_licences and "licence_accepted" in spec.options else {}
        model = load_model(spec, user_path=dict(req.user_paths).get(name), device=req.device, **extra)
    except ModelError as e:
        return spec, None, str(e)
    return spec, model, None


def analyze(req: AnalysisRequest, state: JobState) -> AnalysisResult:
    t_job = time.perf_counter()
    info = probe(req.path, with_hash=False)
    end = min(req.end if req.end is not None else info.duration_s, info.duration_s)
    if end <= req.start:
        raise MediaError(f"The range {req.start:.2f}–{end:.2f} s is empty.")
    outputs: dict[str, ModelOutput] = {}
    skipped: dict[str, str] = {}
    loaded: dict[str, Any] = {}
    state.set_progress(0.0, "loading models")
    for name in req.models:
        check(state)
        from models.catalogue import ModelError, get_spec
        try:
            spec = get_spec(name)
        except ModelError as e:
            outputs[name] = ModelOutput(name, name, "?", "", {}, error=str(e))
            continue
        t0 = time.perf_counter()
        spec, model, err = _load(name, req)
        out = ModelOutput(name, spec.title, spec.task, spec.version or "1", run_params(req, spec, end),
                          started_at=time.time(), duration_s=time.perf_counter() - t0, error=err,
                          device=str(getattr(model, "device", req.device or "cpu")))
        missing = ("video" if spec.task in VISUAL_TASKS and not info.has_video else
                   "audio track" if spec.task in AUDIO_TASKS and not info.has_audio else None)
        if err is None and missing:
            skipped[name] = f"skipped — {info.path.rsplit('/', 1)[-1]} has no {missing}"
            log.info("%s: %s", name, skipped[name])
            continue
        if out.error is None:
            loaded[name] = model
            out.classes = tuple(getattr(model, "classes", ()) or ())
        else:
            log.warning("%s", out.error)
        outputs[name] = out

    audio = [n for n in loaded if outputs[n].task in AUDIO_TASKS]
    visual = [n for n in loaded if outputs[n].task in VISUAL_TASKS]
    n_frames = planned_frames(req.start, end, req.fps) if visual else 0
    # progress: audio counts as much as 10% of the frames it stands beside
    work_audio = 0.1 * max(1, n_frames) if audio else 0
    total = work_audio + n_frames or 1

    set_media_span(state, end - req.start)
    cm = _scan(req, end, info, state) if (audio or visual) else None
    if cm is not None:
        decided = cm.provenance(req.fps if visual else None)
        for n in (*audio, *visual):
            outputs[n].gating = decided
    if audio:
        _run_audio(req, end, audio, loaded, outputs, state, work_audio / total, cm)
    if visual:
        _run_visual(req, end, visual, loaded, outputs, state, work_audio / total, cm)
    state.set_progress(1.0, "done")
    return AnalysisResult(outputs, info.duration_s, time.perf_counter() - t_job, skipped)


def _scan(req: AnalysisRequest, end: float, info, state) -> ChangeMap | None:
    """The change map of the range when it is gated (None: sample densely)."""
    g = gate_params(req, end)
    if g is None:
        return None
    try:
        return scan_changes(req.path, start=req.start, end=end, params=g, audio=info.has_audio,
                            state=SubProgress(state, 0.0, 0.02, "change gate: ", forward=False))
    except MediaError as e:
        log.warning("change gating unavailable (%s): every 1/fps is sampled", e)
        return None


def _fail(out: ModelOutput, e: BaseException) -> None:
    if isinstance(e, MemoryError):
        out.error = f"{out.title} ran out of memory; analyse a smaller range or lower the frame size."
    else:
        out.error = f"{out.title} failed while running: {type(e).__name__}: {e}"
    log.error("%s", out.error)


class AudioMap:
    """Where the audio the models hear comes from: pieces of the file laid end to end.

    Ungated, one piece: [start, end). Gated, the stretches where the sound rises above the
    file's floor (and the picture's active stretches are not needed: the audio gate alone
    decides), so a day of quiet costs nothing. ``media(t)`` turns a time in the joined audio
    into media time; a segment is kept inside the piece it starts in."""

    def __init__(self, pieces: list[tuple[float, float]]) -> None:
        self.pieces = pieces
        lens = [b - a for a, b in pieces]
        self.offsets = np.concatenate([[0.0], np.cumsum(lens)])[:-1] if pieces else np.zeros(0)
        self.total = float(sum(lens))

    def piece(self, t: float) -> int:
        return max(0, int(np.searchsorted(self.offsets, t, side="right")) - 1)

    def media(self, t: float, within: int | None = None) -> float:
        i = self.piece(t) if within is None else within
        a, b = self.pieces[i]
        return float(min(b, a + (t - self.offsets[i])))

    def remap(self, seg):
        """``seg`` (start/end, maybe words) from joined-audio time to media time."""
        from dataclasses import replace
        i = self.piece(seg.start)
        kw = {"start": self.media(seg.start, i), "end": max(self.media(seg.start, i), self.media(seg.end, i))}
        if getattr(seg, "words", None):
            kw["words"] = tuple((self.media(x, i), self.media(y, i), w) for x, y, w in seg.words)
        return replace(seg, **kw)


def audio_pieces(cm: ChangeMap | None, start: float, end: float, *, join_s: float = 5.0) -> list[tuple[float, float]]:
    """The stretches of [start, end) the audio models hear (see :class:`AudioMap`)."""
    if cm is None or cm.audio_db is None:
        return [(start, end)]
    out: list[list[float]] = []
    for a, b in cm.intervals("audio"):
        a, b = max(start, a), min(end, b)
        if b <= a:
            continue
        if out and a - out[-1][1] <= join_s:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


class _Remapped:
    """The job's state, with the audio partials' times turned into media times."""

    def __init__(self, state: JobState, amap: AudioMap) -> None:
        self.state, self.amap = state, amap

    def set_progress(self, fraction: float, text: str = "") -> None:
        self.state.set_progress(fraction, text)

    def set_partial_result(self, value: Any) -> None:
        from dataclasses import replace
        if isinstance(value, AnalysisPartial) and value.segments:
            value = replace(value, segments=tuple(self.amap.remap(s) for s in value.segments))
        self.state.set_partial_result(value)

    def is_cancelled(self) -> bool:
        return self.state.is_cancelled()


def _load_audio(req, pieces: list[tuple[float, float]], state) -> np.ndarray:
    if len(pieces) == 1:
        a, b = pieces[0]
        return load_mono(req.path, 16000, a, b, cancelled=state.is_cancelled)
    from core.media.audio import AudioReader
    parts = []
    with AudioReader(req.path) as reader:  # one open for every piece (a day-long MP4's index is big)
        for a, b in pieces:
            check(state)
            parts.append(load_mono(req.path, 16000, a, b, cancelled=state.is_cancelled, reader=reader))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _run_audio(req, end, names, loaded, outputs, state, share: float, cm: ChangeMap | None = None) -> None:
    state.set_progress(0.0, "reading audio")
    pieces = audio_pieces(cm, req.start, end)
    amap = AudioMap(pieces)
    try:
        audio = _load_audio(req, pieces, state)
    except (MediaError, OSError, ValueError) as e:
        # the picture may still be fine: fail the audio models only
        for name in names:
            outputs[name].error = f"{outputs[name].title}: the audio cannot be decoded ({e})."
            log.error("%s", outputs[name].error)
        return
    except Exception as e:  # FFmpeg's own error types
        if type(e).__module__.startswith("av"):
            for name in names:
                outputs[name].error = f"{outputs[name].title}: the audio cannot be decoded ({e})."
            return
        raise
    sr = 16000
    if cm is not None:
        heard = len(audio) / sr
        log.info("change gate: the audio models hear %.0f s of %.0f s (%d stretches)", heard, end - req.start,
                 len(pieces))
        for name in names:
            outputs[name].gating = {**(outputs[name].gating or {}), "audio_heard_s": round(heard, 2),
                                    "audio_stretches": len(pieces)}
        if len(audio) < sr // 4:  # nothing above the floor anywhere: nothing to hear
            return
    st = _Remapped(state, amap)
    for name in names:
        out = outputs[name]
        model = loaded[name]
        if out.task not in ("vad", "asr"):
            continue  # speakers and sound names: core.perception.listen.after_audio, below
        t0 = time.perf_counter()
        try:
            if out.task == "vad":
                out.segments = list(model.segments(audio))
                st.set_partial_result(AnalysisPartial(name, out.task, segments=tuple(out.segments)))
            else:
                chunk = int(ASR_CHUNK_S * sr)
                for a in range(0, len(audio), chunk):
                    check(state)
                    piece = audio[a:a + chunk]
                    if len(piece) < sr // 4:
                        break
                    segs = [_shift(s, a / sr) for s in model.transcribe(piece)]
                    out.segments.extend(segs)
                    st.set_partial_result(AnalysisPartial(name, out.task, segments=tuple(segs)))
                    state.set_progress(share * min(1.0, (a + chunk) / len(audio)), f"{out.title}")
        except (InterruptedError, KeyboardInterrupt):
            raise
        except Exception as e:
            if type(e).__name__ == "Cancelled":
                raise
            _fail(out, e)
        out.duration_s += time.perf_counter() - t0
    from core.perception import listen  # voice support of the transcript, speakers, loud sounds
    from dataclasses import replace
    before = set(outputs)
    listen.after_audio(replace(req, start=0.0), amap.total, audio, names, loaded, outputs, st,
                       output=ModelOutput, partial=AnalysisPartial, fail=_fail)
    # everything the audio steps produced is in joined-audio time: into media time
    for name in [*names, *sorted(set(outputs) - before)]:
        out = outputs[name]
        out.segments = [amap.remap(s) for s in out.segments]
        if name not in names:  # made by the audio steps (loud sounds): its range is the job's
            g = gate_params(req, end)
            out.params = {**out.params, "start": round(req.start, 3), "end": round(end, 3),
                          **({"gate": g.params()} if g is not None else {})}
            out.gating = outputs[names[0]].gating if names else None


def _shift(seg, offset: float):
    from dataclasses import replace
    words = tuple((a + offset, b + offset, w) for a, b, w in getattr(seg, "words", ()) or ())
    return replace(seg, start=seg.start + offset, end=seg.end + offset, words=words)


def _confirmers(req, names, loaded, outputs) -> dict:
    """A :class:`~core.perception.confirm.Confirmer` per detector (confirmation on): its second
    look is the ImageNet classifier (loaded through models.loaded when a look first needs it) or
    the same detector on the enlarged, mirrored crop; the request's scene confusions apply."""
    if not req.confirm:
        return {}
    from core.perception.confirm import Confirmer, Rules, SceneConfusions, SecondLook

    scene = SceneConfusions([c for c in req.confusions if getattr(c, "suppressed", False)])
    return {n: Confirmer(SecondLook(loaded[n]), Rules(), scene) for n in names if outputs[n].task == "detect"}


def _confirm(c, name: str, ts: list[float], frames: list, res: list[list]) -> list[tuple]:
    """Feed a batch to a detector's Confirmer; each frame's verdicts so far (for the partial)."""
    from core.perception.confirm import item_evidence

    out = []
    for t, image, dets in zip(ts, frames, res):
        try:
            tracks = c.update(t, image, dets)
        except (InterruptedError, KeyboardInterrupt):
            raise
        except Exception as e:  # the second look failed (the classifier is missing…): hits only
            if c.look is None:
                raise
            log.warning("%s: the classifier's second look is unavailable (%s: %s); its classes are "
                        "confirmed by hits only", name, type(e).__name__, e)
            if getattr(c.look, "classifier_off", True):
                c.look = None  # the re-detection failed too (or there was no classifier)
            else:
                c.look.classifier_off = True
            c.look_error = f"{type(e).__name__}: {e}"
            tracks = _relink(c, dets)
        out.append(tuple(item_evidence(tr) for tr in tracks))
    return out


def _relink(c, dets: list) -> list:
    """After a failed second look the frame's hits are already linked (the look comes last in
    ``Confirmer.update``): the track of each detection, from this frame's hits."""
    mine = {id(h): tr for tr in c.tracks() for i, _t, h in tr.hits if i == c._frame}
    return [mine[id(d)] for d in dets]


def _final_evidence(c, frames: list[tuple[float, list]]) -> list[list[dict]]:
    """Every detection's verdict once the whole range is seen (a track confirmed late confirms
    its early hits; the scene's confusions are matched on the whole track)."""
    from core.perception.confirm import item_evidence, with_verdicts

    tracks = c.tracks()
    ev = {tr.key: item_evidence(tr) for tr in tracks}
    if getattr(c, "look_error", None):
        for e in ev.values():
            e["evidence"]["look_error"] = c.look_error
    return [[ev[tr.key] for _d, tr in pairs] for _t, pairs in with_verdicts(frames, tracks)]


def _run_visual(req, end, names, loaded, outputs, state, base: float, cm: ChangeMap | None = None) -> None:
    trackers = {}
    if req.track:
        for n in names:
            if outputs[n].task == "detect":
                try:
                    from models.tracking import Tracker
                    trackers[n] = Tracker("bytetrack", frame_rate=req.fps)
                except Exception as e:  # tracking is a bonus: detections still count
                    log.warning("tracking unavailable: %s", e)
    confirmers = _confirmers(req, names, loaded, outputs)
    total = planned_frames(req.start, end, req.fps)
    # frames per call, per model (core.perception.batching): the request's batch on the CPU,
    # ``gpu_batch`` on CUDA; the job reads as many frames as the largest and slices them per model
    sizes = batch_sizes({n: loaded[n] for n in names}, req.batch, req.gpu_batch)
    read = max(sizes.values())
    done = 0
    last: dict[str, tuple[float, list]] = {}  # model → (frame time, result) of its last frame
    with VideoDecoder(req.path, max_size=req.max_size) as dec:
        if cm is not None:
            times, holds = cm.plan(req.fps)
            total = len(times)
            plan = ((t, f) for t, f, _h in iter_plan(dec, times, holds))
        else:
            plan = sample_frames(dec, req.start, end, req.fps)
        while True:
            check(state)
            batch = list(itertools.islice(plan, read))
            if not batch:
                break
            ts = [float(t) for t, _f in batch]
            frames = [f.image for _t, f in batch]
            keys = [f.time for _t, f in batch]
            for name in names:
                for k, sl in enumerate(slices(len(batch), sizes[name])):
                    if outputs[name].error:
                        break
                    if k:
                        check(state)
                    _visual_step(name, outputs[name], loaded[name], ts[sl], frames[sl], keys[sl], last,
                                 trackers.get(name), confirmers.get(name), state)
            done += len(batch)
            frac = min(1.0, (ts[-1] - req.start) / max(end - req.start, 1e-9))
            state.set_progress(base + (1 - base) * frac, f"frame {min(done, total)}/{total}")
    for name, c in confirmers.items():
        out = outputs[name]
        if not out.error:
            t0 = time.perf_counter()
            out.evidence = _final_evidence(c, out.frames)
            out.duration_s += time.perf_counter() - t0
    if cm is not None:  # each sample stands until the next (the gate found nothing changing between)
        for name in names:
            out = outputs[name]
            ts = np.asarray([t for t, _r in out.frames], np.float64)
            out.holds = [float(h) for h in np.diff(np.append(ts, end))] if ts.size else []


def _visual_step(name: str, out: ModelOutput, model, ts: list[float], frames: list, keys: list[float],
                 last: dict, tracker, confirmer, state: JobState) -> None:
    """One call of a visual model on consecutive frames: results, tracks and verdicts appended
    to ``out`` and sent as a partial; a failure marks the model failed (the others carry on)."""
    t0 = time.perf_counter()
    try:
        res = _run_distinct(model, out.task, frames, keys, last, name)
        if tracker is not None:
            res = [tracker.update(dets, frames[i].shape) for i, dets in enumerate(res)]
        verdicts = _confirm(confirmer, name, ts, frames, res) if confirmer is not None else ()
    except Exception as e:
        if type(e).__name__ == "Cancelled":
            raise
        _fail(out, e)
        return
    out.duration_s += time.perf_counter() - t0
    h, w = frames[0].shape[:2]
    out.frame_size = (w, h)
    new = list(zip(ts, res))
    out.frames.extend(new)
    state.set_partial_result(AnalysisPartial(name, out.task, frames=tuple(new), frame_size=(w, h),
                                             evidence=tuple(verdicts)))


def _run_distinct(model, task: str, frames: list, keys: list[float], last: dict, name: str) -> list[list]:
    """The model's results for ``frames``, run once per distinct frame: samples of a frame that
    stays on screen (a slideshow, a low frame rate, a gap in the timestamps) share its result."""
    prev = last.get(name)
    known = {prev[0]: prev[1]} if prev else {}
    todo, seen = [], set(known)
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            todo.append(i)
    if todo:
        for i, r in zip(todo, _run_frames(model, task, [frames[i] for i in todo])):
            known[keys[i]] = r
    last[name] = (keys[-1], known[keys[-1]])
    return [list(known[k]) for k in keys]


def _run_frames(model, task: str, frames: list[np.ndarray]) -> list[list]:
    if task == "detect":
        return model.detect(frames)
    if task == "faces":
        return model.faces(frames)
    if task == "ocr":
        return [model.read(f) for f in frames]
    if task == "image-tags":
        return model.tags(frames, top_k=3)
    raise ValueError(f"not a visual task: {task}")


# -- tracks --------------------------------------------------------------------------------

def presence(times_labels: list[tuple], step: float) -> list[Item]:
    """Intervals where a label is present. A row is ``(t, label, score, count[, hold])``: the
    sample at ``t`` stands for ``hold`` seconds (default one step; a gated run's static samples
    stand until the next). Samples merge when one begins within half a step of where the one
    before it ends (consecutive samples ≤ 1.5 steps apart, ungated)."""
    by_label: dict[str, list[tuple[float, float, int, float]]] = defaultdict(list)
    for row in times_labels:
        t, label, score, count = row[:4]
        by_label[label].append((t, score, count, row[4] if len(row) > 4 else step))
    items = []
    for label, rows in by_label.items():
        rows.sort()
        s, best, most, e = rows[0][0], rows[0][1], rows[0][2], rows[0][0] + rows[0][3]
        for t, score, count, hold in rows[1:]:
            if t <= e + 0.5 * step + 1e-9:
                e, best, most = max(e, t + hold), max(best, score), max(most, count)
            else:
                items.append(_presence_item(label, s, e, best, most))
                s, e = t, t + hold
                best, most = score, count
        items.append(_presence_item(label, s, e, best, most))
    return items


def _presence_item(label: str, s: float, e: float, score: float, count: int) -> Item:
    return Item(s, e, f"{label} ×{count}" if count > 1 else label, float(score), data={"max_count": count})


UNCONFIRMED = " (unconfirmed)"  # the name suffix of a class's presence track of unconfirmed detections


def _unchecked(out: ModelOutput) -> dict:
    why = ("unconfirmed: confirmation was off for this run" if out.params.get("confirm") is False
           else "unconfirmed: not checked yet")
    return {"confirmed": False, "evidence": {"reason": why}}


def _hold(out: ModelOutput, fi: int, step: float) -> float:
    """How long frame ``fi``'s result stands: its hold in a gated run, else one step."""
    return out.holds[fi] if out.holds is not None and fi < len(out.holds) else step


def _box_tracks(out: ModelOutput, step: float, run_id: int | None) -> list[Track]:
    """A detector's or face model's tracks: presence per class and one hidden track of boxes.

    Object detections carry their verdict (core.perception.confirm): each box item's data gets
    ``confirmed`` and ``evidence``; a class's presence track (shown by default) counts confirmed
    detections only, and the unconfirmed ones go to "<class> (unconfirmed)", kept but hidden by
    default (meta ``confirmed`` False). Faces are not checked: no verdict, as before."""
    checked = out.task == "detect"
    rows = []
    boxes = []
    for fi, (t, dets) in enumerate(out.frames):
        hold = _hold(out, fi, step)
        verdicts = out.evidence[fi] if out.evidence is not None and fi < len(out.evidence) else ()
        counts: dict[tuple[str, bool], list[float]] = defaultdict(list)
        for j, d in enumerate(dets):
            label = getattr(d, "label", "face")
            data = {"box": [round(float(v), 1) for v in d.box], "size": list(out.frame_size),
                    "model": out.name}
            if getattr(d, "track_id", None) is not None:
                data["track"] = int(d.track_id)
            ok = True
            if checked:
                v = verdicts[j] if j < len(verdicts) else _unchecked(out)
                ok = bool(v["confirmed"])
                data["confirmed"] = ok
                data["evidence"] = dict(v["evidence"])
            counts[(label, ok)].append(d.score)
            boxes.append(Item(t, t + hold, label, float(d.score), run_id, data))
        for (label, ok), scores in counts.items():
            rows.append((t, label if ok else label + UNCONFIRMED, max(scores), len(scores), hold))
    kind = "detections" if checked else "faces"
    per: dict[str, list[Item]] = defaultdict(list)
    for it in presence(rows, step):
        per[it.label.split(" ×")[0]].append(it)
    tracks = []
    for name, items in sorted(per.items()):
        meta = {"model": out.name}
        ok = not name.endswith(UNCONFIRMED)
        if checked:
            meta["confirmed"] = ok
        label = name[:-len(UNCONFIRMED)] if not ok else name
        tracks.append(Track(kind, name, [Item(i.start, i.end, label + i.label[len(name):], i.confidence, run_id,
                                              {**i.data, "confirmed": ok} if checked else i.data)
                                         for i in items], run_id=run_id, meta=meta, visible=ok))
    tracks.append(Track("boxes", out.name, boxes, run_id=run_id, visible=False,
                        meta={"model": out.name, "task": out.task}))
    return tracks


def tracks_for(out: ModelOutput, step: float, run_id: int | None = None) -> list[Track]:
    """Timeline tracks for one model's output (presence per class, boxes, segments…)."""
    tracks: list[Track] = []
    if out.task in ("detect", "faces"):
        tracks += _box_tracks(out, step, run_id)
    elif out.task == "ocr":
        rows = []
        for fi, (t, regions) in enumerate(out.frames):
            for r in regions:
                rows.append((t, r.text.strip(), r.score, 1, _hold(out, fi, step)))
        items = [Item(i.start, i.end, i.label, i.confidence, run_id) for i in presence(rows, step) if i.label]
        # one class, "text", for the overlay's filter; the words themselves ride along
        boxes = [Item(t, t + _hold(out, fi, step), "text", float(r.score), run_id,
                      {"box": [round(float(v), 1) for v in r.box], "size": list(out.frame_size), "model": out.name,
                       "text": r.text})
                 for fi, (t, regions) in enumerate(out.frames) for r in regions]
        tracks.append(Track("text", out.name, items, run_id=run_id, meta={"model": out.name}))
        tracks.append(Track("boxes", out.name, boxes, run_id=run_id, visible=False,
                            meta={"model": out.name, "task": out.task}))
    elif out.task == "image-tags":
        rows = [(t, tags[0].label, tags[0].score, 1, _hold(out, fi, step))
                for fi, (t, tags) in enumerate(out.frames) if tags]
        items = [Item(i.start, i.end, i.label, i.confidence, run_id) for i in presence(rows, step)]
        tracks.append(Track("tags", out.name, items, run_id=run_id, meta={"model": out.name}))
    elif out.task == "vad":
        items = [Item(s.start, s.end, "speech", float(s.score), run_id) for s in out.segments]
        tracks.append(Track("speech", "voice activity", items, run_id=run_id, meta={"model": out.name}))
    elif out.task == "asr":
        items = [Item(s.start, s.end, s.text.strip(), float(s.score), run_id,
                      ({"words": [[round(a, 2), round(b, 2), w] for a, b, w in s.words]} if s.words else {})
                      | ({"voiced": s.voiced, "speech": s.speech} if hasattr(s, "voiced") else {}))
                 for s in out.segments if s.text.strip()]
        tracks.append(Track("speech", "transcript", items, run_id=run_id, meta={"model": out.name}))
    elif out.task in ("speaker-embed", "sounds"):
        from core.perception import listen
        tracks += listen.tracks(out, run_id)
    if out.gating:  # what the change gate decided travels with what it produced (provenance)
        for tr in tracks:
            tr.meta = {**tr.meta, "gating": out.gating}
    return tracks


def partial_tracks(p: AnalysisPartial, title: str, step: float) -> list[Track]:
    """Tracks for a partial result, so the timeline fills in while the job runs."""
    out = ModelOutput(p.model, title, p.task, "", {}, frames=list(p.frames), segments=list(p.segments),
                      frame_size=p.frame_size, evidence=[list(v) for v in p.evidence] if p.evidence else None)
    return tracks_for(out, step)
