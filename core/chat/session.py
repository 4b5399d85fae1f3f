"""The chat job: a question about a moment of a video or a live feed → a grounded, streamed answer.

``answer(request, state)`` is a plain job (core.jobs): it takes the frames of the window
before the asked time, encodes them as the machine-oriented stream (the question steers
what stays sharp), lets perception look at the *decoded* frames — the embedded text-only
model's eyes — grounds the question in the perception log (retrieval, facts computed in
code), streams the backend's tokens as partial results, and returns a :class:`ChatAnswer`
with the citations, the bitrate the model was given, the frames it saw and where the time
went. Nothing here raises to the caller for a bad server, a missing model, a stop or a
dropped camera: the answer carries the message and is marked partial.

The window's frames and the eyes on them are :mod:`core.chat.evidence`'s; storing the answer
in the project is :mod:`core.chat.history`'s.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from core.chat import Citation, RegionScorer, TextVectors, citations, text_vectors
from core.chat.cited import CitedBox, cited_boxes
from core.chat.codec import human_quality_kbps
from core.chat.encoder import EncodedFrame, EncoderSettings, MachineEncoder
from core.chat.evidence import (Eyes, Frames, add_seen, frame_line, held_eyes, pick_frames, seen_near,
                                window_frames)
from core.chat.evidence import file_frames, perceive_file  # noqa: F401 (core/chat/cli.py imports them from here)
from core.chat.grounding import Grounding, ground, reconcile
from core.chat.history import save_chat  # noqa: F401 (core/chat/cli.py imports it from here)
from core.chat.perception_log import LogLine, PerceptionLog
from core.jobs import JobState
from core.timefmt import clock

log = logging.getLogger(__name__)

SYSTEM = ("You answer an analyst's questions about a video in one or two short sentences, using only the log "
          "lines given (what was seen and heard, with times). Facts given as computed are exact: repeat their "
          "numbers and never count by yourself. Cite the times you rely on as [mm:ss]. If the log does not say, "
          "answer that it is not in the log.")


@dataclass
class ChatRequest:
    """A question about ``at`` (stream or media seconds; None: the latest frame).

    ``frames``: (time, RGB) pairs of the window, or a callable ``(t0, t1) -> frames`` (e.g.
    ``RingBuffer.frames``); None with a file ``source`` decodes the window at ``sample_fps``.
    ``log``: the perception log (project tracks or the live loop). ``stream_only``: the model
    knows only what perception finds in the encoded frames, plus the transcript (the
    self-test: answers must then survive the compression).
    """

    question: str
    backend: Any  # models.llm.base.LLMBackend
    source: str = ""
    at: float | None = None
    window_s: float = 30.0
    frames: Frames | Callable[[float, float], Frames] | None = None
    log: PerceptionLog | None = None
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    eyes: Eyes | None = None
    embedder: Any = None  # a TextEmbedder; None loads MiniLM (or falls back to word overlap)
    vectors: TextVectors | None = None  # share one across questions: its cache makes retrieval cheap
    max_tokens: int = 160
    max_frames: int = 4
    sample_fps: float = 8.0
    stream_only: bool = False
    reference: bool = False  # also measure a human-quality H.264 stream of the same frames
    # the source's media index (core.perception.index.MediaIndex): with ``at`` None, the window goes
    # where the indexed frames best match the question (a long file's end is rarely the moment asked about)
    index: Any = None
    # the timeline's tracks, when ``log`` is None: the job builds the log from them (stored tracks
    # of a long file read the project; the window's thread never walks them)
    tracks: Any = None


@dataclass(frozen=True)
class ChatPartial:
    text: str  # the answer so far
    token: str = ""
    stage: str = "answer"  # "encode" | "perceive" | "answer"


@dataclass
class ChatAnswer:
    question: str
    text: str
    citations: list[Citation]
    model: str
    kbps: float  # the machine stream the model was given
    frames_seen: list[float]  # stream times of the frames the model saw (as images or as their perception)
    stream_s: float = 0.0  # stream time the encoded window covered
    encode_s: float = 0.0
    transfer_s: float = 0.0
    inference_s: float = 0.0
    perceive_s: float = 0.0  # perception on the decoded frames (the text-only model's eyes)
    first_token_s: float = 0.0
    partial: bool = False  # stopped or failed mid-answer
    error: str | None = None
    at: float | None = None
    human_kbps: float | None = None
    frames_sent: int = 0
    bytes_sent: int = 0
    corrected: bool = False  # the model's count contradicted the code's and was replaced
    facts: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text_question: bool = False
    frames: list[EncodedFrame] = field(default_factory=list, repr=False)
    evidence: list[CitedBox] = field(default_factory=list)  # the boxes of the objects it names, at the times it cites


class _Cancel:
    def __init__(self, state: JobState) -> None:
        self.state = state

    def is_set(self) -> bool:
        return self.state.is_cancelled()


def answer(req: ChatRequest, state: JobState) -> ChatAnswer:
    """The job. Never raises for the failures an analyst can meet; see the module docstring."""
    name = str(getattr(req.backend, "name", "model"))
    ans = ChatAnswer(req.question, "", [], name, 0.0, [], at=req.at)
    try:
        _answer(req, state, ans)
    except Exception as e:  # a bug or an unforeseen library error: say it, keep the app running
        log.exception("chat failed")
        ans.error = ans.error or f"The answer failed: {type(e).__name__}: {e}"
        ans.partial = True
    if ans.error and not ans.text:
        ans.text = ""
    return ans


def _answer(req: ChatRequest, state: JobState, ans: ChatAnswer) -> None:
    if req.log is None and req.tracks is not None:
        from dataclasses import replace
        req = replace(req, log=PerceptionLog.from_tracks(req.tracks), tracks=None)
    question = (req.question or "").strip()
    if not question:
        ans.error = "Ask a question first."
        return
    base_log = req.log if req.log is not None else PerceptionLog()  # an empty log is a finding: keep it
    _describe_source(req, base_log)
    if req.at is None and req.index is not None and not isinstance(req.frames, list):
        moment = index_moment(req.index, question, req.embedder, req.window_s)
        if moment is not None:
            req = replace(req, at=moment[0])
            ans.at = moment[0]
            ans.notes.append(f"The media index points to [{clock(moment[1])}] for this question (match "
                             f"{moment[2]:.2f}): the answer looks at the {req.window_s:g} s around it.")
    enc, index, frames = _encode_window(req, state, ans, question, base_log)
    if state.is_cancelled():
        ans.partial, ans.error = True, "Stopped before the model was asked."
        return
    g = _ground(req, state, ans, question, base_log, enc, index, frames)
    if g.final and g.direct:  # a fact computed in code is the answer: the model is not asked to reword it
        ans.text, ans.lines = g.direct, [ln.text for ln in g.lines]
        ans.notes.append("Answered from facts Kestrel computed (the model was not asked).")
        state.set_partial_result(ChatPartial(g.direct, g.direct))
        ans.citations = citations(g.direct)
        ans.evidence = _evidence(ans, g, base_log)
        state.set_progress(1.0, "done")
        return
    # the prompt, trimmed to the model's window
    images = _images(ans.frames) if getattr(req.backend, "sees_images", False) else []
    messages, g.lines = _fit(req, g, images)
    ans.lines = [ln.text for ln in g.lines]
    if state.is_cancelled():
        ans.partial, ans.error = True, "Stopped before the model was asked."
        return
    text = _ask(req, state, ans, messages, images)
    if not ans.error or text:
        fixed, ans.corrected = reconcile(text, g) if not ans.partial else (text, False)
        if ans.corrected:
            what = "count" if g.kind == "count" else "reading of the on-screen text"
            ans.notes.append(f"The model said {text!r}; Kestrel's {what}, computed from the log, replaced it.")
        text = fixed
    if not text and not ans.error:
        text = g.direct or "The model gave no answer."
    ans.text = text
    ans.citations = citations(text)
    ans.evidence = _evidence(ans, g, base_log)
    state.set_progress(1.0, "done")


def _evidence(ans: ChatAnswer, g: Grounding, base_log: PerceptionLog) -> list[CitedBox]:
    """The boxes behind the objects the answer names at the times it cites: the stored perception's,
    else the chat's own look at the frames given to the model."""
    try:
        return cited_boxes(ans.text, ans.citations, [(base_log, "perception"), (g.seen_log, "chat")], g.labels)
    except Exception:  # evidence on screen is an aid: a bug here must not cost the answer
        log.exception("could not gather the cited boxes")
        return []


def index_moment(index: Any, question: str, embedder: Any = None, window_s: float = 30.0,
                 min_p: float = 0.5) -> tuple[float, float, float] | None:
    """Where a question about a whole file should look, from its media index: (the window's end
    ``at``, the best-matching indexed time, its match probability), the window centred on that
    time; None when no indexed frame matches the question at ``min_p`` or better."""
    if index is None or not len(index):
        return None
    if embedder is None:
        from models.loaded import held

        embedder = held("minilm")
    best = max(index.candidates(embedder.embed([question])[0], k=1), key=lambda c: c[1], default=None)
    if best is None or best[1] < min_p:
        return None
    end = index.duration or float(index.times[-1])
    return min(end, best[0] + window_s / 2), best[0], best[1]


def _describe_source(req: ChatRequest, plog: PerceptionLog) -> None:
    """What the file is (audio or not, video or not, its length), for the facts about the file,
    when the log does not know yet."""
    if not req.source or plog.has_audio is not None:
        return
    from core.media.decode import probe
    try:
        plog.describe_media(probe(req.source, with_hash=False))
    except Exception as e:  # a file that no longer probes: those facts stay unknown
        log.info("no media facts for %s: %s", req.source, e)


def _encode_window(req: ChatRequest, state: JobState, ans: ChatAnswer, question: str,
                   base_log: PerceptionLog) -> tuple[MachineEncoder, TextVectors, list]:
    """The window's frames through the machine encoder (the question steering what stays sharp);
    ``ans`` gets the stream's numbers and the frames the model will be given. Returns the encoder,
    the text vectors and the window's frames as decoded from the source (colour is read there)."""
    t_enc = time.perf_counter()
    state.set_progress(0.05, "encoding the stream")
    frames, note = window_frames(req.frames, req.source, req.at, req.window_s, req.sample_fps)
    if note:
        ans.notes.append(note)
    at = req.at if req.at is not None else (frames[-1][0] if frames else (req.log.span[1] if req.log else 0.0))
    ans.at = at
    index = req.vectors or text_vectors(req.embedder)
    enc = req.encoder.make(RegionScorer(index))
    sent: list[EncodedFrame] = []
    for t, img in frames:
        ef = enc.push(t, img, seen_near(base_log, t, img.shape), question)
        if ef is not None:
            sent.append(ef)
    ans.kbps, ans.frames_sent, ans.bytes_sent = enc.kbps, enc.stats.frames_sent, enc.stats.bytes
    ans.stream_s = enc.stats.duration_s + enc.frame_interval
    ans.encode_s = time.perf_counter() - t_enc
    if req.reference and frames:
        ans.human_kbps = human_quality_kbps(list(frames), preset="veryfast")
    ans.frames = pick_frames(sent, at, req.max_frames)
    ans.frames_seen = [f.time for f in ans.frames]
    return enc, index, frames


def _ground(req: ChatRequest, state: JobState, ans: ChatAnswer, question: str, base_log: PerceptionLog,
            enc: MachineEncoder, index: TextVectors, frames: list | None = None) -> Grounding:
    """The model's eyes — perception on the decoded, low-bitrate frames — and the question
    grounded in the log with what they saw."""
    at = ans.at
    to_model = ans.frames
    t_p = time.perf_counter()
    state.set_progress(0.3, "looking at the frames")
    g_probe = ground(question, base_log, at=at, window_s=req.window_s, k=0)
    ans.text_question = g_probe.text_question
    eyes_log = PerceptionLog(step=max(0.5, enc.frame_interval), hold_s=req.encoder.max_interval)
    eye_lines: list[LogLine] = []
    # always, a VLM included: its frames' perception is grounding too, and a server that turns
    # out to refuse images still gets what the frames showed
    eyes = req.eyes or held_eyes()
    for i, f in enumerate(to_model):  # text is read in the latest two frames (OCR is the slow part)
        seen = eyes.look(f.decoded_image, read_text=g_probe.text_question and i >= len(to_model) - 2)
        add_seen(eyes_log, f, seen)
        eye_lines.append(frame_line(f, seen))
    ans.notes += eyes.notes
    ans.perceive_s = time.perf_counter() - t_p

    if req.stream_only:  # the self-test: only what survived the compression, plus the transcript
        for o in base_log.observations():
            if o.kind == "speech":
                eyes_log.add(o)
        for attr in ("has_audio", "has_video", "duration"):
            setattr(eyes_log, attr, getattr(base_log, attr))
        g = ground(question, eyes_log, at=at, window_s=req.window_s, index=index,
                   frames=[(f.time, f.decoded_image) for f in to_model])
    else:
        g = ground(question, base_log, at=at, window_s=req.window_s, index=index, extra_lines=eye_lines,
                   frames=frames or [], seen_log=eyes_log)
    if g.language != "en":
        ans.notes.append("The question is not in English: Kestrel's retrieval (MiniLM) and transcripts "
                         "(Whisper tiny.en) are English-only, so the answer may miss things."
                         + (" The model is English-only." if getattr(req.backend, "english_only", False) else ""))
    if g.text_question:
        ans.notes.append("This question needs reading text in the picture — the first thing to break at a low "
                         "bitrate; check the answer against the frame.")
    ans.facts = [f.text for f in g.facts]
    g.seen_log = eyes_log
    return g


def _ask(req: ChatRequest, state: JobState, ans: ChatAnswer, messages: list[dict[str, Any]],
         images: list[Any]) -> str:
    """The backend's tokens, streamed as partial results; its timing, and a stop or a failure,
    go into ``ans``. Returns the answer's text, stripped."""
    from models.llm.base import LLMError

    state.set_progress(0.5, f"asking {ans.model}")
    text = ""
    t_inf = time.perf_counter()
    try:
        for piece in req.backend.stream(messages, images=images or None, stop_event=_Cancel(state),
                                        max_tokens=req.max_tokens, temperature=0.0):
            text += piece
            state.set_partial_result(ChatPartial(text, piece))
            if state.is_cancelled():
                break
    except LLMError as e:
        ans.error = str(e)
    except Exception as e:  # a backend bug must not take the chat down
        log.exception("chat backend failed")
        ans.error = f"{ans.model} failed: {type(e).__name__}: {e}"
    wall = time.perf_counter() - t_inf
    timing = getattr(req.backend, "last_timing", None)
    ans.transfer_s = float(getattr(timing, "transfer_s", 0.0) or 0.0)
    ans.inference_s = max(0.0, wall - ans.transfer_s)
    ans.first_token_s = float(getattr(timing, "first_token_s", 0.0) or 0.0)
    ans.notes += list(getattr(timing, "notes", []) or [])
    if state.is_cancelled():
        ans.partial = True
        ans.error = ans.error or "Stopped by the user: the answer is incomplete."
    elif ans.error:
        ans.partial = bool(text)
    return text.strip()


def _images(frames: list[EncodedFrame]) -> list[Any]:
    from models.llm.base import ChatImage

    return [ChatImage(f.time, f.image_bytes) for f in frames if f.image_bytes]


def _prompt(g: Grounding, lines: list[LogLine], images: list[Any]) -> list[dict[str, Any]]:
    parts = []
    if g.facts:
        parts.append("Facts computed from the perception log:\n" + "\n".join(f"- {f.text}" for f in g.facts))
    parts.append("Log lines (time, what perception found):\n" + ("\n".join(ln.text for ln in lines) or "(none)"))
    if images:
        parts.append("Frames attached, in order, at " + ", ".join(f"[{clock(i.time)}]" for i in images) + ".")
    when = f" (asked at [{clock(g.at)}])" if g.at is not None else ""
    lang = "" if g.language == "en" else " Answer in the language of the question."
    parts.append(f"Question{when}: {g.question}{lang}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def _fit(req: ChatRequest, g: Grounding, images: list[Any]) -> tuple[list[dict[str, Any]], list[LogLine]]:
    """The prompt with as many retrieved lines as fit the model's window (best-matching kept)."""
    from models.llm.base import messages_tokens

    n_ctx = int(getattr(req.backend, "n_ctx", 4096) or 4096)
    budget = n_ctx - req.max_tokens - 64 - 300 * len(images)
    count = getattr(req.backend, "count_tokens", None)
    lines = list(g.lines)
    while True:
        msgs = _prompt(g, lines, images)
        n = (sum(count(m["content"]) + 4 for m in msgs) if callable(count) else messages_tokens(msgs))
        if n <= budget or not lines:
            return msgs, lines
        # drop the line farthest from the asked time first
        at = g.at if g.at is not None else lines[-1].end
        lines.remove(max(lines, key=lambda ln: min(abs(ln.start - at), abs(ln.end - at))))

