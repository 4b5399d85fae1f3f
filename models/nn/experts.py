"""Mixture-of-experts feed-forward blocks for Kestrel's own networks, including AnyExperts
(arXiv 2511.18314): a per-token number of expert slots, driven by a predicted importance.

Three blocks with one interface (``[..., dim] -> [..., dim]``, any leading shape, flattened
to tokens), made by :func:`make_ffn_factory` and plugged into :mod:`models.nn.fusion` through
its ``register_ffn`` (names ``"moe-topk"`` and ``"anyexperts"`` are registered on import):

- ``dense``: Linear → GELU → Linear (same state-dict layout as fusion's ``dense_ffn``);
- ``topk``: a router (softmax over ``n_experts``), the top ``k`` experts per token with
  renormalised gates, and the Switch-Transformer load-balancing loss;
- ``dynamic`` (AnyExperts): a small importance predictor gives each token ``w ∈ (0, 1)``;
  the token gets ``s ∈ [k_min, k_max]`` slots, the batch at most ``budget × tokens`` in all;
  each slot is a real expert or a **virtual** one (zero cost: ``zero`` outputs 0, ``copy``
  returns the input, ``const`` a learned vector), at most ``floor(rho_max × s)`` of them per
  token; the router's top candidates fill the slots under that cap.

How the allocation works (vectorised, no loop over tokens): a token *wants*
``w × (k_max − k_min)`` slots above ``k_min``; each extra slot unit ``j`` of token ``t`` gets
the priority ``w_t (k_max − k_min) − j`` (what is still wished); the units with priority ≥ ½
are the rounded wish, and when the batch's wishes exceed the budget only the top
``budget × N − k_min × N`` units by priority are granted (a largest-remainder trim). So the
batch never exceeds its budget, every token keeps ``k_min``, and a more important token never
gets fewer slots than a less important one.

How the importance predictor learns (the allocation itself is discrete): as in the paper,
the block's output is fused with the importance, ``h' = h + alpha · w · h`` where ``h`` is
the mixture's output, so the task loss tells ``w`` where amplifying the experts' work helps.
An auxiliary *calibration* loss ``(mean w − w*)²`` with ``w* = (budget − k_min)/(k_max −
k_min)`` keeps the average wish at the budget (so the budget trims little and ``w`` does not
saturate, where ranking tokens would stop working). Balance: the Switch loss over the real
experts. ``aux_loss = balance_weight · balance + importance_weight · calibration``; fusion's
training multiplies it by ``TrainParams.aux_weight`` (0.01, the Switch paper's weight).
``balance_weight = 4``: at 1 the anomaly network's mixtures collapsed (one expert over 60% of
the gate mass) in 47 of 50 dynamic and 22 of 50 top-2 trainings in bench/anyexperts.py; at 4,
in 31 and 20 of 50, the task metrics moving within their noise (a later 100-model run: 63 and 37).

Why the defaults: ``budget = 1.4`` slots per token against top-2's 2: 30% fewer real
activations. bench/anyexperts.py measured it against fixed top-2 (paired over seeds): anomaly
F1 −0.8% (s.e. 2.4%, 20 seeds), network AUC +0.9%; MMAE clustering NMI +2.3%, but
reconstruction ~10% worse on training and unseen shots alike (10 seeds): the small
autoencoder needs the activations the budget takes away. Pass ``budget=2.0`` to spend
top-2's slots. ``expert_hidden = hidden // 2`` makes two experts cost one dense FFN.
``rho_max = 0.25``, not the paper's 0.2: with ``k_max = 4`` a cap of ``floor(0.2 × s)`` is 0
for every ``s ≤ 4`` and the virtual experts could never be chosen (such a config is refused
with a message saying so).

Every block records ``last_stats`` (detached) of its last forward: real slots per token (a
tensor of the input's leading shape, so callers can map it to time and modality), virtual
share, the per-expert load, and a collapse flag: when one expert carries more than
``collapse_share`` of the real gate mass it sets ``collapsed`` and warns once
(:class:`ExpertCollapseWarning`). torch is imported only inside functions.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from models.errors import KestrelError
from models.nn.ffn import FFNFactory, ffn_names, register_ffn

KINDS = ("dense", "topk", "dynamic")
VIRTUAL_KINDS = ("zero", "copy", "const")
BASE_NAMES = {"dense": "dense", "topk": "moe-topk", "dynamic": "anyexperts"}
# Fields that change what a trained block computes (a checkpoint's name depends on them);
# the others (loss weights, noise, collapse thresholds) only steer training or reporting.
ARCH_FIELDS = {
    "dense": (),
    "topk": ("n_experts", "expert_hidden", "k"),
    "dynamic": ("n_experts", "expert_hidden", "k_min", "k_max", "rho_max", "budget", "virtual", "alpha",
                "importance_hidden"),
}
_EPS = 1e-9
BATCHED_PAIRS = 3072  # routed (token, expert) pairs up to which all experts run as one batched matmul


class ExpertsConfigError(KestrelError, ValueError):
    """An expert configuration that cannot work; ``str()`` says why and what to change."""


class ExpertCollapseWarning(KestrelError, RuntimeWarning):
    """One expert took most of a mixture's work (the others are barely trained). A warning, not
    raised; rooted in KestrelError so that, turned into an error (``-W error``), it reads as a sentence."""


# -- config ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpertsConfig:
    """A feed-forward block's kind and shape; the name a checkpoint records derives from it.

    ``budget`` is the average slots (real + virtual) per token over a batch — ``dynamic``
    only; ``topk`` always uses ``k`` real experts, ``dense`` one FFN of width ``hidden``.
    ``expert_hidden = 0`` means ``hidden // 2`` of the host network.
    """

    kind: str = "dynamic"
    n_experts: int = 8
    expert_hidden: int = 0
    k: int = 2  # experts per token ("topk")
    k_min: int = 1  # slots per token ("dynamic")
    k_max: int = 4
    rho_max: float = 0.25  # cap on a token's virtual share of slots: floor(rho_max × s)
    budget: float = 1.4  # average slots per token over a batch (top-2 spends 2)
    virtual: tuple[str, ...] = ("zero", "copy")
    alpha: float = 0.5  # residual fusion h' = h + alpha · w · h
    importance_hidden: int = 16
    balance_weight: float = 4.0
    importance_weight: float = 0.1
    router_noise: float = 0.0  # std of Gaussian jitter on router logits, training only
    collapse_share: float = 0.6
    collapse_min_tokens: int = 32  # fewer tokens: too few to call a collapse

    def __post_init__(self) -> None:
        if isinstance(self.virtual, str) or not isinstance(self.virtual, (tuple, list)):
            raise ExpertsConfigError(f"virtual must be a list of virtual expert kinds, not {self.virtual!r}")
        object.__setattr__(self, "virtual", tuple(self.virtual))
        self._validate()

    def _validate(self) -> None:
        bad = ExpertsConfigError
        if self.kind not in KINDS:
            raise bad(f"unknown expert block kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.n_experts < 1:
            raise bad(f"n_experts={self.n_experts}: a mixture needs at least one real expert")
        if self.expert_hidden < 0 or self.importance_hidden < 1:
            raise bad("expert_hidden must be ≥ 0 (0: half the host's hidden width) and importance_hidden ≥ 1")
        if not 1 <= self.k <= self.n_experts:
            raise bad(f"k={self.k} experts per token is impossible with {self.n_experts} experts "
                      f"(1 ≤ k ≤ n_experts)")
        if not 1 <= self.k_min <= self.k_max:
            raise bad(f"slots per token must satisfy 1 ≤ K_min ≤ K_max; got K_min={self.k_min}, K_max={self.k_max}")
        if not math.isfinite(self.budget) or self.budget < self.k_min:
            raise bad(f"a budget of {self.budget:g} slots per token is below K_min={self.k_min}: every token "
                      f"needs at least K_min slots, so no batch could be served; raise the budget to ≥ "
                      f"{self.k_min} or lower k_min")
        if not (0.0 <= self.rho_max < 1.0):
            raise bad(f"rho_max={self.rho_max:g} is outside [0, 1): it is the largest share of a token's slots "
                      f"that virtual (zero-cost) experts may fill, and every token needs a real expert")
        unknown = [v for v in self.virtual if v not in VIRTUAL_KINDS]
        if unknown or len(set(self.virtual)) != len(self.virtual):
            raise bad(f"virtual experts {list(self.virtual)!r}: each must be one of {', '.join(VIRTUAL_KINDS)}, "
                      f"at most once")
        nv = len(self.virtual)
        cap = self.virtual_cap(self.k_max)
        if self.k_max - cap > self.n_experts:  # s − cap(s) never decreases, so K_max is the worst case
            fits = max(s for s in range(1, self.k_max) if s - self.virtual_cap(s) <= self.n_experts)
            raise bad(f"K_max={self.k_max} slots cannot be filled: a token has {self.n_experts} real experts and "
                      f"at most {cap} virtual slot(s) (floor(rho_max={self.rho_max:g} × {self.k_max}) capped by "
                      f"{nv} virtual experts); lower k_max to {fits} or add experts")
        if nv and self.rho_max > 0 and cap == 0:
            raise bad(f"rho_max={self.rho_max:g} allows no virtual slot for any token (floor({self.rho_max:g} × "
                      f"K_max={self.k_max}) = 0), so the virtual experts {list(self.virtual)} could never be "
                      f"used; raise rho_max to ≥ {1 / self.k_max:g}, raise k_max, or set virtual=() for none")
        if self.alpha < 0 or self.balance_weight < 0 or self.importance_weight < 0 or self.router_noise < 0:
            raise bad("alpha, balance_weight, importance_weight and router_noise must be ≥ 0")
        if not (0.0 < self.collapse_share <= 1.0) or self.collapse_min_tokens < 1:
            raise bad("collapse_share must be in (0, 1] and collapse_min_tokens ≥ 1")

    def virtual_cap(self, slots: int) -> int:
        """Most virtual slots a token with ``slots`` slots may use."""
        return min(len(self.virtual), int(math.floor(self.rho_max * slots + _EPS)))

    def importance_target(self) -> float:
        """Mean importance at which the tokens' rounded wishes just spend the budget."""
        span = self.k_max - self.k_min
        if span == 0:
            return 0.5
        return min(0.95, max(0.05, (self.budget - self.k_min) / span))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["virtual"] = list(self.virtual)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExpertsConfig":
        names = {f.name for f in fields(cls)}
        extra = set(d) - names
        if extra:
            raise ExpertsConfigError(f"unknown expert config field(s) {', '.join(sorted(extra))}; "
                                     f"known: {', '.join(sorted(names))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ExpertsConfigError(f"invalid expert config ({e})") from e


# -- the blocks (classes built when torch is first needed) -----------------------------------

@lru_cache(maxsize=1)
def _torch() -> SimpleNamespace:
    import torch
    import torch.nn.functional as F
    from torch import nn

    def mlp(dim: int, hidden: int):
        return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def ranks(scores):
        """Rank of each entry within its row, 0 = largest (ties: lower index first)."""
        order = torch.argsort(scores, dim=-1, descending=True, stable=True)
        r = torch.empty_like(order)
        return r.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))

    class StatsMixin:
        """Shared bookkeeping: ``last_stats`` of the last forward and the collapse check."""

        def _init_stats(self, cfg: ExpertsConfig, name: str) -> None:
            self.cfg = cfg
            self.ffn_name = name
            self.last_stats: dict[str, Any] = {}
            self.collapsed = False
            self._warned = False
            self.aux_loss = None

        def _record(self, lead, real, total, gates_real, assign, importance=None) -> None:
            """real/total: slots per token [N]; gates_real/assign: [N, E] (gate mass, chosen)."""
            with torch.no_grad():
                n, e = assign.shape
                mass = gates_real.float().sum(0)
                share = mass / mass.sum().clamp_min(_EPS)
                load = assign.float().sum(0) / assign.float().sum().clamp_min(1.0)
                tot = total.float().sum().clamp_min(1.0)
                scalars = torch.stack([real.float().mean() if n else share.new_zeros(()),
                                       total.float().mean() if n else share.new_zeros(()),
                                       (tot - real.float().sum()) / tot, share.max()])
                real_mean, slots_mean, vshare, max_share = scalars.tolist()  # the one host sync
            check = n >= self.cfg.collapse_min_tokens and e >= 2
            self.collapsed = bool(check and max_share > self.cfg.collapse_share)
            if self.collapsed and not self._warned:
                self._warned = True
                top = int(share.argmax())
                warnings.warn(
                    f"mixture-of-experts collapse in a {self.ffn_name!r} block: expert {top} carries "
                    f"{max_share:.0%} of the real expert load (> {self.cfg.collapse_share:.0%}) over {n} tokens, "
                    f"the other {e - 1} are barely trained. The load-balancing loss should spread it; if this "
                    f"persists raise balance_weight (now {self.cfg.balance_weight:g}) or TrainParams.aux_weight.",
                    ExpertCollapseWarning, stacklevel=3)
            self.last_stats = {
                "kind": self.cfg.kind, "tokens": n,
                "real_per_token": real_mean, "slots_per_token": slots_mean, "virtual_share": vshare,
                "real_slots": real.detach().to(torch.int16).reshape(lead),
                "total_slots": total.detach().to(torch.int16).reshape(lead),
                "importance": None if importance is None else importance.detach().reshape(lead),
                "load": load, "gate_share": share, "max_share": max_share, "collapsed": self.collapsed,
            }

    class DenseFFN(StatsMixin, nn.Sequential):
        """Linear → GELU → Linear; the state-dict layout of fusion's ``dense_ffn``."""

        def __init__(self, cfg: ExpertsConfig, dim: int, hidden: int, name: str = "dense") -> None:
            nn.Sequential.__init__(self, nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            self._init_stats(cfg, name)

        def forward(self, x):
            y = nn.Sequential.forward(self, x)
            lead = x.shape[:-1]
            ones = torch.ones(lead.numel(), dtype=torch.int16, device=x.device)
            assign = torch.ones(lead.numel(), 1, dtype=torch.bool, device=x.device)
            self._record(lead, ones, ones, assign.float(), assign)
            return y

    class Routed(StatsMixin, nn.Module):
        """Real experts, a router and the token dispatch shared by the two mixtures."""

        def __init__(self, cfg: ExpertsConfig, dim: int, hidden: int, n_virtual: int, name: str) -> None:
            nn.Module.__init__(self)
            self._init_stats(cfg, name)
            eh = cfg.expert_hidden or max(1, hidden // 2)
            self.experts = nn.ModuleList(mlp(dim, eh) for _ in range(cfg.n_experts))
            self.router = nn.Linear(dim, cfg.n_experts + n_virtual)

        def _logits(self, xf):
            logits = self.router(xf).float()
            if self.training and self.cfg.router_noise > 0:
                logits = logits + self.cfg.router_noise * torch.randn_like(logits)
            return logits

        def _dispatch(self, xf, assign, gates):
            """Σ_e gate[t, e] · expert_e(x_t) over the chosen (t, e): every expert runs only on
            the tokens routed to it. Up to ``BATCHED_PAIRS`` (token, expert) pairs, all experts
            at once (:meth:`_dispatch_batched`); above, a loop over experts (the same numbers)."""
            if int(assign.sum()) <= BATCHED_PAIRS:
                return self._dispatch_batched(xf, assign, gates)
            return self._dispatch_loop(xf, assign, gates)

        def _dispatch_batched(self, xf, assign, gates):
            """The experts' weights stacked, each expert's tokens packed into its row of a
            [E, most tokens any expert got, dim] batch, two batched matmuls, and the rows
            unpacked: a few large ops instead of ~10 small ones per expert. The padding is
            the load imbalance (the balancing loss keeps it small). bench/experts_dispatch.py
            (CPU, one thread, forward + backward): 0.6–0.8× the loop's time up to 512 tokens,
            0.9–1.0× at 1,400–2,900 pairs, 1.1–1.4× from 4,096 pairs on: hence the threshold."""
            n_e = len(self.experts)
            exp, tok = assign.t().nonzero(as_tuple=True)  # grouped by expert, tokens ascending
            counts = torch.bincount(exp, minlength=n_e)
            cap = int(counts.max()) if tok.numel() else 0
            if cap == 0:
                return xf * 0
            slot = torch.arange(tok.numel(), device=xf.device) - (torch.cumsum(counts, 0) - counts)[exp]
            first = [m[0] for m in self.experts]
            second = [m[2] for m in self.experts]
            w1 = torch.stack([m.weight for m in first]).transpose(1, 2)  # [E, dim, hidden]
            b1 = torch.stack([m.bias for m in first])[:, None]
            w2 = torch.stack([m.weight for m in second]).transpose(1, 2)  # [E, hidden, dim]
            b2 = torch.stack([m.bias for m in second])[:, None]
            packed = xf.new_zeros(n_e, cap, xf.shape[1]).index_put((exp, slot), xf.index_select(0, tok))
            hid = F.gelu(torch.baddbmm(b1, packed, w1))
            out = torch.baddbmm(b2, hid, w2)[exp, slot]
            out = out * gates[tok, exp][:, None].to(out.dtype)
            return out.new_zeros(xf.shape[0], out.shape[-1]).index_add(0, tok, out)

        def _dispatch_loop(self, xf, assign, gates):
            """The same sum as a loop over experts, each running once on its tokens."""
            y = None
            for e, expert in enumerate(self.experts):
                idx = assign[:, e].nonzero(as_tuple=True)[0]
                if idx.numel() == 0:
                    continue
                out = expert(xf.index_select(0, idx))
                out = out * gates.index_select(0, idx)[:, e, None].to(out.dtype)
                if y is None:
                    y = out.new_zeros(xf.shape[0], out.shape[-1])
                y = y.index_add(0, idx, out)
            return xf * 0 if y is None else y

        def _balance(self, probs_real, assign):
            """Switch-Transformer loss E · Σ_e f_e · P_e (1 when perfectly spread)."""
            f = assign.float().sum(0) / assign.float().sum().clamp_min(1.0)
            return probs_real.shape[-1] * (f * probs_real.mean(0)).sum()

    class TopKFFN(Routed):
        """Fixed top-k mixture: each token uses its router's k best experts."""

        def __init__(self, cfg: ExpertsConfig, dim: int, hidden: int, name: str = "moe-topk") -> None:
            super().__init__(cfg, dim, hidden, 0, name)

        def forward(self, x):
            lead, d = x.shape[:-1], x.shape[-1]
            xf = x.reshape(-1, d)
            probs = F.softmax(self._logits(xf), dim=-1)
            top_p, top_i = probs.topk(self.cfg.k, dim=-1)
            gates = torch.zeros_like(probs).scatter(1, top_i, top_p / top_p.sum(-1, keepdim=True).clamp_min(_EPS))
            assign = torch.zeros_like(probs, dtype=torch.bool).scatter(1, top_i, True)
            y = self._dispatch(xf, assign, gates)
            self.aux_loss = self.cfg.balance_weight * self._balance(probs, assign)
            k = torch.full((xf.shape[0],), self.cfg.k, dtype=torch.int16, device=x.device)
            self._record(lead, k, k, gates.detach(), assign)
            return y.reshape(*lead, d).to(x.dtype)

    class AnyExpertsFFN(Routed):
        """AnyExperts: importance → slots in [k_min, k_max] under a batch budget; real or
        virtual experts fill them, virtual ones capped at floor(rho_max × slots) per token."""

        def __init__(self, cfg: ExpertsConfig, dim: int, hidden: int, name: str = "anyexperts") -> None:
            super().__init__(cfg, dim, hidden, len(cfg.virtual), name)
            self.importance = nn.Sequential(nn.Linear(dim, cfg.importance_hidden), nn.GELU(),
                                            nn.Linear(cfg.importance_hidden, 1))
            self.const = nn.Parameter(torch.zeros(dim)) if "const" in cfg.virtual else None
            caps = [cfg.virtual_cap(s) for s in range(cfg.k_max + 1)]
            self.register_buffer("_caps", torch.tensor(caps, dtype=torch.long), persistent=False)

        def allocate(self, w):
            """Slots per token [N] (long) from importances [N]: k_min each, plus extra units
            by largest remaining wish, at most budget × N in all (no loop over tokens)."""
            c, n = self.cfg, w.shape[0]
            span = c.k_max - c.k_min
            base = torch.full((n,), c.k_min, dtype=torch.long, device=w.device)
            if span == 0 or n == 0:
                return base
            extra = int(math.floor(c.budget * n + _EPS)) - c.k_min * n
            pri = w.float()[:, None] * span - torch.arange(span, device=w.device, dtype=torch.float32)
            wanted = pri >= 0.5  # rounded wish: round(w · span) units
            granted = torch.zeros(n * span, dtype=torch.bool, device=w.device)
            top = pri.masked_fill(~wanted, float("-inf")).flatten().topk(min(extra, n * span)).indices
            granted[top] = True
            return base + (granted.view(n, span) & wanted).sum(1)

        def route(self, probs, slots):
            """Chosen real [N, E] and virtual [N, V] candidates: the top ``slots`` of each row,
            with no more virtual ones than the token's cap (then the next real ones). One sort
            per row: walking it in rank order, the real candidates come in their own rank order."""
            e = self.cfg.n_experts
            order = torch.argsort(probs, dim=-1, descending=True, stable=True)
            is_v = order >= e  # [N, C], in rank order
            pos = torch.arange(probs.shape[-1], device=probs.device)
            v = torch.minimum((is_v & (pos < slots[:, None])).sum(1), self._caps[slots])
            seen_v = is_v.cumsum(1)  # virtual candidates up to and including this rank
            seen_r = pos + 1 - seen_v
            take = torch.where(is_v, seen_v <= v[:, None], seen_r <= (slots - v)[:, None])
            chosen = torch.zeros_like(take).scatter_(1, order, take)
            return chosen[:, :e], chosen[:, e:]

        def forward(self, x):
            c = self.cfg
            lead, d = x.shape[:-1], x.shape[-1]
            xf = x.reshape(-1, d)
            w = torch.sigmoid(self.importance(xf).float()).squeeze(-1)
            slots = self.allocate(w.detach())
            probs = F.softmax(self._logits(xf), dim=-1)
            real, virt = self.route(probs.detach(), slots)
            chosen = torch.cat([real, virt], dim=1)
            gates = probs * chosen
            gates = gates / gates.sum(-1, keepdim=True).clamp_min(_EPS)
            e = c.n_experts
            y = self._dispatch(xf, real, gates[:, :e])
            for j, kind in enumerate(c.virtual):  # zero-cost experts: no FLOPs beyond a scale
                g = gates[:, e + j, None].to(y.dtype)
                if kind == "copy":
                    y = y + g * xf
                elif kind == "const":
                    y = y + g * self.const.to(y.dtype)
            y = y * (1.0 + c.alpha * w[:, None]).to(y.dtype)  # residual fusion h + alpha·w·h
            probs_real = probs[:, :e] / probs[:, :e].sum(-1, keepdim=True).clamp_min(_EPS)
            calib = (w.mean() - c.importance_target()) ** 2 if w.numel() else w.sum()
            self.aux_loss = c.balance_weight * self._balance(probs_real, real) + c.importance_weight * calib
            self._record(lead, real.sum(1), slots, gates[:, :e].detach(), real, w)
            return y.reshape(*lead, d).to(x.dtype)

    return SimpleNamespace(torch=torch, DenseFFN=DenseFFN, TopKFFN=TopKFFN, AnyExpertsFFN=AnyExpertsFFN,
                           ranks=ranks)


def build_ffn(cfg: ExpertsConfig, dim: int, hidden: int, name: str | None = None) -> Any:
    """A fresh block of ``cfg.kind`` mapping ``[..., dim] -> [..., dim]``."""
    T = _torch()
    cls = {"dense": T.DenseFFN, "topk": T.TopKFFN, "dynamic": T.AnyExpertsFFN}[cfg.kind]
    return cls(cfg, dim, hidden, name or ffn_name_for(cfg))


# -- factories and registration --------------------------------------------------------------

def ffn_name_for(cfg: ExpertsConfig) -> str:
    """``dense``, ``moe-topk`` or ``anyexperts`` for the default shape; otherwise the base name
    and a digest of the fields that change what the block computes (``anyexperts-1f3a9c2e``),
    so a checkpoint of another shape is refused by name, not by a tensor-shape mismatch."""
    base = BASE_NAMES[cfg.kind]
    arch = ARCH_FIELDS[cfg.kind]
    mine, default = cfg.to_dict(), ExpertsConfig(kind=cfg.kind).to_dict()
    if all(mine[f] == default[f] for f in arch):
        return base
    blob = json.dumps({f: mine[f] for f in arch}, sort_keys=True).encode()
    return f"{base}-{hashlib.sha1(blob).hexdigest()[:8]}"


_FACTORIES: dict[ExpertsConfig, FFNFactory] = {}


def make_ffn_factory(cfg: ExpertsConfig, *, register: bool = True) -> FFNFactory:
    """``(dim, hidden) -> block`` for fusion's ``ffn_factory``; it carries ``ffn_name`` and
    ``config`` (a dict, for provenance). Mixtures are registered with fusion under their name
    when no factory has it yet (so a checkpoint naming it loads in this process); ``dense``
    never replaces fusion's own registration — its weights load into either."""
    cached = _FACTORIES.get(cfg)
    if cached is not None:
        return cached
    name = ffn_name_for(cfg)

    def factory(dim: int, hidden: int) -> Any:
        return build_ffn(cfg, dim, hidden, name)

    factory.ffn_name = name  # type: ignore[attr-defined]
    factory.config = cfg.to_dict()  # type: ignore[attr-defined]
    factory.__qualname__ = f"make_ffn_factory.<{name}>"
    _FACTORIES[cfg] = factory
    if register and cfg.kind != "dense" and name not in ffn_names():
        register_ffn(name, factory)
    return factory


TOPK_FACTORY = make_ffn_factory(ExpertsConfig(kind="topk"))
ANYEXPERTS_FACTORY = make_ffn_factory(ExpertsConfig(kind="dynamic"))


# -- reporting -------------------------------------------------------------------------------

def expert_stats(net: Any) -> dict[str, Any]:
    """The last forward's expert usage over every expert block inside ``net``.

    ``real_per_token``: real expert activations per token (token-weighted over blocks);
    ``virtual_share``: virtual slots / all slots; ``slots``: each block's real-slot tensor
    (the leading shape of its input); ``modules``: their names; ``collapsed``: names of
    blocks whose last forward looked collapsed; ``load``: each block's per-expert load.
    """
    names, slots, loads, collapsed = [], [], [], []
    tokens = real = total = 0.0
    for name, m in net.named_modules():
        st = getattr(m, "last_stats", None)
        if not isinstance(st, dict) or not st or "real_slots" not in st:
            continue
        n = st["tokens"]
        names.append(name or "<root>")
        slots.append(st["real_slots"])
        loads.append([float(v) for v in st["load"].tolist()])
        if st["collapsed"]:
            collapsed.append(name or "<root>")
        tokens += n
        real += st["real_per_token"] * n
        total += st["slots_per_token"] * n
    return {
        "modules": names, "tokens": int(tokens),
        "real_per_token": real / tokens if tokens else 0.0,
        "virtual_share": (total - real) / total if total else 0.0,
        "slots": slots, "load": loads, "collapsed": collapsed,
    }
