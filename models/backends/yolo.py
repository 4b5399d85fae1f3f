"""Object detection with a user's own Ultralytics YOLO model (.pt or .onnx).

Why user-supplied only: no COCO YOLO checkpoint ships in any package Kestrel can install, so
the catalogue entry points at a file the analyst picks. Ultralytics is a helpful library with
side effects a desktop app cannot have — at import it probes DNS, may ``pip install`` missing
packages, writes a settings file, and ``torch.load`` of a .pt unpickles arbitrary code.
``import_ultralytics()`` switches all of that off before the first import, and every other
Kestrel module that needs ultralytics (the tracker) goes through it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np

from models.backends.ssd import class_ids_for, clip_box, image_batch
from models.catalogue import ModelError, ModelSpec, set_offline_switches
from models.types import Detection

log = logging.getLogger(__name__)

#: Ultralytics tasks whose results carry axis-aligned boxes (segment/pose add masks/keypoints).
BOX_TASKS = ("detect", "segment", "pose")


def _kestrel_config_dir() -> Path:
    return Path(os.environ.get("KESTREL_CONFIG_DIR") or Path.home() / ".config" / "kestrel")


def ultralytics_config_dir() -> Path:
    """Where ultralytics keeps its settings.json: ``<Kestrel config>/Ultralytics``, never the CWD.

    Ultralytics appends "Ultralytics" to YOLO_CONFIG_DIR itself, so that variable names the
    Kestrel folder. A YOLO_CONFIG_DIR the user set is respected.
    """
    return Path(os.environ.get("YOLO_CONFIG_DIR") or _kestrel_config_dir()).expanduser() / "Ultralytics"


@lru_cache(maxsize=1)
def import_ultralytics() -> ModuleType:
    """Import ultralytics with its network, auto-install and pickle behaviour switched off.

    - YOLO_OFFLINE / YOLO_AUTOINSTALL (set_offline_switches): no DNS probe, no pip at run time;
    - ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS: its requirement checks never even try pip (a missing
      optional package then fails as a plain ImportError, which Kestrel reports);
    - ULTRALYTICS_SAFE_LOAD: .pt checkpoints load with ``weights_only=True`` and an allow-list
      of model classes, so a hostile .pt cannot run code. Forced on whatever the environment
      says: ultralytics reads it once, at import, into ``SAFE_LOAD``, so the flag is also set on
      its modules when ultralytics was imported first (or with the variable at 0);
    - YOLO_CONFIG_DIR: its settings file goes to Kestrel's config folder; ``sync`` goes off;
    - thread counts: its import sets OMP_NUM_THREADS=1 and cv2.setNumThreads(0) for the whole
      process (a training-time choice), which would make every other model in Kestrel run on
      one core; they are put back.
    """
    set_offline_switches()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(_kestrel_config_dir()))
    os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    omp = os.environ.get("OMP_NUM_THREADS")
    # keep_thread_counts imports torch first, so torch sizes its thread pool before
    # ultralytics sets OMP_NUM_THREADS=1.
    with keep_thread_counts():
        import ultralytics
        from ultralytics.utils import SAFE_LOAD, SETTINGS
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)

    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)  # no analytics/crash reports; also written to its settings file
    if not SAFE_LOAD:
        _force_safe_load()
    return ultralytics


def _force_safe_load() -> None:
    """Turn ultralytics' weights-only loading on in the modules that read the flag."""
    import importlib

    for name in ("ultralytics.utils", "ultralytics.nn.tasks"):
        mod = importlib.import_module(name)
        if hasattr(mod, "SAFE_LOAD"):
            mod.SAFE_LOAD = True
    log.info("ultralytics was imported without its safe checkpoint loading; Kestrel switched it on")


@contextlib.contextmanager
def keep_thread_counts() -> Iterator[None]:
    """Undo ultralytics' process-wide thread settings: at import it calls cv2.setNumThreads(0),
    and at a predictor's first CPU run ``torch.set_num_threads(cpu_count - 1)`` (1 on two cores)."""
    import cv2
    import torch

    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    try:
        yield
    finally:
        if cv2.getNumThreads() != cv_threads:
            cv2.setNumThreads(cv_threads)
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


class YOLODetector:
    """``Detector`` for an Ultralytics YOLO model file (detect, segment or pose task).

    Class names come from the model itself. Options: ``score`` (minimum confidence, default
    ``spec.thresholds["score"]``), ``classes`` (names to keep), ``iou`` (NMS IoU), ``imgsz``
    (inference size; default: the model's own), ``batch_size`` (images per predict call).
    """

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, score: float | None = None,
                 classes: Iterable[str] | None = None, iou: float = 0.7, imgsz: int | None = None,
                 batch_size: int = 8) -> None:
        path = Path(where)
        _check_model_file(spec, path)
        import_ultralytics()
        from ultralytics import YOLO

        if path.suffix.lower() == ".pt":
            _check_weights_only(spec, path)
        try:
            self._model = YOLO(str(path))
            task = self._model.task
        except Exception as e:
            if "references types outside" in str(e):  # ultralytics' weights-only load refused the file
                raise ModelError(_not_weights_only(spec, path, [])) from e
            raise ModelError(f"{spec.title}: {path.name} is not a model ultralytics can load "
                             f"({_clean(e)}).") from e
        if task not in BOX_TASKS:
            raise ModelError(f"{spec.title}: {path.name} is a YOLO '{task}' model; Kestrel needs one that "
                             f"finds boxes ({', '.join(BOX_TASKS)}).")
        self.spec = spec
        self.path = path
        self.device = "cpu" if device == "cpu" else "0" if device == "cuda" else device
        self.score = float(score if score is not None else spec.thresholds.get("score", 0.25))
        self.iou = float(iou)
        self.imgsz = imgsz
        self.batch_size = max(1, int(batch_size))
        self.class_filter: frozenset[int] | None = None
        # An .onnx file is only opened at the first predict: run one now, so a broken file
        # fails here, at load time, with the model's name on the error.
        try:
            with keep_thread_counts():
                self._predict([np.zeros((64, 64, 3), np.uint8)])
            names = self._model.names
        except Exception as e:
            raise ModelError(f"{spec.title}: {path.name} could not be run ({_clean(e)}).") from e
        self.labels: dict[int, str] = {int(k): str(v) for k, v in dict(names).items()}
        self.classes: tuple[str, ...] = tuple(self.labels[k] for k in sorted(self.labels))
        self.class_filter = class_ids_for(classes, self.labels, spec.title)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, boxes in that image's pixels, best first."""
        imgs = image_batch(images)
        out: list[list[Detection]] = []
        with keep_thread_counts():
            for i in range(0, len(imgs), self.batch_size):
                chunk = imgs[i:i + self.batch_size]
                for img, r in zip(chunk, self._predict(chunk)):
                    out.append(self._parse(r, img.shape[1], img.shape[0]))
        return out

    def _predict(self, rgb: list[np.ndarray]) -> list:
        bgr = [np.ascontiguousarray(a[..., ::-1]) for a in rgb]  # ultralytics treats arrays as OpenCV BGR
        kw = {"imgsz": self.imgsz} if self.imgsz else {}
        cls = sorted(self.class_filter) if self.class_filter is not None else None
        return self._model.predict(bgr, conf=self.score, iou=self.iou, classes=cls, device=self.device,
                                   verbose=False, save=False, **kw)

    def _parse(self, r, w: int, h: int) -> list[Detection]:
        if r.boxes is None or len(r.boxes) == 0:
            return []
        xyxy = r.boxes.xyxy.cpu().numpy()
        conf = r.boxes.conf.cpu().numpy()
        cls = r.boxes.cls.cpu().numpy().astype(int)
        dets = []
        for box, s, c in zip(xyxy, conf, cls):
            b = clip_box(box, w, h)
            if b[2] > b[0] and b[3] > b[1]:
                dets.append(Detection(box=b, label=self.labels.get(int(c), str(c)), score=float(s), class_id=int(c)))
        return sorted(dets, key=lambda d: -d.score)


def _check_model_file(spec: ModelSpec, path: Path) -> None:
    """Reject what is plainly not a model before ultralytics sees it (its errors can be cryptic)."""
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise ModelError(f"{spec.title}: {path.name} is neither a .pt nor an .onnx file.")
    if path.stat().st_size == 0:
        raise ModelError(f"{spec.title}: {path.name} is empty.")
    # Every checkpoint torch has written since 1.6 is a zip archive; a truncated or
    # foreign file fails this check instantly instead of confusing the unpickler.
    if suffix == ".pt" and not zipfile.is_zipfile(path):
        raise ModelError(f"{spec.title}: {path.name} is not a PyTorch checkpoint (not a complete zip archive: "
                         f"truncated, or another kind of file renamed .pt).")


#: what a .pt may reference besides tensors: the data types in ultralytics' checkpoints, and (below)
#: classes of torch/ultralytics layers. Anything else (os.system, builtins.exec, subprocess…) is
#: refused before the file is unpickled; ultralytics' weights-only load then enforces its own list.
_DATA_GLOBALS = frozenset({
    "builtins.getattr", "builtins.set", "collections.OrderedDict", "numpy.dtype", "numpy.ndarray",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct", "pathlib.PosixPath", "pathlib.WindowsPath",
    "pathlib._local.PosixPath", "pathlib._local.WindowsPath", "ultralytics.utils.IterableSimpleNamespace",
    "ultralytics.yolo.utils.IterableSimpleNamespace"})
_CLASS_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.", "ultralytics.utils.loss.", "ultralytics.utils.tal.",
                   "ultralytics.yolo.", "torchvision.transforms.", "numpy.dtypes.")


def _check_weights_only(spec: ModelSpec, path: Path) -> None:
    """Refuse a .pt whose pickle references anything but weights and model classes, without
    unpickling it (torch scans the opcodes): Kestrel loads user weights weights-only."""
    import sys

    import torch

    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:  # torch < 2.6: ultralytics' loader is the only guard (SAFE_LOAD is forced)
        return
    try:
        names = scan(str(path))
    except Exception as e:  # not a torch zip, or a broken pickle: refused, never unpickled
        raise ModelError(f"{spec.title}: {path.name} is not a readable PyTorch checkpoint ({_clean(e)}).") from e
    bad = []
    for name in names:
        if name in _DATA_GLOBALS:
            continue
        if name.startswith(_CLASS_PREFIXES):
            module, _, attr = name.rpartition(".")
            mod = sys.modules.get(module)  # never import what a file names; unloaded ones are ultralytics' call
            if mod is None or isinstance(getattr(mod, attr, None), type):
                continue
        bad.append(name)
    if bad:
        raise ModelError(_not_weights_only(spec, path, bad))


def _not_weights_only(spec: ModelSpec, path: Path, bad: list[str]) -> str:
    what = f" ({', '.join(sorted(bad)[:3])}{', …' if len(bad) > 3 else ''})" if bad else ""
    return (f"{spec.title}: {path.name} holds Python code or objects besides model weights{what}, and Kestrel "
            "loads .pt files weights-only so that nothing in them can run. Use the .pt that ultralytics "
            "training saved, or export the model to .onnx (yolo export model=FILE format=onnx).")


def _clean(e: BaseException) -> str:
    """One readable line from a library exception (ultralytics adds emoji and advice for its CLI)."""
    text = " ".join(str(e).replace("ERROR ❌️", "").split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:300]}"
