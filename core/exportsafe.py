"""Safe exports: CSV cells that never run as spreadsheet formulas, and file names built from
stored text (media paths, event labels) that stay inside the folder the analyst chose.

**CSV cells (OWASP's rule for CSV injection).** A spreadsheet runs a cell whose text begins
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula (``=HYPERLINK(...)``,
``=cmd|' /C calc'!A0``). Every CSV Kestrel writes goes through :func:`safe_cell` (directly or
via :func:`writer` / :func:`dict_writer`), which prefixes such a *text* cell with a single
quote ``'`` — the spreadsheet then shows it as text. Numbers Kestrel computes are passed as
numbers (``int``/``float``, numpy scalars too) and written as they are, so a score of -0.5
stays a number a spreadsheet can sum (a number Kestrel formats itself, "-0.500", is marked
with :func:`fixed` and passes when it is a plain number). Any other *string* is text,
whatever it looks like: a stored label "-2" or "-0.5" is written ``'-2`` / ``'-0.5``
(OWASP: prefix it too when it is text — Kestrel cannot tell a planted "-2+3" from an honest
"-2" by looking, and a label is not a quantity). Non-finite numbers (nan, ±inf) are written as text by the same rule
(``'-inf``). Beyond OWASP's list, a cell whose first non-blank character is one of those
(" =1"), or its full-width form ("＝1", which some spreadsheets take as "="), is
neutralised too, as is one whose first visible character follows invisible or control
characters ("\u200b=1", "\ufeff=1", "\x00=1") or a tab or CR after blanks (" \t=1"), or
folds to one of those under NFKC ("﹦1"). Every cell is enclosed in double quotes (OWASP again): with ``csv``'s minimal
quoting and a "\n" line end, a carriage return inside a cell is written bare, and a
spreadsheet reads it as a new row whose first cell ("=1" after "x\r") runs.

**File names.** :func:`safe_name` turns any stored text into one file name component:
no path separators (``/``, ``\\``), no ``..``, no NUL or control characters, no characters
Windows refuses, no Windows device name (CON, NUL, COM1…), no leading dot (no hidden files),
at most :data:`MAX_NAME_BYTES` bytes of UTF-8, never empty. :func:`unique_names` makes a set
of them distinct (case-insensitively, as on Windows and macOS), and :func:`inside` is the
last check before a write: the path is a direct child of the chosen folder.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["FORMULA_START", "Number", "fixed", "safe_cell", "safe_row", "writer", "dict_writer", "safe_name",
           "unique_names", "inside", "write_replacing", "MAX_NAME_BYTES"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_AFTER_SPACE = tuple("=+-@\uff1d\uff0b\uff0d\uff20")  # and their full-width forms, after leading blanks
_FORMULA_CHARS = frozenset("=+-@")
MAX_NAME_BYTES = 120  # of a stem: room left for "-<id>" and ".kestrel-tags.json" under the usual 255
_WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", "conin$", "conout$"}
                              | {f"{p}{i}" for p in ("com", "lpt") for i in list(range(10)) + ["¹", "²", "³"]})
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


# -- CSV ------------------------------------------------------------------------------------------

class Number(str):
    """A number Kestrel formatted itself (e.g. "-0.500", fixed decimals): written as it is
    when it is a plain number, neutralised like any text otherwise."""


def fixed(value: float, digits: int) -> Number:
    """``value`` with ``digits`` decimals, as a CSV number (see :class:`Number`)."""
    return Number(f"{float(value):.{int(digits)}f}")


def safe_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as it is: text starting with ``= + - @``, tab or
    CR gets a leading ``'``; finite numbers pass unchanged; None is an empty cell; anything
    else is written as its text, by the same rule."""
    if value is None:
        return ""
    if isinstance(value, Number) and _NUMBER.fullmatch(value):
        return str(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if isinstance(value, numbers.Integral) or math.isfinite(float(value)):
            return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if _formula_like(text) else text


def _formula_like(text: str) -> bool:
    """Starts with = + - @ tab or CR, or does so after leading blanks, control or invisible
    format characters (" \t", "\u200b=", "\ufeff=", "\x00="), in any compatibility form
    ("＝", "﹦": NFKC folds them to "=")."""
    if text.startswith(FORMULA_START):
        return True
    for ch in text:
        if ch in "\t\r":
            return True
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"):
            continue
        return unicodedata.normalize("NFKC", ch)[:1] in _FORMULA_CHARS or ch in _AFTER_SPACE
    return False


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(v) for v in row]


class _SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`safe_cell` (header included)."""

    def __init__(self, fileobj: Any, **kw: Any) -> None:
        self._w = csv.writer(fileobj, **{"quoting": csv.QUOTE_ALL, **kw})

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._w.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for r in rows:
            self.writerow(r)


class _SafeDictWriter:
    """``csv.DictWriter`` whose every cell goes through :func:`safe_cell` (header included)."""

    def __init__(self, fileobj: Any, fieldnames: Sequence[str], restval: Any = "", **kw: Any) -> None:
        self._w = csv.DictWriter(fileobj, fieldnames, restval=safe_cell(restval), **{"quoting": csv.QUOTE_ALL, **kw})
        self.fieldnames = self._w.fieldnames

    def writeheader(self) -> Any:
        return self._w.writer.writerow(safe_row(self.fieldnames))

    def writerow(self, row: Mapping[str, Any]) -> Any:
        return self._w.writerow({k: safe_cell(v) for k, v in row.items()})

    def writerows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            self.writerow(r)


def writer(fileobj: Any, **kw: Any) -> _SafeWriter:
    """A ``csv.writer`` over ``fileobj`` that neutralises every cell (see the module docstring)."""
    return _SafeWriter(fileobj, **kw)


def dict_writer(fileobj: Any, fieldnames: Sequence[str], **kw: Any) -> _SafeDictWriter:
    """A ``csv.DictWriter`` over ``fileobj`` that neutralises every cell."""
    return _SafeDictWriter(fileobj, fieldnames, **kw)


# -- file names -----------------------------------------------------------------------------------

def safe_name(text: Any, fallback: str = "file", max_bytes: int = MAX_NAME_BYTES) -> str:
    """One file name component from stored text (see the module docstring); ``fallback`` when
    nothing usable is left. Only the last path component of ``text`` is kept by the caller's
    choice: here ``/`` and ``\\`` are simply replaced, so "../../etc/x" becomes "_.._etc_x"."""
    s = unicodedata.normalize("NFC", str(text if text is not None else ""))
    s = s.encode("utf-8", "replace").decode("utf-8")  # lone surrogates (undecodable bytes) → ?
    # invisible format characters (bidi overrides that show "gpj.exe" as "exe.jpg", zero-width
    # spaces, BOM) name no file an analyst can read or type
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Cf")
    s = _BAD_CHARS.sub("_", s).replace("?", "_")
    s = " ".join(s.split())  # no odd whitespace runs
    s = s.strip(" .")  # no "..", no hidden files, no trailing dot (Windows drops it)
    while len(s.encode("utf-8")) > max_bytes:
        s = s[:-1]
    s = s.rstrip(" .")
    if s.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        s = "_" + s
    if not s or set(s) <= {"_"}:
        s = fallback  # a constant of the caller's, e.g. "media" or "event"
    return s


def unique_names(names: Mapping[Any, str], taken: Iterable[str] = ()) -> dict[Any, str]:
    """``{key: name}`` → ``{key: distinct name}``: a name shared (case-insensitively) by several
    keys, or already ``taken``, gets ``-<key>`` (then ``-<key>-2``, …) appended."""
    count: dict[str, int] = {}
    for n in names.values():
        count[n.casefold()] = count.get(n.casefold(), 0) + 1
    used = {t.casefold() for t in taken}
    out: dict[Any, str] = {}
    for key, n in names.items():  # names used once first keep their name
        if count[n.casefold()] == 1 and n.casefold() not in used:
            out[key] = n
            used.add(n.casefold())
    for key, n in names.items():
        if key in out:
            continue
        cand, k = f"{n}-{key}", 1
        while cand.casefold() in used:
            k += 1
            cand = f"{n}-{key}-{k}"
        out[key] = cand
        used.add(cand.casefold())
    return {key: out[key] for key in names}


def inside(folder: str | Path, name: str) -> Path:
    """``folder / name``, checked to be a direct child of ``folder`` (ValueError otherwise).
    The name itself is not followed: Kestrel writes to a temporary file and renames it over
    the name, which replaces a link planted there instead of writing through it."""
    base = Path(folder).resolve()
    path = base / name
    if name in ("", ".", "..") or "\x00" in name or path.name != name or path.parent != base:
        raise ValueError(f"the file name {name!r} would leave {base}")
    return path


def write_replacing(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (created exclusively) and rename it
    over ``path``: a link planted under ``path`` is replaced, never written through, and a
    reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".kestrel-", suffix=".part", dir=path.parent)  # any name length
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
