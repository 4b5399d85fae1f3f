"""``anomalies`` over folders: the anomaly pass of one file (:func:`core.anomaly.pipeline.detect_anomalies`)
on every media file of folders, here or as Ray tasks (:mod:`core.cluster`).

This process (the only one that writes the project) registers each file (path and content
hash: a changed file is a new media row), skips a file whose newest stored pass has exactly
these settings (:func:`stored_pass`), sends the others to the pass and stores each result as it
comes (:func:`core.anomaly.pipeline.store_result`). The pass reads the project (stored features,
model, the scene's confusions, the analyst's feedback): here it reads the open project; a Ray
worker opens the same file read-only (on a cluster: the project on storage every worker sees).

Each file is its own camera run: its normal footage is ``--normal`` (or its first minutes), its
model is trained on it and stored with it; the scene's confusions (``--scene``) are shared, so
confusions one file's normal footage teaches apply to the files analysed after it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from core.anomaly import AnomalyError
from core.anomaly.pipeline import (PIPELINE_VERSION, SCORE_KIND, AnomalyRequest, AnomalyResult, detect_anomalies,
                                   media_range, resolve_normal, store_result)
from core.cluster import FileOutcome, FolderJob, FolderRun, find_media, local_threads, run_folder, skipped_outcomes
from core.jobs import JobState, check
from core.perception import ops


@dataclass(frozen=True)
class FolderRequest:
    """The pass over the media of ``sources`` (folders, walked recursively, and files) into
    ``project``; ``request``: the :class:`AnomalyRequest` fields other than path, project and
    media id (plain values: they travel to Ray workers), passed on unchanged."""

    project: Any
    sources: tuple[str, ...]
    request: Mapping[str, Any] = field(default_factory=dict)
    ray_address: str | None = None
    ray_workers: int = 2
    max_retries: int = 2
    threads: int | None = None  # per Ray worker; None: this machine's cores / ray_workers for "local"


def anomalies_folder(req: FolderRequest, state: JobState,
                     describe: Callable[[AnomalyResult], list[str]] | None = None) -> FolderRun:
    """Job (it writes: run it where the project is written). Unreadable files are reported, a
    file that fails is reported and the others go on; Cancelled (or KeyboardInterrupt) leaves
    every file finished before it stored (the pass itself writes nothing until it is done).
    ``describe``: the lines a stored result adds to its file's outcome (default: the count)."""
    project = req.project
    state.set_progress(0.0, "finding media")
    infos, skipped = find_media(req.sources)
    run = FolderRun()
    jobs: list[FolderJob] = []
    request = dict(req.request)
    for info in infos:
        check(state)
        out = FileOutcome(info.path, media_id=ops.register_media(project, info))
        run.files.append(out)
        try:
            areq = AnomalyRequest(path=info.path, project=project, media_id=out.media_id, **request)
            start, end = media_range(info, areq.start, areq.end)
            normal = resolve_normal(areq, start, end)
        except AnomalyError as e:
            out.error = f"{out.name}: {e}"
            continue
        out.duration_s = end - start
        done = stored_pass(project, areq, info, start, end, normal)
        if done is not None:
            out.status = "unchanged"
            out.lines.append(f"events stored with these settings (run #{done})")
            continue
        jobs.append(FolderJob(out, (info.path, out.media_id, request, str(project.path)),
                              local_args=(info.path, out.media_id, request, project)))
    run.files += skipped_outcomes(skipped)

    def store(job: FolderJob, result: AnomalyResult) -> None:
        store_result(project, job.outcome.media_id, result)
        job.outcome.lines += (describe or count_line)(result)

    threads = req.threads or (local_threads(req.ray_workers) if req.ray_address == "local" else None)
    return run_folder(detect_file, jobs, state, store=store, run=run, address=req.ray_address,
                      workers=req.ray_workers, max_retries=req.max_retries, threads=threads)


def detect_file(path: str, media_id: int, request: Mapping[str, Any], project: Any,
                state: JobState) -> AnomalyResult:
    """The pass over one file (writes nothing). ``project``: the open project, or its path (on a
    Ray worker), then opened read-only for the pass."""
    if isinstance(project, (str, os.PathLike)):
        from core.store.project import Project, ProjectError

        try:
            opened = Project.open(project, read_only=True)
        except ProjectError as e:
            raise AnomalyError(f"{Path(path).name}: the project cannot be read where the pass runs "
                               f"({e}); on a cluster it must be on storage every worker sees.") from e
        with opened:
            return detect_anomalies(AnomalyRequest(path=path, project=opened, media_id=media_id, **request), state)
    return detect_anomalies(AnomalyRequest(path=path, project=project, media_id=media_id, **request), state)


def stored_pass(project: Any, req: AnomalyRequest, info: Any, start: float, end: float,
                normal: tuple[float, float] | None) -> int | None:
    """The id of the newest stored pass over this media row (this path with this content) when it
    was made with exactly these settings — sensitivity, window, normal footage, features (config,
    range, the scene's suppressed confusions as they stand now), feed-forward blocks — else None.
    ``retrain`` never reuses one."""
    if req.retrain:
        return None
    runs = [r for r in project.list_runs(req.media_id) if r.kind == SCORE_KIND and r.status == "ok"]
    if not runs:
        return None
    last = max(runs, key=lambda r: r.id)
    p = last.params
    if not _same_features(project, req, info, start, end, p.get("features") or {}):
        return None
    want = {"version": PIPELINE_VERSION, "sensitivity": req.sensitivity, "window_s": float(req.window_s),
            "normal": list(normal) if normal else None}
    if any(p.get(k) != v for k, v in want.items()):
        return None
    if normal is not None and req.use_network and p.get("model_run") is not None:
        # (a stored pass without a model had too little normal footage: the same settings, the same)
        from core.anomaly.train import resolve_ffn
        from models.nn.fusion import ffn_name_of

        factory = resolve_ffn(req.ffn, req.experts, req.ffn_factory)
        if p.get("ffn") != ffn_name_of(factory) or p.get("experts") != getattr(factory, "config", None):
            return None
    elif p.get("model_run") is not None:
        return None
    return last.id


def _same_features(project: Any, req: AnomalyRequest, info: Any, start: float, end: float,
                   stored: Mapping[str, Any]) -> bool:
    from core.anomaly.features import FeatureConfig, confusions_digest, feature_params

    cfg = req.features or FeatureConfig(window_s=req.window_s)
    confusions = None
    if cfg.confirm and cfg.detector and info.has_video:
        from core.perception.confirm import load_confusions
        confusions = load_confusions(project, req.scene)
    want = feature_params(cfg, start, end, confusions_digest(confusions))
    return all(stored.get(k) == v for k, v in want.items()) and ("confusions" in stored) == ("confusions" in want)


def count_line(result: AnomalyResult) -> list[str]:
    return [f"{len(result.events)} events (threshold {result.threshold:.2f}); compute {result.compute_s:.1f} s"]
