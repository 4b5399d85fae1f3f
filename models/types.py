"""Kestrel's own result types and the small protocols every model backend implements.

Backends take numpy arrays (RGB uint8 images H×W×3, mono float32 audio) and return these
frozen dataclasses — never Qt objects, never framework tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the image given


@dataclass(frozen=True)
class Detection:
    box: Box
    label: str
    score: float
    class_id: int = -1  # the model's own class id (COCO ids 1..90 for SSD), not an index into classes
    track_id: int | None = None


@dataclass(frozen=True)
class Face:
    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class TextRegion:
    box: Box
    text: str
    score: float


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # seconds from the start of the audio given
    end: float
    text: str = ""
    score: float = 1.0
    words: tuple[tuple[float, float, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Tag:
    label: str
    score: float
    class_id: int = -1


@runtime_checkable
class Detector(Protocol):
    classes: Sequence[str]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


@runtime_checkable
class FaceDetector(Protocol):
    def faces(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...


@runtime_checkable
class TextReader(Protocol):
    def read(self, image: np.ndarray) -> list[TextRegion]: ...


@runtime_checkable
class VoiceActivity(Protocol):
    sample_rate: int

    def segments(self, audio: np.ndarray) -> list[SpeechSegment]: ...


@runtime_checkable
class Transcriber(Protocol):
    sample_rate: int

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> list[SpeechSegment]: ...


@runtime_checkable
class TextEmbedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ImageTagger(Protocol):
    def tags(self, images: Sequence[np.ndarray], top_k: int = 5) -> list[list[Tag]]: ...


@runtime_checkable
class SoundNamer(Protocol):
    """Names what is heard in stretches of 16 kHz mono audio (backends: models/backends/audio_tags.py
    for a user's AST, models/backends/birdnet.py for BirdNET's non-bird classes)."""

    name: str  # the catalogue name
    licence: str | None  # shown to the analyst when not None (BirdNET: non-commercial)

    def name_spans(self, samples_16k: np.ndarray, spans: Sequence[tuple[float, float]],
                   top: int = 3) -> list[list[tuple[str, float]]]:
        """For each (start, end) span in seconds from the start of ``samples_16k``: its ``top``
        labels with their probabilities, best first ([] for a span with no audio in it)."""
        ...


@runtime_checkable
class AudioEmbedder(Protocol):
    """Frame-level audio features (models/backends/audio_embed.py: a user's Wav2Vec2 / HuBERT)."""

    name: str
    dim: int

    def embed(self, samples_16k: np.ndarray, hop_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(times (T,), feats (T, dim))``: one row per ``hop_s`` stretch, at its centre in seconds."""
        ...
