"""The ``analyze`` command (no window): the perception job the GUI runs, for batch work on archives.

    python main.py analyze VIDEO --project P [--fps 2] [--models a,b] [--start S] [--end E]
    python main.py analyze FOLDER|FILE... --project P [--ray ADDRESS] [--ray-workers N] [...]

One file: a progress bar, a line per model, the file's tracks. Folders (walked recursively) or
several files (:mod:`core.perception.folder`): a line per file (analysed, unchanged: its results
with these settings and this content are stored already, failed, unreadable), then the totals
(media hours, wall time, × real time). ``--ray ADDRESS`` runs the per-file work as Ray tasks
(``local``: a Ray instance of this machine with ``--ray-workers`` CPUs); only this process
writes the project. Exit 1 when a file failed or none could be read; 130 when interrupted (the
files finished before it stay stored: run again to go on).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from core import cliargs
from core.cli import open_project
from core.errors import print_error
from core.jobs import Cancelled, HeadlessState
from core.media.decode import probe
from core.perception import ops
from core.perception.analysis import AUDIO_TASKS, DEFAULT_MODELS, VISUAL_TASKS, AnalysisRequest, analyze


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("sources", nargs="+", metavar="FOLDER|FILE",
                    help="a media file, or folders and files (folders are walked recursively)")
    ap.add_argument("--project", required=True, help="the .kestrel project to store results in")
    ap.add_argument("--fps", type=cliargs.fps, default=2.0,
                    help=f"frames analysed per second, up to {cliargs.MAX_FPS:g} (default 2)")
    ap.add_argument("--models", type=cliargs.model_list(AUDIO_TASKS + VISUAL_TASKS), default=DEFAULT_MODELS,
                    help="catalogue names, comma-separated (python main.py models lists them)")
    ap.add_argument("--start", type=cliargs.seconds, default=0.0, help="seconds into the file (default 0)")
    ap.add_argument("--end", type=cliargs.seconds, default=None, help="seconds into the file (default: its end)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--dense", action="store_true",
                    help="no change gating: sample every 1/fps of a long range (by default, over 10 minutes "
                         "and more, the models run at --fps where the picture or sound changes and on a "
                         "keyframe every 30 s elsewhere)")
    ap.add_argument("--weights", type=cliargs.weights_pair, action="append", default=[], metavar="MODEL=PATH",
                    help="a local file or folder for a bring-your-own model in --models (repeatable)")
    ap.add_argument("--accept-licence", action="append", default=[], metavar="MODEL",
                    help="accept the licence of a model that is off until you do (birdnet-sounds: "
                         "CC BY-NC-SA 4.0, non-commercial use only; repeatable)")
    add_cluster_arguments(ap)


def add_cluster_arguments(ap: argparse.ArgumentParser) -> None:
    """``--ray ADDRESS`` and ``--ray-workers N`` (``anomalies`` takes them too)."""
    ap.add_argument("--ray", metavar="ADDRESS", help="run the per-file work on a Ray cluster (ADDRESS as "
                    "ray.init takes it, e.g. auto or ray://host:10001; 'local': a Ray instance of this machine)")
    ap.add_argument("--ray-workers", type=cliargs.integer(1, 1024, what="a number of workers"), default=2,
                    help="with --ray local: worker CPUs (default 2; this machine's cores are shared among them)")


def run(args: argparse.Namespace) -> int:
    if args.end is not None and args.end <= args.start:
        raise cliargs.BadArgument(f"argument --end: {args.end:g} s is not after --start ({args.start:g} s)")
    unused = [name for name, _p in args.weights if name not in args.models]
    if unused:
        raise cliargs.BadArgument(f"argument --weights: {', '.join(unused)} is not in --models, "
                                  "so its weights would go unused")
    unused = [name for name in args.accept_licence if name not in args.models]
    if unused:
        raise cliargs.BadArgument(f"argument --accept-licence: {', '.join(unused)} is not in --models")
    cliargs.check_device(args.device)
    if len(args.sources) > 1 or args.ray or Path(args.sources[0]).is_dir():
        return _run_folder(args)
    info = probe(args.sources[0])
    cliargs.past_end("--start", args.start, info.duration_s, Path(info.path).name)
    project = open_project(args.project, stores="results")
    req = AnalysisRequest(path=info.path, models=args.models, fps=args.fps, start=args.start, end=args.end,
                          user_paths=tuple(args.weights), device=args.device,
                          accept_licences=tuple(args.accept_licence), gate=not args.dense)
    try:
        media_id = ops.register_media(project, info)
        req, cached = ops.analysis_plan(project, media_id, req, info.duration_s)  # the scene's confusions too
        for name, run_id in cached.items():
            print(f"{name}: reusing stored results (run #{run_id})")
        todo = tuple(m for m in req.models if m not in cached)
        rc = 0
        if todo:
            state = HeadlessState(bar=True, label=Path(info.path).name[:24])
            try:
                result = analyze(replace(req, models=todo), state)
            except (Cancelled, KeyboardInterrupt):
                ops.record_cancelled(project, media_id, req, info.duration_s, todo)
                print("\ncancelled: nothing was stored for the unfinished models", file=sys.stderr)
                return 130
            step = 1.0 / req.fps
            for name, why in result.skipped.items():
                print(f"{name}: {why}")
            for out in result.outputs.values():
                if out.task == "?":
                    print_error(f"{out.name}: {out.error}")
                    rc = 2
                    continue
                run_id = ops.store_analysis(project, media_id, out, step)
                if out.error:
                    print(f"{out.name}: FAILED (run #{run_id}): {out.error}", file=sys.stderr)
                    rc = 2
                else:
                    n = len(out.segments) if out.segments else sum(len(x) for _t, x in out.frames)
                    print(f"{out.name}: {n} results in {out.duration_s:.1f} s of compute (run #{run_id})")
                    if out.evidence is not None:  # core.perception.confirm: the others are kept, unconfirmed
                        ok = sum(e["confirmed"] for f in out.evidence for e in f)
                        print(f"  {ok} of {n} detections confirmed (an object seen moving or a second look agrees)")
            span = (req.end or info.duration_s) - req.start
            print(f"compute {result.compute_s:.1f} s for {span:.1f} s of media "
                  f"({result.compute_s / max(span, 1e-9):.2f}× real time)")
        for tr in ops.load_tracks(project, media_id):
            if tr.kind != "boxes":
                print(f"  track {tr.kind}/{tr.name}: {len(tr.items)} items")
        return rc
    finally:
        project.close()



def _run_folder(args: argparse.Namespace) -> int:
    from core.perception.folder import FolderRequest, analyze_folder

    project = open_project(args.project, stores="results")
    req = FolderRequest(project, tuple(args.sources),
                        AnalysisRequest(path="", models=args.models, fps=args.fps, start=args.start, end=args.end,
                                        user_paths=tuple(args.weights), device=args.device,
                                        accept_licences=tuple(args.accept_licence), gate=not args.dense),
                        ray_address=args.ray, ray_workers=args.ray_workers)
    try:
        return folder_report(lambda state: analyze_folder(req, state), "analysed", _label(args.sources))
    finally:
        project.close()


def _label(sources: list[str]) -> str:
    return (Path(sources[0]).name or "analyze")[:24]


def folder_report(job, verb: str, label: str) -> int:
    """Run a folder job (``job(state)`` -> core.cluster.FolderRun) with a progress bar; print a
    line per file as it finishes (its stored results' lines indented), then the totals. Exit 1
    when a file failed or nothing could be computed or reused, 130 when interrupted."""
    from core.cluster import ClusterError

    printed: set[int] = set()

    def finished(out) -> None:
        printed.add(id(out))
        state.end_line()
        print(file_line(out, verb))
        for line in out.lines:
            print(f"  {line}")
        sys.stdout.flush()

    state = HeadlessState(finished, bar=True, label=label)
    try:
        run = job(state)
    except (Cancelled, KeyboardInterrupt):
        state.end_line()
        print("cancelled: the files finished so far are stored; run again to go on", file=sys.stderr)
        return 130
    except ClusterError as e:
        state.end_line()
        print_error(e)
        return 1
    for out in run.files:  # the ones no job ran: unchanged, unreadable, refused before (the others were printed)
        if id(out) not in printed:
            print(file_line(out, verb))
            for line in out.lines:
                print(f"  {line}")
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    print(run.summary(verb))
    if not run.files:
        print_error("no media file was found")
        return 1
    return 1 if run.having("failed") or not (run.having("done") or run.having("unchanged")) else 0


def file_line(out, verb: str) -> str:
    """One line for one file of a folder job."""
    if out.status == "done":
        where = f" on {out.where}" if out.where else ""
        return f"{out.name}: {verb}, {out.duration_s:.1f} s of media in {out.compute_s:.1f} s{where}"
    if out.status == "unchanged":
        return f"{out.name}: unchanged, stored results reused ({out.duration_s:.1f} s of media)"
    if out.status in ("unreadable", "not media"):
        return f"skipped {out.path}: {out.error}"
    return f"FAILED {out.path}: {out.error}"
