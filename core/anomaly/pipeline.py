"""The whole anomaly pass over a recorded file, as one job: featurise → train or reuse the
model → score → events.

``detect_anomalies(request, state)`` computes and *reads* the project (stored features,
model and perception results; reads are safe from any thread) but writes nothing: it
returns an :class:`AnomalyResult`, and :func:`store_result` writes it on the project's
writer thread. So a cancelled pass leaves the project exactly as it was (the previous model
included). :func:`run_anomalies` does both, for the CLI and tests.

The file pass (:class:`FileFeaturizer`) decodes the file window by window and feeds
``features.WindowFeaturizer`` — the one featurisation path, which a live source feeds from
chunks instead.

While it goes, partial results (:class:`AnomalyPartial`: the newly scored windows) let the
timeline draw the curve as it grows — once the normal footage has been featurised and the
model trained, every later window is scored as soon as its features exist.

With mixture-of-experts blocks (``ffn="moe-topk"`` or ``"anyexperts"``, shaped by
``experts``) the network also says how many real experts it spent on each window's video and
audio token (``ScoreCurve.experts``); :func:`experts_tracks` makes them timeline curves of
kind ``"experts"`` (one per modality), stored with the score, so the analyst sees where the
model thought hard.

Objects that are there: with ``FeatureConfig.confirm`` (the default) the file pass confirms its
detections (:mod:`core.anomaly.evidence`: only confirmed objects can open an event; the scene's
confusions are learned from the normal footage and suppressed, under the scene key
``AnomalyRequest.scene``, "default" unless named), stores every detection it looked at as a
``"boxes"`` track (confirmed or not, marked), and gives each event's object reasons their box.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from core.anomaly import AnomalyError, NotEnoughNormalData
from core.anomaly.detectors import Baseline
from core.anomaly.evidence import (ObjectConfirmation, annotate_events, boxes_name, boxes_track, records_from_track,
                                   second_look)
from core.anomaly.events import AnomalyEvent, carry_feedback, current_weights, find_events, load_events, store_events
from core.anomaly.features import (AUDIO_CHUNK_S, DECODE_SIZE, FeatureConfig, FeatureSet, StoredPerception,
                                   WindowFeaturizer, WindowInput, confusions_digest, features_key, load_features,
                                   store_features, stored_perception)
from core.anomaly.score import ScoreCurve, score_features, sensitivity_threshold
from core.anomaly.train import (TrainedModel, TrainRequest, expert_config, load_stored_model, matches, resolve_ffn,
                                store_model, train_model)
from core.media.audio import load_mono
from core.jobs import Cancelled, JobState, SubProgress, Throttle, check, set_media_span
from core.media.check import display_name, human_duration, plausible
from core.media.spectrum import SAMPLE_RATE, coverage
from core.timeline import Item, Track

log = logging.getLogger(__name__)

PIPELINE_VERSION = "1"
SCORE_KIND = "anomaly/score"
THUMB_SIZE = (160, 90)
EXPERTS_KIND = "experts"  # timeline track kind: real experts per token over time, one track per modality


@dataclass(frozen=True)
class AnomalyRequest:
    """One pass over ``path`` [start, end).

    ``normal``: the footage the analyst marks as normal, (start, end) media seconds; None
    takes the first ``first_minutes`` (at most half the range); with ``first_minutes=0``
    too there is no normal footage and the detectors run alone against the whole range.
    """

    path: str
    normal: tuple[float, float] | None = None
    first_minutes: float = 2.0
    sensitivity: float = 0.5
    window_s: float = 1.0
    start: float = 0.0
    end: float | None = None
    features: FeatureConfig | None = None  # None: FeatureConfig(window_s=window_s)
    ffn: str = "dense"
    train: Any = None  # models.nn.fusion.TrainParams; None: defaults
    retrain: bool = False
    use_network: bool = True
    thumbnails: bool = True
    weights: Mapping[str, float] | None = None  # None: defaults adjusted by the project's feedback
    merge_gap_s: float = 2.0
    project: Any = field(default=None, compare=False)  # core.store.project.Project, read only here
    media_id: int | None = None
    ffn_factory: Any = field(default=None, compare=False)
    # ffn: "dense" | "moe-topk" | "anyexperts" (or "topk" | "dynamic", or a registered name);
    # experts: a models.nn.experts.ExpertsConfig (or a dict of its fields) shaping a mixture
    experts: Any = None
    # the scene (camera) whose learned confusions apply and are learned here: a key of the
    # project's settings (core.perception.confirm.load_confusions); "default" when none is named
    scene: str = "default"
    # change gating (FeatureConfig.gate, core.media.changes); False computes every window
    gate: bool = True

    def __post_init__(self) -> None:
        # refused here, before any decoding: a budget below K_min, a kind that contradicts ffn…
        object.__setattr__(self, "experts", expert_config(self.ffn, self.experts))
        resolve_ffn(self.ffn, self.experts, self.ffn_factory)


@dataclass(frozen=True)
class AnomalyPartial:
    """Newly scored windows (times are window starts); ``experts``: real experts per token
    per modality for the same windows (a mixture of experts only)."""

    times: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]
    window_s: float
    experts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class AnomalyResult:
    path: str
    media_id: int | None
    features: FeatureSet
    curve: ScoreCurve
    events: list[AnomalyEvent]
    threshold: float
    sensitivity: float
    normal: tuple[float, float] | None
    baseline: Baseline
    model: TrainedModel | None
    model_trained: bool  # trained in this pass (store_result stores it)
    features_computed: bool  # computed in this pass (store_result stores them)
    notes: list[str]
    timings: dict[str, float]
    media_duration: float
    started_at: float
    content_hash: str = ""
    # every detection the pass looked at, with its verdict (core.anomaly.evidence.ObjectConfirmation.records)
    objects: list[dict[str, Any]] = field(default_factory=list)
    detector: str | None = None
    scene: str = "default"
    confusions: Any = None  # core.perception.confirm.SceneConfusions in effect (learned ones added)
    learned: list[Any] = field(default_factory=list)  # confusions learned in this pass (suppressed)

    @property
    def compute_s(self) -> float:
        return float(sum(self.timings.values()))

    @property
    def experts(self) -> dict[str, np.ndarray]:
        """Modality → real experts per token spent on each window (empty: dense blocks or no network)."""
        return self.curve.experts


# -- the file pass --------------------------------------------------------------------------

class FileFeaturizer:
    """Feature rows of a recorded file, window by window (an iterator, so the pipeline can
    train and score while it goes). Loads the detector/VAD unless stored results cover them."""

    def __init__(self, path: str, cfg: FeatureConfig, *, start: float, end: float, has_video: bool,
                 has_audio: bool, duration: float, project: Any = None, media_id: int | None = None,
                 confusions: Any = None, normal: tuple[float, float] | None = None) -> None:
        self.path, self.cfg, self.start, self.end = path, cfg, float(start), float(end)
        w = cfg.window_s
        n = max(0, int(math.floor((self.end - self.start) / w + 1e-9)))
        self.times = self.start + np.arange(n) * w
        self.notes: list[str] = []
        self.stored = (stored_perception(project, media_id, path, cfg, start, end, duration)
                       if project is not None and media_id is not None else StoredPerception())
        self.notes += self.stored.notes
        if has_audio:
            try:  # a header can promise audio that does not decode
                load_mono(path, SAMPLE_RATE, self.start, min(self.end, self.start + 1.0))
            except Exception as e:  # MediaError, or FFmpeg's own error types
                has_audio = False
                self.notes.append(f"the audio track cannot be decoded ({e}): vision only")
        if not has_audio:
            self.notes.append("no usable audio track: vision only (sound cues are off)")
        if not has_video:
            self.notes.append("no video stream: audio only (picture cues are off)")
        self.has_video, self.has_audio = has_video, has_audio
        detector = tracker = vad = None
        classes: tuple[str, ...] = ()
        if has_video and cfg.detector:
            from models.catalogue import ModelError, get_spec, load_model
            from models.backends.coco import label_map
            try:
                spec = get_spec(cfg.detector)
                classes = tuple(dict.fromkeys(label_map(spec.classes).values())) if isinstance(spec.classes, str) \
                    else tuple(spec.classes or ())
                if self.stored.detections is None:
                    detector = load_model(spec)
                    classes = tuple(dict.fromkeys(detector.classes))
            except (ModelError, KeyError) as e:
                self.notes.append(f"object detector unavailable ({e}): no object cues")
            if detector is not None and cfg.track:
                try:
                    from models.tracking import Tracker
                    tracker = Tracker("bytetrack", frame_rate=1.0 / w)
                except Exception as e:  # tracking is a bonus: counts still work
                    self.notes.append(f"tracking unavailable ({e}); entries/exits from count changes")
        if has_audio and cfg.vad and self.stored.vad is None:
            from models.catalogue import ModelError, load_model
            try:
                vad = load_model(cfg.vad)
            except ModelError as e:
                self.notes.append(f"voice activity unavailable ({e})")
        self._vad = vad
        self._asr = None
        if has_audio and cfg.asr and self.stored.transcript is None:
            from models.catalogue import ModelError, load_model
            try:
                self._asr = load_model(cfg.asr)
            except ModelError as e:
                self.notes.append(f"speech recognition unavailable ({e}); speech = voice activity")
        if has_audio and self.stored.transcript is None and self._asr is None:
            self.notes.append("speech = voice activity (no transcript stored for this range)")
        self.detector, self.tracker = detector, tracker
        self.normal = normal
        self.changes = None  # core.media.changes.ChangeMap when the range is gated
        self.held = 0  # windows that held the last computed row (gated)
        self.held_since_push = False
        self._reader = None  # core.media.audio.AudioReader, opened on first use, closed after windows()
        self.computed: np.ndarray | None = None  # gated: which windows were computed
        if cfg.gate:
            from core.media.changes import scan_changes
            from core.media.decode import MediaError
            g = cfg.gates()
            if self.end - self.start >= g.min_span_s and has_video:
                try:
                    self.changes = scan_changes(path, start=self.start, end=self.end, params=g, audio=has_audio)
                except MediaError as e:
                    self.notes.append(f"change gating unavailable ({e}): every window computed")
        self.embedder = None
        if has_audio and cfg.audio_embed:
            from models.catalogue import ModelError
            from models.loaded import held
            try:
                self.embedder = held(cfg.audio_embed, user_path=cfg.audio_embed_path)
                self.notes.append(f"audio features: {cfg.audio_embed} ({self.embedder.dim} dimensions per window)")
            except ModelError as e:
                self.notes.append(f"audio encoder unavailable ({e}): no embedding features")
        self.featurizer = WindowFeaturizer(cfg, has_video=has_video, has_audio=has_audio, classes=classes, vad=None,
                                           embedder=self.embedder)
        self.columns = self.featurizer.columns
        self.skipped_frames = 0
        self.objects: ObjectConfirmation | None = None
        if has_video and cfg.detector and cfg.confirm and (detector is not None or self.stored.detections is not None):
            idx = None
            if normal is not None:
                inside = np.nonzero((self.times >= normal[0] - 1e-6) & (self.times + w <= normal[1] + 1e-6))[0]
                idx = (int(inside[0]), int(inside[-1])) if inside.size else None
            self.objects = ObjectConfirmation(second_look(detector, cfg.detector), confusions=confusions, normal=idx)

    def windows(self, cancelled: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, row)`` in time order; raises InterruptedError when cancelled.

        Gated (``self.changes``): only the windows of the change map's plan are computed (every
        window where the picture or the sound changes, one every static_every_s elsewhere, on a
        keyframe; the normal footage is computed in full, so the model learns the footage's own
        variation); each other window holds the last computed row, its detections and size — the
        gate measured nothing changing there. A
        minute with no sound above the floor is not decoded: its computed windows read their own
        second of audio, with no voice (the gate heard nothing rise above the floor)."""
        from core.media.decode import MediaError, VideoDecoder

        w, m = self.cfg.window_s, self.cfg.motion_samples
        dec = VideoDecoder(self.path, max_size=DECODE_SIZE) if self.has_video else None
        per_chunk = max(1, int(math.ceil(AUDIO_CHUNK_S / w)))
        compute = audio_on = None
        if self.changes is not None:
            ptimes, _h = self.changes.plan(1.0 / w)
            compute = np.zeros(len(self.times), bool)
            compute[np.clip(np.round((ptimes - self.start) / w).astype(np.int64), 0, max(0, len(self.times) - 1))] = True
            audio_on = self.changes.audio_active()
            self.computed = np.ones(len(self.times), bool)
            if self.normal is not None:  # the model learns the footage's own variation: dense there
                compute[(self.times >= self.normal[0] - 1e-6) & (self.times < self.normal[1])] = True
        last: tuple | None = None  # (row, detections, size, first frame) of the last computed window
        try:
            for c0 in range(0, len(self.times), per_chunk):
                idx = range(c0, min(len(self.times), c0 + per_chunk))
                a0, a1 = self.times[idx[0]], self.times[idx[-1]] + w
                quiet = False
                if compute is not None:
                    b0 = int((a0 - self.start) / self.changes.params.bin_s)
                    b1 = int(math.ceil((a1 - self.start) / self.changes.params.bin_s)) + 1
                    quiet = not audio_on[max(0, b0 - 4):b1 + 4].any()
                if quiet or (compute is not None and not compute[idx[0]:idx[-1] + 1].any()):
                    audio = vad = speech = None
                else:
                    audio, vad, speech = self._audio_chunk(a0, a1)
                emb = None
                if audio is not None and self.embedder is not None:  # row k: the chunk's window k
                    emb = self.embedder.embed(audio, hop_s=w)[1]
                for i in idx:
                    if cancelled():
                        raise InterruptedError
                    t0 = float(self.times[i])
                    if compute is not None and not compute[i] and last is not None:
                        row = last[0].copy()
                        dets, size, first = last[1], last[2], last[3]
                        self.held += 1
                        self.computed[i] = False
                        self.held_since_push = True
                    else:
                        if compute is not None and self.held_since_push:
                            self.featurizer._grey = None  # differences within the window only
                            self.featurizer._last_mel = None
                        frames = []
                        if dec is not None:
                            for j in range(m):
                                try:
                                    frames.append(dec.frame_at(t0 + j * w / m).image)
                                except MediaError:
                                    self.skipped_frames += 1
                        dets, size = self._detections(t0, frames)
                        a = None
                        if audio is not None:
                            s = int(round((t0 - self.times[idx[0]]) * SAMPLE_RATE))
                            a = audio[s:s + int(round(w * SAMPLE_RATE))]
                        elif quiet and self.has_audio:
                            a = self._window_audio(t0, t0 + w)
                        row = self.featurizer.push(WindowInput(
                            t0, t0 + w, frames, dets if self.objects is None else [], size, a,
                            vad=coverage(vad, t0, t0 + w) if vad is not None else None,
                            speech=coverage(speech, t0, t0 + w) if speech is not None else None,
                            objects=self.objects is None,
                            embedding=emb[i - idx[0]] if emb is not None and i - idx[0] < len(emb) else None))
                        first = frames[0] if frames else None
                        if compute is not None:
                            last = (row.copy(), list(dets), size, first)
                            self.held_since_push = False
                    if self.objects is None:
                        if compute is not None and not compute[i] and last is not None:
                            self.featurizer.objects(row, dets, size)
                        yield i, row
                        continue
                    for j, r, kept in self.objects.add(i, t0, first, dets, size, row):
                        self.featurizer.objects(r, kept, size)
                        yield j, r
            if self.objects is not None:
                for j, r, kept in self.objects.flush():
                    self.featurizer.objects(r, kept, self.objects.size)
                    yield j, r
        finally:
            if dec is not None:
                dec.close()
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _audio_reader(self):
        """The pass's one AudioReader (opening a day-long MP4 parses its whole index: once, not per piece)."""
        if self._reader is None:
            from core.media.audio import AudioReader
            self._reader = AudioReader(self.path)
        return self._reader

    def _window_audio(self, a: float, b: float):
        """One window's audio in a minute the gate heard nothing in (None if it does not decode)."""
        try:
            x = _load_audio(self.path, a, b, self._audio_reader())
        except Exception as e:
            self.notes.append(f"audio {a:.0f}–{b:.0f} s could not be decoded ({e}); treated as silence")
            return None
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def _detections(self, t0: float, frames: Sequence[np.ndarray]) -> tuple[list, tuple[int, int] | None]:
        """The window's detections (stored ones scaled to the decoded frame, or detected now on
        its first frame), tracked, and the frame size their boxes refer to."""
        from dataclasses import replace

        size = (frames[0].shape[1], frames[0].shape[0]) if frames else None
        dets: list = []
        if self.stored.detections is not None:
            dets = list(self.stored.detections.get(round(t0, 3), []))
            ss = self.stored.frame_size
            if size is None:
                size = ss
            elif ss and tuple(ss) != tuple(size) and ss[0] > 0 and ss[1] > 0:
                fx, fy = size[0] / ss[0], size[1] / ss[1]
                dets = [replace(d, box=(d.box[0] * fx, d.box[1] * fy, d.box[2] * fx, d.box[3] * fy)) for d in dets]
        elif self.detector is not None and frames:
            dets = list(self.detector.detect([frames[0]])[0])
        if self.tracker is not None and size and dets and not any(d.track_id is not None for d in dets):
            dets = list(self.tracker.update(dets, (size[1], size[0])))
        elif self.tracker is not None and size and not dets:
            self.tracker.update([], (size[1], size[0]))
        return dets, size

    def _audio_chunk(self, a: float, b: float):
        """Mono 16 kHz audio of [a, b), and voice/speech segments in media seconds."""
        if not self.has_audio:
            return None, None, None
        try:
            x = _load_audio(self.path, a, b, self._audio_reader())
        except Exception as e:  # one bad minute must not end the pass
            self.notes.append(f"audio {a:.0f}–{b:.0f} s could not be decoded ({e}); treated as silence")
            x = np.zeros(int(round((b - a) * SAMPLE_RATE)), np.float32)
        if not np.isfinite(x).all():
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        vad = None
        if self.stored.vad is not None:
            vad = self.stored.vad
        elif self._vad is not None:
            vad = [(a + s.start, a + s.end) for s in self._vad.segments(x)]
        speech = self.stored.transcript
        if speech is None and self._asr is not None:
            speech = [(a + s.start, a + s.end) for s in self._asr.transcribe(x) if s.text.strip()]
        return x, vad, speech

    def feature_set(self, rows: Sequence[np.ndarray]) -> FeatureSet:
        notes = list(dict.fromkeys(self.notes))
        if self.skipped_frames:
            notes.append(f"{self.skipped_frames} frames could not be decoded")
        if self.changes is not None:
            c = self.changes
            notes.append(f"change gate: {len(rows) - self.held} of {len(rows)} windows computed "
                         f"({c.active_share() * 100:.1f}% of the range changes; elsewhere one window every "
                         f"{c.params.static_every_s:.0f} s, the others hold the last)")
        if self.featurizer.nonfinite:
            notes.append(f"{self.featurizer.nonfinite} non-finite values were set to 0 while featurising")
        values = np.vstack(rows) if len(rows) else np.zeros((0, len(self.columns)), np.float32)
        computed = None if self.computed is None else self.computed[:len(rows)].copy()
        digest = confusions_digest(self.objects.confusions) if self.objects is not None else ""
        return FeatureSet(self.times[:len(rows)], values, self.columns, self.cfg.window_s, self.has_video,
                          self.has_audio, notes, {**self.cfg.params(), "start": round(self.start, 3),
                                                  "end": round(self.end, 3), **({"confusions": digest} if digest
                                                                                 else {})}, computed)


PREROLL_S = 0.5  # audio decoded before a piece and dropped: the first AAC frames after a seek fade in


def _load_audio(path: str, a: float, b: float, reader: Any = None) -> np.ndarray:
    """Mono 16 kHz audio of [a, b) without the decoder's fade-in after a seek (which reads as
    a sharp onset at every piece's start): decoded from PREROLL_S earlier, that part dropped.
    ``reader``: the pass's open AudioReader of ``path`` (None: opened for this piece)."""
    pre = min(PREROLL_S, max(0.0, a))
    x = load_mono(path, SAMPLE_RATE, a - pre, b, reader=reader)
    return x[int(round(pre * SAMPLE_RATE)):]


SPARSE_RANGE_S = 3600.0  # a range this long of a file whose bytes cannot back its duration is refused


def media_range(info: Any, start: float, end: float | None) -> tuple[float, float]:
    e = min(end if end is not None else info.duration_s, info.duration_s)
    if e - start < 0.5:
        raise AnomalyError(f"The range {start:.2f}–{e:.2f} s is too short to look for anomalies.")
    size = getattr(info, "size_bytes", 0) or 0
    if e - start > SPARSE_RANGE_S and size and not plausible(info.duration_s, size):
        # two frames 10^6 s apart: a window a second would be a million windows of one held picture
        raise AnomalyError(f"{display_name(info.path)} spreads {size:,} bytes over {human_duration(info.duration_s)}: "
                           f"its timestamps are likely damaged, and a pass over every window of "
                           f"{human_duration(e - start)} of it would not end; nothing was looked at.")
    return float(start), float(e)


def resolve_normal(req: AnomalyRequest, start: float, end: float) -> tuple[float, float] | None:
    if req.normal is not None:
        a, b = max(start, float(req.normal[0])), min(end, float(req.normal[1]))
        if b <= a:
            raise AnomalyError(f"The normal footage {req.normal[0]:.1f}–{req.normal[1]:.1f} s lies outside "
                               f"the range {start:.1f}–{end:.1f} s.")
        return a, b
    if not req.first_minutes:
        return None
    return start, start + min(req.first_minutes * 60.0, (end - start) / 2)


class _Pass:
    """The state of one detect_anomalies call (kept in one place so the steps stay short)."""

    def __init__(self, req: AnomalyRequest, state: JobState) -> None:
        from core.media.decode import probe

        self.req, self.state = req, state
        self.started_at = time.time()
        self.timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.info = probe(req.path)
        self.start, self.end = media_range(self.info, req.start, req.end)
        from dataclasses import replace as _replace
        cfg = req.features or FeatureConfig(window_s=req.window_s)
        self.cfg = cfg if cfg.gate == (cfg.gate and req.gate) else _replace(cfg, gate=False)
        self.normal = resolve_normal(req, self.start, self.end)
        self.project, self.media_id = req.project, req.media_id
        self.weights = dict(req.weights) if req.weights is not None else current_weights(self.project)
        self.notes: list[str] = []
        self.model: TrainedModel | None = None
        self.model_trained = False
        self.baseline: Baseline | None = None
        self.stored_model: TrainedModel | None = None
        self.records: list[dict[str, Any]] = []
        self.learned: list[Any] = []
        self.confusions: Any = None
        self.detector = self.cfg.detector if self.info.has_video else None
        if self.cfg.confirm and self.detector:
            from core.perception.confirm import SceneConfusions, load_confusions
            self.confusions = load_confusions(self.project, req.scene) if self.project is not None \
                else SceneConfusions()
        if self.project is not None and self.media_id is not None and req.use_network and not req.retrain \
                and self.normal is not None:
            from models.nn.fusion import CheckpointError
            try:
                self.stored_model = load_stored_model(self.project, self.media_id, req.ffn_factory)
            except CheckpointError as e:
                self.notes.append(f"the stored anomaly model cannot be used ({e}); training a new one")
        self.timings["probe"] = time.perf_counter() - t0

    def train_units(self, n: int) -> float:
        return 0.0 if self.normal is None or not self.req.use_network else max(20.0, 0.3 * n)

    def prepare(self, fs: FeatureSet, lo: float, hi: float) -> None:
        """Baseline and model from the normal windows of ``fs`` (progress [lo, hi])."""
        t0 = time.perf_counter()
        if self.normal is None:
            self.baseline = Baseline.from_features(fs, None)
            self.notes.append("no normal footage marked: detectors only, compared with the whole range")
            return
        a, b = self.normal
        mask = fs.inside(a, b)
        self.baseline = Baseline.from_features(fs, mask if mask.any() else None, f"normal footage {a:.0f}–{b:.0f} s")
        if not self.req.use_network:
            self.notes.append("network off: detectors only")
            return
        treq = TrainRequest(fs, (a, b), ffn=self.req.ffn, params=self.req.train, ffn_factory=self.req.ffn_factory,
                            media_hash=self.info.content_hash, experts=self.req.experts)
        if self.stored_model is not None:
            why = matches(self.stored_model, fs, (a, b), treq)
            if why is None:
                self.model = self.stored_model
                self.notes.append(f"anomaly model reused (trained {self.model.config['created_at']} "
                                  f"on {a:.0f}–{b:.0f} s)")
                return
            self.notes.append(f"{why}: training a new model")
        try:
            self.model = train_model(treq, SubProgress(self.state, lo, hi, "training: ", forward=False))
            self.model_trained = True
            t = self.model.config["training"]
            self.notes.append(f"anomaly model trained on {a:.0f}–{b:.0f} s in {t['train_s']:.1f} s "
                              f"({t['windows']} windows, {t['parameters']} parameters, "
                              f"{self.model.config['calibration']['how']} calibration)")
            if t.get("collapsed_blocks"):
                self.notes.append(f"mixture-of-experts collapse in {len(t['collapsed_blocks'])} block(s) "
                                  f"({', '.join(t['collapsed_blocks'][:4])}): one expert did most of the work; "
                                  "more normal footage or training steps let the balancing loss spread it")
        except NotEnoughNormalData as e:
            self.notes.append(str(e))
        finally:
            self.timings["train"] = self.timings.get("train", 0.0) + time.perf_counter() - t0

    def featurise(self) -> tuple[FeatureSet, bool]:
        """Stored features, or computed now (training and scoring along the way)."""
        req, st = self.req, self.state
        digest = confusions_digest(self.confusions)
        if self.project is not None and self.media_id is not None:
            fs = load_features(self.project, self.media_id, self.cfg, self.start, self.end, digest)
            if fs is not None:
                self.notes.append("features reused from the project")
                self.records = self._stored_records(fs)
                return fs, False
        t0 = time.perf_counter()
        ff = FileFeaturizer(req.path, self.cfg, start=self.start, end=self.end, has_video=self.info.has_video,
                            has_audio=self.info.has_audio, duration=self.info.duration_s, project=self.project,
                            media_id=self.media_id, confusions=self.confusions, normal=self.normal)
        n = len(ff.times)
        if n == 0:
            raise AnomalyError("The range is shorter than one window.")
        scale = 0.94 / (n + self.train_units(n))  # features and training fill 0–94% of the bar
        done_train = 0.0
        rows: list[np.ndarray] = []
        scored = 0
        throttle = Throttle(0.5)
        w = self.cfg.window_s
        try:
            for i, row in ff.windows(st.is_cancelled):
                rows.append(row)
                st.set_progress((i + 1 + done_train) * scale, f"features {i + 1}/{n}")
                normal_done = self.normal is not None and (ff.times[i] + w >= self.normal[1] - 1e-6 or i == n - 1)
                if self.baseline is None and normal_done:
                    self.timings["features"] = self.timings.get("features", 0.0) + time.perf_counter() - t0
                    self.prepare(ff.feature_set(rows), (i + 1) * scale, (i + 1 + self.train_units(n)) * scale)
                    done_train = self.train_units(n)
                    t0 = time.perf_counter()
                if self.baseline is not None and (throttle() or i == n - 1):
                    scored = self._partial(ff.feature_set(rows), scored)
        except InterruptedError:
            raise Cancelled() from None
        self.timings["features"] = self.timings.get("features", 0.0) + time.perf_counter() - t0
        if ff.objects is not None:
            self.records, self.learned = ff.objects.records(), ff.objects.learned
            o = ff.objects
            self.notes.append(f"objects: {o.counted} detections of confirmed objects counted, {o.left_out} "
                              "unconfirmed left out of the cues (kept as weak evidence)")
            if self.learned:
                self.notes.append(f"learned {len(self.learned)} confusion(s) of scene {self.req.scene!r} from the "
                                  f"normal footage, suppressed: " + "; ".join(c.describe() for c in self.learned))
        return ff.feature_set(rows), True

    def _stored_records(self, fs: FeatureSet) -> list[dict[str, Any]]:
        """The detections a previous pass stored with these very features (its boxes track)."""
        from core.perception import ops

        if not self.detector:
            return []
        key = features_key(self.cfg, self.start, self.end, fs.params.get("confusions", ""))
        for tr in ops.load_tracks(self.project, self.media_id):
            if tr.kind == "boxes" and tr.name == boxes_name(self.detector) and tr.meta.get("features") == key:
                return records_from_track(tr)
        return []

    def _partial(self, fs: FeatureSet, scored: int) -> int:
        """Score windows [scored, len) with enough history before them, and report them."""
        lo = max(0, scored - 64)
        part = FeatureSet(fs.times[lo:], fs.values[lo:], fs.columns, fs.window_s, fs.has_video, fs.has_audio)
        curve = score_features(part, self.baseline, self.model, self.weights)
        k = scored - lo
        self.state.set_partial_result(AnomalyPartial(curve.times[k:].copy(), curve.score[k:].copy(),
                                                     tuple(curve.top_cue(i) for i in range(k, len(part))),
                                                     fs.window_s, {m: v[k:].copy() for m, v in curve.experts.items()}))
        return len(fs)


def detect_anomalies(req: AnomalyRequest, state: JobState) -> AnomalyResult:
    """Job: the whole pass (see the module docstring). Raises AnomalyError/MediaError with a
    sentence for the analyst, ``Cancelled`` when cancelled (nothing is lost: nothing was written)."""
    p = _Pass(req, state)
    set_media_span(state, p.end - p.start)
    state.set_progress(0.0, "features")
    fs, computed = p.featurise()
    check(state)
    if p.baseline is None:  # stored features (train now), or no normal footage (nothing to train)
        p.prepare(fs, 0.94 if computed else 0.05, 0.95 if computed else 0.9)
    check(state)
    t0 = time.perf_counter()
    state.set_progress(0.95, "scoring")
    curve = score_features(fs, p.baseline, p.model, p.weights)
    thr = sensitivity_threshold(req.sensitivity)
    events = find_events(curve, thr, req.merge_gap_s)
    annotate_events(events, p.records, fs.window_s)
    if p.project is not None and p.media_id is not None:
        carry_feedback(events, load_events(p.project, p.media_id))
    p.timings["score"] = time.perf_counter() - t0
    if curve.experts:
        spent = ", ".join(f"{m} {v.mean():.2f} (range {v.min():.2f}–{v.max():.2f})" for m, v in curve.experts.items()
                          if v.size)
        p.notes.append(f"real experts per token ({p.model.ffn} blocks): {spent}")
    if req.thumbnails and fs.has_video and events:
        t0 = time.perf_counter()
        add_thumbnails(req.path, events, fs.window_s)
        p.timings["thumbnails"] = time.perf_counter() - t0
    state.set_progress(1.0, f"{len(events)} events")
    notes = list(dict.fromkeys(fs.notes + p.notes))
    return AnomalyResult(req.path, p.media_id, fs, curve, events, thr, req.sensitivity, p.normal, p.baseline,
                         p.model, p.model_trained, computed, notes, p.timings, p.info.duration_s, p.started_at,
                         p.info.content_hash, p.records, p.detector, req.scene, p.confusions, p.learned)


def add_thumbnails(path: str, events: list[AnomalyEvent], window_s: float) -> None:
    """A small RGB picture of each event's peak window (its middle frame)."""
    from core.media.decode import MediaError, VideoDecoder

    with VideoDecoder(path, max_size=THUMB_SIZE) as dec:
        for e in events:
            try:
                e.thumbnail = dec.frame_at(e.peak_time + window_s / 2).image
            except MediaError as err:
                log.warning("no thumbnail for the event at %.1f s: %s", e.start, err)


def store_result(project: Any, media_id: int, result: AnomalyResult) -> int:
    """Write what the pass produced (new features, a new model, the tracks); returns the
    score run's id. Call it on the project's writer thread."""
    from models.catalogue import provenance_of

    fs = result.features
    with project.batch():  # the runs and what they produced commit together
        if result.features_computed:
            store_features(project, media_id, fs, started_at=result.started_at,
                           duration_s=result.timings.get("features", 0.0))
        if result.model is not None and result.model_trained:
            store_model(project, media_id, result.model)
        params = {"version": PIPELINE_VERSION, "sensitivity": result.sensitivity, "threshold": round(result.threshold, 4),
                  "window_s": fs.window_s, "normal": list(result.normal) if result.normal else None,
                  "weights": {k: round(v, 4) for k, v in result.curve.weights.items()},
                  "model_run": result.model.run_id if result.model is not None else None, "features": fs.params,
                  "baseline": result.baseline.source,
                  "ffn": result.model.ffn if result.model is not None else None,
                  "experts": result.model.experts if result.model is not None else None,
                  **provenance_of([fs.params.get(k) for k in ("detector", "vad", "asr", "audio_embed")])}
        run_id = project.record_run(kind=SCORE_KIND, producer="core.anomaly.pipeline", version=PIPELINE_VERSION,
                                    params=params, media_id=media_id, started_at=result.started_at,
                                    duration_s=result.compute_s)
        meta = {"threshold": round(result.threshold, 4), "sensitivity": result.sensitivity, "window_s": fs.window_s,
                "notes": result.notes[:20], "modalities": [m for m, ok in (("video", fs.has_video),
                                                                           ("audio", fs.has_audio)) if ok]}
        store_events(project, media_id, result.curve, result.events, run_id, meta)
        store_experts(project, media_id, experts_tracks(result.curve, result.model, run_id))
        store_objects(project, media_id, result, run_id)
    return run_id


def objects_track(result: AnomalyResult, run_id: int | None = None) -> Track | None:
    """The pass's detections as a boxes track (None: the pass looked at no objects)."""
    if not result.detector or (not result.objects and not result.features_computed):
        return None
    fs = result.features
    key = features_key(FeatureConfig(**{k: fs.params[k] for k in (
        "window_s", "motion_samples", "mel_bands", "detector", "vad", "asr", "track", "confirm")},
        audio_embed=fs.params.get("audio_embed"), audio_embed_path=fs.params.get("audio_embed_path")),
        fs.params["start"], fs.params["end"], fs.params.get("confusions", "")) if "confirm" in fs.params else ""
    return boxes_track(result.objects, result.detector, fs.window_s, run_id, {"features": key})


def store_objects(project: Any, media_id: int, result: AnomalyResult, run_id: int | None) -> None:
    """The boxes track (when this pass computed its features) and the scene's confusions (when
    this pass learned some)."""
    from core.perception import ops
    from core.perception.confirm import iou, load_confusions, save_confusions

    if result.features_computed:
        tr = objects_track(result, run_id)
        if tr is not None:
            ops.save_track(project, media_id, tr)
    if result.learned:
        stored = load_confusions(project, result.scene)  # the analyst may have marked some meanwhile
        new = [c for c in result.learned if not any(
            e.label == c.label and iou(e.box, c.box) >= stored.match_iou for e in stored.entries)]
        stored.entries.extend(new)
        save_confusions(project, stored, result.scene)


def experts_tracks(curve: ScoreCurve, model: TrainedModel | None = None, run_id: int | None = None) -> list[Track]:
    """The experts the network spent, as curve tracks of kind ``"experts"``, one per modality:
    one item per window, ``data["real"]`` = real experts per token (mean over the layers),
    confidence = that on the scale K_min..K_max (dynamic) or 0..k (top-k), so every track
    shares one vertical scale. Empty for dense blocks."""
    if not curve.experts:
        return []
    ex = (model.experts if model is not None else None) or {}
    top = ex.get("k_max") if ex.get("kind") == "dynamic" else ex.get("k")
    scale = float(top or max((float(v.max()) for v in curve.experts.values() if v.size), default=1.0) or 1.0)
    # dynamic experts spend K_min..K_max: draw that range full height (1 expert at 0 of 32 px
    # rows read as flat lines when drawn from 0)
    lo = float(ex.get("k_min", 0) or 0) if ex.get("kind") == "dynamic" else 0.0
    lo = lo if lo < scale else 0.0
    meta = {"scale": scale, "floor": lo, "unit": "real experts per token",
            "ffn": model.ffn if model is not None else None, "experts": ex or None}
    tracks = []
    for m, spent in curve.experts.items():
        items = [Item(float(t), float(t) + curve.window_s, f"{x:.2f} real experts per token ({m})",
                      round(min(1.0, max(0.0, (float(x) - lo) / (scale - lo))), 4), run_id,
                      {"real": round(float(x), 3)})
                 for t, x in zip(curve.times, spent)]
        tracks.append(Track(EXPERTS_KIND, m, items, run_id=run_id, meta=dict(meta)))
    return tracks


def store_experts(project: Any, media_id: int, tracks: Sequence[Track]) -> None:
    """Replace the anomaly pass's stored "experts" tracks (named by modality) with ``tracks``;
    a dense pass (no tracks) removes stale ones. Other networks' tracks of the kind — under
    other names — are left alone."""
    from core.perception import ops

    keep = {t.name for t in tracks}
    for old in ops.load_tracks(project, media_id):
        if old.kind == EXPERTS_KIND and old.name in ("video", "audio") and old.name not in keep \
                and old.id is not None:
            project.delete_track(old.id)
    for t in tracks:
        ops.save_track(project, media_id, t)


def run_anomalies(project: Any, path: str, state: JobState, **request: Any) -> AnomalyResult:
    """Register the file in ``project``, run the pass with its stored data, store the result."""
    from core.perception import ops
    from core.media.decode import probe

    info = probe(path)
    media_id = ops.register_media(project, info)
    req = AnomalyRequest(path=info.path, project=project, media_id=media_id, **request)
    result = detect_anomalies(req, state)
    store_result(project, media_id, result)
    return result
