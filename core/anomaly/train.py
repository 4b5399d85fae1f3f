"""Training Kestrel's fusion network on the footage the analyst marks as normal (a job).

``train_model(request, state)`` is a plain background job: CPU, seconds to a few minutes,
progress and cancel through ``state``. It *returns* a :class:`TrainedModel` and writes
nothing, so a cancelled or failed training can never leave a half-written model: the
previous one stays in the project until :func:`store_model` replaces it in one write.

What the network sees (recorded in the checkpoint so scoring applies exactly the same):
counts as ``log1p``, motion energies as ``log(x + 1e-3)``, dB and fractions as they are,
each column standardised by the normal footage's mean and std (std floored per kind, so a
column that never moved in the normal footage does not turn its first change into ±∞),
clipped to ±8. Classes never seen in the normal footage are summed into ``n:_unseen``.

Calibration (per scene): the network's error on normal windows it did not train on (the
last quarter of the normal footage, at least 4 windows) gives the median and MAD of the
video and audio errors; a window's z-score is its error measured in those units. Why held
out: on its own training windows a small network is near-perfect (measured: in-sample
calibration on 15 s of a film trailer put every later window at z ≈ 20–180), while held-out
windows carry the real "normal surprise" of the scene.

Feed-forward blocks (``ffn``, with ``experts``): ``"dense"`` (fusion's own MLP, the default),
``"moe-topk"`` (a fixed top-k mixture) or ``"anyexperts"`` (dynamic experts, arXiv 2511.18314),
shaped by a ``models.nn.experts.ExpertsConfig``; :func:`resolve_ffn` turns the pair into the
registered name and factory, refusing a configuration that cannot work (a budget below
K_min…) with a sentence (:class:`AnomalyError`) before anything is computed. The factory's
config is stored in the checkpoint (``config["experts"]``) and the run's parameters, so the
model reloads in a fresh process and the provenance says which layer and shape made it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from core.anomaly import AnomalyError, NotEnoughNormalData
from core.anomaly.features import AUDIO_BASE, VIDEO_BASE, FeatureSet
from core.jobs import JobState, check, set_media_span

MODEL_KEY = "anomaly/model"
MODEL_KIND = "anomaly/model"
MIN_NORMAL_S = 15.0  # below this the network would learn noise: detectors only
HOLDOUT_MIN_WINDOWS = 4  # calibration windows at least (the last quarter of the normal footage)
CLIP = 8.0
_FLOORS = {"log1p": 0.3, "logdiff": 0.3, "db": 2.0, "frac": 0.1, "onset": 0.5, "id": 0.1}


@dataclass(frozen=True)
class TrainRequest:
    """Train on the windows of ``features`` inside ``normal`` = (start, end) media seconds."""

    features: FeatureSet = field(compare=False)
    normal: tuple[float, float]
    ffn: str = "dense"
    dim: int = 32
    layers: int = 2
    heads: int = 4
    hidden: int = 64
    context: int = 8
    dropout: float = 0.1
    params: Any = None  # models.nn.fusion.TrainParams; None: defaults
    ffn_factory: Any = field(default=None, compare=False)  # overrides the registry lookup of ``ffn``
    media_hash: str = ""
    experts: Any = None  # models.nn.experts.ExpertsConfig (or its dict) for a mixture; None: defaults

    def __post_init__(self) -> None:
        object.__setattr__(self, "experts", expert_config(self.ffn, self.experts))

    def factory(self) -> Any:
        """The FFN factory this request trains with (see :func:`resolve_ffn`)."""
        return resolve_ffn(self.ffn, self.experts, self.ffn_factory)


# The CLI's words for the layer types, and the mixture kind behind each registered base name.
FFN_ALIASES = {"dense": "dense", "topk": "moe-topk", "dynamic": "anyexperts"}
EXPERT_KINDS = {"moe-topk": "topk", "anyexperts": "dynamic"}


def expert_config(ffn: str, experts: Any = None) -> Any:
    """The ``ExpertsConfig`` of a request's feed-forward choice, or None (fusion's dense block,
    or a block registered under a name of its own).

    ``ffn`` is ``"dense"``, ``"moe-topk"``/``"topk"`` or ``"anyexperts"``/``"dynamic"`` (or
    any registered name); ``experts`` an ``ExpertsConfig`` or a dict of its fields (its
    ``kind`` defaults to ``ffn``'s; with ``ffn="dense"`` the config's kind decides). Raises
    :class:`AnomalyError` with the config's own sentence when it cannot work.
    """
    from models.nn.experts import BASE_NAMES, ExpertsConfig, ExpertsConfigError, ffn_name_for

    name = FFN_ALIASES.get(ffn, ffn)
    if experts is None:
        return ExpertsConfig(kind=EXPERT_KINDS[name]) if name in EXPERT_KINDS else None
    try:
        if not isinstance(experts, ExpertsConfig):
            d = dict(experts)
            d.setdefault("kind", EXPERT_KINDS.get(name, "dynamic"))
            experts = ExpertsConfig.from_dict(d)
    except ExpertsConfigError as e:
        raise AnomalyError(f"The feed-forward configuration cannot work: {e}.") from None
    except (TypeError, ValueError) as e:
        raise AnomalyError(f"The expert configuration {experts!r} is not a set of ExpertsConfig fields ({e}).") \
            from None
    if name not in ("dense", BASE_NAMES[experts.kind], ffn_name_for(experts)):
        raise AnomalyError(f"The feed-forward type {ffn!r} and the expert configuration (kind {experts.kind!r}, "
                           f"a {BASE_NAMES[experts.kind]!r} block) disagree; ask for one of them.")
    return None if experts.kind == "dense" else experts


def resolve_ffn(ffn: str, experts: Any = None, ffn_factory: Any = None) -> Any:
    """The factory for ``ffn`` shaped by ``experts`` (an explicit ``ffn_factory`` wins). Its
    registered name (``models.nn.fusion.ffn_name_of``) goes into the net's config and its
    ``config`` attribute (when it has one) into the checkpoint's provenance."""
    from models.nn import fusion

    if ffn_factory is not None:
        return ffn_factory
    cfg = expert_config(ffn, experts)
    if cfg is not None:
        from models.nn.experts import make_ffn_factory
        return make_ffn_factory(cfg)
    try:
        return fusion.ffn_factory(FFN_ALIASES.get(ffn, ffn))
    except fusion.CheckpointError as e:
        raise AnomalyError(f"Unknown feed-forward type {ffn!r}: {e}.") from None


def _kind(col: str) -> str:
    if col.startswith("n:") or col in ("det_total", "track_enter", "track_exit"):
        return "log1p"
    if col in ("frame_diff", "frame_diff_max", "box_motion"):
        return "logdiff"
    if col.startswith("mel:") or col in ("rms_db", "rms_db_max"):
        return "db"
    if col in ("vad", "speech", "brightness", "box_area"):
        return "frac"
    if col.startswith("onset"):
        return "onset"
    return "id"


def network_columns(fs: FeatureSet, normal: np.ndarray) -> tuple[list[str], list[str], list[str]]:
    """(video columns, audio columns, classes seen in the normal footage)."""
    seen = [c for c in fs.classes if (fs.col(f"n:{c}")[normal] > 0).any()]
    video = ([c for c in VIDEO_BASE if fs.has(c)] + [f"n:{c}" for c in seen] + ["n:_unseen"]) if fs.has_video else []
    audio = [c for c in fs.columns if c in AUDIO_BASE or c.startswith(("mel:", "emb:"))] if fs.has_audio else []
    return video, audio, seen


def design(fs: FeatureSet, cols: list[str], seen: list[str]) -> np.ndarray:
    """The transformed (not yet standardised) matrix [T, len(cols)]."""
    out = np.zeros((len(fs), len(cols)), np.float32)
    for j, c in enumerate(cols):
        if c == "n:_unseen":
            x = np.maximum(fs.col("det_total") - sum((fs.col(f"n:{s}") for s in seen), np.zeros(len(fs))), 0)
        else:
            x = fs.col(c)
        k = _kind(c)
        out[:, j] = np.log1p(np.maximum(x, 0)) if k == "log1p" else np.log(np.maximum(x, 0) + 1e-3) \
            if k == "logdiff" else x
    return out


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.clip((x - mean) / std, -CLIP, CLIP).astype(np.float32)


@dataclass
class TrainedModel:
    """A trained network: JSON config (everything needed to score, plus provenance) and
    safetensors weights. ``net`` is the loaded torch module (built on first use)."""

    config: dict[str, Any]
    weights: bytes
    net: Any = field(default=None, repr=False, compare=False)
    run_id: int | None = None

    @property
    def ffn(self) -> str:
        return str(self.config["net"]["ffn"])

    @property
    def experts(self) -> dict[str, Any] | None:
        """The mixture's ``ExpertsConfig`` as stored (None: a block without one, e.g. dense)."""
        return self.config.get("experts")

    @property
    def normal(self) -> tuple[float, float]:
        a, b = self.config["data"]["normal"]
        return float(a), float(b)

    def load(self, ffn_factory: Any = None) -> Any:
        if self.net is None:
            from models.nn.fusion import from_bytes
            self.net = from_bytes(self.weights, self.config, ffn_factory)
        return self.net

    def inputs(self, fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
        """The standardised video and audio matrices of ``fs`` as this model reads them."""
        c = self.config
        missing = [x for x in c["columns"]["video"] + c["columns"]["audio"]
                   if x != "n:_unseen" and not fs.has(x)]
        if missing:
            raise AnomalyError(f"these features lack columns the anomaly model was trained on "
                               f"({', '.join(missing[:4])}); retrain the model.")
        seen = c["classes_seen"]
        v = design(fs, c["columns"]["video"], seen)
        a = design(fs, c["columns"]["audio"], seen)
        nv, na = c["norm"]["video"], c["norm"]["audio"]
        return (standardise(v, np.asarray(nv["mean"], np.float32), np.asarray(nv["std"], np.float32)),
                standardise(a, np.asarray(na["mean"], np.float32), np.asarray(na["std"], np.float32)))

    def errors(self, fs: FeatureSet, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-column squared reconstruction errors of the target windows (all by default)."""
        got = self.judge(fs, targets)
        return got.video, got.audio

    def judge(self, fs: FeatureSet, targets: np.ndarray | None = None) -> Any:
        """``models.nn.fusion.WindowErrors`` of the target windows: the errors and, with a mixture
        of experts, the real experts each window's video and audio token used."""
        from models.nn.fusion import score_windows
        v, a = self.inputs(fs)
        return score_windows(self.load(), v, a, targets)

    def zscores(self, fs: FeatureSet, targets: np.ndarray | None = None) -> dict[str, Any]:
        """Calibrated robust z-scores per modality and the column that erred most, per window;
        with a mixture of experts also ``experts_video``/``experts_audio``: real experts per
        token spent on each window (see ``models.nn.fusion.score_windows``)."""
        from models.nn.fusion import robust_z
        got = self.judge(fs, targets)
        ev, ea = got.video, got.audio
        cal = self.config["calibration"]
        out: dict[str, Any] = {}
        for name, e, cols in (("video", ev, self.config["columns"]["video"]),
                              ("audio", ea, self.config["columns"]["audio"])):
            if e.shape[1] == 0:
                out[name] = np.zeros(len(e))
                out[f"{name}_top"] = [""] * len(e)
                continue
            med, mad = cal[name]
            out[name] = robust_z(e.mean(axis=1), med, mad)
            out[f"{name}_top"] = [cols[j] for j in e.argmax(axis=1)]
        for name, spent in got.experts.items():
            out[f"experts_{name}"] = spent
        return out


def train_model(req: TrainRequest, state: JobState) -> TrainedModel:
    """Job: train the fusion network on the normal windows and calibrate it.

    Raises :class:`NotEnoughNormalData` (clear message; the detectors still work) when the
    normal footage is shorter than ``MIN_NORMAL_S``, ``core.jobs.Cancelled`` when cancelled.
    """
    from models.nn import fusion

    t_start, t0 = time.time(), time.perf_counter()
    fs = req.features
    a, b = req.normal
    normal = fs.inside(a, b)
    n = int(normal.sum())
    need = int(np.ceil(MIN_NORMAL_S / fs.window_s))
    if n < need:
        raise NotEnoughNormalData(
            f"Only {n * fs.window_s:.0f} s of normal footage ({a:.0f}–{b:.0f} s); the anomaly network needs at "
            f"least {MIN_NORMAL_S:.0f} s. Until more normal footage is marked, anomalies come from the "
            "detectors alone.")
    params = req.params or fusion.TrainParams()
    factory = req.factory()
    set_media_span(state, n * fs.window_s)  # the normal footage it learns (a stage of the pipeline: goes no further)
    state.set_progress(0.0, "preparing the normal footage")
    vcols, acols, seen = network_columns(fs, normal)
    v_raw, a_raw = design(fs, vcols, seen), design(fs, acols, seen)
    norm = {}
    mats = []
    for name, x, cols in (("video", v_raw, vcols), ("audio", a_raw, acols)):
        ref = x[normal]
        mean = ref.mean(axis=0) if len(cols) else np.zeros(0, np.float32)
        floors = np.array([_FLOORS[_kind(c)] for c in cols], np.float32)
        std = np.maximum(ref.std(axis=0), floors) if len(cols) else np.zeros(0, np.float32)
        norm[name] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
        mats.append(standardise(x, mean, std))
    v_all, a_all = mats
    idx = np.nonzero(normal)[0]
    cut = len(idx) - max(HOLDOUT_MIN_WINDOWS, len(idx) // 4)
    train_idx, cal_idx = idx[:cut], idx[cut:]
    seg = np.cumsum(np.diff(train_idx, prepend=train_idx[0]) != 1)  # gaps split sequences
    cfg = fusion.FusionConfig(video_dim=len(vcols), audio_dim=len(acols), dim=req.dim, heads=req.heads,
                              layers=req.layers, hidden=req.hidden, context=req.context, dropout=req.dropout,
                              ffn=fusion.ffn_name_of(factory))
    net = fusion.build_model(cfg, factory, seed=params.seed)
    check(state)

    def progress(f: float, loss: float) -> None:
        state.set_progress(0.02 + 0.9 * f, f"training {int(f * params.steps)}/{params.steps}, loss {loss:.3f}")

    stats = fusion.fit(net, v_all[train_idx], a_all[train_idx], params, segment=seg, progress=progress,
                       check=lambda: check(state))
    check(state)
    state.set_progress(0.93, "calibrating on the normal footage")
    ev, ea = fusion.reconstruction_errors(net, v_all, a_all, cal_idx)
    # a mixture whose held-out windows all went to one expert (the blocks also warn once)
    collapsed = [name for name, m in net.named_modules() if getattr(m, "collapsed", False) is True]
    calibration = {"video": list(fusion.robust_stats(ev.mean(axis=1))) if len(vcols) else [0.0, 1.0],
                   "audio": list(fusion.robust_stats(ea.mean(axis=1))) if len(acols) else [0.0, 1.0],
                   "windows": int(len(cal_idx)), "how": "held-out"}
    train_s = time.perf_counter() - t0
    config = {
        "net": cfg.to_dict(),
        "experts": getattr(factory, "config", None),  # the mixture's shape: rebuilds it on load
        "columns": {"video": vcols, "audio": acols},
        "classes_seen": seen,
        "norm": norm,
        "calibration": calibration,
        "training": {**asdict(params), **stats, "train_s": round(train_s, 3), "windows": int(len(train_idx)),
                     "parameters": fusion.param_count(net), "collapsed_blocks": collapsed},
        "data": {"normal": [float(a), float(b)], "window_s": fs.window_s, "features": fs.params,
                 "media_hash": req.media_hash},
        "created_at": datetime.fromtimestamp(t_start, tz=timezone.utc).isoformat(timespec="seconds"),
    }
    weights = fusion.to_bytes(net, config)
    state.set_progress(1.0, f"trained in {train_s:.1f} s")
    return TrainedModel(config, weights, net)


def store_model(project: Any, media_id: int, model: TrainedModel) -> int:
    """Record the training run and replace the stored model in one write; returns the run id."""
    c = model.config
    params = {"ffn": c["net"]["ffn"], "experts": c.get("experts"), "normal": c["data"]["normal"],
              "features": c["data"]["features"],
              "training": {k: v for k, v in c["training"].items()
                           if k not in ("final_loss", "first_loss", "train_s", "collapsed_blocks")},
              "device": "cpu"}  # Kestrel's own nets train and run on the CPU (provenance, never a cache key)
    with project.batch():  # the run and what it produced commit together
        run_id = project.record_run(kind=MODEL_KIND, producer="models.nn.fusion", version=f"{c['net']['arch_version']}",
                                    params=params, media_id=media_id,
                                    started_at=datetime.fromisoformat(c["created_at"]).timestamp(),
                                    duration_s=float(c["training"]["train_s"]))
        project.put_array(media_id, MODEL_KEY, np.frombuffer(model.weights, np.uint8), meta=c, run_id=run_id)
    model.run_id = run_id
    return run_id


def load_stored_model(project: Any, media_id: int, ffn_factory: Any = None) -> TrainedModel | None:
    """The project's model for this media, validated and loaded; None if there is none.

    Raises ``models.nn.fusion.CheckpointError`` (clear message) when it exists but cannot be
    used as asked — e.g. it was trained with another FFN type than ``ffn_factory``.
    """
    got = project.get_array(media_id, MODEL_KEY)
    if got is None:
        return None
    arr, meta = got
    model = TrainedModel(meta, arr.astype(np.uint8).tobytes())
    model.load(ffn_factory)
    run = next((r for r in reversed(project.list_runs(media_id)) if r.kind == MODEL_KIND and r.status == "ok"), None)
    model.run_id = run.id if run is not None else None
    return model


def matches(model: TrainedModel, fs: FeatureSet, normal: tuple[float, float], req: TrainRequest) -> str | None:
    """None when ``model`` was trained for exactly this request, else why not (for the notes)."""
    c = model.config
    if c["data"]["features"] != fs.params:
        return "the stored model was trained on features with other settings"
    if [round(x, 3) for x in c["data"]["normal"]] != [round(x, 3) for x in normal]:
        a, b = c["data"]["normal"]
        return f"the stored model was trained on {a:.0f}–{b:.0f} s as normal footage"
    from models.nn.fusion import ffn_name_of

    net = c["net"]
    factory = req.factory()
    ffn = ffn_name_of(factory)
    if net["ffn"] != ffn:
        return f"the stored model uses {net['ffn']!r} feed-forward blocks, {ffn!r} were asked for"
    asked = getattr(factory, "config", None)
    if asked is not None and c.get("experts") != asked:  # same shape, other training-only settings
        diff = sorted(k for k in asked if (c.get("experts") or {}).get(k) != asked[k])
        return f"the stored model's experts were trained with other settings ({', '.join(diff)})"
    for k in ("dim", "layers", "heads", "hidden", "context"):
        if net[k] != getattr(req, k):
            return f"the stored model has {k}={net[k]}, {getattr(req, k)} was asked for"
    if req.params is not None:
        t = c["training"]
        if any(t.get(k) != v for k, v in asdict(req.params).items()):
            return "the stored model was trained with other training settings"
    return None
