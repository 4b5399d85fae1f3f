"""Headless commands (no window): the same jobs the GUI runs, for batch work on archives.

    python main.py analyze VIDEO --project P [--fps 2] [--models a,b] [--start S] [--end E]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from core import cliargs

from core.perception import ops
from core.perception.analysis import AUDIO_TASKS, DEFAULT_MODELS, VISUAL_TASKS, AnalysisRequest, analyze
from core.errors import print_error
from core.jobs import Cancelled, HeadlessState
from core.media.decode import MediaError, probe
from core.store.project import Project, ProjectError


def open_or_create(path: str) -> Project:
    return Project.open_or_create(path)  # safe when several processes create the same project


def cmd_analyze(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kestrel analyze", description="Run perception models over a file.")
    ap.add_argument("video")
    ap.add_argument("--project", required=True, help="the .kestrel project to store results in")
    ap.add_argument("--fps", type=cliargs.fps, default=2.0,
                    help=f"frames analysed per second, up to {cliargs.MAX_FPS:g} (default 2)")
    ap.add_argument("--models", type=cliargs.model_list(AUDIO_TASKS + VISUAL_TASKS), default=DEFAULT_MODELS,
                    help="catalogue names, comma-separated (python main.py models lists them)")
    ap.add_argument("--start", type=cliargs.seconds, default=0.0, help="seconds into the file (default 0)")
    ap.add_argument("--end", type=cliargs.seconds, default=None, help="seconds into the file (default: its end)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--weights", type=cliargs.weights_pair, action="append", default=[], metavar="MODEL=PATH",
                    help="a local file or folder for a bring-your-own model in --models (repeatable)")
    args = ap.parse_args(argv)
    if args.end is not None and args.end <= args.start:
        ap.error(f"argument --end: {args.end:g} s is not after --start ({args.start:g} s)")
    unused = [name for name, _p in args.weights if name not in args.models]
    if unused:
        ap.error(f"argument --weights: {', '.join(unused)} is not in --models, so its weights would go unused")
    cliargs.check_device(ap, args.device)
    try:
        info = probe(args.video)
    except MediaError as e:
        print_error(e)
        return 1
    past = cliargs.past_end("--start", args.start, info.duration_s, Path(info.path).name)
    if past:
        print_error(past)
        return 2
    try:
        project = open_or_create(args.project)
    except ProjectError as e:
        print_error(e)
        return 1
    if project.read_only:
        print_error(f"{args.project} is read-only; results cannot be stored.")
        project.close()
        return 1
    req = AnalysisRequest(path=info.path, models=args.models, fps=args.fps, start=args.start, end=args.end,
                          user_paths=tuple(args.weights), device=args.device)
    try:
        media_id = ops.register_media(project, info)
        cached = ops.cached_analysis(project, media_id, req, info.duration_s)
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
            span = (req.end or info.duration_s) - req.start
            print(f"compute {result.compute_s:.1f} s for {span:.1f} s of media "
                  f"({result.compute_s / max(span, 1e-9):.2f}× real time)")
        for tr in ops.load_tracks(project, media_id):
            if tr.kind != "boxes":
                print(f"  track {tr.kind}/{tr.name}: {len(tr.items)} items")
        return rc
    except ProjectError as e:
        print_error(e)
        return 1
    finally:
        project.close()


def cmd_models(argv: list[str]) -> int:
    from models.catalogue import load_catalogue, locate

    argparse.ArgumentParser(prog="kestrel models", description="List the model catalogue.").parse_args(argv)
    for spec in load_catalogue().values():
        a = locate(spec)
        state = "ready" if a.available else "missing"
        print(f"{spec.name:28s} {spec.task:11s} {state:8s} {a.where or a.message}")
    return 0


COMMANDS = {"analyze": cmd_analyze, "models": cmd_models}
