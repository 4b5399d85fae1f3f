"""A stand-in hand-off format for the tests of what surrounds the formats (the jobs, the command
line, the File menu's dialog): it reads and writes a real project, so what those tests check
(a file written from the stored boxes in the range, a track stored by an import) is so.

``install(monkeypatch)`` registers three formats: ``fakejson`` (exports the boxes of the
range as JSON, imports such a file as a ground-truth track), ``fakerefuses`` (a HandoffError, as
a format says what it cannot do), ``fakebug`` (an unexpected error, as a format's bug) and
``fakeslow`` (works until cancelled).
"""
from __future__ import annotations

import json
import sys
import threading
import types
from pathlib import Path

from core.exportsafe import write_replacing
from core.handoff import base
from core.handoff.base import ExportResult, Format, HandoffError, ImportResult
from core.jobs import check
from core.perception import ops
from core.timeline import Item, Track

MODULE = "kestrel_tests_fakeformat"


def export(project, media_id: int, out: Path, *, start=None, end=None, state=None) -> ExportResult:
    lo, hi = start if start is not None else 0.0, end if end is not None else float("inf")
    boxes = []
    tracks = [t for t in ops.load_tracks(project, media_id) if t.kind == "boxes"]
    for k, tr in enumerate(tracks):
        if state is not None:
            state.set_progress(k / max(1, len(tracks)), tr.name)
            check(state)
        boxes += [{"t": i.start, "label": i.label, "box": i.data["box"]} for i in tr.items if lo <= i.start < hi]
    write_replacing(out, json.dumps(boxes).encode())
    return ExportResult(paths=(out,), summary=f"{len(boxes)} boxes written to {out.name}", counts={"boxes": len(boxes)},
                        notes=("scores are not written",))


def import_file(project, media_id: int, path: Path, *, state=None) -> ImportResult:
    try:
        rows = json.loads(path.read_text())
        items = [Item(r["t"], r["t"] + 0.04, r["label"], None, data={"box": r["box"], "source": "ground truth"})
                 for r in rows]
    except (ValueError, KeyError, TypeError) as e:
        raise HandoffError(f"{path.name} is not a fake-format file ({e})") from None
    track_id = ops.save_track(project, media_id, Track("boxes", f"ground truth: {path.name}", items,
                                                       meta={"imported": True, "format": "fakejson"}))
    return ImportResult(track_id=track_id, items=len(items), summary=f"{len(items)} boxes imported from {path.name}")


def refuse(*_a, **_k):
    raise HandoffError("the fake format refuses this file")


def bug(*_a, **_k):
    raise RuntimeError("a bug in the fake format")


def wait_for_cancel(_project, _media_id, out: Path, *, start=None, end=None, state=None) -> ExportResult:
    """Works until cancelled (the window's Cancel), then stops as a format does: nothing written."""
    state.set_progress(0.1, "waiting for Cancel")
    while not state.is_cancelled():
        threading.Event().wait(0.01)
    check(state)
    raise AssertionError("a cancelled job went on")


def install(monkeypatch) -> None:
    mod = types.ModuleType(MODULE)
    mod.export, mod.import_file = export, import_file
    refusing = types.ModuleType(MODULE + "_refuses")
    refusing.export = refusing.import_file = refuse
    buggy = types.ModuleType(MODULE + "_bug")
    buggy.export = buggy.import_file = bug
    slow = types.ModuleType(MODULE + "_slow")
    slow.export = wait_for_cancel
    for m in (mod, refusing, buggy, slow):
        m.__spec__ = types.SimpleNamespace(name=m.__name__)  # importlib.util.find_spec finds it
        monkeypatch.setitem(sys.modules, m.__name__, m)
    for f in (Format("fakejson", "Fake JSON (boxes)", MODULE, ".json", True, "a test's format"),
              Format("fakerefuses", "Fake refusing format", MODULE + "_refuses", ".json", True, "refuses"),
              Format("fakebug", "Fake buggy format", MODULE + "_bug", ".json", False, "fails"),
              Format("fakeslow", "Fake slow format", MODULE + "_slow", ".json", False, "runs until cancelled")):
        monkeypatch.setitem(base.FORMATS, f.name, f)
