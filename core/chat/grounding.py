"""Grounding a question in the perception log: retrieval, facts computed in code, and the check
of the model's answer against them.

Why: the embedded model is small — right when given the few relevant lines, unreliable at
counting or over long logs (shared/MODELS.md). So from the log of everything perception saw
(:mod:`core.chat.perception_log`, short timestamped lines), MiniLM picks the lines that match
the question; counts, durations, "when" and the on-screen text asked about are computed here,
in code, and handed to the model as facts it only has to word; and an answer that contradicts
them is replaced (:func:`reconcile`). The times an answer cites are parsed by
:func:`core.chat.citations`, so the chat panel can make them seek the player.

Facts about the file and the moment (#17) are computed here too, one function per kind of fact,
and given as the answer itself (``Grounding.final``: the model is not asked to reword them):
whether the file has audio or video at all (from the probe), when speech starts and ends (voice
activity over what was listened to) and when something is said (the transcript), an object's
colour read from its pixels (:mod:`core.perception.colour`), first and last appearance over all
that perception covered (the whole file when a project holds it; otherwise the answer names the
part looked at), what is in view. Weak evidence — one sampled frame, a low score, a box
perception did not confirm, a split colour vote — is said as weak, and what was not perceived
is said as not perceived, never guessed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.chat import (STOP, SYNONYMS, TIME_RE, TextVectors, fmt_span, is_text_question, language_of, plural,
                       question_words)
from core.chat.facts import LEAVE, WHEN_Q, YES_NO, Fact, _looked, asked_moment
from core.chat.hearing import is_sound_count, is_speaker_question, sound_facts, speaker_facts
from core.chat.perception_log import LogLine, Observation, PerceptionLog, position
from core.timefmt import clock


# -- retrieval -------------------------------------------------------------------------------

def _body(line: LogLine) -> str:
    return line.text.split("] ", 1)[-1]


MAX_EMBEDDED_LINES = 2000  # log lines embedded per question, at most


def retrieve(question: str, lines: Sequence[LogLine], *, k: int = 8, at: float | None = None,
             window_s: float = 60.0, index: TextVectors | None = None, margin: float = 0.2) -> list[LogLine]:
    """The ``k`` lines that best match the question — MiniLM cosine, plus shared words, plus
    nearness to the asked time — within ``margin`` of the best; returned in time order."""
    if not lines:
        return []
    words = question_words(question) - STOP
    cheap = []
    for ln in lines:
        lw = set(re.findall(r"[a-z]+", _body(ln).lower()))
        s = 0.12 * len(words & lw)
        if at is not None:
            d = 0.0 if ln.start <= at <= ln.end else min(abs(at - ln.start), abs(at - ln.end))
            s += 0.15 * math.exp(-d / max(window_s, 1.0))
        cheap.append(s)
    if index is not None and len(lines) > MAX_EMBEDDED_LINES:
        # a project may store 10^5 lines in the window: only the best by words and time are
        # embedded (MiniLM on every one took minutes), the rest keep their cheap score
        ranked = np.argsort(np.asarray(cheap), kind="stable")[::-1][:MAX_EMBEDDED_LINES]
        lines = [lines[i] for i in sorted(ranked)]
        cheap = [cheap[i] for i in sorted(ranked)]
    vecs = index.vectors([question] + [_body(ln) for ln in lines]) if index else None
    scores = [(float(vecs[0] @ vecs[i + 1]) if vecs is not None else 0.0) + c for i, c in enumerate(cheap)]
    order = np.argsort(scores)[::-1][:k]
    # lines far below the best one only distract a small model ("person" lines for a spoken answer)
    keep = [i for i in order if scores[i] >= scores[order[0]] - margin] if len(order) else []
    return sorted((lines[i] for i in keep), key=lambda ln: ln.start)


# -- facts computed in code -----------------------------------------------------------------

COUNT_Q = re.compile(r"\bhow many\b|\bcount\b|\bnumber of\b", re.I)
DURATION_Q = re.compile(r"\bhow long\b|\bfor how many (seconds|minutes)\b|\bduration\b", re.I)
PRESENCE_Q = re.compile(r"^\s*(is|are|was|were|do|does|did|can)\b.*\b(there|anyone|anybody|someone|any|a|an)\b"
                        r"|\b(see|visible|present)\b", re.I)
COLOUR_Q = re.compile(r"\bcolou?rs?\b|\bwhat shade\b", re.I)
VIDEO_Q = re.compile(r"\b(video|picture|image|visual)s? (track|stream)\b|\b(has|have|is there|any) (a )?(video|picture)\b"
                     r"|\bcan you see anything\b|\bis there anything to see\b", re.I)
SPEECH_Q = re.compile(r"\b(speak\w*|spoke|spoken|talk\w*|speech|voices?|says?|said|saying|words?|mention\w*)\b", re.I)
SOUND_NOUN = re.compile(r"\b(bang|boom|crash|thud|thump|bark\w*|siren|alarm|explosion|gunshot|scream|horn|music|"
                        r"applause|knock\w*|beep\w*)s?\b", re.I)
WHICH_VOICE = re.compile(r"\b(second|other|another|third|2nd|3rd|different|new|each|two|three|several|multiple)\s+"
                         r"(voice|speaker|person|people)s?\b|\bmore than one\b|\bwho (is )?speak\w*\b", re.I)
# words of a speech question that say nothing about what was said ("when does someone start speaking?")
SPEECH_GENERIC = {"someone", "somebody", "anyone", "anybody", "person", "people", "speak", "speaking", "speaks",
                  "spoke", "spoken", "talk", "talking", "talks", "talked", "speech", "voice", "voices", "say", "says",
                  "said", "saying", "word", "words", "mention", "mentions", "mentioned", "start", "starts",
                  "started", "begin", "begins", "began", "first", "last", "end", "ends", "ended", "stop", "stops",
                  "stopped", "finish", "finishes", "finished", "time", "video", "clip", "file", "recording", "about",
                  "anything", "something", "can", "could", "will", "would", "not", "no", "yes", "here", "now",
                  "then", "again", "ever", "all", "one", "man", "woman", "men", "women", "they", "their", "second",
                  "other", "another", "third", "different", "new", "each", "loud", "clearly", "out", "hear", "heard",
                  "hearing", "listen", "listening", "sound", "sounds", "audio", "speaker", "speakers", "aloud",
                  "audible", "there", "this", "that"}
SPEAKERS_Q = re.compile(r"\bspeakers?\b|\bvoices?\b|\bsaid\b|\bsaying\b|\bbeing said\b", re.I)
AUDIO_Q = re.compile(r"\b(hear\w*|audible|sounds?|audio|noises?|listen\w*|bang\w*|boom\w*|crash\w*|thud\w*|"
                     r"bark\w*|siren\w*|alarm\w*|explosion\w*|gunshots?|scream\w*|horns?|music|applause|knock\w*|"
                     r"beep\w*)\b", re.I)
VIEW_Q = re.compile(r"\bwhat (objects?|things?)\b|\bwhat do(es)? (you|it|kestrel) see\b|\bwhat can (you|be) seen?\b"
                    r"|\bwhat(?:'s| is| are)\b.*\b(in view|visible|on screen|in (the|this) (frame|picture|image|shot|scene))\b"
                    r"|\bdescribe (the|this) (scene|frame|picture|shot)\b", re.I)


@dataclass
class Grounding:
    """What the model is given for one question, and what the code already knows."""

    question: str
    at: float | None
    kind: str  # count | duration | when | presence | open
    labels: list[str]  # log labels the question is about
    facts: list[Fact] = field(default_factory=list)
    lines: list[LogLine] = field(default_factory=list)
    direct: str | None = None  # the answer computed in code (counts, durations, when)
    final: bool = False  # ``direct`` is the answer as it stands: the model is not asked to word it
    text_question: bool = False
    language: str = "en"
    seen_log: PerceptionLog | None = field(default=None, repr=False)  # the chat's own look (core.chat.session)

    @property
    def count(self) -> int | None:
        return next((int(f.value) for f in self.facts if f.kind == "count" and f.value is not None), None)


def target_labels(question: str, log: PerceptionLog) -> list[str]:
    """The labels in the log (or COCO class names) the question names; plurals and synonyms folded."""
    from models.backends.coco import COCO90

    words = question_words(question) - STOP
    q = question.lower()
    known = log.labels() | set(COCO90.values()) | {"face"}
    hits = [lb for lb in known if lb.lower() in words or (" " in lb and lb.lower() in q)]
    if not hits and any(SYNONYMS.get(w) == "person" for w in words):
        hits = ["person"]
    present = log.labels()
    return sorted(hits, key=lambda lb: (lb not in present, lb))


def question_kind(question: str, labels: Sequence[str]) -> str:
    """Which fact the question asks for: colour | video | speech | audio | count | duration | when |
    view | presence | open."""
    reads = is_text_question(question)  # "what does the sign say?" is about text, not speech
    if COLOUR_Q.search(question):
        return "colour"
    if VIDEO_Q.search(question):
        return "video"
    if not reads and is_speaker_question(question):
        return "speakers"  # how many voices, which one, when the second one speaks
    if not reads and is_sound_count(question):
        return "audio"  # "how many loud bangs can be heard?"
    if not reads and SPEECH_Q.search(question) and (WHEN_Q.search(question) or YES_NO.search(question)
                                                     or DURATION_Q.search(question) or WHICH_VOICE.search(question)):
        return "speech"  # "when did someone start speaking?" is about the voice, not a person in view
    if AUDIO_Q.search(question) and not COUNT_Q.search(question):
        return "audio"
    if COUNT_Q.search(question):
        return "count"
    if DURATION_Q.search(question):
        return "duration"
    if WHEN_Q.search(question):
        return "when"
    if VIEW_Q.search(question) and not reads:
        return "view"
    if PRESENCE_Q.search(question) and labels:
        return "presence"
    return "open"


def ground(question: str, log: PerceptionLog, *, at: float | None = None, window_s: float = 60.0,
           k: int = 8, index: TextVectors | None = None, extra_lines: Sequence[LogLine] = (),
           frames: Sequence[tuple[float, np.ndarray]] = (), seen_log: PerceptionLog | None = None) -> Grounding:
    """Facts computed from the log and the retrieved lines, for ``question`` asked about time ``at``.

    ``frames``: (time, RGB) of the asked window, for the facts read from pixels (colour), with the
    boxes of ``log`` or, failing those, of ``seen_log`` (perception on the frames given to the model)."""
    t_end = at if at is not None else log.span[1]
    t0 = max(0.0, t_end - window_s)
    labels = target_labels(question, log)
    kind = question_kind(question, labels)
    moment = asked_moment(question, log) if kind in ("count", "presence", "view") else None
    if moment is not None:  # "is there a person at the start?": that moment, not the end of the window
        t_end, t0 = moment, max(0.0, moment - log.step)
    named_moment = moment is not None
    g = Grounding(question, at, kind, labels, text_question=is_text_question(question),
                  language=language_of(question))
    if log.has_audio is False and kind not in ("colour", "video", "view", "speech", "speakers") and (
            AUDIO_Q.search(question) or SPEECH_Q.search(question) or SPEAKERS_Q.search(question)) \
            and not g.text_question:
        g.kind = kind = "audio"  # "what is being said?", "how many speakers?" on a silent file
    asked = _Window(log, question, t0, t_end, tuple(frames), seen_log)
    if kind == "when" and not labels and (said := [o for o in log.observations() if o.kind == "speech"]) \
            and (topic := _topic_words(question)):
        # "what time does the warehouse open?": nothing seen is named; the transcript may say it
        facts, direct = _said_when(asked, topic, said, _looked(log, "heard"))
        if facts and facts[0].value:
            g.facts, g.direct, g.final = facts, direct, True
    elif kind in _FACTS:
        for label in labels[:2]:
            spans = log.presence(label) if kind == "when" else log.presence(label, t0, t_end + log.step)
            facts, direct = _FACTS[kind](asked, label, spans)
            g.facts += facts
            g.direct = g.direct or direct
        # a moment the question names: the code's answer as it stands (the model cites the asked time instead)
        g.final = (kind in FINAL or named_moment) and g.direct is not None
    elif kind in _FILE_FACTS:
        g.facts, g.direct = _FILE_FACTS[kind](asked, labels)
        g.final = g.direct is not None
    if kind in ("count", "presence") and not labels:
        g.kind = "open"
    best = best_text(question, log, t0, t_end + log.step, index) if g.text_question else None
    if best:
        g.facts.append(Fact("text", f'The text reads "{best[0]}" (read in the frame at [{clock(best[1])}]).',
                            None, (best[1],)))
        g.direct = g.direct or f'The text reads "{best[0]}" [{clock(best[1])}].'
    lines = log.lines(max(0.0, t0 - window_s), t_end + log.step) + list(extra_lines)
    if best:  # the other OCR lines only tempt a small model into quoting the wrong one
        words = set(best[0].lower().split())
        lines = [ln for ln in lines if ln.kind != "text" or set(ln.label.lower().split()) & words]
    g.lines = retrieve(question, lines, k=k, at=t_end, window_s=window_s, index=index)
    return g


# -- one label's facts, per kind of question: (facts, the answer computed in code or None) ------

_Spans = list[tuple[float, float, int]]  # PerceptionLog.presence: (start, end, most at once)


@dataclass(frozen=True)
class _Window:
    """The question and the stretch of the log it is asked about: [t0, t_end]."""

    log: PerceptionLog
    question: str
    t0: float
    t_end: float
    frames: tuple[tuple[float, np.ndarray], ...] = ()
    seen_log: PerceptionLog | None = None

    @property
    def text(self) -> str:
        return f"{clock(self.t0)}–{clock(self.t_end)}"

    @property
    def between(self) -> str:
        return f"between [{clock(self.t0)}] and [{clock(self.t_end)}]"


def _count_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    now = w.log.count_at(label, w.t_end)
    most = max((n for _s, _e, n in spans), default=0)
    facts, direct = [], None
    if now is not None:
        n, ft = now
        facts.append(Fact("count", f"At [{clock(ft)}] perception counts {n} {plural(label, n)} in the frame.",
                          n, (ft,)))
        loose = [o for o in w.log.observations(ft, ft) if o.end is None and o.label == label
                 and abs(o.time - ft) < 1e-3 and o.confirmed is False]
        aside = (f" Not counted: {len(loose)} more {plural(label, len(loose))} perception did not confirm (score "
                 + ", ".join(f"{o.score:.2f}" for o in loose[:3]) + ")." if loose else "")
        direct = f"{n} {plural(label, n)} at [{clock(ft)}] (counted by Kestrel from the detector log).{aside}"
    facts.append(Fact("count" if now is None else "max",
                      f"Most {plural(label, 2)} seen at once {w.between}: {most}.", most))
    if now is None:
        direct = (f"At most {most} {plural(label, most)} at once in {w.text} "
                  f"(counted by Kestrel from the detector log).")
    return facts, direct


def _duration_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    total = sum(e - s for s, e, _n in spans)
    parts = ", ".join(fmt_span(s, e) for s, e, _ in spans) or "never"
    fact = Fact("duration", f"{label} visible for {total:.0f} s in total {w.between}: {parts}.", total,
                tuple(x for s, e, _ in spans for x in (s, e)))
    if spans:
        return [fact], f"The {label} was visible for about {total:.0f} s ({parts})."
    return [fact], f"No {label} was seen in {w.text}."


def _when_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    """First and last appearance over everything perception looked at (the whole file when a
    project holds its perception), not only the window before the asked time; when perception
    saw only part of the file, the answer says which part. Appearances in one sampled frame or
    at a low score are weak: said apart, and never the first or last appearance while firm ones exist."""
    looked = _looked(w.log)
    if not spans:
        return [Fact("when", f"No {label} was seen in {looked}.")], f"No {label} was seen in {looked}."
    rated = [(a, b, _evidence(w.log, label, a, b)) for a, b, _n in spans]
    firm = [(a, b) for a, b, ev in rated if not _weak(ev)]
    weak = [(a, b, ev) for a, b, ev in rated if _weak(ev)]
    use = firm or [(a, b) for a, b, _ev in weak]
    first, last = use[0][0], use[-1][1]
    where = ", ".join(fmt_span(a, b) for a, b in use[:6]) + (f" and {len(use) - 6} more" if len(use) > 6 else "")
    unsure = "; ".join(f"{fmt_span(a, b)} ({_strength(ev)})" for a, b, ev in weak[:4])
    fact = Fact("when", f"{label} first seen at [{clock(first)}], last seen at [{clock(last)}] "
                f"({len(use)} appearance(s): {where}" + (f"; weak sightings: {unsure}" if weak else "") + ").",
                None, (first, last))
    if firm:
        tail = f" Seen {where}, in {looked}." + (f" Weak sightings, not counted: {unsure}." if weak else "")
    else:
        tail = (f" Weak evidence only: {unsure} — the {label} may not be there at all. Looked at {looked}.")
    if LEAVE.search(w.question):
        return [fact], f"The {label} was last seen at [{clock(last)}].{tail}"
    return [fact], f"The {label} first appeared at [{clock(first)}].{tail}"


def _presence_facts(w: _Window, label: str, spans: _Spans) -> tuple[list[Fact], str | None]:
    now = w.log.count_at(label, w.t_end)
    if now is not None and now[0] > 0:
        n, ft = now
        return [Fact("presence", f"Yes: at [{clock(ft)}] perception sees {n} {plural(label, n)}.", n, (ft,))], None
    if spans:
        recent = spans[-3:]
        seen = ", ".join(fmt_span(s, e) for s, e, _ in recent)
        return [Fact("presence", f"{label} seen earlier: {seen}; not at [{clock(w.t_end)}].", 0,
                     tuple(s for s, _e, _n in recent))], None
    elsewhere = w.log.presence(label)
    if elsewhere:  # not in the window asked about, but elsewhere in what perception covered
        seen = ", ".join(fmt_span(s, e) for s, e, _ in elsewhere[:4])
        return [Fact("presence", f"No {label} in {w.text}; in {_looked(w.log)} "
                     f"it was seen at {seen}.", 0, tuple(s for s, _e, _n in elsewhere[:4]))], None
    return [Fact("presence", f"No: perception saw no {label} in {w.text}.", 0)], None


_FACTS: dict[str, Callable[[_Window, str, _Spans], tuple[list[Fact], str | None]]] = {
    "count": _count_facts, "duration": _duration_facts, "when": _when_facts, "presence": _presence_facts}
FINAL = {"when"}  # label kinds whose computed answer is given as it stands (the model only words the others)


# -- the evidence behind a fact: how much was seen, and what part of the file was looked at ------

WEAK_SCORE = 0.5  # detections under this, or in one sampled frame only, are weak evidence


@dataclass(frozen=True)
class _Evidence:
    frames: int  # sampled frames that show the label
    score: float  # its best detection score there
    unconfirmed: bool = False  # every box of it is marked unconfirmed (core.perception.confirm)


def _evidence(log: PerceptionLog, label: str, t0: float, t1: float) -> _Evidence:
    """How many sampled frames show ``label`` in [t0, t1] (intervals without samples count a frame
    per step), its best score there, and whether perception marked all of it unconfirmed."""
    rows = [o for o in log.observations(t0, t1) if o.label == label and o.kind in ("object", "face", "tag")]
    frames = {round(o.time, 3) for o in rows if o.end is None}
    frames |= {round(o.time, 3) for o in rows if o.end is not None and o.end - o.time < 1.5 * log.step}
    n = len(frames) + sum(max(1, int((o.end - o.time) / log.step)) for o in rows
                          if o.end is not None and o.end - o.time >= 1.5 * log.step)
    return _Evidence(n, max((o.score for o in rows), default=0.0),
                     bool(rows) and all(o.confirmed is False for o in rows))


def _strength(ev: _Evidence) -> str:
    return (f"{ev.frames} sampled frame{'s' if ev.frames != 1 else ''}, score up to {ev.score:.2f}"
            + (", unconfirmed" if ev.unconfirmed else ""))


def _weak(ev: _Evidence) -> str:
    """"" or a sentence saying the evidence is weak, and why."""
    why = [w for w, bad in (("seen in one sampled frame only", ev.frames <= 1),
                            (f"the detector's score is only {ev.score:.2f}", ev.score < WEAK_SCORE),
                            ("perception did not confirm it (no moving track or second look)", ev.unconfirmed))
           if bad]
    return f" Weak evidence: {' and '.join(why)}." if why else ""


# -- facts about the file or the moment, not about one label: (facts, the answer computed in code) ---

def _video_facts(w: _Window, labels: Sequence[str]) -> tuple[list[Fact], str | None]:
    has = w.log.has_video
    if has is None:
        return [], None
    text = "Yes: this file has a video stream." if has else "No: this file has no video stream."
    return [Fact("video", text, float(has))], text


def _audio_facts(w: _Window, labels: Sequence[str]) -> tuple[list[Fact], str | None]:
    """Whether anything can be heard: no audio track is a plain no; else what the audio models
    recognised near the asked time (speech, voice activity, named sounds), and only that."""
    log = w.log
    if log.has_audio is False:
        text = "No: this file has no audio track."
        return [Fact("audio", text, 0.0)], text
    got = sound_facts(w, labels)  # the log's loud sounds, when its audio was searched for them
    if got is not None:
        return got
    lo, hi = w.t0, w.t_end + log.step
    events = [o for o in log.observations() if o.kind == "audio"]
    noun = SOUND_NOUN.search(w.question)
    if noun:  # a sound by name ("the loud bang"): the events that name it, or no invented one
        stem = noun.group(0).lower()[:4]
        events = [o for o in events if stem in o.label.lower()]
    if (WHEN_Q.search(w.question) or noun) and events:  # over everything listened to
        text = "Sounds Kestrel names: " + ", ".join(f"{o.label} ({o.score:.2f}) at {fmt_span(o.time, o.end or o.time)}"
                                                   for o in events[:4]) + "."
        return [Fact("audio", text, 1.0, tuple(o.time for o in events[:4]))], text
    if WHEN_Q.search(w.question) or noun:
        what = f"no {noun.group(0).lower()}" if noun else "no sound by name"
        text = (f"Kestrel recognised {what} in {_looked(log, 'heard')}: no audio model labelled one, and it does "
                f"not invent a sound it cannot name.")
        return [Fact("audio", text, 0.0)], text
    speech = [o for o in log.observations(lo, hi) if o.kind == "speech"]
    voice = [v for v in log.voice if v[1] >= lo and v[0] <= hi]
    sounds = [o for o in log.observations(lo, hi) if o.kind == "audio"]
    heard = []
    if speech:
        said = "; ".join(f'{fmt_span(o.time, o.end or o.time)} "{o.label}"' for o in speech[-3:])
        heard.append(f"speech: {said}")
    elif voice:
        heard.append("a voice (no words recognised): " + ", ".join(fmt_span(a, b) for a, b, _ in voice[-3:]))
    if sounds:
        heard.append("sounds: " + ", ".join(f"{o.label} ({o.score:.2f}) {fmt_span(o.time, o.end or o.time)}"
                                            for o in sounds[-4:]))
    if heard:
        text = "Yes: " + "; ".join(heard) + "."
        return [Fact("audio", text, 1.0, tuple(o.time for o in speech + sounds))], text
    listened = log.heard is not None or bool(log.voice) or any(o.kind == "speech" for o in log.observations())
    if log.has_audio is None and not listened:
        return [], None  # nothing known about the sound: the log's lines may still say something
    track = "The file has an audio track, but" if log.has_audio else "In what was listened to,"
    text = (f"{track} Kestrel recognised nothing in it in {w.text}: no speech, and no sound it can name "
            f"(it names speech; other sounds only where an audio model has labelled them).")
    return [Fact("audio", text, 0.0)], text


def _speech_facts(w: _Window, labels: Sequence[str]) -> tuple[list[Fact], str | None]:
    """When speech starts and ends, over everything the audio models listened to: voice activity
    (VAD) first, the transcript's segments when there is no VAD."""
    log = w.log
    if log.has_audio is False:
        text = "No one can be heard: this file has no audio track."
        return [Fact("speech", text, 0.0)], text
    said = [o for o in log.observations() if o.kind == "speech"]
    spans = [(a, b) for a, b, _ in log.voice] or [(o.time, o.end or o.time) for o in said]
    looked = _looked(log, "heard")
    if WHICH_VOICE.search(w.question) and spans:
        where = ", ".join(fmt_span(a, b) for a, b in spans[:5])
        text = (f"Kestrel cannot tell voices apart in this log (no speaker turns in it), so it cannot say which "
                f"voice is which; speech of any voice is heard at {where}.")
        return [Fact("speech", text, None, tuple(a for a, _b in spans[:5]))], text
    topic = _topic_words(w.question)
    if topic:  # "when does someone mention the gatekeepers?": the transcript line that says it
        return _said_when(w, topic, said, looked)
    if not spans:
        if log.heard is None:
            if log.has_audio is None:
                return [], None
            text = ("Kestrel has not listened to this file's audio: no voice activity or transcript is in "
                    "its perception, so it cannot say when anyone speaks.")
            return [Fact("speech", text)], text
        text = f"No speech was detected in {looked}."
        weak = [o for o in log.observations() if o.kind == "weak-speech"]
        if weak:  # Whisper's words over a bang or a hiss: shown, never speech
            text += (" (The transcriber wrote " + ", ".join(f'"{o.label}" {fmt_span(o.time, o.end or o.time)}'
                                                            for o in weak[:3])
                     + " where no voice was detected: not counted as speech.)")
        return [Fact("speech", text, 0.0)], text
    source = "voice activity" if log.voice else "the transcript"
    first, last = spans[0][0], max(b for _a, b in spans)
    total = sum(b - a for a, b in spans)
    where = ", ".join(fmt_span(a, b) for a, b in spans[:5]) + (f" and {len(spans) - 5} more" if len(spans) > 5 else "")
    words = f' First words: "{said[0].label}" {fmt_span(said[0].time, said[0].end or said[0].time)}.' if said else ""
    fact = Fact("speech", f"Speech ({source}) from [{clock(first)}] to [{clock(last)}], {total:.0f} s in all: "
                f"{where}; listened to {looked}.", total, (first, last))
    heard = f" Listened to {looked}."
    if DURATION_Q.search(w.question):
        return [fact], f"Speech lasts about {total:.0f} s in all ({where}; {source}).{words}{heard}"
    if LEAVE.search(w.question) or re.search(r"\b(finish\w*|ends?|stops?|stopped)\b", w.question, re.I):
        return [fact], f"Speech ends at [{clock(last)}] (last heard {fmt_span(*spans[-1])}, {source}).{heard}"
    if YES_NO.search(w.question) and not WHEN_Q.search(w.question):
        return [fact], f"Yes: speech is heard from [{clock(first)}] ({where}, {source}).{words}{heard}"
    return [fact], (f"Speech starts at [{clock(first)}] and ends at [{clock(last)}] ({where}, {source})."
                    f"{words}{heard}")


def _topic_words(question: str) -> list[str]:
    """The words of a speech question that name what was said (none for "when does someone speak?")."""
    words = re.findall(r"[a-z']+", question.lower())
    return [x for x in words if len(x) >= 3 and x not in STOP and x not in SPEECH_GENERIC
            and not WHEN_Q.fullmatch(x) and x not in ("what", "when", "who", "which", "how")]


def _said_when(w: _Window, topic: list[str], said: list[Observation], looked: str) -> tuple[list[Fact], str]:
    """The transcript lines that say the topic's words (spelling forgiven: Whisper's "gatekeeper"
    for "gatekeepers"), the first cited; or that no line says them."""
    from difflib import SequenceMatcher

    def match(o: Observation) -> float:
        ws = re.findall(r"[a-z']+", o.label.lower())
        return sum(max((SequenceMatcher(None, t, x).ratio() for x in ws), default=0.0) >= 0.8 for t in topic)

    hits = [o for o in said if match(o) > 0]
    best = max((match(o) for o in hits), default=0)
    hits = [o for o in hits if match(o) == best]
    if not hits:
        text = (f"No transcribed line says \"{' '.join(topic)}\" in {looked}"
                + (f" ({len(said)} line(s) transcribed)." if said else " (nothing was transcribed)."))
        return [Fact("speech", text, 0.0)], text
    lines = "; ".join(f'{fmt_span(o.time, o.end or o.time)} "{o.label}"' for o in hits[:3])
    yes = "Yes: it" if YES_NO.search(w.question) and not WHEN_Q.search(w.question) else "It"
    text = f"{yes} is said at [{clock(hits[0].time)}]: {lines}."
    asked = [o for o in hits[:3] if o.label.rstrip().endswith("?")]
    replies = [r for o in asked for r in said if r.time > o.time][:1]  # a question is answered by the next line
    if replies and replies[0] not in hits:
        r = replies[0]
        text += f' The reply: {fmt_span(r.time, r.end or r.time)} "{r.label}".'
    return [Fact("speech", text, float(len(hits)), tuple(o.time for o in hits[:3]))], text


def _view_facts(w: _Window, labels: Sequence[str]) -> tuple[list[Fact], str | None]:
    """What is in view at the asked time: the objects of the sample nearest to it, each with its
    score (weak ones said as weak), and the scene tags over it; "nothing recognised" when empty."""
    log, t = w.log, w.t_end
    times = [ft for ft in log.frame_times if abs(ft - t) <= max(1.5 * log.step, log.hold_s)]
    if not times and log.seen and log.seen[0] - log.step <= t <= log.seen[1] + log.step:
        times = [t]  # the detector looked here and found nothing (an empty frame leaves no box behind)
    tags = [o for o in log.observations(t, t) if o.kind == "tag" and o.end is not None]
    if not times and not tags:
        return [], None
    parts, cites = [], []
    if times:
        ft = min(times, key=lambda x: abs(x - t))
        cites.append(ft)
        here = [o for o in log.observations(ft, ft) if o.end is None and abs(o.time - ft) < 1e-3
                and o.kind in ("object", "face")]
        for label in sorted({o.label for o in here}, key=lambda lb: -max(o.score for o in here if o.label == lb)):
            mine = [o for o in here if o.label == label]
            ev = _evidence(log, label, w.t0, t + log.step)
            scores = ", ".join(f"{o.score:.2f}" for o in sorted(mine, key=lambda o: -o.score)[:4])
            weak = (" — weak" if (max(o.score for o in mine) < WEAK_SCORE or ev.frames <= 1) else "") + (
                ", unconfirmed" if all(o.confirmed is False for o in mine) else "")
            parts.append(f"{f'{len(mine)} ' if len(mine) > 1 else ''}{plural(label, len(mine))} ({scores}{weak})")
        objs = ", ".join(parts) or "nothing recognised"
        text = f"In view at [{clock(ft)}]: {objs}."
    else:
        text = f"At [{clock(t)}]:"
    if tags:
        text += " Scene: " + ", ".join(f"{o.label} ({o.score:.2f})" for o in tags[:3]) + "."
    if not parts and times:
        text += " (Kestrel's detector knows 80 everyday object classes and found none of them here.)"
    return [Fact("view", text, float(len(parts)), tuple(cites))], text


VEHICLES = ("car", "truck", "bus", "motorcycle", "bicycle", "train", "boat", "airplane")


def _colour_facts(w: _Window, labels: Sequence[str]) -> tuple[list[Fact], str | None]:
    """The named colour of the object asked about, read from its pixels (core.perception.colour)
    in its box at the sampled frame nearest the asked time."""
    from core.perception.colour import box_colour

    if not w.frames:
        text = f"No frame of {w.text} is at hand to read a colour from."
        return [Fact("colour", text)], text
    if MONO_Q.search(w.question):
        return _mono_facts(w)
    if not labels:
        return _standout_facts(w)
    want = labels[0]
    family = [want] + ([v for v in VEHICLES if v != want] if want in VEHICLES else [])
    for log in (w.log, w.seen_log):
        if log is None:
            continue
        boxed = [o for o in log.observations(w.t0, w.t_end + log.step)
                 if o.end is None and o.box is not None and o.kind in ("object", "face")]
        for label in family:
            rows = [o for o in boxed if o.label == label]
            if not rows:
                continue
            tn = min({o.time for o in rows}, key=lambda x: (abs(x - w.t_end), -x))
            here = sorted((o for o in rows if abs(o.time - tn) < 1e-3), key=lambda o: -o.score)[:3]
            ft, img = min(w.frames, key=lambda f: abs(f[0] - tn))
            if abs(ft - tn) > max(1.0, 1.5 * log.step):
                continue
            found = []
            for o in here:
                sx, sy = _scale(o, img.shape)
                c = box_colour(img, (o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy))
                if c is not None:
                    found.append((o, c))
            if not found:
                continue
            return _say_colour(w, want, label, tn, found)
    text = f"No {want} with a box was seen in {w.text}, so Kestrel cannot read its colour."
    return [Fact("colour", text)], text


MONO_Q = re.compile(r"black[ -]and[ -]white|\bin colou?r or\b|\bgr[ae]yscale\b|\bmonochrome\b", re.I)


def _nearest_frame(w: _Window) -> tuple[float, np.ndarray]:
    return min(w.frames, key=lambda f: (abs(f[0] - w.t_end), -f[0]))


def _standout_facts(w: _Window) -> tuple[list[Fact], str]:
    """No detector label for the thing asked about ("the square"): the colour of what stands out
    from the frame's backdrop at the asked time, said as such."""
    from core.perception.colour import standout_colour

    t, img = _nearest_frame(w)
    got = standout_colour(img)
    if got is None:
        text = (f"The question names nothing Kestrel's detector knows, and nothing stands out from the "
                f"backdrop in the frame at [{clock(t)}], so Kestrel cannot say its colour.")
        return [Fact("colour", text)], text
    c, box = got
    where = position(box, (img.shape[1], img.shape[0]))
    warn = " Weak evidence: the region's pixels are split between colours." if c.weak else ""
    text = (f"What stands out from the backdrop at [{clock(t)}] ({where}) is {c.name} — read from its pixels: "
            f"{c.describe()}; no detector label names it, so this is the frame's most distinct region.{warn}")
    return [Fact("colour", text, c.confidence, (t,))], text


def _mono_facts(w: _Window) -> tuple[list[Fact], str]:
    """Colour or black and white: the share of pixels with a hue, over the window's frames."""
    from core.perception.colour import colourfulness

    picks = [w.frames[i] for i in np.unique(np.linspace(0, len(w.frames) - 1, min(5, len(w.frames))).astype(int))]
    share = float(np.median([colourfulness(img) for _t, img in picks]))
    span = fmt_span(picks[0][0], picks[-1][0])
    if share < 0.02:
        text = f"It is in black and white: only {share:.1%} of the pixels have a hue in the frames of {span}."
    else:
        text = f"It is in colour: {share:.0%} of the pixels have a hue in the frames of {span}."
    return [Fact("colour", text, share, (picks[0][0],))], text


def _scale(o: Observation, shape: tuple[int, ...]) -> tuple[float, float]:
    h, w = shape[:2]
    return (w / o.size[0], h / o.size[1]) if o.size and o.size[0] and o.size[1] else (1.0, 1.0)


def _say_colour(w: _Window, want: str, label: str, t: float, found: list) -> tuple[list[Fact], str]:
    called = "" if label == want else f" (the detector's nearest label: {label})"
    o, c = found[0]
    weak = []
    if c.weak:
        weak.append("the box's pixels are split between colours")
    if o.score < WEAK_SCORE:
        weak.append(f"the detector is unsure it is a {label} ({o.score:.2f})")
    warn = f" Weak evidence: {' and '.join(weak)}." if weak else ""
    what = f"The {label}{called} at [{clock(t)}] is {c.name}"
    if len(found) > 1:
        others = ", ".join(f"{c2.name} ({position(o2.box, o2.size) or 'another'})" for o2, c2 in found[1:])
        what += f" ({position(o.box, o.size) or 'the most confident'}); other {plural(label, 2)}: {others}"
    text = (f"{what} — read from its pixels: {c.describe()} of the box, detection score {o.score:.2f}.{warn}")
    return [Fact("colour", text, c.confidence, (t,))], text


_FILE_FACTS: dict[str, Callable[[_Window, Sequence[str]], tuple[list[Fact], str | None]]] = {
    "video": _video_facts, "audio": _audio_facts, "speech": _speech_facts, "view": _view_facts,
    "colour": _colour_facts, "speakers": speaker_facts}


def best_text(question: str, log: PerceptionLog, t0: float, t1: float,
              index: TextVectors | None = None) -> tuple[str, float] | None:
    """The on-screen text that best matches a question, joined with the lines right under or above it
    in the same frame ("cero" + "emisiones"), and its time. A small model handed ten OCR lines
    picks the wrong one; the choice is made here: shared words (forgiving spelling and language:
    "emissions" ~ "emisiones"), then MiniLM, then the latest and most confident."""
    from difflib import SequenceMatcher

    rows = [o for o in log.observations(t0, t1) if o.kind == "text" and o.label.strip()]
    if not rows:
        return None
    qw = [w for w in question_words(question) - STOP if len(w) >= 4 and w not in ("text", "says", "sign", "read")]
    texts = list(dict.fromkeys(o.label for o in rows))
    vecs = index.vectors([question] + texts) if index is not None else None
    sim = {t: float(vecs[0] @ vecs[i + 1]) if vecs is not None else 0.0 for i, t in enumerate(texts)}

    def score(o: Observation) -> tuple[float, float, float]:
        words = re.findall(r"\w{3,}", o.label.lower())
        lexical = max((SequenceMatcher(None, q, w).ratio() for q in qw for w in words), default=0.0)
        return (round(lexical, 1) if lexical >= 0.75 else 0.0, sim[o.label] + 0.1 * o.score, o.time)

    best = max(rows, key=score)
    same = sorted((o for o in rows if abs(o.time - best.time) < 1e-3 and o.box and best.box), key=lambda o: o.box[1])
    phrase = [best]
    if best.box:
        h = best.box[3] - best.box[1]
        for o in same:  # the block of lines around it: close vertically, overlapping horizontally
            if o is not best and abs(o.box[1] - best.box[1]) < 1.6 * h and min(o.box[2], best.box[2]) > max(
                    o.box[0], best.box[0]):
                phrase.append(o)
    phrase.sort(key=lambda o: (o.box or (0, 0))[1])
    return " ".join(o.label for o in phrase), best.time


NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven "
                                            "twelve".split())}


def reconcile(answer: str, g: Grounding) -> tuple[str, bool]:
    """The model's words, unless they contradict a count computed in code, or do not quote all the
    on-screen text the question is about: then the code's answer (``corrected`` True). A small
    model is trusted neither to count nor to pick the right line of OCR."""
    if g.text_question and g.direct and g.kind == "open":
        said = re.sub(r"\W+", " ", answer.lower())
        want = [w for w in re.sub(r"\W+", " ", g.direct.split('"')[1].lower()).split() if len(w) >= 2 or w.isdigit()]
        # the model must quote the text read, all of it ("EXIT", not "EXIT 12"; not "the sign is written")
        return (answer, False) if want and all(w in said.split() for w in want) else (g.direct, True)
    if g.kind != "count" or g.count is None or not g.direct:
        return answer, False
    body = TIME_RE.sub(" ", answer)
    nums = {int(x) for x in re.findall(r"\b\d+\b", body)}
    nums |= {v for w, v in NUMBER_WORDS.items() if re.search(rf"\b{w}\b", body, re.I)}
    if nums == {g.count} or (g.count == 0 and re.search(r"\bno\b|\bnone\b|\bnobody\b", body, re.I) and not nums - {0}):
        return answer, False
    return g.direct, True
