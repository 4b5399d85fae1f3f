"""The Tags dock on real clips: tagging through the panel fills the shots and tags tracks and the
shot's tag list; accept / reject / rename / add from the vocabulary persist in the project;
search results seek the player (opening another file when needed); bad input says what is wrong.

Faces and OCR are left out (``panel.features``): no assertion here needs them, and they are the
costliest models on two cores.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.tagging.features import FeatureConfig
from core.tagging.index import load_index

CFG = FeatureConfig(faces=None, ocr=None)
SLOW = 300_000  # ms: tagging loads every feature model on first use


def _open(qtbot, window, path) -> None:
    with qtbot.waitSignal(window.media_ready, timeout=30000):
        window.open_media(str(path))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)


def _row_of(panel, name: str) -> int:
    rows = [r for r in range(panel.table.rowCount()) if panel.table.item(r, 0).text() == name]
    assert rows, (name, [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())])
    return rows[0]


def _stored_tags(window, ref) -> dict:
    """The shot's tags as the project holds them (a fresh read, edits laid over)."""
    idx = load_index(window.project)
    i = next(i for i, r in enumerate(idx.refs) if r.media_id == ref.media_id and abs(r.start - ref.start) < 1e-6)
    return {t.name: t for t in idx.tags[i]}


def test_tag_this_file_edit_vocabulary_and_search(qtbot, window, sample):
    _open(qtbot, window, sample("bikes"))
    panel, s = window.tagging, window.session
    panel.features = CFG
    with qtbot.waitSignal(panel.tagging_finished, timeout=SLOW) as done:
        panel.tag_current()
    idx = done.args[0]
    assert idx is not None and panel.idx is idx
    # the shots track: bikes.mp4 is a montage with hard cuts (core tests check them to the frame)
    shots = s.timeline.track("shots", "shots")
    assert shots is not None and len(shots.items) >= 4
    assert [round(it.start, 3) for it in shots.items] == [round(idx.refs[i].start, 3) for i in panel._rows]
    tags_tr = s.timeline.track("shot-tags", "shot tags")
    assert tags_tr is not None and len(tags_tr.items) == len(shots.items)
    assert any("bicycle" in it.label for it in tags_tr.items), [it.label for it in tags_tr.items]
    # 6 shots is too little to train the MMAE: the index says so and the panel shows it
    assert idx.method == "pca" and any("not trained" in n for n in idx.notes)
    assert "not trained" in panel.notes.text()

    # the shot under the playhead drives the list
    third = shots.items[2]
    s.seek(0.5 * (third.start + third.end))
    i = panel.current
    assert i >= 0 and idx.refs[i].start == pytest.approx(third.start, abs=1e-3)
    assert panel.table.rowCount() == len(idx.tags[i])
    assert f"Shot 3 of {len(shots.items)}" in panel.shot_label.text()
    low = [t for t in idx.tags[i] if t.low]
    assert low, [(t.name, t.confidence) for t in idx.tags[i]]
    for t in low:  # low-confidence tags are listed, greyed
        assert panel.table.item(_row_of(panel, t.name), 0).foreground().color().name() == "#80828a"

    # search by text, before any edit: a query naming what is in some shots finds them first
    with qtbot.waitSignal(panel.search_finished, timeout=SLOW) as found:
        panel.search("a bicycle")
    hits = found.args[0]
    assert hits and panel.results.rowCount() == len(hits)
    assert "bicycle" in idx.describe[hits[0].index], [idx.describe[h.index] for h in hits]
    s.seek(0.0)
    panel.open_hit(0)
    ref = hits[0].ref
    assert ref.start <= s.position < ref.end and panel.current == hits[0].index

    # accept, reject, rename inline: each persists in the project
    i, ref = panel.current, idx.refs[panel.current]
    names = [t.name for t in sorted(idx.tags[i], key=lambda t: -t.confidence) if t.kind != "cluster"]
    assert len(names) >= 3, names
    a, r, n = names[:3]
    panel.table.selectRow(_row_of(panel, a))
    with qtbot.waitSignal(panel.tags_changed, timeout=10000):
        panel.edit_selected("accept")
    panel.table.selectRow(_row_of(panel, r))
    with qtbot.waitSignal(panel.tags_changed, timeout=10000):
        panel.edit_selected("reject")
    assert panel.table.item(_row_of(panel, r), 0).font().strikeOut()  # struck out, still listed
    assert panel.table.item(_row_of(panel, r), 3).text().endswith("rejected")
    with qtbot.waitSignal(panel.tags_changed, timeout=10000):
        panel.table.item(_row_of(panel, n), 0).setText("my renamed tag")
    stored = _stored_tags(window, ref)
    assert stored[a].state == "accepted" and stored[r].state == "rejected"
    assert "my renamed tag" in stored and n not in stored
    assert r not in s.timeline.track("shot-tags", "shot tags").at(s.position)[0].label

    # the controlled vocabulary: added words go to the project and can be put on a shot
    with qtbot.waitSignal(panel.vocabulary_changed, timeout=10000):
        panel.set_vocabulary(["cycling", "street", "cycling", " "])
    assert [panel.vocab_combo.itemText(k) for k in range(panel.vocab_combo.count())] == ["cycling", "street"]
    assert panel.add_btn.isEnabled()
    panel.vocab_combo.setCurrentText("cycling")
    with qtbot.waitSignal(panel.tags_changed, timeout=10000):
        panel.add_btn.click()
    assert panel.table.item(_row_of(panel, "cycling"), 3).text() == "+ added"
    assert _stored_tags(window, ref)["cycling"].state == "user"
    with qtbot.waitSignal(window.error_shown, timeout=10000) as err:  # not in the vocabulary
        panel.add_tag("unicycle")
    assert "vocabulary" in err.args[0]

    # a fresh read of the project shows the same (the panel reloads it on a project change)
    with qtbot.waitSignal(panel.index_changed, timeout=30000):
        panel.reload()
    s.seek(s.position + 1e-4)
    assert panel.idx is not idx and panel.table.item(_row_of(panel, r), 0).font().strikeOut()
    assert panel.table.item(_row_of(panel, a), 3).text() == "✓ accepted"
    _row_of(panel, "my renamed tag")


def test_tag_folder_similar_shot_opens_the_other_file_and_export(qtbot, window, sample, tmp_path):
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(sample("fire2"), folder / "fire2.mp4")
    shutil.copy(sample("city_mpg"), folder / "city.mpg")
    shutil.copy(sample("fire2"), folder / "fire2_copy.mp4")  # the same content twice: the first by name is kept
    (folder / "notes.txt").write_text("not a media file")
    panel, s = window.tagging, window.session
    panel.features = CFG
    # cancel while the files are described: the panel says so and is ready again
    panel.tag_folder(str(folder))
    assert panel.progress.isVisible() and not panel.tag_btn.isEnabled()
    qtbot.waitUntil(lambda: panel._task is not None and panel._task.progress > 0, timeout=SLOW)
    panel.cancel_btn.click()
    assert "cancelled" in panel.notes.text() and panel.tag_btn.isEnabled() and not panel.progress.isVisible()
    with qtbot.waitSignal(panel.tagging_finished, timeout=SLOW) as done:
        panel.tag_folder(str(folder))
    idx = done.args[0]
    assert idx is not None and {Path(r.path).name for r in idx.refs} == {"fire2.mp4", "city.mpg"}
    text = panel.notes.text()
    assert "skipped notes.txt: not a media file" in text and "fire2_copy.mp4: duplicate" in text

    # the tagged file opens with its shots and tags; "similar to this shot" searches the archive
    _open(qtbot, window, folder / "fire2.mp4")
    qtbot.waitUntil(lambda: s.timeline.track("shots", "shots") is not None, timeout=10000)
    assert s.timeline.track("shot-tags", "shot tags") is not None and panel.current >= 0
    panel.k = len(idx)
    with qtbot.waitSignal(panel.search_finished, timeout=SLOW) as found:
        panel.search_similar()
    hits = found.args[0]
    assert len(hits) == len(idx) - 1 and all(h.index != panel.current for h in hits)
    # the latest city.mpg shot: the player must seek there, not stay at the start of the file
    row = max((k for k, h in enumerate(hits) if Path(h.ref.path).name == "city.mpg"), key=lambda k: hits[k].ref.start)
    ref = hits[row].ref
    assert ref.start > 0.5, [(Path(h.ref.path).name, h.ref.start) for h in hits]
    panel.open_hit(row)
    qtbot.waitUntil(lambda: s.info is not None and Path(s.info.path).name == "city.mpg"
                    and ref.start <= s.position < ref.end, timeout=30000)
    qtbot.waitUntil(lambda: panel.current == hits[row].index, timeout=10000)

    # tagging the folder again describes nothing anew
    with qtbot.waitSignal(panel.tagging_finished, timeout=SLOW):
        panel.tag_folder(str(folder))
    assert "Tagged 0 files, reused 2" in panel.notes.text()

    out = tmp_path / "export"
    task = panel.export_to(str(out))
    qtbot.waitUntil(lambda: task.finished, timeout=60000)
    assert {"shots.json", "shots.csv", "city.kestrel-tags.json"} <= {p.name for p in out.iterdir()}


def test_bad_input_says_what_is_wrong(qtbot, window, tmp_path):
    panel = window.tagging
    with qtbot.waitSignal(window.error_shown, timeout=5000) as err:
        panel.tag_current()
    assert "Open a media file first" in err.args[0]
    with qtbot.waitSignal(window.error_shown, timeout=5000) as err:
        panel.tag_folder(str(tmp_path / "nowhere"))
    assert "is not a folder" in err.args[0]
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("hello")
    (junk / "broken.mp4").write_bytes(b"\x00" * 2048)
    errors: list[str] = []
    window.error_shown.connect(errors.append)
    with qtbot.waitSignal(panel.tagging_finished, timeout=60000) as done:
        panel.tag_folder(str(junk))
    assert done.args[0] is None and panel.idx is None and panel.tag_btn.isEnabled()
    assert len(errors) == 1 and "No media to tag" in errors[0], errors
    assert "readme.txt: not a media file" in errors[0] and "broken.mp4: unreadable" in errors[0]
    for call in (lambda: panel.search("anything"), panel.search_similar, panel.choose_export,
                 lambda: panel.edit_selected("accept")):
        with qtbot.waitSignal(window.error_shown, timeout=5000):
            call()


def test_read_only_view_keeps_writes_for_the_writer(tmp_path):
    from core.store.project import Project
    from core.tagging.jobs import ReadOnlyProject

    p = Project.create(tmp_path / "p.kestrel")
    try:
        view = ReadOnlyProject(p)
        view.set_setting("k", {"a": 1})
        assert view.get_setting("k") == {"a": 1} and p.get_setting("k") is None
        with pytest.raises(RuntimeError, match="read-only job"):
            view.add_media("x.mp4", "h", 1, 1.0, "mp4", [])
        view.apply(p)
        assert p.get_setting("k") == {"a": 1}
    finally:
        p.close()
