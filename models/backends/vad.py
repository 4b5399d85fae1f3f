"""Voice activity detection with Silero VAD's ONNX model, run by onnxruntime alone.

Why not silero-vad's own API: its ``utils_vad`` imports torch at module level, and a
VAD pass should not cost a 2-second torch import. The wheel also ships a "sequence"
export (``silero_vad_16k_sequence.onnx``) that scores up to 512 frames of 32 ms in one
ONNX call, bit-exact with the streaming model, so an hour of audio is a few hundred
calls instead of ~110 000 per-frame Python round trips. The frame/context layout and the
hysteresis below follow silero-vad 6.2.3's ``sequence_vad.frame_blocks`` and
``get_speech_timestamps_from_probs``.

``check_audio`` lives here (a light module) and is shared with the Whisper backend so
both speak the same contract: mono float32 at 16 kHz, 1-D or ``[1, n]``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.catalogue import ModelError, ModelSpec
from models.types import SpeechSegment

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME = 512  # samples per VAD frame at 16 kHz (32 ms)
CONTEXT = 64  # trailing samples of the previous frame the model sees
BLOCK_FRAMES = 512  # frames per ONNX call (~16.4 s)

#: Defaults when the catalogue entry leaves a threshold out.
DEFAULT_THRESHOLDS = {"speech": 0.4, "min_speech_s": 0.25, "min_silence_s": 0.3, "pad_s": 0.05}


def check_audio(audio: Any, what: str = "audio") -> np.ndarray:
    """Return ``audio`` as contiguous 1-D float32, or raise ValueError saying what is wrong.

    Integer PCM is refused rather than converted: int16 silently cast to float would be
    32768 times too loud and every model would return nonsense. Stereo is refused too,
    because which mix-down is right (mean, left channel, …) is the caller's decision.
    """
    if not isinstance(audio, np.ndarray):
        raise ValueError(f"{what} must be a numpy array of float32 samples, not {type(audio).__name__}")
    if audio.dtype not in (np.float32, np.float64):
        raise ValueError(f"{what} must be float32 samples in [-1, 1] at {SAMPLE_RATE} Hz, not {audio.dtype}"
                         " (for int16 PCM use audio.astype(np.float32) / 32768)")
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"{what} must be mono, shape (n,) or (1, n), not {audio.shape}"
                         " (mix channels down first, e.g. audio.mean(axis=0))")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.size and not np.isfinite(audio).all():
        raise ValueError(f"{what} contains NaN or infinite samples")
    return audio


def speech_regions(probs: np.ndarray, n_samples: int, *, threshold: float, min_speech_s: float,
                   min_silence_s: float, pad_s: float, sr: int = SAMPLE_RATE,
                   frame: int = FRAME) -> list[tuple[int, int, float]]:
    """Per-frame probabilities → ``(start_sample, end_sample, mean_prob)`` regions.

    Hysteresis as in Silero: speech starts at ``threshold``, and ends only after the
    probability stays below ``threshold - 0.15`` for ``min_silence_s``; regions shorter
    than ``min_speech_s`` are dropped, survivors padded by ``pad_s`` on each side without
    overlapping their neighbours. No maximum length: callers that need bounded chunks
    (Whisper windows) cut them themselves.
    """
    neg = max(threshold - 0.15, 0.01)
    min_speech, min_sil, pad = sr * min_speech_s, sr * min_silence_s, int(sr * pad_s)
    raw: list[list[int]] = []
    start: int | None = None
    temp_end = 0
    for i, p in enumerate(probs):
        cur = i * frame
        if p >= threshold and temp_end:
            temp_end = 0
        if p >= threshold and start is None:
            start = cur
            continue
        if start is not None and p < neg:
            if not temp_end:
                temp_end = cur
            if cur - temp_end >= min_sil:
                if temp_end - start > min_speech:
                    raw.append([start, temp_end])
                start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        raw.append([start, n_samples])
    for k, seg in enumerate(raw):  # pad, splitting the gap when neighbours are close
        if k == 0:
            seg[0] = max(0, seg[0] - pad)
        if k + 1 < len(raw):
            gap = raw[k + 1][0] - seg[1]
            if gap < 2 * pad:
                seg[1] += gap // 2
                raw[k + 1][0] -= gap - gap // 2
            else:
                seg[1] += pad
                raw[k + 1][0] = max(0, raw[k + 1][0] - pad)
        else:
            seg[1] = min(n_samples, seg[1] + pad)
    out = []
    for a, b in raw:
        fa, fb = a // frame, max(a // frame + 1, -(-b // frame))
        out.append((a, b, float(np.mean(probs[fa:fb]))))
    return out


def onnx_device(device: str, spec: ModelSpec):
    """The :class:`models.devices.Device` an ONNX Runtime model runs on (its ``providers``)."""
    from models.devices import resolve

    return resolve(device, "onnxruntime", spec=spec)


class SileroVAD:
    """``VoiceActivity`` over Silero VAD 6 (ONNX Runtime, torch-free; CUDA with onnxruntime-gpu).

    Thresholds come from the catalogue entry (``speech``, ``min_speech_s``,
    ``min_silence_s``, ``pad_s``) so they can be tuned without touching code; options
    passed to ``load_model`` override them.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *,
                 threads: int = 1, **thresholds: float) -> None:
        import onnxruntime as ort

        self.spec = spec
        files = spec.weights.get("files") or ["data/silero_vad_16k_sequence.onnx"]
        path = Path(where) / files[0] if Path(where).is_dir() else Path(where)
        unknown = set(thresholds) - set(DEFAULT_THRESHOLDS)
        if unknown:
            raise ModelError(f"{spec.title}: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(DEFAULT_THRESHOLDS)}, threads")
        self.thresholds = {**DEFAULT_THRESHOLDS, **spec.thresholds, **thresholds}
        self.device_info = onnx_device(device, spec)
        self.device = self.device_info.name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))  # one core leaves the other for decoding
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=self.device_info.providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            hint = ("Pick an intact Silero sequence .onnx file." if spec.user_supplied else
                    f"Reinstall it: pip install --force-reinstall {spec.weights['package']}")
            raise ModelError(f"{spec.title} could not be loaded from {path}: {e}. {hint}") from e
        names = {i.name for i in self._sess.get_inputs()}
        if names != {"input", "h", "c"}:
            raise ModelError(f"{spec.title}: {path.name} is not Silero's sequence VAD model "
                             f"(inputs {sorted(names)}, expected input/h/c).")

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of every 32 ms frame (the last one zero-padded), float32 [frames]."""
        audio = check_audio(audio)
        n_frames = -(-audio.size // FRAME)
        if n_frames == 0:
            return np.zeros(0, np.float32)
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        prev = np.zeros(CONTEXT, np.float32)
        out = []
        for first in range(0, n_frames, BLOCK_FRAMES):
            nb = min(BLOCK_FRAMES, n_frames - first)
            chunk = audio[first * FRAME:(first + nb) * FRAME]
            frames = np.zeros((nb, FRAME), np.float32)
            frames.reshape(-1)[:chunk.size] = chunk  # the last frame zero-padded
            context = np.empty((nb, CONTEXT), np.float32)
            context[0] = prev
            context[1:] = frames[:-1, -CONTEXT:]
            prev = frames[-1, -CONTEXT:].copy()
            block = np.concatenate((context, frames), axis=1)
            probs, h, c = self._sess.run(["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c})
            out.append(np.asarray(probs, np.float32).reshape(-1))
        return np.concatenate(out)

    def segments(self, audio: np.ndarray) -> list[SpeechSegment]:
        """Speech regions in seconds from the start of ``audio``; ``score`` is the mean probability.

        Audio shorter than one frame (32 ms) cannot hold speech and gives ``[]``.
        """
        audio = check_audio(audio)
        if audio.size < FRAME:
            return []
        t = self.thresholds
        regions = speech_regions(self.probabilities(audio), audio.size, threshold=t["speech"],
                                 min_speech_s=t["min_speech_s"], min_silence_s=t["min_silence_s"],
                                 pad_s=t["pad_s"])
        return [SpeechSegment(a / SAMPLE_RATE, b / SAMPLE_RATE, score=p) for a, b, p in regions]
