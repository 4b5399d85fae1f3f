"""Shared pytest setup: headless Qt, real sample media, and generated clips.

QT_QPA_PLATFORM is set before anything can import Qt, so GUI tests run without a display
(CI exports nothing; a developer running under Xvfb or a desktop can override it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see main.py

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests"):  # `core` package and the `mediagen` helper module
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pytest  # noqa: E402

import mediagen  # noqa: E402
from core.media import samples  # noqa: E402
from modelkit import no_network  # noqa: E402


@pytest.fixture(scope="session")
def sample() -> Callable[[str], Path]:
    """``sample("bikes") -> Path`` of a verified real clip from core.media.samples.

    Fetches into the normal cache (``$KESTREL_MEDIA_CACHE`` or ``~/.cache/kestrel/media``)
    so runs reuse it. A failed fetch fails the test: real media must never be skipped
    silently in CI.
    """

    def get(name: str) -> Path:
        try:
            return samples.sample_path(name)
        except samples.SampleError as exc:
            pytest.fail(f"real sample {name!r} unavailable: {exc}", pytrace=False)

    return get


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder of generated clips (see ``mediagen.standard_set``).

    Files: clip.{mp4,mkv,webm,avi,mpg,mov}, vfr.mp4, audio.wav, video_only.mp4; all
    ``mediagen.STANDARD_DURATION`` s at ``STANDARD_FPS`` fps and ``STANDARD_SIZE``, with
    ``STANDARD_TONE`` in their audio.
    """
    directory = tmp_path_factory.mktemp("media")
    mediagen.standard_set(directory)
    return directory


@pytest.fixture(scope="session")
def bus_clip(tmp_path_factory, sample):
    """3 s at 10 fps of the real bus photo (ultralytics bus.jpg), panning slowly: a real scene
    with a bus and four people for the detectors."""
    from core.chat.selftest import make_bus_clip

    return make_bus_clip(tmp_path_factory.mktemp("bus") / "bus.mp4", sample("bus_jpg"))


# --- the real models: one session fixture per catalogue model, loaded once for the whole run ---
# Each is loaded with sockets blocked (modelkit.no_network), whichever test file asks first, so a
# backend that tried to download anything fails here instead of in a user's hands. Tests that
# need a model with other options (classes, score, a user's weights) load their own.
def _model(fixture: str, name: str, doc: str, **options):
    """A session fixture ``fixture`` that loads catalogue model ``name`` with ``options``."""

    def load():
        from models.catalogue import load_model

        with no_network():
            return load_model(name, **options)

    load.__doc__ = doc
    return pytest.fixture(scope="session", name=fixture)(load)


ssd = _model("ssd", "ssd-mobilenet-v2-coco", "SSD MobileNet v2 (COCO, 80 classes), default thresholds.")
mtcnn = _model("mtcnn", "mtcnn-faces", "MTCNN face detector on the CPU.", device="cpu")
silero_vad = _model("silero_vad", "silero-vad", "Silero voice activity detector (16 kHz).")
whisper_tiny = _model("whisper_tiny", "whisper-tiny", "Whisper tiny (English) speech recogniser.")
whisper_base = _model("whisper_base", "whisper-base", "Whisper base (multilingual) speech recogniser.")
rapidocr = _model("rapidocr", "rapidocr", "RapidOCR text reader.")
minilm = _model("minilm", "minilm", "MiniLM sentence embedder (384 dimensions).")
efficientnet = _model("efficientnet", "efficientnet-lite3", "EfficientNet-Lite3 ImageNet tagger.")


@pytest.fixture(scope="session")
def qwen_chat():
    """The embedded chat LLM (Qwen2.5-0.5B, qwen2.5-0.5b-chat, on llama.cpp), built as the app
    builds it by default."""
    from models.llm.local import LocalLLM

    with no_network():
        return LocalLLM()


@pytest.fixture(scope="module")
def module_project(request, tmp_path_factory):
    """A fresh project file shared by one test module (its tests build on each other's runs),
    named after the module and closed after it."""
    from core.store.project import Project

    name = request.module.__name__.rsplit(".", 1)[-1]
    with Project.create(tmp_path_factory.mktemp("proj") / f"{name}.kestrel") as p:
        yield p


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fresh settings and data folders; error dialogs reported through signals only."""
    monkeypatch.setenv("KESTREL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KESTREL_NO_DIALOGS", "1")
    return tmp_path


@pytest.fixture
def window(qtbot, env):
    """The main window with a fresh untitled project, closed (threads stopped) afterwards."""
    from core.settings import Settings
    from gui.main_window import MainWindow

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    with qtbot.waitSignal(win.project_changed, timeout=10000):
        win.new_project()
    yield win
    win.close()
