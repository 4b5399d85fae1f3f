"""Kestrel's audio-visual fusion network: masked-window reconstruction with bidirectional
cross-modal attention, trained on the analyst's normal footage; its error is the anomaly.

Why this design (after arXiv 2511.18698, which fuses video and audio tokens by cross-modal
attention in both directions, but with no training objective an analyst can run):

- one **video token** and one **audio token** per window (each window's feature row,
  linearly embedded to ``dim``), over a short **temporal context** of ``context`` windows
  that ends at the window being judged (causal, so a live camera and a file behave alike);
- each block: self-attention over time within each modality, then **bidirectional
  cross-attention** — video queries attend to audio keys and audio queries to video keys,
  both from the same pre-update states — then a feed-forward block per modality;
- **self-supervised objective**: the last window's tokens are replaced by mask tokens (both
  modalities, or one of them, so the other must be predicted across modalities) and the
  network reconstructs that window's features. Normal footage becomes predictable; what the
  scene never did is not, and the reconstruction error measures it.

Feed-forward blocks are **swappable**: they are built by ``ffn_factory(dim, hidden)``
(default :func:`dense_ffn`, a 2-layer MLP). A later mixture-of-experts plugs in there; a
module may expose ``aux_loss`` (a scalar tensor set in ``forward``) that training adds. The
factory's registered name is recorded in the checkpoint, and a checkpoint is refused with a
clear message when asked to load into another FFN type. A factory made by
``models.nn.experts.make_ffn_factory`` also carries its ``config``; stored beside the net's config
(key ``"experts"``) it lets :func:`from_bytes` rebuild a non-default mixture (a name such as
``anyexperts-1a2b3c4d``) in a fresh process. :func:`score_windows` reports, beside the errors,
how many real experts each judged window's video and audio token used.

Checkpoints hold no pickle: the state dict is written with safetensors (bytes) and the
config is JSON. torch is imported only inside functions: importing this module is free.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from models.loaded import limit_threads
from models.nn.common import (CheckpointError, TrainSettings, config_from_fields, ensure_known,  # noqa: F401
                              factory_for, ffn_factory, header_metadata, load_checked, param_count,
                              refuse_other_ffn, state_bytes, stored_config, stored_ffn_factory, total_aux_loss,
                              train_step)
from models.nn.ffn import _FFN, FFNFactory, dense_ffn, ffn_name_of, ffn_names, register_ffn  # noqa: F401

ARCH = "kestrel-av-fusion"
ARCH_VERSION = 1


# -- config ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusionConfig:
    """Shapes of the network; stored in every checkpoint and checked on load."""

    video_dim: int  # features per video token (0: the file has no picture)
    audio_dim: int  # features per audio token (0: no sound)
    dim: int = 32
    heads: int = 4
    layers: int = 2
    hidden: int = 64  # FFN hidden width
    context: int = 8  # windows per sequence, the judged one last
    dropout: float = 0.1
    ffn: str = "dense"
    cross: bool = True  # bidirectional cross-modal attention (False only for ablations/tests)

    def __post_init__(self) -> None:
        if self.video_dim < 0 or self.audio_dim < 0 or self.video_dim + self.audio_dim == 0:
            raise ValueError("the network needs video or audio features")
        if self.dim % self.heads:
            raise ValueError("dim must be a multiple of heads")
        if self.context < 2:
            raise ValueError("context must be at least 2 windows")

    def to_dict(self) -> dict[str, Any]:
        return {"arch": ARCH, "arch_version": ARCH_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FusionConfig":
        return stored_config(cls, d, ARCH, ARCH_VERSION, "model", "retrain it on the normal footage")


@dataclass(frozen=True)
class TrainParams(TrainSettings):
    """Training settings (recorded in the checkpoint); batch, lr, seed, threads… in TrainSettings.
    Why one torch thread by default: this network's tensors are tiny, and on a busy 2-core machine
    two threads spin against each other (one training step: 58 ms with one thread, 880 ms with two)."""

    steps: int = 300
    noise: float = 0.1  # Gaussian input noise (in normalised units): keeps it from memorising
    context_mask: float = 0.15  # share of context windows also masked


# -- the network (classes built when torch is first needed) ----------------------------------

@lru_cache(maxsize=1)
def _torch() -> SimpleNamespace:
    import torch
    from torch import nn

    class Block(nn.Module):
        """Self-attention per modality, bidirectional cross-attention, FFN per modality."""

        def __init__(self, cfg: FusionConfig, factory: FFNFactory) -> None:
            super().__init__()
            d, h, p = cfg.dim, cfg.heads, cfg.dropout
            self.cross = cfg.cross
            self.self_v = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
            self.self_a = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
            self.v_from_a = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
            self.a_from_v = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
            self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(6))
            self.ffn_v = factory(d, cfg.hidden)
            self.ffn_a = factory(d, cfg.hidden)
            self.drop = nn.Dropout(p)

        def forward(self, hv, ha, pad):
            n = self.norms
            x = n[0](hv)
            hv = hv + self.drop(self.self_v(x, x, x, key_padding_mask=pad, need_weights=False)[0])
            y = n[1](ha)
            ha = ha + self.drop(self.self_a(y, y, y, key_padding_mask=pad, need_weights=False)[0])
            if self.cross:  # both directions read the same pre-update states
                x, y = n[2](hv), n[3](ha)
                hv, ha = (hv + self.drop(self.v_from_a(x, y, y, key_padding_mask=pad, need_weights=False)[0]),
                          ha + self.drop(self.a_from_v(y, x, x, key_padding_mask=pad, need_weights=False)[0]))
            hv = hv + self.drop(self.ffn_v(n[4](hv)))
            ha = ha + self.drop(self.ffn_a(n[5](ha)))
            return hv, ha

    class FusionNet(nn.Module):
        """``forward(video, audio, mask_v, mask_a, pad) -> (rec_video, rec_audio)``.

        video [B, L, Dv], audio [B, L, Da] (normalised features; a modality of size 0 is
        replaced by a learned "absent" token), mask_* [B, L] bool (True: hidden from the
        network, to be reconstructed), pad [B, L] bool (True: no window there).
        """

        def __init__(self, cfg: FusionConfig, factory: FFNFactory) -> None:
            super().__init__()
            self.cfg = cfg
            d = cfg.dim
            self.in_v = nn.Linear(cfg.video_dim, d) if cfg.video_dim else None
            self.in_a = nn.Linear(cfg.audio_dim, d) if cfg.audio_dim else None
            self.absent = nn.Parameter(torch.zeros(2, d))
            self.mask_tok = nn.Parameter(torch.randn(2, d) * 0.02)
            self.pos = nn.Parameter(torch.randn(cfg.context, d) * 0.02)
            self.modality = nn.Parameter(torch.randn(2, d) * 0.02)
            self.blocks = nn.ModuleList(Block(cfg, factory) for _ in range(cfg.layers))
            self.out_norm = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
            self.out_v = nn.Linear(d, cfg.video_dim) if cfg.video_dim else None
            self.out_a = nn.Linear(d, cfg.audio_dim) if cfg.audio_dim else None

        def _embed(self, x, proj, k: int, mask, B: int, L: int):
            h = proj(x) if proj is not None else self.absent[k].expand(B, L, -1)
            h = torch.where(mask[..., None], self.mask_tok[k].expand(B, L, -1), h)
            return h + self.pos[-L:] + self.modality[k]

        def forward(self, video, audio, mask_v, mask_a, pad):
            B, L = mask_v.shape
            hv = self._embed(video, self.in_v, 0, mask_v, B, L)
            ha = self._embed(audio, self.in_a, 1, mask_a, B, L)
            for blk in self.blocks:
                hv, ha = blk(hv, ha, pad)
            rv = self.out_v(self.out_norm[0](hv)) if self.out_v is not None else video[..., :0]
            ra = self.out_a(self.out_norm[1](ha)) if self.out_a is not None else audio[..., :0]
            return rv, ra

        def collect_aux_loss(self):
            return total_aux_loss(self)

    return SimpleNamespace(torch=torch, nn=nn, Block=Block, FusionNet=FusionNet)


def build_model(cfg: FusionConfig, ffn_factory: FFNFactory | None = None, seed: int | None = None) -> Any:
    """A fresh network. With ``ffn_factory`` given, its registered name must match ``cfg.ffn``."""
    T = _torch()
    factory = factory_for(cfg.ffn, ffn_factory)
    if seed is not None:
        T.torch.manual_seed(seed)
    return T.FusionNet(cfg, factory)


# -- sequences -------------------------------------------------------------------------------

def sequences(n: int, targets: np.ndarray, context: int,
              segment: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index matrix [len(targets), context] of each target's causal context, and its pad mask.

    Windows before the start (or in another segment — a gap in the normal footage) are
    padding: they point at the target itself and are hidden from attention.
    """
    targets = np.asarray(targets, np.int64)
    offs = np.arange(-context + 1, 1)
    idx = targets[:, None] + offs[None, :]
    pad = idx < 0
    if segment is not None:
        seg = np.asarray(segment)
        pad |= seg[np.clip(idx, 0, n - 1)] != seg[targets][:, None]
    idx = np.where(pad, targets[:, None], idx)
    return idx, pad


# -- training --------------------------------------------------------------------------------

def fit(net: Any, video: np.ndarray, audio: np.ndarray, params: TrainParams, *,
        segment: np.ndarray | None = None, progress: Callable[[float, float], None] | None = None,
        check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``net`` in place on normalised features [T, Dv] / [T, Da] of normal footage.

    Each step samples ``batch`` target windows with their context; the target is masked
    (both modalities half of the time, only video or only audio a quarter each, so cross-
    modal prediction is learned too), some context windows are masked as well, and the loss
    is the mean squared reconstruction error on the masked target. ``check()`` may raise to
    cancel (the caller's model is then simply not used). Deterministic for a given seed.
    """
    with limit_threads(params.threads):
        return _fit(net, video, audio, params, segment, progress, check)


def _fit(net, video, audio, params, segment, progress, check) -> dict[str, Any]:
    torch = _torch().torch
    n = len(video)
    cfg = net.cfg
    gen = torch.Generator().manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    v_all = torch.as_tensor(np.asarray(video, np.float32))
    a_all = torch.as_tensor(np.asarray(audio, np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=params.lr, total_steps=max(1, params.steps),
                                                pct_start=0.15)
    net.train()
    losses: list[float] = []
    for step in range(params.steps):
        if check is not None and step % 5 == 0:
            check()
        tgt = rng.integers(0, n, params.batch)
        idx, pad = sequences(n, tgt, cfg.context, segment)
        B, L = idx.shape
        it = torch.as_tensor(idx)
        v, a = v_all[it], a_all[it]
        v = v + params.noise * torch.randn(v.shape, generator=gen)
        a = a + params.noise * torch.randn(a.shape, generator=gen)
        mode = rng.random(B)
        mv = np.zeros((B, L), bool)
        ma = np.zeros((B, L), bool)
        mv[:, -1] = (mode < 0.75) | (cfg.audio_dim == 0)
        ma[:, -1] = (mode < 0.5) | (mode >= 0.75) | (cfg.video_dim == 0)
        ctx = (rng.random((B, L)) < params.context_mask) & ~pad
        ctx[:, -1] = False
        mv_t, ma_t = torch.as_tensor(mv | ctx), torch.as_tensor(ma | ctx)
        pad_t = torch.as_tensor(pad)
        rv, ra = net(v, a, mv_t, ma_t, pad_t)
        loss = _masked_mse(torch, rv, v_all[it], mv_t & ~pad_t) + _masked_mse(torch, ra, a_all[it], ma_t & ~pad_t)
        losses.append(train_step(net, opt, sched, loss, params.aux_weight))
        if progress is not None and (step % 10 == 0 or step == params.steps - 1):
            progress((step + 1) / params.steps, float(np.mean(losses[-10:])))
    net.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"final_loss": float(np.mean(tail)) if tail else float("nan"), "first_loss": losses[0] if losses else None,
            "steps": params.steps}


def _masked_mse(torch, rec, target, mask):
    if rec.shape[-1] == 0:
        return torch.zeros(())
    err = ((rec - target) ** 2).mean(dim=-1)
    m = mask.float()
    return (err * m).sum() / m.sum().clamp(min=1.0)


# -- scoring ---------------------------------------------------------------------------------

@dataclass
class WindowErrors:
    """What scoring the target windows produced (see :func:`score_windows`)."""

    video: np.ndarray  # [N, Dv] squared error per feature
    audio: np.ndarray  # [N, Da]
    # modality -> [N] real experts per token the judged window's token used (mean over the
    # blocks and the three scoring passes); empty when the FFN blocks report no expert use
    # (fusion's own dense block) — and a modality the file lacks is left out
    experts: dict[str, np.ndarray] = field(default_factory=dict)


def reconstruction_errors(net: Any, video: np.ndarray, audio: np.ndarray, targets: np.ndarray | None = None,
                          *, segment: np.ndarray | None = None, batch: int = 512,
                          threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Squared error per feature of each target window, [N, Dv] and [N, Da] (see :func:`score_windows`)."""
    got = score_windows(net, video, audio, targets, segment=segment, batch=batch, threads=threads)
    return got.video, got.audio


def score_windows(net: Any, video: np.ndarray, audio: np.ndarray, targets: np.ndarray | None = None,
                  *, segment: np.ndarray | None = None, batch: int = 512, threads: int = 1) -> WindowErrors:
    """Squared error per feature of each target window, and the experts its tokens used.

    Each window is judged from its past context, twice: with both modalities hidden
    (next-window prediction) and with only the judged modality hidden (cross-modal
    prediction from the other one); the two errors are averaged.

    Expert use is read from the FFN blocks' ``last_stats["real_slots"]`` (shaped like the
    block's input, [B, L] here) at the last position — the judged window's video token in the
    video blocks, its audio token in the audio blocks — and averaged over the layers and the
    three forward passes (each of them is compute spent judging that window). With a batch
    budget (AnyExperts) a window's slots depend on the other windows in its batch, as in
    training; with the same windows and ``batch`` the result is deterministic.
    """
    T = _torch()
    torch = T.torch
    n = len(video)
    targets = np.arange(n) if targets is None else np.asarray(targets, np.int64)
    cfg = net.cfg
    v_all = torch.as_tensor(np.asarray(video, np.float32))
    a_all = torch.as_tensor(np.asarray(audio, np.float32))
    ev, ea = [], []
    spent: dict[str, list[np.ndarray]] = {"video": [], "audio": []}
    present = {"video": cfg.video_dim > 0, "audio": cfg.audio_dim > 0}
    net.eval()
    with torch.inference_mode(), limit_threads(threads):
        for s in range(0, len(targets), batch):
            idx, pad = sequences(n, targets[s:s + batch], cfg.context, segment)
            it = torch.as_tensor(idx)
            v, a, pad_t = v_all[it], a_all[it], torch.as_tensor(pad)
            B, L = idx.shape
            last = torch.zeros((B, L), dtype=torch.bool)
            last[:, -1] = True
            none = torch.zeros_like(last)
            used: dict[str, list[Any]] = {"video": [], "audio": []}
            rv_full, ra_full = net(v, a, last, last, pad_t)
            _last_slots(net, used)
            rv_x, _ = net(v, a, last, none if cfg.audio_dim else last, pad_t)
            _last_slots(net, used)
            _, ra_x = net(v, a, none if cfg.video_dim else last, last, pad_t)
            _last_slots(net, used)
            tv, ta = v[:, -1], a[:, -1]
            ev.append((0.5 * ((rv_full[:, -1] - tv) ** 2 + (rv_x[:, -1] - tv) ** 2)).numpy())
            ea.append((0.5 * ((ra_full[:, -1] - ta) ** 2 + (ra_x[:, -1] - ta) ** 2)).numpy())
            for m, got in used.items():
                if got and present[m]:
                    spent[m].append(torch.stack(got).float().mean(0).numpy())
    dv, da = cfg.video_dim, cfg.audio_dim
    experts = {m: np.concatenate(x).astype(np.float32) for m, x in spent.items() if x}
    if len(targets) == 0:
        experts = {m: np.zeros(0, np.float32) for m, ok in present.items() if ok and _reports_experts(net)}
    return WindowErrors(np.concatenate(ev) if ev else np.zeros((0, dv), np.float32),
                        np.concatenate(ea) if ea else np.zeros((0, da), np.float32), experts)


def _last_slots(net: Any, used: dict[str, list[Any]]) -> None:
    """Append each block's real slots of the last position ([B]) per modality, if it reports them."""
    for blk in net.blocks:
        for m, ffn in (("video", blk.ffn_v), ("audio", blk.ffn_a)):
            st = getattr(ffn, "last_stats", None)
            if isinstance(st, dict) and st.get("real_slots") is not None:
                used[m].append(st["real_slots"][..., -1])


def _reports_experts(net: Any) -> bool:
    return any(isinstance(getattr(blk.ffn_v, "last_stats", None), dict) for blk in net.blocks)


# -- checkpoints (safetensors + JSON, never pickle) ------------------------------------------

def to_bytes(net: Any, config: dict[str, Any]) -> bytes:
    """The state dict as safetensors bytes, with ``config`` (JSON) in its header metadata."""
    return state_bytes(net, {"kestrel": json.dumps(config, sort_keys=True)})


def from_bytes(blob: bytes, config: dict[str, Any], ffn_factory: FFNFactory | None = None) -> Any:
    """Rebuild the network from a checkpoint, refusing one it cannot faithfully load.

    ``config`` is the full config stored beside the weights (its ``net`` entry is the
    :class:`FusionConfig`). A checkpoint trained with another FFN type than ``ffn_factory``
    (or with one this Kestrel does not know) raises :class:`CheckpointError` — never a
    silent partial load.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    cfg = FusionConfig.from_dict(dict(config.get("net", {})))
    if ffn_factory is not None:
        refuse_other_ffn(cfg.ffn, ffn_factory, "anomaly model", "retrain the model")
    elif config.get("experts"):
        ffn_factory = stored_ffn_factory(cfg.ffn, config["experts"])
    elif cfg.ffn.startswith(("moe-topk", "anyexperts")):
        raise CheckpointError(f"this anomaly model's {cfg.ffn!r} blocks were saved without their expert settings "
                              f"(budget, slots per token), so it cannot be run as it was trained; retrain it.")
    elif ensure_known(cfg.ffn) or cfg.ffn not in _FFN:
        raise CheckpointError(f"this anomaly model was trained with {cfg.ffn!r} feed-forward blocks, which this "
                              f"Kestrel does not have (known: {', '.join(_FFN)}); retrain it.")
    try:
        state = load(bytes(blob))
        header = json.loads(header_metadata(bytes(blob)).get("kestrel", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"the stored anomaly model is damaged ({e}); retrain it.") from e
    if header != json.loads(json.dumps(config, sort_keys=True)):
        raise CheckpointError("the stored anomaly model's weights and config do not belong together; retrain it.")
    return load_checked(build_model(cfg, ffn_factory), state, "anomaly model")


def robust_z(x: np.ndarray, median: float, mad: float) -> np.ndarray:
    """(x − median) / (1.4826 · MAD): a z-score that a few outliers in the reference cannot inflate."""
    return (np.asarray(x, np.float64) - median) / max(1.4826 * mad, 1e-9)


def robust_stats(x: np.ndarray, floor: float = 1e-6) -> tuple[float, float]:
    """Median and MAD of ``x``; the MAD is floored (at 10% of the median) so that a very
    regular normal footage does not make every tiny deviation look huge."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return 0.0, 1.0
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    return med, max(mad, 0.1 * abs(med), floor)
