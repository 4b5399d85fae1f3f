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
