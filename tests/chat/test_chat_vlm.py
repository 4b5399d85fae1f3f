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

from core.chat.evidence import perceive_file
from core.chat.session import ChatRequest, answer
from core.jobs import HeadlessState
from models.catalogue import ModelError
from models.llm.base import ChatImage, LLMError


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>"] + ("the a bus is there yes no frame at what question log "
                                                              "answer user assistant : ? . [ ] 0 1 2 3").split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    ftok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ftok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="full")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=ftok, patch_size=8, vision_feature_select_strategy="full",
                   num_additional_image_tokens=1).save_pretrained(folder)
    return folder


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
