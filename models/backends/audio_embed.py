"""Frame-level audio features from a user's own Wav2Vec2 or HuBERT folder (transformers format):
the audio features of the anomaly paper's fusion network in its second version.

Why user-supplied only: no Wav2Vec2 / HuBERT checkpoint ships in an installable package, so the
analyst points Kestrel at a local ``save_pretrained`` folder or Hugging Face cache snapshot with
``config.json``, the weights and ``preprocessor_config.json`` (the Wav2Vec2FeatureExtractor: whether
the waveform is normalised). It loads with ``local_files_only=True``; nothing is downloaded. The
bare encoder is loaded (``Wav2Vec2Model`` / ``HubertModel``) from a pre-training, CTC or
classification checkpoint alike: their heads are left aside, but any encoder weight the folder
lacks is an error, never a random layer.

``embed(samples_16k, hop_s)`` runs the encoder over chunks of ``chunk_s`` seconds (attention is
quadratic in length, and the models were trained on utterances of a few seconds; each chunk is
normalised on its own, as an utterance would be), takes the chosen hidden layer (``layer``, default
the last) at its ~20 ms frames, and averages the frames whose centres fall in each ``hop_s``
stretch. Row ``i`` is the stretch ``[i·hop_s, (i+1)·hop_s)``, reported at its centre.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from models.backends.audio_tags import SAMPLE_RATE, check_audio_folder, load_pretrained
from models.backends.vad import check_audio
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

#: family -> (accepted config model_type, the transformers class it is loaded with)
FAMILIES: dict[str, tuple[tuple[str, ...], str]] = {
    "wav2vec2": (("wav2vec2",), "Wav2Vec2Model"),
    "hubert": (("hubert",), "HubertModel"),
}
#: tensors of pre-training / fine-tuning heads a bare encoder does not have (not foreign weights),
#: and the mask embedding only training uses (a checkpoint saved with masking off lacks it)
HEADS = ("quantizer.", "project_q.", "project_hid.", "lm_head.", "classifier.", "projector.", "final_proj.",
         "label_embs", "masked_spec_embed")


def receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """``(samples one frame sees, samples between frames)`` of the convolutional feature encoder."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field, jump


class AudioEncoder:
    """``AudioEmbedder`` over a user's Wav2Vec2 / HuBERT folder: ``embed(samples_16k, hop_s) ->
    (times (T,), feats (T, dim))``.

    Options: ``family`` ("wav2vec2" | "hubert", from the catalogue entry), ``layer`` (hidden state
    index: -1 the last, 0 the projected CNN features), ``chunk_s`` (seconds per forward pass).
    """

    licence: str | None = None

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, family: str = "",
                 layer: int = -1, chunk_s: float = 20.0) -> None:
        if family not in FAMILIES:
            raise ModelError(f"{spec.title}: the catalogue entry must set options.family to one of "
                             f"{', '.join(FAMILIES)} (got {family!r}).")
        types, cls_name = FAMILIES[family]
        folder = Path(where)
        cfg = check_audio_folder(spec, folder, types, f"a {cls_name} (or a checkpoint that holds one)")
        import torch
        import transformers

        model, extractor = load_pretrained(spec, folder, getattr(transformers, cls_name), str(cfg.get("model_type")),
                                           aside=HEADS)
        if int(getattr(extractor, "sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
            raise ModelError(f"{spec.title}: {folder.name}'s feature extractor expects {extractor.sampling_rate} Hz "
                             f"audio; Kestrel gives {SAMPLE_RATE} Hz.")
        n_layers = int(model.config.num_hidden_layers)
        if not -(n_layers + 1) <= int(layer) <= n_layers:
            raise ModelError(f"{spec.title}: options.layer {layer} is not one of the model's hidden states "
                             f"({-(n_layers + 1)}..{n_layers}).")
        self._torch = torch
        self.spec, self.name, self.family = spec, spec.name, family
        self.device = device
        self._model = model.eval().to(device)
        self._fx = extractor
        self.layer = int(layer)
        self.dim = int(model.config.hidden_size)
        self.field, self.stride = receptive_field(list(model.config.conv_kernel), list(model.config.conv_stride))
        if not chunk_s > 0 or not math.isfinite(float(chunk_s)):
            raise ModelError(f"{spec.title}: options.chunk_s must be a positive number of seconds, not {chunk_s!r}.")
        self.chunk_s = float(chunk_s)

    def _frames(self, chunk: np.ndarray) -> np.ndarray:
        """The chosen hidden layer of one chunk, ``float32 [frames, dim]``."""
        torch = self._torch
        inputs = self._fx(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = self._model(input_values=inputs["input_values"].to(self.device), output_hidden_states=self.layer != -1)
            hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        return hidden[0].float().cpu().numpy()

    def embed(self, samples_16k: np.ndarray, hop_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(times, feats)``: ``times`` float64 ``(T,)``, the centre in seconds of each ``hop_s``
        stretch that holds at least one frame (a stretch without one is left out, so read the
        times); ``feats`` float32 ``(T, dim)``, the mean of those frames. Audio shorter than one
        frame (25 ms) gives ``T = 0``."""
        audio = check_audio(samples_16k, "samples_16k")
        try:
            hop_s = float(hop_s)
        except (TypeError, ValueError) as e:
            raise ValueError(f"hop_s must be a number of seconds, not {hop_s!r}") from e
        if not math.isfinite(hop_s) or hop_s * SAMPLE_RATE < self.stride:
            raise ValueError(f"hop_s must be at least one frame of the model ({self.stride / SAMPLE_RATE:.3f} s), "
                             f"not {hop_s!r}")
        hop = hop_s * SAMPLE_RATE
        per_chunk = max(1, int(self.chunk_s // hop_s)) * hop  # chunks end on stretch boundaries
        starts = [int(round(k * per_chunk)) for k in range(max(1, math.ceil(audio.size / per_chunk)))]
        if len(starts) > 1 and audio.size - starts[-1] < SAMPLE_RATE:  # a last second joins the chunk before
            starts.pop()
        ends = starts[1:] + [audio.size]
        n_bins = max(1, math.ceil(audio.size / hop))
        sums = np.zeros((n_bins, self.dim), np.float64)
        counts = np.zeros(n_bins, np.int64)
        for a, b in zip(starts, ends):
            if b - a < self.field:
                continue
            frames = self._frames(audio[a:b])
            centres = a + self.stride * np.arange(len(frames)) + self.field / 2
            bins = np.minimum((centres // hop).astype(np.int64), n_bins - 1)
            np.add.at(sums, bins, frames)
            np.add.at(counts, bins, 1)
        keep = counts > 0
        times = (np.flatnonzero(keep) + 0.5) * hop_s
        feats = (sums[keep] / counts[keep, None]).astype(np.float32)
        return times.astype(np.float64), feats.reshape(-1, self.dim)

