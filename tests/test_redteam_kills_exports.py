"""Red team R3 (issue #15): kills between the writes of one stored result, and exports of
hostile projects -- no formula cell in any CSV, no write through a link planted in the
export folder."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from core.focus import ArmStat, ChosenFrame, FocusRequest, FocusResult


# ------------------------------------------------------------------------ FOCUS frame export
class _FakeDecoder:
    def __init__(self, *_a: Any, **_k: Any) -> None:
        pass

    def __enter__(self) -> "_FakeDecoder":
        return self

    def __exit__(self, *_exc: Any) -> None:
        pass

    def frame_at(self, t: float) -> SimpleNamespace:
        return SimpleNamespace(image=np.full((8, 8, 3), int(t * 10) % 255, np.uint8))


def _focus_result(query: str = "a bus") -> FocusResult:
    req = FocusRequest(path="/videos/clip.mp4", query=query, k=2)
    frames = (ChosenFrame(1.0, 0.9, 0, True, "top"), ChosenFrame(2.5, 0.8, 0, True, "top"))
    return FocusResult(req, frames, (ArmStat(0, 0.0, 5.0, 0.5, 0.9, 0.9, 3),), ((1.0, 0.9),), 3, 100, 3, "scripted",
                       0.1, (), 5.0, 25.0)


def test_focus_export_replaces_links_planted_in_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.media
    from core.focus_store import export_frames

    monkeypatch.setattr(core.media, "VideoDecoder", _FakeDecoder)
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    for name in ("selection.json", "01_00-00-01.000.png", "02_00-00-02.500.png"):
        (out / name).symlink_to(victim)
    paths = export_frames(_focus_result(), "/videos/clip.mp4", out)
    assert victim.read_text() == "precious"  # never written through the links
    assert [p.name for p in paths] == ["01_00-00-01.000.png", "02_00-00-02.500.png", "selection.json"]
    assert all(p.parent == out and not p.is_symlink() and p.stat().st_size > 0 for p in paths)
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)  # no temporary file left
