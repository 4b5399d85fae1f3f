"""What Kestrel's own networks (:mod:`models.nn.fusion`, :mod:`models.nn.mmae`) share: the
checkpoint error, the lookup of feed-forward block types, stored-config checks, the training
settings both record, and the safetensors checkpoint plumbing (header metadata, a state dict
checked before it loads).

It sits between the FFN registry (:mod:`models.nn.ffn`) and the two nets; the mixtures of experts
(:mod:`models.nn.experts`) are imported only when a stored model names one. No torch at import time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from models.errors import KestrelError
from models.nn.ffn import _FFN, FFNFactory, ffn_name_of


class CheckpointError(KestrelError):
    """A stored model cannot be used here; ``str()`` says why and what to do."""


# -- feed-forward block types ----------------------------------------------------------------

def ensure_known(name: str) -> None:
    """The mixtures of experts register themselves when models.nn.experts is imported (no torch)."""
    if name not in _FFN and name.split("-")[0] in ("moe", "anyexperts"):
        import models.nn.experts  # noqa: F401


def ffn_factory(name: str) -> FFNFactory:
    ensure_known(name)
    try:
        return _FFN[name]
    except KeyError:
        raise CheckpointError(f"this Kestrel has no feed-forward block type {name!r} "
                              f"(known: {', '.join(_FFN)})") from None


def factory_for(name: str, given: FFNFactory | None = None) -> FFNFactory:
    """The factory a net of FFN type ``name`` is built with: ``given`` (whose registered name must
    be ``name``) or the registered one."""
    factory = given or ffn_factory(name)
    made = ffn_name_of(factory)
    if made != name:
        raise CheckpointError(f"the FFN factory given is {made!r} but the config says {name!r}")
    return factory


def refuse_other_ffn(stored: str, given: FFNFactory, what: str, retrain: str) -> None:
    """A checkpoint of ``stored`` FFN blocks is not loaded into ``given`` blocks (``what``: "anomaly
    model"; ``retrain``: "retrain the model", "retrain it")."""
    asked = ffn_name_of(given)
    if asked != stored:
        raise CheckpointError(f"this {what} was trained with {stored!r} feed-forward blocks, but {asked!r} blocks were "
                              f"asked for: {retrain} with {asked!r} blocks (or load it with {stored!r}).")


def stored_ffn_factory(name: str, experts: dict[str, Any]) -> FFNFactory:
    """The factory a checkpoint's stored expert config (``factory.config``) makes, checked
    against the FFN name it recorded — so a non-default mixture (``anyexperts-1a2b3c4d``)
    loads in a process that never built one, and a config edited apart from its weights is
    refused instead of building another network."""
    from models.nn.experts import ExpertsConfig, ExpertsConfigError, make_ffn_factory

    try:
        factory = make_ffn_factory(ExpertsConfig.from_dict(dict(experts)))
    except (ExpertsConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"the stored model's expert configuration is invalid ({e}); retrain it.") from e
    made = ffn_name_of(factory)
    if made != name:
        raise CheckpointError(f"the stored model's expert configuration describes {made!r} blocks but its network "
                              f"was built with {name!r} blocks; retrain it.")
    return factory


# -- stored configs --------------------------------------------------------------------------

def stored_config(cls: Any, d: Any, arch: str, version: int, what: str, retrain: str = "retrain it") -> Any:
    """The config dataclass ``cls`` a checkpoint stored as ``d``; refuses another architecture or
    layout version (``what``: "model", "multimodal model"; ``retrain``: what the analyst should do)."""
    if d.get("arch") != arch:
        raise CheckpointError(f"the stored model is a {d.get('arch')!r}, not a {arch}; retrain it.")
    if int(d.get("arch_version", -1)) != version:
        raise CheckpointError(f"the stored {what} has layout version {d.get('arch_version')}; this Kestrel "
                              f"reads version {version}: {retrain}.")
    return config_from_fields(cls, d, what)


def config_from_fields(cls: Any, d: Any, what: str) -> Any:
    """``cls(**d)`` for a stored config dataclass, or a CheckpointError naming the stored ``what``."""
    names = {f.name for f in fields(cls)}
    missing = names - set(d)
    if missing:
        raise CheckpointError(f"the stored {what}'s config lacks {', '.join(sorted(missing))}; retrain it.")
    try:
        return cls(**{k: d[k] for k in names})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the stored {what}'s config is invalid ({e}); retrain it.") from e


@dataclass(frozen=True)
class TrainSettings:
    """The optimiser settings both nets train with (each net's ``TrainParams`` adds its own)."""

    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    aux_weight: float = 0.01  # weight of FFN modules' aux_loss (mixture-of-experts balance)
    threads: int = 1  # torch threads while training/scoring (0: torch's default); see models.loaded.limit_threads


# -- the nets --------------------------------------------------------------------------------

def param_count(net: Any) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def total_aux_loss(net: Any) -> Any:
    """The sum of the ``aux_loss`` tensors the net's FFN modules set in ``forward``, or None."""
    import torch

    terms = [m.aux_loss for m in net.modules() if m is not net and torch.is_tensor(getattr(m, "aux_loss", None))]
    return sum(terms) if terms else None


def train_step(net: Any, opt: Any, sched: Any, loss: Any, aux_weight: float) -> float:
    """One optimiser step on ``loss`` plus ``aux_weight`` times the FFN modules' aux_loss (gradients
    clipped to norm 1); returns the loss it stepped on."""
    import torch

    aux = net.collect_aux_loss()
    if aux is not None:
        loss = loss + aux_weight * aux
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


# -- checkpoints (safetensors + JSON, never pickle) ------------------------------------------

def state_bytes(net: Any, metadata: dict[str, str]) -> bytes:
    """The net's state dict as safetensors bytes with ``metadata`` in the header."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    return save(state, metadata=metadata)


def header_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header, read without torch."""
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or n > len(blob) - 8:
        raise ValueError("bad safetensors header")
    return json.loads(blob[8:8 + n]).get("__metadata__", {}) or {}


def load_checked(net: Any, state: dict[str, Any], what: str) -> Any:
    """Load ``state`` into ``net`` (strictly) and put it in eval mode, or refuse a state dict that
    does not fit the net's tensors with a CheckpointError naming the stored ``what``."""
    own = net.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"the stored {what} does not fit a {net.cfg.ffn!r} network of this shape "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped tensors, e.g. "
            f"{sorted(missing | unexpected | set(shapes))[:3]}); retrain it.")
    net.load_state_dict(state, strict=True)
    net.eval()
    return net
