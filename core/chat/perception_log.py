"""The perception log: everything perception saw, each with its time, as short lines of text.

Objects with positions, faces, on-screen text, the transcript, audio and anomaly events and
tags come in as :class:`Observation` — from a project's stored tracks
(:meth:`PerceptionLog.from_tracks`) or, live, from the perception loop (``add_frame``,
``add_speech``, ``add_event``) — and go out as :class:`LogLine`: samples merged into
intervals, "[00:12–00:14] seen: person, up to 2 at once (left)". The log also answers the
questions code can answer exactly: where a label was present (:meth:`PerceptionLog.presence`)
and how many were seen in a frame (:meth:`PerceptionLog.count_at`). :mod:`core.chat.grounding`
turns these into what a question is given. It also keeps what the file is (audio, video, length),
which stretches the visual and audio models covered (``seen``, ``heard``: facts "over the file"
rest on them) and the voice activity (``voice``), which is no line of its own.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from core.chat import Box, fmt_span, norm_text

OBJECT_KINDS = ("object", "face")


def position(box: Box, size: tuple[int, int] | None) -> str:
    """Where a box sits in its frame, in words ("top left", "centre")."""
    if not size or not size[0] or not size[1]:
        return ""
    cx, cy = (box[0] + box[2]) / 2 / size[0], (box[1] + box[3]) / 2 / size[1]
    col = "left" if cx < 0.33 else "right" if cx > 0.67 else "centre"
    row = "top" if cy < 0.33 else "bottom" if cy > 0.67 else ""
    return f"{row} {col}".strip() if (row or col != "centre") else "centre"


@dataclass(frozen=True)
class Observation:
    """One thing perceived: an instant sample (``end`` None) or an interval."""

    time: float
    kind: str  # object | face | text | speech | audio | anomaly | tag | <other track kind>
    label: str
    end: float | None = None
    box: Box | None = None
    size: tuple[int, int] | None = None
    score: float = 1.0
    track: int | None = None
    count: int = 1  # for presence intervals that already carry a count
    confirmed: bool | None = None  # core.perception.confirm's verdict on a box, where it gave one


@dataclass(frozen=True)
class SpeakerTurn:
    """One turn of diarization (core.perception.listen): who speaks, 0-based; None: a voice not told apart."""

    start: float
    end: float
    speaker: int | None
    confidence: float = 0.0
    speaker_s: float | None = None  # all the speech of this voice, seconds


@dataclass(frozen=True)
class Sound:
    """A loud sound (core.perception.sounds): an impact by onset and level, or a sustained sound;
    ``named_by`` the model that named it ("" when none did: ``label`` is then generic)."""

    start: float
    end: float
    label: str
    score: float
    kind: str = "impact"
    over_floor_db: float = 0.0
    named_by: str = ""


@dataclass(frozen=True)
class LogLine:
    start: float
    end: float
    kind: str
    label: str
    text: str  # "[00:12–00:14] speech: "…""
    count: int = 1


class PerceptionLog:
    """The recent perception log: filled from project tracks (a recorded file) or, for a
    live stream, by the perception loop (``add_frame``, ``add_speech``, ``add_event``).

    ``horizon_s`` keeps only the recent minutes (live); ``step`` is the perception sample
    interval, used to merge samples into intervals and to decide "visible at t".
    """

    def __init__(self, horizon_s: float | None = None, step: float = 0.5, hold_s: float = 0.0) -> None:
        self.horizon_s = horizon_s
        self.step = float(step)
        self.hold_s = float(hold_s)  # a frame stands for the scene until the next one (sparse streams)
        self._obs: list[Observation] = []
        self._frames: set[float] = set()  # times perception looked at a frame
        self.voice: list[tuple[float, float, float]] = []  # voice activity (VAD): (start, end, score)
        # speaker turns (diarization) and loud sounds; None: that step did not run on this log
        self.turns: list[SpeakerTurn] | None = None
        self.sounds: list[Sound] | None = None
        self.sound_floor_db: float | None = None
        # what the file is and which part of it perception covered (None: not known, e.g. live);
        # facts "over the whole file" are said only when ``seen``/``heard`` cover it
        self.has_audio: bool | None = None
        self.has_video: bool | None = None
        self.duration: float | None = None
        self.seen: tuple[float, float] | None = None  # the stretch the visual models looked at
        self.heard: tuple[float, float] | None = None  # the stretch the audio models listened to

    def __len__(self) -> int:
        return len(self._obs)

    def add(self, obs: Observation) -> None:
        self._obs.append(obs)
        self._trim(obs.end if obs.end is not None else obs.time)

    def add_frame(self, time_s: float, detections: Sequence[Any] = (), faces: Sequence[Any] = (),
                  texts: Sequence[Any] = (), size: tuple[int, int] | None = None) -> None:
        """One perceived frame (models.types Detection/Face/TextRegion), even an empty one:
        "nothing seen at t" is information too."""
        self._frames.add(round(time_s, 3))
        for d in detections:
            self._obs.append(Observation(time_s, "object", d.label, None, tuple(d.box), size, float(d.score),
                                         getattr(d, "track_id", None)))
        for f in faces:
            self._obs.append(Observation(time_s, "face", "face", None, tuple(f.box), size, float(f.score)))
        for t in texts:
            if t.text.strip():
                self._obs.append(Observation(time_s, "text", t.text.strip(), None, tuple(t.box), size, float(t.score)))
        self._trim(time_s)

    def add_speech(self, start: float, end: float, text: str, score: float = 1.0, supported: bool = True) -> None:
        """A transcript segment; ``supported`` False: Whisper wrote it where no voice was detected
        (core.perception.listen) — kept as kind "weak-speech", never speech."""
        if text.strip():
            self.add(Observation(start, "speech" if supported else "weak-speech", text.strip(), end, score=score))

    def add_turn(self, start: float, end: float, speaker: int | None, confidence: float = 0.0,
                 speaker_s: float | None = None) -> None:
        """A speaker turn (diarization): also a log line, "[00:06–00:08] voice: Speaker 2"."""
        if self.turns is None:
            self.turns = []
        self.turns.append(SpeakerTurn(float(start), float(end), speaker, float(confidence), speaker_s))
        self.turns.sort(key=lambda t: t.start)
        label = f"Speaker {speaker + 1}" if speaker is not None else "a voice not told apart"
        self.add(Observation(start, "voice", label, end, score=confidence))

    def add_sound(self, sound: Sound) -> None:
        """A loud sound: also a log line."""
        if self.sounds is None:
            self.sounds = []
        self.sounds.append(sound)
        self.sounds.sort(key=lambda x: x.start)
        self.add(Observation(sound.start, "sound", sound.label, sound.end, score=sound.score))

    def add_event(self, start: float, end: float, kind: str, label: str, score: float = 1.0) -> None:
        self.add(Observation(start, kind, label, end, score=score))

    def add_voice(self, start: float, end: float, score: float = 1.0) -> None:
        """A stretch of voice activity (VAD): speech heard, words or not. Not a log line (the
        transcript says more); the facts about when speech starts and ends rest on it."""
        self.voice.append((float(start), float(end), float(score)))
        self.voice.sort()

    def take_hearing(self, other: "PerceptionLog") -> None:
        """What ``other`` heard (a pass over more of the file's audio) replaces what this log heard:
        voice activity, speaker turns, loud sounds and the stretch listened to. The transcript stays."""
        self.voice, self.heard = list(other.voice), other.heard
        if other.turns is not None:
            self.turns = None
            self._obs = [o for o in self._obs if o.kind != "voice"]
            for t in other.turns:
                self.add_turn(t.start, t.end, t.speaker, t.confidence, t.speaker_s)
            self.turns = self.turns if self.turns is not None else []
        if other.sounds is not None:
            self.sounds = None
            self._obs = [o for o in self._obs if o.kind != "sound"]
            for x in other.sounds:
                self.add_sound(x)
            self.sounds = self.sounds if self.sounds is not None else []
            self.sound_floor_db = other.sound_floor_db
        self._obs.sort(key=lambda o: o.time)

    def describe_media(self, info: Any) -> None:
        """Take what a probe (core.media.decode.MediaInfo) says about the file: audio, video, length."""
        self.has_audio, self.has_video = bool(info.has_audio), bool(info.has_video)
        self.duration = float(info.duration_s or 0.0) or None

    def whole(self, stretch: tuple[float, float] | None) -> bool:
        """Does ``stretch`` (``seen`` or ``heard``) cover the whole file (to within a second)?"""
        return bool(stretch and self.duration and stretch[0] <= 1.0 and stretch[1] >= self.duration - 1.0)

    def _trim(self, now: float) -> None:
        if self.horizon_s is None:
            return
        h = now - self.horizon_s
        if self._obs and min(o.end if o.end is not None else o.time for o in self._obs[:64]) < h:
            self._obs = [o for o in self._obs if (o.end if o.end is not None else o.time) >= h]
            self._frames = {t for t in self._frames if t >= h}

    @property
    def frame_times(self) -> list[float]:
        return sorted(self._frames | {round(o.time, 3) for o in self._obs if o.end is None})

    @property
    def span(self) -> tuple[float, float]:
        ts = [o.time for o in self._obs] + [o.end for o in self._obs if o.end is not None] + list(self._frames)
        return (min(ts), max(ts)) if ts else (0.0, 0.0)

    def observations(self, t0: float | None = None, t1: float | None = None) -> list[Observation]:
        lo, hi = -math.inf if t0 is None else t0, math.inf if t1 is None else t1
        return [o for o in self._obs if (o.end if o.end is not None else o.time) >= lo and o.time <= hi]

    def labels(self) -> set[str]:
        return {o.label for o in self._obs if o.kind in OBJECT_KINDS or o.kind in ("tag", "audio", "anomaly")}

    # -- from project tracks ---------------------------------------------------------------
    @classmethod
    def from_tracks(cls, tracks: Iterable[Any], horizon_s: float | None = None) -> "PerceptionLog":
        """Timeline tracks (core.timeline.Track) as a log: per-sample boxes when stored (positions
        and counts), else presence intervals; transcripts; tags; events of any other kind."""
        tracks = list(tracks)
        steps = [i.end - i.start for t in tracks if t.kind == "boxes" for i in t.items[:1] if i.end > i.start]
        log = cls(horizon_s, step=min(steps) if steps else 0.5)
        boxed = {t.meta.get("task") for t in tracks if t.kind == "boxes"}
        for tr in tracks:
            if tr.kind == "boxes":
                task = tr.meta.get("task", "detect")
                kind = {"detect": "object", "faces": "face", "ocr": "text"}.get(task, "object")
                for it in tr.items:
                    d = it.data or {}
                    label = d.get("text", it.label) if kind == "text" else it.label
                    size = tuple(d["size"]) if d.get("size") else None
                    box = tuple(d["box"]) if d.get("box") else None
                    log._frames.add(round(it.start, 3))
                    log._obs.append(Observation(it.start, kind, label, None, box, size, it.confidence, d.get("track"),
                                                confirmed=d.get("confirmed")))
            elif tr.kind in ("detections", "faces"):
                if {"detections": "detect", "faces": "faces"}[tr.kind] in boxed:
                    continue  # the per-sample boxes say the same, with positions
                kind = "object" if tr.kind == "detections" else "face"
                for it in tr.items:
                    n = int((it.data or {}).get("max_count", 1))
                    log._obs.append(Observation(it.start, kind, it.label.split(" ×")[0], it.end, score=it.confidence,
                                                count=n))
            elif tr.kind == "text":
                if "ocr" in boxed:
                    continue
                for it in tr.items:
                    log._obs.append(Observation(it.start, "text", it.label, it.end, score=it.confidence))
            elif tr.kind == "speech" and tr.name == "transcript":
                for it in tr.items:
                    log.add_speech(it.start, it.end, it.label, it.confidence, (it.data or {}).get("speech", True))
            elif tr.kind == "speakers":
                log.turns = log.turns or []
                for it in tr.items:
                    d = it.data or {}
                    log.add_turn(it.start, it.end, d.get("speaker"), it.confidence, d.get("speaker_s"))
            elif tr.kind == "sounds":
                log.sounds = log.sounds or []
                log.sound_floor_db = tr.meta.get("floor_db")
                for it in tr.items:
                    d = it.data or {}
                    log.add_sound(Sound(it.start, it.end, it.label, it.confidence, d.get("kind", "impact"),
                                        float(d.get("over_floor_db") or 0.0), d.get("named_by") or ""))
            elif tr.kind == "speech" and tr.name == "voice activity":
                for it in tr.items:
                    log.add_voice(it.start, it.end, it.confidence)
            elif tr.kind == "tags":
                for it in tr.items:
                    log._obs.append(Observation(it.start, "tag", it.label, it.end, score=it.confidence))
            elif tr.kind in ("speech", "chat", "anomaly", "focus-arms", "focus", "waveform", "shots", "markers"):
                continue  # voice activity, chat history, curves and UI tracks are not perception
            else:  # anomaly events, audio events, notes…: whatever later capabilities add
                for it in tr.items:
                    log._obs.append(Observation(it.start, _event_kind(tr.kind), it.label, it.end,
                                                score=it.confidence))
        log._obs.sort(key=lambda o: o.time)
        return log

    # -- as text ---------------------------------------------------------------------------
    def lines(self, t0: float | None = None, t1: float | None = None) -> list[LogLine]:
        """The log as short, timestamped lines, samples merged into intervals."""
        obs = self.observations(t0, t1)
        out: list[LogLine] = []
        samples: dict[tuple[str, str], list[Observation]] = defaultdict(list)
        for o in obs:
            if o.end is None:
                samples[(o.kind, o.label if o.kind != "text" else norm_text(o.label))].append(o)
            else:
                out.append(_interval_line(o))
        for (kind, _label), rows in samples.items():
            for seg in _segments(rows, self.step):
                out.append(_sample_line(kind, seg, self.step))
        return sorted(out, key=lambda ln: (ln.start, ln.kind))

    def presence(self, label: str, t0: float | None = None, t1: float | None = None
                 ) -> list[tuple[float, float, int]]:
        """Intervals where ``label`` was seen, with the most seen at once: (start, end, count)."""
        rows = [o for o in self.observations(t0, t1) if o.label == label and o.kind in OBJECT_KINDS + ("tag",)]
        out = [(o.time, o.end, o.count) for o in rows if o.end is not None]
        for seg in _segments([o for o in rows if o.end is None], self.step):
            # a box perception marked unconfirmed (core.perception.confirm) is no one to count
            firm = [o for o in seg if o.confirmed is not False] or seg
            per = Counter(round(o.time, 3) for o in firm)
            out.append((seg[0].time, seg[-1].time + self.step, max(per.values())))
        return sorted(out)

    def count_at(self, label: str, t: float) -> tuple[int, float] | None:
        """How many ``label`` perception saw in the sample nearest ``t`` (and that sample's time),
        boxes perception marked unconfirmed left out;
        None when no frame was looked at within 1.5 steps of ``t`` (or ``hold_s`` before it)."""
        times = self.frame_times
        near = [ft for ft in times if abs(ft - t) <= 1.5 * self.step]
        if not near and self.hold_s:
            near = [max((ft for ft in times if t - self.hold_s <= ft <= t), default=None)]
            near = [x for x in near if x is not None]
        if near:
            ft = min(near, key=lambda x: abs(x - t))
            n = sum(1 for o in self._obs if o.end is None and o.label == label and abs(o.time - ft) < 1e-3
                    and o.confirmed is not False)  # unconfirmed boxes are not counted
            return n, ft
        for s, e, n in self.presence(label):
            if s <= t <= e:
                return n, t
        return None


def _event_kind(track_kind: str) -> str:
    k = track_kind.lower()
    return "anomaly" if "anomal" in k else "audio" if "audio" in k or "sound" in k else k


def _segments(rows: list[Observation], step: float) -> list[list[Observation]]:
    rows = sorted(rows, key=lambda o: o.time)
    segs: list[list[Observation]] = []
    for o in rows:
        if segs and o.time - segs[-1][-1].time <= 1.5 * step + 1e-6:
            segs[-1].append(o)
        else:
            segs.append([o])
    return segs


def _sample_line(kind: str, seg: list[Observation], step: float) -> LogLine:
    a, b = seg[0].time, seg[-1].time + step
    per = Counter(round(o.time, 3) for o in seg)
    n = max(per.values())
    label = seg[0].label
    busiest = [o for o in seg if round(o.time, 3) == max(per, key=lambda k: (per[k], -k))]
    where = sorted({p for o in busiest if o.box and (p := position(o.box, o.size))})
    at = f" ({', '.join(where)})" if where else ""
    score = max(o.score for o in seg)
    if kind == "text":
        body = f'on-screen text: "{label}"{at}'
    elif kind == "face":
        body = f"face{'s' if n > 1 else ''}: up to {n} at once{at}"
    else:
        tracks = {o.track for o in seg if o.track is not None}
        many = f", up to {n} at once" if n > 1 else ""
        ids = f", {len(tracks)} tracked" if len(tracks) > 1 else ""
        body = f"seen: {label}{many}{ids}{at}, score {score:.2f}"
    return LogLine(a, b, kind, label, f"{fmt_span(a, b)} {body}", n)


def _interval_line(o: Observation) -> LogLine:
    end = o.end if o.end is not None else o.time
    if o.kind == "speech":
        body = f'someone says: "{o.label}"'
    elif o.kind == "weak-speech":
        body = f'no voice detected; the transcriber wrote "{o.label}" (not counted as speech)'
    elif o.kind == "voice":
        body = f"{o.label} speaks"
    elif o.kind == "sound":
        body = (f"{o.label} (named by an audio model, {o.score:.2f})" if o.label not in ("loud sound", "sound")
                else f"{o.label}, not named by any model (found by its level)")
    elif o.kind == "text":
        body = f'on-screen text: "{o.label}"'
    elif o.kind in OBJECT_KINDS:
        body = f"seen: {o.label}" + (f", up to {o.count} at once" if o.count > 1 else "")
    elif o.kind == "tag":
        body = f"scene: {o.label}"
    elif o.kind == "audio":
        body = f"audio event: {o.label} ({o.score:.2f})"
    elif o.kind == "anomaly":
        body = f"anomaly: {o.label} (score {o.score:.2f})"
    else:
        body = f"{o.kind}: {o.label}"
    return LogLine(o.time, end, o.kind, o.label, f"{fmt_span(o.time, end)} {body}", o.count)
