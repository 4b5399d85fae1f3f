"""Headless archive tagging:

    python main.py tag FOLDER --project P [--ray ADDRESS] [--no-faces] [--no-ocr] [--no-speech]
    python main.py tag --project P --search "query" [--k 10]
    python main.py tag --project P --export DIR [--sidecars export|media|none] [--include-rejected]

Tagging draws a progress bar on stderr, then prints a line per file (shots, main tags) and
every skipped or failed file with its reason. Exit status 1 only when nothing could be
tagged (or the project cannot be used); failures of single files are reported, not fatal.
With ``--ray ADDRESS`` the per-file work runs as Ray tasks (``local`` starts a Ray instance
on this machine with ``--workers`` CPUs); the cluster's workers need Kestrel installed.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from core import cliargs
from core.cli import open_project
from core.errors import describe, print_error
from core.jobs import Cancelled, HeadlessState
from core.tagging import TaggingError
from core.timefmt import clock_cs

MAX_SKIPPED_LINES = 50


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("folder", nargs="?", help="a folder of media to tag (recursive)")
    ap.add_argument("--project", required=True, help="the .kestrel project (created if missing)")
    ap.add_argument("--ray", metavar="ADDRESS", help="run the per-file work on a Ray cluster "
                    "(ADDRESS as ray.init takes it, e.g. auto or ray://host:10001; 'local': this machine)")
    ap.add_argument("--workers", type=cliargs.integer(1, 1024, what="a number of workers"), default=2,
                    help="with --ray local: worker CPUs (default 2)")
    ap.add_argument("--no-faces", action="store_true", help="leave the face detector out (the costliest model)")
    ap.add_argument("--no-ocr", action="store_true", help="leave on-screen text reading out")
    ap.add_argument("--no-speech", action="store_true", help="leave speech transcription out")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--experts", choices=("dense", "topk", "dynamic"), default="dense",
                    help="the multimodal autoencoder's feed-forward blocks: dense, fixed top-k experts, or "
                         "dynamic experts (AnyExperts); recorded with the model")
    ap.add_argument("--search", metavar="QUERY", type=cliargs.text("the query"), help="print the shots that best match this text")
    ap.add_argument("--k", type=cliargs.integer(1, 100_000, what="a number of hits"), default=10,
                    help="with --search: how many hits (default 10)")
    ap.add_argument("--export", metavar="DIR", type=cliargs.out_folder, help="write shots.json, shots.csv, subtitles and sidecars here")
    ap.add_argument("--sidecars", choices=("export", "media", "none"), default="export",
                    help="where the <name>.kestrel-tags.json sidecars go (default: the export folder)")
    ap.add_argument("--include-rejected", action="store_true", help="export rejected tags too")


def run(args: argparse.Namespace) -> int:
    if not (args.folder or args.search or args.export):
        raise cliargs.BadArgument("give a FOLDER to tag, --search QUERY, or --export DIR")
    if args.search is not None and not args.search.strip():
        raise cliargs.BadArgument("argument --search: the query is empty")
    cliargs.check_device(args.device)
    project = open_project(args.project)
    try:
        rc = 0
        if args.folder:
            rc = _tag(project, args)
            if rc not in (0,):
                return rc
        if args.search:
            rc = _search(project, args.search, args.k) or rc
        if args.export:
            rc = _export(project, args) or rc
        return rc
    finally:
        project.close()


def _tag(project: Any, args: argparse.Namespace) -> int:
    from core.tagging.archive import ArchiveRequest, tag_archive
    from core.tagging.features import FeatureConfig

    if project.read_only:
        print_error(f"{args.project} is read-only; tags cannot be stored.")
        return 1
    if not Path(args.folder).is_dir():
        print_error(f"{args.folder} is not a folder.")
        return 1
    cfg = FeatureConfig(faces=None if args.no_faces else FeatureConfig.faces,
                        ocr=None if args.no_ocr else FeatureConfig.ocr,
                        asr=None if args.no_speech else FeatureConfig.asr)
    from core.tagging.index import EXPERTS, IndexParams
    req = ArchiveRequest(project, folder=args.folder, features=cfg, ray_address=args.ray,
                         ray_workers=max(1, args.workers), device=args.device,
                         index=IndexParams(ffn=EXPERTS[args.experts]))
    state = HeadlessState(bar=True, label=Path(args.folder).name[:24] or "tag")
    try:
        result = tag_archive(req, state)
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled: the files finished so far are stored; run again to go on", file=sys.stderr)
        return 130
    except TaggingError as e:
        print(file=sys.stderr)
        print_error(e)
        return 1
    for line in report_lines(result):
        print(line)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if not result.ok:  # the lines above say why for each file; exit 1 needs its one line too
        print_error(f"nothing in {args.folder} could be tagged ({len(result.skipped)} skipped, "
                    f"{len(result.failed)} failed)")
        return 1
    return 0 if result.index is not None else 1


def report_lines(result: Any) -> list[str]:
    """A line per file (status, shots, main tags), then the skipped and failed ones, then a total."""
    lines = []
    idx = result.index
    for f in result.files:
        name = Path(f.path).name
        if f.status == "failed":
            continue
        how = f"tagged in {f.compute_s:.1f} s" + (f" on {f.where}" if result.engine == "ray" and f.where else "")
        if f.status == "reused":
            how = "unchanged, stored features reused"
        lines.append(f"{name}: {f.shots} shot{'s' if f.shots != 1 else ''}, {f.duration_s:.1f} s — "
                     f"{summary(idx, f.media_id) or 'no tags'} ({how})")
    skipped = list(result.skipped)
    for path, reason in skipped[:MAX_SKIPPED_LINES]:
        lines.append(f"skipped {path}: {reason}")
    if len(skipped) > MAX_SKIPPED_LINES:
        lines.append(f"… and {len(skipped) - MAX_SKIPPED_LINES} more skipped files")
    for f in result.failed:
        lines.append(f"FAILED {f.path}: {f.error}")
    media_s = sum(f.duration_s for f in result.ok)
    lines.append(f"{len(result.ok)} tagged ({len(result.computed)} described now), {len(result.skipped)} skipped, "
                 f"{len(result.failed)} failed; {media_s:.1f} s of media in {result.timings.get('wall_s', 0):.1f} s"
                 + (f"; latent: {idx.method}" if idx is not None else "; no index"))
    return lines


def summary(idx: Any, media_id: int | None, top: int = 6) -> str:
    """The file's most common confident tags (objects, scene, speech…), clusters aside."""
    if idx is None or media_id is None:
        return ""
    count: Counter[str] = Counter()  # ties keep the order tags first appear in (stable across runs)
    for i in idx.of_media(media_id):
        count.update(list(dict.fromkeys(t.name for t in idx.tags[i]
                                        if t.kind != "cluster" and not t.low and t.state != "rejected")))
    return ", ".join(name for name, _n in count.most_common(top))


def _search(project: Any, query: str, k: int) -> int:
    from core.tagging.archive import worker_pool
    from core.tagging.features import FeatureConfig
    from core.tagging.index import load_index, search_text

    try:
        idx = load_index(project)
    except TaggingError as e:  # tags stored but all damaged
        print_error(e)
        return 1
    if idx is None:
        print_error("nothing is tagged in this project yet (tag a folder first).")
        return 1
    try:
        hits = search_text(idx, query, worker_pool().get(FeatureConfig.text_embed), k=k)
    except TaggingError as e:
        print_error(e)
        return 1
    print(f"{len(hits)} shots for {query!r} (latent: {idx.method}):")
    for h in hits:
        print(f"{h.score:6.3f}  {Path(h.ref.path).name}  {clock_cs(h.ref.start)}–{clock_cs(h.ref.end)}  "
              f"{idx.describe[h.index][:100]}")
    return 0


def _export(project: Any, args: argparse.Namespace) -> int:
    from core.tagging.export import export_archive

    try:
        out = export_archive(project, args.export, include_rejected=args.include_rejected, sidecars=args.sidecars)
    except (TaggingError, OSError) as e:
        print_error(f"export failed: {describe(e)}")
        return 1
    for note in out.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"exported {len(out.files)} files to {out.folder}")
    return 0

