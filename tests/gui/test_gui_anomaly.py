"""Anomalies in the window: the pass, the events list, replay in a loop, feedback, export,
and the stored events coming back when the file is opened again."""
from __future__ import annotations

import hashlib
import json

import mediagen


def test_anomaly_pass_events_replay_feedback(qtbot, window, media_dir, tmp_path):
    # a loud tone from 1.0 to 2.0 s in otherwise silent, quiet footage
    with qtbot.waitSignals([window.media_ready, window.waveform_ready], timeout=30000):
        window.open_media(str(media_dir / "clip.mp4"))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)
    panel = window.anomalies
    panel.normal_min.setValue(0.0)  # no normal footage: the detectors alone
    with qtbot.waitSignal(panel.pass_finished, timeout=120000) as done:
        panel.run()
    res = done.args[0]
    assert res.events, res.notes
    tone = mediagen.STANDARD_TONE
    assert any(abs(e.start - tone[0]) <= 1.0 for e in res.events)
    assert window.session.timeline.track("anomaly", "score") is not None
    assert window.session.timeline.track("anomaly-events", "events") is not None
    assert panel.table.rowCount() == len(panel.events)
    # replay: context around the event, looping
    panel.replay_row(0)
    s = window.session
    ev = panel._row_event(0)
    assert s.playing and s.loop_range[0] <= ev.start and s.loop_range[1] >= ev.end
    s.playing = False
    # feedback is stored
    panel.table.selectRow(0)
    with qtbot.waitSignal(window.tasks.task_ended, timeout=10000):
        panel.feedback("confirmed")
    assert panel.table.item(0, 4).text() == "confirmed"
    # export: CSV, JSON and a clip
    out = tmp_path / "export"
    out.mkdir()
    task = panel.export_to(str(out))
    qtbot.waitUntil(lambda: task.finished, timeout=60000)
    names = {p.suffix for p in out.iterdir()}
    assert {".csv", ".json", ".mp4"} <= names
    # the selected event's evidence package: its clip and a sidecar with the hashes, the event first
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    task = panel.package_event(ev, str(evidence))
    qtbot.waitUntil(lambda: task.finished, timeout=60000)
    (folder,) = evidence.iterdir()
    sidecar = json.loads(next(folder.glob("*.json")).read_text(encoding="utf-8"))
    clip = next(folder.glob("*.mp4"))
    assert sidecar["clip"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert sidecar["findings"]["event"]["id"] == ev.id
    # another file: its own (no) events, never the previous file's
    n = panel.table.rowCount()
    with qtbot.waitSignal(window.media_ready, timeout=30000):
        window.open_media(str(media_dir / "clip.mkv"))
    qtbot.waitUntil(lambda: panel.table.rowCount() == 0 and not panel.events, timeout=10000)
    # the first file again: the stored events are listed, with the verdict given above
    with qtbot.waitSignal(window.media_ready, timeout=30000):
        window.open_media(str(media_dir / "clip.mp4"))
    qtbot.waitUntil(lambda: panel.table.rowCount() == n, timeout=10000)
    assert "confirmed" in {panel.table.item(r, 4).text() for r in range(n)}
    assert "stored by the last pass" in panel.info.text()
