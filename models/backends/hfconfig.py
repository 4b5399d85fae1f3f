"""Reading a user's transformers folder config before torch is imported (shared by backends)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.catalogue import ModelError, ModelSpec


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
