"""Object detection with a user's own DETR-family model folder (Hugging Face transformers format).

Why user-supplied only: no DETR/RT-DETR checkpoint ships in any installable package, so the
analyst points Kestrel at a local folder (a ``save_pretrained`` output or a Hugging Face cache
snapshot) holding ``config.json``, the weights and ``preprocessor_config.json``. Everything
loads with ``local_files_only=True``: nothing is ever downloaded. The folder's architecture is
checked from its config before any weights are read, so a wrong folder (a BERT, an image
classifier) gets a message saying what was found and what is expected.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.ssd import class_ids_for, clip_box, fit_within, image_batch
from models.catalogue import ModelError, ModelSpec
from models.types import Detection

log = logging.getLogger(__name__)

#: transformers model types of the DETR family: set-prediction detectors whose image processor
#: has ``post_process_object_detection``. (Other object-detection types, e.g. text detectors for
#: OCR, post-process differently and are not accepted.)
DETR_FAMILY = ("detr", "conditional_detr", "deformable_detr", "dab-detr", "rt_detr", "rt_detr_v2",
               "d_fine", "deimv2", "lw_detr", "rf_detr", "table-transformer", "yolos")
TIMM_BY_DEFAULT = ("detr", "conditional_detr", "deformable_detr", "dab-detr", "table-transformer")


class DETRDetector:
    """``Detector`` for a DETR-family transformers folder; labels from ``config.id2label``.

    Options: ``score`` (default ``spec.thresholds["score"]``, else 0.5), ``classes`` (names
    to keep), ``batch_size`` (images per forward pass), ``max_side`` (larger frames are shrunk
    to this first; the processor resizes to ~800-1333 pixels anyway).
    """

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, score: float | None = None,
                 classes: Iterable[str] | None = None, batch_size: int = 4, max_side: int = 2048) -> None:
        folder = Path(where)
        model_type = _check_folder(spec, folder)
        import torch
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        try:
            model, info = AutoModelForObjectDetection.from_pretrained(str(folder), local_files_only=True,
                                                                      output_loading_info=True)
            processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except ImportError as e:  # e.g. a checkpoint whose backbone is a timm model
            raise ModelError(f"{spec.title}: the {model_type} model in {folder.name} needs a package that is "
                             f"not installed ({e}).") from e
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelError(f"{spec.title}: the {model_type} model in {folder} could not be loaded "
                             f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300]}).") from e
        check_loaded_weights(spec.title, folder, model, info)
        if not hasattr(processor, "post_process_object_detection"):
            raise ModelError(f"{spec.title}: {folder.name}'s image processor ({type(processor).__name__}) cannot "
                             "turn the model's output into boxes.")
        self._torch = torch
        self.spec = spec
        self.device = device
        self._model = model.eval().to(device)
        self._processor = processor
        self.model_type = model_type
        self.labels: dict[int, str] = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.classes: tuple[str, ...] = tuple(self.labels[k] for k in sorted(self.labels))
        self.score = float(score if score is not None else spec.thresholds.get("score", 0.5))
        self.class_filter = class_ids_for(classes, self.labels, spec.title)
        self.batch_size = max(1, int(batch_size))
        self.max_side = int(max_side)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, boxes in that image's pixels, best first."""
        imgs = image_batch(images)
        out: list[list[Detection]] = []
        for i in range(0, len(imgs), self.batch_size):
            chunk = imgs[i:i + self.batch_size]
            sizes = [img.shape[:2] for img in chunk]  # boxes come back scaled to these, shrunk or not
            small = [fit_within(img, self.max_side)[0] for img in chunk]
            inputs = self._processor(images=small, return_tensors="pt").to(self.device)
            with self._torch.inference_mode():
                outputs = self._model(**inputs)
            results = self._processor.post_process_object_detection(outputs, threshold=self.score,
                                                                    target_sizes=sizes)
            out += [self._parse(r, w, h) for r, (h, w) in zip(results, sizes)]
        return out

    def _parse(self, r: dict[str, Any], w: int, h: int) -> list[Detection]:
        dets = []
        for box, s, c in zip(r["boxes"].tolist(), r["scores"].tolist(), r["labels"].tolist()):
            c = int(c)
            if self.class_filter is not None and c not in self.class_filter:
                continue
            b = clip_box(box, w, h)
            if b[2] > b[0] and b[3] > b[1]:
                dets.append(Detection(box=b, label=self.labels.get(c, str(c)), score=float(s), class_id=c))
        return sorted(dets, key=lambda d: -d.score)


from models.backends.hfconfig import check_loaded_weights, read_config  # noqa: E402
from models.backends.hfconfig import check_weights_and_preprocessor  # noqa: E402


def _check_folder(spec: ModelSpec, folder: Path) -> str:
    """The folder's model type, or a ModelError saying what is wrong with it (no torch needed)."""
    cfg = read_config(spec, folder, "the weights and preprocessor_config.json")
    model_type = str(cfg.get("model_type", ""))
    archs = ", ".join(cfg.get("architectures") or []) or "no architecture listed"
    if model_type not in DETR_FAMILY:
        raise ModelError(f"{spec.title}: {folder.name} holds a '{model_type or 'unknown'}' model ({archs}); "
                         f"expected a DETR-family object detector (model_type one of {', '.join(DETR_FAMILY)}, "
                         "e.g. DetrForObjectDetection or RTDetrForObjectDetection).")
    check_weights_and_preprocessor(spec, folder, model_type)
    if _needs_timm(cfg) and importlib.util.find_spec("timm") is None:
        raise ModelError(f"{spec.title}: this {model_type} model uses a timm backbone, and the timm package is "
                         "not installed: pip install timm")
    return model_type


def _needs_timm(cfg: dict[str, Any]) -> bool:
    """Whether the model's backbone is a timm model (transformers then needs the timm package).

    Saved configs name it in ``backbone_config``; older DETR-style configs (e.g. the original
    facebook/detr-resnet-50) have none and default to a timm ResNet unless told otherwise.
    """
    bb = cfg.get("backbone_config")
    if isinstance(bb, dict):
        return bb.get("model_type") == "timm_backbone"
    return cfg.get("model_type") in TIMM_BY_DEFAULT and bool(cfg.get("use_timm_backbone", True))
