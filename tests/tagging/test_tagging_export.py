"""Exports: per-shot JSON and CSV, WebVTT/SRT from the stored transcript, sidecars.

The tagged project holds the speech montage (two espeak-ng sentences in known shots, see
test_tagging_archive) and two generated silent clips that share a file name in different folders.
The picture models are left out: exports need tags and words, not good ones.
"""
from __future__ import annotations

import csv
import json
import re

import pytest

import mediagen
from core.jobs import HeadlessState
from core.store.project import Project
from core.tagging import TaggingError
from core.tagging.archive import ArchiveRequest, tag_archive
from core.tagging.export import (
    MAX_CHARS,
    SIDECAR_SUFFIX,
    Cue,
    cues,
    export_archive,
    records_csv,
    shot_records,
    split_lines,
    to_srt,
    to_webvtt,
)
from core.tagging.features import FeatureConfig
from core.tagging.index import edit_tag, load_index
from test_tagging_archive import make_speech_clip

CFG = FeatureConfig(tagger=None, detector=None, faces=None, ocr=None)
VTT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


def secs(g: tuple[str, ...]) -> tuple[float, float]:
    h, m, s, ms, h2, m2, s2, ms2 = map(int, g)
    return h * 3600 + m * 60 + s + ms / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000


def _cue(m: re.Match | None, text: list[str], block: str) -> tuple[float, float, str]:
    """One subtitle cue: its timing line matched (``m``), then at least one line of text."""
    assert m, block
    a, b = secs(m.groups())
    assert 0 <= a < b and text, block
    return a, b, "\n".join(text)


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    assert text.startswith("WEBVTT\n\n")
    out = []
    for block in text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        lines = block.split("\n")
        if not VTT_TIME.match(lines[0]):  # an optional cue identifier first
            lines = lines[1:]
        out.append(_cue(VTT_TIME.match(lines[0]), lines[1:], block))
    return out


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    out = []
    for k, block in enumerate(text.strip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert lines[0] == str(k), block  # numbered 1, 2, 3…
        out.append(_cue(SRT_TIME.match(lines[1]), lines[2:], block))
    return out


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, sample):
    for name in ("chaplin", "city_mpg", "bbb_6ch"):
        sample(name)
    d = tmp_path_factory.mktemp("exp")
    make_speech_clip(d / "speech.mp4")
    # no audio: Whisper can "hear" a word in a pure tone, and these must have no subtitles
    mediagen.make_video_only(d / "a" / "clip.mp4", duration=1.0)
    mediagen.make_video_only(d / "b" / "clip.mp4", duration=1.5)
    project = Project.create(d / "p.kestrel")
    result = tag_archive(ArchiveRequest(project, folder=str(d), features=CFG), HeadlessState())
    assert len(result.ok) == 3 and result.index is not None
    yield d, project
    project.close()


def test_cues_split_at_cuts_pauses_length_and_duration():
    # 12 words of 0.3 s, a cut at 1.8 s (between words 6 and 7)
    ws = [(0.3 * i, 0.3 * i + 0.25, f"word{i}") for i in range(12)]
    cs = cues(ws, [0.0, 1.8])
    assert [c.text for c in cs] == [" ".join(f"word{i}" for i in range(6)), " ".join(f"word{i}" for i in range(6, 12))]
    assert cs[0].end <= cs[1].start == pytest.approx(1.8)
    # a last word stretched over the cut (its middle before it) is cut off at the cut
    assert [(c.start, c.end) for c in cues([(1.0, 1.4, "so"), (1.4, 2.1, "long")], [1.8])] == [(1.0, 1.8)]
    # a pause of a second splits; whitespace-only words vanish; unsorted input is sorted
    cs = cues([(5.0, 5.4, "later"), (0.0, 0.4, " hello"), (0.5, 0.9, "there"), (1.0, 1.1, "  ")])
    assert [c.text for c in cs] == ["hello there", "later"]
    # a long monologue: two lines of at most 42 characters, at most ~7 s a cue, nothing lost
    text = ("this is a rather long stream of speech that keeps going without any pause at all so it has to "
            "be cut into several readable subtitle cues by length and by time ") * 3
    ws = [(0.25 * i, 0.25 * i + 0.2, w) for i, w in enumerate(text.split())]
    cs = cues(ws)
    assert len(cs) > 5
    assert " ".join(" ".join(c.lines) for c in cs) == " ".join(text.split())
    for c in cs:
        assert 1 <= len(c.lines) <= 2 and all(len(line) <= MAX_CHARS for line in c.lines), c
        assert c.end - c.start <= 7.0 + 1e-9 and c.end > c.start
    assert all(a.end <= b.start for a, b in zip(cs, cs[1:]))
    # a sentence end closes a cue once it is half full
    cs = cues([(0, 0.3, "Gate"), (0.3, 0.6, "seven"), (0.6, 0.9, "opens"), (0.9, 1.2, "at"), (1.2, 1.5, "nine."),
               (1.6, 1.9, "Then"), (1.9, 2.2, "we"), (2.2, 2.5, "go.")])
    assert [c.text for c in cs] == ["Gate seven opens at nine.", "Then we go."]
    assert split_lines("a " * 30) == ["a " * 14 + "a", "a " * 14 + "a"]  # balanced, 29 characters each


def test_subtitle_formats():
    cs = [Cue(1.5, 3.25, ("hello there",)), Cue(3661.0, 3662.0006, ("two", "lines"))]
    vtt = to_webvtt(cs)
    assert parse_vtt(vtt) == [(1.5, 3.25, "hello there"), (3661.0, 3662.001, "two\nlines")]
    assert "01:01:01.000 --> 01:01:02.001" in vtt
    assert parse_srt(to_srt(cs)) == [(1.5, 3.25, "hello there"), (3661.0, 3662.001, "two\nlines")]
    assert to_webvtt([]) == "WEBVTT\n\n" and to_srt([]) == ""


def test_exports_parse_and_hold_the_shots_and_the_words(tagged, tmp_path):
    d, project = tagged
    out = export_archive(project, tmp_path / "out")
    names = sorted(p.name for p in out.files)
    assert names == sorted(["shots.json", "shots.csv", "speech.vtt", "speech.srt", "speech" + SIDECAR_SUFFIX,
                            "clip-1" + SIDECAR_SUFFIX, "clip-2" + SIDECAR_SUFFIX]), names
    assert sum("no subtitles" in n for n in out.notes) == 2  # the clips have no sound
    doc = json.loads((tmp_path / "out" / "shots.json").read_text())
    shots = doc["shots"]
    assert doc["format"] == "kestrel-shots" and len(shots) == 5  # speech: 3 shots, each clip: 1
    sp = [s for s in shots if s["file"] == str(d / "speech.mp4")]
    assert [(s["shot"], s["start"], s["end"]) for s in sp] == [(1, 0.0, 1.6), (2, 1.6, 6.0), (3, 6.0, 9.6)]
    for s in shots:
        assert s["cluster"] and isinstance(s["description"], str) and s["tags"]
        for t in s["tags"]:
            assert set(t) >= {"name", "kind", "confidence", "state", "low"} and 0 <= t["confidence"] <= 1
    assert any(t["name"] == "speech" for t in sp[1]["tags"]) and any(t["name"] == "speech" for t in sp[2]["tags"])
    with open(tmp_path / "out" / "shots.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and list(rows[0]) == ["file", "media_id", "shot", "start", "end", "duration", "cluster",
                                                "description", "tags"]
    for row, s in zip(rows, shots):
        assert (row["file"], int(row["shot"]), float(row["start"])) == (s["file"], s["shot"], s["start"])
        parts = [t.split("|") for t in row["tags"].split("; ")]
        assert [p[0] for p in parts] == [t["name"] for t in s["tags"]]
        assert all(len(p) == 4 and 0 <= float(p[2]) <= 1 for p in parts)
    vtt = parse_vtt((tmp_path / "out" / "speech.vtt").read_text())
    srt = parse_srt((tmp_path / "out" / "speech.srt").read_text())
    assert [(round(a, 3), round(b, 3), t) for a, b, t in vtt] == [(round(a, 3), round(b, 3), t) for a, b, t in srt]
    said = " ".join(t for _, _, t in vtt).lower()
    assert {"quick", "brown", "fox", "lazy", "dog", "gate"} <= set(re.findall(r"[a-z]+", said)), said
    fox = [c for c in vtt if "fox" in c[2].lower()]
    gate = [c for c in vtt if "gate" in c[2].lower()]
    assert 1.6 <= fox[0][0] < fox[-1][1] <= 6.0 and 6.0 <= gate[0][0]  # inside their shots, never across a cut
    assert not any(a < 6.0 < b for a, b, _ in vtt)
    side = json.loads((tmp_path / "out" / ("speech" + SIDECAR_SUFFIX)).read_text())
    assert side["format"] == "kestrel-tags" and side["media"]["path"] == str(d / "speech.mp4")
    assert [s["shot"] for s in side["shots"]] == [1, 2, 3] and "file" not in side["shots"][0]
    assert any("fox" in c["text"].lower() for c in side["transcript"])
    clip = json.loads((tmp_path / "out" / ("clip-1" + SIDECAR_SUFFIX)).read_text())
    assert clip["media"]["path"].endswith("a/clip.mp4") and clip["transcript"] == []


def test_rejected_tags_left_out_low_ones_kept_and_sidecars_beside_the_media(tagged, tmp_path):
    d, project = tagged
    idx = load_index(project)
    i = next(i for i, r in enumerate(idx.refs) if r.path.endswith("speech.mp4") and r.index == 1)
    edit_tag(project, idx.refs[i], "reject", "speech")
    recs = [r for r in shot_records(project) if r["file"].endswith("speech.mp4")]
    assert not any(t["name"] == "speech" for t in recs[1]["tags"])
    assert any(t["name"] == "speech" for t in recs[2]["tags"])
    kept = [r for r in shot_records(project, include_rejected=True) if r["file"].endswith("speech.mp4")]
    assert [(t["name"], t["state"]) for t in kept[1]["tags"] if t["name"] == "speech"] == [("speech", "rejected")]
    low = [t for r in recs for t in r["tags"] if t["low"]]
    assert low and all(t["confidence"] < 0.35 and t["state"] == "auto" for t in low)  # greyed, still exported
    assert "speech|speech" not in records_csv(recs[1:2])
    edit_tag(project, idx.refs[i], "reset", "speech")
    out = export_archive(project, tmp_path / "o2", sidecars="media", subtitles=False)
    assert (d / ("speech" + SIDECAR_SUFFIX)).exists() and (d / "a" / ("clip" + SIDECAR_SUFFIX)).exists()
    assert not list((tmp_path / "o2").glob("*.vtt")) and not list((tmp_path / "o2").glob("*" + SIDECAR_SUFFIX))
    assert len(out.files) == 5
    side = json.loads((d / ("speech" + SIDECAR_SUFFIX)).read_text())
    assert any(t["name"] == "speech" for t in side["shots"][1]["tags"])  # the reset brought it back


def test_nothing_tagged_is_a_clear_error(tmp_path):
    with Project.create(tmp_path / "p.kestrel") as project:
        with pytest.raises(TaggingError, match="Nothing is tagged"):
            export_archive(project, tmp_path / "out")
