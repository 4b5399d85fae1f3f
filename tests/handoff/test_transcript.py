"""Transcripts to SRT and WebVTT with speakers (core.handoff.transcript), from a real project whose
transcript and speaker tracks are stored the way the analysis stores them (core.perception.ops.store_analysis)."""
from __future__ import annotations

import html
from pathlib import Path

import pytest

from core.handoff.base import HandoffError, export_with
from core.handoff.transcript import export
from core.perception import ops
from core.perception.analysis import ModelOutput
from core.perception.listen import HeardSegment
from core.perception.speakers import Turn
from core.store.project import Project

# (start, end, text, score, words, voiced, supported): one segment of each case
SEGMENTS = [
    (0.5, 3.0, "Hello there. How are you?", 0.9,
     [(0.5, 0.9, "Hello"), (0.9, 1.3, "there."), (1.6, 1.9, "How"), (1.9, 2.1, "are"), (2.1, 2.6, "you?")], 0.9, True),
    (3.0, 5.0, "I am fine & <well>", 0.8,
     [(3.1, 3.4, "I"), (3.4, 3.6, "am"), (3.6, 4.0, "fine"), (4.0, 4.2, "&"), (4.2, 4.8, "<well>")], 0.95, True),
    (6.0, 6.5, "You", 0.3, [(6.0, 6.5, "You")], 0.0, False),  # Whisper over a bang: no voice heard
    (8.0, 9.0, "Goodbye.", 0.7, [(8.0, 8.5, "Goodbye.")], 0.8, True),
    (10.0, 13.0, "Yes I agree totally", 0.9,
     [(10.0, 10.4, "Yes"), (10.4, 10.8, "I"), (11.2, 11.6, "agree"), (11.6, 12.2, "totally")], 1.0, True),
]
# diarization: "Speaker 1" and "Speaker 2", and a voice not told apart over "Goodbye."; the last
# segment changes speaker in the middle of a sentence
TURNS = [Turn(0.4, 3.0, 0, 0.8), Turn(3.0, 5.2, 1, 0.7), Turn(7.9, 9.2, None, 0.0),
         Turn(9.9, 11.0, 0, 0.8), Turn(11.0, 12.5, 1, 0.75)]

VTT = """WEBVTT

NOTE Kestrel: the transcript of talk.mp4 by whisper-tiny, speakers by resemblyzer-voices; media times

1
00:00:00.500 --> 00:00:02.600
<v Speaker 1>Hello there. How are you?

2
00:00:03.100 --> 00:00:04.800
<v Speaker 2>I am fine &amp; &lt;well&gt;

3
00:00:08.000 --> 00:00:08.500
Goodbye.

4
00:00:10.000 --> 00:00:10.800
<v Speaker 1>Yes I

5
00:00:11.200 --> 00:00:12.200
<v Speaker 2>agree totally

"""

SRT = """1
00:00:00,500 --> 00:00:02,600
Speaker 1: Hello there. How are you?

2
00:00:03,100 --> 00:00:04,800
Speaker 2: I am fine & <well>

3
00:00:08,000 --> 00:00:08,500
Goodbye.

4
00:00:10,000 --> 00:00:10,800
Speaker 1: Yes I

5
00:00:11,200 --> 00:00:12,200
Speaker 2: agree totally

"""


def _store(project: Project, media_id: int, *, speakers: bool = True, segments=SEGMENTS) -> None:
    asr = ModelOutput("whisper-tiny", "Whisper tiny", "asr", "1", {},
                      segments=[HeardSegment(a, b, text, score, tuple(words), voiced, ok)
                                for a, b, text, score, words, voiced, ok in segments])
    ops.store_analysis(project, media_id, asr, 0.5)
    if speakers:
        voices = ModelOutput("resemblyzer-voices", "Speakers", "speaker-embed", "1", {"min_speaker_s": 2.0},
                             segments=list(TURNS))
        ops.store_analysis(project, media_id, voices, 0.5)


@pytest.fixture
def talk(tmp_path):
    with Project.create(tmp_path / "p.kestrel") as project:
        media_id = project.add_media("/videos/talk.mp4", "h", 1000, 20.0, "mp4", [])
        _store(project, media_id)
        yield project, media_id


def test_webvtt_has_voices_escapes_and_never_mixes_speakers(talk, tmp_path):
    project, media_id = talk
    res = export(project, media_id, tmp_path / "talk.vtt")
    assert (tmp_path / "talk.vtt").read_text(encoding="utf-8") == VTT
    assert res.paths == (tmp_path / "talk.vtt",)
    assert res.counts == {"cues": 5, "words": 15, "speakers": 2}
    # the "You" Whisper wrote where no voice was heard is left out, and said so
    assert any("1 transcript segment" in n and "no voice" in n for n in res.notes)
    assert any("1 cue(s)" in n and "no speaker" in n for n in res.notes)


def test_srt_prefixes_the_speaker(talk, tmp_path):
    project, media_id = talk
    export_with("srt", project, media_id, tmp_path / "talk.srt")  # through the registry, as the CLI does
    assert (tmp_path / "talk.srt").read_text(encoding="utf-8") == SRT


def test_webvtt_reads_back_with_webvtt_py(talk, tmp_path):
    webvtt = pytest.importorskip("webvtt")
    project, media_id = talk
    export(project, media_id, tmp_path / "talk.vtt")
    caps = webvtt.read(str(tmp_path / "talk.vtt"))
    got = [(c.start, c.end, c.voice, html.unescape(c.text)) for c in caps]
    assert got == [("00:00:00.500", "00:00:02.600", "Speaker 1", "Hello there. How are you?"),
                   ("00:00:03.100", "00:00:04.800", "Speaker 2", "I am fine & <well>"),
                   ("00:00:08.000", "00:00:08.500", None, "Goodbye."),
                   ("00:00:10.000", "00:00:10.800", "Speaker 1", "Yes I"),
                   ("00:00:11.200", "00:00:12.200", "Speaker 2", "agree totally")]


def test_srt_reads_back_with_srt(talk, tmp_path):
    srt = pytest.importorskip("srt")
    project, media_id = talk
    export(project, media_id, tmp_path / "talk.srt")
    subs = list(srt.parse((tmp_path / "talk.srt").read_text(encoding="utf-8")))
    got = [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs]
    assert got == [(0.5, 2.6, "Speaker 1: Hello there. How are you?"), (3.1, 4.8, "Speaker 2: I am fine & <well>"),
                   (8.0, 8.5, "Goodbye."), (10.0, 10.8, "Speaker 1: Yes I"), (11.2, 12.2, "Speaker 2: agree totally")]


def test_a_range_keeps_media_times_and_clips(talk, tmp_path):
    project, media_id = talk
    res = export(project, media_id, tmp_path / "part.vtt", start=4.3, end=8.2)
    body = (tmp_path / "part.vtt").read_text(encoding="utf-8").split("\n\n", 2)[2]
    # "<well>" (4.2-4.8) is the only word whose middle is in range; its cue is clipped, not shifted
    assert body == "1\n00:00:04.300 --> 00:00:04.800\n<v Speaker 2>&lt;well&gt;\n\n"
    assert res.counts["cues"] == 1


def test_without_speakers_the_cues_carry_none(tmp_path):
    with Project.create(tmp_path / "p.kestrel") as project:
        media_id = project.add_media("/videos/talk.mp4", "h", 1000, 20.0, "mp4", [])
        _store(project, media_id, speakers=False)
        res = export(project, media_id, tmp_path / "t.srt")
    text = (tmp_path / "t.srt").read_text(encoding="utf-8")
    assert "Speaker" not in text and "Hello there. How are you?" in text
    # no speaker turns to split at: the last segment is one cue
    assert "Yes I agree totally" in text
    assert any("no speakers are stored" in n for n in res.notes)


def test_what_cannot_be_exported_is_one_clear_error(talk, tmp_path):
    project, media_id = talk
    with pytest.raises(HandoffError, match=r"\.srt or \.vtt"):
        export(project, media_id, tmp_path / "t.txt")
    with pytest.raises(HandoffError, match="no transcribed speech between 5.5 s and 7"):
        export(project, media_id, tmp_path / "t.vtt", start=5.5, end=7.0)  # only the unsupported "You"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(HandoffError, match="does not exist"):
        export(project, media_id, blocker / "t.vtt")
    (tmp_path / "dir.vtt").mkdir()
    with pytest.raises(HandoffError, match="is a folder"):
        export(project, media_id, tmp_path / "dir.vtt")
    other = project.add_media("/videos/silent.mp4", "h2", 1000, 20.0, "mp4", [])
    with pytest.raises(HandoffError, match="silent.mp4 has no transcript; run analysis with an ASR model"):
        export(project, other, tmp_path / "t.vtt")
    with pytest.raises(HandoffError, match="no media file with id 999"):
        export(project, 999, tmp_path / "t.vtt")
    assert not (tmp_path / "t.vtt").exists() and not (tmp_path / "t.txt").exists()


def test_a_failed_export_leaves_the_file_there_alone(talk, tmp_path):
    project, media_id = talk
    (tmp_path / "t.vtt").write_text("the analyst's earlier export")
    with pytest.raises(HandoffError):
        export(project, media_id, tmp_path / "t.vtt", start=5.5, end=7.0)
    assert (tmp_path / "t.vtt").read_text() == "the analyst's earlier export"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kestrel-")] == []


def test_a_hostile_speaker_label_cannot_break_the_cue(tmp_path):
    webvtt = pytest.importorskip("webvtt")
    with Project.create(tmp_path / "p.kestrel") as project:
        media_id = project.add_media("/videos/talk.mp4", "h", 1000, 20.0, "mp4", [])
        _store(project, media_id, speakers=False)
        project.save_track(media_id, "speakers", "speakers",
                           [(0.0, 20.0, "Eve>\n\n00:00:00.000 --> 00:00:09.000\nforged", 0.9, None, {"speaker": 0})])
        export(project, media_id, tmp_path / "t.vtt")
        export(project, media_id, tmp_path / "t.srt")
    caps = webvtt.read(str(tmp_path / "t.vtt"))
    assert len(caps) == 4 and all(c.voice == "Eve&gt; 00:00:00.000 --&gt; 00:00:09.000 forged" for c in caps)
    assert Path(tmp_path / "t.vtt").read_text(encoding="utf-8").count("-->") == 4
    srt = pytest.importorskip("srt")
    subs = list(srt.parse((tmp_path / "t.srt").read_text(encoding="utf-8")))
    assert [s.start.total_seconds() for s in subs] == [0.5, 3.1, 8.0, 10.0]
    assert all(s.content.startswith("Eve> 00:00:00.000 --> 00:00:09.000 forged: ") for s in subs)
