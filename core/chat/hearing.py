"""Facts about what is heard, computed in code: who speaks (speaker turns from diarization) and
which loud sounds there are (impacts by onset and level, names only where a model gave one).

Called from :mod:`core.chat.grounding` (``_FILE_FACTS``) with the question's window. Each
function returns ``(facts, the answer as it stands)``; the answer is given as it is, never
reworded by the chat model. What the log does not hold is said as not known — a log without
speaker turns cannot count voices, a log whose audio was never searched for loud sounds cannot
say there are none — and weak evidence (a voice heard for a second or two, a turn the
diarization could not give to anyone) is said as weak.
"""
from __future__ import annotations

import re
from typing import Sequence

from core.chat import fmt_span, plural
from core.chat.facts import LEAVE, MOMENT_AT, WHEN_Q, YES_NO, Fact, _looked
from core.chat.perception_log import Sound, SpeakerTurn
from core.timefmt import clock

SPEAKERS_COUNT = re.compile(r"\bhow many\b|\bnumber of\b|\bcount\b", re.I)
ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "other": 1, "another": 1, "new": 1, "next": 1,
            "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "5th": 4}
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
WHO_Q = re.compile(r"\b(speakers?|voices?|people|persons?|person|someone|anyone|who)\b", re.I)
SPEAKING = re.compile(r"\b(speak\w*|spoke|talk\w*|voices?|speakers?)\b", re.I)
WHICH = re.compile(r"\b(first|1st|second|2nd|other|another|new|next|third|3rd|fourth|4th|fifth|5th)\s+"
                   r"(voice|speaker|person|people|one)\b|\bspeaker\s+(\d+)\b", re.I)
SAME = re.compile(r"\bsame (person|voice|speaker|man|woman)\b|\b(only|just) one\b|\bsingle (person|voice|speaker)\b"
                  r"|\balone\b", re.I)
MORE_THAN = re.compile(r"\bmore than (one|1)\b|\bseveral\b|\bmultiple\b|\bdifferent\b|\bmany\b", re.I)
SHORT_VOICE_S = 2.0  # a voice heard for less than this is told apart on weak evidence
# sounds: words that describe a loud impact by how it sounds (found by onset and level), and
# words that name a source (only an audio model may name one)
IMPACT_WORDS = re.compile(r"\b(bang\w*|boom\w*|crash\w*|thud\w*|thump\w*|knock\w*|slam\w*|clap\w*|impacts?|hits?|"
                          r"loud|bumps?|pops?|blasts?|noises?|sounds?)\b", re.I)
NAMED_WORDS = re.compile(r"\b(bark\w*|dogs?|sirens?|alarms?|explosions?|gunshots?|guns?|shots?|screams?|horns?|"
                         r"music|applause|beep\w*|engines?|birds?|car|cars|glass|thunder|fireworks?)\b", re.I)


CONTENT_Q = re.compile(r"^\s*what\b.*\b(say|said|says|ask\w*|tell|told|mention\w*|about|want\w*)\b", re.I)


def is_speaker_question(question: str) -> bool:
    """Is the question about the voices (how many, which, whether more than one), not about the words?"""
    if not SPEAKING.search(question):
        return False
    return bool(SPEAKERS_COUNT.search(question) or WHICH.search(question) or MORE_THAN.search(question)
                or SAME.search(question)
                or re.search(r"\bwho\b", question, re.I) or re.search(r"\b(two|three|four)\s+(different\s+)?"
                                                                    r"(voices|speakers|people)\b", question, re.I))


def is_sound_count(question: str) -> bool:
    """"How many bangs / loud sounds…?": a count of sounds, not of things seen."""
    return bool(SPEAKERS_COUNT.search(question) and (IMPACT_WORDS.search(question) or NAMED_WORDS.search(question))
                and re.search(r"\b(hear\w*|heard|audible|sounds?|noises?|bang\w*|boom\w*|bark\w*|loud)\b",
                              question, re.I))


# -- speakers ---------------------------------------------------------------------------------

def speaker_facts(w, labels: Sequence[str]):
    log, q = w.log, w.question
    if log.has_audio is False:
        text = "No one can be heard: this file has no audio track."
        return [Fact("speakers", text, 0.0)], text
    looked = _looked(log, "heard")
    if log.turns is None:  # no diarization in this log
        spans = [(a, b) for a, b, _ in log.voice] or [(o.time, o.end or o.time) for o in log.observations()
                                                       if o.kind == "speech"]
        if not spans:
            return [], None
        where = ", ".join(fmt_span(a, b) for a, b in spans[:5])
        text = (f"Kestrel cannot tell voices apart in this log (no speaker turns in it: analyse the audio with "
                f"the speaker model), so it cannot say how many people speak; speech of any voice is heard at {where}.")
        return [Fact("speakers", text, None, tuple(a for a, _b in spans[:5]))], text
    turns = log.turns
    known = [t for t in turns if t.speaker is not None]
    ids = sorted({t.speaker for t in known})
    n = len(ids)
    first = {s: min(t.start for t in known if t.speaker == s) for s in ids}
    total = {s: sum(t.end - t.start for t in known if t.speaker == s) for s in ids}
    if not turns:
        text = f"0 speakers: no voice was detected in {looked}."
        if YES_NO.search(q):
            text = f"No: no voice was detected in {looked}, so no one speaks."
        return [Fact("speakers", text, 0.0)], text
    if n == 0:  # speech, but none of it long or clear enough to fingerprint a voice
        where = ", ".join(fmt_span(t.start, t.end) for t in turns[:5])
        text = (f"At least 1 speaker: speech is heard at {where} in {looked}, but too briefly to tell voices "
                f"apart (weak evidence: Kestrel cannot say whether it is one person or more).")
        return [Fact("speakers", text, None, tuple(t.start for t in turns[:5]))], text
    who = "; ".join(f"Speaker {s + 1}: {_turns(known, s)}" for s in ids)
    weak = _weak_voices(turns, ids, total)
    if CONTENT_Q.search(q):  # "what did the first speaker ask about?": that voice's transcript lines
        return _voice_said(w, known, ids, looked, weak)
    fact = Fact("speakers", f"{n} {plural('speaker', n)} told apart by voice (diarization) in {looked}: {who}.{weak}",
                float(n), tuple(first[s] for s in ids))
    m = MOMENT_AT.search(q)
    if m:  # "who is speaking at 00:05?": the turn that holds that moment
        t = float(m.group(3)) if m.group(3) else int(m.group(1)) * 60 + int(m.group(2))
        here = [x for x in turns if x.start - 0.25 <= t <= x.end + 0.25]
        if not here:
            text = f"No one speaks at [{clock(t)}]: {n} {plural('voice', n)} told apart in {looked} ({who}).{weak}"
            return [fact], text
        x = here[0]
        name = f"Speaker {x.speaker + 1}" if x.speaker is not None else "a voice Kestrel could not tell apart"
        text = f"At [{clock(t)}] {name} speaks ({fmt_span(x.start, x.end)}); {n} {plural('voice', n)} in all: {who}.{weak}"
        return [fact], text
    order = sorted(ids, key=lambda s: first[s])
    if re.search(r"\bwho\b", q, re.I) and re.search(r"\b(first|last)\b", q, re.I):  # "who speaks first?"
        last = re.search(r"\blast\b", q, re.I)
        s = max(ids, key=lambda s: max(t.end for t in known if t.speaker == s)) if last else order[0]
        at = max(t.start for t in known if t.speaker == s) if last else first[s]
        text = (f"Speaker {s + 1} speaks {'last' if last else 'first'}, at [{clock(at)}] ({_turns(known, s)}); "
                f"{n} {plural('voice', n)} told apart by voice (diarization) in {looked}: {who}.{weak}")
        return [fact], text
    if WHEN_Q.search(q) and LEAVE.search(q) and _which(q) is not None:  # "when does the first speaker stop?"
        k = _which(q)
        if k < n:
            s = ids[k]
            end = max(t.end for t in known if t.speaker == s)
            text = (f"The {_ordinal(k)} voice (Speaker {s + 1}) last speaks until [{clock(end)}] "
                    f"({_turns(known, s)}); told apart by voice (diarization) in {looked}.{weak}")
            return [fact], text
    if WHEN_Q.search(q):
        k = _which(q)
        if k is None:
            k = 0
        if k >= n:
            text = (f"Kestrel told {n} {plural('voice', n)} apart in {looked}, so there is no "
                    f"{_ordinal(k)} voice to place in time: {who}.{weak}")
            return [fact], text
        s = ids[k]
        text = (f"The {_ordinal(k)} voice (Speaker {s + 1}) first speaks at [{clock(first[s])}] "
                f"({_turns(known, s)}); told apart by voice (diarization) in {looked}.{weak}")
        return [fact], text
    if YES_NO.search(q):
        want = _number_in(q)
        if want is None and MORE_THAN.search(q):
            want = 2
        if want is None:
            want = 1
        yes = n == 1 if SAME.search(q) else n >= want
        text = (f"{'Yes' if yes else 'No'}: Kestrel tells {_count_words(n)} {plural('voice', n)} apart in {looked} "
                f"({who}).{weak}")
        return [fact], text
    text = f"{n} {plural('speaker', n)}, told apart by voice (diarization) in {looked}: {who}.{weak}"
    return [fact], text


def _voice_said(w, known: list[SpeakerTurn], ids: list[int], looked: str, weak: str):
    k = _which(w.question) or 0
    if k >= len(ids):
        text = f"Kestrel told {len(ids)} {plural('voice', len(ids))} apart in {looked}: there is no {_ordinal(k)} voice."
        return [Fact("speakers", text, 0.0)], text
    s = ids[k]
    mine = [t for t in known if t.speaker == s]
    said = [o for o in w.log.observations() if o.kind == "speech"
            and any(t.start - 0.5 <= ((o.end or o.time) + o.time) / 2 <= t.end + 0.5 for t in mine)]
    if not said:
        text = (f"The {_ordinal(k)} voice (Speaker {s + 1}) speaks at "
                f"{', '.join(fmt_span(t.start, t.end) for t in mine[:4])}, but no transcribed words fall in its turns.")
        return [Fact("speakers", text, 0.0, tuple(t.start for t in mine[:4]))], text
    lines = "; ".join(f'{fmt_span(o.time, o.end or o.time)} "{o.label}"' for o in said[:4])
    text = f"The {_ordinal(k)} voice (Speaker {s + 1}) says: {lines}.{weak}"
    return [Fact("speakers", text, float(len(said)), tuple(o.time for o in said[:4]))], text


def _turns(turns: list[SpeakerTurn], s: int) -> str:
    mine = [t for t in turns if t.speaker == s]
    spans = ", ".join(fmt_span(t.start, t.end) for t in mine[:4]) + (f" and {len(mine) - 4} more" if len(mine) > 4 else "")
    return f"{spans} ({sum(t.end - t.start for t in mine):.1f} s in all)"


def _weak_voices(turns: list[SpeakerTurn], ids: list[int], total: dict[int, float]) -> str:
    why = []
    longest = {s: max(t.end - t.start for t in turns if t.speaker == s) for s in ids}
    short = [s for s in ids if total[s] < SHORT_VOICE_S or longest[s] < SHORT_VOICE_S]
    if short:
        why.append(", ".join(f"Speaker {s + 1} is heard only briefly ({total[s]:.1f} s, longest turn "
                             f"{longest[s]:.1f} s)" for s in short)
                   + " — voices heard this briefly are hard to tell apart: two of them may be one, or one two")
    loose = sum(t.end - t.start for t in turns if t.speaker is None)
    if loose > 0.05:
        why.append(f"{loose:.1f} s of speech could not be given to any voice")
    return f" Weak evidence: {'; '.join(why)}." if why else ""


def _which(q: str) -> int | None:
    m = WHICH.search(q)
    if not m:
        return None
    if m.group(3):
        return max(0, int(m.group(3)) - 1)
    return ORDINALS.get(m.group(1).lower())


def _number_in(q: str) -> int | None:
    m = re.search(r"\b(one|two|three|four|five|six|\d)\b\s+(different\s+)?(voices?|speakers?|people|persons?)", q, re.I)
    if not m:
        return None
    w = m.group(1).lower()
    return int(w) if w.isdigit() else NUMBERS[w]


def _ordinal(k: int) -> str:
    return ["first", "second", "third", "fourth", "fifth"][k] if k < 5 else f"{k + 1}th"


def _count_words(n: int) -> str:
    return {0: "no", 1: "one"}.get(n, str(n))


# -- sounds -----------------------------------------------------------------------------------

def sound_facts(w, labels: Sequence[str]):
    """Loud sounds over everything listened to (count, when, which) or what can be heard near the
    asked time; None when the log was never searched for sounds (the caller falls back)."""
    log, q = w.log, w.question
    if log.sounds is None:
        return None
    looked = _looked(log, "heard")
    named_q = NAMED_WORDS.search(q)
    sounds = list(log.sounds)
    impacts = [s for s in sounds if s.kind == "impact"]
    if named_q:  # a source by name: only a model's name for it counts
        stem = named_q.group(0).lower()[:4]
        match = [s for s in sounds if s.named_by and stem in s.label.lower()]
    elif IMPACT_WORDS.search(q) and re.search(r"\b(bang|boom|crash|thud|thump|knock|slam|clap|impact|hit|bump|pop|"
                                               r"blast)", q, re.I):
        match = impacts + [s for s in sounds if s.kind != "impact" and s.named_by]
        match.sort(key=lambda s: s.start)
    else:
        match = sorted(sounds, key=lambda s: s.start)
    what = named_q.group(0).lower() if named_q else "loud sound"
    unnamed = [s for s in sounds if not s.named_by]
    if named_q and not match and unnamed:  # loud sounds no model named: neither this source nor "none"
        n = len(unnamed)
        text = (f"Kestrel cannot tell whether it heard {_some(what)}: it heard {_count_words(n)} unfamiliar loud "
                f"{plural('sound', n)} in {looked} — {', '.join(_sound(s) for s in unnamed[:4])} — but no audio "
                f"model named {'it' if n == 1 else 'them'}, and it does not invent a name.{_how(unnamed)}")
        return [Fact("audio", text, None, tuple(s.start for s in unnamed[:4]))], text
    if SPEAKERS_COUNT.search(q):
        n = len(match)
        if n == 0:
            text = f"No {what} was found in {looked}: {_none_why(log, named_q)}."
        else:
            text = (f"{n} {plural(what, n) if named_q else plural('loud sound', n)} in {looked}: "
                    f"{', '.join(_sound(s) for s in match[:6])}.{_how(match)}")
        return [Fact("audio", text, float(n), tuple(s.start for s in match[:6]))], text
    if WHEN_Q.search(q):
        if not match:
            text = f"No {what} was found in {looked}: {_none_why(log, named_q)}."
            return [Fact("audio", text, 0.0)], text
        s = match[-1] if LEAVE.search(q) else match[0]
        more = f" All of them: {', '.join(_sound(x) for x in match[:6])}." if len(match) > 1 else ""
        text = f"The {_name(s)} is at [{clock(s.start)}] ({_detail(s)}).{more}{_how(match)}"
        return [Fact("audio", text, 1.0, tuple(x.start for x in match[:6]))], text
    if named_q and not match:
        text = f"No {what} was found in {looked}: {_none_why(log, named_q)}."
        return [Fact("audio", text, 0.0)], text
    return hearing_now(w, YES_NO.search(q) is not None)


def hearing_now(w, yes_no: bool):
    """What can be heard in the asked window: loud sounds first, then speech, then words the
    transcriber wrote where no voice was detected (shown, not counted)."""
    log = w.log
    lo, hi = w.t0, w.t_end + log.step
    sounds = [s for s in (log.sounds or []) if s.end >= lo and s.start <= hi]
    speech = [o for o in log.observations(lo, hi) if o.kind == "speech"]
    voice = [v for v in log.voice if v[1] >= lo and v[0] <= hi]
    weak = [o for o in log.observations(lo, hi) if o.kind == "weak-speech"]
    heard = []
    if sounds:
        heard.append(", ".join(f"{_name(s, True)} at {fmt_span(s.start, s.end)} ({_detail(s)})" for s in sounds[:4]))
    if speech:
        heard.append("speech: " + "; ".join(f'{fmt_span(o.time, o.end or o.time)} "{o.label}"' for o in speech[-3:]))
    elif voice:
        heard.append("a voice (no words recognised): " + ", ".join(fmt_span(a, b) for a, b, _ in voice[-3:]))
    note = ""
    if weak:
        note = (" The transcriber also wrote " + ", ".join(f'"{o.label}" {fmt_span(o.time, o.end or o.time)}'
                                                         for o in weak[:3])
                + " where no voice was detected: not counted as words heard.")
    if heard:
        text = ("Yes: " if yes_no else "") + "; ".join(heard) + "." + note
        text = text[0].upper() + text[1:]
        return [Fact("audio", text, 1.0, tuple(s.start for s in sounds) + tuple(o.time for o in speech))], text
    track = "The file has an audio track, but" if log.has_audio else "In what was listened to,"
    text = (f"{track} Kestrel heard nothing in it in {w.text}: no voice, and no sound rising clearly above the "
            f"file's noise floor.{note}")
    return [Fact("audio", text, 0.0)], text


def _some(what: str) -> str:
    """"a dog", "an engine", "gunshots", "music": the noun as a question names it."""
    if what.endswith("s") or what in ("music", "applause", "thunder", "glass", "fireworks"):
        return what
    return f"an {what}" if what[0] in "aeiou" else f"a {what}"


def _name(s: Sound, article: bool = False) -> str:
    base = s.label if s.named_by else ("unfamiliar loud sound" if s.kind == "impact" else "unfamiliar sound")
    return (f"an {base}" if base[0] in "aeiou" else f"a {base}") if article else base


def _detail(s: Sound) -> str:
    how = "a sudden onset" if s.kind == "impact" else "a sustained level"
    level = f"{s.over_floor_db:.0f} dB over the file's noise floor"
    if s.named_by:
        return f"named by {s.named_by} at {s.score:.2f}; {how}, {level}"
    return f"{how}, {level}; no audio model named it"


def _sound(s: Sound) -> str:
    return f"[{clock(s.start)}] ({_name(s)})"


def _how(match: list[Sound]) -> str:
    if any(not s.named_by for s in match):
        return (" Kestrel finds loud sounds by their onset and level against the file's own noise floor; "
                "it names a sound only where an audio model did.")
    return ""


def _none_why(log, named_q) -> str:
    if named_q:
        return "no audio model named one (Kestrel does not invent a sound it cannot name)"
    return "nothing rose 30 dB over the file's own noise floor with a sudden onset"
