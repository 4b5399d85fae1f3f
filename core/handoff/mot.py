"""MOT Challenge CSV: tracks out (MOT 2D, what the evaluation scripts and motmetrics read), in
from MOT 2D and MOT16/17/20 ground truth.

Export: one line per box, ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` with
1-based frames, sorted by frame then id; ``conf`` is the score, or 1 (a ground truth's "consider")
for a box without one (an imported track). MOT 2D has no class column, so the classes go to a small
JSON beside the file, ``<stem>.classes.json`` (``{"classes": {id: class}}``, and ``by_box``
``{"frame,id": class}`` for the boxes of an id whose class changes), which the import reads.

Import: 10 columns (MOT 2D: ``conf`` is the score, -1 none; id -1: no id) or 9 (MOT16/17/20 ground
truth: ``frame,id,l,t,w,h,consider,class,visibility``; boxes marked not to consider are left out,
classes named by the benchmark's list). The class of a box: the classes JSON when there is one,
else the benchmark's class, else "object". A malformed line fails with its number.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from core.handoff.base import ExportResult, HandoffError, ImportResult
from core.handoff.boxes import (Box, Frames, assign_ids, for_export, import_parsed, load_json, range_text, read_text,
                                write_out)

WHAT = "a MOT Challenge file"
DEFAULT_CLASS = "object"
#: MOT16/17/20 ground truth's class column (1-12: the MOT16 paper, Milan et al. 2016; 13: MOT20's crowd).
MOT_CLASSES = {1: "pedestrian", 2: "person on vehicle", 3: "car", 4: "bicycle", 5: "motorbike",
               6: "non motorized vehicle", 7: "static person", 8: "distractor", 9: "occluder",
               10: "occluder on the ground", 11: "occluder full", 12: "reflection", 13: "crowd"}


def classes_path(out: Path) -> Path:
    """The class sidecar of a MOT file: ``<stem>.classes.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.classes.json")


def _num(v: float, digits: int = 3) -> str:
    text = f"{float(v):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def lines(boxes: list[Box]) -> str:
    """The MOT 2D text of ``boxes`` (sorted by frame then id, as collect gives them)."""
    out = []
    for b in sorted(boxes, key=lambda b: (b.frame, b.track)):
        x1, y1, x2, y2 = b.box
        conf = 1.0 if b.score is None else b.score
        out.append(f"{b.frame + 1},{b.track},{_num(x1)},{_num(y1)},{_num(max(0.0, x2 - x1))},"
                   f"{_num(max(0.0, y2 - y1))},{_num(conf, 6)},-1,-1,-1\n")
    return "".join(out)


def classes_doc(boxes: list[Box], media: str, name: str) -> dict:
    """id → its most frequent class, and the boxes whose class differs from their id's."""
    per: dict[int, Counter] = {}
    for b in boxes:
        per.setdefault(b.track, Counter())[b.label] += 1
    main = {tid: c.most_common(1)[0][0] for tid, c in per.items()}
    other = {f"{b.frame + 1},{b.track}": b.label for b in boxes if b.label != main[b.track]}
    return {"format": "kestrel MOT classes 1", "media": media, "track": name,
            "classes": {str(tid): label for tid, label in sorted(main.items())}, "by_box": other}


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """Write the media's newest detector run between ``start`` and ``end`` as MOT 2D to ``out``
    and its classes to ``<stem>.classes.json`` beside it."""
    frames, boxes, name = for_export(project, media_id, start, end, state)
    out = Path(out)
    side = classes_path(out)
    doc = classes_doc(boxes, frames.media_path, name)
    path = write_out(out, lines(boxes).encode("ascii"))
    side = write_out(side, json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
    n_frames, n_ids = len({b.frame for b in boxes}), len({b.track for b in boxes})
    return ExportResult((path, side), f"wrote {len(boxes)} boxes of {n_ids} objects ({name}) on {n_frames} frames"
                                      f"{range_text(start, end)} to {path.name}, classes in {side.name}",
                        {"boxes": len(boxes), "frames": n_frames, "objects": n_ids})


# -- import ---------------------------------------------------------------------------------------

def _read_classes(path: Path) -> tuple[dict[int, str], dict[tuple[int, int], str]] | None:
    side = classes_path(path)
    if not side.is_file():
        return None
    what = f"the class list {side.name}"
    doc = load_json(read_text(side, "a class list"), what, "JSON")
    classes = doc.get("classes") if isinstance(doc, dict) else None
    by_box = doc.get("by_box", {}) if isinstance(doc, dict) else None
    if not isinstance(classes, dict) or not isinstance(by_box, dict):
        raise HandoffError(f"{what} has no 'classes' object of id: class")
    try:
        ids = {int(k): v for k, v in classes.items()}
        boxes = {(int(k.split(",")[0]), int(k.split(",")[1])): v for k, v in by_box.items()}
    except (ValueError, IndexError):
        raise HandoffError(f"{what} has a key that is not an id (or 'frame,id')") from None
    if not all(isinstance(v, str) and v.strip() for v in (*ids.values(), *boxes.values())):
        raise HandoffError(f"{what} has a class that is not a name")
    return ids, boxes


def _integer(text: str, what: str, where: str) -> int:
    try:
        v = float(text)
    except ValueError:
        raise HandoffError(f"{where}: the {what} {text[:40]!r} is not a number") from None
    if not math.isfinite(v) or not v.is_integer() or abs(v) > 2**53:
        raise HandoffError(f"{where}: the {what} {text[:40]!r} is not a whole number")
    return int(v)


def _real(text: str, what: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise HandoffError(f"{where}: the {what} {text[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise HandoffError(f"{where}: the {what} is {text[:40]!r}, not a finite number")
    return v


def parse(text: str, frames: Frames, path: Path, state: Any = None) -> tuple[list[Box], list[str]]:
    """The boxes of a MOT file's text, and notes on what was left out."""
    from core.jobs import check

    sidecar = _read_classes(path)
    rows: list[tuple[int, int | None, str, tuple[float, float, float, float], float | None]] = []
    ignored = 0
    all_lines = text.splitlines()
    for n, line in enumerate(all_lines, 1):
        if state is not None and n % 20_000 == 0:
            check(state)
            state.set_progress(n / len(all_lines), "reading lines")
        line = line.strip()
        if not line:
            continue
        where = f"{path.name}, line {n}"
        cells = [c.strip() for c in line.split(",")] if "," in line else line.split()
        if len(cells) not in (9, 10):
            raise HandoffError(f"{where}: {len(cells)} values; MOT lines have 10 (frame, id, left, top, width, "
                               "height, conf, x, y, z) or 9 (ground truth: ..., consider, class, visibility)")
        frame = _integer(cells[0], "frame", where)
        if frame < 1:
            raise HandoffError(f"{where}: frame {frame}; MOT frames count from 1")
        tid = _integer(cells[1], "id", where)
        left, top, w, h = (_real(c, k, where) for c, k in zip(cells[2:6], ("left", "top", "width", "height")))
        if w < 0 or h < 0:
            raise HandoffError(f"{where}: a negative width or height ({w:g} x {h:g})")
        label, score = DEFAULT_CLASS, None
        if len(cells) == 9:
            consider = _integer(cells[6], "consider flag", where)
            cls = _integer(cells[7], "class", where)
            if consider == 0:
                ignored += 1
                continue
            label = MOT_CLASSES.get(cls, f"class {cls}")
        else:
            conf = _real(cells[6], "confidence", where)
            score = None if conf == -1 else conf
        if sidecar is not None:
            label = sidecar[1].get((frame, tid)) or sidecar[0].get(tid) or label
        rows.append((frame - 1, None if tid < 0 else tid, label.strip(), (left, top, left + w, top + h), score))
    notes = [f"{ignored} boxes marked not to consider (flag 0) left out"] if ignored else []
    ids = assign_ids([r[1] for r in rows])
    return [Box(frames.time_of(f), f, tid, label, box, score)
            for (f, _t, label, box, score), tid in zip(rows, ids)], notes


def import_file(project: Any, media_id: int, path: Path, *, state: Any = None) -> ImportResult:
    """Read a MOT Challenge file (and its ``.classes.json`` when there is one) and store its
    boxes as the track "ground truth: <file name>"."""
    return import_parsed(project, media_id, path, fmt="mot", what=WHAT, parse=parse, state=state)
