"""The chat job: a question about a moment of a video or a live feed → a grounded, streamed answer.

``answer(request, state)`` is a plain job (core.jobs): it takes the frames of the window
before the asked time, encodes them as the machine-oriented stream (the question steers
what stays sharp), lets perception look at the *decoded* frames — the embedded text-only
model's eyes — grounds the question in the perception log (retrieval, facts computed in
code), streams the backend's tokens as partial results, and returns a :class:`ChatAnswer`
with the citations, the bitrate the model was given, the frames it saw and where the time
went. Nothing here raises to the caller for a bad server, a missing model, a stop or a
dropped camera: the answer carries the message and is marked partial.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from core.chat import text_vectors
from core.chat.encoder import (EncodedFrame, MachineEncoder, RegionScorer, Seen, TextVectors, human_quality_kbps,
                               seen_from)
from core.chat.grounding import (Citation, Grounding, LogLine, PerceptionLog, citations,
                                 ground, position, reconcile)
from core.jobs import JobState
from core.timefmt import clock

log = logging.getLogger(__name__)

Frames = Sequence[tuple[float, np.ndarray]]
SYSTEM = ("You answer an analyst's questions about a video in one or two short sentences, using only the log "
          "lines given (what was seen and heard, with times). Facts given as computed are exact: repeat their "
          "numbers and never count by yourself. Cite the times you rely on as [mm:ss]. If the log does not say, "
          "answer that it is not in the log.")


@dataclass(frozen=True)
class EncoderSettings:
    """One rung of the bitrate ladder (see :class:`MachineEncoder` for what each knob does)."""

    max_side: int = 640
    context_side: int = 384
    crf: int = 36
    change_threshold: float = 0.3
    codec: str = "h264"
    background: str = "flat"
    min_interval: float = 0.5
    max_interval: float = 10.0
    uncompressed: bool = False  # the baseline: the same frames, original pixels

    def make(self, scorer: RegionScorer | None = None) -> MachineEncoder:
        return MachineEncoder(scorer=scorer, **asdict(self))


class Eyes:
    """Perception on the frames the model receives (decoded from the low-bitrate stream).

    The detector (SSD) is loaded on first use; OCR only when a question needs reading text
    (both held by :mod:`models.loaded`). Either may be given (tests pass their own), and either failing to load is a note, not an
    error: the answer then rests on the log alone.
    """

    def __init__(self, detector: Any = None, reader: Any = None) -> None:
        self.detector, self.reader = detector, reader
        self.notes: list[str] = []
        self._tried: set[str] = set()

    def _load(self, what: str) -> Any:
        if what in self._tried:
            return getattr(self, what)
        self._tried.add(what)
        if getattr(self, what) is None:
            from models.catalogue import ModelError
            from models.loaded import held
            try:
                setattr(self, what, held("ssd-mobilenet-v2-coco" if what == "detector" else "rapidocr"))
            except ModelError as e:
                self.notes.append(f"no {'detection' if what == 'detector' else 'text reading'} on the frames: {e}")
        return getattr(self, what)

    def look(self, image: np.ndarray, *, read_text: bool = False) -> list[Seen]:
        """What perception sees in one frame. Text is read in the whole frame: crops cut tightly
        around a region read worse than the frame, whose backdrop is flat anyway."""
        out: list[Seen] = []
        det = self._load("detector")
        if det is not None:
            out += seen_from(det.detect([image])[0])
        if read_text and (ocr := self._load("reader")) is not None:
            out += seen_from(texts=ocr.read(image))
        return out


def held_eyes() -> Eyes:
    """This thread's eyes over the catalogue's detector and OCR, kept by :func:`models.loaded.keep`."""
    from models.loaded import keep
    return keep("chat.eyes", Eyes)


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
    from models.llm.base import LLMError

    question = (req.question or "").strip()
    if not question:
        ans.error = "Ask a question first."
        return
    t_enc = time.perf_counter()
    state.set_progress(0.05, "encoding the stream")
    frames, note = _window_frames(req)
    if note:
        ans.notes.append(note)
    at = req.at if req.at is not None else (frames[-1][0] if frames else (req.log.span[1] if req.log else 0.0))
    ans.at = at
    index = req.vectors or text_vectors(req.embedder)
    enc = req.encoder.make(RegionScorer(index))
    base_log = req.log or PerceptionLog()
    sent: list[EncodedFrame] = []
    for t, img in frames:
        ef = enc.push(t, img, _seen_near(base_log, t, img.shape), question)
        if ef is not None:
            sent.append(ef)
    ans.kbps, ans.frames_sent, ans.bytes_sent = enc.kbps, enc.stats.frames_sent, enc.stats.bytes
    ans.stream_s = enc.stats.duration_s + enc.frame_interval
    ans.encode_s = time.perf_counter() - t_enc
    if req.reference and frames:
        ans.human_kbps = human_quality_kbps(list(frames), preset="veryfast")
    to_model = _pick(sent, at, req.max_frames)
    ans.frames = to_model
    ans.frames_seen = [f.time for f in to_model]
    if state.is_cancelled():
        ans.partial, ans.error = True, "Stopped before the model was asked."
        return

    # the model's eyes: perception on the decoded, low-bitrate frames
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
        _add_seen(eyes_log, f, seen)
        eye_lines.append(_frame_line(f, seen))
    ans.notes += eyes.notes
    ans.perceive_s = time.perf_counter() - t_p

    if req.stream_only:  # the self-test: only what survived the compression, plus the transcript
        for o in base_log.observations():
            if o.kind == "speech":
                eyes_log.add(o)
        g = ground(question, eyes_log, at=at, window_s=req.window_s, index=index)
    else:
        g = ground(question, base_log, at=at, window_s=req.window_s, index=index, extra_lines=eye_lines)
    if g.language != "en":
        ans.notes.append("The question is not in English: Kestrel's retrieval (MiniLM) and transcripts "
                         "(Whisper tiny.en) are English-only, so the answer may miss things."
                         + (" The model is English-only." if getattr(req.backend, "english_only", False) else ""))
    if g.text_question:
        ans.notes.append("This question needs reading text in the picture — the first thing to break at a low "
                         "bitrate; check the answer against the frame.")
    ans.facts = [f.text for f in g.facts]

    # the prompt, trimmed to the model's window
    images = _images(to_model) if getattr(req.backend, "sees_images", False) else []
    messages, g.lines = _fit(req, g, images)
    ans.lines = [ln.text for ln in g.lines]
    if state.is_cancelled():
        ans.partial, ans.error = True, "Stopped before the model was asked."
        return

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
    text = text.strip()
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
    state.set_progress(1.0, "done")


def _window_frames(req: ChatRequest) -> tuple[list[tuple[float, np.ndarray]], str]:
    frames, note = _raw_window(req)
    out: list[tuple[float, np.ndarray]] = []
    for f in frames:  # a live buffer holds every frame: the encoder needs no more than sample_fps
        if not out or f[0] - out[-1][0] >= 0.999 / req.sample_fps:
            out.append(f)
    return out, note


def _raw_window(req: ChatRequest) -> tuple[list[tuple[float, np.ndarray]], str]:
    at = req.at
    span = getattr(getattr(req.frames, "__self__", None), "span", None)  # a RingBuffer's bound method
    if at is None and span and span[1] > 0:  # "now" on a live feed: decode only the last window
        at = float(span[1])
    if at is None and req.source and req.frames is None:  # a file's "now" is its end
        from core.media.decode import probe
        try:
            at = probe(req.source, with_hash=False).duration_s
        except Exception as e:
            return [], f"No video for this answer ({e}); answering from the perception log only."
    t1 = at if at is not None else float("inf")
    t0 = (at - req.window_s) if at is not None else -float("inf")
    try:
        if callable(req.frames):
            frames = list(req.frames(t0 if at is not None else 0.0, t1))
            if at is None and frames:  # "now": the latest window
                last = frames[-1][0]
                frames = [f for f in frames if f[0] >= last - req.window_s]
        elif req.frames is not None:
            frames = [f for f in req.frames if t0 <= f[0] <= t1]
        elif req.source:
            frames = file_frames(req.source, max(0.0, at - req.window_s), at, req.sample_fps)
        else:
            frames = []
    except Exception as e:  # LiveError, MediaError, a dropped camera: answer from the log
        return [], f"No video for this answer ({e}); answering from the perception log only."
    if not frames:
        return [], "No video frames in this window (camera disconnected?); answering from the log only."
    return frames, ""


def file_frames(path: str, start: float, end: float | None, fps: float,
                max_size: tuple[int, int] = (1280, 720)) -> list[tuple[float, np.ndarray]]:
    """Frames of a file from ``start`` to ``end`` at ``fps`` (decoded forward, never per-frame seeks)."""
    from core.media.decode import MediaError, VideoDecoder, probe

    info = probe(path, with_hash=False)
    end = info.duration_s if end is None else min(end, info.duration_s)
    out = []
    with VideoDecoder(path, max_size=max_size) as dec:
        for t in np.arange(max(0.0, start), max(start, end) + 1e-6, 1.0 / fps):
            try:
                f = dec.frame_at(float(t))
            except MediaError:
                continue
            if not out or f.time > out[-1][0]:
                out.append((float(f.time), f.image))
    return out


def perceive_file(path: str, *, start: float = 0.0, end: float | None = None, fps: float = 2.0,
                  models: Sequence[str] = ("ssd-mobilenet-v2-coco", "whisper-tiny"),
                  state: JobState | None = None) -> tuple[PerceptionLog, list[str]]:
    """Run the perception job over [start, end] of a file (for a file with no stored tracks)
    and return its log, with the errors of models that failed (the others still count)."""
    from core.perception.analysis import AnalysisRequest, analyze, tracks_for
    from core.jobs import HeadlessState

    res = analyze(AnalysisRequest(path=path, models=tuple(models), fps=fps, start=start, end=end),
                  state or HeadlessState())
    tracks = [tr for out in res.outputs.values() if not out.error for tr in tracks_for(out, 1.0 / fps)]
    return PerceptionLog.from_tracks(tracks), [f"{k}: {v}" for k, v in res.errors.items()]


def _seen_near(log: PerceptionLog, t: float, shape: tuple[int, ...]) -> list[Seen]:
    """The log's boxes at the sample nearest ``t``, scaled to this frame's size (for region scoring)."""
    obs = [o for o in log.observations(t - 1.5 * log.step, t + 1.5 * log.step) if o.box is not None and o.end is None]
    if not obs:
        return []
    tn = min({o.time for o in obs}, key=lambda x: abs(x - t))
    h, w = shape[:2]
    out = []
    for o in obs:
        if abs(o.time - tn) > 1e-3:
            continue
        sx, sy = (w / o.size[0], h / o.size[1]) if o.size and o.size[0] and o.size[1] else (1.0, 1.0)
        b = o.box
        out.append(Seen("object" if o.kind == "object" else o.kind, o.label,
                        (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy), o.score))
    return out


def _pick(sent: list[EncodedFrame], at: float, n: int) -> list[EncodedFrame]:
    """The ``n`` sent frames the model gets: the latest at or before ``at``, then spread back in time."""
    before = [f for f in sent if f.time <= at + 1e-6] or sent
    if len(before) <= n:
        return before
    idx = np.unique(np.round(np.linspace(0, len(before) - 1, n)).astype(int))
    return [before[i] for i in idx]


def _add_seen(log: PerceptionLog, f: EncodedFrame, seen: list[Seen]) -> None:
    from models.types import Detection, Face, TextRegion

    log.add_frame(f.time, detections=[Detection(s.box, s.label, s.score) for s in seen if s.kind == "object"],
                  faces=[Face(s.box, s.score) for s in seen if s.kind == "face"],
                  texts=[TextRegion(s.box, s.label, s.score) for s in seen if s.kind == "text"],
                  size=f.size)


def _frame_line(f: EncodedFrame, seen: list[Seen]) -> LogLine:
    objs: dict[str, list[str]] = {}
    for s in seen:
        if s.kind != "text":
            objs.setdefault(s.label, []).append(position(s.box, f.size))
    parts = [f"{lb} ×{len(p)}" if len(p) > 1 else f"{lb} ({p[0]})" for lb, p in objs.items()]
    texts = [f'"{s.label}"' for s in seen if s.kind == "text"]
    what = ", ".join(parts) or "nothing perception recognises"
    if texts:
        what += "; text " + ", ".join(texts)
    body = f"[{clock(f.time)}] frame given to the model ({f.size[0]}×{f.size[1]}) shows: {what}"
    return LogLine(f.time, f.time, "frame", "frame", body)


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


# -- history in the project ------------------------------------------------------------------

CHAT_TRACK = ("chat", "chat")


def save_chat(project: Any, media_id: int, ans: ChatAnswer) -> int:
    """Store one question and answer as a marker on the media's "chat" track (run the call on
    the database worker). The provenance — model, bitrate, frames — rides in the item's data
    and in a recorded run; no API key or server secret is ever part of it."""
    at = float(ans.at or 0.0)
    with project.batch():  # the run and its marker commit together
        run_id = project.record_run(kind="chat", producer=ans.model, version="1",
                                    params={"question": ans.question, "kbps": round(ans.kbps, 2),
                                            "frames": [round(t, 3) for t in ans.frames_seen]},
                                    media_id=media_id, started_at=time.time(),
                                    duration_s=ans.encode_s + ans.transfer_s + ans.inference_s + ans.perceive_s,
                                    status="failed" if ans.error and not ans.text else "ok", error=ans.error)
        item = {"start_s": at, "end_s": at, "label": ans.question[:500], "confidence": None, "run_id": run_id,
                "data": {"answer": ans.text, "model": ans.model, "kbps": round(ans.kbps, 2),
                         "human_kbps": None if ans.human_kbps is None else round(ans.human_kbps, 2),
                         "frames": [round(t, 3) for t in ans.frames_seen], "partial": ans.partial,
                         "error": ans.error, "citations": [[c.text, c.seconds] for c in ans.citations],
                         "latency": {"encode_s": round(ans.encode_s, 3), "transfer_s": round(ans.transfer_s, 3),
                                     "inference_s": round(ans.inference_s, 3), "perceive_s": round(ans.perceive_s, 3)}}}
        for tr in project.load_tracks(media_id):
            if (tr.kind, tr.name) == CHAT_TRACK:
                project.append_items(tr.id, [item])
                return tr.id
        return project.save_track(media_id, CHAT_TRACK[0], CHAT_TRACK[1], [item], meta={"kind": "chat history"})


def load_chat(project: Any, media_id: int) -> list[dict[str, Any]]:
    """The stored chat of a media file, oldest first: {"at", "question", **data}."""
    out = []
    for tr in project.load_tracks(media_id):
        if (tr.kind, tr.name) == CHAT_TRACK:
            out += [{"at": i.start_s, "question": i.label, **dict(i.data)} for i in tr.items]
    return sorted(out, key=lambda d: d["at"])
