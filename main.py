"""Kestrel: a desktop workbench for video analysts.

    python main.py [MEDIA] [--project FILE] [--screenshot OUT.png]
    python main.py --sample [NAME]      open a real sample clip (fetched once, checked)
    python main.py analyze VIDEO --project P [--fps 2] [--models a,b] [--dense]   headless perception
    python main.py analyze FOLDER|FILE... --project P [--ray ADDRESS] [--ray-workers N]   a folder, here or on Ray
    python main.py models               list the model catalogue and what is available
    python main.py anomalies VIDEO [--normal START-END] [--project P] [--scene CAM]   events, one per line
    python main.py anomalies FOLDER|FILE... --project P [--ray ADDRESS] [--ray-workers N]   each file's events
    python main.py select VIDEO --query "..." --k 16 [--project P --index]   FOCUS frame selection
    python main.py chat SOURCE --ask "..." [--at SECONDS]               ask the chat model
    python main.py tag FOLDER --project P [--ray ADDRESS] [--search "..."] [--export DIR]   archive tags
    python main.py export MEDIA --project P --format coco|mot|cvat|labelstudio|srt|vtt|markdown|evidence|chapters
                   --out PATH [--start S --end E]          hand the work on to other tools
    python main.py import MEDIA --project P --format coco|mot|cvat|labelstudio FILE   ground truth as a track
"""
from __future__ import annotations

import argparse
import os
import sys

# llama.cpp and torch use OpenMP: spinning waits starve each other on a 2-core machine
# (measured: a local answer went from 0.3 s to 20-50 s beside live perception).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from core import cli

    if argv and argv[0] in cli.COMMANDS:  # a headless command: the one table, the one error printer
        return cli.run(argv[0], argv[1:])
    from core.cliargs import seconds

    ap = argparse.ArgumentParser(prog="kestrel", description="A desktop workbench for video analysts.")
    ap.add_argument("media", nargs="?", help="a video or audio file to open")
    ap.add_argument("--project", metavar="FILE", help="open (or create) this .kestrel project")
    ap.add_argument("--screenshot", metavar="OUT.png",
                    help="open the window, wait for the first frame and waveform, save a PNG, exit")
    ap.add_argument("--seek", type=seconds, metavar="SECONDS", help="start at this time")
    ap.add_argument("--sample", nargs="?", const="sintel", metavar="NAME",
                    help="open a real sample clip from the registries (default: sintel)")
    args = ap.parse_args(argv)
    if args.screenshot is not None:
        from pathlib import Path
        folder = Path(args.screenshot).parent
        if not args.screenshot.strip() or not folder.is_dir():  # before a window opens and media load
            ap.error(f"argument --screenshot: {folder} is not a folder" if args.screenshot.strip()
                     else "argument --screenshot: the file name is empty")
    media = args.media
    if args.sample:
        from core.errors import print_error
        from core.media.samples import SampleError, sample_path
        try:
            media = str(sample_path(args.sample))
        except SampleError as e:
            print_error(e)
            return 1
    project = args.project
    if project:
        from pathlib import Path
        from core.errors import print_error
        from core.store.project import Project, ProjectError
        if not Path(project).exists():
            try:
                Project.open_or_create(project).close()  # another process may create it meanwhile
            except ProjectError as e:
                print_error(e)
                return 1
    from gui.app import run
    return run(media=media, project=project, screenshot=args.screenshot, seek=args.seek)


if __name__ == "__main__":
    sys.exit(main())
