"""The OpenAI-compatible backend against a real server on localhost — llama-cpp-python's own
server running the embedded model — and against servers that are down, slow, or speak garbage.

The real server needs llama-cpp-python's server extras (uvicorn, fastapi, sse-starlette,
starlette-context, pydantic-settings); without them that test fails with the install line.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from core.chat.evidence import perceive_file
from core.chat.session import ChatRequest, answer
from core.jobs import HeadlessState
from models.llm.base import LLMError
from models.llm.openai_compat import OpenAICompatLLM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from models.llm.local import model_file

    try:
        import fastapi, sse_starlette, starlette_context, uvicorn  # noqa: F401,E401
    except ImportError as e:
        pytest.fail(f"llama-cpp-python's server needs its extras: pip install 'llama-cpp-python[server]' ({e})")
    port = _free_port()
    errlog = tmp_path_factory.mktemp("server") / "stderr.txt"
    with open(errlog, "wb") as err:  # a file, not a pipe: nobody reads it while the server runs
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_file()),
                                 "--model_alias", "qwen", "--host", "127.0.0.1", "--port", str(port),
                                 "--n_ctx", "4096", "--n_threads", "2", "--verbose", "False"],
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start: {errlog.read_text(errors='replace')[-800:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def sintel(sample):
    path = str(sample("sintel"))
    log, errors = perceive_file(path, start=0.0, end=26.0, models=("whisper-tiny",))
    assert not errors
    return path, log


def test_a_real_server_answers_with_the_frames_sent_as_images(server, sintel):
    backend = OpenAICompatLLM(server, "qwen")
    assert backend.list_models() == ["qwen"]
    tokens = []
    ans = answer(ChatRequest("What is the character searching for?", backend, source=sintel[0], at=25.0,
                             log=sintel[1], max_tokens=40),
                 HeadlessState(on_partial=lambda p: tokens.append(p.token)))
    assert ans.error is None, ans.error
    assert "someone" in ans.text.lower(), ans.text
    assert len(tokens) > 1 and ans.model == f"qwen @ {server.split('/')[2]}"
    # the embedded model reads text only: the server closed the stream on the image parts, and the
    # backend fell back to the question, the log and what perception saw in the frames
    assert any("does not take images" in n for n in ans.notes)
    assert backend.sees_images is False and backend.last_timing.bytes_sent > 0
    assert ans.transfer_s >= 0 and ans.inference_s > 0 and ans.frames_seen


def test_stop_mid_answer_against_the_server(server):
    backend = OpenAICompatLLM(server, "qwen", send_images=False)

    class After:
        n = 0

        def is_set(self):
            return self.n >= 2

    stop = After()
    out = []
    for tok in backend.stream([{"role": "user", "content": "Count slowly from one to forty in words."}],
                              stop_event=stop, max_tokens=120):
        out.append(tok)
        stop.n += 1
    assert len(out) == 2 and "stopped" in backend.last_timing.notes


def test_a_server_that_is_down_is_a_clear_message(sintel):
    backend = OpenAICompatLLM(f"http://127.0.0.1:{_free_port()}", "qwen", connect_timeout=2)
    ans = answer(ChatRequest("What is the character searching for?", backend, source=sintel[0], at=25.0,
                             log=sintel[1]), HeadlessState())
    assert ans.text == "" and "connection refused" in ans.error and "running" in ans.error
    with pytest.raises(LLMError, match="not a server URL"):
        OpenAICompatLLM("localhost:11434", "x")


class _Fake(http.server.BaseHTTPRequestHandler):
    """A misbehaving server: what it answers is set per test on the class."""

    reply: tuple[int, str, bytes] = (200, "text/html", b"<html>hello</html>")
    delay = 0.0
    seen_headers: dict = {}

    def do_POST(self):  # noqa: N802
        type(self).seen_headers = dict(self.headers)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        status, ctype, body = self.reply
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", _Fake
    srv.shutdown()
    srv.server_close()
    _Fake.delay, _Fake.reply = 0.0, (200, "text/html", b"<html>hello</html>")


def _say(url, **kw):
    return "".join(OpenAICompatLLM(url, "m", **kw).stream([{"role": "user", "content": "hi"}]))


def test_garbage_slow_and_failing_servers(fake):
    url, handler = fake
    with pytest.raises(LLMError, match="did not answer like an OpenAI-compatible server"):
        _say(url)
    handler.reply = (200, "text/event-stream", b"hello there\n\n")
    with pytest.raises(LLMError, match="not an OpenAI-style stream"):
        _say(url)
    handler.reply = (200, "text/event-stream", b"data: {broken json\n\n")
    with pytest.raises(LLMError, match="garbage"):
        _say(url)
    handler.reply = (500, "application/json", json.dumps({"error": {"message": "model exploded"}}).encode())
    with pytest.raises(LLMError, match="answered 500: model exploded"):
        _say(url)
    handler.reply = (404, "text/plain", b"not found")
    with pytest.raises(LLMError, match="check the URL"):
        _say(url)
    handler.reply = (200, "text/event-stream",
                     b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"delta":'
                     b'{"content":"lo"}}]}\n\ndata: [DONE]\n\n')
    assert _say(url) == "Hello"
    handler.reply = (200, "application/json", json.dumps({"choices": [{"message": {"content": "Whole"}}]}).encode())
    assert _say(url) == "Whole"  # a server that ignores stream: true
    handler.delay = 2.0
    with pytest.raises(LLMError, match="did not answer within 1 s"):
        _say(url, read_timeout=1.0)


def test_the_api_key_comes_from_the_environment_and_is_never_kept(fake, monkeypatch):
    url, handler = fake
    monkeypatch.setenv("KESTREL_LLM_API_KEY", "sk-secret-123")
    handler.reply = (401, "application/json", b'{"error": "bad key"}')
    backend = OpenAICompatLLM(url, "m")
    with pytest.raises(LLMError, match="KESTREL_LLM_API_KEY") as exc:
        "".join(backend.stream([{"role": "user", "content": "hi"}]))
    assert handler.seen_headers.get("Authorization") == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(backend) + str(exc.value) + json.dumps(vars(backend), default=str)
