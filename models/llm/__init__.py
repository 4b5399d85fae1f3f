"""Chat backends behind one protocol (:mod:`models.llm.base`): the embedded GGUF model
(:mod:`.local`), any OpenAI-compatible server (:mod:`.openai_compat`), a local transformers
vision-language model (:mod:`.vlm`). Nothing heavy is imported here."""
from models.llm.base import ChatImage, LLMBackend, LLMError, Timing

__all__ = ["ChatImage", "LLMBackend", "LLMError", "Timing"]
