"""Generated dialogues with known turns: espeak-ng voices taking turns, for diarization tests
and ``bench/diarization.py``.

A *voice* is an espeak-ng voice name with a variant and a pitch (``("en-us+m3", 40)``); each line
is spoken, its leading and trailing silence trimmed (so a reference turn is where the voice is
actually heard), and lines are joined with pauses. The reference turns are ``(start, end,
speaker)`` in seconds with ``speaker`` the index into the voices given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mediagen import espeak

SR = 16000

#: Clearly different espeak-ng voices (language variant + voice variant + pitch 0..99).
VOICES: dict[str, tuple[str, int]] = {
    "us-m3": ("en-us+m3", 35),
    "gb-f2": ("en-gb+f2", 60),
    "sc-m1": ("en-gb-scotland+m1", 50),
    "us-f4": ("en-us+f4", 75),
    "rp-m7": ("en-gb-x-rp+m7", 20),
    "ca-f5": ("en-029+f5", 55),
}

SENTENCES = [
    "Did you see the van parked by the gate this morning?",
    "No, I came in through the side entrance after eight.",
    "It was white, with a ladder on the roof and a broken mirror.",
    "Then we should check the camera above the loading bay.",
    "The recording from yesterday stops at half past six.",
    "Somebody must have switched it off before the delivery.",
    "I will ask the night guard what he noticed.",
    "Please write down the plate number if you find it.",
    "The weather was clear, so the picture should be sharp.",
    "Let us meet again at noon and compare our notes.",
    "There were two people walking towards the car park.",
    "One of them carried a large black bag over his shoulder.",
]


def say(text: str, voice: tuple[str, int], wpm: int = 165, rate: int = SR) -> np.ndarray:
    """espeak-ng saying ``text`` in ``voice`` (name, pitch): mono float32 at ``rate``, silence
    at both ends trimmed. Raises RuntimeError without espeak-ng."""
    name, pitch = voice
    audio = espeak(text, voice=name, pitch=pitch, wpm=wpm, rate=rate)
    loud = np.flatnonzero(np.abs(audio) > 0.01 * max(1e-6, float(np.abs(audio).max())))
    return audio[loud[0]:loud[-1] + 1] if loud.size else audio[:0]


@dataclass(frozen=True)
class Dialogue:
    name: str
    audio: np.ndarray  # mono float32 at SR
    turns: list[tuple[float, float, int]]  # reference: start, end (s), speaker index
    voices: tuple[str, ...]

    @property
    def n_speakers(self) -> int:
        return len({s for _, _, s in self.turns})

    @property
    def duration(self) -> float:
        return self.audio.size / SR


def make_dialogue(name: str, voices: list[str], order: list[int], *, seed: int = 0,
                  pause: tuple[float, float] = (0.4, 1.0), lead: float = 0.5, noise: float = 0.002,
                  wpm: int = 165) -> Dialogue:
    """Voices (keys of VOICES) speaking in ``order`` (indices into ``voices``), one sentence each
    (from SENTENCES, drawn by ``seed``), separated by pauses drawn uniformly from ``pause``, over
    faint white noise; never overlapping."""
    rng = np.random.default_rng(seed)
    texts = [SENTENCES[i] for i in rng.permutation(len(SENTENCES))]
    parts = [np.zeros(int(lead * SR), np.float32)]
    turns = []
    t = lead
    for k, who in enumerate(order):
        speech = say(texts[k % len(texts)], VOICES[voices[who]], wpm=wpm) * float(rng.uniform(0.5, 0.9))
        turns.append((round(t, 3), round(t + speech.size / SR, 3), who))
        gap = float(rng.uniform(*pause))
        parts += [speech, np.zeros(int(gap * SR), np.float32)]
        t += speech.size / SR + int(gap * SR) / SR
    parts.append(np.zeros(int(lead * SR), np.float32))
    audio = np.concatenate(parts)
    audio = audio + rng.standard_normal(audio.size).astype(np.float32) * noise
    return Dialogue(name, np.clip(audio, -1, 1).astype(np.float32), turns, tuple(voices))
