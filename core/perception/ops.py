"""Operations on media and projects that the GUI and the CLI share (Qt-free): perception's
storage and reuse (:mod:`core.perception`), and probing, frame index, waveform and tracks.

Jobs here have the ``fn(request, state)`` form. Functions taking a ``Project`` are meant
to run on the database worker; the others on the I/O or compute workers.
"""
from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass

import numpy as np

from core.media import decode as media_mod
from core.media import waveform as wf
from core.jobs import JobState, check, set_media_span
from core.media.decode import MediaInfo
from core.store.items import ItemColumns
from core.store.project import Project
from core.timeline import Item, StoredTrack, Track

log = logging.getLogger(__name__)

WAVEFORM_KEY = "waveform"


def probe_job(path: str, state: JobState) -> MediaInfo:
    state.set_progress(0.0, "reading file")
    info = media_mod.probe(path)
    state.set_progress(1.0, "")
    return info


def frame_times_job(path: str, state: JobState) -> np.ndarray:
    return media_mod.frame_times(path, progress=lambda f: state.set_progress(f, "frame index"),
                                 cancelled=state.is_cancelled, on_span=lambda s: set_media_span(state, s))


def register_media(project: Project, info: MediaInfo) -> int:
    return project.add_media(path=info.path, content_hash=info.content_hash, size_bytes=info.size_bytes,
                             duration_s=info.duration_s, container=info.container,
                             streams=[s.to_dict() for s in info.streams])


def load_waveform(project: Project, media_id: int) -> wf.PeakPyramid | None:
    """The cached pyramid, or None if absent or of another layout (then it is rebuilt)."""
    head = project.get_array(media_id, f"{WAVEFORM_KEY}/L0")
    if head is None:
        return None
    meta = head[1]
    try:
        n = int(meta.get("levels", 0))
        arrays = [head[0]]
        for i in range(1, n):
            got = project.get_array(media_id, f"{WAVEFORM_KEY}/L{i}")
            if got is None:
                return None
            arrays.append(got[0])
        return wf.PeakPyramid.from_arrays(meta, arrays)
    except (ValueError, KeyError, TypeError) as e:
        log.info("waveform cache of media %s not usable (%s); rebuilding", media_id, e)
        return None


@dataclass(frozen=True)
class RunInfo:
    """What produced a result, measured where it ran, stored with the result."""

    kind: str
    producer: str
    version: str
    params: dict
    started_at: float  # time.time()
    duration_s: float
    status: str = "ok"
    error: str | None = None


def store_waveform(project: Project, media_id: int, pyr: wf.PeakPyramid, run: RunInfo) -> int:
    """The run and every level of the pyramid, in one transaction."""
    with project.batch():
        run_id = record_run(project, run, media_id)
        meta = pyr.meta()
        for key, arr in pyr.to_arrays().items():
            project.put_array(media_id, f"{WAVEFORM_KEY}/{key}", arr, meta=meta, run_id=run_id)
    return run_id


def record_run(project: Project, run: RunInfo, media_id: int | None) -> int:
    return project.record_run(kind=run.kind, producer=run.producer, version=run.version,
                              params=run.params, media_id=media_id, started_at=run.started_at,
                              duration_s=run.duration_s, status=run.status, error=run.error)


def timed_waveform(req: wf.WaveformRequest, state: JobState) -> tuple[wf.PeakPyramid, RunInfo]:
    """Job: build the pyramid and say how it was made."""
    t0, c0 = time.time(), time.perf_counter()
    pyr = wf.build_waveform(req, state)
    check(state)
    run = RunInfo(kind="waveform", producer="core.media.waveform.build_waveform", version=wf.VERSION,
                  params={"base_block": wf.BASE_BLOCK, "factor": wf.FACTOR}, started_at=t0,
                  duration_s=time.perf_counter() - c0)
    return pyr, run


def load_tracks(project: Project, media_id: int) -> list[Track]:
    """Every track of a media file with all its items in memory (jobs that need them all);
    the window's timeline uses :func:`load_timeline`."""
    return [_track(rec, [_item(i) for i in rec.items]) for rec in project.load_tracks(media_id)]


#: Tracks with more items than this stay in the project (StoredTrack) when a timeline is loaded.
STORED_ABOVE = 20_000


def load_timeline(project: Project, media_id: int, stored_above: int = STORED_ABOVE) -> list[Track]:
    """The tracks of a media file for the timeline: small ones with their items, bigger ones
    (more than ``stored_above`` items) as StoredTracks that read the project by range -- so
    opening a file with a million detections reads their counts, not them. Database worker."""
    from core.timeline import kind_of

    out: list[Track] = []
    for rec, lod in project.track_heads(media_id, stored_above):
        if lod is not None and lod.n > stored_above and kind_of(rec.kind).style == "curve":
            # a curve is drawn from its values (each pixel column's highest), not counts: kept whole
            rec = project.load_track(rec.id)
        if lod is None or len(rec.items) == lod.n:
            out.append(_track(rec, [_item(i) for i in rec.items]))
            continue
        src = StoredItems(project, rec.id, lod)
        out.append(StoredTrack(rec.kind, rec.name, src, (lod.t_min or 0.0, lod.t_max or 0.0), run_id=rec.run_id,
                               id=rec.id, meta=dict(rec.meta), visible=rec.meta.get("confirmed") is not False,
                               labels=lod.labels))
    return out


class StoredItems:
    """A StoredTrack's items in the project (core.timeline.ItemSource): indexed range reads
    (a few hundred rows: fine from the window's thread, like the overlay's), and counts from
    the track's stored count buckets (no read at all)."""

    def __init__(self, project: Project, track_id: int, lod) -> None:
        self.project, self.track_id, self.lod = project, track_id, lod
        self.size = int(lod.n)
        self.max_len = float(lod.max_len)
        self._shared: dict | None = None

    def _items(self, recs) -> list[Item]:
        return [_item(i) for i in recs]

    def _shared_parts(self) -> dict:
        if self._shared is None:
            self._shared = self.project.track_shared(self.track_id)
        return self._shared

    def starting_in(self, t0: float, t1: float) -> list[Item]:
        return self._items(self.project.track_items(self.track_id, t0, t1, starting=True,
                                                    shared=self._shared_parts()))

    def overlapping(self, t0: float, t1: float, limit: int | None = None) -> list[Item]:
        return self._items(self.project.track_items(self.track_id, t0, t1, limit, shared=self._shared_parts()))

    def counts(self, t0: float, t1: float, buckets: int) -> np.ndarray:
        return self.lod.counts_between(np.linspace(float(t0), float(t1), max(1, int(buckets)) + 1))


def track_records(project: Project, media_id: int) -> list:
    """The media's tracks (TrackRecord: kind, name, run, meta) without their items."""
    return [rec for rec, _lod in project.track_heads(media_id, 0)]


def _item(i) -> Item:  # the record's data is a fresh dict already: not copied again
    return Item(i.start_s, i.end_s, i.label, 1.0 if i.confidence is None else i.confidence, i.run_id, i.data)


def _track(rec, items: list[Item]) -> Track:
    # a class's unconfirmed detections (core.perception.analysis.tracks_for) are kept, hidden by default
    return Track(rec.kind, rec.name, items, run_id=rec.run_id, id=rec.id, meta=dict(rec.meta),
                 visible=rec.meta.get("confirmed") is not False)


_ITEM_FIELDS = tuple(map(operator.attrgetter, ("start", "end", "label", "confidence", "run_id", "data")))


def save_track(project: Project, media_id: int, track: Track) -> int:
    items = ItemColumns(*(list(map(f, track.items)) for f in _ITEM_FIELDS))  # the store's fastest form, in C
    return project.save_track(media_id, track.kind, track.name, items, run_id=track.run_id,
                              meta=track.meta)


# -- analysis (perception) -----------------------------------------------------------------

def analysis_kind(task: str) -> str:
    return f"analysis/{task}"


def cached_analysis(project: Project, media_id: int, req, duration: float) -> dict[str, int]:
    """Models of ``req`` whose results with exactly these settings are already stored:
    name → run id. Those are not recomputed."""
    from core.perception.analysis import run_params
    from models.catalogue import ModelError, get_spec

    end = min(req.end if req.end is not None else duration, duration)
    found: dict[str, int] = {}
    for name in req.models:
        try:
            spec = get_spec(name)
        except ModelError:
            continue
        run = project.find_run(analysis_kind(spec.task), spec.name, spec.version or "1",
                               run_params(req, spec, end), media_id)
        if run is not None:
            found[name] = run.id
    if found:  # a later run of the model (other settings) replaced its tracks: not reusable
        owner = {(t.kind, t.name): t.run_id for t in track_records(project, media_id)}
        for name in list(found):
            key = primary_track(get_spec(name).task, get_spec(name).name)
            if key is not None and owner.get(key) != found[name]:
                del found[name]
    return found


def primary_track(task: str, model: str) -> tuple[str, str] | None:
    """The (kind, name) of the track every run of ``model`` stores (core.perception.analysis.tracks_for),
    which the model's next run with other settings replaces."""
    if task in ("detect", "faces", "ocr"):
        return ("boxes", model)
    return {"image-tags": ("tags", model), "vad": ("speech", "voice activity"),
            "asr": ("speech", "transcript")}.get(task)


def store_analysis(project: Project, media_id: int, out, step: float) -> int:
    """Record the run (failed ones too, with their error) and, if it worked, its tracks -- in
    ONE transaction, so an 'ok' run (which cached_analysis reuses) never lacks a track."""
    from core.perception.analysis import tracks_for

    run = RunInfo(kind=analysis_kind(out.task), producer=out.name, version=out.version or "1",
                  params={**out.params, **device_provenance(out)}, started_at=out.started_at,
                  duration_s=out.duration_s, status="failed" if out.error else "ok", error=out.error)
    with project.batch():
        run_id = record_run(project, run, media_id)
        if not out.error:
            tracks = tracks_for(out, step, run_id)
            if out.task in ("detect", "faces"):
                _own_class_tracks(project, media_id, out.name, tracks, run_id)
            for tr in tracks:
                tr.run_id = run_id
                save_track(project, media_id, tr)
    return run_id


def device_provenance(out) -> dict:
    """Where a model's output was computed ({"device": "cpu"|"cuda:0", "device_note": why the
    CPU when CUDA was asked}); stored in its run's params, never compared by find_run."""
    from models.catalogue import ModelError, get_spec
    from models.devices import recorded

    try:
        spec = get_spec(out.name)
    except ModelError:
        return {"device": "cuda:0" if str(out.device).startswith("cuda") else "cpu"}
    return recorded(spec, str(out.device))


def store_analyses(project: Project, media_id: int, outputs, step: float) -> None:
    """Store every model's output of one analysis job (:func:`store_analysis` each; outputs of
    an unknown task, ``"?"``, are not stored)."""
    for out in outputs:
        if out.task != "?":
            store_analysis(project, media_id, out, step)


def _own_class_tracks(project: Project, media_id: int, model: str, tracks: list, run_id: int) -> None:
    """Per-class tracks are named by class; one that another detector stored already gets
    "<class> (<model>)" instead of replacing that detector's (its run would lack it). The
    model's earlier run (other settings) leaves no class track of its own behind beside this
    run's: a class it saw and this run did not would show as this run's."""
    existing = [t for t in track_records(project, media_id) if t.kind in ("detections", "faces")]
    owner = {(t.kind, t.name): t.meta.get("model") for t in existing}
    for tr in tracks:
        if tr.kind in ("detections", "faces") and owner.get((tr.kind, tr.name)) not in (None, model):
            tr.name = f"{tr.name} ({model})"
    new = {(tr.kind, tr.name) for tr in tracks}
    for old in existing:
        if (old.kind, old.name) not in new and old.meta.get("model") == model and old.run_id != run_id:
            project.delete_track(old.id)


def record_cancelled(project: Project, media_id: int, req, duration: float, names) -> None:
    """A cancelled job leaves runs marked 'cancelled' and no tracks — never a run that looks complete."""
    from core.perception.analysis import run_params
    from models.catalogue import ModelError, get_spec

    end = min(req.end if req.end is not None else duration, duration)
    for name in names:
        try:
            spec = get_spec(name)
        except ModelError:
            continue
        record_run(project, RunInfo(kind=analysis_kind(spec.task), producer=spec.name,
                                    version=spec.version or "1", params=run_params(req, spec, end),
                                    started_at=time.time(), duration_s=0.0, status="cancelled",
                                    error="cancelled by the user"), media_id)


# -- a scene's confusions (core.perception.confirm): learned from normal footage, suppressed there --

def analysis_plan(project: Project, media_id: int, req, duration: float):
    """The request with the project's scene confusions (the analysis job confirms detections
    against them), and the models whose results with exactly these settings are stored
    (:func:`cached_analysis`): ``(request, {name: run id})``. Runs on the database worker."""
    from dataclasses import replace

    from core.perception.confirm import load_confusions

    req = replace(req, confusions=tuple(load_confusions(project).entries))
    return req, cached_analysis(project, media_id, req, duration)


@dataclass(frozen=True)
class LearnRequest:
    """Learn a scene's confusions from ``path``, the camera's normal footage (nothing of interest
    in it): ``model`` runs over it at ``fps`` with no confirmation."""

    path: str
    model: str = "ssd-mobilenet-v2-coco"
    fps: float = 2.0
    start: float = 0.0
    end: float | None = None
    user_paths: tuple[tuple[str, str], ...] = ()
    device: str | None = None


@dataclass(frozen=True)
class Learned:
    """What :func:`learn_confusions` found: the candidate confusions (not stored yet), over how
    many sampled frames of which file."""

    confusions: tuple
    frames: int
    path: str
    model: str


def learn_confusions(req: LearnRequest, state: JobState) -> Learned:
    """Job: the classes that fire on a static region of the footage (SceneConfusions.learn)."""
    from core.jobs import SubProgress
    from core.perception.analysis import AnalysisRequest, analyze
    from core.perception.confirm import SceneConfusions
    from models.catalogue import ModelError

    res = analyze(AnalysisRequest(req.path, models=(req.model,), fps=req.fps, start=req.start, end=req.end,
                                  user_paths=req.user_paths, device=req.device, confirm=False),
                  SubProgress(state, 0.0, 0.95, "normal footage: ", forward=False))
    out = res.outputs.get(req.model)
    if out is None:
        raise ModelError(f"{req.model} cannot run on {req.path}: {'; '.join(res.skipped.values()) or 'no video'}")
    if out.error:
        raise ModelError(out.error)
    check(state)
    found = SceneConfusions().learn(out.frames, out.frame_size)
    state.set_progress(1.0, "")
    return Learned(tuple(found), len(out.frames), req.path, req.model)


def add_confusions(project: Project, learned, scene: str = "default"):
    """Add learned confusions to the scene's list, suppressed (the analyst marked the footage as
    normal; each stays listed and can be restored); the scene's confusions after it."""
    from core.perception.confirm import iou, load_confusions, save_confusions

    sc = load_confusions(project, scene)
    for c in learned:
        if not any(e.label == c.label and iou(e.box, c.box) >= sc.match_iou for e in sc.entries):
            sc.entries.append(c)
        sc.suppress([c])
    save_confusions(project, sc, scene)
    return sc


def mark_confusion(project: Project, label: str, box, suppressed: bool, scene: str = "default"):
    """Suppress or restore (undo) one confusion of the scene; the scene's confusions after it."""
    from core.perception.confirm import load_confusions, save_confusions

    sc = load_confusions(project, scene)
    (sc.suppress if suppressed else sc.restore)(label, tuple(box))
    save_confusions(project, sc, scene)
    return sc


def scene_confusions(project: Project, scene: str = "default"):
    """The scene's stored confusions (SceneConfusions; empty when none were learned)."""
    from core.perception.confirm import load_confusions

    return load_confusions(project, scene)
