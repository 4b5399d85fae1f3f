"""A vision-language model from a local transformers folder (bring your own: LLaVA, Qwen2-VL…).

Why: no VLM ships in any package here (shared/MODELS.md), so Kestrel loads the one the user
points at — a folder with ``config.json``, the weights and the processor files, loaded with
``local_files_only`` so nothing reaches for the hub — and gives it the decoded low-bitrate
frames as real images. Tokens are produced by a plain greedy loop over the model's forward
pass with its KV cache, so they stream without a helper thread and stop between tokens.

Kestrel's tests run this path on a tiny LLaVA with random weights built from a config: that
proves the plumbing (loading, images in, tokens out, stop), never the quality.
"""
from __future__ import annotations

import inspect
import io
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from models.backends.hfconfig import check_loaded_weights
from models.catalogue import ModelError, ModelSpec
from models.llm.base import ChatImage, LLMError, StopLike, Timing, _Flag, mmss, stopped

log = logging.getLogger(__name__)


class TransformersVLM:
    """``LLMBackend`` over ``AutoModelForImageTextToText`` + ``AutoProcessor`` from ``folder``."""

    sees_images = True
    english_only = False

    def __init__(self, folder: str | Path | ModelSpec, where: str | None = None, device: str = "cpu", *,
                 max_images: int = 4, n_ctx: int | None = None, threads: int | None = None) -> None:
        # direct: TransformersVLM(folder); through the catalogue: cls(spec, where, device, **options)
        folder = Path(where) if isinstance(folder, ModelSpec) else Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} holds no config.json; pick a Hugging Face vision-language model folder "
                             "(config.json, weights, processor and tokenizer files).")
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as e:
            raise ModelError(f"A local vision-language model needs torch and transformers: {e}") from e
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        try:
            self.processor: Any = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            self.model: Any
            self.model, info = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True,
                                                                           output_loading_info=True)
        except Exception as e:  # OSError, ValueError for an unknown architecture, safetensors errors
            raise ModelError(f"The vision-language model in {folder} could not be loaded: "
                             f"{type(e).__name__}: {e}") from e
        check_loaded_weights("The vision-language model", folder, self.model, info)
        self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        self.model.eval().to(self.device)
        self.name = folder.name
        self.folder = folder
        self.max_images = int(max_images)
        cfg = getattr(self.model.config, "text_config", self.model.config)
        self.n_ctx = int(n_ctx or getattr(cfg, "max_position_embeddings", 4096) or 4096)
        self.last_timing = Timing()
        self._stop = _Flag()
        # transformers 5 renames past_key_values to cache; take whichever this version has
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def stop(self) -> None:
        self._stop.set()

    def _inputs(self, messages: Sequence[dict[str, Any]], images: list[ChatImage]) -> Any:
        from PIL import Image

        pics = [Image.open(io.BytesIO(im.data)).convert("RGB") for im in images]
        text = "\n\n".join(m["content"] for m in messages
                           if m.get("role") in ("system", "user") and isinstance(m.get("content"), str)).strip()
        tok = getattr(self.processor, "tokenizer", None)
        template = getattr(self.processor, "chat_template", None) or getattr(tok, "chat_template", None)
        if template:
            content: list[dict[str, Any]] = []
            for im in images:
                content += [{"type": "text", "text": f"Frame at [{mmss(im.time)}]:"}, {"type": "image"}]
            content.append({"type": "text", "text": text})
            prompt = self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                        add_generation_prompt=True, tokenize=False)
        else:
            mark = getattr(self.processor, "image_token", None) or "<image>"
            frames = "".join(f"Frame at [{mmss(im.time)}]: {mark}\n" for im in images)
            prompt = f"USER: {frames}{text}\nASSISTANT:"
        kw: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if pics:
            kw["images"] = pics
        return self.processor(**kw).to(self.device)

    def stream(self, messages: Sequence[dict[str, Any]], images: Sequence[ChatImage] | None = None,
               stop_event: StopLike | None = None, *, max_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]:
        """Greedy tokens (``temperature`` is ignored: answers about evidence should not be sampled)."""
        torch = self._torch
        self._stop.clear()
        timing = self.last_timing = Timing()
        imgs = list(images or [])[-self.max_images:]
        t0 = time.perf_counter()
        try:
            inputs = self._inputs(messages, imgs)
        except Exception as e:
            raise LLMError(f"{self.name} could not take this prompt and {len(imgs)} frame(s): "
                           f"{type(e).__name__}: {e}") from e
        n_in = int(inputs["input_ids"].shape[1])
        if n_in + max_tokens > self.n_ctx:
            raise LLMError(f"The question, its context and the frames need {n_in} tokens; {self.name} takes "
                           f"{self.n_ctx}: ask about a shorter span or send fewer frames.")
        tok = getattr(self.processor, "tokenizer", self.processor)
        eos = _eos_ids(self.model, tok)
        ids: list[int] = []
        text = ""
        try:
            with torch.inference_mode():
                out = self.model(**inputs, use_cache=True)
                mask = inputs["attention_mask"]
                for _ in range(int(max_tokens)):
                    if stopped(self._stop, stop_event):
                        timing.notes.append("stopped")
                        break
                    nxt = int(out.logits[0, -1].argmax())
                    if nxt in eos:
                        break
                    ids.append(nxt)
                    full = tok.decode(ids, skip_special_tokens=True)
                    piece, text = full[len(text):], full
                    if piece:
                        if not timing.tokens:
                            timing.first_token_s = time.perf_counter() - t0
                        timing.tokens += 1
                        yield piece
                    mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                    past = getattr(out, "cache", None) or out.past_key_values
                    out = self.model(input_ids=torch.tensor([[nxt]], device=self.device), attention_mask=mask,
                                     use_cache=True, **{self._cache_kw: past})
        except RuntimeError as e:
            raise LLMError(f"{self.name} failed while answering: {e}") from e
        finally:
            timing.inference_s = time.perf_counter() - t0


def _eos_ids(model: Any, tok: Any) -> set[int]:
    out: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None), tok):
        v = getattr(src, "eos_token_id", None)
        if isinstance(v, int):
            out.add(v)
        elif isinstance(v, (list, tuple)):
            out.update(int(x) for x in v)
    return out
