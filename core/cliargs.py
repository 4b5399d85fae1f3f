"""Argument types for Kestrel's command lines: every number is checked where it is parsed.

Each function here is an ``argparse`` ``type=``: it turns the text into a value or raises
``argparse.ArgumentTypeError`` with a sentence, so argparse prints ``usage: …`` and
``kestrel X: error: argument --fps: …`` and exits 2 — never a traceback, never a NaN or an
infinity that travels on into a job. Checks that need the file itself (``--start`` past its
end) are made by the command after probing it (:func:`past_end`).

Nothing here imports torch: :func:`check_device` does, and only when CUDA was asked for.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from core.errors import KestrelError

__all__ = ["UsageError", "BadArgument", "number", "integer", "fps", "seconds", "duration", "fraction", "model_list", "weights_pair",
           "check_device", "add_device", "past_end", "text", "out_folder", "MIN_FPS", "MAX_FPS", "MAX_SECONDS"]


class UsageError(KestrelError):
    """A bad argument only the file could reveal (``--start`` past its end): one line, exit 2."""


class BadArgument(UsageError):
    """A flag a command refuses after parsing (``--end`` before ``--start``, two flags that
    contradict each other): the command's ``usage: …`` and one ``error:`` line, exit 2, as
    argparse prints them (:func:`core.cli.run` hands it to the parser)."""


MAX_FPS = 120.0
MAX_SECONDS = 1e7  # ~116 days: longer than any file Kestrel opens; stops 1e300 before it travels on


def _show(x: float) -> str:
    return f"{x:g}"


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           what: str = "a number") -> Callable[[str], float]:
    """A finite float in [lo, hi] (``lo_open``/``hi_open``: that end excluded)."""
    lo_s = "" if lo is None else ("(" if lo_open else "[") + _show(lo)
    hi_s = "" if hi is None else _show(hi) + (")" if hi_open else "]")
    span = f"{lo_s}, {hi_s}" if lo is not None and hi is not None else (
        f"{'>' if lo_open else '≥'} {_show(lo)}" if lo is not None else (
            f"{'<' if hi_open else '≤'} {_show(hi)}" if hi is not None else "finite"))

    def parse(text: str) -> float:
        try:
            x = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(x) or (lo is not None and (x < lo or (lo_open and x == lo))) or \
                (hi is not None and (x > hi or (hi_open and x == hi))):
            raise argparse.ArgumentTypeError(f"{text} is not {what} {_range(span)}")
        return x

    parse.__name__ = what
    return parse


def _range(span: str) -> str:
    if span == "finite":
        return "(a finite number)"
    return f"(a finite number {span})" if span[0] in "≥≤<>" else f"in {span}"


def integer(lo: int | None = None, hi: int | None = None, *, what: str = "a whole number") -> Callable[[str], int]:
    """An int in [lo, hi]."""
    span = (f"in [{lo}, {hi}]" if lo is not None and hi is not None else
            f"≥ {lo}" if lo is not None else f"≤ {hi}" if hi is not None else "")

    def parse(text: str) -> int:
        try:
            x = int(str(text).strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (a whole number"
                                             + (f" {span})" if span else ")")) from None
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise argparse.ArgumentTypeError(f"{text} is not {what} {span}")
        return x

    parse.__name__ = what
    return parse


MIN_FPS = 0.01  # a frame every 100 s; below it a frame's step (1/fps) runs past any file
fps = number(MIN_FPS, MAX_FPS, what="a frame rate")
"""Frames per second, in [0.01, 120]."""

seconds = number(0.0, MAX_SECONDS, what="a time in seconds")
"""A media time: finite, ≥ 0."""


def duration(lo: float = 0.0, hi: float = MAX_SECONDS, what: str = "a duration in seconds") -> Callable[[str], float]:
    """A length of time: finite, > ``lo``, ≤ ``hi``."""
    return number(lo, hi, lo_open=True, what=what)


def fraction(*, zero: bool = True, what: str = "a fraction") -> Callable[[str], float]:
    """A share in [0, 1] (``zero=False``: (0, 1])."""
    return number(0.0, 1.0, lo_open=not zero, what=what)


def text(what: str = "text") -> Callable[[str], str]:
    """Words for a model (a query, a question): text that is not UTF-8 (a terminal in another
    encoding hands Python lone surrogates) is refused here; a tokenizer would fail on it only
    after the models loaded and the frames decoded."""

    def parse(value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise argparse.ArgumentTypeError(f"{what} is not UTF-8 text (check the terminal's encoding)") from None
        return value

    parse.__name__ = what
    return parse


def out_folder(text: str) -> str:
    """A folder to write into, there or to be made: refused when it, or a folder above it, is
    a file (checked before the work, not after minutes of it)."""
    import os
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("the folder name is empty")
    p = Path(text).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise argparse.ArgumentTypeError(f"{q} is not a folder" + ("" if q == p else f", so {p} cannot be one"))
            if not os.access(q, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"the folder {q} cannot be written to (permission denied)")
            break
    return text


out_folder.__name__ = "a folder"


def model_list(tasks: tuple[str, ...] | None = None) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated catalogue names: at least one, each in the catalogue (and, with
    ``tasks``, each a model for one of them)."""

    def parse(text: str) -> tuple[str, ...]:
        from models.catalogue import load_catalogue

        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        if not names:
            raise argparse.ArgumentTypeError("no model named (give catalogue names, e.g. ssd-mobilenet-v2-coco; "
                                             "python main.py models lists them)")
        cat = load_catalogue()
        unknown = [n for n in names if n not in cat]
        if unknown:
            raise argparse.ArgumentTypeError(f"not in the model catalogue: {', '.join(unknown)} "
                                             "(python main.py models lists the names)")
        other = [f"{n} ({cat[n].task})" for n in names if tasks is not None and cat[n].task not in tasks]
        if other:
            raise argparse.ArgumentTypeError(f"not a model for this command: {', '.join(other)}; "
                                             f"it takes {', '.join(tasks or ())} models")
        return names

    parse.__name__ = "a list of models"
    return parse


def weights_pair(text: str) -> tuple[str, str]:
    """``MODEL=PATH``: MODEL a bring-your-own model of the catalogue, PATH not empty."""
    from models.catalogue import load_catalogue

    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    cat = load_catalogue()
    own = sorted(n for n, s in cat.items() if s.user_supplied)
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL=PATH (e.g. yolo-user=/models/best.pt)")
    if name not in cat:
        raise argparse.ArgumentTypeError(f"{name!r} is not in the model catalogue (models that take your "
                                         f"weights: {', '.join(own)})")
    if not cat[name].user_supplied:
        raise argparse.ArgumentTypeError(f"{name} brings its own weights and takes none of yours (models "
                                         f"that do: {', '.join(own)})")
    return name, path


def add_device(ap: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda``: where the models run (one preference for every model)."""
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                    help="where models run: auto (CUDA where a model's runtime can use it), cpu, or cuda "
                         "(a model that cannot runs on the CPU and its run says why); `models` lists which can")


def check_device(device: str | None) -> None:
    """``--device cuda`` on a machine where no runtime sees CUDA: :class:`BadArgument` (exit 2);
    otherwise the preference every model of this process loads with (:mod:`models.devices`).
    Asks the runtimes (imports them) only when CUDA was asked for."""
    if device is None:
        return
    from models import devices

    if device == "cuda":
        ok, _why = devices.any_cuda()
        if not ok:
            raise BadArgument("argument --device: cuda was asked for, but CUDA is not available on this machine "
                              "(use --device cpu, or leave --device out)")
    devices.set_preference(device)


def past_end(option: str, value: float | None, duration_s: float, name: str, *, verb: str = "is") -> None:
    """Refuses ``option`` lying at or past the end of a file of ``duration_s`` (``verb``: "is",
    "starts"): UsageError, one ``kestrel: …`` line and exit 2."""
    if value is not None and value >= duration_s:
        raise UsageError(f"{option} {value:g} s {verb} past the end of {name} ({duration_s:.2f} s long)")
