"""Detections → tracks: the same object keeps the same ``track_id`` from frame to frame.

Why ultralytics' ByteTrack and not a tracker of our own: ByteTrack (Zhang et al., 2022) is the
standard baseline — Kalman-predicted boxes matched by IoU, with a second pass that rescues
low-score detections of known objects — and ultralytics ships a maintained implementation
with tuned defaults (``ultralytics/cfg/trackers/bytetrack.yaml``). It works on any Kestrel
detector's output (SSD, YOLO, DETR), not only on ultralytics predictions: ``_Boxes`` adapts a
list of ``Detection`` to the few attributes ByteTrack reads.

Kestrel samples video at a few frames per second, not 30, so the "frames to keep a lost track"
default is read as seconds at 30 fps and rescaled to the frame rate given (as the original
ByteTrack did with ``frame_rate / 30 * track_buffer``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from models.catalogue import ModelError
from models.types import Detection

log = logging.getLogger(__name__)

TRACKERS = ("bytetrack",)


class _Boxes:
    """The slice of ultralytics' ``Boxes`` that BYTETracker reads (NumPy, boolean indexing)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls

    @property
    def xywh(self) -> np.ndarray:
        """Centre x, centre y, width, height — ultralytics' ``xywh`` convention."""
        xy = (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2
        return np.concatenate([xy, self.xyxy[:, 2:] - self.xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx: Any) -> _Boxes:
        return _Boxes(self.xyxy[idx], self.conf[idx], self.cls[idx])


class Tracker:
    """Give detections of consecutive frames stable ``track_id``s (one tracker per video).

    ``update`` must be called for every sampled frame, in order, including frames with no
    detections (so lost tracks age). Detections that match no confirmed track — a new object
    on its first frame, or one too weak to start a track — keep ``track_id=None``. ByteTrack is
    class-agnostic: a track follows a box even if the detector's label for it flickers.
    ``overrides`` replace entries of ultralytics' bytetrack.yaml (e.g. ``match_thresh=0.9``).
    """

    def __init__(self, kind: str = "bytetrack", frame_rate: float = 2.0, **overrides: Any) -> None:
        if kind not in TRACKERS:
            raise ValueError(f"unknown tracker {kind!r} (known: {', '.join(TRACKERS)})")
        if frame_rate <= 0:
            raise ValueError("frame_rate must be positive")
        from models.backends.yolo import import_ultralytics

        import_ultralytics()
        try:
            from ultralytics.trackers.byte_tracker import BYTETracker
            from ultralytics.utils import ROOT, YAML, IterableSimpleNamespace
        except ImportError as e:  # `lap`, its assignment solver, is not installed
            raise ModelError(f"Tracking needs a package that is not installed ({e}); "
                             "pip install lap==0.5.13") from e
        cfg = dict(YAML.load(ROOT / "cfg" / "trackers" / f"{kind}.yaml"))
        cfg.update(overrides)
        cfg["track_buffer"] = max(1, round(float(cfg["track_buffer"]) * frame_rate / 30.0))
        self.kind = kind
        self.frame_rate = float(frame_rate)
        self.args = IterableSimpleNamespace(**cfg)
        self._tracker = BYTETracker(self.args)

    def update(self, detections: Sequence[Detection], image_shape: tuple[int, ...]) -> list[Detection]:
        """The same detections, in the same order, with ``track_id`` set where a track matched.

        ``image_shape`` is the frame's (height, width[, channels]); boxes are clipped to it.
        """
        h, w = int(image_shape[0]), int(image_shape[1])
        if detections:
            xyxy = np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4)
            np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
            np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
        else:
            xyxy = np.zeros((0, 4), np.float32)
        conf = np.array([d.score for d in detections], dtype=np.float32)
        cls = np.array([d.class_id for d in detections], dtype=np.float32)
        rows = self._tracker.update(_Boxes(xyxy, conf, cls))
        # rows: x1, y1, x2, y2, track_id, score, cls, index of the detection it matched
        ids = {int(r[7]): int(r[4]) for r in rows} if len(rows) else {}
        return [replace(d, track_id=ids.get(i)) for i, d in enumerate(detections)]

    def reset(self) -> None:
        """Forget every track (a new video, or a seek); ids start again at 1."""
        self._tracker.reset()
