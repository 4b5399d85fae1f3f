"""Label Studio video object tracking JSON: Kestrel's boxes as ``videorectangle`` regions, and
Label Studio's regions back as a ground-truth track.

The layout is Label Studio's documented one for the ``<VideoRectangle>`` tag (labelstud.io,
"VideoRectangle"; the SDK's ``VideoRectangleValue``): a list of tasks ``{"data": {"video": …},
"predictions": [{"model_version", "score", "result": [region, …]}]}``, one region per object
``{"id", "type": "videorectangle", "from_name": "box", "to_name": "video", "origin",
"value": {"framesCount", "duration", "sequence": [keyframe, …], "labels": [class]}}`` with a
keyframe ``{"frame" (1-based), "enabled", "x", "y", "width", "height" (percent of the frame),
"rotation", "time"}`` per sampled frame. Label Studio interpolates between keyframes; where the
object leaves (see :mod:`core.handoff.keyframes`) its keyframe has ``"enabled": false``. A region
has one score in Label Studio: the mean of its boxes' scores.

The export writes the labelling config beside the JSON (``<stem>.label-config.xml``): the
``Video``/``VideoRectangle``/``Labels`` view with the classes exported, to paste into a project's
Labeling Interface before importing the tasks.

An import reads a list of tasks or one task, its annotations (the first one not cancelled) or
else its predictions, and keeps the keyframes stored (Label Studio's interpolated frames between
them are not made up here). Percent become pixels with the media's frame size.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from core.handoff.base import ExportResult, HandoffError, ImportResult
from core.handoff.boxes import Box, Frames, for_export, import_parsed, load_json, write_out
from core.handoff.cvat import xml_safe
from core.handoff.keyframes import objects
from core.jobs import check

FORMAT = "labelstudio"
FROM_NAME = "box"  # the VideoRectangle's name in the labelling config
TO_NAME = "video"  # the Video's name
LABELS_NAME = "videoLabels"  # the Labels' name (Label Studio's own template; names are unique in a config)
CONFIG_SUFFIX = ".label-config.xml"


# -- writing -----------------------------------------------------------------------------------

def _pct(v: float, whole: int) -> float:
    return round(100.0 * v / whole, 6)


def to_tasks(frames: Frames, boxes: list[Box], *, video: str, model: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One Label Studio task holding ``boxes`` as the prediction of ``model``; and notes."""
    total = max(1, int(round(frames.duration * frames.fps)))
    last = max([total - 1, *(b.frame for b in boxes)])
    objs, notes = objects(boxes, last)
    result = []
    for o in objs:
        seq = []
        for k in o.keys:
            x1, y1, x2, y2 = k.box.box
            seq.append({"frame": k.box.frame + 1, "enabled": not k.leaves,
                        "x": _pct(x1, frames.width), "y": _pct(y1, frames.height),
                        "width": _pct(x2 - x1, frames.width), "height": _pct(y2 - y1, frames.height),
                        "rotation": 0, "time": round(frames.time_of(k.box.frame), 6)})
        region: dict[str, Any] = {"id": str(o.id), "type": "videorectangle", "from_name": FROM_NAME,
                                  "to_name": TO_NAME, "origin": "prediction",
                                  "value": {"framesCount": total, "duration": round(frames.duration, 6),
                                            "sequence": seq, "labels": [o.label]}}
        scores = [k.box.score for k in o.keys if k.box.score is not None]
        if scores:
            region["score"] = round(sum(scores) / len(scores), 6)
        result.append(region)
    scores = [r["score"] for r in result if "score" in r]
    prediction: dict[str, Any] = {"model_version": model, "result": result}
    if scores:
        prediction["score"] = round(sum(scores) / len(scores), 6)
    return [{"data": {"video": video}, "predictions": [prediction]}], notes


def label_config(labels: list[str], fps: float) -> str:
    """The labelling config (Label Studio's "Video Object Tracking" template) for ``labels``."""
    view = ET.Element("View")
    lab = ET.SubElement(view, "Labels", {"name": LABELS_NAME, "toName": TO_NAME, "allowEmpty": "true"})
    for label in labels:
        ET.SubElement(lab, "Label", {"value": xml_safe(label)})
    ET.SubElement(view, "Video", {"name": TO_NAME, "value": "$video", "framerate": f"{fps:g}"})
    ET.SubElement(view, "VideoRectangle", {"name": FROM_NAME, "toName": TO_NAME})
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def config_path(out: Path) -> Path:
    """Where the export writes its labelling config: ``<stem>.label-config.xml`` beside ``out``."""
    return out.with_name(out.stem + CONFIG_SUFFIX)


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """The media file's detections between ``start`` and ``end`` as a Label Studio video task
    (predictions) at ``out``, with its labelling config beside it."""
    frames, boxes, track = for_export(project, media_id, start, end, state)
    if state is not None:
        check(state)
    tasks, notes = to_tasks(frames, boxes, video=Path(frames.media_path).name, model=track)
    out = Path(out)
    path = write_out(out, json.dumps(tasks, indent=1, ensure_ascii=False).encode("utf-8"))
    labels = sorted({b.label for b in boxes})
    cfg = write_out(config_path(out), label_config(labels, frames.fps).encode("utf-8"))
    regions = len(tasks[0]["predictions"][0]["result"])
    summary = (f"wrote {len(boxes)} boxes of {regions} objects from {track!r} to {path.name} (Label Studio video), "
               f"its labelling config to {cfg.name}")
    notes.append("Label Studio gives a region one score: each object's is the mean of its boxes' scores")
    return ExportResult((path, cfg), summary, {"boxes": len(boxes), "tracks": regions,
                                               "frames": len({b.frame for b in boxes})}, tuple(notes))


# -- reading -----------------------------------------------------------------------------------

WHAT = "Label Studio video JSON"


def _fail(name: str, what: str) -> HandoffError:
    return HandoffError(f"{name} is not {WHAT}: {what}")


def _pick_task(doc: Any, frames: Frames, name: str) -> dict[str, Any]:
    tasks = doc if isinstance(doc, list) else [doc]
    if not tasks or not all(isinstance(t, dict) for t in tasks):
        raise _fail(name, "expected a task object or a list of them")
    if len(tasks) == 1:
        return tasks[0]
    media = Path(frames.media_path).name
    mine = [t for t in tasks if isinstance(t.get("data"), dict)
            and any(isinstance(v, str) and v.replace("\\", "/").rsplit("/", 1)[-1].split("?")[0] == media
                    for v in t["data"].values())]
    if len(mine) != 1:
        raise HandoffError(f"{name} holds {len(tasks)} tasks and {len(mine) or 'none'} of them name {media}; "
                           "export the task of this video alone")
    return mine[0]


def _pick_result(task: dict[str, Any], name: str) -> tuple[list[Any], str, list[str]]:
    """The regions to read: the first annotation not cancelled, else the first prediction."""
    notes: list[str] = []
    for key in ("annotations", "predictions"):
        entries = task.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise _fail(name, f'"{key}" is not a list of objects')
        usable = [e for e in entries if not e.get("was_cancelled")]
        if not usable:
            continue
        result = usable[0].get("result")
        if not isinstance(result, list):
            raise _fail(name, f'the first of its "{key}" has no "result" list')
        if len(usable) > 1:
            notes.append(f"the task has {len(usable)} {key}; the first was imported")
        return result, key, notes
    raise _fail(name, 'its task has no "annotations" or "predictions"')


def _number(v: Any, what: str, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(name, f"{what} is {v!r}, not a number")
    x = float(v)
    if not math.isfinite(x):
        raise HandoffError(f"{name}: {what} is {v}, not a finite number")
    return x


def _pixels(kf: dict[str, Any], frames: Frames, where: str, name: str) -> tuple[tuple[float, float, float, float], bool]:
    """A keyframe's box in pixels (the box around it when it is rotated), and whether it was."""
    x, y, w, h = (_number(kf.get(k), f'"{k}" of {where}', name) for k in ("x", "y", "width", "height"))
    if w < 0 or h < 0:
        raise HandoffError(f"{name}: {where} has a negative width or height ({w:g} %, {h:g} %)")
    x, w = x * frames.width / 100.0, w * frames.width / 100.0
    y, h = y * frames.height / 100.0, h * frames.height / 100.0
    rot = kf.get("rotation", 0) or 0
    rot = _number(rot, f'"rotation" of {where}', name)
    if rot % 360 == 0:
        return (x, y, x + w, y + h), False
    # Label Studio turns the box about its top-left corner, in pixels
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    xs = [x, x + w * c, x - h * s, x + w * c - h * s]
    ys = [y, y + w * s, y + h * c, y + w * s + h * c]
    return (min(xs), min(ys), max(xs), max(ys)), True


def parse(text: str, frames: Frames, path: Path, state: Any = None) -> tuple[list[Box], list[str]]:
    """The boxes of a Label Studio video task (JSON text), in the media's frame numbering and
    pixels; notes on what was left out. HandoffError (one line, naming the file) for anything else."""
    name = Path(path).name
    if state is not None:
        check(state)
        state.set_progress(0.3, "reading Label Studio JSON")
    doc = load_json(text, name, WHAT)
    task = _pick_task(doc, frames, name)
    result, key, notes = _pick_result(task, name)
    pred = key == "predictions"
    out: list[Box] = []
    taken: set[int] = set()
    regions: list[tuple[dict[str, Any], int | None]] = []
    other = rotated = unlabelled = dropped = 0
    for i, region in enumerate(result):
        if not isinstance(region, dict):
            raise _fail(name, f"region {i} is not an object")
        if region.get("type") != "videorectangle":
            other += 1
            continue
        rid = str(region.get("id", ""))
        tid = int(rid) if rid.isascii() and rid.isdigit() and len(rid) < 16 else None  # Kestrel's own ids; others are random text
        if tid is not None and tid not in taken:
            taken.add(tid)
            regions.append((region, tid))
        else:
            regions.append((region, None))
    next_id = max(taken, default=0) + 1
    for region, tid in regions:
        if tid is None:
            tid, next_id = next_id, next_id + 1
        value = region.get("value")
        if not isinstance(value, dict) or not isinstance(value.get("sequence"), list):
            raise _fail(name, f"region {region.get('id')!r} has no value.sequence list")
        labels = value.get("labels")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(s, str) for s in labels)):
            raise _fail(name, f"the labels of region {region.get('id')!r} are not a list of text")
        label = (labels[0].strip() if labels else "") or "object"
        unlabelled += label == "object" and not labels
        score = region.get("score") if pred else None
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) \
            and math.isfinite(score) else None
        boxes: dict[int, Box] = {}
        for kf in value["sequence"]:
            where = f"a keyframe of region {region.get('id')!r}"
            if not isinstance(kf, dict):
                raise _fail(name, f"{where} is not an object")
            f = kf.get("frame")
            if isinstance(f, bool) or not isinstance(f, int) and not (isinstance(f, float) and f.is_integer()):
                raise _fail(name, f'"frame" of {where} is {f!r}, not a whole number')
            if f < 1:
                raise HandoffError(f"{name}: {where} is on frame {f}; Label Studio counts frames from 1")
            frame = int(f) - 1
            box, turned = _pixels(kf, frames, where, name)
            rotated += turned
            dropped += frame in boxes
            boxes[frame] = Box(frames.time_of(frame), frame, tid, label, box, score, None)
        out.extend(boxes.values())
    if other:
        notes.append(f"{other} regions other than video rectangles were left out")
    if rotated:
        notes.append(f"{rotated} rotated boxes were imported as the upright boxes around them")
    if unlabelled:
        notes.append(f'{unlabelled} regions without a label were imported as "object"')
    if dropped:
        notes.append(f"{dropped} keyframes repeated a frame of their region; the later one was kept")
    if not out:
        raise HandoffError(f"{name} holds no video rectangles to import")
    notes.append(f"Label Studio interpolates between keyframes; the {len(out)} keyframes stored were imported, "
                 "no boxes in between")
    out.sort(key=lambda b: (b.frame, b.track))
    return out, notes


def import_file(project: Any, media_id: int, path: Path, *, state: Any = None) -> ImportResult:
    """Read a Label Studio video task (JSON export) and store its boxes as the media's track
    "ground truth: <file name>"."""
    return import_parsed(project, media_id, path, fmt=FORMAT, what=WHAT, parse=parse, state=state)
