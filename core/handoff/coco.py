"""COCO detection JSON: a detector run's boxes out, an analyst's ground truth in.

Export: ``images`` are the media's frames that hold boxes (no image file is written: each
``file_name`` names the frame, ``<stem>_<frame:06d>.jpg``, and the extra keys ``frame`` and
``time_s`` say where it is); ``annotations`` carry ``bbox`` [x, y, w, h] in pixels, ``score``,
the object id ``track_id`` and Kestrel's verdict ``confirmed``; ``categories`` use the COCO ids
(1..90) for COCO class names and ids from 91 on for any other class; ``info`` says what it is.

Import: Kestrel's own files and other tools' (CVAT's and X-AnyLabeling's COCO exports of a
video's frames): the frame of an image from ``frame``, else ``time_s``, else the digits that end
its ``file_name`` (``frame_000123.jpg``, ``000123.png``); the object id from ``track_id`` or
``attributes.track_id``, else one of its own. Every check fails with one sentence naming the
entry; nothing is stored unless the whole file is sound.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.handoff.base import ExportResult, HandoffError, ImportResult
from core.handoff.boxes import (Box, Frames, assign_ids, finite_box, for_export, import_parsed, load_json,
                                range_text, write_out)

WHAT = "COCO JSON"
FIRST_OWN_ID = 91  # categories beyond COCO's 1..90
_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


def category_ids(labels: set[str]) -> dict[str, int]:
    """label → category id: COCO's own id for a COCO class name, else 91, 92… in name order."""
    from models.backends.coco import COCO90

    coco = {name: i for i, name in COCO90.items()}
    out = {label: coco[label] for label in labels if label in coco}
    for k, label in enumerate(sorted(labels - out.keys())):
        out[label] = FIRST_OWN_ID + k
    return out


def _num(v: float) -> float:
    return round(float(v), 3)


def sampled(project: Any, media_id: int, name: str, frames: Frames, boxes: list[Box], start: float | None,
            end: float | None) -> list[int] | None:
    """The frames the run behind track ``name`` sampled in the range, those without boxes too
    (from the run's rate: core.handoff.metrics.sampled_frames); None where they cannot be known
    (a change-gated run, an import)."""
    from core.handoff.metrics import sampled_frames

    found = sampled_frames(project, media_id, name, frames)
    if found is None:
        return None
    lo = frames.frame_of(start) if start is not None else -1
    hi = frames.frame_of(end) if end is not None else math.inf
    return sorted({f for f in found if lo <= f < hi} | {b.frame for b in boxes})


def document(frames: Frames, boxes: list[Box], name: str, start: float | None, end: float | None,
             listed: list[int] | None = None) -> dict:
    """The COCO document of ``boxes`` (sorted by frame, as :func:`core.handoff.boxes.collect` gives
    them); its images are the frames ``listed`` (the run's samples), else the frames with boxes."""
    from core.exportsafe import safe_name
    from core.store.schema import app_version

    stem = safe_name(Path(frames.media_path).stem, "media")
    cats = category_ids({b.label for b in boxes})
    images = {f: {"id": f + 1, "file_name": f"{stem}_{f:06d}.jpg", "width": frames.width, "height": frames.height,
                  "frame": f, "time_s": _num(frames.time_of(f))}
              for f in (listed if listed is not None else sorted({b.frame for b in boxes}))}
    annotations = []
    for b in boxes:
        x1, y1, x2, y2 = b.box
        w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
        ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": b.frame + 1, "category_id": cats[b.label],
                               "bbox": [_num(x1), _num(y1), _num(w), _num(h)], "area": _num(w * h), "iscrowd": 0,
                               "track_id": b.track}
        if b.score is not None:
            ann["score"] = round(float(b.score), 6)
        if b.confirmed is not None:
            ann["confirmed"] = b.confirmed
        annotations.append(ann)
    info = {"description": f"Kestrel detections of {Path(frames.media_path).name}: {name}",
            "version": app_version(), "year": datetime.now(timezone.utc).year,
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "media": frames.media_path, "track": name, "start_s": start, "end_s": end, "fps": frames.fps,
            "images": ("every frame the detector looked at" if listed is not None else
                       "the frames that hold boxes (the run's samples are not known: change-gated or imported)")
            + "; no image files are written (file_name names the frame, 'frame' is its 0-based number, "
              "'time_s' its time)"}
    return {"info": info, "licenses": [], "images": list(images.values()), "annotations": annotations,
            "categories": [{"id": i, "name": label, "supercategory": ""}
                           for label, i in sorted(cats.items(), key=lambda kv: kv[1])]}


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """Write the media's newest detector run between ``start`` and ``end`` as COCO JSON to ``out``."""
    frames, boxes, name = for_export(project, media_id, start, end, state)
    doc = document(frames, boxes, name, start, end, sampled(project, media_id, name, frames, boxes, start, end))
    path = write_out(out, json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    n_img, n_cat = len(doc["images"]), len(doc["categories"])
    return ExportResult((path,), f"wrote {len(boxes)} boxes of {name} on {n_img} frames ({n_cat} classes)"
                                 f"{range_text(start, end)} to {path.name}",
                        {"boxes": len(boxes), "frames": n_img, "classes": n_cat},
                        ("no image files are written: each image names a frame of the media",))


# -- import ---------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    """An integer (a JSON number with no fraction), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _list(doc: dict, key: str, path: Path) -> list:
    value = doc.get(key)
    if not isinstance(value, list):
        raise HandoffError(f"{path.name} is not {WHAT}: " + (f"it has no {key!r} list" if value is None
                                                             else f"its {key!r} is not a list"))
    return value


def _image_frames(images: list, frames: Frames, path: Path) -> tuple[dict[int, int], dict[int, tuple[float, float]]]:
    """image id → frame; image id → (x, y) scale to the media's frame where the image's size differs."""
    out: dict[int, int] = {}
    scale: dict[int, tuple[float, float]] = {}
    for k, img in enumerate(images):
        where = f"{path.name}: image {k + 1}"
        if not isinstance(img, dict):
            raise HandoffError(f"{where} is not an object")
        iid = _int(img.get("id"))
        if iid is None:
            raise HandoffError(f"{where} has no integer id")
        if iid in out:
            raise HandoffError(f"{where}: the id {iid} is used twice")
        frame = _int(img.get("frame"))
        if frame is None and isinstance(img.get("time_s"), (int, float)) and not isinstance(img["time_s"], bool) \
                and math.isfinite(img["time_s"]):
            frame = frames.nearest_frame(img["time_s"])  # the frame's own (rounded) time
        if frame is None and isinstance(img.get("file_name"), str):
            m = _TRAILING_NUMBER.search(Path(img["file_name"].replace("\\", "/")).stem)
            frame = int(m.group(1)) if m and len(m.group(1)) <= 9 else None
        if frame is None or frame < 0:
            raise HandoffError(f"{where} (id {iid}) says no frame: give it 'frame', 'time_s' or a file name "
                               f"ending in the frame number")
        out[iid] = frame
        w, h = img.get("width"), img.get("height")
        if isinstance(w, (int, float)) and isinstance(h, (int, float)) and not isinstance(w, bool) \
                and math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0 \
                and (round(w), round(h)) != (frames.width, frames.height):
            scale[iid] = (frames.width / w, frames.height / h)
    return out, scale


def _categories(cats: list, path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for k, c in enumerate(cats):
        cid = _int(c.get("id")) if isinstance(c, dict) else None
        name = c.get("name") if isinstance(c, dict) else None
        if cid is None or not isinstance(name, str) or not name.strip():
            raise HandoffError(f"{path.name}: category {k + 1} needs an integer id and a name")
        if cid in out:
            raise HandoffError(f"{path.name}: the category id {cid} is used twice")
        out[cid] = name.strip()
    return out


def parse(text: str, frames: Frames, path: Path, state: Any = None) -> tuple[list[Box], list[str]]:
    """The boxes of a COCO document, and notes on what was left out or changed."""
    from core.jobs import check

    doc = load_json(text, path.name, WHAT)
    if not isinstance(doc, dict):
        raise HandoffError(f"{path.name} is not {WHAT}: it is a {type(doc).__name__}, not an object with images, "
                           "annotations and categories")
    images, anns, cats = _list(doc, "images", path), _list(doc, "annotations", path), _list(doc, "categories", path)
    frame_of, scale = _image_frames(images, frames, path)
    labels = _categories(cats, path)
    rows: list[tuple[int, int | None, str, tuple[float, float, float, float], float | None]] = []
    crowd = 0
    for k, a in enumerate(anns):
        if state is not None and k % 10_000 == 0:
            check(state)
            state.set_progress(k / max(1, len(anns)), "reading annotations")
        where = f"{path.name}: annotation {k + 1}"
        if not isinstance(a, dict):
            raise HandoffError(f"{where} is not an object")
        iid, cid = _int(a.get("image_id")), _int(a.get("category_id"))
        if iid not in frame_of:
            raise HandoffError(f"{where} is on image {a.get('image_id')!r}, which the file does not list")
        if cid not in labels:
            raise HandoffError(f"{where} has category {a.get('category_id')!r}, which the file does not list")
        bbox = finite_box(a.get("bbox"))
        if bbox is None:
            raise HandoffError(f"{where}: its bbox is not four finite numbers [x, y, width, height]")
        x, y, w, h = bbox
        if w < 0 or h < 0:
            raise HandoffError(f"{where}: its bbox has a negative width or height ({w:g} x {h:g})")
        if a.get("iscrowd") in (1, True):
            crowd += 1
            continue
        kx, ky = scale.get(iid, (1.0, 1.0))
        attrs = a.get("attributes")
        tid = _int(a.get("track_id"))
        if tid is None and isinstance(attrs, dict):
            tid = _int(attrs.get("track_id"))
        score = a.get("score")
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) \
            and math.isfinite(score) else None
        rows.append((frame_of[iid], tid, labels[cid], (x * kx, y * ky, (x + w) * kx, (y + h) * ky), score))
    notes = []
    if crowd:
        notes.append(f"{crowd} crowd regions (iscrowd 1) left out: they mark areas, not objects")
    if scale:
        notes.append(f"the boxes of {len(scale)} images were scaled from their size to the media's "
                     f"{frames.width}x{frames.height}")
    ids = assign_ids([r[1] for r in rows])
    return [Box(frames.time_of(f), f, tid, label, box, score)
            for (f, _t, label, box, score), tid in zip(rows, ids)], notes


def import_file(project: Any, media_id: int, path: Path, *, state: Any = None) -> ImportResult:
    """Read a COCO JSON file and store its boxes as the track "ground truth: <file name>"."""
    return import_parsed(project, media_id, path, fmt="coco", what=WHAT, parse=parse, state=state)
