"""What the analyst has open: a media file, the playhead, its waveform and frame index.

Qt-free; the player, waveform and timeline views all watch one ``MediaSession`` so the
playhead stays in sync between them whichever one the analyst drags.
"""
from __future__ import annotations

import numpy as np

from core.events import EventGroup
from core.media.decode import MediaInfo, frame_index
from core.timeline import Timeline
from core.media.waveform import PeakPyramid
from core.timefmt import timecode


class MediaSession:
    """Events: ``media_changed(info|None)``, ``position_changed(t)``, ``playing_changed(bool)``,
    ``rate_changed(float)``, ``waveform_changed(pyramid|None)``, ``frame_times_changed()``,
    ``view_changed(t0, t1)`` — the time span the waveform and timeline show (they zoom together).
    """

    def __init__(self) -> None:
        self.events = EventGroup("media_changed", "position_changed", "playing_changed",
                                 "rate_changed", "waveform_changed", "frame_times_changed",
                                 "view_changed")
        self.info: MediaInfo | None = None
        self.media_id: int | None = None
        self.timeline = Timeline()
        self._position = 0.0
        self._playing = False
        self._rate = 1.0
        self.waveform: PeakPyramid | None = None
        self.frame_times: np.ndarray | None = None
        self.frame_duration = 0.04  # of the frame on screen, when known
        self._view = (0.0, 1.0)
        self.loop_range: tuple[float, float] | None = None  # playback loops here (event replay)

    # -- media ---------------------------------------------------------------------------
    def set_media(self, info: MediaInfo | None, media_id: int | None = None) -> None:
        self.playing = False
        self.info = info
        self.media_id = media_id
        self.waveform = None
        self.frame_times = None
        self._position = 0.0
        self.loop_range = None
        self.timeline.clear()
        self.timeline.duration = info.duration_s if info else 0.0
        self._view = (0.0, max(self.duration, 1e-3))
        self.events.media_changed.emit(info)
        self.events.position_changed.emit(0.0)

    @property
    def duration(self) -> float:
        return self.info.duration_s if self.info else 0.0

    @property
    def fps(self) -> float:
        v = self.info.video if self.info else None
        return v.fps if v and v.fps > 0 else 25.0

    def set_waveform(self, pyramid: PeakPyramid | None) -> None:
        self.waveform = pyramid
        self.events.waveform_changed.emit(pyramid)

    def set_frame_times(self, times: np.ndarray) -> None:
        self.frame_times = times if len(times) else None
        self.events.frame_times_changed.emit()

    # -- shared zoom -----------------------------------------------------------------------
    @property
    def view(self) -> tuple[float, float]:
        return self._view

    def set_view(self, t0: float, t1: float) -> None:
        """Show [t0, t1]; clamped to the media, at least 1 ms wide."""
        dur = max(self.duration, 1e-3)
        span = min(max(t1 - t0, 1e-3), dur)
        t0 = min(max(0.0, t0), dur - span)
        v = (t0, t0 + span)
        if abs(v[0] - self._view[0]) > 1e-9 or abs(v[1] - self._view[1]) > 1e-9:
            self._view = v
            self.events.view_changed.emit(*v)

    # -- playhead ------------------------------------------------------------------------
    @property
    def position(self) -> float:
        return self._position

    def seek(self, t: float) -> None:
        t = min(max(0.0, float(t)), self.last_time())
        if t != self._position:
            self._position = t
            self.events.position_changed.emit(t)

    def last_time(self) -> float:
        """Latest seekable time: the last frame's start for video, the end for audio."""
        if self.frame_times is not None:
            return float(self.frame_times[-1])
        if self.info and self.info.has_video:
            return max(0.0, self.duration - 1.0 / self.fps)
        return self.duration

    def frame_number(self, t: float | None = None) -> int:
        t = self._position if t is None else t
        if self.frame_times is not None:
            return frame_index(self.frame_times, t)
        return int(np.floor(t * self.fps + 1e-6))

    def step(self, frames: int) -> None:
        """Move by whole frames (exact on variable frame rate once the index is built)."""
        if self.frame_times is not None:
            i = self.frame_number() + frames
            i = min(max(i, 0), len(self.frame_times) - 1)
            self.seek(float(self.frame_times[i]))
        else:
            n = self.frame_number() + frames
            self.seek(max(0, n) / self.fps + 1e-4)

    # -- transport -----------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._playing

    @playing.setter
    def playing(self, value: bool) -> None:
        value = bool(value) and self.info is not None
        if value != self._playing:
            self._playing = value
            self.events.playing_changed.emit(value)

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        value = float(value)
        if value != self._rate:
            self._rate = value
            self.events.rate_changed.emit(value)

    def time_text(self, t: float | None = None) -> str:
        t = self._position if t is None else t
        return timecode(t)


def load_stored(project, media_id: int) -> tuple:
    """What a project holds for an opened file: (waveform pyramid or None, tracks, anomaly events).
    Runs on the database worker when a file opens. Big tracks (a day of detections) come as
    StoredTracks that read the project by range and draw from stored counts
    (core.perception.ops.load_timeline): never a whole file's items in memory."""
    from core.anomaly.events import load_events
    from core.perception import ops

    tracks = ops.load_timeline(project, media_id)
    return ops.load_waveform(project, media_id), tracks, load_events(project, media_id, tracks)
