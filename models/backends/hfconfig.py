"""A user's transformers folder, shared by the backends: its config read before torch is
imported, the files it must hold beside config.json (weights, the image preprocessor's settings;
one check, so DETR and the image-text backends refuse a folder in the same words), and its
weights checked after loading (none left random, none foreign)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.catalogue import ModelError, ModelSpec


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_weights_and_preprocessor(spec: ModelSpec, folder: Path, model_type: str,
                                   preprocessing: str = "how images are resized and normalised for this model"
                                   ) -> None:
    """A ModelError naming what the folder of a ``model_type`` model lacks: its weights, or
    preprocessor_config.json (``preprocessing``: what it tells, for the message)."""
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"{spec.title}: {folder.name} has a {model_type} config but no weights "
                         f"({' or '.join(WEIGHT_FILES[::2])}).")
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelError(f"{spec.title}: {folder.name} lacks preprocessor_config.json ({preprocessing}); "
                         "copy it from where the model came from.")


def read_config(spec: ModelSpec, folder: Path, needs: str) -> dict[str, Any]:
    """config.json as a dict, or a ModelError naming what the folder must hold (``needs``)."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{spec.title}: {folder} has no config.json; pick the folder that holds config.json, "
                         f"{needs}.")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ModelError(f"{spec.title}: {cfg_file} is not a readable model config ({e}).") from e
    return cfg


#: how much of a model may be left at its random initialisation (or loaded from tensors the model
#: does not have) before the folder is refused: a checkpoint saved by another library version
#: may lack a buffer or two, never a real share of the weights
WEIGHT_TOLERANCE = 0.01
#: buffers that are counters or computed at construction, not learnt weights: checkpoints of other
#: library versions carry or lack them (the original DETR-ResNet-50 has 53 unused
#: ``num_batches_tracked``; older Llama-style checkpoints ``rotary_emb.inv_freq``)
COMPUTED_BUFFERS = ("position_ids", "num_batches_tracked", "inv_freq")


def check_loaded_weights(title: str, folder: Path, model: Any, info: dict[str, Any] | None, *,
                         tolerance: float = WEIGHT_TOLERANCE, ignore: tuple[str, ...] = COMPUTED_BUFFERS) -> None:
    """Refuse a transformers model whose folder did not provide its weights.

    ``from_pretrained`` fills every weight the folder lacks with random numbers and only logs a
    warning, so a folder of unrelated tensors "loads" into a model that produces noise. With
    ``output_loading_info=True`` it says which weights were missing, unexpected or of the wrong
    shape: more than ``tolerance`` of the model's parameters (by count of numbers) missing or
    mis-shaped, or more than ``tolerance`` of the folder's tensors unknown to the model, is a
    ModelError naming the folder.
    """
    info = info or {}
    state = model.state_dict()
    total = sum(int(t.numel()) for t in state.values()) or 1

    def keep(keys) -> list[str]:
        return [str(k) for k in keys or () if not any(s in str(k) for s in ignore)]

    missing = keep(info.get("missing_keys"))
    mismatched = keep(k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys") or ())
    unexpected = keep(info.get("unexpected_keys"))
    random = [k for k in dict.fromkeys(missing + mismatched) if k in state]
    random_share = sum(int(state[k].numel()) for k in random) / total
    unknown_share = len(unexpected) / max(1, len(state) - len(random) + len(unexpected))
    if random_share > tolerance:
        example = random[0]
        raise ModelError(f"{title}: the weights in {folder} do not fit its {type(model).__name__}: "
                         f"{random_share:.0%} of its parameters ({len(random)} tensors, e.g. {example}) are "
                         "missing or of the wrong shape and would be random. Pick the folder the model was "
                         "saved to (save_pretrained), not one of another model.")
    if unknown_share > tolerance:
        raise ModelError(f"{title}: {folder} holds {len(unexpected)} tensors its {type(model).__name__} does not "
                         f"have (e.g. {unexpected[0]}); these weights belong to another model. Pick the folder "
                         "the model was saved to (save_pretrained).")
