"""Kestrel's commands: one table, one dispatcher, one error printer.

Every command is a row of :data:`COMMANDS`: the module that holds it, the text its ``--help``
opens with, and two functions of that module: ``add_arguments(parser)`` (its flags) and
``run(args) -> int`` (the work; the exit status). ``main.py`` dispatches through :func:`run`,
which builds the parser, parses, runs, and turns whatever escapes into one line on stderr
(:func:`core.errors.print_error`) and an exit status by kind:

* 2: a usage error: argparse's ``usage: …`` and one ``error:`` line, also for a flag a command
  refuses after parsing (:class:`core.cliargs.BadArgument`), or one ``kestrel: …`` line for a
  bad argument only the file could reveal (:class:`core.cliargs.UsageError`);
* 1: a Kestrel error (a damaged file, a locked project, a missing model), or an unexpected one,
  whose traceback goes to the log file;
* 130: Ctrl+C.

Capability modules are imported only when their command runs: checking a command line stays cheap.
Adding a command: write ``add_arguments`` and ``run`` in ``core/<capability>/cli.py`` and add a row.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

    from core.store.project import Project


@dataclass(frozen=True)
class Command:
    module: str  # imported when the command runs
    description: str  # the text ``--help`` opens with
    add_arguments: str = "add_arguments"
    run: str = "run"


COMMANDS: dict[str, Command] = {
    "analyze": Command("core.perception.cli", "Run perception models over a file, or over folders of media (here or on Ray)."),
    "models": Command("core.cli", "List the model catalogue.", add_arguments="no_arguments", run="list_models"),
    "anomalies": Command("core.anomaly.cli", "Find what should not have happened in a recorded file, or in each file of folders."),
    "chat": Command("core.chat.cli", "Ask a model about a video or a live feed."),
    "tag": Command("core.tagging.cli", "Tag a folder of media by shot, search the archive, export the tags."),
    "select": Command("core.focus.cli", "Choose the frames of a video that answer a query (FOCUS, arXiv 2510.27280)."),
    "export": Command("core.handoff.cli", "Export a file's detections, tracks, transcript, chat or evidence for other tools.",
                      add_arguments="add_export_arguments", run="run_export"),
    "import": Command("core.handoff.cli", "Import detections or tracks (ground truth, corrections) as a track of a file.",
                      add_arguments="add_import_arguments", run="run_import"),
}


def parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of command ``name`` (``kestrel NAME --help`` prints it)."""
    import importlib

    cmd = COMMANDS[name]
    ap = argparse.ArgumentParser(prog=f"kestrel {name}", description=cmd.description)
    getattr(importlib.import_module(cmd.module), cmd.add_arguments)(ap)
    return ap


def run(name: str, argv: list[str]) -> int:
    """One command, with one way out for every failure: argparse's usage errors exit 2
    (``usage: …`` and one ``error:`` line); a Kestrel error that escapes is one ``kestrel: …``
    line and exit 1 (2 for a usage error only the file could reveal); anything else is one line
    naming the log file that holds its traceback, exit 1; Ctrl+C is one line and exit 130.
    Never a traceback on the terminal."""
    import logging

    from core.errors import is_expected, log_traceback, print_error

    handlers = _logging()
    try:
        return _parse_and_run(name, argv)
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


def command(name: str) -> Callable[[list[str]], int]:
    """``run`` of one command as a function of its arguments (``command("select")(argv)``)."""
    return lambda argv: run(name, argv)


def _parse_and_run(name: str, argv: list[str]) -> int:
    import importlib

    from core.cliargs import BadArgument

    cmd = COMMANDS[name]
    ap = parser(name)
    args = ap.parse_args(argv)
    try:
        return getattr(importlib.import_module(cmd.module), cmd.run)(args)
    except BadArgument as e:
        ap.error(str(e))  # exits 2


def _logging() -> list[logging.Handler]:
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


# -- what every command shares ------------------------------------------------------------------------

def open_project(path: str, stores: str | None = None) -> Project:
    """The project a command works in, created when missing (safe when several processes create
    the same project at once). With ``stores`` (what the command writes: "results", "tags"…) a
    read-only project is refused. Raises ProjectError: one ``kestrel: …`` line, exit 1."""
    from core.store.project import Project, ProjectError

    project = Project.open_or_create(path)
    if stores and project.read_only:
        project.close()
        raise ProjectError(f"{path} is read-only; {stores} cannot be stored.", path)
    return project


def no_arguments(ap: argparse.ArgumentParser) -> None:
    """A command without flags."""


def list_models(args: argparse.Namespace) -> int:
    """``kestrel models``: the catalogue, one line a model: name, task, ready or missing, where;
    and under it whether it can use a GPU here, and why not (asked of its runtime, no weights loaded)."""
    from models.catalogue import load_catalogue, locate
    from models.devices import capability, runtime_of

    for spec in load_catalogue().values():
        a = locate(spec)
        state = "ready" if a.available else "missing"
        if a.available and spec.options.get("licence_accepted") is False:
            state = "off"  # ships, but its licence must be accepted in the settings before it runs
        print(f"{spec.name:28s} {spec.task:13s} {state:8s} {a.where or a.message}")
        if state == "off":
            print(f"{'':28s} off by default: {spec.licence or 'see its notes'}; "
                  f"accept it to use it (analyze --models {spec.name} --accept-licence {spec.name})")
        can, why = capability(spec)
        print(f"{'':28s} GPU: {'yes' if can else 'no'} — {why} [{runtime_of(spec)}]")
    return 0
