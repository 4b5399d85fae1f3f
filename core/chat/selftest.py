"""The chat self-test: questions with known answers on real clips, answered from the machine
stream at several bitrates, so the analyst sees where their model stops coping.

Why: the point of the machine-oriented stream is that answers survive the compression; the
only honest way to show it is to ask questions whose answers are known, once per rung of a
bitrate ladder and once from the uncompressed frames, and plot accuracy against kbps. The
answers come from what perception finds in the *decoded* frames (plus the transcript, which
rides on the audio, not on the video bits): ``ChatRequest(stream_only=True)``.

Clips (real footage only): the Sintel trailer (Blender Foundation, CC BY 3.0) for the spoken
lines; ultralytics' bus.jpg panned into a 3-s clip (a bus, people, and real text painted on
the bus: "cero emisiones"); and Sintel with a sign drawn into it ("GATE 7") for reading text.
Questions that need reading text are flagged: text is the first thing to break.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.chat import is_text_question, make_backend, text_vectors
from core.chat.encoder import EncoderSettings
from core.chat.evidence import Eyes, held_eyes, perceive_file
from core.chat.perception_log import PerceptionLog
from core.chat.session import ChatAnswer, ChatRequest, answer
from core.jobs import HeadlessState, JobState, SubProgress, check, set_media_span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QA:
    clip: str
    question: str
    at: float
    accept: tuple[str, ...]  # an answer containing any of these (case-insensitive) is right…
    reject: tuple[str, ...] = ()  # …unless it also contains one of these
    kind: str = "detection"  # transcript | detection | count | text
    window_s: float = 20.0

    @property
    def needs_text(self) -> bool:
        return self.kind == "text" or is_text_question(self.question)


QUESTIONS: tuple[QA, ...] = (
    QA("sintel", "What is the character searching for?", 25.0, ("someone",), kind="transcript", window_s=25.0),
    QA("sintel", "What land does the stranger ask about?", 20.0, ("gatekeeper",), kind="transcript"),
    QA("sintel", "Is there a person?", 16.0, ("yes",), ("no,", "no.", "not "), kind="detection"),
    QA("bus", "Is there a bus?", 2.0, ("yes",), ("no,", "no.", "not "), kind="detection", window_s=3.0),
    QA("bus", "Is there a dog?", 2.0, ("no",), ("yes",), kind="detection", window_s=3.0),
    QA("bus", "How many people are there?", 2.0, ("3", "4", "three", "four"), ("2 ", "5", "two", "five"),
       kind="count", window_s=3.0),
    QA("bus", "What does the text on the bus say about emissions?", 2.0, ("emisiones", "emissiones", "cero"),
       kind="text", window_s=3.0),
    QA("sign", "What does the sign say?", 3.0, ("gate 7", "gate7"), kind="text", window_s=4.0),
)

#: The ladder: (name, settings) from generous to starved. The paper's own ladder is
#: 800 kbps @1080p … 200 kbps @576p (H.265); these rungs go far lower because frames are
#: sent only on semantic change and the background is flattened.
LADDER: tuple[tuple[str, EncoderSettings], ...] = (
    ("640/crf34", EncoderSettings(max_side=640, context_side=448, crf=34)),
    ("512/crf38", EncoderSettings(max_side=512, context_side=384, crf=38)),
    ("384/crf40", EncoderSettings(max_side=384, context_side=320, crf=40)),
    ("320/crf42", EncoderSettings(max_side=320, context_side=256, crf=42)),
    ("256/crf44", EncoderSettings(max_side=256, context_side=224, crf=44)),
    ("160/crf48", EncoderSettings(max_side=160, context_side=160, crf=48, min_interval=1.0)),
)
UNCOMPRESSED = ("uncompressed", EncoderSettings(uncompressed=True))


def is_correct(text: str, qa: QA) -> bool:
    t = " " + re.sub(r"\s+", " ", text.lower()) + " "
    return any(a in t for a in qa.accept) and not any(r in t for r in qa.reject)


@dataclass
class Clip:
    path: str
    log: PerceptionLog  # the sender's perception (full quality), steering the regions


@dataclass
class QAResult:
    qa: QA
    text: str
    correct: bool
    kbps: float
    stream_s: float
    bytes: int
    frames: list[float]
    encode_s: float
    transfer_s: float
    inference_s: float
    perceive_s: float
    error: str | None = None


@dataclass
class RungResult:
    name: str
    settings: EncoderSettings
    results: list[QAResult] = field(default_factory=list)

    @property
    def kbps(self) -> float:
        """Total bits over total stream time of every question's window."""
        s = sum(r.stream_s for r in self.results)
        return sum(r.bytes for r in self.results) * 8 / 1000 / s if s else 0.0

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.results) / len(self.results) if self.results else 0.0

    def accuracy_of(self, text: bool) -> float:
        rs = [r for r in self.results if r.qa.needs_text == text]
        return sum(r.correct for r in rs) / len(rs) if rs else float("nan")


@dataclass
class SelfTestReport:
    model: str
    rungs: list[RungResult]
    baseline: RungResult | None
    human_kbps: dict[str, float] = field(default_factory=dict)  # per clip, the whole clip
    warnings: list[str] = field(default_factory=list)

    def points(self) -> list[tuple[float, float]]:
        """(kbps, accuracy) per rung, for the accuracy-vs-kbps plot."""
        return [(r.kbps, r.accuracy) for r in self.rungs]

    def agreement(self, rung: RungResult) -> float:
        """Share of questions judged the same (right/wrong) as from the uncompressed frames."""
        if self.baseline is None or not rung.results:
            return float("nan")
        base = {r.qa: r.correct for r in self.baseline.results}
        return sum(base.get(r.qa) == r.correct for r in rung.results) / len(rung.results)

    def saturation(self, tolerance: float = 0.0) -> RungResult | None:
        """The cheapest rung still as accurate as the best (the bitrate cap worth setting)."""
        if not self.rungs:
            return None
        best = max(r.accuracy for r in self.rungs)
        ok = [r for r in self.rungs if r.accuracy >= best - tolerance]
        return min(ok, key=lambda r: r.kbps)


# -- clips ---------------------------------------------------------------------------------

def make_bus_clip(path: Path, bus_jpg: str | Path) -> Path:
    """3 s at 10 fps of the real bus photo panning slowly (the same clip as the tests' fixture)."""
    import av
    import cv2

    img = cv2.cvtColor(cv2.imread(str(bus_jpg)), cv2.COLOR_BGR2RGB)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 640, 864, "yuv420p"
        for i in range(30):
            frame = cv2.resize(img[i * 2: i * 2 + 1000, :], (640, 864))
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def draw_sign(img: np.ndarray, text: str = "GATE 7", at: tuple[int, int] = (40, 40)) -> np.ndarray:
    """A white sign with black letters (~26 px high) painted into a frame, like a real gate sign."""
    import cv2

    out = img.copy()
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 1.1, 3
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x, y = at
    cv2.rectangle(out, (x, y), (x + tw + 24, y + th + base + 20), (245, 245, 240), -1)
    cv2.rectangle(out, (x, y), (x + tw + 24, y + th + base + 20), (40, 40, 40), 2)
    cv2.putText(out, text, (x + 12, y + th + 10), font, scale, (15, 15, 15), thick, cv2.LINE_AA)
    return out


def make_sign_clip(path: Path, sintel: str | Path, start: float = 28.0, seconds: float = 4.0,
                   text: str = "GATE 7") -> Path:
    """``seconds`` of the Sintel trailer from ``start`` with a sign drawn into every frame."""
    import av

    with av.open(str(sintel)) as src, av.open(str(path), "w") as out:
        vs = src.streams.video[0]
        rate = vs.average_rate or 24
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = vs.width // 2 * 2, vs.height // 2 * 2, "yuv420p"
        s.options = {"crf": "18"}
        src.seek(int(start / vs.time_base), stream=vs, backward=True)
        for f in src.decode(vs):
            if f.time is None or f.time < start:
                continue
            if f.time >= start + seconds:
                break
            img = draw_sign(f.to_ndarray(format="rgb24")[: s.height, : s.width], text)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def prepare_clips(folder: str | Path, sample: Callable[[str], Path] | None = None,
                  names: Sequence[str] = ("sintel", "bus", "sign"), state: JobState | None = None) -> dict[str, Clip]:
    """The self-test clips with their sender-side perception (detector, OCR where there is text,
    transcript where there is speech), built once into ``folder``."""
    from core.media.samples import sample_path

    sample = sample or sample_path
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"sintel": Path(sample("sintel"))}
    if "bus" in names:
        paths["bus"] = folder / "bus.mp4"
        if not paths["bus"].exists():
            make_bus_clip(paths["bus"], sample("bus_jpg"))
    if "sign" in names:
        paths["sign"] = folder / "sign.mp4"
        if not paths["sign"].exists():
            make_sign_clip(paths["sign"], paths["sintel"])
    models = {"sintel": ("ssd-mobilenet-v2-coco", "whisper-tiny"),
              "bus": ("ssd-mobilenet-v2-coco", "rapidocr"),
              "sign": ("ssd-mobilenet-v2-coco", "rapidocr")}
    out = {}
    for k, name in enumerate(names):  # one share of the bar per clip (each clip's analysis says its own span)
        sub = None if state is None else SubProgress(state, k / len(names), (k + 1) / len(names), f"{name}: ")
        lg, errors = perceive_file(str(paths[name]), fps=2.0, models=models[name],
                                   state=sub)
        for e in errors:
            log.warning("self-test clip %s: %s", name, e)
        out[name] = Clip(str(paths[name]), lg)
    return out


# -- running -------------------------------------------------------------------------------

@dataclass
class SelfTestRequest:
    backend: Any
    clips: dict[str, Clip]
    questions: Sequence[QA] = QUESTIONS
    ladder: Sequence[tuple[str, EncoderSettings]] = LADDER
    baseline: bool = True
    embedder: Any = None
    eyes: Eyes | None = None
    max_tokens: int = 60
    human_reference: bool = True


@dataclass(frozen=True)
class SelfTestPartial:
    rung: str
    result: QAResult


def streamed_seconds(questions: Sequence[QA], rungs: int) -> float:
    """The footage a self-test streams: each question's window (before its time) at every rung:
    the media span of its jobs, for their throughput."""
    return rungs * sum(max(0.0, min(q.window_s, q.at)) for q in questions)


def run_selftest(req: SelfTestRequest, state: JobState | None = None) -> SelfTestReport:
    """Job: every question at every rung (and from the uncompressed frames); partial results
    per answered question, so the plot fills in as it runs."""
    from core.chat.codec import human_quality_kbps

    state = state or HeadlessState()
    qs = [q for q in req.questions if q.clip in req.clips]
    rungs = ([UNCOMPRESSED] if req.baseline else []) + list(req.ladder)
    set_media_span(state, streamed_seconds(qs, len(rungs)))
    eyes = req.eyes or held_eyes()
    vectors = text_vectors(req.embedder)
    report = SelfTestReport(str(getattr(req.backend, "name", "model")), [], None)
    total, done = len(qs) * len(rungs), 0
    for name, settings in rungs:
        rr = RungResult(name, settings)
        for qa in qs:
            check(state)
            clip = req.clips[qa.clip]
            ans = answer(ChatRequest(qa.question, req.backend, source=clip.path, at=qa.at, window_s=qa.window_s,
                                     log=clip.log, encoder=settings, eyes=eyes, vectors=vectors,
                                     max_tokens=req.max_tokens, stream_only=True), SubProgress(state, forward=False, quiet=True))
            res = _result(qa, ans)
            rr.results.append(res)
            done += 1
            state.set_progress(done / total, f"{name}: {qa.question[:40]}")
            state.set_partial_result(SelfTestPartial(name, res))
        if settings.uncompressed:
            report.baseline = rr
        else:
            report.rungs.append(rr)
    if req.human_reference:
        for name, clip in req.clips.items():
            report.human_kbps[name] = human_quality_kbps(clip.path)
    report.warnings = _warnings(report)
    return report


def _result(qa: QA, ans: ChatAnswer) -> QAResult:
    return QAResult(qa, ans.text, bool(ans.text) and not ans.error and is_correct(ans.text, qa), ans.kbps,
                    ans.stream_s, ans.bytes_sent, ans.frames_seen, ans.encode_s, ans.transfer_s,
                    ans.inference_s, ans.perceive_s, ans.error)


def _warnings(report: SelfTestReport) -> list[str]:
    out = []
    base = {r.qa: r.correct for r in report.baseline.results} if report.baseline else {}
    for rung in report.rungs:
        broke = [r.qa for r in rung.results if base.get(r.qa, True) and not r.correct]
        texts = [q for q in broke if q.needs_text]
        if texts:
            out.append(f"At {rung.kbps:.1f} kbps ({rung.name}) {len(texts)} question(s) that need reading text "
                       f"fail: " + "; ".join(q.question for q in texts) + " — text breaks first at low bitrate.")
    text_qs = [r.qa for r in (report.baseline.results if report.baseline else []) if r.qa.needs_text]
    if text_qs:
        out.insert(0, f"{len(text_qs)} question(s) need reading text in the picture; they are the first to fail "
                      "when the bitrate drops.")
    return out


# -- the window's job (runs on the compute worker) ---------------------------------------------

@dataclass(frozen=True)
class SelfTestJob:
    """``backend``: the loaded model, or None to load ``backend_key`` (kind, url, model) first.
    ``prepared``: clips already perceived (name → Clip); the rest of ``clips`` are made and
    perceived into ``folder``."""

    backend: Any
    backend_key: tuple[str, str, str]
    folder: str
    clips: tuple[str, ...]
    ladder: tuple[tuple[str, Any], ...]
    questions: tuple[QA, ...] = QUESTIONS
    prepared: dict[str, Clip] = field(default_factory=dict, compare=False)
    max_tokens: int = 60
    eyes: Any = None


@dataclass(frozen=True)
class BackendLoaded:
    key: tuple[str, str, str]
    backend: Any


@dataclass(frozen=True)
class ClipsReady:
    clips: dict[str, Clip]


def selftest_job(req: SelfTestJob, state: JobState) -> SelfTestReport:
    """Job: load the model if needed, perceive the clips not yet perceived, run the self-test. Its
    media span is the footage the questions stream (:func:`streamed_seconds`); the time it
    takes counts loading and perceiving too."""
    qs = [q for q in req.questions if q.clip in req.clips]
    set_media_span(state, streamed_seconds(qs, 1 + len(req.ladder)))  # run_selftest's baseline is on
    backend = req.backend
    if backend is None:
        state.set_progress(0.0, "loading the model")
        backend = make_backend(req.backend_key, state)
        state.set_partial_result(BackendLoaded(req.backend_key, backend))
    clips = {n: c for n, c in req.prepared.items() if n in req.clips}
    missing = [n for n in req.clips if n not in clips]
    split = 0.0
    if missing:
        split = 0.3
        clips.update(prepare_clips(req.folder, names=missing,
                                   state=SubProgress(state, 0.0, split, "perception on the clips: ", forward=False)))
        state.set_partial_result(ClipsReady(dict(clips)))
    return run_selftest(SelfTestRequest(backend, clips, questions=req.questions, ladder=req.ladder,
                                        eyes=req.eyes, max_tokens=req.max_tokens), SubProgress(state, split, 1.0))


# -- what broke first -----------------------------------------------------------------

@dataclass(frozen=True)
class Broke:
    """One question's fate down the ladder. ``status``: "broke" (first wrong at ``rung``),
    "held" (right at every rung), "never" (wrong even from the uncompressed frames)."""

    qa: QA
    status: str
    rung: str = ""
    kbps: float = math.nan
    answer: str = ""


def breaking_order(rungs: Sequence[RungResult], baseline: RungResult | None) -> list[Broke]:
    """The questions in the order they broke going down the ladder (the first to break — at the
    highest bitrate — first), then those that held, then those the model never got right."""
    base = {r.qa: r for r in baseline.results} if baseline is not None else {}
    ladder = sorted(rungs, key=lambda r: -r.kbps)
    order: list[QA] = []
    for rr in [baseline, *ladder]:
        for r in (rr.results if rr is not None else ()):
            if r.qa not in order:
                order.append(r.qa)
    out = []
    for qa in order:
        b = base.get(qa)
        if b is not None and not b.correct:
            out.append(Broke(qa, "never", "uncompressed", answer=b.error or b.text))
            continue
        first = next(((rr, r) for rr in ladder for r in rr.results if r.qa == qa and not r.correct), None)
        if first is None:
            out.append(Broke(qa, "held"))
        else:
            rr, r = first
            out.append(Broke(qa, "broke", rr.name, rr.kbps, r.error or r.text))
    rank = {"broke": 0, "held": 1, "never": 2}
    return sorted(out, key=lambda b: (rank[b.status], -b.kbps if b.status == "broke" else 0.0, not b.qa.needs_text))


def format_report(report: SelfTestReport) -> str:
    """The report as a table for the CLI and the bench."""
    lines = [f"model: {report.model}"]
    rows = ([report.baseline] if report.baseline else []) + report.rungs
    lines.append(f"{'rung':14s} {'kbps':>9s} {'accuracy':>9s} {'text Qs':>8s} {'same as raw':>12s}")
    for r in rows:
        same = report.agreement(r) if r is not report.baseline else 1.0
        lines.append(f"{r.name:14s} {r.kbps:9.1f} {r.accuracy:9.0%} {r.accuracy_of(True):8.0%} {same:12.0%}")
        lines += [f"{'':16s}wrong: {x.qa.question} → {(x.error or x.text)[:70]!r}" for x in r.results if not x.correct]
    for name, k in report.human_kbps.items():
        lines.append(f"human-quality H.264 (CRF 23) of {name}: {k:.0f} kbps")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)
