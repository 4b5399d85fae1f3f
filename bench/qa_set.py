"""The QA benchmark's questions: clips, questions, the time asked about, and a checker each.

Ground truth is TRUE of the clip, never guessed:
- generated clips (built here, once, into a cache folder) know it by construction: speech by
  espeak-ng placed at a known time (leading silence trimmed), the real pygame ``boom``/``punch``
  sounds mixed in at a known time, shapes of a known colour on a plain wall, text drawn with
  OpenCV, a real photo (zidane.jpg: two men before a blurred crowd, so never counted) shown from /
  until a known time, bus.jpg tiled two and three times (two and three buses), a file with no
  audio stream (tests/mediagen.py's ``make_video_only``);
- real clips (core.media.samples) were looked at frame by frame (bikes: a cyclist at 5 s;
  city_mpg: skyscrapers at night, nobody, no car, no audio; failing_audio: an airliner in the sky
  at 1 s; chaplin: black-and-white film, two men in every frame of 0-5 s; Sintel: "The Blender Foundation presents"
  at 10 s, Whisper and the trailer's script agree on "What brings you to the land of the
  gatekeepers?" at 12-14 s and "I'm searching for someone." at 18-20 s; bus.jpg: a blue-and-white
  bus, four pedestrians (two cut by the picture's edges), "cero emisiones" painted on it;
  vacation.jpg: a silver SUV so light in the sun that "white" is accepted too).

Categories (10): count, presence, when, said, speakers, sound, colour, text, no_audio, empty.
Each checker knows an answer it accepts (``right``) and one it rejects (``wrong``):
tests/chat/test_qa_bench.py holds every checker to both.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CATEGORIES = ("count", "presence", "when", "said", "speakers", "sound", "colour", "text", "no_audio", "empty")
VERSION = 1  # bump when a generated clip changes: the cache folder is per version
RATE = 48000  # audio sample rate of the generated clips
SIZE = (640, 360)
FPS = 10


# -- checkers --------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return " " + re.sub(r"\s+", " ", (text or "").lower().replace("’", "'")) + " "


NEG = re.compile(r"\bno\b|\bnot\b|n't\b|\bnone\b|\bnobody\b|\bno one\b|\bnothing\b|\bnever\b|\bneither\b"
                 r"|\bzero\b|\bwithout\b|\bempty\b")
YES = re.compile(r"\byes\b")
ABSTAIN = re.compile(r"not in the log|don't know|do not know|cannot tell|can't tell|unknown|unclear|"
                     r"no information|cannot determine|can't determine|not sure")
NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven "
                                            "twelve".split())}
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white",
           "grey", "gray", "silver", "gold", "cyan", "magenta", "beige", "tan")


def _without_times(text: str) -> str:
    from core.chat import SECONDS_RE, TIME_RE
    return SECONDS_RE.sub(" ", TIME_RE.sub(" ", text))


def numbers(text: str) -> list[int]:
    """The whole numbers an answer states, in order (digits and number words), times left out."""
    body = _without_times(text).lower()
    out = []
    for m in re.finditer(r"\b\d+(?:\.\d+)?\b|\b[a-z]+\b", body):
        w = m.group(0)
        if w[0].isdigit():
            if "." not in w:
                out.append(int(w))
        elif w in NUMBER_WORDS:
            out.append(NUMBER_WORDS[w])
    return out


def times(text: str) -> list[float]:
    """The times an answer cites, in order ("[00:06]", "00:06–00:08", "at 6 s", "6 seconds")."""
    from core.chat import citations
    found = [(c.start, c.seconds) for c in citations(text)]
    for m in re.finditer(r"\b(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b", text, re.I):
        if not any(abs(m.start(1) - s) < 3 for s, _ in found):
            found.append((m.start(1), float(m.group(1))))
    return [t for _s, t in sorted(found)]


@dataclass(frozen=True)
class Number:
    """The first number the answer states is ``n`` (0: also "no …", "none", "nobody")."""
    n: int

    def __call__(self, text: str) -> bool:
        nums = numbers(text)
        if nums:
            return nums[0] == self.n
        return self.n == 0 and bool(NEG.search(_norm(text))) and not ABSTAIN.search(_norm(text))

    @property
    def expected(self) -> str:
        return str(self.n)

    @property
    def right(self) -> str:
        return f"There are {self.n} at [00:02]." if self.n else "There are none."

    @property
    def wrong(self) -> str:
        return f"There are {self.n + 1} at [00:02]."


@dataclass(frozen=True)
class YesNo:
    """Yes (a "yes", or the thing named without a negation) or no (a negation, no "yes")."""
    yes: bool
    also: tuple[str, ...] = ()  # words that, named without a negation, mean yes

    def __call__(self, text: str) -> bool:
        t = _norm(text)
        if ABSTAIN.search(t):
            return False
        neg, yes = bool(NEG.search(t)), bool(YES.search(t))
        if self.yes:
            return (yes and not t.lstrip().startswith("no")) or (not neg and any(a in t for a in self.also))
        return neg and not yes

    @property
    def expected(self) -> str:
        return "yes" if self.yes else "no"

    @property
    def right(self) -> str:
        return "Yes, at [00:02]." if self.yes else "No, nothing of the kind was seen."

    @property
    def wrong(self) -> str:
        return "No, it is not in the log." if self.yes else "Yes, at [00:02]."


@dataclass(frozen=True)
class Time:
    """The first time the answer cites is within ``tol`` s of ``t``."""
    t: float
    tol: float = 1.0

    def __call__(self, text: str) -> bool:
        if ABSTAIN.search(_norm(text)):
            return False
        ts = times(text)
        return bool(ts) and abs(ts[0] - self.t) <= self.tol

    @property
    def expected(self) -> str:
        return f"{self.t:g} s ± {self.tol:g}"

    @property
    def right(self) -> str:
        from core.timefmt import clock
        return f"At [{clock(self.t)}]."

    @property
    def wrong(self) -> str:
        from core.timefmt import clock
        return f"At [{clock(self.t + self.tol + 3)}]."


@dataclass(frozen=True)
class Colour:
    """One of ``accept`` is named, and no colour outside ``accept`` and ``allow``."""
    accept: tuple[str, ...]
    allow: tuple[str, ...] = ()

    def __call__(self, text: str) -> bool:
        t = _norm(text)
        if not any(re.search(rf"\b{re.escape(a)}\b", t) for a in self.accept):
            return False
        ok = {w for a in self.accept + self.allow for w in re.findall(r"[a-z]+", a)}
        named = {c for c in COLOURS if re.search(rf"\b{c}\b", t)}
        return named <= ok

    @property
    def expected(self) -> str:
        return "/".join(self.accept)

    @property
    def right(self) -> str:
        return f"It is {self.accept[0]}."

    @property
    def wrong(self) -> str:
        other = next(c for c in ("red", "green", "purple") if c not in " ".join(self.accept + self.allow))
        return f"It is {other}."


@dataclass(frozen=True)
class Words:
    """Every group has one of its words in the answer, and no ``reject`` word is there."""
    groups: tuple[tuple[str, ...], ...]
    reject: tuple[str, ...] = ()

    def __call__(self, text: str) -> bool:
        t = _norm(text)
        if any(re.search(rf"\b{re.escape(r)}", t) for r in self.reject):
            return False
        return all(any(re.search(rf"\b{re.escape(w)}", t) for w in g) for g in self.groups)

    @property
    def expected(self) -> str:
        return " + ".join("|".join(g) for g in self.groups)

    @property
    def right(self) -> str:
        return " ".join(g[0] for g in self.groups).capitalize() + "."

    @property
    def wrong(self) -> str:
        return f"It is not in the log ({self.reject[0]})." if self.reject else "It is not in the log."


NO_AUDIO = re.compile(r"no audio|no sound|no soundtrack|without (?:an? )?(?:audio|sound)|(?:has|have|had|contains?)"
                      r" no (?:audio|sound)|not? (?:have|has|contain) (?:any |an )?(?:audio|sound)|"
                      r"audio (?:track|stream) is missing|silent file|no audio track")


@dataclass(frozen=True)
class SaysNoAudio:
    """The answer says the file has no audio (and claims nothing heard)."""

    def __call__(self, text: str) -> bool:
        t = _norm(text)
        return bool(NO_AUDIO.search(t)) and not YES.search(t)

    @property
    def expected(self) -> str:
        return "says the file has no audio"

    right = "The file has no audio track, so nothing can be heard."
    wrong = "Yes, I can hear the person and car."


Checker = Number | YesNo | Time | Colour | Words | SaysNoAudio
SPEECH_WORDS = ("speech", "speak", "talk", "voice", "say", "said", "someone", "person", "word")
# an answer that says speech was heard ("no speech" says the opposite, and is no claim)
CLAIMS_SPEECH = ("speech:", "speech is", "speech was", "someone says", "says:", "talking", "spoken")
LOUD_WORDS = ("loud", "bang", "boom", "explosion", "impact", "crash", "thud", "blast", "knock", "hit", "punch",
              "slam", "clap")


@dataclass(frozen=True)
class Question:
    clip: str
    question: str
    at: float
    category: str
    check: Checker
    window: float = 30.0  # main.py chat's --window (its default)

    @property
    def expected(self) -> str:
        return self.check.expected


# -- the questions ---------------------------------------------------------------------------

Q = Question
QUESTIONS: tuple[Question, ...] = (
    # count
    Q("bus", "How many people are there?", 2.5, "count", Number(4)),
    Q("bus", "How many buses are there?", 2.5, "count", Number(1)),
    Q("buses_3", "How many buses are there?", 5.0, "count", Number(3)),
    Q("buses_2", "How many buses are in the picture?", 5.0, "count", Number(2)),
    Q("boom", "How many loud bangs can be heard?", 10.0, "count", Number(1)),
    Q("chaplin", "How many people are there?", 5.0, "count", Number(2)),
    Q("two_booms", "How many loud bangs can be heard?", 10.0, "count", Number(2)),
    Q("punch", "How many loud sounds are there?", 8.0, "count", Number(1)),
    # presence
    Q("bikes", "Is there a bicycle?", 5.0, "presence", YesNo(True, ("bicycle", "bike"))),
    Q("bus", "Is there a bus?", 2.5, "presence", YesNo(True, ("bus",))),
    Q("bus", "Is there a dog?", 2.5, "presence", YesNo(False)),
    Q("failing_audio", "Is there an airplane?", 2.0, "presence", YesNo(True, ("airplane", "plane", "aircraft"))),
    Q("car_photo", "Is there a car?", 4.0, "presence", YesNo(True, ("car",))),
    Q("person_enters", "Is there a person?", 9.0, "presence", YesNo(True, ("person", "people", "man", "men"))),
    Q("person_leaves", "Is there a person at the start of the video?", 9.0, "presence",
      YesNo(True, ("person", "people", "man", "men"))),
    # when
    Q("speech_one", "When does someone start speaking?", 12.0, "when", Time(4.0)),
    Q("boom", "When was the loud bang?", 10.0, "when", Time(6.0)),
    Q("punch", "When is the loud sound heard?", 8.0, "when", Time(3.0)),
    Q("person_enters", "When does a person first appear?", 10.0, "when", Time(5.0)),
    Q("person_leaves", "When is a person last seen?", 10.0, "when", Time(4.0)),
    Q("speech_two", "When does the second voice start speaking?", 16.0, "when", Time(6.0)),
    Q("sintel", "When does someone mention the gatekeepers?", 30.0, "when", Time(12.0, 2.0)),
    Q("two_booms", "When is the last loud bang heard?", 10.0, "when", Time(7.0)),
    Q("speech_three", "When does the second person start talking?", 12.0, "when", Time(4.5)),
    # said
    Q("speech_one", "What was said?", 12.0, "said", Words((("truck", "delivery"), ("gate",)))),
    Q("speech_one", "Where will the truck arrive?", 12.0, "said", Words((("north",), ("gate",)))),
    Q("speech_two", "What time does the warehouse open?", 16.0, "said", Words((("nine", "9"),))),
    Q("speech_two", "What did the first speaker ask about?", 16.0, "said", Words((("warehouse",),))),
    Q("sintel", "What is the character searching for?", 25.0, "said", Words((("someone",),))),
    Q("sintel", "What land does the stranger ask about?", 20.0, "said", Words((("gatekeeper",),))),
    # speakers
    Q("speech_one", "How many speakers are there?", 12.0, "speakers", Number(1)),
    Q("speech_two", "How many different speakers are there?", 16.0, "speakers", Number(2)),
    Q("speech_three", "How many different people speak?", 12.0, "speakers", Number(3)),
    Q("wall_silent", "How many people are speaking?", 10.0, "speakers", Number(0)),
    Q("speech_two", "Is more than one person speaking?", 16.0, "speakers", YesNo(True)),
    Q("speech_one", "Are there two different voices?", 12.0, "speakers", YesNo(False)),
    Q("speech_two", "Does the same person speak throughout?", 16.0, "speakers", YesNo(False)),
    # sound
    Q("boom", "What sound can be heard?", 10.0, "sound", Words((LOUD_WORDS,), CLAIMS_SPEECH + ("music",))),
    Q("punch", "What sound is heard?", 8.0, "sound", Words((LOUD_WORDS,), CLAIMS_SPEECH + ("music",))),
    Q("speech_one", "What can be heard?", 12.0, "sound", Words((SPEECH_WORDS,), ("music",))),
    Q("wall_silent", "What can be heard?", 10.0, "sound",
      Words((("nothing", "silence", "silent", "no sound", "quiet", "no audible"),), CLAIMS_SPEECH + ("music", "loud"))),
    Q("boom", "Is there a loud noise?", 10.0, "sound", YesNo(True, ("loud", "bang", "boom", "explosion"))),
    Q("two_booms", "Can you hear anyone talking?", 10.0, "sound", YesNo(False)),
    Q("wall_silent", "Is there a loud noise?", 10.0, "sound", YesNo(False)),
    # colour
    Q("red_square", "What colour is the square?", 4.0, "colour", Colour(("red",))),
    Q("blue_circle", "What colour is the circle?", 4.0, "colour", Colour(("blue",))),
    Q("green_triangle", "What colour is the triangle?", 4.0, "colour", Colour(("green",))),
    Q("yellow_square", "What colour is the object in the middle?", 4.0, "colour", Colour(("yellow",))),
    Q("bus", "What colour is the bus?", 2.5, "colour", Colour(("blue",), ("white",))),
    Q("car_photo", "What colour is the car?", 4.0, "colour", Colour(("silver", "grey", "gray", "white"))),  # silver in the sun: white is fair
    Q("chaplin", "Is this film in colour or in black and white?", 5.0, "colour",
      Colour(("black and white", "black-and-white", "monochrome", "grayscale", "greyscale"), ("grey", "gray"))),
    # text
    Q("sign", "What does the sign say?", 3.0, "text", Words((("gate 7", "gate7"),))),
    Q("bus", "What does the text on the bus say about emissions?", 2.5, "text", Words((("emisiones", "cero"),))),
    Q("text_exit", "What does the sign say?", 4.0, "text", Words((("exit",), ("12",)))),
    Q("text_exit", "What number is written on the sign?", 4.0, "text", Words((("12", "twelve"),))),
    Q("text_platform", "What is written on the sign?", 4.0, "text", Words((("platform",), ("4", "four")))),
    Q("text_noparking", "What does the sign read?", 4.0, "text", Words((("parking",),))),
    Q("sintel", "What text is shown on the screen?", 10.0, "text", Words((("blender",),))),
    # files without audio
    Q("bikes", "Can you hear anything?", 10.0, "no_audio", SaysNoAudio()),
    Q("bikes", "What is being said?", 5.0, "no_audio", SaysNoAudio()),
    Q("city_mpg", "What sounds can be heard?", 7.0, "no_audio", SaysNoAudio()),
    Q("city_mpg", "Is anyone talking?", 7.0, "no_audio", SaysNoAudio()),
    Q("video_only", "How many speakers are there?", 6.0, "no_audio", SaysNoAudio()),
    Q("video_only", "Is there any sound?", 6.0, "no_audio", SaysNoAudio()),
    # empty scenes
    Q("wall_silent", "Is there a person?", 10.0, "empty", YesNo(False)),
    Q("wall_silent", "What objects are in view?", 10.0, "empty", YesNo(False)),
    Q("wall_silent", "How many cars are there?", 10.0, "empty", Number(0)),
    Q("city_mpg", "Are there any people?", 3.0, "empty", YesNo(False)),
    Q("city_mpg", "Is there a car?", 3.0, "empty", YesNo(False)),
    Q("person_leaves", "Is there anyone in the frame now?", 9.5, "empty", YesNo(False)),
)


# -- clips -----------------------------------------------------------------------------------

SAMPLES = {"bikes": "bikes", "city_mpg": "city_mpg", "sintel": "sintel", "failing_audio": "failing_audio",
           "chaplin": "chaplin"}

# speech: (voice, start s, text) — espeak-ng, leading silence trimmed, so speech starts at ``start``
SPEECH = {
    "speech_one": (12.0, [("en-us+m3", 4.0, "The delivery truck will arrive at the north gate at noon.")]),
    "speech_two": (16.0, [("en-us+m3", 1.0, "Good morning. Is the warehouse open today?"),
                          ("en-gb+f3", 6.0, "Yes, we open at nine and close at five."),
                          ("en-us+m3", 11.0, "Thank you, I will come tomorrow.")]),
    "speech_three": (12.0, [("en-us+m3", 1.0, "The meeting starts at ten."),
                            ("en-gb+f3", 4.5, "I will bring the report."),
                            ("en-gb-scotland+m7", 8.0, "Please close the door.")]),
}
IMPACTS = {"boom": (10.0, [("boom_wav", 6.0)]), "punch": (8.0, [("punch_wav", 3.0)]),
           "two_booms": (10.0, [("boom_wav", 2.5), ("boom_wav", 7.0)])}
SHAPES = {"red_square": ("square", (220, 30, 30)), "blue_circle": ("circle", (30, 60, 220)),
          "green_triangle": ("triangle", (30, 170, 50)), "yellow_square": ("square", (240, 210, 20))}
TEXTS = {"text_exit": ("EXIT 12", (255, 255, 255), (20, 130, 60), "wall"),
         "text_noparking": ("NO PARKING", (255, 255, 255), (200, 20, 20), "wall"),
         "text_platform": ("PLATFORM 4", (20, 20, 20), (245, 245, 240), "vacation_jpg")}
#: the person clips: zidane.jpg (two men) shown over [start, end) of the clip, the wall otherwise
PERSON = {"person_enters": (10.0, 5.0, 10.0), "person_leaves": (10.0, 0.0, 4.0)}

GENERATED = (("wall_silent", "video_only", "car_photo", "buses_2", "buses_3", "bus", "sign")
             + tuple(SPEECH) + tuple(IMPACTS) + tuple(SHAPES) + tuple(TEXTS) + tuple(PERSON))


def clip_names() -> set[str]:
    return set(SAMPLES) | set(GENERATED)


def wall(size: tuple[int, int] = SIZE) -> np.ndarray:
    """A plain, static wall: a soft vertical gradient with a fixed fine texture (no objects)."""
    w, h = size
    rng = np.random.default_rng(7)
    base = np.linspace(200, 170, h)[:, None, None] * np.array([1.0, 0.98, 0.93])[None, None, :]
    img = np.broadcast_to(base, (h, w, 3)) + rng.normal(0, 2.0, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size`` and centred on a dark grey letterbox."""
    import cv2
    w, h = size
    s = min(w / img.shape[1], h / img.shape[0])
    small = cv2.resize(img, (int(img.shape[1] * s) // 2 * 2, int(img.shape[0] * s) // 2 * 2),
                       interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 40, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def shape_frame(kind: str, rgb: tuple[int, int, int], size: tuple[int, int] = SIZE) -> np.ndarray:
    import cv2
    img = np.full((size[1], size[0], 3), 205, np.uint8)
    cx, cy, r = size[0] // 2, size[1] // 2, size[1] // 5
    if kind == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), rgb, -1)
    elif kind == "circle":
        cv2.circle(img, (cx, cy), r, rgb, -1, cv2.LINE_AA)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], rgb, cv2.LINE_AA)
    return img


def text_frame(text: str, fg: tuple[int, int, int], bg: tuple[int, int, int], under: np.ndarray) -> np.ndarray:
    """A sign (``bg`` panel, ``fg`` letters ~40 px high) drawn with OpenCV in the middle of ``under``."""
    import cv2
    img = under.copy()
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 1.6, 4
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x, y = (img.shape[1] - tw) // 2, (img.shape[0] - th) // 2
    cv2.rectangle(img, (x - 20, y - 20), (x + tw + 20, y + th + base + 20), bg, -1)
    cv2.putText(img, text, (x, y + th), font, scale, fg, thick, cv2.LINE_AA)
    return img


def speak(text: str, voice: str, rate: int = RATE) -> np.ndarray:
    """espeak-ng's ``voice`` saying ``text``: mono float32 at ``rate``, leading and trailing silence trimmed."""
    from tests.mediagen import espeak

    return trim(espeak(text, voice=voice, rate=rate))


def trim(sig: np.ndarray, rel: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(sig) > rel * float(np.abs(sig).max() or 1.0))
    return sig[loud[0]:loud[-1] + 1] if len(loud) else sig


def load_sound(path: str | Path, rate: int = RATE) -> np.ndarray:
    """A real sound file as mono float32 at ``rate``, peak-normalised to 0.9, silence trimmed."""
    from tests.mediagen import decode_mono

    sig = trim(decode_mono(path, rate))
    return (0.9 * sig / max(1e-6, float(np.abs(sig).max()))).astype(np.float32)


def room(duration: float, rate: int = RATE, level: float = 0.002) -> np.ndarray:
    """A quiet room: faint, fixed noise (never digital silence)."""
    return (np.random.default_rng(3).normal(0, level, int(duration * rate))).astype(np.float32)


def place(track: np.ndarray, sound: np.ndarray, start: float, rate: int = RATE) -> None:
    i = int(round(start * rate))
    n = min(len(sound), len(track) - i)
    if n < len(sound):
        raise ValueError(f"a sound of {len(sound) / rate:.1f} s at {start} s runs past the clip's end")
    if np.abs(track[i:i + n]).max() > 0.05:
        raise ValueError(f"a sound at {start} s overlaps another")
    track[i:i + n] += sound[:n]


def write_clip(path: Path, duration: float, frame_at: Callable[[float], np.ndarray], audio: np.ndarray | None,
               fps: int = FPS) -> Path:
    """H.264 (+ AAC ``audio`` at RATE, mono) of ``frame_at(t)`` for t = i / fps."""
    import av
    from fractions import Fraction

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    first = frame_at(0.0)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20"})
        vs.width, vs.height, vs.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        aus = None
        if audio is not None:
            aus = out.add_stream("aac", rate=RATE)
            aus.layout = "mono"
        for i in range(int(round(duration * fps))):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_at(i / fps)), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if aus is not None:
            cc = aus.codec_context
            rs = av.AudioResampler(format=cc.format.name, layout="mono", rate=RATE, frame_size=cc.frame_size or 1024)
            sig = np.clip(audio, -1, 1).astype(np.float32)[None, :]
            for s in range(0, sig.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(sig[:, s:s + 1024]), format="flt", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = RATE, s, Fraction(1, RATE)
                for part in rs.resample(fr):
                    out.mux(aus.encode(part))
            for part in rs.resample(None):
                out.mux(aus.encode(part))
            out.mux(aus.encode(None))
    tmp.replace(path)
    return path


def build(name: str, folder: Path, sample: Callable[[str], Path]) -> Path:
    """Generate clip ``name`` into ``folder`` (see the module docstring for what each holds)."""
    path = folder / f"{name}.mp4"
    still = lambda img: (lambda t: img)  # noqa: E731
    if name == "wall_silent":
        return write_clip(path, 10.0, still(wall()), room(10.0))
    if name == "video_only":
        from tests.mediagen import make_video_only
        return make_video_only(path, duration=6.0, size=(320, 240))
    if name == "bus":
        from core.chat.selftest import make_bus_clip
        return make_bus_clip(path, sample("bus_jpg"))
    if name == "sign":
        from core.chat.selftest import make_sign_clip
        return make_sign_clip(path, sample("sintel"))
    from tests.mediagen import read_rgb
    if name == "car_photo":
        return write_clip(path, 5.0, still(fit(read_rgb(sample("vacation_jpg")), (960, 540))), room(5.0))
    if name in ("buses_2", "buses_3"):
        n = int(name[-1])
        bus = fit(read_rgb(sample("bus_jpg")), (360, 480))
        return write_clip(path, 6.0, still(np.hstack([bus] * n)), room(6.0))
    if name in SPEECH:
        duration, parts = SPEECH[name]
        track = room(duration)
        for voice, start, text in parts:
            place(track, 0.8 * speak(text, voice), start)
        return write_clip(path, duration, still(wall()), track)
    if name in IMPACTS:
        duration, parts = IMPACTS[name]
        track = room(duration)
        for snd, start in parts:
            place(track, load_sound(sample(snd)), start)
        return write_clip(path, duration, still(wall()), track)
    if name in SHAPES:
        return write_clip(path, 5.0, still(shape_frame(*SHAPES[name])), room(5.0))
    if name in TEXTS:
        text, fg, bg, under = TEXTS[name]
        base = wall() if under == "wall" else fit(read_rgb(sample(under)), SIZE)
        return write_clip(path, 5.0, still(text_frame(text, fg, bg, base)), room(5.0))
    if name in PERSON:
        duration, a, b = PERSON[name]
        person, empty = fit(read_rgb(sample("zidane_jpg")), SIZE), wall()
        return write_clip(path, duration, lambda t: person if a <= t < b else empty, room(duration))
    raise KeyError(f"no clip named {name!r}")


def cache_folder() -> Path:
    import os
    base = Path(os.environ.get("KESTREL_BENCH_CACHE", Path.home() / ".cache" / "kestrel" / "bench"))
    return base / f"qa-v{VERSION}"


def clip_path(name: str, folder: Path | None = None, sample: Callable[[str], Path] | None = None) -> Path:
    """The clip's file: a real sample as it is, or a generated clip built once into ``folder``."""
    if sample is None:
        from core.media.samples import sample_path as sample
    if name in SAMPLES:
        return Path(sample(SAMPLES[name]))
    folder = folder or cache_folder()
    path = folder / f"{name}.mp4"
    return path if path.exists() else build(name, folder, sample)

