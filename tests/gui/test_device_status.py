"""The status bar's device label: computed off the UI thread, updated when the setting changes.

The runtimes' answers are faked (no GPU here): which ones can use CUDA is the input, the text the
label shows and the preference the models load with are what is checked.
"""
from __future__ import annotations

import pytest

from models import devices
from test_device import _can  # the runtimes' answers, faked


@pytest.fixture
def parts(qtbot, env, monkeypatch):
    from core.settings import Settings
    from gui.tasks import TaskManager

    monkeypatch.delenv("KESTREL_DEVICE", raising=False)
    tasks = TaskManager()
    yield tasks, Settings()
    tasks.shutdown()
    devices.set_preference("auto")


def _shown(qtbot, label, change=None) -> str:
    with qtbot.waitSignal(label.device_shown, timeout=10000) as blocker:
        if change is None:
            pass  # the first answer, asked for by the constructor
        else:
            label.settings.set("analysis_device", change)
            label.refresh()
    return blocker.args[0]


def test_the_label_follows_the_setting(qtbot, parts, monkeypatch):
    from gui.device_status import DeviceLabel

    tasks, settings = parts
    _can(monkeypatch, "torch", "ctranslate2")
    label = DeviceLabel(tasks, settings)
    qtbot.addWidget(label)
    assert _shown(qtbot, label) == "CUDA: Fake GPU" == label.text()
    assert "torch: CUDA — torch CUDA (fake)" in label.toolTip()
    assert "opencv-dnn: CPU — opencv-dnn has no CUDA (fake)" in label.toolTip()
    assert _shown(qtbot, label, "cpu") == "CPU" and devices.preference() == "cpu"  # what models now load with
    _can(monkeypatch)
    assert _shown(qtbot, label, "cuda") == "CPU (CUDA asked: not available)" and devices.preference() == "cuda"
    assert _shown(qtbot, label, "auto") == "CPU"


def test_the_window_shows_the_device(window, qtbot):
    import torch

    label = window.device_label
    if not label.text().startswith(("CPU", "CUDA")):
        with qtbot.waitSignal(label.device_shown, timeout=10000):
            pass
    assert label.text() == ("CUDA: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")
