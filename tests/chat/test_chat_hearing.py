"""What is heard, as facts computed in code (core/chat/hearing.py) and the grounding fixes around
them: speaker counts and turns from diarization, loud sounds by onset and level (names only where
a model named them), Whisper's words over a bang kept out of speech, unconfirmed boxes left out of
counts, the moment a question names ("at the start"), the whole of a sign's text, and a spoken
question's reply.

On constructed perception logs (no model), then through ``main.py chat``'s own path on generated
clips: a two-voice dialogue (espeak-ng) and two real recorded booms in a quiet room."""
from __future__ import annotations

import pytest

from bench.qa_set import Number, Time, YesNo
from core.chat.grounding import Grounding, ground, question_kind, reconcile
from core.chat.perception_log import PerceptionLog
from core.cli import command
from core.timeline import Item, Track

cmd_chat = command("chat")


def speakers_log(turns, duration=16.0) -> PerceptionLog:
    items = [Item(a, b, f"Speaker {s + 1}" if s is not None else "voice not told apart", 0.9, None,
                  {"speaker": s}) for a, b, s in turns]
    log = PerceptionLog.from_tracks([Track("speakers", "speakers", items)])
    log.has_audio, log.duration, log.heard = True, duration, (0.0, duration)
    return log


TWO = [(1.0, 3.5, 0), (5.9, 8.7, 1), (11.0, 12.8, 0)]


@pytest.mark.parametrize("q", ["How many speakers are there?", "How many different people speak?",
                               "Is more than one person speaking?", "When does the second voice start speaking?",
                               "Are there two different voices?", "What did the first speaker ask about?"])
def test_voice_questions_are_speaker_questions(q):
    assert question_kind(q, []) == "speakers"


@pytest.mark.parametrize("q", ["When does someone start speaking?", "What was said?", "Is anyone talking?",
                               "What does the sign say?"])
def test_other_speech_questions_are_not(q):
    assert question_kind(q, []) != "speakers"


def test_speakers_counted_placed_and_compared():
    log = speakers_log(TWO)
    count = ground("How many different speakers are there?", log, at=16.0)
    assert count.final and Number(2)(count.direct) and "Weak" not in count.direct
    when = ground("When does the second voice start speaking?", log, at=16.0).direct
    assert Time(5.9, 0.2)(when) and "Speaker 2" in when
    assert YesNo(True)(ground("Is more than one person speaking?", log, at=16.0).direct)
    assert YesNo(True)(ground("Are there two different voices?", log, at=16.0).direct)
    assert YesNo(False)(ground("Does the same person speak throughout?", log, at=16.0).direct)
    third = ground("When does the third voice start speaking?", log, at=16.0).direct
    assert "no third voice" in third


def test_who_first_who_at_a_moment_and_when_a_voice_stops():
    log = speakers_log(TWO)
    assert ground("Who speaks first?", log, at=16.0).direct.startswith("Speaker 1 speaks first, at [00:01]")
    assert ground("Who speaks last?", log, at=16.0).direct.startswith("Speaker 1 speaks last, at [00:11]")
    assert ground("Who is speaking at 00:07?", log, at=16.0).direct.startswith("At [00:07] Speaker 2 speaks")
    assert ground("Who is speaking at 00:10?", log, at=16.0).direct.startswith("No one speaks at [00:10]")
    stop = ground("When does the first speaker stop talking?", log, at=16.0).direct
    assert Time(12.8, 0.9)(stop) and "Speaker 1" in stop


def test_one_voice_is_no_second_and_silence_is_no_one():
    one = speakers_log([(4.0, 6.7, 0)], 12.0)
    assert YesNo(False)(ground("Are there two different voices?", one, at=12.0).direct)
    assert Number(1)(ground("How many speakers are there?", one, at=12.0).direct)
    assert YesNo(True)(ground("Is there only one speaker?", one, at=12.0).direct)
    none = speakers_log([], 10.0)
    assert Number(0)(ground("How many people are speaking?", none, at=10.0).direct)
    assert YesNo(False)(ground("Is more than one person speaking?", none, at=10.0).direct)


def test_brief_voices_and_loose_speech_are_weak_evidence():
    log = speakers_log([(1.0, 2.5, 0), (4.5, 5.7, 1), (8.0, 9.1, 1), (10.0, 10.6, None)], 12.0)
    text = ground("How many different people speak?", log, at=12.0).direct
    assert Number(2)(text) and "Weak evidence" in text and "Speaker 1 is heard only briefly" in text
    assert "0.6 s of speech could not be given to any voice" in text


def test_without_diarization_voices_are_not_counted():
    log = PerceptionLog.from_tracks([Track("speech", "voice activity", [Item(1.0, 3.0, "speech", 0.9)])])
    log.has_audio, log.duration, log.heard = True, 10.0, (0.0, 10.0)
    text = ground("How many speakers are there?", log, at=10.0).direct
    assert "cannot tell voices apart" in text and not Number(1)(text)


def test_what_a_given_voice_said_is_its_transcript_lines():
    log = speakers_log(TWO)
    for a, b, words in [(0.7, 3.7, "Is the warehouse open today?"), (6.3, 9.6, "Yes, we open at nine."),
                        (11.1, 12.8, "Thank you.")]:
        log.add_speech(a, b, words, 0.7)
    text = ground("What did the first speaker ask about?", log, at=16.0).direct
    assert "warehouse" in text and "nine" not in text
    assert "nine" in ground("What did the second speaker say?", log, at=16.0).direct


def sounds_log(events, duration=10.0, words=()) -> PerceptionLog:
    items = [Item(a, b, label, 0.9, None, {"kind": kind, "over_floor_db": 55.0, "named_by": by})
             for a, b, label, kind, by in events]
    tracks = [Track("sounds", "loud sounds", items, meta={"floor_db": -59.0})]
    if words:
        tracks.append(Track("speech", "transcript", [Item(a, b, w, 0.37, None, {"speech": ok, "voiced": 0.0})
                                                     for a, b, w, ok in words]))
    log = PerceptionLog.from_tracks(tracks)
    log.has_audio, log.duration, log.heard = True, duration, (0.0, duration)
    return log


BANGS = [(2.5, 3.6, "loud sound", "impact", ""), (7.0, 8.1, "loud sound", "impact", "")]


def test_bangs_counted_and_timed_without_a_name():
    log = sounds_log(BANGS)
    count = ground("How many loud bangs can be heard?", log, at=10.0)
    assert count.kind == "audio" and Number(2)(count.direct) and "unfamiliar loud sound" in count.direct
    assert Time(2.5, 0.6)(ground("When was the loud bang?", log, at=10.0).direct)
    assert Time(7.0, 0.6)(ground("When is the last loud bang heard?", log, at=10.0).direct)
    what = ground("What sound can be heard?", log, at=10.0).direct
    assert "unfamiliar loud sound" in what and "speech" not in what.lower()


def test_a_source_is_named_only_by_a_model():
    log = sounds_log(BANGS)
    bark = ground("When does the dog bark?", log, at=10.0).direct
    assert "cannot tell whether it heard a dog" in bark and "unfamiliar loud sounds" in bark and "[00:07]" in bark
    assert not YesNo(True)(bark) and not YesNo(False)(bark)  # neither: Kestrel does not know
    named = sounds_log([(4.0, 5.0, "Dog", "impact", "ast-user")])
    assert Time(4.0, 0.1)(ground("When does the dog bark?", named, at=10.0).direct)


def test_whisper_words_without_a_voice_are_not_speech():
    log = sounds_log(BANGS, words=[(8.6, 10.0, "You", False)])
    talk = ground("Can you hear anyone talking?", log, at=10.0).direct
    assert YesNo(False)(talk) and '"You"' in talk and "not counted" in talk
    assert [o for o in log.observations() if o.kind == "speech"] == []


def test_quiet_file_heard_nothing_and_never_loud():
    text = ground("What can be heard?", sounds_log([]), at=10.0).direct
    assert "nothing" in text and "loud" not in text


def test_unconfirmed_boxes_are_not_counted():
    items = [Item(5.0, 5.5, "person", s, None, {"box": [x, 10, x + 50, 200], "size": [640, 360], "confirmed": ok})
             for x, s, ok in [(100, 0.9, True), (300, 0.8, True), (218, 0.43, False)]]
    log = PerceptionLog.from_tracks([Track("boxes", "ssd", items, meta={"task": "detect"})])
    g = ground("How many people are there?", log, at=5.0)
    assert g.count == 2 and Number(2)(g.direct) and "did not confirm (score 0.43)" in g.direct


def test_a_moment_the_question_names_is_the_moment_asked():  # and its count is the answer as it stands
    items = [Item(t, t + 0.5, "person", 0.9, None, {"box": [10, 10, 50, 90], "size": [160, 120]})
             for t in (0.0, 0.5, 1.0, 1.5, 2.0)]
    log = PerceptionLog.from_tracks([Track("boxes", "ssd", items, meta={"task": "detect"})])
    log.seen = (0.0, 10.0)
    g = ground("Is there a person at the start of the video?", log, at=9.0)
    assert g.facts[0].text.startswith("Yes: at [00:00]")
    assert not ground("Is there a person?", log, at=9.0).facts[0].text.startswith("Yes")
    count = ground("How many people are there at the beginning?", log, at=9.0)
    assert count.final and count.direct.startswith("1 person at [00:00]")


def test_the_whole_sign_must_be_quoted():
    g = Grounding("What is written on the sign?", 4.0, "open", [], direct='The text reads "PLATFORM 4" [00:04].',
                  text_question=True)
    assert reconcile("The sign is written on the platform.", g) == (g.direct, True)
    assert reconcile('It says "PLATFORM" (read at [00:04]).', g) == (g.direct, True)
    assert reconcile("It reads PLATFORM 4.", g) == ("It reads PLATFORM 4.", False)


def test_a_spoken_question_brings_its_reply():
    log = PerceptionLog.from_tracks([Track("speech", "transcript", [
        Item(0.7, 3.7, "Good morning, is the warehouse open today?", 0.7),
        Item(6.3, 9.6, "Yes, we open at 9 and close at 5.", 0.7)])])
    g = ground("What time does the warehouse open?", log, at=16.0)
    assert g.final and "open at 9" in g.direct


def test_chat_counts_voices_and_bangs_on_generated_clips(tmp_path, capsys):
    """Through ``main.py chat``: the two-voice dialogue and the two real booms of the QA bench's clips."""
    from bench.qa_set import build
    from core.media.samples import sample_path

    dialogue = build("speech_two", tmp_path, sample_path)
    assert cmd_chat([str(dialogue), "--ask", "How many different speakers are there?", "--at", "16"]) == 0
    out = capsys.readouterr().out
    assert "2 speakers, told apart by voice" in out, out
    booms = build("two_booms", tmp_path, sample_path)
    assert cmd_chat([str(booms), "--ask", "How many loud bangs can be heard?", "--at", "10"]) == 0
    out = capsys.readouterr().out
    assert "2 loud sounds in the whole file" in out and "[00:02]" in out and "[00:07]" in out, out


def test_a_project_without_speaker_turns_is_listened_to_for_a_speaker_question(tmp_path, capsys):
    """The project holds only voice activity (analysed without the speaker model): the chat listens
    to the file's audio then (VAD, speaker encoder), instead of "cannot tell voices apart"."""
    from bench.qa_set import build
    from core.jobs import HeadlessState
    from core.media.decode import probe
    from core.media.samples import sample_path
    from core.perception import ops
    from core.perception.analysis import AnalysisRequest, analyze
    from core.store.project import Project

    clip = build("speech_two", tmp_path, sample_path)
    res = analyze(AnalysisRequest(path=str(clip), models=("silero-vad",)), HeadlessState())
    with Project.create(tmp_path / "call.kestrel") as p:
        mid = ops.register_media(p, probe(str(clip)))
        ops.store_analysis(p, mid, res.outputs["silero-vad"], 0.5)
        assert "speakers" not in {t.kind for t in ops.load_tracks(p, mid)}
    assert cmd_chat([str(clip), "--ask", "How many different speakers are there?", "--project",
                     str(tmp_path / "call.kestrel")]) == 0
    out = capsys.readouterr().out
    assert "2 speakers, told apart by voice" in out, out
