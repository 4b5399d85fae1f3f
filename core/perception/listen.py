"""The analysis job's audio steps beyond VAD and ASR: who speaks (diarization), loud sounds, and
which transcript segments a voice supports.

:func:`core.perception.analysis._run_audio` runs the requested audio models, then
:func:`after_audio` on the same 16 kHz buffer:

- **voice support**: every Whisper segment gets ``voiced``, the share of it Silero's voice
  activity covers (the VAD output of the same job, or Silero run here through
  :func:`models.loaded.held`). Whisper writes words over a bang or a hiss ("You"); such a
  segment is speech only where a voice supports it — ``voiced`` ≥ ``MIN_VOICED`` — or, with no
  VAD at hand, where Whisper's own confidence (``exp(avg_logprob)``) reaches ``MIN_ASR_SCORE``.
  The others are kept as *unsupported* (``data["speech"] = False``), never facts.
- **speakers** (model ``resemblyzer-voices``, task ``speaker-embed``): :func:`core.perception.speakers.diarize`
  over the voice activity; turns "Speaker 1", "Speaker 2"… (None: a voice too short or too
  unlike any speaker to name). On little speech the minimum a voice must hold to count drops
  from 2 s to a quarter of the speech heard (at least 1 s): short voices are counted, and the
  chat says the evidence is weak.
- **loud sounds** (output ``loud-sounds``, task ``sounds``; always, whenever audio is read):
  :func:`core.perception.sounds.find_sounds` against the file's own noise floor, speech excluded;
  names only from a requested ``audio-tags`` model (a ``SoundNamer``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.types import SpeechSegment

log = logging.getLogger(__name__)

SR = 16000
MIN_VOICED = 0.2  # share of a transcript segment the VAD must cover for it to count as speech
MIN_ASR_SCORE = 0.5  # Whisper's exp(avg_logprob) that stands for a voice when no VAD ran
STRONG_ASR_SCORE = 0.8  # ... and that outweighs a VAD that heard nothing there
SOUNDS = "loud-sounds"
TASKS = ("speaker-embed", "sounds", "audio-tags")


@dataclass(frozen=True)
class HeardSegment(SpeechSegment):
    """A transcript segment with the evidence that a voice said it."""

    voiced: float | None = None  # share covered by voice activity; None: no VAD ran
    speech: bool = True  # does the evidence support it as speech?


def supported(score: float, voiced: float | None) -> bool:
    """Does the evidence make a transcript segment speech? (see the module doc)"""
    if voiced is None:
        return score >= MIN_ASR_SCORE
    return voiced >= MIN_VOICED or score >= STRONG_ASR_SCORE


def adaptive_minimum(speech_s: float) -> float:
    """Seconds of speech a voice must hold to count as a speaker: 2 s, less on little speech."""
    return float(min(2.0, max(1.0, 0.25 * speech_s)))


def _voice(audio: np.ndarray, start: float, names, loaded, outputs) -> list[tuple[float, float]] | None:
    """Voice activity over the buffer, buffer times: the job's own VAD output, else Silero here;
    None when neither is available."""
    for n in names:
        out = outputs[n]
        if out.task == "vad" and not out.error:
            return [(s.start - start, s.end - start) for s in out.segments]
    try:
        from models.loaded import held
        return [(s.start, s.end) for s in held("silero-vad").segments(audio)]
    except Exception as e:  # no VAD: the transcript's own confidence decides, and no diarization
        log.warning("no voice activity for the audio steps: %s", e)
        return None


def after_audio(req, end: float, audio: np.ndarray, names, loaded, outputs, state, *, output, partial,
                fail) -> None:
    """The steps after the audio models (see the module doc), on ``audio`` (16 kHz, from ``req.start``).
    ``output``, ``partial``, ``fail``: the job's ModelOutput and AnalysisPartial types and its
    failure recorder (core.perception.analysis; passed in, so this module does not import it)."""
    t0 = time.perf_counter()
    voice = _voice(audio, req.start, names, loaded, outputs)
    speech = [(a + req.start, b + req.start) for a, b in voice] if voice is not None else None
    for n in names:
        out = outputs[n]
        if out.task == "asr" and not out.error:
            out.segments = [_support(s, speech) for s in out.segments]
    for n in names:
        out = outputs[n]
        if out.task != "speaker-embed" or out.error:
            continue
        t1 = time.perf_counter()
        if voice is None:
            out.error = f"{out.title}: no voice activity to tell speakers apart in (Silero VAD is unavailable)."
            continue
        try:
            from core.perception.speakers import diarize
            total = sum(b - a for a, b in voice)
            m = adaptive_minimum(total)
            d = diarize(audio, voice, embedder=loaded[n], min_speaker_s=m, min_longest_turn_s=m)
        except Exception as e:
            if type(e).__name__ == "Cancelled":
                raise
            fail(out, e)
            continue
        out.segments = [replace(t, start=t.start + req.start, end=t.end + req.start) for t in d.turns]
        out.params = {**out.params, "min_speaker_s": round(m, 2)}
        out.duration_s += time.perf_counter() - t1
        state.set_partial_result(partial(n, out.task, segments=tuple(out.segments)))
    namer = next((loaded[n] for n in names if outputs[n].task == "audio-tags" and not outputs[n].error), None)
    from core.perception.sounds import VERSION, find_sounds
    t1 = time.perf_counter()
    out = output(SOUNDS, "Loud sounds (onset and level)", "sounds", VERSION,
                 {"start": round(req.start, 3), "end": round(end, 3),
                  "namer": getattr(namer, "name", None)}, started_at=time.time())
    try:
        found = find_sounds(audio, voice or (), namer)
    except Exception as e:
        if type(e).__name__ == "Cancelled":
            raise
        fail(out, e)
    else:
        out.segments = [replace(e, start=e.start + req.start, end=e.end + req.start) for e in found.events]
        out.params["floor_db"] = found.floor_db
        if namer is not None:
            out.params["licence"] = getattr(namer, "licence", None)
    out.duration_s = time.perf_counter() - t1
    outputs[SOUNDS] = out
    state.set_partial_result(partial(SOUNDS, out.task, segments=tuple(out.segments)))
    log.debug("audio steps in %.2f s", time.perf_counter() - t0)


def _support(seg: Any, speech: list[tuple[float, float]] | None) -> HeardSegment:
    voiced = None
    if speech is not None:
        span = max(seg.end - seg.start, 1e-6)
        voiced = round(sum(max(0.0, min(seg.end, b) - max(seg.start, a)) for a, b in speech) / span, 3)
    return HeardSegment(seg.start, seg.end, seg.text, seg.score, tuple(getattr(seg, "words", ()) or ()),
                        voiced, supported(float(seg.score), voiced))


def tracks(out, run_id: int | None = None) -> list:
    """Timeline tracks of the audio steps: "speakers" (one item per turn) and "sounds"."""
    from core.timeline import Item, Track

    if out.task == "speaker-embed":
        turns = list(out.segments)
        n = len({t.speaker for t in turns if t.speaker is not None})
        per: dict[int, float] = {}
        for t in turns:
            if t.speaker is not None:
                per[t.speaker] = per.get(t.speaker, 0.0) + t.end - t.start
        items = [Item(t.start, t.end, f"Speaker {t.speaker + 1}" if t.speaker is not None else "voice not told apart",
                      float(t.confidence), run_id,
                      {"speaker": t.speaker, "n_speakers": n,
                       "speaker_s": round(per.get(t.speaker, 0.0), 2) if t.speaker is not None else None})
                 for t in turns]
        return [Track("speakers", "speakers", items, run_id=run_id,
                      meta={"model": out.name, "n_speakers": n,
                            "min_speaker_s": out.params.get("min_speaker_s")})]
    if out.task == "sounds":
        items = [Item(e.start, e.end, e.label, float(e.score), run_id,
                      {"kind": e.kind, "peak_db": e.peak_db, "over_floor_db": e.over_floor_db,
                       "named_by": e.named_by, "names": [[lb, round(p, 3)] for lb, p in e.names]})
                 for e in out.segments]
        return [Track("sounds", "loud sounds", items, run_id=run_id,
                      meta={"model": out.name, "floor_db": out.params.get("floor_db"),
                            "namer": out.params.get("namer"), "licence": out.params.get("licence")})]
    return []
