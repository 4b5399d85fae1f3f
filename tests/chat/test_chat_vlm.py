"""The bring-your-own vision-language backend, on a tiny LLaVA with RANDOM weights built from a
config and saved to a temp folder, loaded through exactly the code a user's model takes.

This proves the plumbing — loading a local folder, the decoded low-bitrate frames going in as
images with their timestamps, tokens streaming out, stop, the context check — never the
quality: the model's words are noise.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import modelkit
from core.chat.evidence import perceive_file
from core.chat.session import ChatRequest, answer
from core.jobs import HeadlessState
from models.catalogue import ModelError
from models.llm.base import ChatImage, LLMError


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>"] + ("the a bus is there yes no frame at what question log "
                                                              "answer user assistant : ? . [ ] 0 1 2 3").split()
    return modelkit.tiny_llava(tmp_path_factory.mktemp("tiny-llava"), words, width=32, vocab=64, n_ctx=512, seed=0)


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes()


def test_the_plumbing_streams_tokens_from_images(tiny_llava):
    from models.llm.vlm import TransformersVLM

    vlm = TransformersVLM(tiny_llava)
    assert vlm.sees_images and vlm.n_ctx == 512
    msgs = [{"role": "system", "content": "answer"}, {"role": "user", "content": "is there a bus ?"}]
    toks = list(vlm.stream(msgs, images=[ChatImage(3.0, _jpeg(90)), ChatImage(5.0, _jpeg(160))], max_tokens=6))
    assert toks and all(isinstance(t, str) for t in toks) and vlm.last_timing.tokens == len(toks)

    class StopAfterOne:
        n = 0

        def is_set(self):
            self.n += 1
            return self.n > 1

    assert len(list(vlm.stream(msgs, stop_event=StopAfterOne(), max_tokens=6))) <= 1
    with pytest.raises(LLMError, match="takes 512"):
        list(vlm.stream([{"role": "user", "content": "bus " * 600}], max_tokens=4))


def test_the_chat_job_sends_the_decoded_frames_to_it(tiny_llava, bus_clip):
    from models.llm.vlm import TransformersVLM

    log, _ = perceive_file(str(bus_clip), models=("ssd-mobilenet-v2-coco",))
    vlm = TransformersVLM(tiny_llava)
    seen: list = []
    real = vlm._inputs
    vlm._inputs = lambda messages, images: (seen.extend(images), real(messages, images))[1]
    ans = answer(ChatRequest("Is there a bus?", vlm, source=str(bus_clip), at=2.0, window_s=3.0, log=log,
                             max_tokens=4, max_frames=2), HeadlessState())
    assert ans.error is None and ans.model == tiny_llava.name
    assert [im.time for im in seen] == ans.frames_seen and 1 <= len(seen) <= 2
    assert all(im.data[:2] == b"\xff\xd8" for im in seen)  # JPEGs of the decoded low-bitrate frames


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path):
    from models.llm.vlm import TransformersVLM

    with pytest.raises(ModelError, match="no config.json"):
        TransformersVLM(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "nonsense"}')
    with pytest.raises(ModelError, match="could not be loaded"):
        TransformersVLM(tmp_path)
