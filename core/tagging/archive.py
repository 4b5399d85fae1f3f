"""Tag a whole folder of media: find the files, describe each one, store, build the archive index.

The one tagging pipeline, which the command line (:func:`tag_archive`) and the window (the jobs
of :mod:`core.tagging.jobs`) both run, one file at a time:

1. :func:`stored_file` reads what the project holds of the file already (its shots with the
   request's shot parameters, and for those shots features with the request's settings);
2. :func:`tag_file` reuses that, or runs :func:`describe_file` (shots unless stored, then
   per-shot features): a :class:`FileDone`, the job's partial result for that file;
3. :func:`store_file` stores it on the one thread that writes (shots run, features run and
   "current" in one commit).

:func:`tag_files` runs 1–2 over a list of files, reading only. :func:`describe_file` is a plain,
picklable, top-level function that needs no project, takes and returns plain data; its models
are held by :mod:`models.loaded` (loaded once per process and thread, not once per file). It
runs here, in the calling process, or — with ``ArchiveRequest.ray_address`` — as Ray tasks on a
cluster through :func:`core.cluster.run_tasks`, the Ray path ``analyze`` and ``anomalies`` share
(Ray is the engine: it schedules, retries a task whose worker died (``max_retries``), and
cancels). Either way only this process writes to the project (SQLite keeps one writer):
results come back here and are stored as each one arrives. On a real cluster every worker
needs Kestrel installed and the media at the same paths (shared storage); the paths, not the
files, travel to the workers.

Incremental: a file whose shots and features are already stored with the same parameters
is not described again; the same path with the same content keeps its media row, and a
second copy of a file (same content hash) is skipped as a duplicate. A file that fails is
recorded with its reason and the batch goes on. Cancel stops between files (and, locally,
inside one); what was stored before the cancel is kept, so a re-run resumes.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from core.cluster import probe_or_note
from core.jobs import Cancelled, HeadlessState, JobState, SubProgress, check
from core.media.decode import MEDIA_EXTENSIONS, MediaError, MediaInfo, probe
from core.tagging import TaggingError
from core.tagging.features import (
    FeatureConfig,
    ModelPool,
    ShotFeatures,
    feature_params,
    load_features,
    shot_features,
    store_features,
)
from core.tagging.shots import (
    DEFAULT_DETECTOR,
    DEFAULT_MIN_SHOT_S,
    Shot,
    detect_shots,
    load_shots,
    shot_params,
    shots_from_rows,
    store_shots,
)

log = logging.getLogger(__name__)

FILES_SHARE = 0.85  # of the job's progress bar; the index (training, clusters, tags) has the rest


# -- finding the media ---------------------------------------------------------------------------

def scan_folder(folder: str | os.PathLike, project: Any = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Media files under ``folder`` (recursive, sorted) and the skipped ones with a reason.

    Skipped: names without a media extension ("not a media file"), files FFmpeg cannot read
    ("unreadable: …"), and copies (the same content hash as another file of the folder, or as
    a file the project already holds under another path).
    """
    infos, skipped = scan_media(folder, project)
    return [i.path for i in infos], skipped


def scan_media(folder: str | os.PathLike, project: Any = None) -> tuple[list[MediaInfo], list[tuple[str, str]]]:
    """:func:`scan_folder` with each file's probe (which the job needs anyway)."""
    root = Path(folder)
    if not root.is_dir():
        raise TaggingError(f"{folder} is not a folder.")
    skipped: list[tuple[str, str]] = []
    probed: list[MediaInfo] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() not in MEDIA_EXTENSIONS:
                skipped.append((str(p), "not a media file"))
                continue
            info = probe_or_note(p, skipped)
            if info is not None:
                probed.append(info)
    known: dict[str, str] = {}  # content hash → the path the project holds it under
    if project is not None:
        for m in project.list_media():
            known.setdefault(m.content_hash, str(m.path))
    groups: dict[str, list[MediaInfo]] = {}
    for info in probed:
        groups.setdefault(info.content_hash, []).append(info)
    keep: list[MediaInfo] = []
    for h, infos in groups.items():
        held = known.get(h)
        if held is not None and held not in {i.path for i in infos}:
            # the project holds this content under a path outside this scan (a copy, or a move)
            skipped += [(i.path, f"duplicate: the project already holds the same content as {held}")
                        for i in infos]
            continue
        # keep the copy the project already knows, else the first one by name
        first = next((i for i in infos if i.path == held), infos[0])
        keep.append(first)
        skipped += [(i.path, f"duplicate of {first.path} (same content)") for i in infos if i is not first]
    keep.sort(key=lambda i: i.path)
    skipped.sort()
    return keep, skipped


# -- the per-file work (local or on a Ray worker) --------------------------------------------------

def worker_pool(device: str | None = None) -> ModelPool:
    """This process's feature models on ``device``: held by :mod:`models.loaded` for the life of
    the thread (a Ray worker describes many files; loading the models per file would cost more
    than the work)."""
    return ModelPool(device=device)


def feature_config(d: Mapping[str, Any] | FeatureConfig | None) -> FeatureConfig:
    """A FeatureConfig from its ``params()`` dict (what crosses to a worker), or as given."""
    if d is None:
        return FeatureConfig()
    if isinstance(d, FeatureConfig):
        return d
    d = dict(d)
    if "decode_size" in d:
        d["decode_size"] = tuple(d["decode_size"])
    try:
        return FeatureConfig(**d)
    except TypeError as e:
        raise ValueError(f"not a feature configuration: {e}") from e


def checked_shot_params(d: Mapping[str, Any] | None) -> dict[str, Any]:
    """Shot params as :func:`core.tagging.shots.shot_params` makes them (ValueError otherwise)."""
    if d is None:
        return shot_params()
    d = dict(d)
    p = shot_params(d.get("detector", DEFAULT_DETECTOR), d.get("threshold"), d.get("min_shot_s", DEFAULT_MIN_SHOT_S))
    if any(k in d and d[k] != p[k] for k in p):
        raise ValueError(f"shot parameters {d} are not this version's ({p})")
    return p


@dataclass
class FileResult:
    """What :func:`describe_file` found in one file: plain data, picklable, no project."""

    path: str
    shot_rows: np.ndarray  # [n, 4] float64: start, end, start_frame, end_frame
    values: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    columns: dict[str, tuple[str, ...]]
    info: list[dict[str, Any]]
    words: list[tuple[float, float, str]]
    shot_params: dict[str, Any]
    feature_params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # started_at (Unix), shots_s, features_s, total_s (their sum), load_s (models loaded first, not in
    # total_s), cpu_s (CPU time of the process, all threads, during total_s)
    timings: dict[str, float] = field(default_factory=dict)
    shots_detected: bool = True  # False: the caller passed stored shots
    where: str = ""  # host:pid that did the work

    @property
    def shots(self) -> list[Shot]:
        return shots_from_rows(self.shot_rows)

    def features(self) -> ShotFeatures:
        return ShotFeatures(self.shots, self.values, self.present, self.columns, self.info,
                            dict(self.feature_params), list(self.notes), list(self.words))


def describe_file(path: str, feature_cfg: Mapping[str, Any] | None, shot_params_dict: Mapping[str, Any] | None,
                  shot_rows: Sequence[Sequence[float]] | None = None, state: JobState | None = None,
                  device: str | None = None) -> FileResult:
    """Shots (unless ``shot_rows`` gives them) and per-shot features of one file.

    Raises TaggingError naming the file (and what it was doing) on any failure, Cancelled
    when ``state`` says stop. Runs the same in this process and on a Ray worker.
    """
    name = Path(path).name
    state = state or HeadlessState()
    cfg, sp = feature_config(feature_cfg), checked_shot_params(shot_params_dict)
    pool = worker_pool(device)
    load_s = _warm(pool, cfg)
    t_start, c0, p0 = time.time(), time.perf_counter(), time.process_time()
    stage = "finding shots"
    try:
        if shot_rows is not None and len(shot_rows):
            shots = shots_from_rows(np.asarray(shot_rows, np.float64))
            detected = False
        else:
            shots = detect_shots(path, SubProgress(state, 0.0, 0.2), sp["threshold"], sp["min_shot_s"],
                                 sp["detector"])
            detected = True
        c1 = time.perf_counter()
        stage = "describing its shots"
        feats = shot_features(path, shots, SubProgress(state, 0.2, 1.0), cfg, pool)
    except Cancelled:
        raise
    except TaggingError as e:
        msg = str(e)
        raise TaggingError(msg if name in msg else f"{name} failed while {stage}: {msg}") from e
    except Exception as e:  # decoders and model backends raise their own types; name the file
        raise TaggingError(f"{name} failed while {stage}: {type(e).__name__}: {e}") from e
    c2 = time.perf_counter()
    return FileResult(
        path=str(path), shot_rows=np.asarray([s.to_row() for s in shots], np.float64).reshape(-1, 4),
        values=feats.values, present=feats.present, columns={m: tuple(c) for m, c in feats.columns.items()},
        info=feats.info, words=list(feats.words), shot_params=sp, feature_params=feature_params(shots, cfg),
        notes=list(feats.notes), timings={"started_at": t_start, "shots_s": c1 - c0, "features_s": c2 - c1,
                                          "total_s": c2 - c0, "load_s": load_s,
                                          "cpu_s": time.process_time() - p0},
        shots_detected=detected, where=f"{socket.gethostname()}:{os.getpid()}")


def _warm(pool: ModelPool, cfg: FeatureConfig) -> float:
    """Load the configured models now (once per process), so a file's timings are its own work.
    A model that cannot load is left for the feature job, which reports it where it is needed."""
    c0 = time.perf_counter()
    for name in (cfg.tagger, cfg.detector, cfg.faces, cfg.vad, cfg.asr, cfg.ocr, cfg.text_embed):
        try:
            pool.get(name)
        except TaggingError:
            pass
    return time.perf_counter() - c0


# -- one file: what is stored already, describe, store ----------------------------------------

@dataclass(frozen=True)
class Stored:
    """What the project holds of one file already (read only): its media row (None: this content
    is not registered under this path yet), its shots found with ``shot_params`` and, for those
    shots, features with the job's settings (then the file is reused, not described again)."""

    media_id: int | None = None
    shot_params: Mapping[str, Any] = field(default_factory=shot_params)
    shots: list[Shot] | None = None
    features: ShotFeatures | None = None


def stored_file(project: Any, info: MediaInfo, cfg: FeatureConfig, sp: Mapping[str, Any],
                media_id: int | None = None) -> Stored:
    """Reads only. ``media_id``: the file's row when the job registered it (else looked up by path,
    and only this very content counts)."""
    if media_id is None:
        m = project.find_media(info.path)
        if m is None or m.content_hash != info.content_hash:
            return Stored(None, dict(sp))
        media_id = m.id
    shots = load_shots(project, media_id, sp)
    feats = load_features(project, media_id, feature_params(shots, cfg)) if shots else None
    return Stored(media_id, dict(sp), shots, feats)


@dataclass(frozen=True)
class FileDone:
    """One file's outcome, a tagging job's partial result and what :func:`store_file` stores:
    described now (``result``), already stored with these settings (``reused``: ``stored`` holds
    its shots and features), or failed (``error``). ``stored``: what the project held before."""

    info: MediaInfo
    result: FileResult | None = None
    stored: Stored | None = None
    error: str = ""

    @property
    def reused(self) -> bool:
        return self.result is None and not self.error and self.stored is not None and self.stored.features is not None


def tag_file(info: MediaInfo, stored: Stored, cfg: FeatureConfig, sp: Mapping[str, Any], state: JobState,
             device: str | None = None) -> FileDone:
    """The one per-file step: reuse what is stored, else :func:`describe_file` (shots only when none
    are stored with these parameters). A failure is the FileDone's ``error``; Cancelled is raised."""
    if stored.features is not None:
        return FileDone(info, stored=stored)
    rows = [s.to_row() for s in stored.shots] if stored.shots else None
    try:
        return FileDone(info, describe_file(info.path, cfg, sp, rows, state, device), stored)
    except TaggingError as e:
        return FileDone(info, stored=stored, error=str(e))


def plan_files(project: Any, infos: Sequence[MediaInfo], cfg: FeatureConfig, sp: Mapping[str, Any],
               media_ids: Sequence[int | None] | None = None) -> tuple[list[FileDone], list[tuple[MediaInfo, Stored]]]:
    """Reads only: the files stored already with these settings (reused, as FileDones) and the
    others with what is stored of them (to describe)."""
    reused, todo = [], []
    for info, mid in zip(infos, media_ids or [None] * len(infos)):
        st = stored_file(project, info, cfg, sp, mid)
        if st.features is not None:
            reused.append(FileDone(info, stored=st))
        else:
            todo.append((info, st))
    return reused, todo


def tag_files(project: Any, infos: Sequence[MediaInfo], cfg: FeatureConfig, sp: Mapping[str, Any] | None,
              state: JobState, device: str | None = None,
              media_ids: Sequence[int | None] | None = None) -> Iterator[FileDone]:
    """The one tagging loop, reading the project only: a :class:`FileDone` per file, the reused ones
    first, then each other one described (progress shared by duration; a file's own partial
    results are dropped: the job's are the FileDones). Cancel stops between files and inside one."""
    sp = checked_shot_params(sp)
    reused, todo = plan_files(project, infos, cfg, sp, media_ids)
    yield from reused
    total = sum(max(info.duration_s, 0.1) for info, _ in todo) or 1.0
    done = 0.0
    for k, (info, st) in enumerate(todo):
        check(state)
        w = max(info.duration_s, 0.1) / total
        sub = SubProgress(state, done, done + w, f"{k + 1}/{len(todo)} {Path(info.path).name}: ", forward=False)
        yield tag_file(info, st, cfg, sp, sub, device)
        done += w


def store_file(project: Any, done: FileDone) -> int:
    """The writer's side of one file: register it (unless the job did), then store its shots (unless
    stored before), features and "current" in one commit, or only mark reused ones current. The
    media id."""
    st = done.stored or Stored()
    mid = st.media_id if st.media_id is not None else _register(project, done.info)
    if done.result is None:
        if st.features is None:
            raise TaggingError(f"{Path(done.info.path).name} has nothing to store: {done.error or 'not described'}")
        _set_current(project, mid, st.shots, st.features.params, st.shot_params)
        return mid
    res, t = done.result, done.result.timings
    shots = res.shots
    with project.batch():  # shots run, features run and current commit together (a kill leaves all or none)
        if res.shots_detected or not st.shots:
            store_shots(project, mid, shots, res.shot_params, started_at=t.get("started_at"),
                        duration_s=t.get("shots_s", 0.0))
        store_features(project, mid, res.features(), res.feature_params,
                       started_at=t.get("started_at", time.time()) + t.get("shots_s", 0.0),
                       duration_s=t.get("features_s", 0.0))
        _set_current(project, mid, shots, res.feature_params, res.shot_params)
    return mid


# -- the archive job ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchiveRequest:
    """Tag ``folder`` (or exactly ``paths``, already found) into ``project``."""

    project: Any
    folder: str | None = None
    paths: tuple[str, ...] = ()
    features: FeatureConfig = FeatureConfig()
    shots: Mapping[str, Any] | None = None  # shot_params(); None: the defaults
    index: Any = None  # core.tagging.index.IndexParams; None: the defaults
    build_index: bool = True
    ray_address: str | None = None  # "local": a Ray instance of this machine, else ray.init(address=…)
    ray_workers: int = 2  # CPUs of the "local" Ray instance (one task per CPU)
    max_retries: int = 2  # a task whose worker died is run again this many times
    device: str | None = None


@dataclass
class FileOutcome:
    path: str
    media_id: int | None
    status: str  # "tagged" | "reused" | "failed"
    shots: int = 0
    duration_s: float = 0.0
    compute_s: float = 0.0  # finding shots + features (where it ran)
    cpu_s: float = 0.0  # CPU time of that process meanwhile (all its threads)
    load_s: float = 0.0  # models loaded first in that process (0 once they are loaded)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    where: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("tagged", "reused")


@dataclass
class ArchiveResult:
    files: list[FileOutcome]
    skipped: list[tuple[str, str]]
    index: Any = None  # core.tagging.index.ArchiveIndex, None when it could not be built
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # files_s, index_s, wall_s
    engine: str = "local"  # "local" | "ray"

    @property
    def ok(self) -> list[FileOutcome]:
        return [f for f in self.files if f.ok]

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def computed(self) -> list[FileOutcome]:
        """Files described in this run (not reused)."""
        return [f for f in self.files if f.status == "tagged"]


@dataclass
class _Job:
    """A file the Ray path sends to a worker."""

    info: MediaInfo
    media_id: int
    shots: list[Shot] | None  # stored shots with these params (features still missing)
    outcome: FileOutcome


def tag_archive(req: ArchiveRequest, state: JobState) -> ArchiveResult:
    """Job: tag every media file of ``req.folder`` (see the module docstring), then build the
    archive index (MMAE, clusters, tags) over every tagged shot of the project."""
    t0 = time.perf_counter()
    project = req.project
    if project.read_only:
        raise TaggingError(f"{project.path} is read-only; tags cannot be stored.")
    cfg, sp = req.features, checked_shot_params(req.shots)
    state.set_progress(0.0, "finding media")
    if req.folder is not None:
        infos, skipped = scan_media(req.folder, project)
    else:
        infos, skipped = [], []
        for p in req.paths:
            try:
                infos.append(probe(p))
            except (MediaError, OSError) as e:
                skipped.append((str(p), f"unreadable: {e}"))
    check(state)
    result = ArchiveResult([], skipped, engine="ray" if req.ray_address else "local")
    # this job writes: every file is registered first (a cancelled run leaves them listed)
    ids = [_register(project, info) for info in infos]
    outcomes = {}
    for info, mid in zip(infos, ids):
        outcomes[id(info)] = FileOutcome(info.path, mid, "failed", duration_s=info.duration_s)
        result.files.append(outcomes[id(info)])
    files = SubProgress(state, 0.0, FILES_SHARE if req.build_index else 1.0)
    c0 = time.perf_counter()
    if infos and req.ray_address:
        reused, todo = plan_files(project, infos, cfg, sp, ids)
        for done in reused:
            _finish(project, done, outcomes[id(done.info)], files)
        if todo:
            jobs = [_Job(info, st.media_id, st.shots, outcomes[id(info)]) for info, st in todo]
            _run_ray(req, jobs, cfg.params(), sp, files, sum(max(j.info.duration_s, 0.1) for j in jobs), result)
    else:
        for done in tag_files(project, infos, cfg, sp, files, req.device, ids):
            _finish(project, done, outcomes[id(done.info)], files)
    result.timings["files_s"] = time.perf_counter() - c0
    for f in result.failed:
        log.warning("%s", f.error)
    if req.build_index and result.ok:
        from core.tagging.index import build_index

        c1 = time.perf_counter()
        try:
            result.index = build_index(project, SubProgress(state, FILES_SHARE, 0.995), req.index)
            result.notes += list(result.index.notes)
        except TaggingError as e:
            result.notes.append(f"the archive index could not be built: {e}")
        result.timings["index_s"] = time.perf_counter() - c1
    state.set_progress(1.0, f"{len(result.ok)} of {len(result.files)} files tagged")
    result.timings["wall_s"] = time.perf_counter() - t0
    return result


def _register(project: Any, info: MediaInfo) -> int:
    from core.perception.ops import register_media

    return register_media(project, info)


def _set_current(project: Any, media_id: int, shots: list[Shot], fparams: Mapping[str, Any],
                 sp: Mapping[str, Any]) -> None:
    from core.tagging.index import set_current

    set_current(project, media_id, shots, fparams, sp)


def _finish(project: Any, done: FileDone, out: FileOutcome, state: JobState | None = None) -> None:
    """The writing job's side of one file: store it (:func:`store_file`), say so in its outcome,
    and pass the outcome on as the job's partial result."""
    if done.error:
        out.status, out.error = "failed", done.error
    elif done.result is None:
        store_file(project, done)
        out.status, out.shots, out.notes = "reused", len(done.stored.shots), list(done.stored.features.notes)
    else:
        store_file(project, done)
        res, t = done.result, done.result.timings
        out.status, out.shots, out.notes = "tagged", len(res.shot_rows), list(res.notes)
        out.compute_s, out.load_s, out.cpu_s, out.where = t.get("total_s", 0.0), t.get("load_s", 0.0), \
            t.get("cpu_s", 0.0), res.where
    if state is not None:
        state.set_partial_result(out)


def _store(project: Any, job: _Job, res: FileResult) -> None:
    """A Ray worker's result into the project."""
    _finish(project, FileDone(job.info, res, Stored(job.media_id, res.shot_params, job.shots)), job.outcome)


def _fail(job: _Job, message: str) -> None:
    job.outcome.status, job.outcome.error = "failed", message


def _run_ray(req: ArchiveRequest, todo: list[_Job], cfg: dict, sp: dict, state: JobState, total: float,
             result: ArchiveResult) -> None:
    """The files to describe as Ray tasks (:func:`core.cluster.run_tasks`), each stored here as it
    arrives."""
    from core.cluster import ClusterError, Task, run_tasks

    tasks = [Task(job, (job.info.path, cfg, sp, [s.to_row() for s in job.shots] if job.shots else None, None,
                        req.device), max(job.info.duration_s, 0.1), Path(job.info.path).name) for job in todo]
    try:
        run = run_tasks(describe_file, tasks, address=req.ray_address, state=state,
                        on_result=lambda t, res: _store(req.project, t.key, res),
                        on_failure=lambda t, message: _fail(t.key, message),
                        after=lambda t: state.set_partial_result(t.key.outcome),
                        workers=req.ray_workers, max_retries=req.max_retries, own_errors=(TaggingError,))
    except ClusterError as e:
        raise TaggingError(str(e).replace("run without --ray", "tag without --ray")) from e
    result.timings["ray_start_s"] = run.start_s
    result.notes.append(f"Ray: {len(tasks)} files on {run.cpus:.0f} CPUs")
