"""A strip of thumbnails (selected frames, events) that seeks when one is clicked."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem

from core.media.decode import decode_thumbs
from core.timefmt import timecode

THUMB = QSize(160, 90)


class ThumbStrip(QListWidget):
    """``clicked_time(t)`` when a thumbnail is clicked. Thumbnails are decoded on the I/O pool."""

    clicked_time = Signal(float)

    def __init__(self, tasks, parent=None):
        super().__init__(parent)
        self.tasks = tasks
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setIconSize(THUMB)
        self.setMovement(QListView.Movement.Static)
        self.setFixedHeight(THUMB.height() + 48)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.itemClicked.connect(lambda it: self.clicked_time.emit(float(it.data(Qt.ItemDataRole.UserRole))))
        self._items: dict[float, QListWidgetItem] = {}

    def set_frames(self, path: str, frames: list[tuple[float, str]]) -> None:
        """``frames``: (time, caption) pairs; images follow when decoded."""
        self.clear()
        self._items = {}
        for t, caption in sorted(frames):
            it = QListWidgetItem(f"{timecode(t)}\n{caption}")
            it.setData(Qt.ItemDataRole.UserRole, float(t))
            it.setSizeHint(QSize(THUMB.width() + 12, THUMB.height() + 40))
            self.addItem(it)
            self._items[float(t)] = it
        if frames:
            req = (path, tuple(float(t) for t, _ in frames), (THUMB.width() * 2, THUMB.height() * 2))
            self.tasks.run(decode_thumbs, req, pool="io",
                           name="thumbnails", key=f"thumbs-{id(self)}").on_done(self._set_images)

    def set_frames_with_images(self, frames: list[tuple[float, str, np.ndarray]]) -> None:
        """Frames whose pictures are already at hand (no decoding)."""
        self.clear()
        self._items = {}
        for t, caption, _img in sorted(frames, key=lambda f: f[0]):
            it = QListWidgetItem(f"{timecode(t)}\n{caption}")
            it.setData(Qt.ItemDataRole.UserRole, float(t))
            it.setSizeHint(QSize(THUMB.width() + 12, THUMB.height() + 40))
            self.addItem(it)
            self._items[float(t)] = it
        self._set_images([(t, img) for t, _c, img in frames])

    def _set_images(self, images: list[tuple[float, np.ndarray]]) -> None:
        for t, img in images:
            it = self._items.get(float(t))
            if it is None:
                continue
            img = np.ascontiguousarray(img)
            h, w = img.shape[:2]
            q = QImage(img.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            it.setIcon(QIcon(QPixmap.fromImage(q).scaled(THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                         Qt.TransformationMode.SmoothTransformation)))

    def times(self) -> list[float]:
        return sorted(self._items)
