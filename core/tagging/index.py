"""The archive's shared latent: MMAE trained on every tagged shot of the project, its clusters,
every shot's tags, and search — by text or by example shot — over the whole archive.

- inputs per shot (``mmae_inputs``): visual = the base columns (length, faces, colour,
  motion, text area), the COCO class histogram and the square roots of the 64 ImageNet
  probabilities that vary most over the archive (recorded, so a later encode uses the same
  ones); audio = every audio column; text = the MiniLM embedding of what is said and shown.
- the network (``models.nn.mmae``) is trained with reconstruction losses only, as a job, on the
  project's own shots; it is reused while the archive's features are unchanged. Below
  ``models.nn.mmae.MIN_SHOTS`` usable shots it is not trained and the latent is the linear
  baseline (PCA of the standardised concatenated features), and the index says so.
- clusters: k-means on the latent, k chosen by silhouette, named from their tags.
- search: a text query is embedded with MiniLM and encoded *as a text-only shot* into the
  shared latent (cross-modal: it lands near shots whose pictures and sounds go with such
  words), blended with the query's similarity to each shot's description (objects, scene,
  words); a picked shot searches by its own latent.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from core.jobs import JobState, check
from core.tagging import TaggingError
from core.tagging.features import TEXT_DIM, ShotFeatures, load_features
from core.tagging.shots import Shot, shots_from_rows
from core.tagging.tags import Tag, cluster_names, keywords, shot_tags, voice_name, voices

log = logging.getLogger(__name__)

INDEX_VERSION = "1"
CURRENT_KEY = "tagging/current"  # per media: its shot rows, meta: which features are current
LATENT_KEY = "tagging/latent"
TAGS_KEY = "tagging/tags"
TEXT_KEY = "tagging/text"  # per media: each shot's MiniLM embedding of what is said and shown
MODEL_SETTING = "tagging/model"
EDITS_SETTING = "tagging/edits"
VOCAB_SETTING = "tagging/vocabulary"
N_IMAGENET = 64
TEXT_WEIGHT = 0.7  # search: share of the tag/description match beside the shared-latent match


EXPERTS = {"dense": "dense", "topk": "moe-topk", "dynamic": "anyexperts"}  # --experts → FFN type


@dataclass(frozen=True)
class IndexParams:
    # small on purpose: archives give tens to thousands of shots; on the 45 real shots of
    # bench/mmae.py a larger net (latent 16, width 64) or longer training (1200 steps) overfits
    # and clusters the sources worse than the PCA baseline (ARI 0.33-0.36 against 0.47)
    latent: int = 8
    hidden: int = 128
    width: int = 32
    epochs: int = 60
    seed: int = 0
    ffn: str = "dense"  # the MMAE's feed-forward blocks: dense, moe-topk or anyexperts (see EXPERTS)
    max_clusters: int = 12

    def __post_init__(self) -> None:
        if self.ffn not in EXPERTS.values():
            raise TaggingError(f"Unknown feed-forward type {self.ffn!r}; choose one of {', '.join(EXPERTS)}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ShotRef:
    media_id: int
    path: str
    index: int
    start: float
    end: float
    content_hash: str = ""

    @property
    def key(self) -> str:
        return f"{self.content_hash}@{self.start:.3f}"


@dataclass
class ArchiveIndex:
    refs: list[ShotRef]
    latent: np.ndarray  # [N, d]
    clusters: np.ndarray  # [N] int
    names: dict[int, str]
    tags: list[list[Tag]]
    method: str  # "mmae" | "pca"
    describe: list[str] = field(default_factory=list)  # a sentence per shot (for search and export)
    desc_emb: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    net: Any = None
    model_info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    text_emb: np.ndarray | None = None  # [N, 384] what is said and shown, where present
    text_present: np.ndarray | None = None
    experts: dict[str, np.ndarray] | None = None  # mixture-of-experts encoders: real experts per shot, per modality
    problems: list[str] = field(default_factory=list)  # stored data left out as damaged (also in notes)

    def problem(self, text: str) -> None:
        self.notes.append(text)
        self.problems.append(text)

    def __len__(self) -> int:
        return len(self.refs)

    def of_media(self, media_id: int) -> list[int]:
        return [i for i, r in enumerate(self.refs) if r.media_id == media_id]


# -- which features are current ------------------------------------------------------------------

def set_current(project: Any, media_id: int, shots: Sequence[Shot], features_params: Mapping[str, Any],
                shots_params: Mapping[str, Any]) -> None:
    project.put_array(media_id, CURRENT_KEY, np.asarray([s.to_row() for s in shots], np.float64).reshape(-1, 4),
                      meta={"features": dict(features_params), "shots": dict(shots_params)})


def current(project: Any, media_id: int) -> tuple[list[Shot], ShotFeatures] | None:
    got = project.get_array(media_id, CURRENT_KEY)
    if got is None:
        return None
    feats = load_features(project, media_id, got[1].get("features", {}))
    return None if feats is None else (shots_from_rows(got[0]), feats)


def gather(project: Any) -> tuple[list[ShotRef], list[ShotFeatures]]:
    refs, feats = [], []
    media = project.list_media()
    newest = {}
    for m in media:  # a file changed on disk gets a new row: only the newest one of a path counts
        newest[str(m.path)] = max(newest.get(str(m.path), m.id), m.id)
    for m in media:
        if newest[str(m.path)] != m.id:
            continue
        got = current(project, m.id)
        if got is None:
            continue
        shots, f = got
        feats.append(f)
        refs += [ShotRef(m.id, str(m.path), s.index, s.start, s.end, m.content_hash) for s in f.shots]
    return refs, feats


# -- network inputs ------------------------------------------------------------------------------

def mmae_inputs(feats: Sequence[ShotFeatures], imagenet_cols: Sequence[str] | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(data, masks, the ImageNet columns used) over all shots of ``feats`` in order."""
    if not feats:
        raise TaggingError("No tagged shots yet: tag some media first.")
    cols = feats[0].columns["visual"]
    for f in feats[1:]:
        if f.columns["visual"] != cols:
            raise TaggingError("The media were described with different feature settings; re-tag them together.")
    vis = np.concatenate([f.values["visual"] for f in feats]).astype(np.float32)
    inet = [i for i, c in enumerate(cols) if c.startswith("in:")]
    if imagenet_cols is None:
        if inet:
            var = np.sqrt(np.clip(vis[:, inet], 0, None)).var(axis=0)
            keep = sorted(np.argsort(-var, kind="stable")[:N_IMAGENET].tolist())
            imagenet_cols = [cols[inet[j]] for j in keep]
        else:
            imagenet_cols = []
    pos = {c: i for i, c in enumerate(cols)}
    other = [i for i, c in enumerate(cols) if not c.startswith("in:")]
    sel = [pos[c] for c in imagenet_cols if c in pos]
    visual = np.concatenate([vis[:, other], np.sqrt(np.clip(vis[:, sel], 0, None))], axis=1)
    data = {"visual": visual,
            "audio": np.concatenate([f.values["audio"] for f in feats]).astype(np.float32),
            "text": np.concatenate([f.values["text"] for f in feats]).astype(np.float32)}
    masks = {m: np.concatenate([f.present[m] for f in feats]).astype(bool) for m in data}
    return data, masks, list(imagenet_cols)


def pca_latent(data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], dim: int) -> np.ndarray:
    """The linear baseline: PCA of the standardised concatenated features (missing → 0)."""
    parts = []
    for m, x in data.items():
        x = np.where(masks[m][:, None], x, np.nan).astype(np.float64)
        mu = np.nanmean(x, axis=0) if masks[m].any() else np.zeros(x.shape[1])
        sd = np.nanstd(x, axis=0) if masks[m].any() else np.ones(x.shape[1])
        z = (x - np.nan_to_num(mu)) / np.where(np.nan_to_num(sd) > 1e-6, np.nan_to_num(sd), 1.0)
        parts.append(np.nan_to_num(z) / np.sqrt(max(1, x.shape[1])))  # each modality weighs the same
    z = np.concatenate(parts, axis=1)
    z -= z.mean(axis=0)
    k = max(1, min(dim, z.shape[0] - 1, z.shape[1]))
    u, s, _vt = np.linalg.svd(z, full_matrices=False)
    return (u[:, :k] * s[:k]).astype(np.float32)


def cluster(latent: np.ndarray, max_k: int = 12, seed: int = 0) -> tuple[np.ndarray, float]:
    """k-means on the (unit) latent with k from 2..max_k by silhouette; (labels, silhouette)."""
    n = len(latent)
    if n < 4:
        return np.zeros(n, np.int64), 0.0
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    z = latent / np.maximum(np.linalg.norm(latent, axis=1, keepdims=True), 1e-9)
    best = (np.zeros(n, np.int64), -1.0)
    for k in range(2, max(2, min(max_k, n // 3)) + 1):
        lab = KMeans(k, n_init=4, random_state=seed).fit_predict(z)
        if len(set(lab)) < 2:
            continue
        s = float(silhouette_score(z, lab))
        if s > best[1]:
            best = (lab.astype(np.int64), s)
    return best


# -- building the index ------------------------------------------------------------------------

def _digest(feats: Sequence[ShotFeatures], params: IndexParams) -> str:
    h = hashlib.sha256(json.dumps({"v": INDEX_VERSION, "p": params.to_dict(),
                                   "f": [f.params for f in feats]}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _stored_model(project: Any, digest: str) -> tuple[Any, dict[str, Any]] | None:
    got = project.get_setting(MODEL_SETTING)
    if not isinstance(got, dict) or got.get("digest") != digest:
        return None
    from models.nn import mmae
    from models.nn.fusion import CheckpointError
    try:
        return mmae.from_bytes(base64.b64decode(got["checkpoint"])), got
    except (CheckpointError, KeyError, ValueError, TypeError) as e:
        log.warning("stored tagging model unusable, retraining: %s", e)
        return None


def build_index(project: Any, state: JobState, params: IndexParams | None = None,
                embedder: Any = None) -> ArchiveIndex:
    """Job: train (or reuse) the MMAE on every tagged shot, cluster, tag and store per media."""
    from models.nn import mmae

    params = params or IndexParams()
    state.set_progress(0.0, "tagging: gathering features")
    refs, feats = gather(project)
    if not refs:
        raise TaggingError("No tagged shots yet: tag some media first.")
    timings: dict[str, float] = {}
    notes: list[str] = []
    digest = _digest(feats, params)
    stored = _stored_model(project, digest)
    t0 = time.perf_counter()
    imagenet = stored[1].get("imagenet") if stored else None
    data, masks, imagenet = mmae_inputs(feats, imagenet)
    usable = np.stack(list(masks.values()), axis=1).any(axis=1)
    net, info, experts, model_setting = None, {}, None, None
    little = mmae.too_little_data(int(usable.sum()))
    if little:
        notes.append(little)
        latent = pca_latent(data, masks, params.latent)
        method = "pca"
    else:
        if stored is not None:
            net, info = stored[0], dict(stored[1].get("info", {}))
            notes.append("multimodal autoencoder reused (the archive's features are unchanged)")
        else:
            cfg = mmae.MMAEConfig({m: x.shape[1] for m, x in data.items()}, latent=params.latent,
                                  hidden=params.hidden, width=params.width, ffn=params.ffn)
            net = mmae.build(cfg, seed=params.seed)
            tp = mmae.TrainParams(epochs=params.epochs, seed=params.seed)
            c0 = time.perf_counter()
            hist = mmae.fit(net, data, masks, tp, progress=lambda f, msg: state.set_progress(0.05 + 0.75 * f,
                                                                                           f"training: {msg}"),
                            check=lambda: check(state))
            timings["train"] = time.perf_counter() - c0
            info = {"trained_at": time.time(), "train_s": round(timings["train"], 2), "shots": int(usable.sum()),
                    "media": sorted({r.media_id for r in refs}), "params": params.to_dict(),
                    "final_loss": float(hist.get("final_loss", float("nan"))),
                    "parameters": mmae.param_count(net)}
            if params.ffn != "dense":
                from models.nn.fusion import ffn_factory
                info["experts"] = getattr(ffn_factory(params.ffn), "config", None)
            blob = mmae.to_bytes(net, {"digest": digest, **info})
            model_setting = {"digest": digest, "imagenet": imagenet, "info": info,
                             "checkpoint": base64.b64encode(blob).decode()}
        check(state)
        state.set_progress(0.82, "tagging: encoding")
        latent = mmae.encode(net, data, masks, on_empty="nan")
        latent = np.nan_to_num(latent)
        method = "mmae"
        experts = mmae.expert_usage(net, data, masks)
    timings["model"] = time.perf_counter() - t0
    state.set_progress(0.86, "tagging: clustering")
    t1 = time.perf_counter()
    labels, sil = cluster(latent, params.max_clusters, params.seed)
    info["silhouette"] = round(sil, 3)
    tags = _tags(feats, data, masks)
    names = cluster_names(tags, labels)
    for i, t in enumerate(tags):
        t.append(Tag(f"cluster: {names[int(labels[i])]}", "cluster", 0.6, f"group {int(labels[i]) + 1} of the archive"))
    describe = [description(t) for t in tags]
    timings["tags"] = time.perf_counter() - t1
    check(state)
    idx = ArchiveIndex(refs, latent.astype(np.float32), labels, names, tags, method, describe, None, notes, net,
                       {**info, "imagenet": imagenet, "digest": digest}, timings, data["text"], masks["text"],
                       experts)
    if embedder is not None:
        idx.desc_emb = _embed(embedder, describe)
    state.set_progress(0.95, "tagging: storing")
    with project.batch():  # the model and every file's index commit together: a kill mixes no two builds
        if model_setting is not None:
            project.set_setting(MODEL_SETTING, model_setting)
        store_index(project, idx)
    state.set_progress(1.0, f"tagged {len(refs)} shots")
    return idx


def _tags(feats: Sequence[ShotFeatures], data, masks) -> list[list[Tag]]:
    out: list[list[Tag]] = []
    texts: list[str] = []
    fps, fpres = [], []
    for f in feats:
        vc, ac = f.columns["visual"], f.columns["audio"]
        mf = [i for i, c in enumerate(ac) if c.startswith("mfcc_")]
        for i in range(len(f)):
            info = f.info[i] if i < len(f.info) else {}
            vis = dict(zip(vc, f.values["visual"][i].tolist())) if f.present["visual"][i] else None
            aud = dict(zip(ac, f.values["audio"][i].tolist())) if f.present["audio"][i] else None
            out.append(shot_tags(info, vis, aud, bool(f.present["text"][i])))
            texts.append(" ".join([str(info.get("words", "") or "")] + [str(x) for x in info.get("ocr", []) or []]))
            fps.append(f.values["audio"][i, mf] if mf else np.zeros(1, np.float32))
            fpres.append(bool(f.present["audio"][i]) and int(info.get("speaker_frames", 0) or 0) >= 20)
    for tags, kws in zip(out, keywords(texts)):
        tags += [Tag(w, "keyword", c, "from what is said or shown") for w, c in kws]
    ids, conf = voices(np.asarray(fps, np.float32), np.asarray(fpres, bool))
    for i, tags in enumerate(out):
        if ids[i] >= 0 and any(t.name == "speech" for t in tags):
            tags.append(Tag(voice_name(int(ids[i])), "voice", float(conf[i]),
                            "speaker fingerprint group (MFCC statistics): a hint, not an identity"))
    return out


def description(tags: Sequence[Tag]) -> str:
    """A sentence of a shot's confident tags, for text search and export."""
    keep = [t.name for t in tags if t.kind != "cluster" and t.state != "rejected" and (t.confidence >= 0.3
                                                                                         or t.state != "auto")]
    return ", ".join(dict.fromkeys(keep))


def _embed(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    texts = [t if t else "nothing" for t in texts]
    return np.asarray(embedder.embed(list(texts)), np.float32)


# -- storage -------------------------------------------------------------------------------------

def store_index(project: Any, idx: ArchiveIndex) -> None:
    for mid in sorted({r.media_id for r in idx.refs}):
        rows = idx.of_media(mid)
        if idx.text_emb is not None and idx.text_present is not None:
            project.put_array(mid, TEXT_KEY, idx.text_emb[rows].astype(np.float32),
                              meta={"present": [bool(idx.text_present[i]) for i in rows]})
        project.put_array(mid, LATENT_KEY, idx.latent[rows], meta={"method": idx.method,
                                                                  "digest": idx.model_info.get("digest")})
        project.put_array(mid, TAGS_KEY, np.asarray([[idx.refs[i].start, idx.refs[i].end] for i in rows], np.float64),
                          meta={"tags": [[t.to_dict() for t in idx.tags[i]] for i in rows],
                                "clusters": [int(idx.clusters[i]) for i in rows],
                                "names": {str(k): v for k, v in idx.names.items()}, "method": idx.method,
                                "notes": idx.notes, "ffn": (idx.model_info.get("params") or {}).get("ffn", "dense"),
                                "experts": None if idx.experts is None else {
                                    m: [None if not np.isfinite(v[i]) else round(float(v[i]), 3) for i in rows]
                                    for m, v in idx.experts.items()}})


def load_index(project: Any) -> ArchiveIndex | None:
    """The stored index (latent, tags, clusters) of every tagged media file, with the analyst's
    edits laid over it, or None when nothing is tagged. The one reading path of search, export
    and the Tags panel: stored data is checked (:mod:`core.tagging.stored`), damaged parts are
    skipped with a logged warning, and when tags are stored but none can be used, a
    :class:`TaggingError` says so."""
    from core.store.project import ProjectCorruptError
    from core.tagging.stored import Damaged, merge_edits, read_edits, read_media_tags

    chunks: list[tuple[Any, Any]] = []
    damaged: list[str] = []
    for m in project.list_media():
        where = f"the tags of {str(m.path)[-120:]!r}"
        try:
            got = read_media_tags(project.get_array(m.id, TAGS_KEY), project.get_array(m.id, LATENT_KEY),
                                  project.get_array(m.id, TEXT_KEY), where)
        except (Damaged, ProjectCorruptError) as e:
            log.warning("skipping %s: %s", where, e)
            damaged.append(f"{where[12:]} ({e})")
            continue
        if got is not None and len(got):
            chunks.append((m, got))
    if chunks:  # one latent width (the most common one): a file whose latent differs is skipped
        width = Counter(c.latent.shape[1] for _m, c in chunks).most_common(1)[0][0]
        for m, c in chunks:
            if c.latent.shape[1] != width:
                log.warning("skipping the tags of %r: its latent has %d values per shot, the others %d",
                            str(m.path)[-120:], c.latent.shape[1], width)
                damaged.append(f"{str(m.path)[-120:]!r} (a latent of another width)")
        chunks = [(m, c) for m, c in chunks if c.latent.shape[1] == width]
    if not chunks:
        if damaged:
            raise TaggingError(f"The tags stored in this project are damaged and cannot be used "
                               f"({len(damaged)} file{'s' if len(damaged) != 1 else ''}, e.g. {damaged[0]}); "
                               "tag the media again.")
        return None
    refs: list[ShotRef] = []
    tags: list[list[Tag]] = []
    names: dict[int, str] = {}
    for m, c in chunks:
        refs += [ShotRef(m.id, str(m.path), j, float(a), float(b), m.content_hash) for j, (a, b) in enumerate(c.rows)]
        tags += c.tags
        names.update(c.names)
    n_of = [len(c) for _m, c in chunks]
    mods = list(dict.fromkeys(k for _m, c in chunks for k in c.experts))
    experts = {k: np.concatenate([np.asarray(c.experts.get(k, [float("nan")] * len(c)), np.float32)
                                  for _m, c in chunks]) for k in mods}
    last = chunks[-1][1]
    widths = Counter(c.text.shape[1] for _m, c in chunks if c.text is not None)
    tw = widths.most_common(1)[0][0] if widths else TEXT_DIM
    for m, c in chunks:
        if c.text is not None and c.text.shape[1] != tw:
            log.warning("the text embeddings of %r have another width; search uses its tags only", str(m.path)[-120:])
            c.text, c.present = None, [False] * len(c)
    idx = ArchiveIndex(refs, np.concatenate([c.latent for _m, c in chunks]).astype(np.float32),
                       np.asarray([k for _m, c in chunks for k in c.clusters], np.int64), names, tags, last.method,
                       [description(t) for t in tags], notes=list(last.notes),
                       text_emb=np.concatenate([c.text if c.text is not None else np.zeros((k, tw), np.float32)
                                                for (_m, c), k in zip(chunks, n_of)]).astype(np.float32),
                       text_present=np.asarray([p for _m, c in chunks for p in c.present], bool),
                       experts=experts or None)
    if damaged:
        idx.problem(f"the tags of {len(damaged)} file{'s' if len(damaged) != 1 else ''} are damaged and "
                         "were left out; tag them again")
    _load_model(project, idx)
    try:
        edits = read_edits(project.get_setting(EDITS_SETTING, {}))
    except ProjectCorruptError as e:
        log.warning("the analyst's tag edits cannot be read: %s", e)
        idx.problem("the analyst's tag edits are damaged and were left out")
        edits = {}
    idx.tags = [merge_edits(t, edits.get(r.key)) for t, r in zip(idx.tags, idx.refs)]
    idx.describe = [description(t) for t in idx.tags]
    return idx


def _load_model(project: Any, idx: ArchiveIndex) -> None:
    """The stored MMAE, when the index is its latent and it fits that latent (else a note:
    text search then matches descriptions and words only)."""
    from core.store.project import ProjectCorruptError

    if idx.method != "mmae":
        return
    try:
        got = project.get_setting(MODEL_SETTING)
    except ProjectCorruptError as e:
        got, why = None, str(e)
    else:
        if got is None:
            return
        why = "it is not a model"
    if isinstance(got, dict) and isinstance(got.get("checkpoint"), str):
        from models.nn import mmae
        from models.nn.fusion import CheckpointError
        try:
            net = mmae.from_bytes(base64.b64decode(got["checkpoint"], validate=True))
            dims = net.cfg.dims
            if net.cfg.latent != idx.latent.shape[1] or not 0 < int(dims.get("text", 0)) <= TEXT_DIM:
                raise CheckpointError("it does not fit the stored latent")
            info = got.get("info")
            idx.net = net
            idx.model_info = {**(info if isinstance(info, dict) else {}), "imagenet": got.get("imagenet"),
                              "digest": got.get("digest")}
            return
        except (CheckpointError, KeyError, ValueError, TypeError) as e:
            why = str(e) or type(e).__name__
    log.warning("the stored tagging model cannot be loaded: %s", why)
    idx.problem(f"the stored tagging model cannot be loaded ({why}); text search uses descriptions only")


def stored_shot_tags(project: Any, ref: ShotRef) -> list[Tag]:
    """The stored automatic tags of one shot (found by its start), read through the checks of
    :func:`load_index`; TaggingError when the shot is no longer stored or its tags are damaged."""
    from core.store.project import ProjectCorruptError
    from core.tagging.stored import Damaged, read_media_tags

    where = f"the tags of {ref.path[-120:]!r}"
    try:
        got = read_media_tags(project.get_array(ref.media_id, TAGS_KEY), project.get_array(ref.media_id, LATENT_KEY),
                              None, where)
    except (Damaged, ProjectCorruptError) as e:
        log.warning("%s cannot be read: %s", where, e)
        raise TaggingError(f"The stored tags of this file are damaged ({e}); tag the file again.") from e
    j = int(np.argmin(np.abs(got.rows[:, 0] - ref.start))) if got is not None and len(got) else -1
    if j < 0 or abs(got.rows[j, 0] - ref.start) > 1e-3:
        raise TaggingError("This shot is no longer in the project's index; tag the file again.")
    return got.tags[j]


# -- the analyst's edits and vocabulary -------------------------------------------------------

def edit_tag(project: Any, ref: ShotRef, action: str, name: str, new_name: str | None = None,
             kind: str = "user") -> dict[str, Any]:
    """``action``: accept | reject | reset | rename | add | remove. Stored by file content and
    shot start, so they survive re-tagging and moving the file. Read and written in one
    transaction: an edit another process or window stores meanwhile is never overwritten."""
    with project.batch():
        return _edit_tag(project, ref, action, name, new_name, kind)


def _edit_tag(project: Any, ref: ShotRef, action: str, name: str, new_name: str | None, kind: str) -> dict[str, Any]:
    from core.tagging.stored import read_edits

    edits = read_edits(project.get_setting(EDITS_SETTING, {}))
    e = dict(edits.get(ref.key, {}))
    state, renamed, added = dict(e.get("state", {})), dict(e.get("renamed", {})), list(e.get("added", []))
    if action in ("accept", "reject"):
        state[name] = "accepted" if action == "accept" else "rejected"
    elif action == "reset":
        state.pop(name, None)
    elif action == "rename":
        if not new_name or not new_name.strip():
            raise TaggingError("A tag needs a name.")
        old = next((o for o, n in renamed.items() if n == name), name)
        renamed[old] = new_name.strip()
        if name in state:
            state[new_name.strip()] = state.pop(name)
        added = [dict(d, name=new_name.strip()) if d.get("name") == name else d for d in added]
    elif action == "add":
        vocab = vocabulary(project)
        if vocab and name not in vocab:
            raise TaggingError(f"'{name}' is not in the project's vocabulary; add it there first.")
        if not any(d.get("name") == name for d in added):
            added.append({"name": name, "kind": kind, "confidence": 1.0, "detail": "added by the analyst"})
    elif action == "remove":
        added = [d for d in added if d.get("name") != name]
        state.pop(name, None)
    else:
        raise ValueError(f"unknown tag edit {action!r}")
    e.update(state=state, renamed=renamed, added=added)
    edits[ref.key] = e
    project.set_setting(EDITS_SETTING, edits)
    return e


def vocabulary(project: Any) -> list[str]:
    """The project's tag vocabulary: its words (anything stored there that is not one is skipped)."""
    from core.store.project import ProjectCorruptError

    try:
        got = project.get_setting(VOCAB_SETTING, [])
    except ProjectCorruptError as e:
        log.warning("the tag vocabulary cannot be read: %s", e)
        return []
    words = [w for w in got if isinstance(w, str) and w.strip()] if isinstance(got, list) else []
    if got and len(words) != (len(got) if isinstance(got, list) else -1):
        log.warning("skipping damaged entries of the tag vocabulary")
    return words


def set_vocabulary(project: Any, words: Sequence[str]) -> list[str]:
    clean = list(dict.fromkeys(w.strip() for w in words if w and w.strip()))
    project.set_setting(VOCAB_SETTING, clean)
    return clean


# -- search --------------------------------------------------------------------------------------

@dataclass
class Hit:
    index: int
    ref: ShotRef
    score: float
    why: str


def search_text(idx: ArchiveIndex, query: str, embedder: Any, k: int = 10) -> list[Hit]:
    """Nearest shots to a text query: its MMAE text-only latent against every shot's latent
    (cross-modal), blended with its MiniLM match to the shot's description."""
    query = (query or "").strip()
    if not query:
        raise TaggingError("Type what to look for.")
    q = np.asarray(embedder.embed([query]), np.float32)[:1]
    scores = np.zeros(len(idx), np.float64)
    parts = []
    if idx.net is not None and idx.method == "mmae":
        from models.nn import mmae
        zq = mmae.encode(idx.net, {"text": q[:, :idx.net.cfg.dims["text"]]}, {"text": np.ones(1, bool)})
        _i, sim = mmae.cosine_nearest(zq, idx.latent, k=len(idx))
        lat_sim = np.zeros(len(idx))
        lat_sim[_i[0]] = sim[0]
        scores += (1 - TEXT_WEIGHT) * lat_sim
        parts.append("latent")
    desc_sim = description_match(idx, q[0], embedder)
    if (idx.text_emb is not None and idx.text_present is not None and idx.text_present.any()
            and idx.text_emb.shape[1] >= q.shape[1]):
        # what is said or shown in the shot, word for word (a paraphrase of the transcript)
        t = idx.text_emb[:, :q.shape[1]]
        said = (t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)) @ (q[0] / max(float(
            np.linalg.norm(q[0])), 1e-9))
        desc_sim = np.where(idx.text_present, np.maximum(desc_sim, said), desc_sim)
    scores += (TEXT_WEIGHT if parts else 1.0) * desc_sim
    order = np.argsort(-scores, kind="stable")[:k]
    return [Hit(int(i), idx.refs[i], float(scores[i]),
                f"{' + '.join(parts + ['description'])}: {idx.describe[i][:80]}") for i in order]


def description_match(idx: ArchiveIndex, q: np.ndarray, embedder: Any) -> np.ndarray:
    """Per shot: half the query's cosine with the whole description, half its best cosine with
    its two best-matching tags, weighted by their confidence ("bicycle in the street" against
    the tag "bicycle", undiluted by the shot's other tags)."""
    if idx.desc_emb is None:
        idx.desc_emb = _embed(embedder, idx.describe)
    unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-9)  # noqa: E731
    qn = unit(np.asarray(q, np.float32))
    whole = unit(idx.desc_emb) @ qn
    names = sorted({t.name for tags in idx.tags for t in tags if t.kind != "cluster" and t.state != "rejected"})
    if not names:
        return whole
    if getattr(idx, "_tag_emb", None) is None or idx._tag_emb[0] != names:
        idx._tag_emb = (names, unit(_embed(embedder, names)))
    sim = dict(zip(names, (idx._tag_emb[1] @ qn).tolist()))
    def best2(tags) -> float:  # the two best tags: "people riding bicycles" wants person *and* bicycle
        v = sorted((sim[t.name] * (1.0 if t.state in ("accepted", "user") else min(1.0, 0.5 + t.confidence))
                    for t in tags if t.name in sim), reverse=True)[:2]
        return float(np.mean(v)) if v else 0.0
    best = np.array([best2(tags) for tags in idx.tags])
    return 0.5 * whole + 0.5 * best


def search_shot(idx: ArchiveIndex, i: int, k: int = 10) -> list[Hit]:
    """Nearest shots to shot ``i`` through the shared latent (itself excluded)."""
    from models.nn.mmae import cosine_nearest

    order, sim = cosine_nearest(idx.latent[i:i + 1], idx.latent, k=min(len(idx), k + 1))
    return [Hit(int(j), idx.refs[j], float(s), idx.describe[j][:80]) for j, s in zip(order[0], sim[0]) if j != i][:k]
