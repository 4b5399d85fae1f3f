"""Grounding for the chat: the perception log as lines, facts computed in code, citations.

No models here (retrieval runs on word overlap), so these are quick; the real models meet
the same code in test_chat_llm.py.
"""
from __future__ import annotations

import pytest

from core.chat import citations, language_of, question_words
from core.chat.grounding import ground, reconcile, retrieve
from core.chat.perception_log import PerceptionLog
from core.timefmt import clock as fmt_time
from core.timeline import Item, Track
from models.types import Detection, TextRegion


def _street_log() -> PerceptionLog:
    """A van parks from 10 s to 40 s, two then three people walk by, a sign, a spoken line."""
    log = PerceptionLog(step=0.5)
    for i in range(0, 120):
        t = i * 0.5
        dets = []
        if 10 <= t < 40:
            dets.append(Detection((400, 200, 600, 330), "truck", 0.9))
        if 20 <= t < 30:
            dets += [Detection((50 + 60 * k, 220, 90 + 60 * k, 330), "person", 0.8) for k in range(2 + (t >= 25))]
        texts = [TextRegion((20, 10, 140, 40), "GATE 7", 0.95)] if t < 5 else []
        log.add_frame(t, dets, texts=texts, size=(640, 360))
    log.add_speech(12.0, 14.5, "The van is blocking the gate.")
    log.add_event(33.0, 34.0, "audio", "siren", 0.8)
    return log


def test_log_lines_carry_times_positions_and_every_modality():
    lines = [ln.text for ln in _street_log().lines()]
    assert any(ln.startswith("[00:10–00:40] seen: truck") and "right" in ln for ln in lines), lines
    assert any("person, up to 3 at once" in ln for ln in lines), lines
    assert any('on-screen text: "GATE 7" (top left)' in ln for ln in lines), lines
    assert any(ln.startswith(("[00:12–00:14] someone says:", "[00:12–00:15] someone says:")) for ln in lines)
    assert any("audio event: siren" in ln for ln in lines)


def test_counts_are_computed_in_code():
    log = _street_log()
    g = ground("How many people are there?", log, at=27.0)
    assert g.kind == "count" and g.labels[0] == "person"
    assert g.count == 3 and "3 people" in g.direct
    g = ground("how many persons were there?", log, at=22.0)
    assert g.count == 2
    assert any("Most people seen at once" in f.text and f.value == 2 for f in g.facts)  # none later counts
    assert any(f.value == 3 for f in ground("How many people?", log, at=35.0).facts if f.kind == "max")


def test_durations_and_when_are_computed_in_code():
    log = _street_log()
    g = ground("How long was the van there?", log, at=59.0, window_s=60)
    assert g.kind == "duration" and g.labels == ["truck"]
    assert "30 s" in g.direct and "[00:10–00:40]" in g.direct
    g = ground("When did the van leave?", log, at=59.0, window_s=60)
    assert g.kind == "when" and "[00:40]" in g.direct
    g = ground("When did the van arrive?", log, at=59.0, window_s=60)
    assert "[00:10]" in g.direct


def test_presence_yes_and_no():
    log = _street_log()
    assert ground("Is there a van?", log, at=15.0).facts[0].text.startswith("Yes")
    assert ground("Is there a dog?", log, at=15.0).facts[0].text.startswith("No")
    late = ground("Is anyone there?", log, at=50.0, window_s=60)
    assert "seen earlier" in late.facts[0].text


def test_project_tracks_become_a_log():
    boxes = Track("boxes", "ssd", [Item(t, t + 0.5, "bus", 0.9, None, {"box": [0, 100, 600, 500], "size": [640, 864]})
                                   for t in (0.0, 0.5, 1.0)], meta={"task": "detect"})
    presence = Track("detections", "bus", [Item(0.0, 1.5, "bus", 0.9)])
    speech = Track("speech", "transcript", [Item(11.9, 14.4, "What brings you to the land of the gatekeepers?", 0.9)])
    vad = Track("speech", "voice activity", [Item(11.0, 15.0, "speech", 0.9)])
    chat = Track("chat", "chat", [Item(3.0, 3.0, "is there a bus?", 1.0)])
    log = PerceptionLog.from_tracks([boxes, presence, speech, vad, chat])
    text = [ln.text for ln in log.lines()]
    assert text == ["[00:00–00:02] seen: bus (centre), score 0.90",
                    '[00:12–00:14] someone says: "What brings you to the land of the gatekeepers?"'], text
    assert log.count_at("bus", 1.0) == (1, 1.0)


def test_retrieval_by_shared_words_and_time():
    lines = _street_log().lines()
    got = retrieve("what did someone say about the gate?", lines, k=2, at=14.0)
    assert any("someone says" in ln.text for ln in got)


def test_citations_are_parsed_for_seeking():
    text = "The van arrived at [00:10] and left 00:40–00:42; the siren at 1:02:03, the sign at 12 s."
    cs = citations(text)
    assert [c.seconds for c in cs] == [10.0, 40.0, 3723.0, 12.0]
    assert cs[1].end_seconds == 42.0
    assert text[cs[0].start:cs[0].end] == "[00:10]"
    assert fmt_time(3723) == "1:02:03" and fmt_time(75.4) == "01:15"


def test_a_model_that_miscounts_is_overruled():
    g = ground("How many people are there?", _street_log(), at=27.0)
    assert reconcile("There are 7 people [00:27].", g) == (g.direct, True)
    assert reconcile("Three people are visible at [00:27].", g) == ("Three people are visible at [00:27].", False)
    assert reconcile("I count 3.", g)[1] is False


@pytest.mark.parametrize("q,lang", [("¿Cuántas personas hay en la puerta?", "es"), ("Wie viele Autos sind da?", "de"),
                                    ("Is anyone at the gate?", "en"), ("门口有人吗？", "other")])
def test_language_guess(q, lang):
    assert language_of(q) == lang


def test_question_words_fold_plurals_and_synonyms():
    assert {"person", "bus"} <= question_words("How many people got off the buses?")
