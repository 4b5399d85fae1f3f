"""Exports from hostile or damaged projects (issue #15): no live spreadsheet formula in any CSV,
anomaly feedback only from its known values, sidecar and clip names that stay in the folder
the analyst chose, and `tag --search` / `tag --export` on damaged tag metadata that answer
with a sentence, never a traceback.

The tagged project is real: three generated clips tagged with the picture, sound and text
models left out (shot times, colour, motion and loudness tags: exports need tags, not good
ones), then planted into as an attacker would, through the project's own storage API.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import mediagen
from core.anomaly.events import (
    VERDICTS,
    AnomalyEvent,
    Reason,
    current_weights,
    events_track,
    feedback_log,
    load_events,
    set_feedback,
)
from core.anomaly.export import events_csv, export_event_clips, export_events_csv, export_events_json
from core.exportsafe import FORMULA_START, fixed, inside, safe_cell, safe_name, unique_names, writer
from core.jobs import HeadlessState
from core.store.project import Project
from core.tagging import TaggingError
from core.tagging.archive import ArchiveRequest, tag_archive
from core.tagging.export import SIDECAR_SUFFIX, export_archive
from core.tagging.features import FeatureConfig
from core.tagging.index import (
    EDITS_SETTING,
    LATENT_KEY,
    MODEL_SETTING,
    TAGS_KEY,
    TEXT_KEY,
    edit_tag,
    load_index,
    set_vocabulary,
)

BARE = FeatureConfig(tagger=None, detector=None, faces=None, vad=None, asr=None, ocr=None, text_embed=None)
PLANTED = ('=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1")
RENAME = "=cmd|' /C calc'!A0"


def live_cells(path: Path) -> list[str]:
    """Every cell of a CSV file that a spreadsheet would run as a formula."""
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row
                if c.startswith(FORMULA_START) or c.lstrip().startswith(("=", "+", "-", "@", "\uff1d"))]


def all_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


# -- the helper's rule --------------------------------------------------------------------------

def test_safe_cell_neutralises_text_and_keeps_numbers():
    for s in PLANTED + (RENAME, "-0.5", "-2", "+", "=", "@", " =1", "\n=1", "\uff1d1+1", "  @x"):
        assert safe_cell(s) == "'" + s
    for s in ("plain", "", " ", "a=b", "'=1", "1.5", "wide shot", " a -b"):
        assert safe_cell(s) == s
    assert safe_cell(-0.5) == -0.5 and safe_cell(-3) == -3 and safe_cell(np.float32(-1.25)) == np.float32(-1.25)
    assert safe_cell(np.int64(-7)) == -7 and safe_cell(None) == ""
    assert safe_cell(True) == "True" and safe_cell(float("-inf")) == "'-inf" and safe_cell(float("nan")) == "nan"
    assert safe_cell(fixed(-0.5, 3)) == "-0.500" and safe_cell(fixed(2, 1)) == "2.0"
    buf = io.StringIO()
    w = writer(buf)
    w.writerow(["=x", -0.5, fixed(-1, 2), "@y", 3])
    w.writerows([["\r=1", "ok"]])
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows == [["'=x", "-0.5", "-1.00", "'@y", "3"], ["'\r=1", "ok"]]


def test_safe_names_stay_one_component_and_unique():
    hostile = ["../../etc/x", "/abs/../..", "a/b\\c", "..", ".", "", "x\x00y", "n" * 300, "é" * 200, "CON",
               "con.tar", "LPT1", "nul ", ".bashrc", "a:b*c?d\"e<f>g|h", "\udcff\udcfe", "line\nbreak", "  ..  "]
    out = [safe_name(h, "media") for h in hostile]
    for h, n in zip(hostile, out):
        assert n and "/" not in n and "\\" not in n and "\x00" not in n and n not in (".", ".."), (h, n)
        assert not n.startswith(".") and len(n.encode("utf-8")) <= 120, (h, n)
        assert n.split(".")[0].strip().lower() not in ("con", "nul", "lpt1", "prn", "aux"), (h, n)
        assert all(ord(ch) >= 32 for ch in n), (h, n)
    assert safe_name("..", "media") == "media" and safe_name("clip") == "clip"
    names = unique_names({1: "clip", 2: "Clip", 3: "other", 4: "clip"})
    assert names[3] == "other" and len({n.casefold() for n in names.values()}) == 4
    assert unique_names({1: "a", 2: "b"}) == {1: "a", 2: "b"}
    with pytest.raises(ValueError):
        inside("/tmp", "../x")


# -- a real tagged project, planted ---------------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(folder, project file) of three tagged clips; tests work on copies of the file."""
    d = tmp_path_factory.mktemp("robust")
    mediagen.make_video_only(d / "a" / "clip.mp4", duration=1.0)
    mediagen.make_video_only(d / "b" / "clip.mp4", duration=1.5)
    mediagen.make_clip(d / "c.mp4", duration=1.0)
    path = d / "base.kestrel"
    with Project.create(path) as p:
        result = tag_archive(ArchiveRequest(p, folder=str(d), features=BARE), HeadlessState())
        assert len(result.ok) == 3 and result.index is not None and len(result.index) == 3
    return d, path


@pytest.fixture
def proj(base, tmp_path):
    """A fresh copy of the tagged project (path)."""
    dst = tmp_path / "p.kestrel"
    shutil.copyfile(base[1], dst)
    return dst


def plant_media(p: Project, path: str, like: int, tags=None, names=None, n: int | None = None) -> int:
    """A media row with a planted path whose stored tags copy media ``like``'s (optionally
    with other tag lists / cluster names)."""
    mid = p.add_media(path, f"planted-{path!r}", 1, 1.0, "mp4", [])
    for key in (TAGS_KEY, LATENT_KEY, TEXT_KEY):
        got = p.get_array(like, key)
        if got is None:
            continue
        arr, meta = got
        if key == TAGS_KEY:
            if tags is not None:
                meta = {**meta, "tags": [tags] * len(arr)}
            if names is not None:
                meta = {**meta, "names": names}
        p.put_array(mid, key, arr, meta=meta)
    return mid


def test_planted_project_exports_no_live_formula(proj, tmp_path, capsys):
    from core.cli import command
    cmd_tag = command("tag")

    with Project.open(proj) as p:
        first = p.list_media()[0].id
        for k, s in enumerate(PLANTED):  # each planted string starts a path, a tag list, a description
            tags = [{"name": x, "kind": "keyword", "confidence": 0.9} for x in PLANTED[k:] + PLANTED[:k]]
            plant_media(p, s + (f"{k}.mp4" if k else ""), first, tags=tags, names={"0": s})
    # an analyst's own renames and additions, through the API the Tags panel uses
        from core.tagging.jobs import edit_job

        idx = load_index(p)
        ref = idx.refs[0]
        assert RENAME in [t.name for t in edit_job(p, ref, "rename", idx.tags[0][0].name, RENAME)]
        edit_job(p, ref, "add", "-2+3")
        edit_tag(p, idx.refs[1], "rename", idx.tags[1][0].name, "@SUM(A1)")
    out = tmp_path / "out"
    rc = cmd_tag(["--project", str(proj), "--export", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    cells = all_cells(out / "shots.csv")
    assert live_cells(out / "shots.csv") == []
    # the planted text is there, shown as text (so this test cannot pass by losing it)
    for s in PLANTED:
        starts = [c for c in cells if c.startswith("'" + s)]
        assert len(starts) >= 3, (s, starts)  # file, description, tags
    assert any(c.startswith("'" + RENAME) for c in cells) and any(c.startswith("'@SUM(A1)") for c in cells)
    assert any(c.startswith("'" + PLANTED[0]) for c in cells)  # the planted file path, neutralised
    # numbers stay numbers
    rows = list(csv.DictReader(open(out / "shots.csv", newline="", encoding="utf-8")))
    assert all(float(r["start"]) >= 0 and int(r["shot"]) >= 1 for r in rows)
    # JSON keeps the analyst's text as it is (JSON holds no formulas)
    doc = json.loads((out / "shots.json").read_text(encoding="utf-8"))
    assert any(t["name"] == RENAME for s in doc["shots"] for t in s["tags"])


def test_planted_transcript_and_damaged_words_in_exports(proj, tmp_path, caplog):
    """Words stored with the features go to subtitles and sidecars: planted words stay text in
    the CSV (they never reach it as cells of their own), damaged words give a note."""
    from core.tagging.index import CURRENT_KEY

    with Project.open(proj) as p:
        mids = [m.id for m in p.list_media()]
        planted = damaged = 0
        for mid in mids:
            cur = p.get_array(mid, CURRENT_KEY)
            assert cur is not None
            for key in [k for k in _array_keys(p, mid) if k.endswith("/shots")]:
                arr, meta = p.get_array(mid, key)
                if mid == mids[0]:
                    meta["words"] = [[0.1, 0.4, PLANTED[0]], [0.5, 0.8, "-2+3"]]
                    planted += 1
                else:
                    meta["words"] = [["x"], "not a word", [0.1, "b", "w"]]
                    damaged += 1
                p.put_array(mid, key, arr, meta=meta)
        assert planted and damaged
        with caplog.at_level(logging.WARNING):
            res = export_archive(p, tmp_path / "out")
    assert live_cells(tmp_path / "out" / "shots.csv") == []
    vtt = [f for f in res.files if f.suffix == ".vtt"]
    assert len(vtt) == 1 and PLANTED[0] in vtt[0].read_text(encoding="utf-8")
    assert sum("no speech transcribed" in n for n in res.notes) == 2, res.notes
    assert "skipping 3 damaged words" in caplog.text
    # shots that cannot be read at all: a note, no subtitles, the rest exported
    with Project.open(proj) as p:
        p.put_array(mids[1], CURRENT_KEY, np.zeros((2, 7)), meta={"features": "x"})
        res = export_archive(p, tmp_path / "out2")
    assert sum("transcript cannot be read" in n for n in res.notes) == 1, res.notes
    assert live_cells(tmp_path / "out2" / "shots.csv") == []


def _array_keys(p: Project, mid: int) -> list[str]:
    import sqlite3

    con = sqlite3.connect(f"file:{p.path}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT key FROM arrays WHERE media_id = ?", (mid,))]
    finally:
        con.close()


# -- anomaly feedback and events.csv ------------------------------------------------------------

def _planted_events(p: Project, mid: int) -> None:
    from core.perception import ops

    evs = [AnomalyEvent(1.0, 2.0, 0.9, 1.5, [Reason("loud_sound", "audio", 0.9, "=1+1", 1.5)]),
           AnomalyEvent(3.0, 4.0, 0.8, 3.5, [Reason("../../evil", "@audio", 0.8, "+cmd", 3.5)]),
           AnomalyEvent(5.0, 6.0, 0.7, 5.5, [Reason("new_class", "video", 0.7, "-2+3", 5.5)], feedback="confirmed")]
    tr = events_track(evs)
    bad = [{"feedback": '=HYPERLINK("http://x")'}, {"feedback": ["dismissed"]}, {}]
    for it, extra in zip(tr.items, bad):
        it.data.update(extra)
    ops.save_track(p, mid, tr)


def test_planted_feedback_never_reaches_events_csv_or_json(tmp_path, caplog):
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        _planted_events(p, mid)
        p.set_setting("anomaly.feedback", [
            {"media": mid, "event": "ev-1000", "cues": ["loud_sound"], "verdict": '=HYPERLINK("http://x")'},
            {"media": mid, "event": "ev-3000", "cues": "loud_sound", "verdict": "confirmed"},
            "junk",
            {"media": mid, "event": "ev-5000", "cues": ["new_class"], "verdict": "confirmed"}])
        with caplog.at_level(logging.WARNING):
            events = load_events(p, mid)
            log = feedback_log(p)
        assert [e.feedback for e in events] == [None, None, "confirmed"]
        assert "unknown anomaly verdict" in caplog.text
        assert [e["event"] for e in log] == ["ev-5000"]
        w = current_weights(p)  # only the known verdict counts
        assert w["loud_sound"] == current_weights(None)["loud_sound"]
        csv_path = export_events_csv(events, tmp_path / "out" / "events.csv")
        assert live_cells(csv_path) == [], all_cells(csv_path)
        rows = list(csv.DictReader(open(csv_path, newline="", encoding="utf-8")))
        assert [r["feedback"] for r in rows] == ["", "", "confirmed"]
        assert rows[0]["start"] == "1.000" and rows[0]["reasons"] == "audio/loud_sound: =1+1"
        assert rows[1]["modality"] == "'@audio" and rows[1]["reasons"].startswith("'@audio/")
        assert rows[2]["reasons"] == "video/new_class: -2+3"
        doc = json.loads(export_events_json(events, tmp_path / "out" / "events.json").read_text())
        assert [e["feedback"] for e in doc["events"]] == [None, None, "confirmed"]
        # on write, only known values
        for bad in ('=HYPERLINK("http://x")', "Confirmed", ""):
            with pytest.raises(ValueError):
                set_feedback(p, mid, events[0], bad)
        assert set(VERDICTS) == {"confirmed", "dismissed"}
        set_feedback(p, mid, events[0], "dismissed")
        assert [e.feedback for e in load_events(p, mid)] == ["dismissed", None, "confirmed"]


def test_events_csv_keeps_numbers_and_neutralises_text():
    ev = [AnomalyEvent(0.0, 1.0, -0.5, 0.5, [Reason("loud_sound", "-0.5", -0.5, "-0.5", 0.5)])]
    rows = list(csv.reader(io.StringIO(events_csv(ev))))
    assert rows[1][3] == "-0.5000"  # a number Kestrel computed stays a number
    assert rows[1][5] == "'-0.5" and rows[1][7] == "'-0.5/loud_sound: -0.5"  # stored text is text
    # a non-finite stored time is refused when the event is read back
    with pytest.raises(ValueError):
        AnomalyEvent.from_dict({**ev[0].to_dict(), "start": "nan"})
    with pytest.raises(ValueError):
        AnomalyEvent.from_dict({**ev[0].to_dict(), "peak": "inf"})


def test_event_clip_names_stay_in_the_folder(tmp_path, media_dir):
    evs = [AnomalyEvent(0.2, 0.6, 0.9, 0.3, [Reason("../../../x", "audio", 0.9, "t", 0.3)]),
           AnomalyEvent(0.2, 0.7, 0.8, 0.3, [Reason("../../../x", "audio", 0.8, "t", 0.3)]),
           AnomalyEvent(0.25, 0.7, 0.7, 0.3, [Reason("loud_sound/../../y", "audio", 0.7, "t", 0.3)])]
    out = tmp_path / "clips"
    before = set(tmp_path.rglob("*"))
    paths = export_event_clips(media_dir / "clip.mp4", evs, out, pad=0.1)
    assert len(paths) == 3 and len({p.name for p in paths}) == 3  # same start and cue: not overwritten
    assert all(p.resolve().parent == out.resolve() and p.exists() for p in paths)
    assert all("_event" in p.name for p in paths)
    assert {p for p in set(tmp_path.rglob("*")) - before if out not in p.parents and p != out} == set()


# -- sidecar names from stored media paths --------------------------------------------------------

HOSTILE_PATHS = ["../../etc/x.mp4", "/abs/dir/..", "a\\..\\..\\b.mp4", "/tmp/../../..", "x\x00y.mp4",
                 "n" * 300 + ".mp4", "/media/CON.mp4", "/media/.mp4", "/other/c.mp4", "/yet/another/C.mp4",
                 "/d/..\\..\\aux.txt.mp4", "\r\n.mp4", "/lpt1"]


def test_no_sidecar_beside_a_file_the_project_did_not_analyse(proj, tmp_path):
    """A planted row naming a real file elsewhere (another size and hash) gets no sidecar there."""
    victim = tmp_path / "elsewhere" / "notes.mp4"
    victim.parent.mkdir()
    victim.write_bytes(b"the analyst's own file")
    with Project.open(proj) as p:
        plant_media(p, str(victim), p.list_media()[0].id)
        res = export_archive(p, tmp_path / "out", sidecars="media", subtitles=False)
    assert sorted(f.name for f in victim.parent.iterdir()) == ["notes.mp4"]
    assert any("not the one this project analysed" in n for n in res.notes), res.notes
    for f in res.files:  # the real clips' sidecars: the shared clips stay as other tests expect
        if f.name.endswith(SIDECAR_SUFFIX):
            f.unlink()


@pytest.mark.parametrize("mode", ["export", "media"])
def test_sidecar_names_from_hostile_media_paths_stay_in_the_folder(base, proj, tmp_path, mode):
    with Project.open(proj) as p:
        first = p.list_media()[0].id
        planted = []
        for path in HOSTILE_PATHS:
            try:
                planted.append(plant_media(p, path, first))
            except ValueError:  # a NUL the database refuses: nothing to plant
                pass
        assert len(planted) >= len(HOSTILE_PATHS) - 1
        words_key = next(k for k in _array_keys(p, first) if k.endswith("/shots"))
        arr, meta = p.get_array(first, words_key)
        meta["words"] = [[0.1, 0.4, "hello"]]  # so the first clip gets subtitles
        p.put_array(first, words_key, arr, meta=meta)
        out = tmp_path / "deep" / "out"
        watched = [tmp_path, base[0]]
        before = {w: set(w.rglob("*")) for w in watched}
        res = export_archive(p, out, sidecars=mode)
    new = {f for w in watched for f in set(w.rglob("*")) - before[w]}
    outside = {f for f in new if out.resolve() not in f.resolve().parents and f.resolve() != out.resolve()
               and f not in (out.parent,)}
    written = [f.resolve() for f in res.files]
    if mode == "export":
        assert outside == set(), outside
        assert all(f.parent == out.resolve() for f in written), written
        sidecars = [f for f in written if f.name.endswith(SIDECAR_SUFFIX)]
        assert len(sidecars) == 3 + len(planted) and len({f.name.casefold() for f in sidecars}) == len(sidecars)
        assert sum(f.suffix == ".vtt" for f in written) == 1
    else:  # beside the media: only beside the three real clips, whatever the planted paths say
        beside = {f for f in written if f.name.endswith(SIDECAR_SUFFIX)}
        assert all(f.parent == out.resolve() for f in written if f not in beside)
        assert {f.parent for f in beside} == {base[0].resolve(), (base[0] / "a").resolve(), (base[0] / "b").resolve()}
        assert outside == beside, outside ^ beside
        assert sum("not a media file on this machine" in n for n in res.notes) == len(planted)
    for f in written:
        assert f.exists() and len(f.name.encode()) <= 255
    for f in written:
        if out.resolve() not in f.parents:
            f.unlink()  # the shared clips' folder stays as it was


# -- damaged tag metadata: one clean reading path for search and export ---------------------------

def _set_meta(p, mid, key, fn):
    arr, meta = p.get_array(mid, key)
    new = fn(arr, meta)
    p.put_array(mid, key, *(new if isinstance(new, tuple) else (arr, new)))


def _tags_meta(fn):
    return lambda p, mid: _set_meta(p, mid, TAGS_KEY, lambda a, m: (fn(m), m)[1])


def _tags_arr(make):
    return lambda p, mid: _set_meta(p, mid, TAGS_KEY, lambda a, m: (make(a), m))


def _latent(make):
    return lambda p, mid: _set_meta(p, mid, LATENT_KEY, lambda a, m: (make(a), m))


DAMAGE = {
    "tags key missing": _tags_meta(lambda m: m.pop("tags")),
    "clusters key missing": _tags_meta(lambda m: m.pop("clusters")),
    "tags not a list": _tags_meta(lambda m: m.update(tags="wide shot")),
    "tags of a shot not a list": _tags_meta(lambda m: m.update(tags=[{"name": "x"}] * len(m["tags"]))),
    "too many tag lists": _tags_meta(lambda m: m.update(tags=m["tags"] * 3)),
    "tag without a name": _tags_meta(lambda m: m.update(tags=[[{"kind": "object"}, 5, None, "x"]] * len(m["tags"]))),
    "tag confidence not a number": _tags_meta(lambda m: m.update(
        tags=[[{"name": "a", "confidence": "high"}, {"name": "b", "confidence": [1]}, {"name": "c", "confidence": 1e308}]]
        * len(m["tags"]))),
    "cluster not a number": _tags_meta(lambda m: m.update(clusters=["x"] * len(m["clusters"]))),
    "huge cluster index": _tags_meta(lambda m: m.update(clusters=[10 ** 30] * len(m["clusters"]),
                                                        names={str(10 ** 30): "big"})),
    "negative huge cluster": _tags_meta(lambda m: m.update(clusters=[-(2 ** 70)] * len(m["clusters"]))),
    "float cluster": _tags_meta(lambda m: m.update(clusters=[1e308] * len(m["clusters"]))),
    "integers beyond floats": _tags_meta(lambda m: m.update(
        clusters=[10 ** 400] * len(m["clusters"]), tags=[[{"name": "a", "confidence": 10 ** 400}]] * len(m["tags"]),
        experts={"visual": [10 ** 400] * len(m["tags"])})),
    "names not an object": _tags_meta(lambda m: m.update(names=["a", "b"])),
    "names with bad keys": _tags_meta(lambda m: m.update(names={"x": "a", "1": 5, "-9": "c"})),
    "experts damaged": _tags_meta(lambda m: m.update(experts={"visual": ["a"], "audio": 5, "3": [True] * 9})),
    "method unknown": _tags_meta(lambda m: m.update(method={"a": 1}, notes="x")),
    "rows 1-d": _tags_arr(lambda a: a.reshape(-1)),
    "rows wrong width": _tags_arr(lambda a: np.concatenate([a, a[:, :1]], axis=1)),
    "rows NaN": _tags_arr(lambda a: np.full_like(a, np.nan)),
    "rows ints": _tags_arr(lambda a: a.astype(np.int64)),
    "latent wrong length": _latent(lambda a: np.concatenate([a, a])),
    "latent wrong width": _latent(lambda a: np.concatenate([a, a], axis=1)),
    "latent 1-d": _latent(lambda a: a.reshape(-1)),
    "latent NaN": _latent(lambda a: np.full_like(a, np.nan)),
    "latent inf": _latent(lambda a: np.full_like(a, np.inf)),
    "text wrong width": lambda p, mid: _set_meta(p, mid, TEXT_KEY, lambda a, m: (a[:, :5].copy(), m)),
    "text present not a list": lambda p, mid: _set_meta(p, mid, TEXT_KEY, lambda a, m: {"present": "yes"}),
    "latent missing": lambda p, mid: _set_meta(p, mid, LATENT_KEY, lambda a, m: (np.zeros((0,), np.float32), m)),
}
SETTINGS = {
    "edits not an object": [1, 2, 3],
    "edits entry not an object": {"x@0.000": "rename all", "y": None},
    "edits with bad parts": "EDITS",
    "model not a model": "MODEL",
    "model checkpoint garbage": {"checkpoint": "!!not base64!!", "info": 5},
    "model checkpoint bytes junk": {"checkpoint": "aGVsbG8gd29ybGQ=", "info": {}},
}


def _apply_setting(p, name, value):
    if value == "EDITS":
        ref = load_index(p).refs[0]
        value = {ref.key: {"state": ["accepted"], "renamed": {"a": 5, "b": ""}, "added": [1, {"name": 2}, "x"]}}
        p.set_setting(EDITS_SETTING, value)
    elif name.startswith("edits"):
        p.set_setting(EDITS_SETTING, value)
    else:
        p.set_setting(MODEL_SETTING, {"checkpoint": 12345} if value == "MODEL" else value)
        for m in p.list_media():  # the model is read for an MMAE index
            _set_meta(p, m.id, TAGS_KEY, lambda a, meta: {**meta, "method": "mmae"})


def _run_cli(proj, out, capsys):
    from core.cli import command
    cmd_tag = command("tag")

    rc = cmd_tag(["--project", str(proj), "--search", "camera moving", "--k", "3", "--export", str(out)])
    got = capsys.readouterr()
    assert "Traceback" not in got.err and "Traceback" not in got.out, got.err
    return rc, got.out, got.err


RAW = {  # damage below the storage API, written straight into the SQLite file
    "meta is a JSON list": ("UPDATE arrays SET meta_json = '[1, 2]' WHERE media_id = ? AND key = 'tagging/tags'", 1),
    "meta not JSON": ("UPDATE arrays SET meta_json = '{\"tags\": [' WHERE media_id = ? AND key = 'tagging/tags'", 1),
    "meta with NaN": ("UPDATE arrays SET meta_json = '{\"tags\": NaN}' WHERE media_id = ? AND key = 'tagging/tags'", 1),
    "latent bytes truncated": ("UPDATE arrays SET data = x'00' WHERE media_id = ? AND key = 'tagging/latent'", 1),
    "rows shape huge": ("UPDATE arrays SET shape_json = '[1000000000000, 2]' WHERE media_id = ? "
                        "AND key = 'tagging/tags'", 1),
    "edits setting not JSON": ("UPDATE settings SET value_json = '{' WHERE key = 'tagging/edits' AND ? > 0", 1),
    "vocabulary not JSON": ("UPDATE settings SET value_json = '[' WHERE key = 'tagging/vocabulary' AND ? > 0", 1),
}


def _raw(proj, sql, mid):
    import sqlite3

    con = sqlite3.connect(proj)
    try:
        with con:
            assert con.execute(sql, (mid,)).rowcount == 1, sql
    finally:
        con.close()


@pytest.mark.parametrize("damage", sorted(DAMAGE) + sorted(SETTINGS) + sorted(RAW))
def test_damaged_tag_metadata_search_and_export_give_a_sentence(proj, tmp_path, capsys, damage):
    """One damaged media file (or setting): the rest is searched and exported, rc 0."""
    with Project.open(proj) as p:
        mid = p.list_media()[0].id
        if damage in DAMAGE:
            DAMAGE[damage](p, mid)
        elif damage in SETTINGS:
            _apply_setting(p, damage, SETTINGS[damage])
        else:
            edit_tag(p, load_index(p).refs[0], "accept", "wide shot")
            set_vocabulary(p, ["gate"])
    if damage in RAW:
        _raw(proj, RAW[damage][0], mid)
        if "vocabulary" in damage:
            from core.tagging.jobs import load_job

            with Project.open(proj) as p:
                idx, vocab = load_job(p, HeadlessState())
                assert len(idx) == 3 and vocab == []
    rc, out, err = _run_cli(proj, tmp_path / "out", capsys)
    assert rc == 0, err
    assert "shots for 'camera moving'" in out and "exported" in out
    scores = [float(ln.split()[0]) for ln in out.splitlines()[1:] if ln[:1] == " " or ln[:1].isdigit()]
    assert 2 <= len(scores) <= 3 and all(math.isfinite(x) for x in scores), out
    assert live_cells(tmp_path / "out" / "shots.csv") == []
    rows = list(csv.DictReader(open(tmp_path / "out" / "shots.csv", newline="", encoding="utf-8")))
    assert 2 <= len(rows) <= 3
    if len(rows) == 2:  # a file left out: the export says so
        assert "note: the tags of 1 file are damaged and were left out" in err, err
    for r in rows:
        assert math.isfinite(float(r["start"])) and float(r["end"]) >= float(r["start"])


@pytest.mark.parametrize("damage", ["tags key missing", "rows NaN", "latent wrong length", "tags not a list"])
def test_all_tag_metadata_damaged_is_one_sentence_and_rc_1(proj, tmp_path, capsys, damage):
    with Project.open(proj) as p:
        for m in p.list_media():
            DAMAGE[damage](p, m.id)
        with pytest.raises(TaggingError, match="damaged"):
            load_index(p)
    rc, out, err = _run_cli(proj, tmp_path / "out", capsys)
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("kestrel:")]
    assert lines and "damaged" in lines[0], err
    assert not (tmp_path / "out" / "shots.csv").exists()


def test_rename_on_damaged_edits_and_vocabulary_is_stored_clean(proj):
    from core.tagging.jobs import edit_job, load_job

    with Project.open(proj) as p:
        p.set_setting("tagging/vocabulary", {"not": "a list"})
        assert load_job(p, HeadlessState())[1] == []
        p.set_setting("tagging/vocabulary", ["ok", 5, None, ""])
        assert load_job(p, HeadlessState())[1] == ["ok"]
        p.set_setting(EDITS_SETTING, ["not", "edits"])
        idx = load_index(p)
        e = edit_tag(p, idx.refs[0], "rename", idx.tags[0][0].name, RENAME)
        assert e["renamed"] == {idx.tags[0][0].name: RENAME}
        p.set_setting(EDITS_SETTING, {idx.refs[0].key: {"state": "x", "renamed": [], "added": {}}})
        edit_tag(p, idx.refs[0], "accept", idx.tags[0][1].name)
        assert load_index(p).tags[0][1].state == "accepted"


def test_window_edit_on_damaged_stored_tags_is_a_sentence(proj):
    from core.tagging.jobs import edit_job

    with Project.open(proj) as p:
        idx = load_index(p)
        ref = idx.refs[0]
        DAMAGE["tags key missing"](p, ref.media_id)
        with pytest.raises(TaggingError, match="damaged"):
            edit_job(p, ref, "accept", idx.tags[0][0].name)
        DAMAGE["tags of a shot not a list"](p, idx.refs[1].media_id)  # shots whose tags are unreadable: none
        assert [(t.name, t.state) for t in edit_job(p, idx.refs[1], "add", "gate")] == [("gate", "user")]


@pytest.mark.parametrize("latent", [2, 5])
def test_a_stored_model_that_does_not_fit_the_latent_is_left_out(proj, tmp_path, capsys, latent):
    """A real MMAE checkpoint in the setting: used when it fits the stored latent (2 values per
    shot here), left out with a note when it does not (search would multiply mismatched shapes)."""
    import base64

    from models.nn import mmae

    net = mmae.build(mmae.MMAEConfig({"visual": 4, "audio": 3, "text": 384}, latent=latent, hidden=8, width=8), seed=0)
    with Project.open(proj) as p:
        assert load_index(p).latent.shape[1] == 2
        for m in p.list_media():
            _set_meta(p, m.id, TAGS_KEY, lambda a, meta: {**meta, "method": "mmae"})
        p.set_setting(MODEL_SETTING, {"checkpoint": base64.b64encode(mmae.to_bytes(net)).decode(), "info": {}})
        idx = load_index(p)
        assert (idx.net is not None) == (latent == 2)
        assert any("cannot be loaded" in n for n in idx.notes) == (latent != 2)
    rc, out, err = _run_cli(proj, tmp_path / "out", capsys)
    assert rc == 0 and "shots for 'camera moving' (latent: mmae)" in out, err


def test_damaged_event_thumbnails_are_ignored(tmp_path, caplog):
    from core.anomaly.events import THUMBS_KEY

    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        _planted_events(p, mid)
        for arr, meta in ((np.zeros(5, np.float32), {"events": 7}), (np.zeros((1, 4, 4, 3), np.uint8), {"events": 7}),
                          (np.zeros((1, 4, 4), np.uint8), {"events": ["ev-1000"]})):
            p.put_array(mid, THUMBS_KEY, arr, meta=meta)
            with caplog.at_level(logging.WARNING):
                events = load_events(p, mid)
            assert len(events) == 3 and all(e.thumbnail is None for e in events)
        assert "ignoring the stored anomaly thumbnails" in caplog.text
        p.put_array(mid, THUMBS_KEY, np.full((1, 4, 4, 3), 9, np.uint8), meta={"events": ["ev-3000"]})
        assert [e.thumbnail is not None for e in load_events(p, mid)] == [False, True, False]


def test_stored_events_with_integers_beyond_floats_are_skipped(tmp_path):
    from core.perception import ops

    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        tr = events_track([AnomalyEvent(1.0, 2.0, 0.9, 1.5), AnomalyEvent(3.0, 4.0, 0.8, 3.5)])
        tr.items[0].data["start"] = 10 ** 400
        ops.save_track(p, mid, tr)
        assert [e.id for e in load_events(p, mid)] == ["ev-3000"]


def test_links_planted_in_the_export_folder_are_replaced_not_followed(proj, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("shots.csv", "clip-1" + SIDECAR_SUFFIX, "clip-2" + SIDECAR_SUFFIX):
        (out / name).symlink_to(victim)
    with Project.open(proj) as p:
        res = export_archive(p, out)
    assert victim.read_text() == "keep me"
    assert {"shots.csv", "clip-1" + SIDECAR_SUFFIX} <= {f.name for f in res.files}
    assert not any((out / n).is_symlink() for n in ("shots.csv", "clip-1" + SIDECAR_SUFFIX, "clip-2" + SIDECAR_SUFFIX))


def test_anomaly_exports_never_write_through_a_planted_link(tmp_path, media_dir):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    ev = [AnomalyEvent(0.2, 0.6, 0.9, 0.3, [Reason("loud_sound", "audio", 0.9, "t", 0.3)])]
    from core.anomaly.export import clip_stem

    for name in (".events.csv.part", "events.csv", ".events.json.part", f".{clip_stem(ev[0])}.part.mp4"):
        (out / name).symlink_to(victim)
    export_events_csv(ev, out / "events.csv")
    export_events_json(ev, out / "events.json")
    export_event_clips(media_dir / "clip.mp4", ev, out, pad=0.1)
    assert victim.read_text() == "keep me"
    assert not (out / "events.csv").is_symlink() and live_cells(out / "events.csv") == []
