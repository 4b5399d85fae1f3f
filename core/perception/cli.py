"""The ``analyze`` command (no window): the perception job the GUI runs, for batch work on archives.

    python main.py analyze VIDEO --project P [--fps 2] [--models a,b] [--start S] [--end E]
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
    ap.add_argument("--accept-licence", action="append", default=[], metavar="MODEL",
                    help="accept the licence of a model that is off until you do (birdnet-sounds: "
                         "CC BY-NC-SA 4.0, non-commercial use only; repeatable)")


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
    info = probe(args.video)
    cliargs.past_end("--start", args.start, info.duration_s, Path(info.path).name)
    project = open_project(args.project, stores="results")
    req = AnalysisRequest(path=info.path, models=args.models, fps=args.fps, start=args.start, end=args.end,
                          user_paths=tuple(args.weights), device=args.device,
                          accept_licences=tuple(args.accept_licence))
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

