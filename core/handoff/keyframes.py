"""Boxes as the keyframed tracks of the annotation tools (CVAT for video, Label Studio video).

Both tools draw an object between two keyframes by interpolating, and end it with a marker (CVAT:
a box ``outside="1"``; Label Studio: a keyframe ``"enabled": false``). Kestrel knows an object
only at the frames it sampled, so each of its boxes is a keyframe and the question is where the
object is *not*: after a keyframe the object **leaves** (the tool must stop drawing it) when

* a later sampled frame lies before its next keyframe (or, for its last keyframe, after it) and
  the object was not seen there, a sampled frame being one where some box of the export lies; or
* its next keyframe (or the end of the range) is more than :data:`GAP_STEPS` sampling steps away,
  the step being the smallest distance between two sampled frames: frames where nothing at all
  was detected leave no box, and without this a person who walks out of an otherwise empty
  scene would be drawn to the end of the file.

So a tool never draws a box where Kestrel did not see one; it may stop drawing early where the
sampling was sparse (change gating's quiet stretches), which says less than Kestrel knows but
nothing that is not so.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from core.handoff.boxes import Box

GAP_STEPS = 1.5  # a keyframe this many sampling steps from the next is a gap, not a hold


@dataclass(frozen=True)
class Key:
    box: Box
    leaves: bool  # the object is not there after this keyframe (until its next keyframe, if any)


@dataclass(frozen=True)
class TrackedObject:
    id: int  # the object's id in the export (the Kestrel track id where it is free)
    label: str
    keys: tuple[Key, ...]  # in frame order, one per frame


def objects(boxes: list[Box], last_frame: int) -> tuple[list[TrackedObject], list[str]]:
    """The boxes as objects, one per (track id, label), in id order, and notes for the analyst.

    ``last_frame`` is the last frame of the exported range. An object id that carries several
    labels, or two boxes on one frame, is split: the extra parts get fresh ids above every id
    in the export (the tools allow one label per track and one box per frame)."""
    sampled = sorted({b.frame for b in boxes})
    steps = [b - a for a, b in zip(sampled, sampled[1:]) if b > a]
    step = min(steps) if steps else None
    groups: dict[tuple[int, str], list[list[Box]]] = {}
    for b in sorted(boxes, key=lambda b: (b.track, b.frame)):
        parts = groups.setdefault((b.track, b.label), [[]])
        for part in parts:  # the first part with this frame free
            if not part or part[-1].frame != b.frame:
                part.append(b)
                break
        else:
            parts.append([b])
    notes: list[str] = []
    used = {tid for tid, _label in groups}
    next_id = max(used, default=0) + 1
    seen: set[int] = set()
    out: list[TrackedObject] = []
    split = 0
    for (tid, label), parts in sorted(groups.items()):
        for part in parts:
            oid = tid
            if oid in seen:
                oid, next_id = next_id, next_id + 1
                split += 1
            seen.add(oid)
            out.append(TrackedObject(oid, label, _keys(part, sampled, step, last_frame)))
    if split:
        notes.append(f"{split} objects shared an id with another class or frame and were given new ids")
    out.sort(key=lambda o: o.id)
    return out, notes


def _keys(part: list[Box], sampled: list[int], step: int | None, last_frame: int) -> tuple[Key, ...]:
    keys = []
    for i, b in enumerate(part):
        nxt = part[i + 1].frame if i + 1 < len(part) else None
        limit = nxt if nxt is not None else last_frame + 1
        # a sampled frame strictly between this keyframe and the next (or the end) without the object
        k = bisect.bisect_right(sampled, b.frame)
        unseen = k < len(sampled) and sampled[k] < limit
        if nxt is None:
            far = b.frame < last_frame if step is None else (last_frame - b.frame) > GAP_STEPS * step
        else:
            far = step is not None and (nxt - b.frame) > GAP_STEPS * step
        keys.append(Key(b, unseen or far))
    return tuple(keys)
