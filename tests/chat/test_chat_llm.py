"""The chat job with the real embedded LLM (Qwen2.5-0.5B, llama.cpp) on real clips: a question
answered from the transcript, one from what the detector sees, counts taken from code, and
every way an answer can go wrong ending in a message, never an exception."""
from __future__ import annotations

import pytest

from core.chat.evidence import perceive_file
from core.chat.history import load_chat, save_chat
from core.chat.perception_log import PerceptionLog
from core.chat.session import ChatPartial, ChatRequest, answer
from core.jobs import HeadlessState
from models.catalogue import ModelError
from models.llm.base import LLMError, Timing
from models.llm.local import LocalLLM


@pytest.fixture(scope="module")
def sintel(sample):
    path = str(sample("sintel"))
    log, errors = perceive_file(path, start=0.0, end=26.0, models=("ssd-mobilenet-v2-coco", "whisper-tiny"))
    assert not errors
    return path, log


@pytest.fixture(scope="module")
def bus(bus_clip):
    log, errors = perceive_file(str(bus_clip), models=("ssd-mobilenet-v2-coco",))
    assert not errors
    return str(bus_clip), log


class FakeBackend:
    """Says what it is told to, token by token; can fail after a few tokens."""

    sees_images = False
    english_only = True
    n_ctx = 4096

    def __init__(self, text: str, fail_after: int | None = None) -> None:
        self.name, self.text, self.fail_after = "fake", text, fail_after
        self.last_timing = Timing()
        self.messages: list = []

    def stream(self, messages, images=None, stop_event=None, *, max_tokens=256, temperature=0.0):
        self.messages = list(messages)
        for i, tok in enumerate(self.text.split(" ")):
            if self.fail_after is not None and i >= self.fail_after:
                raise LLMError("The chat server at http://x/v1 stopped answering for 5 s; the answer so far is kept.")
            if stop_event is not None and stop_event.is_set():
                return
            yield tok if i == 0 else " " + tok

    def stop(self):
        pass


def _ask(q, backend, clip, at, **kw):
    path, log = clip
    tokens = []
    state = HeadlessState(on_partial=lambda p: tokens.append(p.token) if isinstance(p, ChatPartial) else None)
    ans = answer(ChatRequest(q, backend, source=path, at=at, log=log, max_tokens=48, **kw), state)
    return ans, tokens


def test_transcript_question_is_answered(qwen_chat, sintel):
    ans, tokens = _ask("What is the character searching for?", qwen_chat, sintel, 25.0)
    assert ans.error is None and not ans.partial
    assert "someone" in ans.text.lower(), ans.text
    assert len(tokens) > 1 and "".join(tokens).strip() == ans.text  # it streamed
    assert any("searching for someone" in ln for ln in ans.lines)
    assert 0 < ans.kbps < 100 and ans.frames_seen and max(ans.frames_seen) <= 25.0
    assert ans.model == "qwen2.5-0.5b-chat" and ans.inference_s > 0 and ans.encode_s > 0


def test_detection_question_is_answered(qwen_chat, bus):
    ans, _ = _ask("Is there a bus?", qwen_chat, bus, 2.0, window_s=3.0)
    assert ans.error is None
    assert ans.text.lower().startswith("yes"), ans.text
    assert any("bus" in ln for ln in ans.lines)


def test_counting_comes_from_code_not_from_the_model(qwen_chat, bus):
    fake = FakeBackend("There are 7 people in the frame.")
    ans, _ = _ask("How many people are there?", fake, bus, 2.0, window_s=3.0)
    assert ans.corrected and "7" not in ans.text and ans.text.startswith("3 people"), ans.text
    prompt = fake.messages[-1]["content"]
    assert "perception counts 3 people" in prompt  # the model was given the number as a fact
    real, _ = _ask("How many people are there?", qwen_chat, bus, 2.0, window_s=3.0)
    assert "3" in real.text or "three" in real.text.lower(), real.text


def test_user_stop_gives_a_partial_answer(qwen_chat, sintel):
    state = HeadlessState()
    seen = []

    def on_partial(p):
        seen.append(p)
        if len(seen) == 2:
            state.cancel()

    state._on_partial = on_partial
    ans = answer(ChatRequest("Describe everything that happens in the clip.", qwen_chat, source=sintel[0], at=20.0,
                             log=sintel[1], max_tokens=120), state)
    assert ans.partial and "Stopped" in ans.error and ans.text and len(seen) <= 3


def test_backend_failing_midway_keeps_the_partial_answer(bus):
    ans, _ = _ask("Is there a bus?", FakeBackend("Yes there is a bus", fail_after=2), bus, 2.0, window_s=3.0)
    assert ans.partial and ans.text == "Yes there" and "stopped answering" in ans.error


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        LocalLLM(model_path=tmp_path / "nope.gguf")
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelError, match="could not be loaded"):
        LocalLLM(model_path=bad)


def test_a_long_log_is_trimmed_to_the_context(qwen_chat, sintel):
    path, log = sintel
    big = PerceptionLog(step=0.5)
    for o in log.observations():
        big.add(o)
    for i in range(3000):  # an hour of chatter
        big.add_speech(i * 1.0, i * 1.0 + 0.9, f"Line {i}: the weather is mild and nothing happens at the market.")
    ans, _ = _ask("What is the character searching for?", qwen_chat, (path, big), 25.0)
    assert ans.error is None and ans.text, ans.error
    assert len(ans.lines) <= 8


def test_a_question_in_another_language_is_answered_anyway(qwen_chat, bus):
    ans, _ = _ask("¿Hay un autobús?", qwen_chat, bus, 2.0, window_s=3.0)
    assert ans.error is None and ans.text
    assert any("not in English" in n for n in ans.notes)


def test_a_camera_dropping_is_a_note_not_a_crash(bus):
    from core.media.live import LiveError

    def frames(t0, t1):
        raise LiveError("camera 0: the stream ended.")

    path, log = bus
    ans = answer(ChatRequest("Is there a bus?", FakeBackend("Yes."), frames=frames, at=2.0, log=log),
                 HeadlessState())
    assert ans.text == "Yes." and ans.kbps == 0 and any("the stream ended" in n for n in ans.notes)


def test_an_empty_question_and_a_broken_backend(bus):
    class Broken(FakeBackend):
        def stream(self, *a, **k):
            raise RuntimeError("boom")
            yield ""

    assert answer(ChatRequest("  ", FakeBackend("x")), HeadlessState()).error == "Ask a question first."
    ans = answer(ChatRequest("Is there a bus?", Broken(""), source=bus[0], at=2.0, log=bus[1]), HeadlessState())
    assert "boom" in ans.error and not ans.text


def test_chat_history_is_stored_in_the_project(tmp_path, bus):
    from core.perception import ops
    from core.media.decode import probe
    from core.store.project import Project

    ans, _ = _ask("Is there a bus?", FakeBackend("Yes, at [00:02]."), bus, 2.0, window_s=3.0)
    with Project.create(tmp_path / "p.kestrel") as project:
        media_id = ops.register_media(project, probe(bus[0]))
        save_chat(project, media_id, ans)
        save_chat(project, media_id, ans)
        hist = load_chat(project, media_id)
        runs = [r for r in project.list_runs(media_id) if r.kind == "chat"]
    assert len(hist) == 2 and hist[0]["question"] == "Is there a bus?" and hist[0]["answer"] == "Yes, at [00:02]."
    assert hist[0]["model"] == "fake" and hist[0]["kbps"] > 0 and hist[0]["frames"]
    assert hist[0]["citations"] == [["[00:02]", 2.0]] and len(runs) == 2
    # the boxes the answer cites (the bus at 00:02) are kept with it, each with its verdict
    assert "bus" in {e["label"] for e in hist[0]["evidence"]}
    assert [e["label"] for e in hist[0]["evidence"]] == [b.label for b in ans.evidence]
    assert all(e["cited"] == 2.0 and len(e["box"]) == 4 and "confirmed" in e for e in hist[0]["evidence"])
