"""The registry of feed-forward block types that Kestrel's own networks are built from.

A checkpoint records its blocks' name and loading looks the factory up here. It sits below
both :mod:`models.nn.fusion` (which builds networks from it) and :mod:`models.nn.experts` (whose
mixtures register themselves in it), so neither has to import the other to register. No torch
at import time.
"""
from __future__ import annotations

from typing import Any, Callable

FFNFactory = Callable[[int, int], Any]  # (dim, hidden) -> torch.nn.Module mapping [..., dim] -> [..., dim]

_FFN: dict[str, FFNFactory] = {}


def register_ffn(name: str, factory: FFNFactory) -> FFNFactory:
    """Make an FFN type known by name (checkpoints record the name, loading looks it up)."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid FFN name {name!r}")
    _FFN[name] = factory
    return factory


def ffn_names() -> tuple[str, ...]:
    return tuple(_FFN)


def ffn_name_of(factory: FFNFactory) -> str:
    """The name a factory is registered under (a checkpoint records it)."""
    for name, f in _FFN.items():
        if f is factory:
            return name
    named = getattr(factory, "ffn_name", None)
    if named:
        return str(named)
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


def dense_ffn(dim: int, hidden: int) -> Any:
    """The default feed-forward block: Linear → GELU → Linear."""
    from torch import nn

    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


register_ffn("dense", dense_ffn)
