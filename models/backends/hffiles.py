"""The files a user's transformers folder must hold beside config.json (read by
:mod:`models.backends.hfconfig`) before a DETR or image-text backend imports torch: weights and
the image preprocessor's settings. One check, so both backends refuse a folder in the same words.
"""
from __future__ import annotations

from pathlib import Path

from models.catalogue import ModelError, ModelSpec

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_weights_and_preprocessor(spec: ModelSpec, folder: Path, model_type: str) -> None:
    """A ModelError naming what the folder of a ``model_type`` model lacks: its weights, or
    preprocessor_config.json (how images are resized and normalised for it)."""
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(f"{spec.title}: {folder.name} has a {model_type} config but no weights "
                         f"({' or '.join(WEIGHT_FILES[::2])}).")
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelError(f"{spec.title}: {folder.name} lacks preprocessor_config.json (how images are resized "
                         "and normalised for this model); copy it from where the model came from.")
