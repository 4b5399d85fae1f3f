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


COMMANDS = {"analyze": ("core.perception.cli", "cmd_analyze"), "models": ("core.perception.cli", "cmd_models"),
            "anomalies": ("core.anomaly.cli", "cmd_anomalies"), "chat": ("core.chat.cli", "cmd_chat"),
            "tag": ("core.tagging.cli", "cmd_tag"), "select": ("core.focus.cli", "cmd_select")}


def run_command(name: str, argv: list[str]) -> int:
    """One headless command, with one way out for every failure: argparse's usage errors exit
    2 (``usage: …`` and one ``error:`` line); a Kestrel error that escapes is one ``kestrel: …``
    line and exit 1; anything else is one line naming the log file that holds its traceback,
    exit 1; Ctrl+C is one line and exit 130. Never a traceback on the terminal."""
    import importlib
    import logging

    from core.errors import is_expected, log_traceback, print_error

    handlers = _cli_logging()
    try:
        module, func = COMMANDS[name]
        return getattr(importlib.import_module(module), func)(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print_error("interrupted; stopped")
        return 130
    except SystemExit:
        raise  # argparse: usage and one error line, exit 2
    except BrokenPipeError:  # `kestrel … | head`: the reader has gone, nobody is left to tell
        try:  # and Python's own flush at exit must not print a second error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as e:
        if is_expected(e):
            from core.cliargs import UsageError
            print_error(e)
            return 2 if isinstance(e, UsageError) else 1
        where = log_traceback(e, f"kestrel {name}")
        print_error(f"an unexpected error ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                    + (f"details in {where}" if where else "the log file could not be written"))
        return 1
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()


def _cli_logging() -> list:
    """While a command runs, what Kestrel's modules log at WARNING and above goes to stderr in
    one line each, never with a traceback (Python's last-resort handler would print one), and
    to the log file with it. Returns the handlers added to the root logger."""
    import logging

    from core.errors import log_handler

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = record.getMessage()
            cut = text.find("Traceback (most recent call last)")
            if cut >= 0:
                text = text[:cut]
            return f"{record.levelname.lower()}: {' '.join(text.split())}"

    class Stderr(logging.StreamHandler):  # the stderr of the moment (tests swap it)
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _value) -> None:
            pass

    console = Stderr()
    console.setFormatter(OneLine())
    console.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [console]
    file = log_handler()
    if file is not None:
        file.setLevel(logging.WARNING)
        handlers.append(file)
    root = logging.getLogger()
    for h in handlers:
        root.addHandler(h)
    return handlers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
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
