"""The one protocol every chat backend implements: stream tokens, stop on request.

Why one protocol: the chat session must not care whether the words come from the embedded
GGUF model, an Ollama/llama.cpp/vLLM server on the network, or a vision-language model in
a local folder. Each backend takes OpenAI-style ``messages`` (role/content dicts, content a
string) plus the encoded frames as :class:`ChatImage` (bytes and their stream time), and
yields text pieces as they are produced. A backend that cannot see pixels says so
(``sees_images``) and the session gives it the frames' perception as text instead.

Stopping: ``stream`` checks ``stop_event`` (anything with ``is_set()``: a
``threading.Event`` or the job state's adapter) between tokens; ``stop()`` does the same
from another thread. Whatever has been yielded before the stop is the partial answer.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from models.errors import KestrelError


class LLMError(KestrelError):
    """The backend cannot answer; str() says what happened and what to do, for the chat panel."""


class StopLike(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class ChatImage:
    """One encoded frame as the receiving model gets it: image bytes and the stream time."""

    time: float
    data: bytes
    mime: str = "image/jpeg"

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass
class Timing:
    """What the last ``stream`` call cost, measured by the backend.

    ``transfer_s``: sending the request (connection and upload; 0 in-process);
    ``first_token_s``: from the request being sent to the first token;
    ``inference_s``: from the request being sent to the last token;
    ``bytes_sent``: the request body (images included).
    """

    transfer_s: float = 0.0
    first_token_s: float = 0.0
    inference_s: float = 0.0
    bytes_sent: int = 0
    tokens: int = 0
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class LLMBackend(Protocol):
    name: str
    sees_images: bool  # False: give it the frames' perception as text
    english_only: bool  # the chat panel warns when a question is in another language
    n_ctx: int  # context window in tokens (the session trims the log to fit)
    last_timing: Timing

    def stream(self, messages: Sequence[dict[str, Any]], images: Sequence[ChatImage] | None = None,
               stop_event: StopLike | None = None, *, max_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]: ...

    def stop(self) -> None: ...


class _Flag:
    """A stop flag that needs no threading primitive (set from any thread, read by the stream)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


def stopped(own: _Flag, stop_event: StopLike | None) -> bool:
    return own.is_set() or (stop_event is not None and stop_event.is_set())


def estimate_tokens(text: str) -> int:
    """A cheap, slightly pessimistic token count (≈3.5 characters per token for English)."""
    return int(len(text) / 3.5) + 1


def messages_tokens(messages: Sequence[dict[str, Any]]) -> int:
    n = 0
    for m in messages:
        c = m.get("content", "")
        n += 4 + (estimate_tokens(c) if isinstance(c, str) else sum(
            estimate_tokens(p.get("text", "")) for p in c if isinstance(p, dict)))
    return n


def mmss(t: float) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour), whole seconds: how a frame's time is written for the
    model, the form it is asked to cite (core.timefmt.clock; models/ does not import core)."""
    m, s = divmod(int(round(max(0.0, t))), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
