"""Chat with a model over a video or a live feed (issue 6), Qt-free.

:mod:`.encoder` decides what the machine-oriented low-bitrate stream sends (regions, change,
rate) and :mod:`.codec` encodes it (and the human-quality yardstick it is measured against);
:mod:`.perception_log` is the log of what was seen and heard; :mod:`.grounding` retrieval,
facts computed in code and citations; :mod:`.evidence` the window's frames and the model's
eyes; :mod:`.session` the answering job; :mod:`.history` the stored conversation;
:mod:`.live` the processors that watch a live feed; :mod:`.selftest` accuracy against kbps;
:mod:`.cli` the headless command.

This module holds the small vocabulary they share — what a question is about, whether it
needs reading text, which language it is in, how perceived things match it (cached MiniLM
vectors), and the ``[mm:ss]`` times answers cite — and imports nothing heavy (MiniLM is
loaded on first use).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from core.timefmt import clock

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# "say" alone is speech ("what did he say?"): a question reads text when it names something written
TEXT_Q = re.compile(r"\b(read|reads|written|writing|sign|signs|signboard|text|plate|label|title|caption|banner|"
                    r"letters|subtitle|subtitles|poster|screen says|name on)\b", re.I)
SYNONYMS = {"people": "person", "persons": "person", "man": "person", "men": "person", "woman": "person",
            "women": "person", "child": "person", "children": "person", "kid": "person", "kids": "person",
            "someone": "person", "anyone": "person", "anybody": "person", "somebody": "person",
            "pedestrian": "person", "pedestrians": "person", "van": "truck", "vans": "truck",
            "lorry": "truck", "bike": "bicycle", "bikes": "bicycle", "motorbike": "motorcycle",
            "cars": "car", "vehicle": "car", "vehicles": "car", "faces": "face"}


def norm_text(s: str) -> str:
    """Read text reduced to lower-case letters and digits: what counts as the same sign."""
    return re.sub(r"\W+", "", s.lower())


def is_text_question(question: str) -> bool:
    """Does answering need reading text in the picture? (The first thing to break at low bitrate.)"""
    return bool(TEXT_Q.search(question or ""))


def question_words(question: str) -> set[str]:
    """Content words of a question with plurals and synonyms folded onto detector labels."""
    out = set()
    for w in re.findall(r"[a-z]+", (question or "").lower()):
        out.add(w)
        out.add(SYNONYMS.get(w, w))
        if len(w) > 3 and w.endswith("es") and w[:-2] not in ("bus",):
            out.add(w[:-2])
        if len(w) > 3 and w.endswith("s"):
            out.add(w[:-1])
        if w == "buses":
            out.add("bus")
    return out


class TextVectors:
    """MiniLM vectors of short texts, cached by text: labels, OCR lines and log lines come back
    again and again in a live chat, and embedding is the expensive part on two cores.

    ``embedder``: a TextEmbedder (``embed(texts) -> unit vectors``); None loads the catalogue's
    MiniLM on first use, and if that fails everything falls back to word overlap (logged once).
    """

    def __init__(self, embedder: Any = None, *, load: bool = True, max_items: int = 20000) -> None:
        self._emb = embedder
        self._load = load and embedder is None
        self._cache: dict[str, np.ndarray] = {}
        self.max_items = max_items

    @property
    def embedder(self) -> Any:
        if self._emb is None and self._load:
            self._load = False
            try:
                from models.loaded import held
                self._emb = held("minilm")
            except Exception as e:  # ModelError or a broken install: keep going on word overlap
                log.warning("no sentence embeddings (%s); matching questions by shared words only", e)
        return self._emb

    def vectors(self, texts: Sequence[str]) -> np.ndarray | None:
        emb = self.embedder
        if emb is None or not texts:
            return None
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            if len(self._cache) + len(todo) > self.max_items:
                self._cache.clear()
            for t, v in zip(todo, emb.embed(todo)):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts])


def text_vectors(embedder: Any = None) -> TextVectors:
    """Vectors over ``embedder``; without one, this thread's over the catalogue's MiniLM, kept by
    :func:`models.loaded.keep` (loaded once, its cache kept from question to question)."""
    if embedder is not None:
        return TextVectors(embedder)
    from models.loaded import keep
    return keep("chat.text-vectors", TextVectors)


# -- language ---------------------------------------------------------------------------------

_FOREIGN = {
    "es": {"qué", "que", "cuántos", "cuántas", "hay", "dónde", "cuándo", "el", "la", "los", "las", "un", "una",
           "está", "personas", "alguien"},
    "fr": {"quel", "quelle", "combien", "est-ce", "y", "a-t-il", "il", "les", "des", "une", "où", "quand", "qui"},
    "de": {"was", "wie", "viele", "gibt", "es", "der", "die", "das", "ist", "wann", "wo", "ein", "eine", "sind"},
    "it": {"cosa", "quanti", "quante", "c'è", "ci", "sono", "dove", "quando", "il", "gli", "della"},
    "pt": {"quantos", "quantas", "há", "onde", "quando", "o", "os", "uma", "está", "tem"},
}
_EN = {"the", "is", "are", "there", "what", "how", "many", "when", "where", "who", "a", "an", "did", "does", "of"}


def language_of(text: str) -> str:
    """"en", or the ISO code of a common other language (a cheap guess, for the chat's warning)."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(1 for c in letters if ord(c) > 0x24F) / len(letters) > 0.3:
        return "other"  # a non-Latin script
    if "¿" in text or "¡" in text:
        return "es"
    words = re.findall(r"[\w'-]+", text.lower())
    en = sum(w in _EN for w in words)
    best, hits = "en", en
    for lang, vocab in _FOREIGN.items():
        n = sum(w in vocab for w in words)
        if n > hits and (n >= 2 or en == 0):
            best, hits = lang, n
    return best


# -- what perception saw, matched to the question ------------------------------------------

@dataclass(frozen=True)
class Seen:
    """One thing perception found in a frame, in the pixels of the frame given to ``push``."""

    kind: str  # "object" | "face" | "text"
    label: str  # class name, "face", or the text read
    box: Box
    score: float = 1.0


def seen_from(detections: Sequence[Any] = (), faces: Sequence[Any] = (), texts: Sequence[Any] = ()) -> list[Seen]:
    """Kestrel's perception results (models.types Detection/Face/TextRegion) as ``Seen``."""
    out = [Seen("object", d.label, tuple(map(float, d.box)), float(d.score)) for d in detections]
    out += [Seen("face", "face", tuple(map(float, f.box)), float(f.score)) for f in faces]
    out += [Seen("text", t.text, tuple(map(float, t.box)), float(t.score)) for t in texts]
    return out


class RegionScorer:
    """How well each perceived thing matches the question: MiniLM cosine and word overlap."""

    def __init__(self, vectors: TextVectors | None = None) -> None:
        self.vectors = vectors or TextVectors()

    def score(self, question: str, seen: Sequence[Seen]) -> list[float]:
        if not question or not seen:
            return [0.0] * len(seen)
        words = question_words(question)
        texts = [_describe(s) for s in seen]
        vecs = self.vectors.vectors([question] + texts)
        sims = [0.0] * len(seen) if vecs is None else [float(vecs[0] @ v) for v in vecs[1:]]
        text_q = is_text_question(question)
        out = []
        for s, sim in zip(seen, sims):
            label_words = set(re.findall(r"[a-z]+", s.label.lower()))
            if s.kind == "face":
                label_words |= {"face", "person"}
            if label_words & words:
                sim = max(sim, 0.7)
            if text_q and s.kind == "text":
                sim = max(sim, 0.65)
            out.append(sim)
        return out


def _describe(s: Seen) -> str:
    if s.kind == "text":
        return f'a sign with the text "{s.label}"'
    if s.kind == "face":
        return "a person's face"
    return f"a {s.label}"


# -- times: how the model is asked to cite them (core.timefmt.clock), and how they are found in its answer

def fmt_span(a: float, b: float) -> str:
    """``[mm:ss]`` or ``[mm:ss–mm:ss]`` (:func:`core.timefmt.clock`): a span as the model is asked to cite it."""
    return f"[{clock(a)}]" if round(b) <= round(a) else f"[{clock(a)}–{clock(b)}]"


TIME_RE = re.compile(r"\[?\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b"
                     r"(?:\s*(?:–|-|—|to)\s*(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b)?\]?")
SECONDS_RE = re.compile(r"\b(?:at|from|after)\s+(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)\b", re.I)


@dataclass(frozen=True)
class Citation:
    start: int  # character span in the answer
    end: int
    text: str
    seconds: float
    end_seconds: float | None = None


def citations(text: str) -> list[Citation]:
    """Times in an answer ("[00:12]", "00:12–00:14", "1:02:03", "at 12 s") for clickable seeking."""
    out = []
    for m in TIME_RE.finditer(text):
        h, mi, s = m.group(1), m.group(2), m.group(3)
        sec = int(h or 0) * 3600 + int(mi) * 60 + int(s)
        end = None
        if m.group(6):
            end = int(m.group(4) or 0) * 3600 + int(m.group(5)) * 60 + int(m.group(6))
        out.append(Citation(m.start(), m.end(), m.group(0), float(sec), None if end is None else float(end)))
    for m in SECONDS_RE.finditer(text):
        out.append(Citation(m.start(1), m.end(), m.group(0)[m.start(1) - m.start():], float(m.group(1))))
    return sorted(out, key=lambda c: c.start)


STOP = {"the", "a", "an", "is", "are", "was", "were", "there", "what", "who", "when", "how", "many", "much",
        "did", "does", "do", "of", "in", "on", "at", "to", "for", "it", "this", "that", "any", "be", "long",
        "and", "or", "you", "i", "he", "she", "they", "we", "with", "from", "by", "has", "have", "had"}


def plural(label: str, n: int) -> str:
    if n == 1:
        return label
    return {"person": "people", "bus": "buses", "face": "faces"}.get(label, label + "s")


def make_backend(request: tuple[str, str, str], state: Any = None, **server: Any):
    """Job: load the chosen model (seconds for the local GGUF; a server is only configured).

    ``request``: (kind, url, model) — "local" for the embedded ``model`` (a catalogue name,
    models.llm.local.local_chat_models(); "" for the default), "server" for ``model`` on the
    OpenAI-compatible server at ``url``; ``server``: more options for the server's client
    (``key_env``, ``read_timeout``: the command line's flags). The one place a backend is chosen."""
    kind, url, model = request
    if kind == "server":
        from models.llm.openai_compat import OpenAICompatLLM
        return OpenAICompatLLM(url, model, **server)
    from models.catalogue import load_model
    from models.llm.local import chat_spec
    return load_model(chat_spec(model))  # a local chat model of the catalogue; "" is the default
