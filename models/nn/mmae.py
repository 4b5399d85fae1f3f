"""Kestrel's multimodal autoencoder (MMAE): every shot's modalities mapped into ONE shared
latent, trained on reconstruction alone — after arXiv 2511.17596.

Why this design:

- **one encoder per modality** (``Linear`` in → residual blocks → a latent contribution) and
  the shot's latent is the **masked mean of the present modalities' contributions**, so any
  subset of modalities — a single one included — lands in the same space;
- **one decoder per modality** from that latent;
- the loss is the **sum of per-modality reconstruction errors**, masked by presence: no
  labels and no contrastive pairs, so an analyst's unlabelled, partly unpaired archive is
  enough (the paper's point);
- **modality dropout** while training: present modalities are randomly hidden from the
  encoder (one always stays) but every present one must still be reconstructed. A single
  modality therefore has to encode what the others need, which is what makes cross-modal
  search work (a text-only query → latent → nearest shots).

Per-modality normalisation (mean/std over present rows) is computed by :func:`fit` and kept
in the checkpoint (as buffers beside the weights). Non-finite values become 0 after
normalising; a row with no finite value counts as missing.

Feed-forward blocks come from the registry in :mod:`models.nn.ffn` (``factory(dim, hidden)``,
default ``"dense"``), so a mixture-of-experts registered there plugs into MMAE's encoders and
decoders too; a module's ``aux_loss`` is added to the training loss. A checkpoint names its FFN
type and is refused (:class:`~models.nn.common.CheckpointError`) when asked to load into another.

Checkpoints are safetensors bytes (no pickle) with the config, training summary and the
caller's provenance as JSON in the header metadata. torch is imported only inside functions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np

from models.errors import KestrelError
from models.loaded import limit_threads
from models.nn.common import (CheckpointError, TrainSettings, factory_for, header_metadata, load_checked,
                              param_count, refuse_other_ffn, state_bytes, stored_config, stored_ffn_factory,
                              total_aux_loss, train_step)
from models.nn.ffn import FFNFactory, ffn_names

ARCH = "kestrel-mmae"
ARCH_VERSION = 1
META_KEY = "kestrel-mmae"
MIN_SHOTS = 24  # below this, the per-modality features serve better than a net fitted to noise
_CLIP = 1e3  # normalised values are clipped here: one absurd value must not own the loss

__all__ = ["MMAEConfig", "TrainParams", "NoModalityError", "NotEnoughData", "CheckpointError", "build", "fit",
           "encode", "reconstruct", "reconstruction_errors", "cosine_nearest", "to_bytes", "from_bytes",
           "checkpoint_info", "param_count", "too_little_data", "MIN_SHOTS"]


class NoModalityError(KestrelError, ValueError):
    """Some shots have no usable modality at all, so they have no place in the latent."""


class NotEnoughData(KestrelError, ValueError):
    """Too few shots to train; ``str()`` says so and what is used instead."""


# -- config ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MMAEConfig:
    """Shapes of the network; stored in every checkpoint and checked on load.

    ``modalities`` maps a modality's name to its features per shot (order kept); it may be
    given as a dict and is held as a tuple of ``(name, dim)`` pairs so the config stays
    hashable. ``dims``/``names`` give it back.
    """

    modalities: Any  # Mapping[str, int] or iterable of (name, dim)
    latent: int = 32
    hidden: int = 128  # FFN hidden width
    width: int = 64  # residual stream width inside encoders and decoders
    layers: int = 2  # residual FFN blocks per encoder and per decoder
    ffn: str = "dense"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        items = self.modalities.items() if isinstance(self.modalities, Mapping) else self.modalities
        try:
            pairs = tuple((str(k), int(v)) for k, v in items)
        except (TypeError, ValueError) as e:
            raise ValueError(f"modalities must map names to feature counts ({e})") from None
        if not pairs:
            raise ValueError("the network needs at least one modality")
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names repeat: {names}")
        for k, v in pairs:
            if not k or not k.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"invalid modality name {k!r} (letters, digits, '_' and '-')")
            if v <= 0:
                raise ValueError(f"modality {k!r} needs at least one feature, not {v}")
        object.__setattr__(self, "modalities", pairs)
        for f in ("latent", "hidden", "width"):
            if int(getattr(self, f)) <= 0:
                raise ValueError(f"{f} must be positive")
        if int(self.layers) < 0:
            raise ValueError("layers must be 0 or more")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.modalities)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # pairs, not a dict: the order fixes which weights belong to which modality, and a dict's
        # order does not survive JSON written with sorted keys
        d["modalities"] = [[k, v] for k, v in self.modalities]
        return {"arch": ARCH, "arch_version": ARCH_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MMAEConfig":
        return stored_config(cls, d, ARCH, ARCH_VERSION, "multimodal model")


@dataclass(frozen=True)
class TrainParams(TrainSettings):
    """Training settings (recorded in the checkpoint); batch, lr, seed, threads… in TrainSettings."""

    epochs: int = 60
    modality_dropout: float = 0.5  # chance each present modality is hidden from the encoder
    noise: float = 0.0  # Gaussian input noise in normalised units (denoising); 0: none

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError("epochs, batch and lr must be positive")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError("modality_dropout must be in [0, 1)")


def too_little_data(n_shots: int, minimum: int = MIN_SHOTS) -> str | None:
    """``None`` when ``n_shots`` is enough to train; otherwise the message to show."""
    if n_shots >= minimum:
        return None
    return (f"Only {n_shots} shot{'s' if n_shots != 1 else ''} with usable features (at least {minimum} are "
            f"needed): the multimodal autoencoder is not trained; the per-modality features are used instead.")


# -- the network (classes built when torch is first needed) ----------------------------------

@lru_cache(maxsize=1)
def _torch() -> SimpleNamespace:
    import torch
    from torch import nn

    class Residual(nn.Module):
        """x + dropout(FFN(LayerNorm(x))), the FFN from the factory."""

        def __init__(self, width: int, hidden: int, factory: FFNFactory, p: float) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(width)
            self.ffn = factory(width, hidden)
            self.drop = nn.Dropout(p)

        def forward(self, x):
            return x + self.drop(self.ffn(self.norm(x)))

    class Coder(nn.Module):
        """Linear in → residual blocks → LayerNorm → Linear out (an encoder or a decoder)."""

        def __init__(self, d_in: int, d_out: int, cfg: MMAEConfig, factory: FFNFactory) -> None:
            super().__init__()
            self.inp = nn.Linear(d_in, cfg.width)
            self.blocks = nn.ModuleList(Residual(cfg.width, cfg.hidden, factory, cfg.dropout)
                                        for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(cfg.width)
            self.out = nn.Linear(cfg.width, d_out)

        def forward(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = b(h)
            return self.out(self.norm(h))

    class MMAE(nn.Module):
        """``forward(xs, visible) -> (latent [B, L], recs, n_visible [B])``.

        ``xs``: one normalised tensor [B, D_m] per modality, in config order; ``visible``
        [B, M] bool: which modalities the encoder may see. A shot with none visible gets a
        zero latent (callers refuse or mark such shots).
        """

        def __init__(self, cfg: MMAEConfig, factory: FFNFactory) -> None:
            super().__init__()
            self.cfg = cfg
            self.encoders = nn.ModuleList(Coder(d, cfg.latent, cfg, factory) for _, d in cfg.modalities)
            self.decoders = nn.ModuleList(Coder(cfg.latent, d, cfg, factory) for _, d in cfg.modalities)
            for i, (_, d) in enumerate(cfg.modalities):  # normalisation stats, saved with the weights
                self.register_buffer(f"mean_{i}", torch.zeros(d))
                self.register_buffer(f"std_{i}", torch.ones(d))
            self.provenance: dict[str, Any] = {}
            self.train_info: dict[str, Any] | None = None

        def encode(self, xs, visible):
            parts = torch.stack([enc(x) for enc, x in zip(self.encoders, xs)], dim=1)  # [B, M, L]
            w = visible.to(parts.dtype)
            n = w.sum(dim=1)
            z = (parts * w[..., None]).sum(dim=1) / n.clamp(min=1.0)[:, None]
            return z, n

        def decode(self, z):
            return [dec(z) for dec in self.decoders]

        def forward(self, xs, visible):
            z, n = self.encode(xs, visible)
            return z, self.decode(z), n

        def collect_aux_loss(self):
            return total_aux_loss(self)

    return SimpleNamespace(torch=torch, nn=nn, MMAE=MMAE)


def build(cfg: MMAEConfig, seed: int | None = None, ffn_factory: FFNFactory | None = None) -> Any:
    """A fresh, untrained network (identity normalisation until :func:`fit`).

    With ``ffn_factory`` given, its registered name must match ``cfg.ffn``.
    """
    T = _torch()
    factory = factory_for(cfg.ffn, ffn_factory)
    if seed is not None:
        T.torch.manual_seed(seed)
    net = T.MMAE(cfg, factory)
    net.ffn_config = getattr(factory, "config", None)  # a mixture's settings, saved with the weights
    return net


# -- data preparation ------------------------------------------------------------------------

def _stats(net: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(getattr(net, f"mean_{i}").detach().cpu().numpy().astype(np.float64),
             getattr(net, f"std_{i}").detach().cpu().numpy().astype(np.float64))
            for i in range(len(net.cfg.modalities))]


def _raw(cfg: MMAEConfig, data: Mapping[str, Any], masks: Mapping[str, Any] | None
         ) -> tuple[int, list[np.ndarray | None], list[np.ndarray]]:
    """Validated raw arrays (float64, or None when a modality is not given) and presence."""
    masks = masks or {}
    unknown = (set(data) | set(masks)) - set(cfg.names)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; this network knows {list(cfg.names)}")
    lengths = {len(np.asarray(a)) for a in list(data.values()) + list(masks.values())}
    if len(lengths) != 1:
        raise ValueError(f"modalities disagree on the number of shots: {sorted(lengths)}"
                         if lengths else "no modality given")
    n = lengths.pop()
    xs: list[np.ndarray | None] = []
    pres: list[np.ndarray] = []
    for name, d in cfg.modalities:
        if name in data:
            x = np.asarray(data[name], np.float64)
            if x.ndim != 2 or x.shape[1] != d:
                raise ValueError(f"modality {name!r} has shape {x.shape}; this network expects [N, {d}]")
            p = np.ones(n, bool) if name not in masks else np.asarray(masks[name], bool).reshape(-1)
            p = p & np.isfinite(x).any(axis=1)  # a row with no finite value is missing
        else:
            x = None
            p = np.zeros(n, bool)
            if name in masks and np.asarray(masks[name], bool).any():
                raise ValueError(f"modality {name!r} is marked present for some shots but no data was given")
        if len(p) != n:
            raise ValueError(f"the presence mask of {name!r} has {len(p)} entries for {n} shots")
        xs.append(x)
        pres.append(p)
    return n, xs, pres


def _fit_stats(xs: list[np.ndarray | None], pres: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-feature mean/std over present rows' finite values (0/1 where nothing is known)."""
    out = []
    for x, p in zip(xs, pres):
        if x is None or not p.any():
            d = 0 if x is None else x.shape[1]
            out.append((np.zeros(d), np.ones(d)))
            continue
        rows = x[p]
        fin = np.isfinite(rows)
        cnt = fin.sum(axis=0)
        safe = np.where(fin, rows, 0.0)
        mean = safe.sum(axis=0) / np.maximum(cnt, 1)
        var = (np.where(fin, rows - mean, 0.0) ** 2).sum(axis=0) / np.maximum(cnt, 1)
        std = np.sqrt(var)
        std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)  # constant feature: leave it as is
        mean = np.where(np.isfinite(mean), mean, 0.0)
        out.append((mean, std))
    return out


def _normalise(cfg: MMAEConfig, xs, pres, stats) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Normalised float32 arrays (0 where missing), presence [N, M] and element validity masks."""
    n = len(pres[0])
    zs, elems = [], []
    for (name, d), x, p, (mean, std) in zip(cfg.modalities, xs, pres, stats):
        if x is None:
            zs.append(np.zeros((n, d), np.float32))
            elems.append(np.zeros((n, d), bool))
            continue
        with np.errstate(all="ignore"):
            z = (x - mean) / std
        fin = np.isfinite(z) & p[:, None]
        zs.append(np.clip(np.where(fin, z, 0.0), -_CLIP, _CLIP).astype(np.float32))
        elems.append(fin)
    return zs, np.stack(pres, axis=1), elems


def _prepare(net: Any, data, masks):
    n, xs, pres = _raw(net.cfg, data, masks)
    return _normalise(net.cfg, xs, pres, _stats(net))


# -- training --------------------------------------------------------------------------------

def fit(net: Any, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None, params: TrainParams,
        progress: Callable[[float, str], None] | None = None,
        check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``net`` in place on shots' raw features; returns the training history.

    ``data`` maps modality name → [N, D] float array; ``masks`` maps name → [N] bool presence
    (a modality absent from ``masks`` is present where its row has a finite value; one absent
    from ``data`` is missing everywhere). Normalisation stats are fitted here and kept in the
    net. ``progress(fraction, message)`` is called per epoch; ``check()`` is called every step
    and may raise to cancel: the net is then restored to exactly what it was before (nothing
    half-trained is left behind). Deterministic for a given ``params.seed``; raises
    :class:`NotEnoughData` below :data:`MIN_SHOTS` usable shots.
    """
    _, xs, pres = _raw(net.cfg, data, masks)
    usable = np.stack(pres, axis=1).any(axis=1)
    msg = too_little_data(int(usable.sum()))
    if msg:
        raise NotEnoughData(msg)
    torch = _torch().torch
    backup = {k: v.detach().clone() for k, v in net.state_dict().items()}
    old_info = net.train_info
    try:
        with limit_threads(params.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)  # dropout draws, without disturbing the caller's RNG
            return _fit(net, xs, pres, usable, params, progress, check)
    except BaseException:
        net.load_state_dict(backup)
        net.train_info = old_info
        net.eval()
        raise


def _fit(net, xs, pres, usable, params: TrainParams, progress, check) -> dict[str, Any]:
    torch = _torch().torch
    cfg = net.cfg
    stats = _fit_stats(xs, pres)
    for i, (mean, std) in enumerate(stats):
        getattr(net, f"mean_{i}").copy_(torch.as_tensor(mean, dtype=torch.float32))
        getattr(net, f"std_{i}").copy_(torch.as_tensor(std, dtype=torch.float32))
    zs, P, elems = _normalise(cfg, xs, pres, stats)
    rows = np.flatnonzero(usable)
    X = [torch.as_tensor(z[rows]) for z in zs]
    E = [torch.as_tensor(e[rows].astype(np.float32)) for e in elems]
    Pt = torch.as_tensor(P[rows])
    n = len(rows)
    gen = torch.Generator().manual_seed(params.seed)
    per_epoch = -(-n // params.batch)
    total = params.epochs * per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    # OneCycle divides by its warm-up length: at least 2 steps of it (short runs on small archives)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=params.lr, total_steps=total,
                                                 pct_start=max(0.1, 2.5 / total)) if total >= 6
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0))
    net.train()
    history: list[float] = []
    step = 0
    if progress is not None:
        progress(0.0, f"training the multimodal autoencoder on {n} shots")
    for epoch in range(params.epochs):
        order = torch.randperm(n, generator=gen)
        run = 0.0
        for s in range(0, n, params.batch):
            if check is not None:
                check()
            idx = order[s:s + params.batch]
            x = [t[idx] for t in X]
            e = [t[idx] for t in E]
            vis = _modality_dropout(torch, Pt[idx], params.modality_dropout, gen)
            if params.noise > 0:
                x_in = [t + params.noise * torch.randn(t.shape, generator=gen) * ee for t, ee in zip(x, e)]
            else:
                x_in = x
            _, recs, _ = net(x_in, vis)
            loss = sum(((r - t) ** 2 * w).sum() / w.sum().clamp(min=1.0) for r, t, w in zip(recs, x, e))
            run += train_step(net, opt, sched, loss, params.aux_weight) * len(idx)
            step += 1
        history.append(run / n)
        if progress is not None:
            progress(step / total, f"epoch {epoch + 1}/{params.epochs} · reconstruction loss {history[-1]:.4f}")
    net.eval()
    info = {"loss": history, "first_loss": history[0], "final_loss": history[-1], "epochs": params.epochs,
            "steps": step, "shots": n, "present": {name: int(p.sum()) for name, p in zip(cfg.names, pres)},
            "params": asdict(params)}
    net.train_info = {k: v for k, v in info.items() if k != "loss"}
    return info


def _modality_dropout(torch, present, p: float, gen):
    """Hide each present modality with chance ``p``; every shot keeps at least one visible."""
    if p <= 0:
        return present.clone()
    B, M = present.shape
    vis = present & ~(torch.rand((B, M), generator=gen) < p)
    none = ~vis.any(dim=1) & present.any(dim=1)
    if bool(none.any()):
        pick = torch.rand((B, M), generator=gen).masked_fill(~present, -1.0).argmax(dim=1)
        vis[none, pick[none]] = True
    return vis


# -- using a trained net ---------------------------------------------------------------------

def _run(net: Any, zs: list[np.ndarray], visible: np.ndarray, batch: int, threads: int, decode: bool):
    T = _torch()
    torch = T.torch
    net.eval()
    lat, recs = [], [[] for _ in zs]
    with torch.inference_mode(), limit_threads(threads):
        for s in range(0, len(visible), batch):
            x = [torch.as_tensor(z[s:s + batch]) for z in zs]
            v = torch.as_tensor(visible[s:s + batch])
            z, _ = net.encode(x, v)
            lat.append(z.numpy())
            if decode:
                for acc, r in zip(recs, net.decode(z)):
                    acc.append(r.numpy())
    L = net.cfg.latent
    lat_a = np.concatenate(lat) if lat else np.zeros((0, L), np.float32)
    rec_a = [np.concatenate(r) if r else np.zeros((0, d), np.float32) for r, (_, d) in zip(recs, net.cfg.modalities)]
    return lat_a, rec_a


def expert_usage(net: Any, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None, *,
                 threads: int = 1) -> dict[str, np.ndarray] | None:
    """Real experts each shot's encoder spent, per modality: ``{name: [N]}`` (mean over the
    encoder's blocks; NaN where the shot lacks that modality), or None for dense blocks.

    All shots go through in one batch, so a mixture with a per-batch budget shares it over
    the whole archive as it would in training.
    """
    zs, P, _ = _prepare(net, data, masks)
    torch = _torch().torch
    net.eval()
    with torch.inference_mode(), limit_threads(threads):
        net.encode([torch.as_tensor(z) for z in zs], torch.as_tensor(P))
    out: dict[str, np.ndarray] = {}
    for k, (name, _d) in enumerate(net.cfg.modalities):
        per = [b.ffn.last_stats["real_slots"].float().numpy() for b in net.encoders[k].blocks
               if isinstance(getattr(b.ffn, "last_stats", None), dict) and "real_slots" in b.ffn.last_stats]
        if not per:
            return None
        v = np.mean(per, axis=0).astype(np.float32)
        v[~P[:, k]] = np.nan
        out[name] = v
    return out


def _empty_shots(P: np.ndarray, on_empty: str) -> np.ndarray:
    if on_empty not in ("raise", "nan"):
        raise ValueError("on_empty must be 'raise' or 'nan'")
    empty = ~P.any(axis=1)
    if on_empty == "raise" and empty.any():
        idx = np.flatnonzero(empty)
        shown = ", ".join(map(str, idx[:10])) + (" …" if len(idx) > 10 else "")
        raise NoModalityError(f"{len(idx)} shot(s) have no usable modality (all missing or non-finite): {shown}. "
                              f"They have no place in the latent; pass on_empty='nan' to get NaN rows for them.")
    return empty


def encode(net: Any, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None, *,
           on_empty: str = "raise", batch: int = 1024, threads: int = 1) -> np.ndarray:
    """Shared latent [N, latent] float32 of each shot from whatever modalities it has.

    Any subset works, one modality alone included (pass only that key in ``data``). A shot
    with no usable modality raises :class:`NoModalityError`, or with ``on_empty='nan'`` gets
    a NaN row.
    """
    zs, P, _ = _prepare(net, data, masks)
    empty = _empty_shots(P, on_empty)
    lat, _ = _run(net, zs, P, batch, threads, decode=False)
    lat[empty] = np.nan
    return lat


def reconstruct(net: Any, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None, *,
                on_empty: str = "raise", batch: int = 1024, threads: int = 1) -> dict[str, np.ndarray]:
    """Every configured modality decoded from each shot's latent, in original units.

    Modalities a shot lacks are predicted too (cross-modal reconstruction: e.g. audio
    features from text alone). Empty shots: see :func:`encode`.
    """
    zs, P, _ = _prepare(net, data, masks)
    empty = _empty_shots(P, on_empty)
    _, recs = _run(net, zs, P, batch, threads, decode=True)
    out = {}
    for name, r, (mean, std) in zip(net.cfg.names, recs, _stats(net)):
        x = (r.astype(np.float64) * std + mean).astype(np.float32)
        x[empty] = np.nan
        out[name] = x
    return out


def reconstruction_errors(net: Any, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None,
                          *, leave_out: bool = False, batch: int = 1024, threads: int = 1) -> dict[str, np.ndarray]:
    """Per shot and modality, the mean squared reconstruction error in normalised units.

    Returns name → [N] float32; NaN where the shot lacks that modality (or has no usable
    modality at all). With ``leave_out``, each modality is judged from the *other* present
    modalities only (NaN when there are none): a cross-modal consistency score.
    """
    zs, P, elems = _prepare(net, data, masks)
    out = {name: np.full(len(P), np.nan, np.float32) for name in net.cfg.names}
    if not leave_out:
        views = [(None, P)]
    else:
        views = []
        for m in range(P.shape[1]):
            v = P.copy()
            v[:, m] = False
            views.append((m, v))
    for m, vis in views:
        _, recs = _run(net, zs, vis, batch, threads, decode=True)
        ok = vis.any(axis=1)
        for j, (name, r, z, e) in enumerate(zip(net.cfg.names, recs, zs, elems)):
            if m is not None and j != m:
                continue
            cnt = e.sum(axis=1)
            err = np.where(e, (r - z) ** 2, 0.0).sum(axis=1) / np.maximum(cnt, 1)
            keep = ok & P[:, j] & (cnt > 0)
            out[name][keep] = err[keep]
    return out


def cosine_nearest(queries: np.ndarray, bank: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Indices [Q, k] of the ``bank`` rows nearest each query by cosine, and their similarities."""
    q = np.asarray(queries, np.float64)
    b = np.asarray(bank, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = np.nan_to_num(q @ b.T, nan=-np.inf)
    k = min(k, sim.shape[1])
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sim, idx, axis=1)


# -- checkpoints (safetensors + JSON, never pickle) ------------------------------------------

def to_bytes(net: Any, provenance: Mapping[str, Any] | None = None) -> bytes:
    """Weights and normalisation stats as safetensors bytes; config, training summary and
    ``provenance`` (JSON-serialisable: which media, which features, when) in its header."""
    meta = {"net": net.cfg.to_dict(), "train": net.train_info, "provenance": dict(provenance or {}),
            "experts": getattr(net, "ffn_config", None)}
    return state_bytes(net, {META_KEY: json.dumps(meta, sort_keys=True)})


def checkpoint_info(blob: bytes) -> dict[str, Any]:
    """The checkpoint's header (``net`` config, ``train`` summary, ``provenance``) without torch."""
    try:
        meta = header_metadata(bytes(blob))
        info = json.loads(meta[META_KEY])
    except KeyError:
        raise CheckpointError("this is not a multimodal autoencoder checkpoint (no MMAE header); retrain it.") from None
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"the stored multimodal model is damaged ({e}); retrain it.") from e
    if not isinstance(info, dict) or not isinstance(info.get("net"), dict):
        raise CheckpointError("the stored multimodal model's header is damaged; retrain it.")
    return info


def from_bytes(blob: bytes, ffn_factory: FFNFactory | None = None) -> Any:
    """Rebuild the network from :func:`to_bytes` output, refusing what it cannot load faithfully.

    A checkpoint trained with another FFN type than ``ffn_factory`` (or one this Kestrel does
    not know), or whose tensors do not fit the stored shapes, raises
    :class:`~models.nn.common.CheckpointError` — never a silent partial load.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    info = checkpoint_info(blob)
    cfg = MMAEConfig.from_dict(info["net"])
    if ffn_factory is not None:
        refuse_other_ffn(cfg.ffn, ffn_factory, "multimodal model", "retrain it")
    experts = info.get("experts") or (info.get("provenance") or {}).get("experts")
    if experts:  # a mixture's settings (budget, K, rho…) must be the ones its name stands for
        stored = stored_ffn_factory(cfg.ffn, experts)
        ffn_factory = ffn_factory or stored
    elif cfg.ffn != "dense" and ffn_factory is None:
        if cfg.ffn not in ffn_names():
            raise CheckpointError(f"this multimodal model was trained with {cfg.ffn!r} feed-forward blocks, which this "
                                  f"Kestrel does not have (known: {', '.join(ffn_names())}); retrain it.")
        if cfg.ffn.startswith(("moe-topk", "anyexperts")):
            raise CheckpointError(f"this multimodal model's {cfg.ffn!r} blocks were saved without their expert settings "
                                  f"(budget, slots per token), so it cannot be run as it was trained; retrain it.")
    try:
        state = load(bytes(blob))
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"the stored multimodal model is damaged ({e}); retrain it.") from e
    net = load_checked(build(cfg, ffn_factory=ffn_factory), state, "multimodal model")
    net.provenance = dict(info.get("provenance") or {})
    net.train_info = info.get("train")
    return net
