"""Kestrel: a desktop workbench for video analysts.

    python main.py [MEDIA] [--project FILE] [--screenshot OUT.png]
    python main.py --sample [NAME]      open a real sample clip (fetched once, checked)
    python main.py analyze VIDEO --project P [--fps 2] [--models a,b]   headless perception
    python main.py models               list the model catalogue and what is available
    python main.py anomalies VIDEO [--normal START-END] [--project P]   events, one per line
    python main.py select VIDEO --query "..." --k 16                     FOCUS frame selection
    python main.py chat SOURCE --ask "..." [--at SECONDS]               ask the chat model
    python main.py tag FOLDER --project P [--ray ADDRESS] [--search "..."] [--export DIR]   archive tags
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
    if argv and argv[0] in ("analyze", "models"):
        from core.cli import COMMANDS
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "anomalies":
        from core.anomaly.cli import cmd_anomalies
        return cmd_anomalies(argv[1:])
    if argv and argv[0] == "chat":
        from core.chat.cli import cmd_chat
        return cmd_chat(argv[1:])
    if argv and argv[0] == "tag":
        from core.tagging.cli import cmd_tag
        return cmd_tag(argv[1:])
    if argv and argv[0] == "select":
        from core.focus_cli import cmd_select
        return cmd_select(argv[1:])
    ap = argparse.ArgumentParser(prog="kestrel", description="A desktop workbench for video analysts.")
    ap.add_argument("media", nargs="?", help="a video or audio file to open")
    ap.add_argument("--project", metavar="FILE", help="open (or create) this .kestrel project")
    ap.add_argument("--screenshot", metavar="OUT.png",
                    help="open the window, wait for the first frame and waveform, save a PNG, exit")
    ap.add_argument("--seek", type=float, metavar="SECONDS", help="start at this time")
    ap.add_argument("--sample", nargs="?", const="sintel", metavar="NAME",
                    help="open a real sample clip from the registries (default: sintel)")
    args = ap.parse_args(argv)
    media = args.media
    if args.sample:
        from core.samples import SampleError, sample_path
        try:
            media = str(sample_path(args.sample))
        except SampleError as e:
            print(f"kestrel: {e}", file=sys.stderr)
            return 1
    project = args.project
    if project:
        from pathlib import Path
        from core.project import Project, ProjectError
        if not Path(project).exists():
            try:
                Project.open_or_create(project).close()  # another process may create it meanwhile
            except ProjectError as e:
                print(f"kestrel: {e}", file=sys.stderr)
                return 1
    from gui.app import run
    return run(media=media, project=project, screenshot=args.screenshot, seek=args.seek)


if __name__ == "__main__":
    sys.exit(main())
