"""Image-text match probabilities from a user's own BLIP-ITM, CLIP or SigLIP folder (transformers format).

Why user-supplied only: no image-text checkpoint ships in any installable package, so the analyst
points Kestrel at a local ``save_pretrained`` folder or Hugging Face cache snapshot; everything loads
with ``local_files_only=True``. How each family turns its output into a probability:

- BLIP-ITM (as in the FOCUS paper): softmax of the ITM head's two logits, index 1 ("match").
- SigLIP: sigmoid of its logit (``scale * cos + bias``): the model was trained with exactly this
  per-pair sigmoid loss, so it is already a match probability.
- CLIP: softmax over [query, "a photo"] of the scaled cosines, i.e. sigmoid(scale * (cos_q - cos_ref)).
  CLIP's raw cosine has no calibrated zero: some frames are close to any text. Contrasting with a
  neutral prompt cancels that per-frame offset and needs no fitted constant, which a logistic on
  the scaled logit would.

The folder's architecture is checked from its config before weights load, and weights missing from
the checkpoint (a BLIP captioning model has no ITM head) are an error, never a random head.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.hfconfig import check_loaded_weights
from models.backends.ssd import fit_within, image_batch
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

#: family -> (accepted config model_type, the transformers class it is loaded with)
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "blip": (("blip",), "BlipForImageTextRetrieval"),
    "clip": (("clip",), "CLIPModel"),
    "siglip": (("siglip",), "SiglipModel"),
}
NEUTRAL = "a photo"


class ImageTextMatcher:
    """``match(images, text) -> float probabilities [n]`` for one text against RGB images.

    Options: ``family`` ("blip" | "clip" | "siglip", from the catalogue entry), ``batch_size``,
    ``max_side`` (huge frames are shrunk first; every processor resizes to ~224-384 anyway),
    ``neutral`` (CLIP's reference prompt).
    """

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, family: str = "",
                 batch_size: int = 8, max_side: int = 1024, neutral: str = NEUTRAL) -> None:
        if family not in FAMILIES:
            raise ModelError(f"{spec.title}: the catalogue entry must set options.family to one of "
                             f"{', '.join(FAMILIES)} (got {family!r}).")
        folder = Path(where)
        model_type = _check_folder(spec, folder, family)
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer

        cls = getattr(transformers, FAMILIES[family][1])
        try:
            model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise ModelError(f"{spec.title}: the {model_type} model in {folder} could not be loaded "
                             f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300]}). It needs config.json, "
                             "the weights, the tokenizer files and preprocessor_config.json.") from e
        missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
        if missing:
            raise ModelError(f"{spec.title}: {folder.name} lacks weights for {len(missing)} parameters (e.g. "
                             f"{missing[0]}); it is not a complete {FAMILIES[family][1]} checkpoint"
                             + (" — a BLIP captioning or VQA model has no ITM head; use an ITM one such as "
                                "blip-itm-base-coco." if family == "blip" else "."))
        check_loaded_weights(spec.title, folder, model, info)  # mis-shaped or foreign tensors
        self._torch = torch
        self.spec, self.family, self.model_type = spec, family, model_type
        self.device = device
        self._model = model.eval().to(device)
        self._tok, self._proc = tokenizer, processor
        self.batch_size = max(1, int(batch_size))
        self.max_side = int(max_side)
        self.neutral = neutral
        text_cfg = getattr(model.config, "text_config", model.config)
        self.max_tokens = int(min(getattr(text_cfg, "max_position_embeddings", 64) or 64,
                                  getattr(tokenizer, "model_max_length", 512) or 512, 512))

    def _text(self, texts: list[str]) -> dict[str, Any]:
        if self.family == "siglip":  # SigLIP pools the last position: it was trained on max-length padding
            enc = self._tok(texts, padding="max_length", truncation=True, max_length=self.max_tokens,
                            return_tensors="pt")
        else:
            enc = self._tok(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def match(self, images: Sequence[np.ndarray], text: str) -> np.ndarray:
        """Probability that each image matches ``text``, float32 ``[len(images)]``."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("match() needs a non-empty text")
        imgs = [fit_within(img, self.max_side)[0] for img in image_batch(images)]
        torch = self._torch
        out = []
        texts = [text, self.neutral] if self.family == "clip" else [text]
        enc = self._text(texts)
        with torch.inference_mode():
            for i in range(0, len(imgs), self.batch_size):
                chunk = imgs[i:i + self.batch_size]
                pix = self._proc(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
                n = len(chunk)
                if self.family == "blip":
                    t = {k: v.expand(n, -1) for k, v in enc.items()}
                    logits = self._model(input_ids=t["input_ids"], attention_mask=t.get("attention_mask"),
                                         pixel_values=pix, use_itm_head=True).itm_score
                    p = torch.softmax(logits.float(), dim=1)[:, 1]
                else:
                    logits = self._model(pixel_values=pix, **enc).logits_per_image.float()  # [n, texts]
                    p = torch.softmax(logits, dim=1)[:, 0] if self.family == "clip" else torch.sigmoid(logits[:, 0])
                out.append(p.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


from models.backends.hfconfig import read_config  # noqa: E402
from models.backends.hfconfig import check_weights_and_preprocessor  # noqa: E402


def _check_folder(spec: ModelSpec, folder: Path, family: str) -> str:
    """The folder's model type, or a ModelError saying what was found and what is expected (no torch)."""
    want_types, want_cls = FAMILIES[family]
    cfg = read_config(spec, folder, "the weights, the tokenizer and preprocessor_config.json")
    model_type = str(cfg.get("model_type", ""))
    archs = [str(a) for a in cfg.get("architectures") or []]
    if model_type not in want_types:
        raise ModelError(f"{spec.title}: {folder.name} holds a '{model_type or 'unknown'}' model "
                         f"({', '.join(archs) or 'no architecture listed'}); expected a {want_cls} "
                         f"(model_type {' or '.join(want_types)}).")
    if family == "blip" and archs and want_cls not in archs:
        raise ModelError(f"{spec.title}: {folder.name} is a BLIP {', '.join(archs)}, which has no image-text "
                         "matching head; FOCUS needs BlipForImageTextRetrieval (e.g. blip-itm-base-coco).")
    check_weights_and_preprocessor(spec, folder, model_type)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")):
        raise ModelError(f"{spec.title}: {folder.name} has no tokenizer files (tokenizer.json, vocab.txt, "
                         "vocab.json or spiece.model).")
    return model_type
