"""The status bar's device label: where the models run under the ``analysis_device`` setting.

Asking the runtimes imports torch and friends (a second or two), so the text is computed on the
``io`` pool and shown when it comes back; a newer request makes an older answer stale.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel

from core.settings import apply_device, device_status


class DeviceLabel(QLabel):
    """"CPU", "CUDA: <card>" or "CPU (CUDA asked: not available)"; :meth:`refresh` after the
    setting changes (it also makes the setting the device models load with)."""

    device_shown = Signal(str)  # the text now shown

    def __init__(self, tasks, settings, parent=None):
        super().__init__("device: …", parent)
        self.tasks = tasks
        self.settings = settings
        self._asked = 0
        self.refresh()

    def refresh(self) -> None:
        pref = str(self.settings.get("analysis_device"))
        apply_device(pref)
        self._asked += 1
        asked = self._asked
        self.tasks.call(device_status, pref, pool="io", name="device status").on_done(
            lambda res: self._show(asked, res))

    def _show(self, asked: int, result: tuple[str, str]) -> None:
        if asked != self._asked:  # the setting changed again meanwhile
            return
        text, tip = result
        self.setText(text)
        self.setToolTip(tip)
        self.device_shown.emit(text)
