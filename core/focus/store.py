"""A FOCUS selection in the project (a run and two tracks), on the timeline and on disk (PNGs + selection.json).

Why two tracks: the chosen frames are markers an analyst steps through; the arms (one item per clip
with its mean, upper bound and pull count) are the explanation — the view draws them as a heatmap,
so "why these frames" is visible on the timeline. The heat cells are computed once
(:func:`heat_cells`) for the tracks the panel draws while the search runs (:func:`arms_track`)
and for the stored ones. Only existing Project methods are used; a second selection for the same
query replaces that query's tracks (the run history keeps both).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.exportsafe import write_replacing
from core.focus.search import ArmStat, ChosenFrame, FocusRequest, FocusResult
from core.timefmt import timecode
from core.timeline import Item, Track

RUN_KIND = "focus"
TRACK_KIND = "focus"
ARMS_KIND = "focus-arms"
VERSION = "1"  # their track kinds (markers, heat) are registered in core.timeline


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def heat_cells(arms: Sequence[ArmStat], unscored: str = "not scored") -> list[tuple[ArmStat, float, str]]:
    """(arm, brightness, label) per arm of the heat track: brightness = the arm's rank (its
    empirical-Bernstein bound at the coarse pull count, which orders arms for the final pick; the
    raw bound favours arms with few pulls), normalised over the arms scored so far; an arm not
    scored (yet) is dark and labelled ``unscored``."""
    ranks = [a.rank for a in arms if a.n and math.isfinite(a.rank)]
    lo, hi = (min(ranks), max(ranks)) if ranks else (0.0, 1.0)
    cells = []
    for a in arms:
        if a.n and math.isfinite(a.rank):
            conf = (a.rank - lo) / (hi - lo) if hi > lo else 1.0
            label = f"mean {a.mean:.2f} · bound {a.ucb:.2f} · {a.n} scored"
        else:
            conf, label = 0.0, unscored
        cells.append((a, float(conf), label))
    return cells


def arms_track(name: str, arms: Sequence[ArmStat]) -> Track:
    """The heat track the view draws while a search runs and when it is done."""
    return Track(ARMS_KIND, name, [Item(a.start, max(a.end, a.start), label, conf, data={"n": a.n})
                                   for a, conf, label in heat_cells(arms, "not scored yet")])


def frames_track(name: str, frames: Sequence[ChosenFrame]) -> Track:
    """The chosen frames as markers the view steps through (score as label and brightness)."""
    return Track(TRACK_KIND, name, [Item(f.time, f.time, f"{f.score:.2f}", float(f.score) if math.isfinite(f.score)
                                         else 0.0, data={"reason": f.reason}) for f in frames])


def run_params(req: FocusRequest) -> dict[str, Any]:
    """The request's fields as JSON: what decides the selection (find_run compares these). The
    transcript is stored as its size and digest, not its text; the media index as the settings
    it was built with (its own run holds the rest)."""
    out: dict[str, Any] = {}
    for f in fields(req):
        v = getattr(req, f.name)
        if f.name == "index":
            if v is not None:
                out["index"] = {k: x for k, x in v.params.items() if k != "plan"}
                out["index"]["samples"] = len(v)
            continue
        if f.name == "transcript":
            blob = json.dumps([list(s) for s in v], ensure_ascii=False).encode()
            out["transcript_segments"] = len(v)
            out["transcript_sha256"] = hashlib.sha256(blob).hexdigest() if v else ""
        else:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def track_name(result: FocusResult) -> str:
    req = result.request
    if req.example_time is not None:
        return f"like {timecode(req.example_time)}" + (f" ({req.query.strip()})" if req.query.strip() else "")
    return req.query.strip()


#: The models of the embedded scorer (core.focus.scorers._embedded_scorer).
EMBEDDED_MODELS = ("efficientnet-lite3", "minilm", "ssd-mobilenet-v2-coco", "mtcnn-faces", "rapidocr")


def _devices(result: FocusResult) -> dict[str, Any]:
    """The run's device provenance: the embedded scorer's models, or the image-text model."""
    from models.catalogue import provenance_of

    names = EMBEDDED_MODELS if result.scorer == "embedded" else (result.scorer,)
    return provenance_of(names)


def store_selection(project: Any, media_id: int, result: FocusResult) -> int:
    """Record the run and save the markers, the arms track and every scored (time, score); returns the run id."""
    with project.batch():  # the run and what it produced commit together
        run_id = project.record_run(kind=RUN_KIND, producer=result.scorer, version=VERSION,
                                    params={**run_params(result.request), **_devices(result)}, media_id=media_id,
                                    started_at=time.time() - result.wall_s, duration_s=result.wall_s)
        name = track_name(result)
        meta = {"query": result.request.query, "scorer": result.scorer, "frames_scored": result.frames_scored,
                "total_frames": result.total_frames, "budget": result.budget, "share": result.share,
                "seed": result.request.seed, "k": result.request.k, "warnings": list(result.warnings)}
        marks = [{"start_s": f.time, "end_s": f.time, "label": f"{f.score:.2f}", "confidence": _finite(f.score),
                  "run_id": run_id, "data": {"arm": f.arm, "scored": f.scored, "reason": f.reason}}
                 for f in result.frames]
        project.save_track(media_id, TRACK_KIND, name, marks, run_id=run_id, meta=meta)
        items = [{"start_s": a.start, "end_s": max(a.end, a.start), "label": label, "confidence": conf,
                  "run_id": run_id, "data": {"mean": _finite(a.mean), "ucb": _finite(a.ucb), "rank": _finite(a.rank),
                                             "n": a.n}}
                 for a, conf, label in heat_cells(result.arms)]
        project.save_track(media_id, ARMS_KIND, name, items, run_id=run_id, meta=meta)
        if result.scored:
            project.put_array(media_id, f"focus/scored/{run_id}", np.asarray(result.scored, np.float64),
                              meta={"columns": ["time", "score"], "query": result.request.query}, run_id=run_id)
    return run_id


def find_selection(project: Any, media_id: int, req: FocusRequest, scorer: str) -> Any:
    """The latest stored run of exactly this request and scorer, or None (then it must be run)."""
    return project.find_run(RUN_KIND, scorer, VERSION, run_params(req), media_id)


def selection_json(result: FocusResult, files: list[str] | None = None) -> dict[str, Any]:
    files = files or [""] * len(result.frames)
    return {
        "query": result.request.query, "scorer": result.scorer, "video": result.request.path,
        "budget": result.budget, "frames_scored": result.frames_scored, "total_frames": result.total_frames,
        "share": result.share, "seed": result.request.seed, "k": result.request.k, "wall_s": result.wall_s,
        "frames": [{"time": f.time, "timecode": timecode(f.time), "score": f.score, "arm": f.arm,
                    "scored": f.scored, "reason": f.reason, "file": name} for f, name in zip(result.frames, files)],
        "arms": [{k: _finite(v) if isinstance(v, float) else v for k, v in asdict(a).items()} for a in result.arms],
        "warnings": list(result.warnings),
    }


def export_frames(result: FocusResult, path: str, out_dir: str | Path) -> list[Path]:
    """Write each chosen frame as a full-size PNG (decoded by seeking) and ``selection.json``; returns
    the PNG paths in time order, then the JSON path."""
    import cv2

    from core.media.decode import VideoDecoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    with VideoDecoder(path, max_size=None) as dec:
        for i, f in enumerate(result.frames):
            p = out / f"{i + 1:02d}_{timecode(f.time).replace(':', '-')}.png"
            img = dec.frame_at(f.time).image
            ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if not ok:
                raise OSError(f"could not encode {p}")
            pngs.append(write_replacing(p, png.tobytes()))  # a link planted under the name is replaced
    meta = write_replacing(out / "selection.json", json.dumps(
        selection_json(result, [p.name for p in pngs]), indent=1, ensure_ascii=False).encode("utf-8"))
    return pngs + [meta]
