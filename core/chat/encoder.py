"""The machine-oriented encoder: a video stream meant for a model, not a person.

Why (AI Video Chat, arXiv 2507.10510): when the receiver is an MLLM, bits spent on what the
question is not about only add latency. So this encoder

1. sends a frame only on *semantic* change — a change in a tiny thumbnail and colour
   histogram of the frame, in what perception sees there (labels, counts, text) or inside
   the question's regions — or when nothing has been sent for ``max_interval`` seconds;
2. scores the regions perception found by how well their label or text matches the
   question (MiniLM cosine, plus plain word overlap) and keeps those sharp, while the rest
   of the frame is flattened to a smooth low-resolution backdrop that costs almost no bits
   and given a higher quantiser than the regions — the paper's per-region QP map, passed to
   x264/x265 as FFmpeg regions-of-interest side data (the ``addroi`` filter);
3. scales to what the model needs (``max_side``), but never so far that a text region the
   question is about drops below ``min_text_px`` of height;
4. encodes with a real codec (libx264, or libx265 where PyAV's FFmpeg has it), intra-only
   by default, and decodes the packet again: the *decoded* image is what the receiving
   model sees, and the packets' real byte count is the bitrate the meter shows.

This module decides what to send, when, and at what quality (1–3, rate control); the codec
work of 4 — packets, ROI side data, decoding — is :mod:`core.chat.codec`'s, and so is the
yardstick ``human_quality_kbps``: a normal H.264 encode (CRF 23, the source frame rate, full
size) of the same frames.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from core.chat import RegionScorer, Seen, norm_text
from core.chat.codec import MachineCodec, Roi, pick_codec
from core.chat.codec import human_quality_kbps  # noqa: F401 (tests/media/test_robust_media.py imports it from here)


@dataclass(frozen=True)
class Region:
    """A region kept sharp, and why: what perception saw there and how much it matters to the question."""

    box: tuple[int, int, int, int]  # source pixels, margin included
    kind: str
    label: str
    relevance: float


@dataclass
class EncodedFrame:
    """One frame of the machine stream, as sent and as the receiving model decodes it."""

    time: float
    image_bytes: bytes  # JPEG of decoded_image: what an image-only API (OpenAI-style) is sent
    bitstream: bytes  # the codec's packet(s) for this frame: H.264 (or H.265), the bits counted
    regions: tuple[Region, ...]
    decoded_image: np.ndarray  # RGB after decoding the low-bitrate packet
    codec: str = "h264"
    reason: str = ""  # "first", "change 0.41", "question", "keepalive"
    size: tuple[int, int] = (0, 0)  # encoded width, height
    crf: int = 0
    scale: float = 1.0  # encoded pixels per source pixel (regions are in source pixels)

    h264_bytes = property(lambda self: self.bitstream)  # the name the GUI knows (H.265 bytes when codec=hevc)


@dataclass
class EncoderStats:
    frames_in: int = 0
    frames_sent: int = 0
    bytes: int = 0
    first_time: float | None = None
    last_time: float | None = None
    encode_s: float = 0.0  # wall time in selection, compositing, encoding and decoding

    @property
    def duration_s(self) -> float:
        if self.first_time is None or self.last_time is None:
            return 0.0
        return max(self.last_time - self.first_time, 0.0)

    def kbps(self, frame_interval: float = 0.0) -> float:
        """Bitrate of the bytes sent over the stream time covered (plus one frame's interval)."""
        d = self.duration_s + frame_interval
        return self.bytes * 8 / 1000 / d if d > 0 else 0.0


class MachineEncoder:
    """Frames in (``push``), a low-bitrate machine stream out, with running stats.

    ``max_side``: longer side of the encoded picture (the model's input size);
    ``context_side``: the size used when nothing in the frame matches the question;
    ``crf``: the codec's constant-rate factor (higher: fewer bits);
    ``change_threshold``: semantic change (0..1) that makes a frame worth sending;
    ``min_interval``/``max_interval``: seconds between sent frames at least / at most;
    ``relevance``: the question-match score a region needs to be kept sharp;
    ``background``: "flat" (smooth 1/16-size backdrop), "blur" (1/6 size) or "keep";
    ``roi_qoffset``/``background_qoffset``: quantiser offsets (−1..1, FFmpeg's ROI scale) for the
    question's regions (text regions 1.5×) and for the rest of the frame;
    ``codec``: "h264" or "hevc" (libx265, when PyAV's build has it); ``gop``: 1 is intra-only;
    ``max_kbps``: optional cap — CRF rises while the recent bitrate is over it.
    """

    def __init__(self, *, max_side: int = 640, context_side: int = 384, crf: int = 36,
                 change_threshold: float = 0.3, min_interval: float = 0.5, max_interval: float = 10.0,
                 relevance: float = 0.45, background: str = "flat", codec: str = "h264", gop: int = 1,
                 min_text_px: int = 16, max_kbps: float | None = None, jpeg_quality: int = 90,
                 roi_qoffset: float = -0.1, background_qoffset: float = 0.2,
                 scorer: RegionScorer | None = None, preset: str = "veryfast", uncompressed: bool = False) -> None:
        if background not in ("flat", "blur", "keep"):
            raise ValueError("background must be 'flat', 'blur' or 'keep'")
        self.max_side, self.context_side, self.crf = int(max_side), int(context_side), int(crf)
        self.change_threshold = float(change_threshold)
        self.min_interval, self.max_interval = float(min_interval), float(max_interval)
        self.relevance, self.background, self.gop = float(relevance), background, max(1, int(gop))
        self.min_text_px, self.max_kbps, self.jpeg_quality = int(min_text_px), max_kbps, int(jpeg_quality)
        self.preset = preset
        self.roi_qoffset, self.background_qoffset = float(roi_qoffset), float(background_qoffset)
        self.uncompressed = bool(uncompressed)  # the baseline: same frame choice, original pixels, raw size
        self.codec = pick_codec(codec)
        self.scorer = scorer or RegionScorer()
        self.stats = EncoderStats()
        self._crf_boost = 0
        self._codec = MachineCodec(self.codec, gop=self.gop, preset=self.preset)
        self._last: dict[str, Any] | None = None  # descriptor of the last frame sent
        self._question: str | None = None
        self._intervals: deque[float] = deque(maxlen=32)
        self._prev_t: float | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (time, bytes) of recent sent frames

    # -- public --------------------------------------------------------------------------
    @property
    def kbps(self) -> float:
        """Bitrate of everything sent so far, over the stream time it covered."""
        return self.stats.kbps(self.frame_interval)

    @property
    def frame_interval(self) -> float:
        return float(np.median(self._intervals)) if self._intervals else 0.0

    def recent_kbps(self, window_s: float = 10.0) -> float:
        """Bitrate over the last ``window_s`` seconds of stream time (the live meter)."""
        if self.stats.last_time is None:
            return 0.0
        t0 = self.stats.last_time - window_s
        bits = sum(b for t, b in self._recent if t > t0) * 8
        span = min(window_s, self.stats.duration_s + self.frame_interval) or window_s
        return bits / 1000 / span

    def reset(self) -> None:
        """Forget the stream (a new source or a reconnect): the next frame is sent whole."""
        self._last = None
        self._prev_t = None

    def push(self, time_s: float, image: np.ndarray, perception: Sequence[Seen] | None = None,
             question: str | None = None) -> EncodedFrame | None:
        """Offer one RGB frame; returns the encoded frame if it was worth sending, else None."""
        t_start = time.perf_counter()
        img = np.ascontiguousarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 2:
            raise ValueError(f"push() takes an RGB uint8 H×W×3 frame, not {img.dtype} {img.shape}")
        st = self.stats
        st.frames_in += 1
        if self._prev_t is not None and time_s > self._prev_t:
            self._intervals.append(time_s - self._prev_t)
        self._prev_t = time_s
        if st.first_time is None:
            st.first_time = time_s
        st.last_time = max(st.last_time or time_s, time_s)
        seen = list(perception or ())
        regions = self._regions(img, seen, question or "")
        desc = self._describe(img, seen, regions)
        reason = self._decide(time_s, desc, question or "")
        if reason is None:
            st.encode_s += time.perf_counter() - t_start
            return None
        frame = self._encode(time_s, img, regions, reason)
        self._last = desc
        self._question = question or ""
        st.frames_sent += 1
        st.bytes += len(frame.bitstream)
        self._recent.append((time_s, len(frame.bitstream)))
        while self._recent and self._recent[0][0] < time_s - 60:
            self._recent.popleft()
        self._rate_control()
        st.encode_s += time.perf_counter() - t_start
        return frame

    # -- what to keep ----------------------------------------------------------------------
    def _regions(self, img: np.ndarray, seen: list[Seen], question: str) -> tuple[Region, ...]:
        if not seen or not question:
            return ()
        scores = self.scorer.score(question, seen)
        best = max(scores)
        h, w = img.shape[:2]
        out = []
        for s, sc in zip(seen, scores):
            if sc < self.relevance or sc < best - 0.25:
                continue
            x1, y1, x2, y2 = s.box
            mx, my = 0.12 * (x2 - x1) + 6, 0.12 * (y2 - y1) + 6
            box = (int(max(0, x1 - mx)), int(max(0, y1 - my)), int(min(w, x2 + mx)), int(min(h, y2 + my)))
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                out.append(Region(box, s.kind, s.label, round(sc, 3)))
        return tuple(sorted(out, key=lambda r: -r.relevance)[:12])

    # -- when to send -----------------------------------------------------------------------
    def _describe(self, img: np.ndarray, seen: list[Seen], regions: tuple[Region, ...]) -> dict[str, Any]:
        import cv2

        small = cv2.resize(img, (32, 18), interpolation=cv2.INTER_AREA)
        grey = small.astype(np.float32).mean(axis=2).ravel()
        hsv = cv2.cvtColor(cv2.resize(img, (64, 36), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [8, 8], [0, 180, 0, 256])
        cv2.normalize(hist, hist)
        focus = None
        if regions:
            x1 = min(r.box[0] for r in regions)
            y1 = min(r.box[1] for r in regions)
            x2 = max(r.box[2] for r in regions)
            y2 = max(r.box[3] for r in regions)
            focus = cv2.resize(img[y1:y2, x1:x2], (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
        return {"grey": grey, "hist": hist, "focus": focus,
                "labels": Counter(s.label for s in seen if s.kind != "text" and s.score >= 0.5),
                "asked": Counter(r.label for r in regions if r.kind != "text"),
                "texts": frozenset(norm_text(s.label) for s in seen if s.kind == "text"),
                "asked_text": frozenset(norm_text(r.label) for r in regions if r.kind == "text")}

    def change(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """Semantic change between two frame descriptors, 0 (same) .. 1 (a different scene)."""
        import cv2

        ga, gb = a["grey"] - a["grey"].mean(), b["grey"] - b["grey"].mean()
        den = float(np.linalg.norm(ga) * np.linalg.norm(gb))
        d_thumb = 0.5 * (1 - float(ga @ gb) / den) if den > 1e-6 else 0.0
        d_bright = abs(float(a["grey"].mean() - b["grey"].mean())) / 64
        d_hist = float(cv2.compareHist(a["hist"], b["hist"], cv2.HISTCMP_BHATTACHARYYA))
        d_labels = max(0.25 * _count_change(a["labels"], b["labels"]), 0.7 * _count_change(a["asked"], b["asked"]))
        d_text = max(0.25 * _text_change(a["texts"], b["texts"]), 0.6 * _text_change(a["asked_text"], b["asked_text"]))
        # the question's regions, each frame's own crop: the object changing, not the camera panning
        fa, fb = a["focus"], b["focus"]
        d_focus = 0.0 if fa is None or fb is None else min(1.0, float(np.abs(fa - fb).mean()) / 40)
        return min(1.0, max(1.6 * d_thumb, d_bright, d_hist, d_labels, d_text, d_focus))

    def _decide(self, t: float, desc: dict[str, Any], question: str) -> str | None:
        if self._last is None:
            return "first"
        since = t - self._sent_t
        if since < self.min_interval:
            return None
        if question != self._question:
            return "question"
        c = self.change(self._last, desc)
        if c >= self.change_threshold:
            return f"change {c:.2f}"
        if since >= self.max_interval:
            return "keepalive"
        return None

    @property
    def _sent_t(self) -> float:
        """Stream time of the last frame sent (long ago when none was)."""
        return self._recent[-1][0] if self._recent else -1e9

    # -- how to send ------------------------------------------------------------------------
    def compose(self, img: np.ndarray, regions: Sequence[Region]) -> np.ndarray:
        """The picture handed to the codec: sharp regions over a backdrop that costs almost nothing,
        scaled to the model's size."""
        import cv2

        h, w = img.shape[:2]
        side = self.max_side if regions else self.context_side
        scale = min(1.0, side / max(h, w))
        texts = [r for r in regions if r.kind == "text"]
        if texts:  # never shrink the text the question is about below legibility
            need = max(self.min_text_px / max(1.0, (r.box[3] - r.box[1]) / 1.24) for r in texts)
            scale = min(1.0, max(scale, need))
        out_w, out_h = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        frame = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA) if (out_w, out_h) != (w, h) else img
        if not regions or self.background == "keep":
            return np.ascontiguousarray(frame)
        f = 16 if self.background == "flat" else 6
        tiny = cv2.resize(frame, (max(1, out_w // f), max(1, out_h // f)), interpolation=cv2.INTER_AREA)
        back = cv2.resize(tiny, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        mask = np.zeros((out_h, out_w), np.float32)
        sx, sy = out_w / w, out_h / h
        for r in regions:
            x1, y1, x2, y2 = r.box
            mask[int(y1 * sy):int(np.ceil(y2 * sy)), int(x1 * sx):int(np.ceil(x2 * sx))] = 1.0
        mask = cv2.GaussianBlur(mask, (0, 0), 2.0)[:, :, None]
        return (frame * mask + back * (1 - mask)).astype(np.uint8)

    def _encode(self, t: float, img: np.ndarray, regions: tuple[Region, ...], reason: str) -> EncodedFrame:
        import cv2

        if self.uncompressed:
            ok, png = cv2.imencode(".png", img[:, :, ::-1])
            return EncodedFrame(t, png.tobytes() if ok else b"", b"\0" * img.size, regions, img, "raw", reason,
                                (img.shape[1], img.shape[0]), 0, 1.0)
        pic = self.compose(img, regions)
        h, w = pic.shape[:2]
        scale = w / img.shape[1]
        crf = min(51, self.crf + self._crf_boost)
        data, decoded = self._codec.encode(t, pic, crf, self.quantiser_map(regions, scale, (w, h)))
        ok, jpg = cv2.imencode(".jpg", decoded[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return EncodedFrame(t, jpg.tobytes() if ok else b"", data, regions, decoded, self.codec, reason, (w, h), crf,
                            scale)

    def quantiser_map(self, regions: Sequence[Region], scale: float, size: tuple[int, int]) -> list[Roi]:
        """The paper's per-region QP map, for real: quantiser offsets that the codec attaches as
        FFmpeg regions-of-interest side data — lower QP in the question's regions (text regions
        1.5×), higher elsewhere. Regions go first (the first takes precedence where they
        overlap), the whole-frame background last. ``scale``: encoded pixels per source pixel;
        ``size``: the encoded width and height."""
        if not regions or (not self.roi_qoffset and not self.background_qoffset):
            return []
        width, height = size
        rois: list[Roi] = []
        for r in regions:
            q = max(-1.0, self.roi_qoffset * (1.5 if r.kind == "text" else 1.0))
            x1, y1, x2, y2 = (int(round(v * scale)) for v in r.box)
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
            if x2 - x1 >= 2 and y2 - y1 >= 2 and q:
                rois.append((x1, y1, x2 - x1, y2 - y1, q))
        if self.background_qoffset:
            rois.append((0, 0, width, height, min(1.0, self.background_qoffset)))
        return rois

    def _rate_control(self) -> None:
        if not self.max_kbps:
            return
        k = self.recent_kbps()
        if k > self.max_kbps and self.crf + self._crf_boost < 51:
            self._crf_boost += 2
        elif k < 0.6 * self.max_kbps and self._crf_boost > 0:
            self._crf_boost -= 1


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


def _count_change(a: Counter, b: Counter) -> float:
    """1 − weighted Jaccard of two label multisets (0 when both are empty)."""
    keys = set(a) | set(b)
    if not keys:
        return 0.0
    return 1 - sum(min(a[k], b[k]) for k in keys) / sum(max(a[k], b[k]) for k in keys)


def _text_change(a: frozenset, b: frozenset) -> float:
    """Share of the text lines that appeared or went, OCR's letter-level jitter forgiven."""
    from difflib import SequenceMatcher

    if a == b:
        return 0.0

    def alike(t: str, others: frozenset) -> bool:
        return any(SequenceMatcher(None, t, u).ratio() >= 0.6 for u in others)

    changed = sum(not alike(t, a) for t in b) + sum(not alike(t, b) for t in a)
    return min(1.0, changed / max(1, len(a | b)))

