"""``analyze`` over folders: the perception job of one file (:func:`core.perception.analysis.analyze`)
on every media file of folders, here or as Ray tasks (:mod:`core.cluster`).

For each file, this process (the only one that writes the project) registers it (the path and
its content hash: a changed file is a new media row), plans it as the single-file command does
(:func:`core.perception.ops.analysis_plan`: the scene's confusions, and which models' results
with exactly these settings are stored already), sends the models still to run to the job (here
or on a worker, which returns the plain :class:`AnalysisResult`) and stores what comes back
(:func:`core.perception.ops.store_analysis`, one transaction per model's run). A file whose
every model is stored with these settings is ``unchanged`` and not sent anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.cluster import (FileOutcome, FolderJob, FolderRun, find_media, local_threads, run_folder,
                          skipped_outcomes)
from core.jobs import JobState, check
from core.perception import ops
from core.perception.analysis import AnalysisRequest, AnalysisResult, analyze


@dataclass(frozen=True)
class FolderRequest:
    """Analyse the media of ``sources`` (folders, walked recursively, and files) into ``project``
    with the settings of ``analysis`` (its ``path`` is each file's in turn; passed on unchanged
    otherwise). ``ray_address``: None runs here; ``"local"`` a Ray instance of this machine with
    ``ray_workers`` CPUs (and the cores shared out among them); else a cluster's address."""

    project: Any
    sources: tuple[str, ...]
    analysis: AnalysisRequest
    ray_address: str | None = None
    ray_workers: int = 2
    max_retries: int = 2
    threads: int | None = None  # per Ray worker; None: this machine's cores / ray_workers for "local"


def analyze_folder(req: FolderRequest, state: JobState) -> FolderRun:
    """Job (it writes: run it where the project is written). Unreadable files are reported, a
    file that fails is reported and the others go on; Cancelled (or KeyboardInterrupt) leaves
    every file finished before it stored."""
    project = req.project
    state.set_progress(0.0, "finding media")
    infos, unreadable = find_media(req.sources)
    run = FolderRun()
    jobs: list[FolderJob] = []
    for info in infos:
        check(state)
        out = FileOutcome(info.path, media_id=ops.register_media(project, info))
        run.files.append(out)
        a = replace(req.analysis, path=info.path)
        if a.start >= info.duration_s:
            out.error = f"{out.name}: --start {a.start:g} s is past its end ({info.duration_s:.2f} s long)"
            continue
        end = min(a.end if a.end is not None else info.duration_s, info.duration_s)
        out.duration_s = end - a.start
        a, cached = ops.analysis_plan(project, out.media_id, a, info.duration_s)
        out.lines += [f"{name}: reusing stored results (run #{run_id})" for name, run_id in cached.items()]
        todo = tuple(m for m in a.models if m not in cached)
        if not todo:
            out.status = "unchanged"
            continue
        jobs.append(FolderJob(out, (replace(a, models=todo),), context=(a, todo, info.duration_s)))
    run.files += skipped_outcomes(unreadable)

    def store(job: FolderJob, result: AnalysisResult) -> None:
        store_result(project, job.outcome, result, 1.0 / job.context[0].fps)

    def cancelled(job: FolderJob) -> None:  # never a run that looks complete
        a, todo, duration = job.context
        ops.record_cancelled(project, job.outcome.media_id, a, duration, todo)

    threads = req.threads or (local_threads(req.ray_workers) if req.ray_address == "local" else None)
    return run_folder(analyze, jobs, state, store=store, run=run, address=req.ray_address,
                      workers=req.ray_workers, max_retries=req.max_retries, threads=threads, on_cancel=cancelled)


def store_result(project: Any, out: FileOutcome, result: AnalysisResult, step: float) -> None:
    """One file's result into the project, as the single-file command stores it; what it says
    goes to ``out.lines``, models that failed to ``out.error``."""
    errors = []
    for name, why in result.skipped.items():
        out.lines.append(f"{name}: {why}")
    for o in result.outputs.values():
        if o.task == "?":
            errors.append(f"{o.name}: {o.error}")
            continue
        run_id = ops.store_analysis(project, out.media_id, o, step)
        if o.error:
            errors.append(f"{o.name} failed (run #{run_id}): {o.error}")
        else:
            n = len(o.segments) if o.segments else sum(len(x) for _t, x in o.frames)
            line = f"{o.name}: {n} results in {o.duration_s:.1f} s of compute (run #{run_id})"
            if o.evidence is not None:
                ok = sum(e["confirmed"] for f in o.evidence for e in f)
                line += f", {ok} of {n} detections confirmed"
            out.lines.append(line)
    if errors:
        out.error = f"{Path(out.path).name}: " + "; ".join(errors)
