"""Loud sounds (core/perception/sounds.py) and the analysis job's audio steps (core/perception/listen.py).

Synthetic bursts and tones check the level-and-onset rules (impacts counted and timed, speech,
the first 200 ms and sustained sounds never called impacts); a stand-in namer checks only the
plumbing of names (it proves no naming quality: names come only from a model the user gives);
the real pygame boom/punch recordings mixed into a quiet room at known times check the impacts on
real sounds; and the real analysis job (Silero, Whisper tiny, Resemblyzer) checks that Whisper's
words over a bang are not speech, that the bangs are a stored "sounds" track, and that a generated
two-voice dialogue gives a "speakers" track with two voices."""
from __future__ import annotations

import numpy as np
import pytest

import dialogues
from core.perception.sounds import IMPACT, SOUND, SoundError, find_sounds, levels_db

SR = 16000


def room(seconds: float, level: float = 0.002, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, int(seconds * SR)).astype(np.float32)


def burst(seconds: float = 0.4, peak: float = 0.8, seed: int = 1) -> np.ndarray:
    """A bang: broadband noise with a sharp attack and an exponential decay."""
    t = np.arange(int(seconds * SR)) / SR
    return (np.random.default_rng(seed).normal(0, 1, t.size) * np.exp(-t / 0.06) * peak).astype(np.float32)


def put(track: np.ndarray, sound: np.ndarray, at: float) -> np.ndarray:
    i = int(at * SR)
    track[i:i + sound.size] += sound
    return track


def test_one_bang_is_one_impact_at_its_onset():
    found = find_sounds(put(room(8.0), burst(), 3.0))
    assert [e.kind for e in found.events] == ["impact"]
    e = found.events[0]
    assert e.start == pytest.approx(3.0, abs=0.03) and e.end < 4.0
    assert e.label == IMPACT and not e.named and e.over_floor_db > 40
    assert found.floor_db == pytest.approx(20 * np.log10(0.002), abs=3)


def test_two_bangs_are_counted_apart():
    found = find_sounds(put(put(room(10.0), burst(), 2.5), burst(seed=2), 7.0))
    assert [round(e.start, 1) for e in found.impacts] == [2.5, 7.0]


def test_silence_and_faint_clicks_are_nothing():
    assert find_sounds(room(6.0)).events == []
    assert find_sounds(put(room(6.0), burst(peak=0.02), 3.0)).events == []  # under 30 dB over the floor
    assert find_sounds(np.zeros(SR * 2, np.float32)).events == []


def test_onsets_inside_speech_are_not_impacts():
    sig = put(room(8.0), burst(), 3.0)
    assert find_sounds(sig, speech=[(2.8, 4.0)]).events == []
    assert len(find_sounds(sig, speech=[(5.0, 6.0)]).impacts) == 1


def test_a_sound_that_stays_is_no_impact_and_the_start_is_no_onset():
    t = np.arange(3 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    found = find_sounds(put(room(8.0), tone, 2.0))
    assert [e.kind for e in found.events] == ["sound"] and found.events[0].label == SOUND
    assert found.events[0].end - found.events[0].start == pytest.approx(3.0, abs=0.1)
    loud_from_start = put(room(4.0), burst(), 0.0)
    assert find_sounds(loud_from_start).impacts == []


class StandInNamer:
    """Plumbing only: answers fixed labels, as a SoundNamer would."""

    name, licence = "stand-in", None

    def __init__(self, p: float) -> None:
        self.p, self.calls = p, []

    def name_spans(self, samples_16k, spans, top=3):
        self.calls.append(list(spans))
        return [[("Dog", self.p), ("Speech", self.p / 2)] for _ in spans]


def test_names_come_only_from_the_namer_and_only_when_it_is_sure():
    sig = put(room(6.0), burst(), 2.0)
    sure = find_sounds(sig, namer=StandInNamer(0.8))
    e = sure.events[0]
    assert (e.label, e.named_by, e.score) == ("Dog", "stand-in", 0.8)
    unsure = find_sounds(sig, namer=StandInNamer(0.1)).events[0]
    assert unsure.label == IMPACT and not unsure.named and unsure.names[0] == ("Dog", 0.1)


def test_bad_audio_is_refused_and_levels_are_per_10_ms():
    with pytest.raises(SoundError):
        find_sounds(np.zeros((2, 100), np.float32))
    assert levels_db(np.ones(1600, np.float32)).tolist() == [0.0] * 10


@pytest.mark.parametrize("name, at", [("boom_wav", 6.0), ("punch_wav", 3.0)])
def test_real_recorded_bangs_are_found_at_their_time(name, at):
    from bench.qa_set import load_sound
    from core.media.samples import sample_path

    snd = load_sound(sample_path(name), SR)
    found = find_sounds(put(room(10.0), snd, at))
    assert len(found.impacts) == 1 and found.impacts[0].start == pytest.approx(at, abs=0.05)


def test_analysis_marks_words_over_bangs_as_no_speech_and_stores_the_bangs(tmp_path):
    """Whisper writes a word over the booms; Silero hears no voice there: the transcript item is
    kept with speech False, and the job's "sounds" track holds the two bangs."""
    from bench.qa_set import build
    from core.chat.perception_log import PerceptionLog
    from core.jobs import HeadlessState
    from core.media.samples import sample_path
    from core.perception.analysis import AnalysisRequest, analyze, tracks_for

    clip = build("two_booms", tmp_path, sample_path)
    res = analyze(AnalysisRequest(path=str(clip), models=("whisper-tiny",)), HeadlessState())
    tracks = {(t.kind, t.name): t for out in res.outputs.values() for t in tracks_for(out, 0.5)}
    sounds = tracks[("sounds", "loud sounds")]
    assert [round(i.start, 1) for i in sounds.items] == [2.5, 7.0]
    assert all(i.data["kind"] == "impact" and not i.data["named_by"] for i in sounds.items)
    words = tracks[("speech", "transcript")].items
    assert all(i.data["speech"] is False and i.data["voiced"] == 0 for i in words)
    log = PerceptionLog.from_tracks(tracks.values())
    assert [o for o in log.observations() if o.kind == "speech"] == []
    assert len(log.sounds) == 2


def test_analysis_tells_two_voices_apart_as_a_speakers_track(tmp_path):
    import soundfile as sf

    from core.jobs import HeadlessState
    from core.perception.analysis import AnalysisRequest, analyze, tracks_for

    d = dialogues.make_dialogue("two", ["us-f4", "rp-m7"], [0, 1, 0, 1], seed=3)
    path = tmp_path / "call.wav"
    sf.write(str(path), d.audio, SR)
    res = analyze(AnalysisRequest(path=str(path), models=("silero-vad", "resemblyzer-voices")), HeadlessState())
    assert res.outputs["resemblyzer-voices"].error is None
    (tr,) = [t for out in res.outputs.values() for t in tracks_for(out, 0.5) if t.kind == "speakers"]
    assert tr.meta["n_speakers"] == 2
    labels = [i.label for i in tr.items if i.data["speaker"] is not None]
    assert labels[:2] == ["Speaker 1", "Speaker 2"]
    second = min(i.start for i in tr.items if i.label == "Speaker 2")
    assert second == pytest.approx(d.turns[1][0], abs=0.5)


def test_birdnet_names_a_siren_only_once_its_licence_is_accepted(tmp_path):
    """BirdNET ships but is off (CC BY-NC-SA 4.0): the job says why and still finds the unnamed loud
    sound; with the licence accepted, the same stretch is named by BirdNET."""
    import soundfile as sf

    from core.jobs import HeadlessState
    from core.perception.analysis import AnalysisRequest, analyze, tracks_for

    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    siren = 0.5 * np.sin(2 * np.pi * np.cumsum(900 + 400 * np.sin(2 * np.pi * 0.5 * t)) / SR)
    audio = np.concatenate([0.003 * rng.standard_normal(4 * SR), siren, 0.003 * rng.standard_normal(3 * SR)])
    path = tmp_path / "siren.wav"
    sf.write(path, audio.astype(np.float32), SR)

    def sounds(accept):
        res = analyze(AnalysisRequest(path=str(path), models=("silero-vad", "birdnet-sounds"),
                                      accept_licences=accept), HeadlessState())
        items = [i for out in res.outputs.values() for tr in tracks_for(out, 0.5) if tr.kind == "sounds"
                 for i in tr.items]
        return res.errors, [(round(i.start), i.label) for i in items]

    errors, found = sounds(())
    assert "non-commercial" in errors["birdnet-sounds"] and "--accept-licence" in errors["birdnet-sounds"]
    assert found == [(4, "sound")]
    errors, found = sounds(("birdnet-sounds",))
    assert errors == {} and found == [(4, "Siren")]
