"""CVAT for video 1.1 XML: Kestrel's boxes as CVAT tracks, and CVAT's tracks (or its "for
images" boxes) back as a ground-truth track.

The layout is CVAT's documented one (docs.cvat.ai, "XML annotation format", version 1.1):
``<annotations><version>1.1</version><meta><task>…</task><dumped>…</dumped></meta>`` and then
one ``<track id label source>`` per object with a ``<box frame keyframe outside occluded xtl ytl
xbr ybr z_order>`` per keyframe. Every sampled frame is a keyframe (CVAT interpolates between
them); where the object leaves (see :mod:`core.handoff.keyframes`) a box ``outside="1"`` on the
next frame ends it, as CVAT itself writes. A range export is what CVAT writes for a task made
from the video with that start and stop frame: ``<start_frame>``/``<stop_frame>`` say where it
lies in the video and the boxes' frames count from the task's first frame.

Each label declares two mutable attributes: ``score`` (text: CVAT's number attribute takes
only values on its min/max/step grid, which a detector's score is not) and ``confirmed``
(checkbox: Kestrel's verdict, see the README on evidence).

Reading refuses any DOCTYPE or entity declaration (XML bombs, external entities) through
defusedxml; boxes outside="1" end a track and are not boxes; every other box is kept as it is
stored (no interpolated boxes are made up between keyframes).
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.handoff.base import ExportResult, HandoffError, ImportResult
from core.handoff.boxes import Box, Frames, for_export, import_parsed, write_out
from core.handoff.keyframes import objects
from core.jobs import check

FORMAT = "cvat"
VERSION = "1.1"
# characters XML 1.0 cannot hold at all (ElementTree would write them and make the file unreadable)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(s: Any) -> str:
    """``s`` with the characters XML 1.0 cannot hold (NUL, most control characters) as U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(s))


def _num(v: float) -> str:
    return f"{v:.2f}"


# -- writing -----------------------------------------------------------------------------------

def to_xml(frames: Frames, boxes: list[Box], *, name: str, start_frame: int = 0,
           stop_frame: int | None = None, dumped: datetime | None = None) -> tuple[bytes, list[str]]:
    """The CVAT for video 1.1 document of ``boxes`` (frames in the video's numbering), for a task
    named ``name`` covering video frames ``start_frame``..``stop_frame``; and notes."""
    total = max(1, int(round(frames.duration * frames.fps)))
    last = max([total - 1, *(b.frame for b in boxes)]) if stop_frame is None else stop_frame
    start_frame = max(0, int(start_frame))
    last = max(last, start_frame)
    objs, notes = objects([b for b in boxes if start_frame <= b.frame <= last], last)
    labels = sorted({o.label for o in objs})
    scored = any(k.box.score is not None for o in objs for k in o.keys)
    judged = any(k.box.confirmed is not None for o in objs for k in o.keys)

    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = VERSION
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    for tag, value in (("name", xml_safe(name)), ("size", str(last - start_frame + 1)), ("mode", "interpolation"),
                       ("overlap", "0"), ("bugtracker", ""), ("flipped", "False"),
                       ("start_frame", str(start_frame)), ("stop_frame", str(last)), ("frame_filter", "")):
        ET.SubElement(task, tag).text = value
    lab = ET.SubElement(task, "labels")
    for label in labels:
        el = ET.SubElement(lab, "label")
        ET.SubElement(el, "name").text = xml_safe(label)
        attrs = ET.SubElement(el, "attributes")
        if scored:
            _declare(attrs, "score", "text", "", "")
        if judged:
            _declare(attrs, "confirmed", "checkbox", "false", "false")
    size = ET.SubElement(task, "original_size")
    ET.SubElement(size, "width").text = str(frames.width)
    ET.SubElement(size, "height").text = str(frames.height)
    ET.SubElement(meta, "dumped").text = str(dumped or datetime.now(timezone.utc))

    for o in objs:
        tr = ET.SubElement(root, "track", {"id": str(o.id), "label": xml_safe(o.label), "source": "auto"})
        for i, k in enumerate(o.keys):
            _box(tr, k.box, k.box.frame - start_frame, outside=False, scored=scored, judged=judged)
            nxt = o.keys[i + 1].box.frame if i + 1 < len(o.keys) else None
            end = k.box.frame + 1
            if k.leaves and end <= last and (nxt is None or nxt > end):
                _box(tr, k.box, end - start_frame, outside=True, scored=scored, judged=judged)
    ET.indent(root)
    data = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return data, notes


def _declare(attrs: ET.Element, name: str, input_type: str, default: str, values: str) -> None:
    a = ET.SubElement(attrs, "attribute")
    for tag, value in (("name", name), ("mutable", "True"), ("input_type", input_type),
                       ("default_value", default), ("values", values)):
        ET.SubElement(a, tag).text = value


def _box(track: ET.Element, b: Box, frame: int, *, outside: bool, scored: bool, judged: bool) -> None:
    x1, y1, x2, y2 = b.box
    el = ET.SubElement(track, "box", {"frame": str(frame), "keyframe": "1", "outside": "1" if outside else "0",
                                      "occluded": "0", "xtl": _num(x1), "ytl": _num(y1), "xbr": _num(x2),
                                      "ybr": _num(y2), "z_order": "0"})
    if scored:
        ET.SubElement(el, "attribute", {"name": "score"}).text = "" if b.score is None else f"{b.score:.6g}"
    if judged:
        ET.SubElement(el, "attribute", {"name": "confirmed"}).text = "true" if b.confirmed else "false"


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """The media file's detections between ``start`` and ``end`` as CVAT for video 1.1 XML at ``out``."""
    frames, boxes, track = for_export(project, media_id, start, end, state)
    if state is not None:
        check(state)
    first = frames.frame_of(start) if start is not None else 0
    stop = frames.frame_of(end) - 1 if end is not None else None
    if stop is not None:
        stop = max(stop, first, *(b.frame for b in boxes))
    data, notes = to_xml(frames, boxes, name=Path(frames.media_path).name, start_frame=first, stop_frame=stop)
    path = write_out(Path(out), data)
    n_tracks = data.count(b"<track ")
    summary = f"wrote {len(boxes)} boxes of {n_tracks} tracks from {track!r} to {path.name} (CVAT for video 1.1)"
    return ExportResult((path,), summary, {"boxes": len(boxes), "tracks": n_tracks,
                                           "frames": len({b.frame for b in boxes})}, tuple(notes))


# -- reading -----------------------------------------------------------------------------------

def parse(text: str | bytes, frames: Frames, path: Path, state: Any = None) -> tuple[list[Box], list[str]]:
    """The boxes of a CVAT for video 1.1 or CVAT for images 1.1 document, in the media's frame
    numbering and pixels; notes on what was left out. HandoffError (one line, naming the file)
    for anything that is not such a document or holds an impossible box."""
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    name = Path(path).name
    if state is not None:
        check(state)
        state.set_progress(0.3, "reading CVAT XML")
    try:
        root = DET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        raise HandoffError(f"{name} declares a DOCTYPE or entities, which a CVAT file never does; "
                           "it is refused (it could expand without bound)") from None
    except ET.ParseError as e:
        raise HandoffError(f"{name} is not well-formed XML ({e})") from None
    if root.tag != "annotations":
        raise HandoffError(f"{name} is not a CVAT XML file: its root is <{root.tag}>, not <annotations>")
    version = (root.findtext("version") or "").strip()
    if version and not version.startswith("1."):
        raise HandoffError(f"{name} is CVAT XML version {version}; Kestrel reads version 1.x")
    notes: list[str] = []
    task = root.find("meta/task")
    if task is None:
        task = root.find("meta/job")
    offset, every = _frame_map(task, name)
    scale = _scale(task, frames, notes, name)
    tracks = root.findall("track")
    images = root.findall("image")
    if tracks and images:
        raise HandoffError(f"{name} mixes <track> and <image> elements; CVAT writes one or the other")
    if images:
        boxes = _image_boxes(images, frames, offset, every, notes, name)
    else:
        boxes = _track_boxes(tracks, frames, offset, every, scale, notes, name)
    if not boxes:
        raise HandoffError(f"{name} holds no boxes (no <track> with a box inside the frame, no <image> with a <box>)")
    return boxes, notes


def _frame_map(task: ET.Element | None, name: str) -> tuple[int, int]:
    """(start_frame, step): a task frame f is video frame start + f * step."""
    if task is None:
        return 0, 1
    start = _int(task.findtext("start_frame") or "0", "start_frame", name)
    m = re.fullmatch(r"\s*step\s*=\s*(\d+)\s*", task.findtext("frame_filter") or "")
    step = int(m.group(1)) if m else 1
    if start < 0 or step < 1:
        raise HandoffError(f"{name} has an impossible start_frame or frame_filter")
    return start, step


def _scale(task: ET.Element | None, frames: Frames, notes: list[str], name: str) -> tuple[float, float]:
    """Boxes drawn on frames of another size (CVAT's original_size) are scaled to the media's."""
    size = task.find("original_size") if task is not None else None
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        return 1.0, 1.0
    w = _float(size.findtext("width"), "original_size width", name)
    h = _float(size.findtext("height"), "original_size height", name)
    if w <= 0 or h <= 0:
        raise HandoffError(f"{name} gives an original size of {w:g}×{h:g}")
    if (round(w), round(h)) == (frames.width, frames.height):
        return 1.0, 1.0
    notes.append(f"the boxes were drawn on {w:g}×{h:g} frames and are scaled to the media's "
                 f"{frames.width}×{frames.height}")
    return frames.width / w, frames.height / h


def _int(v: str | None, what: str, name: str) -> int:
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        raise HandoffError(f"{name}: {what} {v!r} is not a whole number") from None


def _float(v: str | None, what: str, name: str) -> float:
    try:
        x = float(str(v).strip())
    except (TypeError, ValueError):
        raise HandoffError(f"{name}: {what} {v!r} is not a number") from None
    if not math.isfinite(x):
        raise HandoffError(f"{name}: {what} is {v}, not a finite number")
    return x


def _corners(el: ET.Element, where: str, name: str, scale: tuple[float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (_float(el.get(k), f"{k} of the box {where}", name) for k in ("xtl", "ytl", "xbr", "ybr"))
    if x2 < x1 or y2 < y1:
        raise HandoffError(f"{name}: the box {where} is inverted (xtl {x1:g} > xbr {x2:g} or ytl {y1:g} > ybr {y2:g})")
    return (x1 * scale[0], y1 * scale[1], x2 * scale[0], y2 * scale[1])


def _score(el: ET.Element) -> float | None:
    """The score a box carries as an attribute (Kestrel's own export, or a tool's), if any."""
    for a in el.findall("attribute"):
        if a.get("name") == "score" and (a.text or "").strip():
            try:
                s = float(a.text)
            except ValueError:
                return None
            return s if math.isfinite(s) else None
    return None


def _track_boxes(tracks: list[ET.Element], frames: Frames, offset: int, every: int, scale: tuple[float, float],
                 notes: list[str], name: str) -> list[Box]:
    out: list[Box] = []
    ids: set[int] = set()
    other = 0
    for n, tr in enumerate(tracks):
        tid = _int(tr.get("id", str(n)), "a track id", name)
        if tid in ids:
            raise HandoffError(f"{name} has two tracks with the id {tid}")
        ids.add(tid)
        label = (tr.get("label") or "").strip()
        if not label:
            raise HandoffError(f"{name}: track {tid} has no label")
        other += sum(1 for c in tr if c.tag in ("polygon", "polyline", "points", "cuboid", "ellipse", "mask",
                                              "skeleton"))
        frames_seen: set[int] = set()
        for el in tr.findall("box"):
            f = _int(el.get("frame"), f"the frame of a box of track {tid}", name)
            if f < 0:
                raise HandoffError(f"{name}: track {tid} has a box on frame {f}")
            if f in frames_seen:
                raise HandoffError(f"{name}: track {tid} has two boxes on frame {f}")
            frames_seen.add(f)
            if el.get("outside", "0").strip() == "1":
                continue  # the object has left: an end marker, not a box
            box = _corners(el, f"of track {tid} on frame {f}", name, scale)
            score = _score(el)
            frame = offset + f * every
            out.append(Box(frames.time_of(frame), frame, tid, label, box, score, None))
    if other:
        notes.append(f"{other} shapes other than boxes (polygons, points…) were left out")
    out.sort(key=lambda b: (b.frame, b.track))
    return out


def _image_boxes(images: list[ET.Element], frames: Frames, offset: int, every: int, notes: list[str],
                 name: str) -> list[Box]:
    """CVAT for images: one <image id name width height> per task frame, its boxes without ids."""
    out: list[Box] = []
    seen: set[int] = set()
    other = 0
    rescaled = 0
    for img in images:
        image = _int(img.get("id"), "an image id", name)
        if image < 0:
            raise HandoffError(f"{name}: image id {image} is not a frame")
        if image in seen:
            raise HandoffError(f"{name} has two images with the id {image}")
        seen.add(image)
        frame = offset + image * every
        scale = (1.0, 1.0)
        if img.get("width") is not None and img.get("height") is not None:
            w = _float(img.get("width"), f"the width of image {frame}", name)
            h = _float(img.get("height"), f"the height of image {frame}", name)
            if w <= 0 or h <= 0:
                raise HandoffError(f"{name}: image {frame} is {w:g}×{h:g}")
            if (round(w), round(h)) != (frames.width, frames.height):
                scale = (frames.width / w, frames.height / h)
                rescaled += 1
        other += sum(1 for c in img if c.tag != "box" and c.tag != "tag")
        for el in img.findall("box"):
            label = (el.get("label") or "").strip()
            if not label:
                raise HandoffError(f"{name}: a box on image {frame} has no label")
            box = _corners(el, f"on image {frame}", name, scale)
            score = _score(el)
            out.append(Box(frames.time_of(frame), frame, len(out) + 1, label, box, score, None))
    if rescaled:
        notes.append(f"{rescaled} images were not {frames.width}×{frames.height}; their boxes are scaled to the media")
    if other:
        notes.append(f"{other} shapes other than boxes (polygons, points…) were left out")
    notes.append("CVAT for images has no object ids: each box is its own object")
    out.sort(key=lambda b: (b.frame, b.track))
    return out


def import_file(project: Any, media_id: int, path: Path, *, state: Any = None) -> ImportResult:
    """Read a CVAT for video (or for images) 1.1 XML file and store its boxes as the media's
    track "ground truth: <file name>"."""
    return import_parsed(project, media_id, path, fmt=FORMAT, what="a CVAT XML file", parse=parse, state=state)
