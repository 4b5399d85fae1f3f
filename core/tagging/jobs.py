"""The Tags panel's jobs (Qt-free: ``fn(request, state)``, or plain calls for the database writer).

Threads (``gui/tasks.py`` runs everything; the UI thread only puts results into views). A
tagging run: :func:`describe_job` on the compute worker finds the folder's media and runs the
one tagging pipeline of :mod:`core.tagging.archive` over them (:func:`~core.tagging.archive.tag_files`:
files described already with the same settings are reused, the rest described), only reading
the project; the database writer stores each file as its :class:`~core.tagging.archive.FileDone`
arrives (:func:`~core.tagging.archive.store_file`; a cancel keeps the finished ones); then
:func:`index_job` builds the archive index (MMAE or its linear fall-back, clusters, tags:
:func:`core.tagging.index.build_index`) on the compute worker against a :class:`ReadOnlyProject`
whose writes :func:`commit_index` replays on the writer. (``tag_archive`` runs the same pipeline
in one job for the CLI and Ray, writing from its own thread.) Edits and the vocabulary go to the
writer; searches run on the compute worker (MiniLM); exports on the I/O pool.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from core.jobs import JobState, check, set_media_span
from core.media.decode import MediaInfo
from core.perception import ops
from core.tagging import TaggingError
from core.tagging.archive import (FileDone, checked_shot_params, plan_files, scan_media, store_file,  # noqa: F401
                                  tag_files, worker_pool)
from core.tagging.features import FeatureConfig
from core.tagging.index import (EDITS_SETTING, ArchiveIndex, Hit, IndexParams, ShotRef, build_index, description,
                                edit_tag, load_index, search_shot, search_text, stored_shot_tags, vocabulary)
from core.tagging.stored import merge_edits, read_edits
from core.tagging.tags import Tag
from core.timeline import Item, Track

TAGS_KIND, TAGS_NAME = "shot-tags", "shot tags"  # the timeline row of each shot's top tags
TOP_TAGS = 3


@dataclass(frozen=True)
class TagRequest:  # tag ``infos`` (the open file) or every media file under ``folder``
    project: Any
    infos: tuple[MediaInfo, ...] = ()
    folder: str | None = None
    features: FeatureConfig = FeatureConfig()
    device: str | None = None
    shots: Mapping[str, Any] | None = None  # shot_params(); None: the defaults


def describe_job(req: TagRequest, state: JobState) -> list[tuple[str, str]]:
    """Compute worker, reading the project only: find the folder's media (probed, hashed,
    copies and non-media set aside), then the tagging pipeline over them: a
    :class:`~core.tagging.archive.FileDone` partial per file (reused, described or failed; a
    failed one does not stop the batch). Returns the skipped files with their reasons."""
    if req.folder is not None:
        state.set_progress(0.0, "finding media")
        infos, skipped = scan_media(req.folder, req.project)
        if not infos:
            why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
            raise TaggingError(f"No media to tag in {req.folder}" + (f" ({why})." if why else "."))
    else:
        infos, skipped = list(req.infos), []
    # the span is what will be described: reused files take no time (tag_files's bar covers the rest)
    _, todo = plan_files(req.project, infos, req.features, checked_shot_params(req.shots))
    set_media_span(state, sum(max(info.duration_s, 0.0) for info, _ in todo))
    for done in tag_files(req.project, infos, req.features, req.shots, state, req.device):
        state.set_partial_result(done)
    return skipped


class ReadOnlyProject:
    """The project as a job that may only read sees it: ``put_array``/``set_setting`` are kept
    (and read back) until :meth:`apply` replays them on the writer thread; any other write
    raises, so a job that starts writing elsewhere fails loudly instead of racing the writer."""

    WRITES = ("add_", "delete_", "remove_", "start_run", "finish_run", "record_run", "save_", "append_", "close")

    def __init__(self, project: Any):
        self._p, self.writes, self._arrays, self._settings = project, [], {}, {}

    def put_array(self, media_id: int, key: str, array: Any, meta: Mapping | None = None, run_id=None) -> None:
        self.writes.append(("put_array", (media_id, key, np.array(array)), {"meta": meta, "run_id": run_id}))
        self._arrays[(media_id, key)] = (np.array(array), dict(meta or {}))

    def set_setting(self, key: str, value: Any) -> None:
        self.writes.append(("set_setting", (key, value), {}))
        self._settings[key] = value

    batch = staticmethod(nullcontext)  # writes are only kept here; apply() replays them in the writer's batch

    def get_array(self, media_id: int, key: str):
        got = self._arrays.get((media_id, key))
        return (got[0].copy(), dict(got[1])) if got is not None else self._p.get_array(media_id, key)

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self._settings[key] if key in self._settings else self._p.get_setting(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(self.WRITES):
            raise RuntimeError(f"a read-only job tried to call project.{name}")
        return getattr(self._p, name)

    def apply(self, project: Any) -> None:
        for name, args, kwargs in self.writes:
            getattr(project, name)(*args, **kwargs)


def index_job(req: tuple[Any, IndexParams], state: JobState) -> tuple[ArchiveIndex, ReadOnlyProject]:
    """Compute worker: the archive index over every tagged shot (reads only; see ReadOnlyProject)."""
    view = ReadOnlyProject(req[0])
    return build_index(view, state, req[1]), view


def commit_index(project: Any, idx: ArchiveIndex, view: ReadOnlyProject) -> ArchiveIndex:
    """Database writer: store the worker's index, its tags with the analyst's edits laid over, each file's track."""
    with project.batch():  # the model, every file's index and its tags track commit together
        view.apply(project)
        edits = read_edits(project.get_setting(EDITS_SETTING, {}))  # checked, as load_index reads them
        idx.tags = [merge_edits(t, edits.get(r.key)) for t, r in zip(idx.tags, idx.refs)]
        idx.describe = [description(t) for t in idx.tags]
        for mid in sorted({r.media_id for r in idx.refs}):
            ops.save_track(project, mid, tags_track(idx, mid))
    return idx


def load_job(project: Any, state: JobState) -> tuple[ArchiveIndex | None, list[str]]:
    """I/O pool: the stored index (with edits) and the vocabulary."""
    return load_index(project), vocabulary(project)


def edit_job(project: Any, ref: ShotRef, action: str, name: str, new_name: str | None = None) -> list[Tag]:
    """Database writer: store one edit; returns the shot's tags with all its edits laid over them."""
    edits = edit_tag(project, ref, action, name, new_name)
    return merge_edits(stored_shot_tags(project, ref), edits)  # read as load_index reads


@dataclass(frozen=True)
class SearchRequest:
    idx: ArchiveIndex
    query: str = ""
    shot: int | None = None  # search by example: this shot's index in ``idx``
    k: int = 10
    device: str | None = None


def search_job(req: SearchRequest, state: JobState) -> tuple[list[Hit], np.ndarray | None]:
    """Compute worker: the hits, and the description embeddings (the panel caches them)."""
    if req.shot is not None:
        return search_shot(req.idx, req.shot, req.k), req.idx.desc_emb
    state.set_progress(0.0, "loading the text model")
    embedder = worker_pool(req.device).get(FeatureConfig.text_embed)
    check(state)
    return search_text(req.idx, req.query, embedder, req.k), req.idx.desc_emb


def top_tags(tags: Sequence[Tag], n: int = TOP_TAGS) -> list[Tag]:
    """What labels a shot on the timeline: the analyst's and confident tags, no clusters."""
    keep = [t for t in tags if t.kind != "cluster" and t.state != "rejected" and not t.low]
    return sorted(keep, key=lambda t: (t.state not in ("user", "accepted"), -t.confidence))[:n]


def tags_track(idx: ArchiveIndex, media_id: int) -> Track:
    items = []
    for i in idx.of_media(media_id):
        r, top = idx.refs[i], top_tags(idx.tags[i])
        items.append(Item(r.start, r.end, " · ".join(t.name for t in top) or "—",
                          max((t.confidence for t in top), default=0.0), data={"shot": r.index}))
    return Track(TAGS_KIND, TAGS_NAME, items, meta={"method": idx.method})
