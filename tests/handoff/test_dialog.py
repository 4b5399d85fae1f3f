"""File ▸ Export… / Import… in the window: the dialog over the window's own project, with a stand-in
format (tests/handoff/fakeformat.py) that reads and writes that project for real."""
from __future__ import annotations

import json

import pytest

import fakeformat
import mediagen
from core.handoff import base
from core.perception import ops
from projectkit import detector_output


@pytest.fixture
def opened(qtbot, window, tmp_path, monkeypatch):
    """The window with a 10.5 s clip open in its project and a stored detector run (20 frames × 3 boxes)."""
    fakeformat.install(monkeypatch)
    clip = mediagen.make_clip(tmp_path / "street.mp4", duration=10.5, fps=2, size=(320, 240), audio=False)
    assert not window.export_action.isEnabled() and not window.import_action.isEnabled()  # no media yet
    with qtbot.waitSignal(window.media_ready, timeout=10000):
        window.open_media(str(clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    task = window.tasks.call(ops.store_analysis, window.project, window.session.media_id, detector_output(), 0.5)
    with qtbot.waitSignal(window.tasks.task_ended, check_params_cb=lambda t: t is task, timeout=10000):
        pass
    assert window.export_action.isEnabled() and window.import_action.isEnabled()
    return window, clip


def test_export_a_range_then_import_it_back_onto_the_timeline(qtbot, opened, tmp_path):
    window, clip = opened
    dlg = window.open_handoff(False)
    names = [dlg.formats.item(i).text() for i in range(dlg.formats.count())]
    assert names[:len(base.FORMATS) - 4] == [f.title for f in base.FORMATS.values()][:len(base.FORMATS) - 4]
    dlg.select_format("fakejson")
    assert dlg.path.text() == str(clip.parent / "street.fakejson.json")  # named after the media and format
    out = tmp_path / "part.json"
    dlg.path.setText(str(out))
    dlg.start.setText("1")
    dlg.end.setText("00:00:02.250")
    dlg.span.setChecked(True)
    with qtbot.waitSignal(dlg.finished_ok, timeout=10000) as got:
        dlg.run_btn.click()
    assert got.args[0].counts == {"boxes": 9}
    assert sorted({b["t"] for b in json.loads(out.read_text())}) == [1.0, 1.5, 2.0]
    assert dlg.message.text() == "9 boxes written to part.json; scores are not written"
    assert window.statusBar().currentMessage() == f"9 boxes written to part.json ({out})"

    assert import_onto_timeline(qtbot, window, "fakejson", out) == 9


def import_onto_timeline(qtbot, window, fmt: str, path) -> int:
    """File ▸ Import… of ``path`` in ``fmt``: the items of the track the timeline then shows."""
    imp = window.open_handoff(True)
    assert {imp.formats.item(i).data(0x0100) for i in range(imp.formats.count())} == {
        f.name for f in base.FORMATS.values() if f.can_import}
    imp.select_format(fmt)
    imp.path.setText(str(path))
    with qtbot.waitSignal(imp.finished_ok, timeout=10000):
        imp.run_btn.click()
    key = ("boxes", f"ground truth: {path.name}")
    qtbot.waitUntil(lambda: window.session.timeline.track(*key) is not None, timeout=10000)
    return len(window.session.timeline.track(*key).items)


def test_failures_are_one_line_in_the_dialog_and_the_window(qtbot, opened, tmp_path):
    window, _clip = opened
    dlg = window.open_handoff(False)
    dlg.select_format("fakejson")
    dlg.span.setChecked(True)
    dlg.start.setText("5")
    dlg.end.setText("2")
    with qtbot.waitSignal(window.error_shown, timeout=1000) as shown:  # refused before any job starts
        dlg.run_btn.click()
    assert shown.args == ["the range ends (00:00:02.000) before it starts (00:00:05.000)"]
    assert dlg.task is None and dlg.message.text() == shown.args[0]

    dlg.whole.setChecked(True)
    dlg.select_format("fakerefuses")
    dlg.path.setText(str(tmp_path / "x.json"))
    with qtbot.waitSignal(dlg.failed, timeout=10000) as failed:
        dlg.run_btn.click()
    assert failed.args == ["Export failed: the fake format refuses this file"]
    assert window.statusBar().currentMessage() == failed.args[0] and dlg.run_btn.isEnabled()

    dlg.select_format("fakebug")
    with qtbot.waitSignal(dlg.failed, timeout=10000) as failed:
        dlg.run_btn.click()
    assert failed.args[0].startswith("Export failed: an unexpected error (RuntimeError: a bug in the fake format)")
    assert "\n" not in dlg.message.text() and "Traceback" not in dlg.message.text()
    assert not (tmp_path / "x.json").exists()


def test_cancel_in_the_job_bar_writes_nothing(qtbot, opened, tmp_path):
    window, _clip = opened
    dlg = window.open_handoff(False)
    dlg.select_format("fakeslow")
    dlg.path.setText(str(tmp_path / "slow.json"))
    dlg.run_btn.click()
    qtbot.waitUntil(lambda: dlg.task is not None and dlg.task.progress > 0, timeout=10000)
    window.jobbar.cancel.click()
    assert dlg.message.text() == "Cancelled." and dlg.run_btn.isEnabled()
    assert not (tmp_path / "slow.json").exists()


def test_a_real_format_through_the_dialog(qtbot, opened, tmp_path):
    window, clip = opened
    dlg = window.open_handoff(False)
    assert dlg.path.text() == str(clip.parent / "street.coco.json")  # the first format, chosen already
    dlg.path.setText(str(tmp_path / "street.json"))
    with qtbot.waitSignal(dlg.finished_ok, timeout=10000) as got:
        dlg.run_btn.click()
    assert got.args[0].counts["boxes"] == 60 and (tmp_path / "street.json").is_file()
    assert import_onto_timeline(qtbot, window, "coco", tmp_path / "street.json") == 60
    # the Detections panel scores the detector against it: its own boxes, all found
    qtbot.waitUntil(lambda: getattr(window.detections, "scores", None) is not None, timeout=10000)
    scores = window.detections.scores
    assert scores.truth_name == "ground truth: street.json"
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (60, 0, 0)


def test_the_timelines_view_is_offered_as_the_range(qtbot, opened, tmp_path):
    window, _clip = opened
    assert not window.open_handoff(False).view.isVisibleTo(window.handoff)  # the whole file in view: no choice
    window.session.set_view(2.0, 6.5)
    dlg = window.open_handoff(False)
    assert dlg.view.isChecked() and dlg.view.text() == "The timeline's view (00:00:02.000 – 00:00:06.500)"
    window.session.set_view(0.0, 1.0)  # the view moves on: the range is the one the dialog showed
    dlg.select_format("fakejson")
    dlg.path.setText(str(tmp_path / "view.json"))
    with qtbot.waitSignal(dlg.finished_ok, timeout=10000):
        dlg.run_btn.click()
    times = sorted({b["t"] for b in json.loads((tmp_path / "view.json").read_text())})
    assert times[0] == 2.0 and times[-1] == 6.0 and len(times) == 9
