"""The evidence package: a clip of a time range (or of an anomaly event) that stands up on its
own, with a JSON sidecar that says where it came from and what Kestrel found in it.

``export(project, media_id, out, start=, end=)`` writes a folder ``out/<media>_<start>_to_<end>/``
(``export_event``: ``out/<media>_<event>/``) holding

* ``<name>.mp4``, the clip: a **stream copy** (the source's own pictures and sound, bit for bit)
  where the cut allows it (the range starts on a video keyframe, within half a frame, and the
  codecs go into MP4: :func:`core.handoff.remux.copy_plan`), **re-encoded** otherwise (H.264/AAC
  at the source's size, cut on the exact frame, by :func:`core.anomaly.export.export_clip`); the
  sidecar records which and why;
* ``<name>.json``, the sidecar: the source's SHA-256 (of the whole file, streamed), size,
  duration and streams; the clip's SHA-256, its actual start and end in media seconds (a stream
  copy's end runs to the last frame decoded before the requested end, so it may pass it by a
  frame or two: measured from the written clip), method and codecs; the requested range; every
  run whose results fall in the range (model, version, parameters as stored, seeds, when, how
  long, status) and the runs of the file that stored no timeline result (trained models,
  features); the findings in the range: anomaly events with their scores and evidence, the
  detections per model and class (count, confirmed, highest score), the shots' tags and the
  transcript; and how to check the hashes.

The folder is built under a temporary name beside it and renamed into place once the sidecar
(written last) is complete, so a cancel or a failure leaves no package, whole or half. An
existing package of the same name is never replaced (the analyst removes it or picks another
folder). The source's hash is the long step (a 2 GB file takes seconds): it reports progress
and honours cancel.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.errors import KestrelError
from core.exportsafe import inside, safe_name, write_replacing
from core.handoff import remux
from core.handoff.base import ExportResult, HandoffError
from core.jobs import Cancelled, check, set_media_span

SIDECAR_FORMAT = "kestrel-evidence"
SIDECAR_VERSION = 1
HASH_CHUNK = 4 << 20
DETECTION_WINDOW_S = 60.0  # boxes are read by range, this much media at a time (a track may hold millions)
EVENTS_TRACK = ("anomaly-events", "events")
TRANSCRIPT_TRACK = ("speech", "transcript")
# the parts of the job's progress: the source's hash, the clip, the findings and the sidecar
_HASH, _CLIP = (0.0, 0.55), (0.55, 0.9)
VERIFY = ("Check the files with SHA-256: `sha256sum <file>` (Linux), `shasum -a 256 <file>` (macOS) or "
          "`Get-FileHash -Algorithm SHA256 <file>` (Windows PowerShell); the clip's hash must equal "
          "clip.sha256 and the original file's must equal source.sha256. The clip's times are media "
          "seconds of the source (from the start of its container).")


@dataclass(frozen=True)
class Range:
    start: float
    end: float
    requested_start: float | None
    requested_end: float | None


def export(project: Any, media_id: int, out: Path, *, start: float | None = None, end: float | None = None,
           state: Any = None) -> ExportResult:
    """The evidence package of ``[start, end]`` of the media file (None: its whole length) in
    the folder ``out`` (created)."""
    return _package(project, media_id, Path(out), start, end, state, event=None, pad=0.0)


def export_event(project: Any, media_id: int, event: Any, out: Path, *, pad: float = 2.0,
                 state: Any = None) -> ExportResult:
    """The evidence package of one anomaly event (its id, e.g. ``"ev-65200"``, or an
    :class:`core.anomaly.events.AnomalyEvent`): its time range with ``pad`` seconds either side,
    the event's own record first in the findings."""
    from core.anomaly.events import AnomalyEvent

    if not isinstance(event, AnomalyEvent):
        wanted = str(event)
        found = [e for e in stored_events(project, media_id, -math.inf, math.inf, []) if e.id == wanted]
        if not found:
            raise HandoffError(f"there is no anomaly event {wanted!r} stored for this media file")
        event = found[0]
    pad = float(pad)
    if not math.isfinite(pad) or pad < 0:
        raise HandoffError(f"the padding around an event must be 0 s or more, not {pad}")
    return _package(project, media_id, Path(out), max(0.0, event.start - pad), event.end + pad, state,
                    event=event, pad=pad)


# -- the package ----------------------------------------------------------------------------------

def _package(project: Any, media_id: int, out: Path, start: float | None, end: float | None, state: Any, *,
             event: Any, pad: float) -> ExportResult:
    media = media_of(project, media_id)
    src = Path(media.path)
    info, inp = remux.open_media(src)
    tmp: Path | None = None
    try:
        rng = time_range(start, end, info.duration_s)
        check_same_file(src, media.content_hash)
        name = _name(src, rng, event)
        final, tmp = _folder(out, name)
        set_media_span(state, rng.end - rng.start)
        notes: list[str] = []
        source_sha = sha256_file(src, state, *_HASH, what="hashing the source")
        clip, method, reason, clip_start = _clip(inp, info, src, rng, tmp / f"{name}.mp4", state, notes)
        _progress(state, _CLIP[1], "reading the findings")
        facts = remux.clip_facts(clip)
        clip_sha = sha256_file(clip, state, _CLIP[1], _CLIP[1], what="hashing the clip")
        runs, supporting = _runs(project, media_id, rng)
        findings = _findings(project, media_id, rng, event, state, notes)
        doc = {
            "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "kestrel": _version(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {"path": str(src), "name": src.name, "sha256": source_sha, "size_bytes": src.stat().st_size,
                       "duration_s": round(info.duration_s, 3), "container": info.container,
                       "streams": [_stream(s) for s in info.streams], "project_media_id": media_id,
                       "project_content_hash": media.content_hash},
            "clip": {"path": clip.name, "sha256": clip_sha, "size_bytes": clip.stat().st_size,
                     "start_s": round(clip_start, 3), "end_s": round(clip_start + facts.duration, 3),
                     "duration_s": round(facts.duration, 3), "method": method, "why": reason,
                     "codec": "/".join(facts.codecs)},
            "range": {"requested_start_s": rng.requested_start, "requested_end_s": rng.requested_end,
                      "start_s": round(rng.start, 3), "end_s": round(rng.end, 3),
                      **({"event_pad_s": pad} if event is not None else {})},
            "runs": runs,
            "supporting_runs": supporting,
            "findings": findings,
            "notes": notes,
            "verify": VERIFY,
        }
        sidecar = tmp / f"{name}.json"
        write_replacing(sidecar, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8"))
        _check_cancel(state)
        if final.exists() or final.is_symlink():  # made meanwhile: an empty folder would be renamed over
            raise HandoffError(f"{final} exists already; remove it or choose another folder")
        os.rename(tmp, final)
        tmp = None
    except (Cancelled, KestrelError):
        raise
    except OSError as e:
        raise HandoffError(f"the evidence package could not be written in {out}: {e.strerror or e}") from e
    finally:
        inp.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _progress(state, 1.0, "")
    counts = {"events": len(findings["anomaly_events"]), "runs": len(runs),
              "detections": sum(c["count"] for d in findings["detections"] for c in d["classes"]),
              "shots": len(findings["shots"]), "transcript": len(findings["transcript"])}
    summary = (f"evidence package {final.name}: a {facts.duration:.1f} s clip ({method}) with its sidecar; "
               f"{counts['events']} anomaly event{'s' if counts['events'] != 1 else ''}, {counts['runs']} "
               f"run{'s' if counts['runs'] != 1 else ''} in range")
    return ExportResult((final / clip.name, final / sidecar.name), summary, counts, tuple(notes))


def _check_cancel(state: Any) -> None:
    if state is not None:
        check(state)


def _progress(state: Any, f: float, text: str) -> None:
    if state is not None:
        state.set_progress(f, text)


def media_of(project: Any, media_id: int) -> Any:
    try:
        return project.get_media(media_id)
    except KeyError as e:
        raise HandoffError(f"there is no media file with id {media_id} in this project") from e


def time_range(start: float | None, end: float | None, duration: float) -> Range:
    a = 0.0 if start is None else float(start)
    b = duration if end is None else min(float(end), duration)
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0:
        raise HandoffError("the range must be finite times from 0 s on")
    if a >= duration:
        raise HandoffError(f"the range starts at {a:g} s, after the end of the file ({duration:.2f} s)")
    if b <= a:
        raise HandoffError(f"the range ends ({b:g} s) before it starts ({a:g} s)")
    return Range(a, b, start, end)


def check_same_file(src: Path, content_hash: str) -> None:
    """The file on disk must be the one the project analysed: evidence about another file's
    content would not be evidence."""
    from core.media.decode import quick_hash

    if content_hash.startswith("qs256:") and quick_hash(src) != content_hash:
        raise HandoffError(f"{src.name} has changed since this project analysed it (its content hash differs); "
                           "the findings would not belong to this file: analyse it again first")


def _name(src: Path, rng: Range, event: Any) -> str:
    from core.timefmt import timecode

    stem = safe_name(src.stem, fallback="media", max_bytes=60)
    if event is not None:
        from core.anomaly.export import clip_stem

        return safe_name(f"{stem}_{clip_stem(event)}", fallback="evidence")
    stamp = [timecode(t).replace(":", "-") for t in (rng.start, rng.end)]
    return safe_name(f"{stem}_{stamp[0]}_to_{stamp[1]}", fallback="evidence")


def _folder(out: Path, name: str) -> tuple[Path, Path]:
    """``(final folder, temporary folder beside it)``; the final one must not exist yet."""
    if out.exists() and not out.is_dir():
        raise HandoffError(f"{out} is a file; an evidence package is written into a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        final = inside(out, name)
        if final.exists() or final.is_symlink():
            raise HandoffError(f"{final} exists already; remove it or choose another folder")
        return final, Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=out))
    except OSError as e:
        raise HandoffError(f"the evidence package cannot be written in {out}: {e.strerror or e}") from e


def sha256_file(path: Path, state: Any = None, lo: float = 0.0, hi: float = 1.0, what: str = "hashing") -> str:
    """The SHA-256 of the whole file, read in chunks (progress from ``lo`` to ``hi``; cancel)."""
    h = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if state is not None:
                check(state)
                state.set_progress(lo + (hi - lo) * min(1.0, done / size), what)
    return h.hexdigest()


def _clip(inp: Any, info: Any, src: Path, rng: Range, clip: Path, state: Any,
          notes: list[str]) -> tuple[Path, str, str, float]:
    """Write the clip; ``(path, method, why, its start in media seconds)``."""
    streams = remux.chosen_streams(inp)
    rotation = info.video.rotation if info.video is not None else 0
    plan = remux.copy_plan(inp, streams, rng.start)
    cancelled = state.is_cancelled if state is not None else None
    left = [s for s in inp.streams if s.type in ("video", "audio", "subtitle") and s not in streams]
    if left:
        notes.append(f"{len(left)} further stream{'s' if len(left) != 1 else ''} of the source "
                     "(subtitles, other tracks) left out of the clip")
    _progress(state, _CLIP[0], "writing the clip")
    if plan.copy:
        try:
            remux.stream_copy(inp, streams, clip, start=plan.start, end=rng.end, rotation=rotation, cancelled=cancelled,
                              progress=lambda f: _progress(state, _CLIP[0] + (_CLIP[1] - _CLIP[0]) * f,
                                                           "writing the clip"))
            return clip, "stream copy", plan.reason, plan.start
        except HandoffError as e:
            reason = f"re-encoded: the stream copy failed ({e})"
    else:
        reason = plan.reason
    from core.anomaly.export import export_clip
    from core.media.decode import MediaError

    try:
        export_clip(src, rng.start, rng.end, clip, pad=0.0, max_size=None, cancelled=cancelled)
    except InterruptedError as e:
        raise Cancelled() from e
    except MediaError as e:
        raise HandoffError(f"the clip could not be written: {e}") from e
    return clip, "re-encoded", reason, rng.start


def _stream(s: Any) -> dict[str, Any]:
    keep = ("index", "kind", "codec", "width", "height", "fps", "rotation", "sample_rate", "channels", "layout")
    d = s.to_dict()
    return {k: d[k] for k in keep if k in d and (k in ("index", "kind", "codec") or d[k] not in (0, "", None))}


def _version() -> str:
    from core.store.schema import app_version

    return app_version()


# -- what produced the results --------------------------------------------------------------------

def _runs(project: Any, media_id: int, rng: Range) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs with results (track items) in the range, each with the tracks they fill there;
    and the runs of the file that stored no track at all (models trained, features, caches)."""
    in_range: dict[int, list[str]] = {}
    with_tracks: set[int] = set()
    for rec, _lod in project.track_heads(media_id, 0):
        if rec.run_id is None:
            continue
        with_tracks.add(rec.run_id)
        if project.track_items(rec.id, rng.start, rng.end, limit=1):
            in_range.setdefault(rec.run_id, []).append(f"{rec.kind}: {rec.name}")
    runs = project.list_runs(media_id)
    return ([_run(r, in_range[r.id]) for r in runs if r.id in in_range],
            [_run(r, None) for r in runs if r.id not in with_tracks])


def _run(r: Any, tracks: list[str] | None) -> dict[str, Any]:
    out = {"id": r.id, "kind": r.kind, "producer": r.producer, "version": r.version, "params": r.params,
           "seeds": dict(_seeds(r.params)), "started_at": r.started_at.isoformat() if r.started_at else None,
           "duration_s": None if r.duration_s is None else round(float(r.duration_s), 3), "status": r.status}
    if r.error:
        out["error"] = r.error
    if tracks is not None:
        out["tracks"] = tracks
    return out


def _seeds(params: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """Every parameter whose name holds "seed", at any depth (``"train.seed": 0``)."""
    if isinstance(params, Mapping):
        for k, v in params.items():
            key = f"{path}.{k}" if path else str(k)
            if "seed" in str(k).lower() and not isinstance(v, (Mapping, list)):
                yield key, v
            else:
                yield from _seeds(v, key)
    elif isinstance(params, list):
        for i, v in enumerate(params):
            yield from _seeds(v, f"{path}[{i}]")


# -- what was found in the range -------------------------------------------------------------------

def _findings(project: Any, media_id: int, rng: Range, event: Any, state: Any,
              notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if event is not None:
        out["event"] = event.to_dict()  # the package's subject first
    out["anomaly_events"] = [e.to_dict() for e in stored_events(project, media_id, rng.start, rng.end, notes)]
    out["detections"] = _detections(project, media_id, rng, state)
    out["shots"] = tagged_shots(project, media_id, rng, notes)
    out["transcript"] = _transcript(project, media_id, rng)
    return out


def _track(project: Any, media_id: int, key: tuple[str, str]) -> Any:
    return next((rec for rec, _lod in project.track_heads(media_id, 0) if (rec.kind, rec.name) == key), None)


def stored_events(project: Any, media_id: int, t0: float, t1: float, notes: list[str]) -> list[Any]:
    """The stored anomaly events overlapping ``[t0, t1]``, checked (damaged ones skipped, noted)."""
    from core.anomaly.events import AnomalyEvent

    rec = _track(project, media_id, EVENTS_TRACK)
    if rec is None:
        return []
    out, bad = [], 0
    for it in project.track_items(rec.id, max(t0, -1e15), min(t1, 1e15)):
        try:
            out.append(AnomalyEvent.from_dict(it.data))
        except (KeyError, TypeError, ValueError, OverflowError):
            bad += 1
    if bad:
        notes.append(f"{bad} stored anomaly event{'s' if bad != 1 else ''} could not be read and "
                     f"{'were' if bad != 1 else 'was'} left out")
    return out


def _detections(project: Any, media_id: int, rng: Range, state: Any) -> list[dict[str, Any]]:
    """Per detector's boxes track (imported ground truths left out): per class, the boxes on
    frames in the range, how many Kestrel confirmed, and the highest score."""
    out = []
    for rec, _lod in project.track_heads(media_id, 0):
        if rec.kind != "boxes" or rec.meta.get("imported"):
            continue
        shared = project.track_shared(rec.id)
        classes: dict[str, dict[str, Any]] = {}
        t = rng.start
        while t < rng.end:
            t1 = min(rng.end, t + DETECTION_WINDOW_S)
            for it in project.track_items(rec.id, t, t1, starting=True, shared=shared):
                c = classes.setdefault(it.label, {"label": it.label, "count": 0, "confirmed": 0, "max_score": None})
                c["count"] += 1
                c["confirmed"] += it.data.get("confirmed") is True
                if it.confidence is not None and (c["max_score"] is None or it.confidence > c["max_score"]):
                    c["max_score"] = round(float(it.confidence), 4)
            _check_cancel(state)
            t = t1
        if classes:
            out.append({"track": rec.name, "model": rec.meta.get("model", rec.name), "run_id": rec.run_id,
                        "classes": sorted(classes.values(), key=lambda c: (-c["count"], c["label"]))})
    return out


def tagged_shots(project: Any, media_id: int, rng: Range, notes: list[str]) -> list[dict[str, Any]]:
    """The tagged shots overlapping the range with their tags (the analyst's edits laid over;
    rejected tags left out), as the Tags panel shows them."""
    from core.tagging.export import shot_records
    from core.tagging.index import load_index

    try:
        idx = load_index(project)
        records = [] if idx is None or not len(idx) else shot_records(project, idx, media_ids=[media_id])
    except KestrelError as e:
        notes.append(f"the shots' tags were left out: {e}")
        return []
    return [{k: r[k] for k in ("shot", "start", "end", "cluster", "description", "tags")}
            for r in records if r["start"] < rng.end and r["end"] > rng.start]


def _transcript(project: Any, media_id: int, rng: Range) -> list[dict[str, Any]]:
    rec = _track(project, media_id, TRANSCRIPT_TRACK)
    if rec is None:
        return []
    return [{"start": round(it.start_s, 3), "end": round(it.end_s, 3), "text": it.label,
             **({} if it.confidence is None else {"score": round(float(it.confidence), 4)})}
            for it in project.track_items(rec.id, rng.start, rng.end)]
