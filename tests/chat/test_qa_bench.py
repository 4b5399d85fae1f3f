"""The QA benchmark's question set (bench/qa_set.py) and its harness (bench/qa.py), checked
without the chat model: enough questions in every category, every checker accepting its own
expected answer and rejecting a wrong one (and the answers the chat really gives), and the
generated clips holding what the questions say they hold (sound at the stated time, a file with
no audio stream, a person from 5 s, a red square, three buses)."""
from __future__ import annotations

from collections import Counter

import av
import numpy as np
import pytest

from bench import qa, qa_set
from bench.qa_set import CATEGORIES, QUESTIONS, Colour, Number, SaysNoAudio, Time, Words, YesNo

QUESTIONS_BY = {(q.clip, q.question): q for q in QUESTIONS}


def test_sixty_questions_over_ten_categories():
    assert len(QUESTIONS) >= 60
    per = Counter(q.category for q in QUESTIONS)
    assert set(per) == set(CATEGORIES) and len(CATEGORIES) == 10
    assert min(per.values()) >= 5, per
    assert {q.clip for q in QUESTIONS} <= qa_set.clip_names()
    assert len({(q.clip, q.question, q.at) for q in QUESTIONS}) == len(QUESTIONS)  # no question twice
    real = {q.clip for q in QUESTIONS} & set(qa_set.SAMPLES)
    assert len(real) >= 4 and len({q.clip for q in QUESTIONS} - real) >= 10  # real clips and generated ones


@pytest.mark.parametrize("q", QUESTIONS, ids=lambda q: f"{q.clip}:{q.question}")
def test_checker_accepts_its_answer_and_rejects_a_wrong_one(q):
    assert q.check(q.check.right), (q.check.right, q.expected)
    assert not q.check(q.check.wrong), (q.check.wrong, q.expected)
    assert q.expected


@pytest.mark.parametrize("checker, text, ok", [
    (Number(2), "2 bicycles are seen at once between [00:00] and [00:05].", True),
    (Number(4), "At [00:05] perception counts 3 people in the frame.", False),
    (Number(4), "4 people at [00:02] (counted by Kestrel from the detector log).", True),
    (Number(0), "No: perception saw no car in 00:00–00:10.", True),
    (Number(0), "It is not in the log.", False),
    (Number(2), "There are two distinct voices.", True),
    (YesNo(True, ("bus",)), "A bus is visible at [00:02].", True),
    (YesNo(True, ("bus",)), "No bus was seen.", False),
    (YesNo(False), "Objects are in view.", False),
    (YesNo(False), "No: perception saw no person in 00:00–00:10.", True),
    (Time(6.0), "The loud bang was at [00:06].", True),
    (Time(6.0), "At 6.2 seconds.", True),
    (Time(6.0), "It started at [00:00] and peaked at [00:06].", False),
    (Time(6.0), "It is not in the log.", False),
    (Colour(("blue",), ("white",)), "The bus is blue and white.", True),
    (Colour(("red",)), "The van is red and blue.", False),
    (Colour(("black and white", "monochrome")), "The film is in black and white.", True),
    (Colour(("black and white", "monochrome")), "The film is in colour: red.", False),
    (Words((("north",), ("gate",))), 'Someone says: "The delivery truck will arrive at the north gate."', True),
    (Words((("north",), ("gate",))), "At the south gate.", False),
    (Words((("loud", "bang"),), ("speech",)), "Speech and a loud bang.", False),
    (QUESTIONS_BY[("wall_silent", "What can be heard?")].check,
     "The file has an audio track, but Kestrel recognised nothing in it: no speech, and no sound it can name.", True),
    (QUESTIONS_BY[("wall_silent", "What can be heard?")].check, 'Yes: speech: [00:03] ". ."', False),
    (QUESTIONS_BY[("boom", "What sound can be heard?")].check, "A loud sound at [00:06]; no speech.", True),
    (SaysNoAudio(), "The video has no audio track, so nothing can be heard.", True),
    (SaysNoAudio(), "Yes, I can hear the person and car.", False),
    (SaysNoAudio(), "It is not in the log.", False),
])
def test_checkers_on_answers_the_chat_gives(checker, text, ok):
    assert checker(text) is ok


def test_limit_spreads_over_categories():
    picked = qa.select(limit=10)
    assert len(picked) == 10 and {q.category for q in picked} == set(CATEGORIES)
    assert all(q.category == "colour" for q in qa.select(category="colour"))
    assert qa.select(category="text", limit=2) == [q for q in QUESTIONS if q.category == "text"][:2]


def test_rescore_checks_old_answers_again():
    q = next(q for q in QUESTIONS if q.category == "colour")
    rows = [{"clip": q.clip, "question": q.question, "at": q.at, "category": "x", "expected": "", "seconds": 1.0,
             "answer": q.check.right, "right": False},
            {"clip": "gone", "question": "?", "at": 0.0, "category": "x", "expected": "", "answer": "", "seconds": 1.0,
             "right": True}]
    again = qa.rescore(rows)
    assert len(again) == 1 and again[0]["right"] and again[0]["category"] == "colour"
    s = qa.summarise(again)
    assert s["accuracy"] == 1.0 and s["categories"]["colour"]["total"] == 1


def _summary(acc: float, answer_s: float) -> dict:
    return {"accuracy": acc, "median_answer_s": 0.3, "median_asked_answer_s": answer_s}


def test_the_rule_picks_the_better_accuracy_among_fast_enough_models():
    """Issue 17's rule: the better accuracy at a median answer ≤ 3 s; a tie goes to the faster."""
    assert qa.pick({"small": _summary(0.80, 1.0), "big": _summary(0.90, 2.9)}) == "big"
    assert qa.pick({"small": _summary(0.80, 1.0), "big": _summary(0.95, 3.1)}) == "small"  # too slow
    assert qa.pick({"small": _summary(0.90, 1.0), "big": _summary(0.90, 2.0)}) == "small"
    assert qa.pick({"small": _summary(0.90, 3.5), "big": _summary(0.95, 4.0)}) is None


def test_summary_and_comparison_report_the_times_apart():
    q = QUESTIONS[0]
    rows = {m: [{"clip": q.clip, "question": q.question, "at": q.at, "category": q.category, "expected": q.expected,
                 "answer": "", "right": ok, "rc": 0, "seconds": 5.0, "perceive_s": 3.0, "answer_s": 2.0,
                 "llm_s": llm}] for m, ok, llm in (("a", True, 1.5), ("b", False, 0.5))}
    s = {m: qa.summarise(rs) for m, rs in rows.items()}
    assert (s["a"]["median_perceive_s"], s["a"]["median_answer_s"], s["a"]["median_llm_s"]) == (3.0, 2.0, 1.5)
    text = qa.format_compare(s)
    assert "median answer" in text and "1.50 s" in text and "0.50 s" in text
    assert text.rstrip().endswith(": a")  # the rule's pick: a is right, b is not, both fast enough
    assert (s["a"]["asked"], s["a"]["median_asked_answer_s"], s["a"]["median_asked_llm_s"]) == (1, 2.0, 1.5)
    code = dict(rows["a"][0], llm_s=0.0, answer_s=0.4)  # answered by a fact computed in code
    s2 = qa.summarise(rows["a"] + [code, code])
    assert s2["median_answer_s"] == 0.4 and s2["asked"] == 1 and s2["median_asked_answer_s"] == 2.0


def test_compare_refuses_a_model_that_is_not_a_local_chat_model(capsys):
    with pytest.raises(SystemExit):
        qa.main(["--compare", "qwen2.5-0.5b-chat,ssd-mobilenet-v2-coco", "--limit", "1"])
    assert "ssd-mobilenet-v2-coco" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        qa.main(["--compare", "qwen2.5-0.5b-chat,qwen2.5-0.5b-chat", "--limit", "1"])


def test_chat_path_returns_the_commands_own_refusal(tmp_path):
    """An audio-only file: main.py chat refuses before loading any model; the bench keeps its line."""
    from tests.mediagen import make_audio_only

    path = make_audio_only(tmp_path / "sound.wav", duration=1.0)
    a = qa.ChatPath().ask(str(path), "What can be heard?", 1.0, 30.0)
    assert a.rc == 1 and a.text.startswith("kestrel: no frames could be read") and "no video stream" in a.text
    assert a.text in a.printed
    assert a.perceive_s == 0 and a.llm_s == 0 and a.answer_s == a.total_s > 0  # refused before perceiving


def _audio(path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return np.zeros(0, np.float32), 0
        rate = c.streams.audio[0].rate
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
    return np.concatenate(parts), rate


def _frame(path, t: float) -> np.ndarray:
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if f.time >= t - 1e-6:
                return f.to_ndarray(format="rgb24").astype(float)
    raise AssertionError(f"no frame at {t} s in {path}")


def _loud(sig, rate, a, b) -> float:
    return float(np.abs(sig[int(a * rate):int(b * rate)]).max())


def test_generated_clips_hold_what_the_questions_say(tmp_path, sample):
    build = {n: qa_set.clip_path(n, tmp_path, sample) for n in
             ("video_only", "wall_silent", "speech_two", "two_booms", "person_enters", "red_square", "buses_3")}
    with av.open(str(build["video_only"])) as c:  # a file with no audio stream at all
        assert c.streams.video and not c.streams.audio
    sig, rate = _audio(build["wall_silent"])  # a quiet room: sound, but nothing in it
    assert rate and len(sig) > 9 * rate and _loud(sig, rate, 0, 10) < 0.05
    assert np.abs(_frame(build["wall_silent"], 0.0) - _frame(build["wall_silent"], 9.0)).mean() < 2  # static
    for name, starts in (("speech_two", [s for _v, s, _t in qa_set.SPEECH["speech_two"][1]]),
                         ("two_booms", [s for _f, s in qa_set.IMPACTS["two_booms"][1]])):
        sig, rate = _audio(build[name])
        for s in starts:  # silent just before each stated start, loud right after it
            assert _loud(sig, rate, s - 0.4, s - 0.05) < 0.05, (name, s)
            assert _loud(sig, rate, s, s + 0.3) > 0.2, (name, s)
    before, after = _frame(build["person_enters"], 4.5), _frame(build["person_enters"], 5.5)
    assert np.abs(before - qa_set.wall().astype(float)).mean() < 4 and np.abs(after - before).mean() > 30
    mid = _frame(build["red_square"], 1.0)[180, 320]
    assert mid[0] > 180 and mid[1] < 70 and mid[2] < 70
    assert _frame(build["buses_3"], 1.0).shape[1] == 3 * 360
