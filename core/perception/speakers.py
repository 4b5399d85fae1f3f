"""Who speaks when: speaker diarization from voice fingerprints, and its error rate.

How to use::

    from core.media.audio import load_mono
    from models.loaded import held
    from core.perception.speakers import diarize

    audio = load_mono(path)                                  # 16 kHz mono float32
    speech = held("silero-vad").segments(audio)              # where someone speaks
    d = diarize(audio, speech)                               # Resemblyzer, loaded through held()
    d.n_speakers                                             # 2
    d.turns                                                  # [Turn(0.52, 3.10, 0, 0.81), ...]
    d.describe()                                             # "2 speakers: speaker 1 0.5-3.1 s, ..."

``Turn.speaker`` is ``None`` ("unknown") where the evidence is too weak to name a voice: speech
shorter than ``min_embed_s``, or a stretch whose fingerprint is not close enough to any speaker's
(``min_similarity``), or too close to two of them (``min_margin``). Such turns count as speech
but never as a speaker. ``n_speakers`` counts voices with at least ``min_speaker_s`` (2 s) of
speech and one turn of at least ``min_longest_turn_s`` (2 s); a cluster short of that (often windows
that straddle a change of speaker) is dropped and its speech given to the voices that remain.

How it works: windows of ``window_s`` (1.5 s, hop 0.75 s) inside each speech segment (a shorter
segment is one window of its own length) are embedded by the speaker encoder (``resemblyzer-voices``,
256-d, cosine similarity); the windows are clustered by average-linkage agglomeration on cosine
distance, cut at ``threshold`` (0.3; ``bench/diarization.py --tune``: on generated espeak-ng
dialogues 0.26-0.28 scores best and 0.30 costs ~5 points of DER, but the real two-person call there
is told apart only at 0.30-0.32 — espeak's voices, one synthesiser, are closer to each other than
people are — and 0.34 already merges its two speakers: the cut is the weak point);
clusters with less than ``min_speaker_s`` of speech are not speakers (their windows go to the
nearest speaker when similar enough). Every 10 ms of speech is then given to the speaker whose
centroid the windows covering it resemble most, turns shorter than ``min_turn_s`` are merged into
their neighbour within the same speech segment, and each turn's confidence is its mean similarity
to its speaker's centroid.

``der(reference, hypothesis, collar=0.25)`` is the diarization error rate (missed speech + false
alarm + speaker confusion, over the reference's speech time) under the best one-to-one mapping of
hypothesis speakers to reference speakers, ignoring ``collar`` seconds each side of every
reference boundary (the NIST convention). Turns are ``(start, end, speaker)``; a hypothesis
speaker ``None`` is speech attributed to nobody, so it counts as confusion.

The analysis job runs it as its "speaker-embed" step (core.perception.listen: a "speakers" track,
turns "Speaker 1", "Speaker 2"…), and chat answers from those turns (core.chat.hearing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from core.media.audio import mono_float
from models.errors import KestrelError

SR = 16000
STEP = 0.01  # the timeline resolution of the assignment and of der(), in seconds
MODEL = "resemblyzer-voices"


class DiarizationError(KestrelError):
    """The audio given cannot be diarized (wrong shape or rate); str() says what to pass."""


@dataclass(frozen=True)
class Turn:
    start: float  # seconds from the start of the audio given
    end: float
    speaker: int | None  # 0, 1, ... in order of first speech; None: unknown
    confidence: float  # mean cosine similarity to the speaker's centroid (0..1); 0 when unknown


@dataclass(frozen=True)
class Diarization:
    turns: list[Turn]
    n_speakers: int
    speech_s: float  # seconds of speech diarized
    settings: dict[str, float] = field(default_factory=dict)

    def speaker_time(self) -> dict[int, float]:
        """Seconds of speech per speaker (unknown left out)."""
        out: dict[int, float] = {}
        for t in self.turns:
            if t.speaker is not None:
                out[t.speaker] = out.get(t.speaker, 0.0) + t.end - t.start
        return out

    def unknown_s(self) -> float:
        return sum(t.end - t.start for t in self.turns if t.speaker is None)

    def describe(self) -> str:
        if not self.turns:
            return "No speech to tell speakers apart."
        who = ", ".join(f"speaker {t.speaker + 1 if t.speaker is not None else '?'} "
                        f"{t.start:.1f}-{t.end:.1f} s" for t in self.turns)
        n = self.n_speakers
        head = f"{n} speaker{'s' if n != 1 else ''}" if n else "No speaker could be told apart"
        return f"{head}: {who}"


def _segments(speech: Iterable[Any], n_samples: int) -> list[tuple[float, float]]:
    """(start, end) seconds from SpeechSegments or pairs, clipped to the audio, sorted, merged."""
    out = []
    for s in speech:
        a, b = (s.start, s.end) if hasattr(s, "start") else (float(s[0]), float(s[1]))
        a, b = max(0.0, a), min(n_samples / SR, b)
        if b > a:
            out.append((a, b))
    out.sort()
    merged: list[list[float]] = []
    for a, b in out:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def windows_for(segments: Sequence[tuple[float, float]], window_s: float, hop_s: float,
                min_embed_s: float) -> list[tuple[int, float, float]]:
    """(segment index, start, end) of every window to embed: ``window_s`` every ``hop_s`` inside a
    segment, the last one flush with its end; a segment shorter than a window is one window of its
    own length; segments shorter than ``min_embed_s`` get none."""
    out = []
    for k, (a, b) in enumerate(segments):
        n = b - a
        if n < min_embed_s:
            continue
        if n <= window_s:
            out.append((k, a, b))
            continue
        starts = list(np.arange(a, b - window_s + 1e-9, hop_s))
        if b - (starts[-1] + window_s) > 1e-6:
            starts.append(b - window_s)
        out += [(k, float(s), float(s) + window_s) for s in starts]
    return out


def cluster(emb: np.ndarray, weights: np.ndarray, threshold: float, min_weight: float,
            min_similarity: float) -> np.ndarray:
    """Cluster label per row of ``emb`` (unit vectors): average-linkage on cosine distance cut at
    ``threshold``; clusters weighing less than ``min_weight`` in all are dissolved, their rows
    going to the nearest kept cluster when their similarity to it reaches ``min_similarity``
    (else -1). Kept clusters are numbered 0.. by their first row."""
    n = emb.shape[0]
    if n == 0:
        return np.zeros(0, int)
    if n == 1:
        labels = np.zeros(1, int)
    else:
        from scipy.cluster.hierarchy import fcluster, linkage

        dist = np.clip(1.0 - emb @ emb.T, 0.0, 2.0)
        iu = np.triu_indices(n, 1)
        z = linkage(dist[iu], method="average")
        labels = fcluster(z, t=threshold, criterion="distance") - 1
    kept = [c for c in np.unique(labels) if weights[labels == c].sum() >= min_weight]
    if not kept:  # no voice heard long enough; the heaviest cluster is the best evidence there is
        kept = [max(np.unique(labels), key=lambda c: weights[labels == c].sum())]
    cents = _centroids(emb, labels, kept)
    out = np.full(n, -1)
    for i in range(n):
        if labels[i] in kept:
            out[i] = kept.index(labels[i])
        else:
            sims = cents @ emb[i]
            j = int(np.argmax(sims))
            if sims[j] >= min_similarity:
                out[i] = j
    order = {c: r for r, c in enumerate(dict.fromkeys(int(c) for c in out if c >= 0))}
    return np.array([order.get(int(c), -1) for c in out])


def _centroids(emb: np.ndarray, labels: np.ndarray, which: Sequence[int]) -> np.ndarray:
    c = np.stack([emb[labels == k].mean(axis=0) for k in which])
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)


def diarize(samples_16k: np.ndarray, speech_segments: Iterable[Any], *, embedder: Any = None,
            window_s: float = 1.5, hop_s: float = 0.75, threshold: float = 0.3,
            min_speaker_s: float = 2.0, min_turn_s: float = 0.5, min_embed_s: float = 0.3,
            min_similarity: float = 0.6, min_margin: float = 0.0,
            min_longest_turn_s: float = 2.0) -> Diarization:
    """Speaker turns in ``samples_16k`` (mono float32, 16 kHz) over ``speech_segments`` (Silero's
    SpeechSegments or ``(start, end)`` pairs in seconds). ``embedder`` is a speaker-embed model
    (``embed(windows) -> [n, d]`` unit rows); by default ``held("resemblyzer-voices")``."""
    audio = mono_float(samples_16k, DiarizationError, "Diarization", SR)
    settings = dict(window_s=window_s, hop_s=hop_s, threshold=threshold, min_speaker_s=min_speaker_s,
                    min_turn_s=min_turn_s, min_embed_s=min_embed_s, min_similarity=min_similarity,
                    min_margin=min_margin, min_longest_turn_s=min_longest_turn_s)
    segs = _segments(speech_segments, audio.size)
    speech_s = sum(b - a for a, b in segs)
    wins = windows_for(segs, window_s, hop_s, min_embed_s)
    if not wins:
        return Diarization([Turn(a, b, None, 0.0) for a, b in segs], 0, speech_s, settings)
    if embedder is None:
        from models.loaded import held

        embedder = held(MODEL)
    emb = np.asarray(embedder.embed([audio[int(round(a * SR)):int(round(b * SR))].astype(np.float32)
                                     for _, a, b in wins]), np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    # a window's weight: the seconds it alone stands for (hop, or its length when shorter)
    weights = np.array([min(b - a, hop_s) for _, a, b in wins])
    labels = cluster(emb, weights, threshold, min_speaker_s, min_similarity)
    speakers = sorted(set(int(c) for c in labels if c >= 0))
    if not speakers:
        return Diarization([Turn(a, b, None, 0.0) for a, b in segs], 0, speech_s, settings)
    cents = _centroids(emb, labels, speakers)
    live = list(range(len(speakers)))
    while True:  # a voice must hold min_speaker_s and one turn of min_longest_turn_s, else re-assign
        sims = emb @ cents[live].T  # [windows, live speakers]
        turns: list[Turn] = []
        for k, (a, b) in enumerate(segs):
            turns += _segment_turns(k, a, b, wins, sims, min_turn_s, min_similarity, min_margin)
        turns = [Turn(t.start, t.end, live[t.speaker] if t.speaker is not None else None, t.confidence)
                 for t in turns]
        time_of = {s: sum(t.end - t.start for t in turns if t.speaker == s) for s in live}
        longest = {s: max([t.end - t.start for t in turns if t.speaker == s], default=0.0) for s in live}
        weak = [s for s in live if time_of[s] < min_speaker_s or longest[s] < min_longest_turn_s]
        if not weak or len(live) == 1:
            break
        live.remove(min(weak, key=lambda s: time_of[s]))
    rename = {s: r for r, s in enumerate(sorted((s for s in live if time_of[s] > 0),
                                                key=lambda s: min(t.start for t in turns if t.speaker == s)))}
    turns = [Turn(t.start, t.end, rename.get(t.speaker) if t.speaker is not None else None,
                  t.confidence if t.speaker in rename else 0.0) for t in turns]
    return Diarization(_join(turns), len(rename), speech_s, settings)


def _segment_turns(k: int, a: float, b: float, wins: list[tuple[int, float, float]], sims: np.ndarray,
                   min_turn_s: float, min_similarity: float, min_margin: float) -> list[Turn]:
    """Turns inside one speech segment: every 10 ms goes to the speaker the covering windows'
    similarities favour; short runs are merged into a neighbour; weak evidence is unknown."""
    idx = [i for i, w in enumerate(wins) if w[0] == k]
    if not idx:
        return [Turn(a, b, None, 0.0)]
    n = max(1, int(round((b - a) / STEP)))
    t = a + (np.arange(n) + 0.5) * STEP
    acc = np.zeros((n, sims.shape[1]))
    cnt = np.zeros(n)
    for i in idx:
        _, wa, wb = wins[i]
        m = (t >= wa) & (t < wb)
        acc[m] += sims[i]
        cnt[m] += 1
    if (cnt == 0).any():  # frames no window covers (cannot happen with flush windows): nearest window
        centres = np.array([(wins[i][1] + wins[i][2]) / 2 for i in idx])
        for j in np.flatnonzero(cnt == 0):
            acc[j] = sims[idx[int(np.argmin(np.abs(centres - t[j])))]]
            cnt[j] = 1
    score = acc / cnt[:, None]
    lab = np.argmax(score, axis=1)
    runs = _runs(lab)
    min_frames = int(round(min_turn_s / STEP))
    while len(runs) > 1:  # merge the shortest run under min_turn_s into its longer neighbour
        j = min(range(len(runs)), key=lambda r: runs[r][1] - runs[r][0])
        s, e, _ = runs[j]
        if e - s >= min_frames:
            break
        left = runs[j - 1] if j > 0 else None
        right = runs[j + 1] if j + 1 < len(runs) else None
        nb = max((x for x in (left, right) if x), key=lambda x: x[1] - x[0])
        lab[s:e] = nb[2]
        runs = _runs(lab)
    out = []
    for s, e, spk in runs:
        sc = score[s:e]
        best = float(sc[:, spk].mean())
        second = float(np.sort(sc, axis=1)[:, -2].mean()) if sc.shape[1] > 1 else 0.0
        start, end = a + s * STEP, min(b, a + e * STEP)
        if best < min_similarity or (sc.shape[1] > 1 and best - second < min_margin):
            out.append(Turn(start, end, None, 0.0))
        else:
            out.append(Turn(start, end, int(spk), round(best, 3)))
    return out


def _runs(lab: np.ndarray) -> list[tuple[int, int, int]]:
    cut = np.flatnonzero(np.diff(lab)) + 1
    bounds = [0, *cut.tolist(), lab.size]
    return [(bounds[i], bounds[i + 1], int(lab[bounds[i]])) for i in range(len(bounds) - 1)]


def _join(turns: list[Turn], gap: float = 1e-6) -> list[Turn]:
    """Adjacent turns of one speaker (touching) become one; confidences weighted by length."""
    out: list[Turn] = []
    for t in sorted(turns, key=lambda t: t.start):
        p = out[-1] if out else None
        if p and p.speaker == t.speaker and t.start - p.end <= gap:
            la, lb = p.end - p.start, t.end - t.start
            conf = (p.confidence * la + t.confidence * lb) / max(la + lb, 1e-9)
            out[-1] = Turn(p.start, t.end, p.speaker, round(conf, 3))
        else:
            out.append(t)
    return out


# --- the diarization error rate ------------------------------------------------------------

def _grid(turns: Iterable[tuple[float, float, Hashable]], n: int) -> tuple[list[Hashable], np.ndarray]:
    """Speakers and a [speakers, n] boolean activity grid at STEP resolution."""
    turns = list(turns)
    names = list(dict.fromkeys(s for _, _, s in turns))
    g = np.zeros((len(names), n), bool)
    for a, b, s in turns:
        g[names.index(s), max(0, int(round(a / STEP))):max(0, int(round(b / STEP)))] = True
    return names, g


def der(reference: Iterable[Any], hypothesis: Iterable[Any], collar: float = 0.25) -> dict[str, float]:
    """Diarization error rate of ``hypothesis`` against ``reference``: turns as ``(start, end,
    speaker)`` or :class:`Turn`. Returns ``der``, ``missed``, ``false_alarm``, ``confusion`` (each a
    fraction of the scored reference speech) and ``scored_s``. Hypothesis speakers are mapped one to
    one onto reference speakers to minimise confusion (Hungarian); a hypothesis speaker ``None``
    maps to no one. No reference speech scored (all of it inside collars, or none): ``der`` is 0 if
    the hypothesis is silent there too, else 1."""
    ref = [(t.start, t.end, t.speaker) if isinstance(t, Turn) else tuple(t) for t in reference]
    hyp = [(t.start, t.end, t.speaker) if isinstance(t, Turn) else tuple(t) for t in hypothesis]
    for a, b, _ in ref + hyp:
        if not (np.isfinite(a) and np.isfinite(b)) or b < a:
            raise ValueError(f"a turn must have a finite start before its end, not {a}..{b}")
    end = max([b for _, b, _ in ref + hyp], default=0.0)
    n = int(np.ceil(end / STEP)) + 1
    rnames, rg = _grid(ref, n)
    hnames, hg = _grid(hyp, n)
    scored = np.ones(n, bool)
    c = int(round(collar / STEP))
    if c > 0:
        for a, b, _ in ref:
            for x in (int(round(a / STEP)), int(round(b / STEP))):
                scored[max(0, x - c):x + c] = False
    rg, hg = rg[:, scored], hg[:, scored]
    n_ref, n_hyp = rg.sum(0), hg.sum(0)
    total = float(n_ref.sum())
    known = [i for i, s in enumerate(hnames) if s is not None]
    correct = 0.0
    if known and rnames:
        from scipy.optimize import linear_sum_assignment

        overlap = rg.astype(np.int64) @ hg[known].T.astype(np.int64)  # [ref, hyp]
        r, h = linear_sum_assignment(-overlap)
        correct = float(overlap[r, h].sum())
    missed = float(np.maximum(n_ref - n_hyp, 0).sum())
    fa = float(np.maximum(n_hyp - n_ref, 0).sum())
    conf = float(np.minimum(n_ref, n_hyp).sum()) - correct
    if total == 0:
        return dict(der=0.0 if fa == 0 else 1.0, missed=0.0, false_alarm=0.0 if fa == 0 else 1.0,
                    confusion=0.0, scored_s=0.0)
    return dict(der=(missed + fa + conf) / total, missed=missed / total, false_alarm=fa / total,
                confusion=conf / total, scored_s=total * STEP)
