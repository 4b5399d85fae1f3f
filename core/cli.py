"""Headless commands (no window): the same jobs the GUI runs, for batch work on archives.

    python main.py analyze VIDEO --project P [--fps 2] [--models a,b] [--start S] [--end E]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from core import ops
from core.analysis import DEFAULT_MODELS, AnalysisRequest, analyze
from core.jobs import Cancelled, HeadlessState
from core.media import MediaError, probe
from core.project import Project, ProjectError


def open_or_create(path: str) -> Project:
    return Project.open_or_create(path)  # safe when several processes create the same project


def cmd_analyze(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="kestrel analyze", description="Run perception models over a file.")
    ap.add_argument("video")
    ap.add_argument("--project", required=True, help="the .kestrel project to store results in")
    ap.add_argument("--fps", type=float, default=2.0, help="frames analysed per second (default 2)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="catalogue names, comma-separated (python main.py models lists them)")
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--end", type=float, default=None)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                    help="a local file or folder for a bring-your-own model (repeatable)")
    args = ap.parse_args(argv)
    try:
        info = probe(args.video)
        project = open_or_create(args.project)
    except (MediaError, ProjectError) as e:
        print(f"kestrel: {e}", file=sys.stderr)
        return 1
    if project.read_only:
        print(f"kestrel: {args.project} is read-only; results cannot be stored.", file=sys.stderr)
        return 1
    user_paths = tuple(tuple(w.split("=", 1)) for w in args.weights if "=" in w)
    req = AnalysisRequest(path=info.path, models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
                          fps=args.fps, start=args.start, end=args.end, user_paths=user_paths,
                          device=args.device)
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
            for out in result.outputs.values():
                if out.task == "?":
                    print(f"{out.name}: {out.error}", file=sys.stderr)
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
        print(f"kestrel: {e}", file=sys.stderr)
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
