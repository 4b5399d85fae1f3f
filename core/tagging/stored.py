"""Reading the stored tag index back without trusting it: the one path used by search, export
and the Tags panel (through :func:`core.tagging.index.load_index`).

A project may come from elsewhere, or be damaged: every part of a media file's stored tags
(the shot rows, their tags, clusters and cluster names, the latent, the text embeddings,
the experts) is checked for type, shape and finiteness. What cannot be used is skipped with
a logged warning, at the smallest grain that keeps the rest consistent:

- one tag that is not a tag (no name, a confidence that is not a finite number…): that tag;
- a cluster id that is not a small whole number: the shot counts as unclustered (-1);
- a cluster name, an experts list, the text embeddings that do not fit: that part;
- rows, tags and latent that do not fit each other (lengths, shapes, NaN times): the file.

:class:`Damaged` says why a file's tags were skipped; the analyst's edits
(:func:`read_edits`) are cleaned the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from core.tagging import TaggingError
from core.tagging.tags import STATES, Tag, finite_number

log = logging.getLogger("core.tagging.index")

MAX_CLUSTER = 100_000  # a cluster id beyond this is damage (k-means runs with at most a few dozen)


class Damaged(TaggingError, ValueError):
    """A media file's stored tags cannot be used; str() says why (a ValueError too, as it was)."""


@dataclass
class MediaTags:
    """One media file's stored tags, checked: ``rows`` [n, 2] (start, end), one tag list,
    cluster id and latent row per shot."""

    rows: np.ndarray
    tags: list[list[Tag]]
    clusters: list[int]
    latent: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    text: np.ndarray | None = None  # [n, d] (MiniLM: d = 384) or None
    present: list[bool] = field(default_factory=list)
    experts: dict[str, list[float]] = field(default_factory=dict)
    method: str = "mmae"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def read_tags(items: Any, where: str) -> list[Tag]:
    """A shot's stored tag list: the tags that are tags (the rest skipped, logged)."""
    if not isinstance(items, list):
        log.warning("%s: the tags of a shot are not a list; read as none", where)
        return []
    out = []
    for d in items:
        try:
            out.append(Tag.from_dict(d))
        except ValueError as e:
            log.warning("%s: skipping a stored tag: %s", where, e)
    return out


def cluster_id(v: Any) -> int:
    """A stored cluster id, or -1 (unclustered) when it is not a small whole number."""
    if not finite_number(v) or v != int(v):
        return -1
    return int(v) if -1 <= v <= MAX_CLUSTER else -1


def read_media_tags(tags_arr: tuple[np.ndarray, dict[str, Any]] | None,
                    latent_arr: tuple[np.ndarray, dict[str, Any]] | None,
                    text_arr: tuple[np.ndarray, dict[str, Any]] | None, where: str) -> MediaTags | None:
    """One media file's arrays (``Project.get_array`` results) → :class:`MediaTags`; None when
    it is not tagged (either array absent); :class:`Damaged` when its tags cannot be used."""
    if tags_arr is None or latent_arr is None:
        return None
    rows, meta = tags_arr
    z = latent_arr[0]
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != 2 or not np.issubdtype(rows.dtype, np.number):
        raise Damaged(f"its shot times have the shape {list(rows.shape)}, not [shots, 2]")
    n = len(rows)
    rows = rows.astype(np.float64)
    if not np.isfinite(rows).all() or (rows[:, 1] < rows[:, 0]).any():
        raise Damaged("its shot times are not finite numbers, each shot ending after it starts")
    if not isinstance(meta, dict):
        raise Damaged("its tag metadata is not an object")
    z = np.asarray(z)
    if z.ndim != 2 or len(z) != n or z.shape[1] < 1 or not np.issubdtype(z.dtype, np.number):
        raise Damaged(f"its latent has the shape {list(z.shape)}, not [{n}, d]")
    tag_lists, clusters = meta.get("tags"), meta.get("clusters")
    if not isinstance(tag_lists, list) or len(tag_lists) != n:
        raise Damaged(f"it has {_count(tag_lists)} tag lists for {n} shots")
    if not isinstance(clusters, list) or len(clusters) != n:
        raise Damaged(f"it has {_count(clusters)} cluster ids for {n} shots")
    out = MediaTags(rows, [read_tags(t, where) for t in tag_lists], [cluster_id(c) for c in clusters],
                    _finite(z.astype(np.float32), where, "latent"))
    if any(c == -1 and cl != -1 for c, cl in zip(out.clusters, clusters)):
        log.warning("%s: some cluster ids are not small whole numbers; those shots count as unclustered", where)
    names = meta.get("names", {})
    if isinstance(names, dict):
        for k, v in names.items():
            try:
                c = int(k)
            except (TypeError, ValueError):
                c = -2
            if -1 <= c <= MAX_CLUSTER and isinstance(v, str):
                out.names[c] = v
            else:
                log.warning("%s: skipping a damaged cluster name", where)
    else:
        log.warning("%s: the cluster names are not an object; clusters are numbered", where)
    method = meta.get("method", "mmae")
    out.method = method if method in ("mmae", "pca") else "mmae"
    notes = meta.get("notes", [])
    out.notes = [str(x) for x in notes] if isinstance(notes, list) else []
    ex = meta.get("experts")
    if isinstance(ex, dict):
        for mod, vals in ex.items():
            if isinstance(mod, str) and isinstance(vals, list) and len(vals) == n \
                    and all(v is None or finite_number(v) for v in vals):
                out.experts[mod] = [float("nan") if v is None else float(v) for v in vals]
            else:
                log.warning("%s: skipping the damaged expert counts of %.40r", where, mod)
    out.text, out.present = None, [False] * n
    if text_arr is not None:
        t, tmeta = np.asarray(text_arr[0]), text_arr[1]
        pres = tmeta.get("present") if isinstance(tmeta, dict) else None
        if (t.ndim == 2 and len(t) == n and t.shape[1] >= 1 and np.issubdtype(t.dtype, np.number)
                and isinstance(pres, list) and len(pres) == n and all(isinstance(p, bool) for p in pres)):
            out.text, out.present = _finite(t.astype(np.float32), where, "text embeddings"), list(pres)
        else:
            log.warning("%s: the stored text embeddings do not fit its shots; search uses its tags only", where)
    return out


def _finite(x: np.ndarray, where: str, what: str) -> np.ndarray:
    if not np.isfinite(x).all():
        log.warning("%s: its %s hold values that are not finite numbers (read as 0)", where, what)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _count(v: Any) -> str:
    return str(len(v)) if isinstance(v, list) else "no"


def read_edit(e: Any, where: str = "a shot") -> dict[str, Any] | None:
    """One shot's stored edits {"state", "renamed", "added"}, cleaned (None: not edits at all);
    the damaged parts are skipped (logged)."""
    if not isinstance(e, dict):
        return None
    state, renamed, added = e.get("state", {}), e.get("renamed", {}), e.get("added", [])
    state = state if isinstance(state, dict) else None
    renamed = renamed if isinstance(renamed, dict) else None
    added = added if isinstance(added, list) else None
    out = {"state": {k: v for k, v in (state or {}).items() if isinstance(k, str) and v in STATES},
           "renamed": {k: v for k, v in (renamed or {}).items()
                       if isinstance(k, str) and isinstance(v, str) and v.strip()},
           "added": [d for d in (added or []) if isinstance(d, dict) and _is_tag(d)]}
    if (state is None or renamed is None or added is None or len(out["state"]) != len(state)
            or len(out["renamed"]) != len(renamed) or len(out["added"]) != len(added)):
        log.warning("skipping damaged parts of the tag edits of %s", where)
    return out


def read_edits(stored: Any) -> dict[str, dict[str, Any]]:
    """The project's edits setting {shot key: edits}, cleaned; damage is skipped (logged)."""
    if stored is None:
        return {}
    if not isinstance(stored, dict):
        log.warning("the analyst's tag edits are not an object; they are ignored")
        return {}
    out = {}
    for k, e in stored.items():
        clean = read_edit(e, f"shot {k!r:.60}")
        if clean is None:
            log.warning("skipping the damaged tag edits of shot %.60r", k)
        else:
            out[k] = clean
    return out


def _is_tag(d: dict[str, Any]) -> bool:
    try:
        Tag.from_dict({**d, "state": "user"})
    except ValueError:
        return False
    return True


def merge_edits(tags: list[Tag], edits: Mapping[str, Any] | None) -> list[Tag]:
    """The analyst's edits over automatic tags: {"renamed": {old: new}, "state": {name: accepted|rejected},
    "added": [tag dicts]}."""
    edits = read_edit(edits) if edits else None
    if not edits:
        return tags
    renamed = edits["renamed"]
    states = edits["state"]
    out = []
    for t in tags:
        name = renamed.get(t.name, t.name)
        out.append(Tag(name, t.kind, t.confidence, t.detail, states.get(name, states.get(t.name, t.state))))
    have = {t.name for t in out}
    for d in edits.get("added", []):
        t = Tag.from_dict({**d, "state": "user", "kind": d.get("kind", "user")})
        if t.name not in have:
            out.append(t)
            have.add(t.name)
    return out
