"""Any OpenAI-compatible chat server by URL: Ollama, llama.cpp's server, llama-cpp-python's, vLLM.

Why plain ``http.client``: one POST and a server-sent-events stream need no SDK, and the
standard library keeps every failure in our hands — connection refused, a server that stops
answering, an HTML page or a proxy's error instead of JSON — each turned into one clear
sentence for the chat panel. Ollama and llama.cpp accept images, not video, so the encoded
frames go as image parts (``data:`` URLs), each preceded by its timestamp in the text.

The API key comes from an environment variable (``KESTREL_LLM_API_KEY`` by default) or the
OS keyring (the optional ``keyring`` package, service "kestrel", user = the server URL). It is
never written to the project, never logged, never shown in ``repr``. Nothing leaves the
machine unless the user configured a server.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import time
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from models.errors import KestrelError
from models.llm.base import ChatImage, LLMError, StopLike, Timing, _Flag, mmss, stopped

log = logging.getLogger(__name__)

KEY_ENV = "KESTREL_LLM_API_KEY"
KEYRING_SERVICE = "kestrel"


def resolve_api_key(base_url: str, env: str = KEY_ENV, service: str = KEYRING_SERVICE) -> str | None:
    """The key for ``base_url``: the environment variable first, then the OS keyring (if the
    ``keyring`` package is installed and has one); None when neither has one."""
    key = os.environ.get(env)
    if key:
        return key
    try:
        import keyring  # optional
    except ImportError:
        return None
    try:
        return keyring.get_password(service, base_url) or None
    except Exception as e:  # no backend, a locked keychain…: behave as if there were no key
        log.info("keyring unavailable (%s)", type(e).__name__)
        return None


def store_api_key(base_url: str, key: str, service: str = KEYRING_SERVICE) -> None:
    """Keep a key in the OS keyring (never in the project); LLMError if there is no keyring."""
    try:
        import keyring
        keyring.set_password(service, base_url, key)
    except ImportError as e:
        raise LLMError(f"No keyring here: pip install keyring, or set {KEY_ENV} in the environment.") from e
    except Exception as e:
        raise LLMError(f"The OS keyring refused the key ({type(e).__name__}); set {KEY_ENV} instead.") from e


class OpenAICompatLLM:
    """``LLMBackend`` for ``{base_url}/chat/completions`` with ``stream: true``.

    ``base_url``: the server's OpenAI base, e.g. ``http://localhost:11434/v1`` (Ollama) or
    ``http://localhost:8000/v1``; a URL without ``/v1`` gets it appended. ``send_images``:
    attach the encoded frames (True) — a server whose model refuses images is retried once
    without them, and the answer notes it.
    """

    english_only = False

    def __init__(self, base_url: str, model: str, *, key_env: str = KEY_ENV, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, n_ctx: int = 4096, send_images: bool = True) -> None:
        u = urlsplit(base_url.strip())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise LLMError(f"{base_url!r} is not a server URL; give one like http://localhost:11434/v1.")
        path = u.path.rstrip("/")
        if not path.endswith("/v1"):
            path += "/v1"
        self.base_url = f"{u.scheme}://{u.netloc}{path}"
        self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
        self._path = path
        self.model = model
        self.name = f"{model} @ {u.netloc}"
        self.key_env = key_env
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.n_ctx = int(n_ctx)
        self.sees_images = bool(send_images)
        self.last_timing = Timing()
        self._stop = _Flag()
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatLLM({self.base_url!r}, {self.model!r})"

    # -- protocol ----------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:  # unblocks a read waiting on a slow server
            try:
                conn.sock and conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stream(self, messages: Sequence[dict[str, Any]], images: Sequence[ChatImage] | None = None,
               stop_event: StopLike | None = None, *, max_tokens: int = 256,
               temperature: float = 0.0) -> Iterator[str]:
        self._stop.clear()
        self.last_timing = Timing()
        imgs = list(images or []) if self.sees_images else []
        try:
            yield from self._stream(messages, imgs, stop_event, max_tokens, temperature)
        except _ImagesRefused as e:
            self.sees_images = False  # remembered for the next questions to this server
            self.last_timing = Timing(notes=[f"the server's model does not take images ({e}); it was sent "
                                             "the question, the log and what perception saw in the frames"])
            yield from self._stream(messages, [], stop_event, max_tokens, temperature)

    def list_models(self) -> list[str]:
        """The server's model names (GET /models), for the chat panel's picker."""
        status, body = self._request("GET", f"{self._path}/models", None)[:2]
        if status != 200:
            raise LLMError(self._http_error(status, body))
        try:
            return [m["id"] for m in json.loads(body).get("data", [])]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise LLMError(f"{self.base_url}/models did not answer with an OpenAI model list.") from e

    # -- the request ---------------------------------------------------------------------------
    def _payload(self, messages: Sequence[dict[str, Any]], images: list[ChatImage], max_tokens: int,
                 temperature: float) -> bytes:
        msgs = [dict(m) for m in messages]
        if images:
            last = max(i for i, m in enumerate(msgs) if m.get("role") == "user")
            text = msgs[last].get("content", "")
            parts: list[dict[str, Any]] = [{"type": "text", "text": text if isinstance(text, str) else ""}]
            for im in images:
                parts.append({"type": "text", "text": f"Frame at [{mmss(im.time)}]:"})
                parts.append({"type": "image_url", "image_url": {"url": im.data_url()}})
            msgs[last] = {"role": "user", "content": parts}
        return json.dumps({"model": self.model, "messages": msgs, "stream": True, "max_tokens": int(max_tokens),
                           "temperature": float(temperature)}).encode("utf-8")

    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)

    def _headers(self, body: bytes | None) -> dict[str, str]:
        h = {"Accept": "text/event-stream, application/json", "User-Agent": "Kestrel"}
        if body is not None:
            h["Content-Type"] = "application/json"
        key = resolve_api_key(self.base_url, self.key_env)
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def _open(self, method: str, path: str, body: bytes | None) -> tuple[http.client.HTTPConnection, Any, float]:
        conn = self._connection()
        self._conn = conn
        t0 = time.perf_counter()
        where = f"the chat server at {self.base_url}"
        try:
            conn.request(method, path, body=body, headers=self._headers(body))
            sent = time.perf_counter() - t0
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
            resp = conn.getresponse()
        except ConnectionRefusedError as e:
            conn.close()
            raise LLMError(f"Cannot reach {where}: connection refused. Is the server running on that port?") from e
        except socket.gaierror as e:
            conn.close()
            raise LLMError(f"Cannot reach {where}: unknown host {self._host!r}.") from e
        except (TimeoutError, socket.timeout) as e:
            conn.close()
            raise LLMError(f"{where.capitalize()} did not answer within {self.read_timeout:.0f} s "
                           "(slow, overloaded or stuck); try again or raise the timeout.") from e
        except ssl.SSLError as e:
            conn.close()
            raise LLMError(f"Secure connection to {where} failed: {e.reason or e}.") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if self._stop.is_set():
                raise _Stopped() from e
            raise LLMError(f"Cannot talk to {where}: {type(e).__name__}: {e}.") from e
        return conn, resp, sent

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, float]:
        conn, resp, sent = self._open(method, path, body)
        try:
            return resp.status, resp.read(1 << 20), sent
        except (OSError, http.client.HTTPException) as e:
            raise LLMError(f"The chat server at {self.base_url} broke off its answer: {e}.") from e
        finally:
            conn.close()

    def _stream(self, messages, images, stop_event, max_tokens, temperature) -> Iterator[str]:
        body = self._payload(messages, images, max_tokens, temperature)
        timing = self.last_timing
        timing.bytes_sent = len(body)
        t0 = time.perf_counter()
        try:
            conn, resp, sent = self._open("POST", f"{self._path}/chat/completions", body)
        except _Stopped:
            timing.notes.append("stopped")
            return
        timing.transfer_s = sent
        try:
            if resp.status != 200:
                raw = resp.read(4096)
                if images and resp.status in (400, 415, 422, 500) and _about_images(raw):
                    raise _ImagesRefused(_excerpt(raw, 120))
                raise LLMError(self._http_error(resp.status, raw))
            ctype = (resp.getheader("Content-Type") or "").lower()
            if "text/event-stream" not in ctype:
                yield from self._whole(resp, ctype, timing, t0)
                return
            yield from self._events(resp, stop_event, timing, t0, bool(images))
        except (TimeoutError, socket.timeout) as e:
            raise LLMError(f"The chat server at {self.base_url} stopped answering for {self.read_timeout:.0f} s; "
                           "the answer so far is kept.") from e
        except (OSError, http.client.HTTPException) as e:
            if stopped(self._stop, stop_event):
                timing.notes.append("stopped")
                return
            raise LLMError(f"The chat server at {self.base_url} broke off its answer: {type(e).__name__}.") from e
        finally:
            timing.inference_s = time.perf_counter() - t0 - timing.transfer_s
            self._conn = None
            conn.close()

    def _events(self, resp, stop_event, timing: Timing, t0: float, images: bool) -> Iterator[str]:
        seen_data = False
        for _ in range(1 << 20):
            if stopped(self._stop, stop_event):
                timing.notes.append("stopped")
                return
            raw = resp.readline(1 << 16)
            if not raw:
                if not seen_data and images:  # e.g. llama-cpp-python's server with a text-only model
                    raise _ImagesRefused("it closed the stream without an answer")
                if not seen_data:
                    raise LLMError(f"The chat server at {self.base_url} closed the stream without an answer.")
                return
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
                continue
            if not line.startswith("data:"):
                raise LLMError(f"The chat server at {self.base_url} sent something that is not an OpenAI-style "
                               f"stream: {_excerpt(raw, 80)!r}.")
            data = line[5:].strip()
            if data == "[DONE]":
                return
            seen_data = True
            try:
                obj = json.loads(data)
            except ValueError as e:
                raise LLMError(f"The chat server at {self.base_url} sent garbage in its stream: "
                               f"{_excerpt(data.encode(), 80)!r}.") from e
            if isinstance(obj, dict) and obj.get("error"):
                err = obj["error"]
                raise LLMError(f"The chat server reported an error: {_msg(err)}")
            piece = _delta(obj)
            if piece is None:
                raise LLMError(f"The chat server at {self.base_url} sent an event without choices: "
                               f"{_excerpt(data.encode(), 80)!r}.")
            if piece:
                if not timing.tokens:
                    timing.first_token_s = time.perf_counter() - t0 - timing.transfer_s
                timing.tokens += 1
                yield piece

    def _whole(self, resp, ctype: str, timing: Timing, t0: float) -> Iterator[str]:
        """A server that ignored ``stream: true`` and sent one JSON answer."""
        raw = resp.read(1 << 22)
        try:
            obj = json.loads(raw)
            text = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(f"The chat server at {self.base_url} did not answer like an OpenAI-compatible server "
                           f"({ctype or 'no content type'}: {_excerpt(raw, 80)!r}); check the URL.") from e
        timing.first_token_s = time.perf_counter() - t0 - timing.transfer_s
        timing.tokens = 1
        if text:
            yield str(text)

    def _http_error(self, status: int, raw: bytes) -> str:
        detail = _excerpt(raw, 160)
        try:
            detail = _msg(json.loads(raw).get("error") or json.loads(raw).get("detail") or detail)
        except (ValueError, AttributeError, TypeError):
            pass
        if status in (401, 403):
            return (f"The chat server at {self.base_url} refused the request ({status}): set {self.key_env} or "
                    "store a key in the OS keyring for this URL.")
        if status == 404:
            return (f"The chat server at {self.base_url} has no such endpoint or model {self.model!r} (404: "
                    f"{detail}); check the URL (its OpenAI base, ending in /v1) and the model name.")
        return f"The chat server at {self.base_url} answered {status}: {detail}"


class _ImagesRefused(KestrelError):
    """The server refused the images (caught here: the request is sent again without them)."""


class _Stopped(KestrelError):
    """The analyst stopped the answer while the request was on its way (caught here)."""


def _delta(obj: Any) -> str | None:
    try:
        ch = obj["choices"]
        if not ch:
            return ""  # usage-only chunks at the end of some streams
        c = ch[0]
        d = c.get("delta")
        if d is None:  # text-completion style chunks
            return c.get("text", "") or ""
        return d.get("content") or ""
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def _about_images(raw: bytes) -> bool:
    t = raw.decode("utf-8", "replace").lower()
    return any(w in t for w in ("image", "vision", "multimodal", "mmproj", "image_url"))


def _msg(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("msg") or err)[:300]
    if isinstance(err, list) and err:
        return _msg(err[0])
    return str(err)[:300]


def _excerpt(raw: bytes, n: int) -> str:
    return " ".join(raw[: n * 2].decode("utf-8", "replace").split())[:n]
