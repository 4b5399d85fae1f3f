"""``python main.py select VIDEO --query "..." --k 16``: FOCUS frame selection without a window.

Prints a progress bar, then the chosen timestamps (hh:mm:ss.mmm and score, one per line; a "~" marks
a frame whose score is inherited from its nearest scored neighbour) and a summary line. With
``--project`` the selection is stored (and the project's transcript, if any, helps the embedded
scorer); with ``--export`` the frames are written as PNGs with a selection.json.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from core import cliargs
from core.cli import open_project
from core.errors import print_error
from core.focus.search import FocusError, FocusRequest, select_frames
from core.focus.store import export_frames, store_selection
from core.jobs import Cancelled, HeadlessState
from core.timefmt import timecode


def _transcript(project, media_id: int) -> tuple[tuple[float, float, str], ...]:
    for rec in project.load_tracks(media_id):
        if rec.kind == "speech" and rec.name == "transcript":
            return tuple((i.start_s, i.end_s, i.label) for i in rec.items if i.label.strip())
    return ()


def _index(project, media_id: int | None, path: str, transcript, state, build: bool):
    """The media index: the project's (with ``build``, built and stored there when missing or
    stale), else with ``build`` one built for this process; None without one."""
    from core.jobs import SubProgress
    from core.perception.index import IndexConfig, IndexRequest, ensure_index, load_index, memory_index

    if not build:
        return load_index(project, media_id, IndexConfig()) if project is not None and media_id is not None else None
    req = IndexRequest(path, transcript=transcript)
    sub = SubProgress(state, 0.0, 1.0, "")
    if project is not None and media_id is not None:
        idx, built = ensure_index(project, media_id, req, sub)
    else:
        idx, built = memory_index(req, sub), True
    if built:
        state.end_line()
        print(f"indexed {len(idx)} frames of {idx.duration:.0f} s in {idx.build_s:.1f} s "
              f"({idx.params['plan']['sampler']})", file=sys.stderr)
    return idx


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("video")
    ap.add_argument("--query", default="", type=cliargs.text("the query"), help="what to look for, e.g. \"a bus at the gate\"")
    ap.add_argument("--k", type=cliargs.integer(1, 100_000, what="a number of frames"), default=16,
                    help="frames to choose (default 16)")
    ap.add_argument("--budget-share", type=cliargs.fraction(zero=False, what="a share of the frames"), default=0.02,
                    help="at most this share of frames is scored, in (0, 1] (0.02)")
    ap.add_argument("--budget-frames", type=cliargs.integer(1, 10_000_000, what="a number of frames"), default=None,
                    help="or at most this many frames")
    ap.add_argument("--seed", type=cliargs.integer(0, 2**32 - 1, what="a seed"), default=0)
    ap.add_argument("--project", help="store the selection in this .kestrel project (and use its transcript)")
    ap.add_argument("--export", metavar="DIR", type=cliargs.out_folder, help="write the chosen frames as PNGs and selection.json here")
    ap.add_argument("--scorer", default="embedded",
                    help="embedded (default, offline models) or blip-itm-user, clip-user, siglip-user with --weights")
    ap.add_argument("--weights", metavar="PATH", help="the local model folder for a bring-your-own scorer")
    ap.add_argument("--ocr", action=argparse.BooleanOptionalAction, default=None,
                    help="read on-screen text (default: only when the query asks about text)")
    ap.add_argument("--index", action=argparse.BooleanOptionalAction, default=None,
                    help="answer from the media index, rescoring a shortlist: --index builds it when missing "
                         "or stale (stored with --project, so later questions reuse it); by default a stored "
                         "index is used when the project has one; --no-index scores frames anew over the whole video")
    ap.add_argument("--rescore", type=cliargs.integer(0, 100_000, what="a number of frames"), default=4,
                    help="with the index: new frames the full scorer rescores in the shortlisted clips (4)")
    ap.add_argument("--example-time", type=cliargs.seconds, default=None, metavar="SECONDS",
                    help="find frames that look like the frame at this time instead of matching text")
    cliargs.add_device(ap)


def run(args: argparse.Namespace) -> int:
    cliargs.check_device(args.device)
    if args.scorer != "embedded":
        from models.catalogue import load_catalogue

        choices = ["embedded"] + sorted(n for n, s in load_catalogue().items() if s.task == "image-text")
        if args.scorer not in choices:
            raise cliargs.BadArgument(f"argument --scorer: {args.scorer!r} is not a scorer "
                                      f"(choose {', '.join(choices)})")
    if args.scorer != "embedded" and not args.weights:
        raise cliargs.UsageError(f"--scorer {args.scorer} needs --weights PATH, the local folder of your model.")
    if args.weights and args.scorer == "embedded":
        raise cliargs.BadArgument("argument --weights: the embedded scorer takes no weights (use it with "
                                  "--scorer blip-itm-user, clip-user or siglip-user)")

    from core.media.decode import MediaError, probe
    from core.store.project import ProjectError
    from models.catalogue import ModelError

    project = media_id = state = None
    try:
        info = probe(args.video)
        cliargs.past_end("--example-time", args.example_time, info.duration_s, Path(info.path).name)
        transcript: tuple[tuple[float, float, str], ...] = ()
        if args.project:
            from core.perception import ops

            project = open_project(args.project, stores="the selection")
            media_id = ops.register_media(project, info)
            transcript = _transcript(project, media_id)
        req = FocusRequest(path=info.path, query=args.query, k=args.k, budget_frames=args.budget_frames,
                           budget_share=args.budget_share, seed=args.seed, scorer=args.scorer,
                           scorer_path=args.weights, transcript=transcript, ocr=args.ocr,
                           example_time=args.example_time, rescore_frames=args.rescore, thumbnails=False)
        state = HeadlessState(bar=True, label=Path(info.path).name[:24])
        try:
            if args.index is not False and args.scorer == "embedded" and args.example_time is None:
                idx = _index(project, media_id, info.path, transcript, state, build=bool(args.index))
                req = replace(req, index=idx) if idx is not None else req
            res = select_frames(req, state)
        except (Cancelled, KeyboardInterrupt):
            print("\ncancelled: nothing was chosen or stored", file=sys.stderr)
            return 130
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for f in res.frames:
            print(f"{timecode(f.time)}  {f.score:.3f}{'' if f.scored else ' ~'}")
        print(f"scored {res.frames_scored} of {res.total_frames} frames ({100 * res.share:.2f} %) with {res.scorer} "
              f"in {res.wall_s:.1f} s; {len(res.frames)} frames chosen for \"{args.query.strip()}\""
              + (f" ({res.from_index} from the index, {len(res.shortlist)} clips shortlisted)" if res.shortlist else ""))
        if project is not None and media_id is not None:
            print(f"stored as run #{store_selection(project, media_id, res)} in {args.project}")
        if args.export:
            paths = export_frames(res, info.path, args.export)
            print(f"exported {len(paths) - 1} frames and {paths[-1].name} to {args.export}")
        return 0
    except ValueError as e:
        if state is not None:
            state.end_line()
        print_error(" ".join(str(e).split()))
        return 2
    except (MediaError, ProjectError, ModelError, FocusError, OSError) as e:
        if state is not None:
            state.end_line()
        print_error(e)
        return 1
    finally:
        if project is not None:
            project.close()
