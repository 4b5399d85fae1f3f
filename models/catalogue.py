"""The model catalogue: data, one JSON file per model in ``models/catalogue/``.

Each entry names the model, its task, the backend class as ``module:Class``, where its
weights come from — files inside an installed package (found without importing it), or a
file/folder the user points at — its classes, thresholds and licence. Nothing here imports
torch, transformers or ultralytics: that happens in a backend's constructor, when a model
is actually loaded.
"""
from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from models.errors import KestrelError

log = logging.getLogger(__name__)

CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"
TASKS = ("detect", "faces", "vad", "asr", "ocr", "text-embed", "image-tags", "image-text", "chat", "vlm",
         "speaker-embed", "audio-tags", "audio-embed")


class ModelError(KestrelError):
    """A model cannot be used; str() names the model and says what to do."""


def set_offline_switches() -> None:
    """Keep every library off the network, before any of them is imported; and make ultralytics
    load .pt files weights-only whatever the environment says (a user's .pt is never unpickled
    freely, so ``ULTRALYTICS_SAFE_LOAD=0`` is overridden, not respected)."""
    for k, v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_VERBOSE": "False",
                 "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
                 "TORCH_HOME": os.environ.get("TORCH_HOME", ""),
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        if v:
            os.environ.setdefault(k, v)
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    task: str
    cls: str  # "module:Class"
    weights: dict[str, Any]  # {"package": ..., "module": ..., "files": [...]} or {"user": "file"|"folder", ...}
    classes: Any = None  # list of names, or the name of a built-in label map
    thresholds: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    licence: str = ""
    version: str = ""
    notes: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def user_supplied(self) -> bool:
        return "user" in self.weights

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        for k in ("name", "title", "task", "class", "weights"):
            if k not in d:
                raise ValueError(f"catalogue entry lacks {k!r}")
        if d["task"] not in TASKS:
            raise ValueError(f"unknown task {d['task']!r}")
        if ":" not in d["class"]:
            raise ValueError("class must be 'module:Class'")
        return cls(name=d["name"], title=d["title"], task=d["task"], cls=d["class"], weights=dict(d["weights"]),
                   classes=d.get("classes"), thresholds=dict(d.get("thresholds", {})),
                   device=d.get("device", "auto"), licence=d.get("licence", ""), version=str(d.get("version", "")),
                   notes=d.get("notes", ""), options=dict(d.get("options", {})))


@dataclass(frozen=True)
class Availability:
    available: bool
    where: str  # a path, or "" when not available
    message: str  # what to do when not available


@lru_cache(maxsize=1)
def load_catalogue() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for f in sorted(CATALOGUE_DIR.glob("*.json")):
        try:
            spec = ModelSpec.from_dict(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            log.error("catalogue entry %s is invalid: %s", f.name, e)
            continue
        out[spec.name] = spec
    return out


def get_spec(name: str) -> ModelSpec:
    cat = load_catalogue()
    if name not in cat:
        raise ModelError(f"There is no model called {name!r} in the catalogue "
                         f"(known: {', '.join(sorted(cat)) or 'none'}).")
    return cat[name]


def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it (some packages' __init__ breaks)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def locate(spec: ModelSpec, user_path: str | os.PathLike | None = None) -> Availability:
    """Where the weights are, or why they are not there (never downloads)."""
    w = spec.weights
    if spec.user_supplied:
        if not user_path:
            return Availability(False, "", f"{spec.title} needs weights you provide: use Models… to point "
                                            f"it at a local {w['user']} ({w.get('hint', '')}).".replace(" ()", ""))
        p = Path(user_path)
        if not p.exists():
            return Availability(False, "", f"{spec.title}: {p} does not exist; pick the {w['user']} again.")
        if w["user"] == "file" and not p.is_file():
            return Availability(False, "", f"{spec.title}: {p} is not a file.")
        if w["user"] == "folder" and not p.is_dir():
            return Availability(False, "", f"{spec.title}: {p} is not a folder.")
        pats = w.get("patterns")
        if pats and p.is_file() and not any(fnmatch.fnmatch(p.name, pat) for pat in pats):
            return Availability(False, "", f"{spec.title}: {p.name} is not one of {', '.join(pats)}.")
        return Availability(True, str(p), "")
    pkg = package_dir(w["module"])
    pip = w.get("pip") or f"pip install {w['package']}"
    if pkg is None:
        return Availability(False, "", f"{spec.title} comes with the Python package {w['package']}, which is "
                                        f"not installed: {pip}")
    for extra in w.get("extra_packages", []):
        if package_dir(extra["module"]) is None:
            return Availability(False, "", f"{spec.title} also needs the Python package {extra['package']}, "
                                            f"which is not installed: pip install {extra['package']}")
    missing = [f for f in w.get("files", []) if not (pkg / f).exists()]
    if missing:
        return Availability(False, "", f"{spec.title}: {w['package']} is installed but lacks {', '.join(missing)}; "
                                        f"reinstall it: pip install --force-reinstall {w['package']}")
    return Availability(True, str(pkg), "")


def pick_device(pref: str = "auto") -> str:
    """'cuda' or 'cpu' for a torch model under ``pref`` (:func:`models.devices.resolve`)."""
    from models import devices

    return devices.resolve(pref, "torch").kind


def load_model(name: str | ModelSpec, *, user_path: str | os.PathLike | None = None,
               device: str | None = None, **options: Any) -> Any:
    """Instantiate a backend: ``cls(spec, where, device, **options)``.

    ``device`` (auto/cpu/cuda; None: the process's preference, :mod:`models.devices`) is
    resolved for the model's runtime; the backend gets "cuda" or "cpu", and the loaded model
    carries the :class:`models.devices.Device` as ``device_info`` (its name and, when CUDA was
    asked for and the runtime cannot, the note that says so: provenance).

    Any failure — missing weights, a file that is not a model, a folder of the wrong
    architecture — becomes a ModelError naming the model and what to do.
    """
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    set_offline_switches()
    avail = locate(spec, user_path)
    if not avail.available:
        raise ModelError(avail.message)
    mod_name, _, cls_name = spec.cls.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"{spec.title}: its backend {spec.cls} cannot be imported ({e}). "
                         "Reinstall Kestrel's dependencies (bash .ci/setup).") from e
    from models import devices

    try:
        dev = devices.for_spec(spec, device)
    except ValueError as e:
        raise ModelError(f"{spec.title}: {e}.") from e
    on_gpu = (" Its load on CUDA failed: run it on the CPU (--device cpu, or 'run on: CPU' in Analyse Media)."
              if dev.kind == "cuda" else "")
    try:
        model = cls(spec, avail.where, dev.kind, **{**spec.options, **options})
    except ModelError as e:
        if not on_gpu:
            raise
        raise ModelError(f"{e}{on_gpu}") from e
    except MemoryError as e:
        raise ModelError(f"{spec.title}: not enough memory to load it.{on_gpu}") from e
    except Exception as e:  # a corrupt or foreign file, a CUDA driver error: every library raises its own type
        raise ModelError(f"{spec.title} could not be loaded from {avail.where}: {type(e).__name__}: {e}"
                         f"{on_gpu}") from e
    used = str(getattr(model, "device", dev.kind))  # "cpu", "cuda", "cuda:0", or ultralytics' "0"
    if dev.kind == "cuda" and used == "cpu":  # a backend that stayed on the CPU by itself
        dev = devices.Device("cpu", dev.runtime, dev.asked, f"cuda asked, cpu used: {spec.title} ran on the CPU")
    try:
        model.device_info = dev
    except AttributeError:  # a backend with __slots__: the device is then the backend's own
        pass
    return model


load = load_model  # the short name other modules use: load(spec, device=...)


def provenance_of(names: Iterable[str | None], pref: str | None = None) -> dict[str, Any]:
    """A run's device provenance when it used several catalogue models: the device each of
    ``names`` resolves to under ``pref`` (None: the process's preference), which is where
    models.catalogue.load_model puts it; "device" is cuda:0 when any of them ran there, and
    "device_note" says where CUDA was asked and the CPU used. Empty when none of ``names`` is in
    the catalogue (a remote chat server: its device is not Kestrel's to know). Never a cache key
    (core.store.project.find_run leaves these keys out). Models of the catalogue only."""
    from models.devices import for_spec

    devices: dict[str, str] = {}
    notes: list[str] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            d = for_spec(get_spec(name), pref)
        except (ModelError, ValueError):
            continue
        devices[name] = d.name
        if d.note:
            notes.append(f"{name}: {d.note}")
    if not devices:
        return {}
    out: dict[str, Any] = {"device": "cuda:0" if "cuda:0" in devices.values() else "cpu", "devices": devices}
    if notes:
        out["device_note"] = "; ".join(notes)
    return out
