"""Sound names from a user's own Audio Spectrogram Transformer (AST) folder, e.g. the AudioSet one
(527 classes), and the span handling every ``SoundNamer`` shares (``models.types.SoundNamer``).

Why user-supplied only: no AudioSet classifier ships in an installable package, so the analyst
points Kestrel at a local ``save_pretrained`` folder or Hugging Face cache snapshot holding
``config.json`` (model_type ``audio-spectrogram-transformer``, with its class names), the weights
and ``preprocessor_config.json`` (the ASTFeatureExtractor's fbank settings). Everything loads with
``local_files_only=True``; nothing is downloaded. A folder without a classifier head, with weights
of another model, or without class names is refused: its "names" would be random.

Probabilities: AudioSet is multi-label (a dog can bark over speech), and AST was trained with a
per-class sigmoid, so each label's probability is its own sigmoid; a config that says
``problem_type: single_label_classification`` (a fine-tune on e.g. ESC-50) gets a softmax instead.
A span longer than the extractor's window (``max_length`` frames of 10 ms: 10.24 s for AudioSet)
is cut into windows, and each label keeps its highest probability over them.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.hfconfig import (COMPUTED_BUFFERS, check_loaded_weights, check_weights_and_preprocessor,
                                      read_config)
from models.backends.vad import check_audio
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MIN_SPAN_S = 0.025  # one 25 ms analysis window: anything shorter has nothing to name
AST_TYPES = ("audio-spectrogram-transformer",)


# --- what every SoundNamer shares ---------------------------------------------------------------
def span_audio(samples: np.ndarray, spans: Sequence[tuple[float, float]], *, sr: int = SAMPLE_RATE,
               min_s: float = MIN_SPAN_S) -> list[np.ndarray | None]:
    """The samples of each ``(start, end)`` span in seconds, clipped to the audio; ``None`` for a
    span that holds less than ``min_s`` of it. A span that is not two finite numbers with
    start ≤ end is a ValueError."""
    out: list[np.ndarray | None] = []
    for span in spans:
        try:
            a, b = (float(v) for v in span)
        except (TypeError, ValueError) as e:
            raise ValueError(f"a span must be (start, end) in seconds, not {span!r}") from e
        if not (math.isfinite(a) and math.isfinite(b)) or b < a:
            raise ValueError(f"a span must be (start, end) in seconds with start <= end, not {span!r}")
        i, j = max(0, int(round(a * sr))), min(samples.size, int(round(b * sr)))
        out.append(samples[i:j] if j - i >= max(1, int(round(min_s * sr))) else None)
    return out


def windows(x: np.ndarray, length: int, hop: int) -> list[np.ndarray]:
    """``x`` cut into windows of ``length`` samples every ``hop``, until one reaches its end (that
    last one may be shorter)."""
    starts = [0]
    while starts[-1] + length < x.size:
        starts.append(starts[-1] + max(1, hop))
    return [x[s:s + length] for s in starts]


def top_labels(probs: np.ndarray, labels: Sequence[str], top: int) -> list[tuple[str, float]]:
    """The ``top`` most probable labels, best first (ties in label order)."""
    idx = np.argsort(-probs, kind="stable")[:top]
    return [(labels[k], float(probs[k])) for k in idx]


def check_top(top: int) -> int:
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1:
        raise ValueError(f"top must be a whole number of at least 1, not {top!r}")
    return int(top)


def check_audio_folder(spec: ModelSpec, folder: Path, types: Sequence[str], expected: str) -> dict[str, Any]:
    """The config of a user's transformers audio folder, or a ModelError saying what is wrong: not
    one of ``types``, no weights, no ``preprocessor_config.json`` (the feature extractor). No torch."""
    cfg = read_config(spec, folder, "the weights and preprocessor_config.json")
    model_type = str(cfg.get("model_type", ""))
    archs = ", ".join(str(a) for a in cfg.get("architectures") or []) or "no architecture listed"
    if model_type not in types:
        raise ModelError(f"{spec.title}: {folder.name} holds a '{model_type or 'unknown'}' model ({archs}); "
                         f"expected {expected} (model_type {' or '.join(types)}).")
    check_weights_and_preprocessor(spec, folder, model_type, "how the audio is turned into the model's input")
    return cfg


def load_pretrained(spec: ModelSpec, folder: Path, cls: Any, model_type: str, *, head: Sequence[str] = (),
                    aside: Sequence[str] = ()) -> tuple[Any, Any]:
    """``(model, feature_extractor)`` from ``folder`` with ``cls`` (local files only), or a
    ModelError: an unreadable or cut file; any of the model's weights left random (a missing
    ``head`` is named as such); tensors of another model. Tensors named in ``aside`` (heads of
    pre-training or fine-tuning that a bare encoder leaves aside, training-only ones) may be in
    the folder and not the model, or the other way round."""
    from transformers import AutoFeatureExtractor

    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
        extractor = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelError(f"{spec.title}: the {model_type} model in {folder} could not be loaded "
                         f"({type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}). "
                         "It needs config.json, intact weights and preprocessor_config.json.") from e
    skip = COMPUTED_BUFFERS + tuple(aside)
    missing = [str(k) for k in info.get("missing_keys") or () if not any(b in str(k) for b in skip)]
    if missing:
        lost_head = [k for k in missing if any(h in k for h in head)]
        raise ModelError(f"{spec.title}: {folder.name} lacks weights for {len(missing)} parameters (e.g. "
                         f"{(lost_head or missing)[0]}); it is not a complete {cls.__name__} checkpoint"
                         + (" — it has no classifier head, so it cannot name sounds." if lost_head else "."))
    check_loaded_weights(spec.title, folder, model, info, ignore=skip)
    return model, extractor


# --- AST ----------------------------------------------------------------------------------------
class SpanNamer:
    """``name_spans`` over a model's ``probabilities(clips) -> [n, classes]`` and its ``labels``
    (the SoundNamer protocol of models.types), shared by the AST and BirdNET backends."""

    labels: Sequence[str]

    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def name_spans(self, samples_16k: np.ndarray, spans: Sequence[tuple[float, float]],
                   top: int = 3) -> list[list[tuple[str, float]]]:
        """For each (start, end) span in seconds: its ``top`` labels with probabilities, best first;
        [] for a span with (almost) no audio in it."""
        top = check_top(top)
        audio = check_audio(samples_16k, "samples_16k")
        clips = span_audio(audio, spans)
        real = [c for c in clips if c is not None]
        probs = iter(self.probabilities(real)) if real else iter(())
        return [top_labels(next(probs), self.labels, top) if c is not None else [] for c in clips]


class ASTSoundNamer(SpanNamer):
    """``SoundNamer`` over a user's ``ASTForAudioClassification`` folder; labels from ``config.id2label``.

    Options: ``batch_size`` (windows per forward pass), ``activation`` ("auto": sigmoid unless the
    config says single-label; or "sigmoid" / "softmax").
    """

    licence: str | None = None  # a user's own model: its licence is theirs to know
    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, batch_size: int = 4,
                 activation: str = "auto") -> None:
        folder = Path(where)
        cfg = check_audio_folder(spec, folder, AST_TYPES, "an Audio Spectrogram Transformer classifier "
                                 "(ASTForAudioClassification, e.g. the AudioSet one)")
        labels = {int(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
        if not labels or all(re.fullmatch(r"LABEL_\d+", v) for v in labels.values()):
            raise ModelError(f"{spec.title}: {folder.name}'s config.json names no classes (id2label); without "
                             "names its scores cannot name a sound.")
        if activation not in ("auto", "sigmoid", "softmax"):
            raise ModelError(f"{spec.title}: options.activation must be auto, sigmoid or softmax, not {activation!r}.")
        import torch
        from transformers import ASTForAudioClassification

        model, extractor = load_pretrained(spec, folder, ASTForAudioClassification, "audio-spectrogram-transformer",
                                           head=("classifier",))
        if int(getattr(extractor, "sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
            raise ModelError(f"{spec.title}: {folder.name}'s feature extractor expects {extractor.sampling_rate} Hz "
                             f"audio; Kestrel gives {SAMPLE_RATE} Hz.")
        self._torch = torch
        self.spec, self.name = spec, spec.name
        self.device = device
        self._model = model.eval().to(device)
        self._fx = extractor
        n = int(model.config.num_labels)
        self.labels: tuple[str, ...] = tuple(str(model.config.id2label.get(i, i)) for i in range(n))
        single = getattr(model.config, "problem_type", None) == "single_label_classification"
        self.activation = activation if activation != "auto" else ("softmax" if single else "sigmoid")
        self.batch_size = max(1, int(batch_size))
        # the extractor pads or cuts every input to max_length frames of 10 ms
        self.window = int(round(int(getattr(extractor, "max_length", 1024)) * SAMPLE_RATE / 100))

    def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Per-label probabilities of each clip (16 kHz mono), ``float32 [n, labels]``; a clip longer
        than the model's window keeps each label's highest probability over its windows."""
        parts = [(i, w) for i, c in enumerate(clips) for w in windows(c, self.window, self.window)
                 if w.size >= int(MIN_SPAN_S * SAMPLE_RATE)]
        out = np.zeros((len(clips), len(self.labels)), np.float32)
        torch = self._torch
        with torch.inference_mode():
            for b in range(0, len(parts), self.batch_size):
                chunk = parts[b:b + self.batch_size]
                feats = self._fx([w for _, w in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt")
                logits = self._model(input_values=feats["input_values"].to(self.device)).logits.float()
                p = (torch.softmax(logits, dim=-1) if self.activation == "softmax" else torch.sigmoid(logits))
                for (i, _), row in zip(chunk, p.cpu().numpy()):
                    out[i] = np.maximum(out[i], row)
        return out

