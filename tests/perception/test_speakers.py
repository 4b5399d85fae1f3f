"""Speaker diarization (core/perception/speakers.py): the error rate on hand-made turns, the turn
building around a stand-in embedder (tones instead of voices: plumbing only), and the real
Resemblyzer encoder on generated espeak-ng dialogues with known turns (tests/dialogues.py)."""
from __future__ import annotations

import numpy as np
import pytest

import dialogues
from core.perception.speakers import (Diarization, DiarizationError, Turn, cluster, der, diarize,
                                      windows_for)
from modelkit import no_network
from models.catalogue import get_spec, load_model

SR = 16000


# --- der() on hand-made turns ------------------------------------------------------------
REF = [(0.0, 10.0, "A"), (10.0, 20.0, "B")]


def test_der_is_zero_for_the_reference_under_any_names():
    assert der(REF, REF, collar=0)["der"] == 0
    assert der(REF, [(0.0, 10.0, 7), (10.0, 20.0, 3)], collar=0)["der"] == 0


def test_der_counts_one_speaker_for_two_as_confusion():
    r = der(REF, [(0.0, 20.0, 0)], collar=0)
    assert r["der"] == pytest.approx(0.5) and r["confusion"] == pytest.approx(0.5)
    assert r["missed"] == 0 and r["false_alarm"] == 0 and r["scored_s"] == pytest.approx(20.0)


def test_der_counts_missed_speech_and_false_alarms():
    r = der(REF, [(0.0, 5.0, 0), (10.0, 20.0, 1), (25.0, 29.0, 1)], collar=0)
    assert r["missed"] == pytest.approx(0.25) and r["false_alarm"] == pytest.approx(0.2)
    assert r["confusion"] == 0 and r["der"] == pytest.approx(0.45)


def test_der_maps_speakers_one_to_one():
    """Three hypothesis speakers for two: the third's time is confusion, whatever the names."""
    r = der(REF, [(0.0, 10.0, 0), (10.0, 15.0, 1), (15.0, 20.0, 2)], collar=0)
    assert r["confusion"] == pytest.approx(0.25)


def test_der_counts_unknown_speech_as_confusion_not_as_missed():
    r = der(REF, [(0.0, 10.0, 0), (10.0, 20.0, None)], collar=0)
    assert r["missed"] == 0 and r["confusion"] == pytest.approx(0.5)


def test_der_collar_forgives_boundaries_only():
    late = [(0.0, 10.2, 0), (10.2, 20.0, 1)]
    assert der(REF, late, collar=0)["der"] == pytest.approx(0.01, abs=1e-3)
    assert der(REF, late, collar=0.25)["der"] == 0
    assert der(REF, [(0.0, 11.0, 0), (11.0, 20.0, 1)], collar=0.25)["der"] > 0.03


def test_der_of_overlapping_reference_speech():
    ref = [(0.0, 10.0, "A"), (5.0, 15.0, "B")]
    r = der(ref, [(0.0, 10.0, 0), (10.0, 15.0, 1)], collar=0)  # the overlap's second voice missed
    assert r["missed"] == pytest.approx(5 / 20) and r["confusion"] == 0


def test_der_edge_cases():
    assert der([], [], collar=0)["der"] == 0
    assert der([], [(0, 1, 0)], collar=0)["der"] == 1
    assert der([Turn(0.0, 4.0, 0, 0.9)], [Turn(0.0, 4.0, 5, 0.8)], collar=0)["der"] == 0
    with pytest.raises(ValueError, match="before its end"):
        der([(3.0, 1.0, "A")], [])


# --- the code around the encoder, with a stand-in (PLUMBING: tones, not voices) -------------
class ToneEmbedder:
    """A stand-in speaker encoder: the window's dominant frequency picks a direction, so a
    'voice' is a tone. Proves the turn building, never the model's quality."""

    freqs = (200.0, 450.0, 900.0)

    def embed(self, windows):
        out = []
        for w in windows:
            spec = np.abs(np.fft.rfft(w * np.hanning(w.size)))
            f = np.argmax(spec) * SR / w.size
            v = np.full(len(self.freqs), 0.05)
            v[int(np.argmin([abs(f - x) for x in self.freqs]))] = 1.0
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)


def tones(parts):
    """Concatenated (seconds, tone index or None for silence) → audio and reference turns."""
    out, ref, t = [], [], 0.0
    for secs, k in parts:
        n = int(secs * SR)
        x = np.arange(n) / SR
        out.append(0.3 * np.sin(2 * np.pi * ToneEmbedder.freqs[k] * x) if k is not None else np.zeros(n))
        if k is not None:
            ref.append((t, t + secs, k))
        t += secs
    return np.concatenate(out).astype(np.float32), ref


def test_windows_cover_each_segment_and_skip_slivers():
    w = windows_for([(0.0, 4.0), (5.0, 5.8), (7.0, 7.1)], 1.5, 0.75, 0.3)
    assert [x[1] for x in w if x[0] == 0] == [0.0, 0.75, 1.5, 2.25, 2.5]
    assert all(b - a == pytest.approx(1.5) for k, a, b in w if k == 0)
    assert (1, 5.0, 5.8) in w and not [x for x in w if x[0] == 2]


def test_cluster_drops_a_voice_heard_too_briefly():
    a, b = np.eye(3)[0], np.eye(3)[1]
    emb = np.array([a, a, a, a, b], np.float32)
    labels = cluster(emb, np.full(5, 0.75), threshold=0.3, min_weight=2.0, min_similarity=0.6)
    assert labels.tolist() == [0, 0, 0, 0, -1]


def test_diarize_tones_turns_inside_and_across_speech_segments():
    audio, ref = tones([(0.5, None), (4.0, 0), (0.6, None), (3.0, 1), (3.0, 0), (0.8, None), (4.0, 2),
                        (0.5, None)])
    speech = [(a, b) for a, b, _ in ref]
    speech = [speech[0], (speech[1][0], speech[2][1]), speech[3]]  # tones 1→0 with no pause
    d = diarize(audio, speech, embedder=ToneEmbedder())
    assert isinstance(d, Diarization) and d.n_speakers == 3
    assert [t.speaker for t in d.turns] == [0, 1, 0, 2]
    assert d.turns[1].end == pytest.approx(8.1, abs=0.4)  # the change inside one segment
    assert der(ref, d.turns)["der"] < 0.05
    assert all(0.8 < t.confidence <= 1.0 for t in d.turns)  # lower where windows straddle a change


def test_diarize_leaves_short_and_weak_speech_unknown():
    audio, ref = tones([(0.3, None), (5.0, 0), (0.5, None), (0.2, 1), (0.5, None)])
    d = diarize(audio, [(0.3, 5.3), (5.8, 6.0)], embedder=ToneEmbedder())
    assert d.n_speakers == 1 and d.turns[-1] == Turn(5.8, 6.0, None, 0.0)
    assert d.unknown_s() == pytest.approx(0.2) and d.speaker_time() == {0: pytest.approx(5.0)}
    assert "1 speaker:" in d.describe() and "speaker ? 5.8-6.0 s" in d.describe()


def test_a_voice_heard_only_in_snatches_is_not_counted():
    """Three 1-second interjections (3 s in all, none 2 s long) are not enough to fingerprint a
    speaker: they are given to the remaining voice when similar enough, else unknown."""
    parts = []
    for _ in range(3):
        parts += [(3.0, 0), (0.6, None), (1.0, 1), (0.6, None)]
    audio, ref = tones(parts)
    d = diarize(audio, [(a, b) for a, b, _ in ref], embedder=ToneEmbedder())
    assert d.n_speakers == 1 and [t.speaker for t in d.turns] == [0, None] * 3
    assert diarize(audio, [(a, b) for a, b, _ in ref], embedder=ToneEmbedder(),
                   min_longest_turn_s=0.5).n_speakers == 2


def test_diarize_without_speech_and_bad_input():
    d = diarize(np.zeros(SR, np.float32), [], embedder=ToneEmbedder())
    assert d.n_speakers == 0 and d.turns == [] and d.describe() == "No speech to tell speakers apart."
    with pytest.raises(DiarizationError, match="mono float32"):
        diarize(np.zeros((2, SR), np.float32), [(0, 1)], embedder=ToneEmbedder())
    with pytest.raises(DiarizationError, match="mono float32"):
        diarize(np.zeros(SR, np.int16), [(0, 1)], embedder=ToneEmbedder())


# --- the real encoder ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voices():
    """Resemblyzer's encoder, loaded with sockets blocked."""
    with no_network():
        return load_model("resemblyzer-voices")


@pytest.fixture(scope="module")
def vad():
    with no_network():
        return load_model("silero-vad")


def test_catalogue_entry_and_the_features_resemblyzer_computes(voices):
    librosa = pytest.importorskip("librosa")
    spec = get_spec("resemblyzer-voices")
    assert spec.task == "speaker-embed" and spec.weights["files"] == ["pretrained.pt"]
    x = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=400, hop_length=160, n_mels=40).T
    ours = voices.mel_frames(x)
    assert ours.shape == ref.shape == (101, 40)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    e = voices.embed([x, x[:8000], x * 0.1])
    assert e.shape == (3, 256) and e.dtype == np.float32 and (e >= 0).all()
    assert np.linalg.norm(e, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert float(e[0] @ e[2]) == pytest.approx(1.0, abs=1e-4)  # loudness does not change the voice
    with pytest.raises(ValueError, match="25 ms"):
        voices.embed([x[:100]])


def test_real_encoder_tells_two_espeak_voices_apart(voices, vad):
    d = dialogues.make_dialogue("two", ["us-f4", "rp-m7"], [0, 1, 0, 1, 1, 0], seed=3)
    r = diarize(d.audio, vad.segments(d.audio), embedder=voices)
    assert r.n_speakers == 2, r.describe()
    e = der(d.turns, r.turns)
    assert e["der"] < 0.15, (e, r.describe())
    known = [t for t in r.turns if t.speaker is not None]
    assert len(known) == len(d.turns)
    for (a, b, _), t in zip(d.turns, known):  # every turn found, its edges within 0.4 s
        assert abs(t.start - a) < 0.4 and abs(t.end - b) < 0.4, (d.turns, r.turns)
    assert all(t.confidence > 0.7 for t in known)


def test_real_encoder_hears_one_voice_as_one_speaker(voices, vad):
    d = dialogues.make_dialogue("solo", ["sc-m1"], [0] * 5, seed=4)
    r = diarize(d.audio, vad.segments(d.audio), embedder=voices)
    assert r.n_speakers == 1, r.describe()
    assert der(d.turns, r.turns)["der"] < 0.1
