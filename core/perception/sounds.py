"""Loud sounds in a file's audio: impacts found by onset and level, other sounds only where a model names them.

How to use::

    from core.media.audio import load_mono
    from core.perception.sounds import find_sounds

    audio = load_mono(path)                                   # 16 kHz mono float32
    found = find_sounds(audio, speech=[(1.0, 3.5)])           # speech spans from the VAD
    found.floor_db                                            # the file's own noise floor, dBFS
    [(e.start, e.label) for e in found.events]                # [(6.0, "loud sound")]

What it finds, and on what evidence:

- **Impacts** (a bang, a thud, a knock, a slam): a sudden rise of the level — at least
  ``rise_db`` over the 200 ms before, within ``attack_s`` — to a peak at least ``over_floor_db``
  above the file's own noise floor (its 10th percentile of 10 ms levels; never digital silence,
  ``FLOOR_MIN_DB``). The event lasts until the level falls back to ``tail_db`` over the floor.
  An onset in the first 200 ms (no level before it to rise from) is no impact, and a loud stretch
  that has not died away within ``max_impact_s`` (2 s) is a sound, not an impact.
  Onsets inside speech (``speech``: the VAD's spans) are the speech's own syllables, not impacts:
  an impact during speech is missed, said here rather than guessed.
- **Other sounds**: a stretch outside speech ``over_floor_db`` - 10 dB above the floor for at
  least ``min_sound_s`` without a sharp onset (an engine, music, a siren). Kept as an unnamed
  "sound" with its level.
- **Names**: only from a model (``namer``: ``name_spans(samples_16k, spans, top=3) -> [[(label, p)]]``,
  e.g. an AudioSet classifier from a user's folder). A name is kept where its probability reaches
  ``min_name_p``; otherwise the event stays "loud sound" / "sound" — never an invented name.

Levels are RMS over 10 ms frames in dBFS. Nothing here loads a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from core.media.audio import mono_float
from models.errors import KestrelError

SR = 16000
FRAME = 160  # 10 ms
FLOOR_MIN_DB = -90.0
VERSION = "1"
IMPACT = "loud sound"  # the label of an impact no model named
SOUND = "sound"  # the label of any other sound no model named


class SoundError(KestrelError):
    """The audio given cannot be searched for sounds (wrong shape or type)."""


@dataclass(frozen=True)
class SoundEvent:
    start: float  # seconds from the start of the audio given
    end: float
    label: str  # a model's name for it, or IMPACT / SOUND
    score: float  # the model's probability when named; else the level's margin as 0..1
    kind: str  # "impact" (sudden onset) | "sound" (a sustained level)
    peak_db: float  # loudest 10 ms, dBFS
    over_floor_db: float  # peak above the file's noise floor
    named_by: str = ""  # the model that named it ("" when none did)
    names: tuple[tuple[str, float], ...] = ()  # the model's top labels, whatever their probability

    @property
    def named(self) -> bool:
        return bool(self.named_by)


@dataclass(frozen=True)
class Sounds:
    events: list[SoundEvent]
    floor_db: float  # the file's noise floor, dBFS
    duration_s: float
    settings: dict[str, float] = field(default_factory=dict)

    @property
    def impacts(self) -> list[SoundEvent]:
        return [e for e in self.events if e.kind == "impact"]


def levels_db(samples: np.ndarray) -> np.ndarray:
    """RMS level of each 10 ms frame, dBFS (floored at FLOOR_MIN_DB)."""
    n = samples.size // FRAME
    if n == 0:
        return np.zeros(0, np.float32)
    fr = samples[:n * FRAME].astype(np.float64).reshape(n, FRAME)
    rms = np.sqrt(np.mean(fr * fr, axis=1))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), FLOOR_MIN_DB).astype(np.float32)


def _spans(speech: Iterable[Any]) -> list[tuple[float, float]]:
    out = []
    for s in speech or ():
        a, b = (s.start, s.end) if hasattr(s, "start") else (float(s[0]), float(s[1]))
        if b > a:
            out.append((float(a), float(b)))
    return sorted(out)


def find_sounds(samples_16k: np.ndarray, speech: Iterable[Any] = (), namer: Any = None, *,
                rise_db: float = 15.0, attack_s: float = 0.05, over_floor_db: float = 30.0,
                tail_db: float = 12.0, min_gap_s: float = 0.3, min_sound_s: float = 0.5,
                min_name_p: float = 0.3, speech_pad_s: float = 0.1, max_impact_s: float = 2.0) -> Sounds:
    """Impacts and other loud sounds in ``samples_16k`` (mono float32, 16 kHz); see the module doc."""
    audio = mono_float(samples_16k, SoundError, "Sound search", SR)
    settings = dict(rise_db=rise_db, attack_s=attack_s, over_floor_db=over_floor_db, tail_db=tail_db,
                    min_gap_s=min_gap_s, min_sound_s=min_sound_s, min_name_p=min_name_p,
                    max_impact_s=max_impact_s)
    lv = levels_db(audio)
    dur = audio.size / SR
    if lv.size == 0:
        return Sounds([], FLOOR_MIN_DB, dur, settings)
    floor = float(np.percentile(lv, 10))
    step = FRAME / SR
    talk = _spans(speech)

    def in_speech(t: float) -> bool:
        return any(a - speech_pad_s <= t <= b + speech_pad_s for a, b in talk)

    before = max(1, int(round(0.2 / step)))
    attack = max(1, int(round(attack_s / step)))
    events: list[SoundEvent] = []
    i, n = 0, lv.size
    busy_until = -1
    while i < n:
        if i <= busy_until:
            i += 1
            continue
        ref = float(np.median(lv[max(0, i - before):i])) if i > 0 else floor
        ref = max(ref, floor)
        top = int(i + np.argmax(lv[i:i + attack]))
        peak = float(lv[top])
        if (i >= before and lv[i] - ref >= 6.0 and peak - ref >= rise_db and peak - floor >= over_floor_db
                and not in_speech(i * step)):
            end = _fall(lv, top, floor + tail_db)
            peak = float(lv[i:end + 1].max())
            short = (end + 1 - i) * step <= max_impact_s  # a bang dies away; a sound that stays is no impact
            events.append(SoundEvent(i * step, (end + 1) * step, IMPACT if short else SOUND,
                                     _margin(peak - floor, over_floor_db), "impact" if short else "sound",
                                     round(peak, 1), round(peak - floor, 1)))
            busy_until = end + int(round(min_gap_s / step))
            i = end + 1
            continue
        i += 1
    # sustained sounds: loud stretches outside speech and outside the impacts
    loud = lv >= floor + over_floor_db - 10.0
    for a, b in _runs(loud):
        s, e = a * step, b * step
        if e - s < min_sound_s or any(x.start - min_gap_s <= s <= x.end or s <= x.start <= e for x in events):
            continue
        if sum(min(e, tb) - max(s, ta) for ta, tb in talk if tb > s and ta < e) > 0.3 * (e - s):
            continue
        peak = float(lv[a:b].max())
        events.append(SoundEvent(s, e, SOUND, _margin(peak - floor, over_floor_db), "sound", round(peak, 1),
                                 round(peak - floor, 1)))
    events.sort(key=lambda e: e.start)
    if namer is not None and events:
        events = name_events(audio, events, namer, min_name_p)
    return Sounds(events, round(floor, 1), dur, settings)


def name_events(audio: np.ndarray, events: Sequence[SoundEvent], namer: Any, min_name_p: float) -> list[SoundEvent]:
    """Each event with the namer's best label where its probability reaches ``min_name_p``
    (else unnamed, its top labels kept for the record)."""
    from dataclasses import replace

    spans = [(e.start, max(e.end, e.start + 0.5)) for e in events]
    got = namer.name_spans(audio.astype(np.float32), spans, top=3)
    who = str(getattr(namer, "name", type(namer).__name__))
    out = []
    for e, tops in zip(events, got):
        tops = tuple((str(lb), float(p)) for lb, p in (tops or ()))
        best = max(tops, key=lambda x: x[1], default=None)
        if best is not None and best[1] >= min_name_p:
            out.append(replace(e, label=best[0], score=round(best[1], 3), named_by=who, names=tops))
        else:
            out.append(replace(e, names=tops))
    return out


def _fall(lv: np.ndarray, i: int, level: float) -> int:
    """The last frame from ``i`` on before the level stays under ``level`` for 50 ms."""
    quiet = 0
    j = i
    while j + 1 < lv.size:
        j += 1
        quiet = quiet + 1 if lv[j] < level else 0
        if quiet >= 5:
            return j - quiet
    return lv.size - 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _margin(over: float, need: float) -> float:
    """How far over the bar a level is, as 0..1: 0.5 at the bar, 1 at 20 dB over it."""
    return round(float(np.clip(0.5 + (over - need) / 40.0, 0.0, 1.0)), 3)
