"""``main.py export|import``: the commands over a real project with a stored detector run, through a
stand-in format (tests/handoff/fakeformat.py) where the test is about the command, not a format;
and the real formats that are in this Kestrel, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import fakeformat
import mediagen
from core import cli
from core.handoff import base
from core.handoff.jobs import ExportRequest, ImportRequest, export_job, import_job
from core.jobs import HeadlessState
from core.media.decode import probe
from core.perception import ops
from core.store.project import Project
from projectkit import detector_output


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    # 10.5 s at 2 fps: the stored run's 20 frames (every 0.5 s to 9.5 s) fall inside it
    return mediagen.make_clip(tmp_path_factory.mktemp("media") / "street.mp4", duration=10.5, fps=2,
                              size=(320, 240), audio=False)


@pytest.fixture
def project(tmp_path, media, monkeypatch) -> Path:
    """A closed project with the clip and a detector run of 20 frames × 3 boxes."""
    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))  # the log file
    monkeypatch.setenv("KESTREL_CONFIG_DIR", str(tmp_path / "config"))
    fakeformat.install(monkeypatch)
    path = tmp_path / "case.kestrel"
    with Project.create(path) as p:
        mid = ops.register_media(p, probe(media))
        ops.store_analysis(p, mid, detector_output(), 0.5)
    return path


def run(name: str, argv: list) -> int:
    try:
        return cli.run(name, [str(a) for a in argv])
    except SystemExit as e:  # argparse: usage and one error line
        return e.code if isinstance(e.code, int) else 1


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "[" not in ln]  # the progress bar's lines aside
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def boxes_tracks(path: Path) -> dict[str, int]:
    with Project.open(path, read_only=True) as p:
        return {t.name: len(t.items) for t in ops.load_tracks(p, p.list_media()[0].id) if t.kind == "boxes"}


def test_export_writes_the_range_and_prints_summary_paths_and_notes(project, media, tmp_path, capsys):
    out = tmp_path / "all.json"
    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", out]) == 0
    got = capsys.readouterr()
    assert len(json.loads(out.read_text())) == 60  # 20 frames × 3 boxes
    assert got.out.splitlines() == ["60 boxes written to all.json", f"  wrote {out}", "  note: scores are not written"]
    assert "100.0%" in got.err and "Traceback" not in got.err  # the bar, ended

    part = tmp_path / "part.json"  # seconds and a clock time: frames 1.0, 1.5, 2.0
    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", part,
                          "--start", "1", "--end", "00:00:02.250"]) == 0
    assert sorted({b["t"] for b in json.loads(part.read_text())}) == [1.0, 1.5, 2.0]


def test_import_stores_a_ground_truth_track_and_a_second_import_replaces_it(project, media, tmp_path, capsys):
    gt = tmp_path / "truth.json"
    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", gt, "--end", "5"]) == 0
    for _ in range(2):
        assert run("import", [media, "--project", project, "--format", "fakejson", gt]) == 0
    out = capsys.readouterr().out
    assert "30 boxes imported from truth.json" in out and "track #" in out
    assert boxes_tracks(project)["ground truth: truth.json"] == 30
    assert list(boxes_tracks(project)).count("ground truth: truth.json") == 1


@pytest.mark.parametrize("argv, wanted", [
    (["--format", "nope", "--out", "{tmp}/x.json"], "invalid choice: 'nope'"),
    (["--format", "fakejson", "--out", "{tmp}/x.json", "--start", "5", "--end", "2"], "--end: 2 s is not after --start"),
    (["--format", "fakejson", "--out", "{tmp}/x.json", "--start", "1:xx"], "'1:xx' is not a time"),
    (["--format", "fakejson"], "the following arguments are required: --out"),
])
def test_a_bad_export_command_line_is_usage_and_exit_2(project, media, tmp_path, capsys, argv, wanted):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run("export", [media, "--project", project, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kestrel export") and wanted in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_import_refuses_an_export_only_format(project, media, tmp_path, capsys):
    assert run("import", [media, "--project", project, "--format", "srt", tmp_path / "a.srt"]) == 2
    assert "invalid choice: 'srt'" in capsys.readouterr().err


def test_a_range_past_the_files_end_is_one_line_exit_2(project, media, tmp_path, capsys):
    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", tmp_path / "x.json",
                          "--start", "00:01:00"]) == 2
    assert one_line(capsys.readouterr().err) == ("kestrel: the range starts at 60 s, past the end of street.mp4 "
                                                  "(10.50 s long)")
    assert not (tmp_path / "x.json").exists()


def test_what_cannot_be_done_is_one_line_exit_1(project, media, tmp_path, capsys):
    x = tmp_path / "x.json"
    missing = tmp_path / "nowhere.kestrel"
    assert run("export", [media, "--project", missing, "--format", "fakejson", "--out", x]) == 1
    assert one_line(capsys.readouterr().err) == f"kestrel: The project file '{missing}' does not exist."
    assert not missing.exists()  # not created: it could hold no media

    other = mediagen.make_clip(tmp_path / "other.mp4", duration=0.5, fps=2, size=(96, 64), audio=False)
    assert run("export", [other, "--project", project, "--format", "fakejson", "--out", x]) == 1
    assert one_line(capsys.readouterr().err) == ("kestrel: other.mp4 is not in project case.kestrel; "
                                                  "open or analyse it there first.")

    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", tmp_path / "no" / "x.json"]) == 1
    assert "does not exist; create it or choose another" in one_line(capsys.readouterr().err)

    assert run("export", [media, "--project", media, "--format", "fakejson", "--out", x]) == 1  # not a project
    assert "is not a Kestrel project file" in one_line(capsys.readouterr().err)

    kept = (media.read_bytes(), project.read_bytes())  # an export never replaces what it was made from
    for target, what in ((media, "a media file of this project"), (project, "the project file")):
        assert run("export", [media, "--project", project, "--format", "fakejson", "--out", target]) == 1
        assert one_line(capsys.readouterr().err) == (f"kestrel: {target} is {what}; writing there would replace it: "
                                                      "choose another name")
    assert (media.read_bytes(), project.read_bytes()) == kept

    assert run("export", [media, "--project", project, "--format", "fakerefuses", "--out", x]) == 1
    assert one_line(capsys.readouterr().err) == "kestrel: the fake format refuses this file"
    assert not x.exists()


def test_a_formats_bug_is_one_line_and_the_log_has_its_traceback(project, media, tmp_path, capsys):
    assert run("export", [media, "--project", project, "--format", "fakebug", "--out", tmp_path / "x.json"]) == 1
    line = one_line(capsys.readouterr().err)
    assert "unexpected error (RuntimeError: a bug in the fake format)" in line
    assert "Traceback" in (tmp_path / "data" / "kestrel.log").read_text()


def test_a_damaged_import_is_one_line_and_the_project_keeps_what_it_had(project, media, tmp_path, capsys):
    before = boxes_tracks(project)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"t": 1.0, "label": "person"')
    assert run("import", [media, "--project", project, "--format", "fakejson", bad]) == 1
    assert one_line(capsys.readouterr().err).startswith("kestrel: bad.json is not a fake-format file")
    assert run("import", [media, "--project", project, "--format", "fakejson", tmp_path / "gone.json"]) == 1
    assert one_line(capsys.readouterr().err) == f"kestrel: {tmp_path / 'gone.json'} does not exist"
    assert boxes_tracks(project) == before


def test_a_read_only_project_exports_but_refuses_an_import(project, media, tmp_path, capsys, monkeypatch):
    gt = tmp_path / "truth.json"
    monkeypatch.setattr(Project, "read_only", property(lambda self: True))  # root ignores file modes
    assert run("export", [media, "--project", project, "--format", "fakejson", "--out", gt]) == 0
    assert run("import", [media, "--project", project, "--format", "fakejson", gt]) == 1
    assert "is read-only, so an import cannot be stored in it." in one_line(capsys.readouterr().err)


def test_help_lists_the_formats_with_their_descriptions(capsys):
    with pytest.raises(SystemExit):
        cli.run("export", ["--help"])
    out = capsys.readouterr().out
    for f in base.FORMATS.values():
        assert f"{f.name}" in out and f.description in out
    with pytest.raises(SystemExit):
        cli.run("import", ["--help"])
    out = capsys.readouterr().out
    assert "coco" in out and "srt" not in out.split("formats:")[1]


def test_the_window_passes_its_open_project_and_it_stays_open(project, media, tmp_path):
    with Project.open(project) as p:
        res = export_job(ExportRequest(p, str(media), "fakejson", str(tmp_path / "a.json"), start=9.0), HeadlessState())
        assert res.counts == {"boxes": 6}  # frames 9.0 and 9.5
        got = import_job(ImportRequest(p, str(media), "fakejson", str(tmp_path / "a.json")), HeadlessState())
        assert len(p.load_track(got.track_id).items) == 6  # still open, and the track is there


# -- the real formats, end to end through the commands ---------------------------------------------------
@pytest.mark.parametrize("name", [f.name for f in base.FORMATS.values() if f.can_import])
def test_real_detection_format_round_trip(name, project, media, tmp_path, capsys):
    out = tmp_path / f"street{base.FORMATS[name].suffix}"
    assert run("export", [media, "--project", project, "--format", name, "--out", out]) == 0, capsys.readouterr().err
    assert out.exists() and f"  wrote {out}" in capsys.readouterr().out.splitlines()
    assert run("import", [media, "--project", project, "--format", name, out]) == 0, capsys.readouterr().err
    tracks = boxes_tracks(project)
    assert tracks[f"ground truth: {out.name}"] == tracks["ssd-mobilenet-v2-coco"] == 60


def test_real_evidence_package_of_a_range(project, media, tmp_path, capsys):
    out = tmp_path / "evidence"
    assert run("export", [media, "--project", project, "--format", "evidence", "--out", out,
                          "--start", "1", "--end", "00:00:03"]) == 0, capsys.readouterr().err
    wrote = [Path(ln.split("wrote ", 1)[1]) for ln in capsys.readouterr().out.splitlines() if "  wrote " in ln]
    assert sorted(p.suffix for p in wrote) == [".json", ".mp4"] and all(p.is_file() and out in p.parents for p in wrote)


@pytest.mark.parametrize("name", ["srt", "vtt", "markdown", "chapters"])
def test_real_format_with_nothing_to_export_is_one_line(name, project, media, tmp_path, capsys):
    out = tmp_path / f"street{base.FORMATS[name].suffix}"  # no transcript, chat, events or tags in the project
    assert run("export", [media, "--project", project, "--format", name, "--out", out]) == 1
    assert one_line(capsys.readouterr().err).startswith("kestrel: ")
    assert not out.exists()


def test_a_locked_project_is_one_line(project, media, tmp_path, capsys, monkeypatch):
    import sqlite3

    monkeypatch.setattr(Project, "BUSY_TIMEOUT_S", 0.3)  # the lock is held for the whole test: fail soon
    monkeypatch.setattr(Project, "WRITE_BUSY_TIMEOUT_S", 0.3)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps([{"t": 1.0, "label": "person", "box": [1, 2, 3, 4]}]))
    other = sqlite3.connect(project)  # another program writing the project
    other.execute("BEGIN IMMEDIATE")
    try:
        assert run("import", [media, "--project", project, "--format", "fakejson", truth]) == 1
    finally:
        other.rollback()
        other.close()
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"kestrel: '{project}' is being changed by another program")
