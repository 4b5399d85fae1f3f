"""Damaged and lying media (issue #15): each gives a MediaError with a sentence or opens fine,
and what a header declares never sizes a plan or a buffer by itself.

Every file is built here: odd paths, damaged tags, a stream no decoder knows, WAV headers
with 255 or 0 channels or a 2 GHz rate, a Matroska Duration patched to 10^15 ms, AAC that
claims 27.8 hours, and two frames 10^6 s apart.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen
from core.perception.analysis import AnalysisRequest, analyze
from core.media.audio import AudioReader, load_mono
from core.jobs import HeadlessState
from core.media.decode import MediaError, VideoDecoder, frame_times, probe
from core.media.waveform import WaveformRequest, build_waveform
from models import catalogue
from models.catalogue import ModelSpec


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("robust")
    clip = mediagen.make_clip(d / "clip.mp4", duration=2.0)
    clip_mkv = mediagen.make_clip(d / "clip.mkv", duration=2.0)
    aac_mkv = mediagen.make_audio_only(d / "aac.mkv", duration=2.0, acodec="aac")
    wav = mediagen.make_audio_only(d / "tone.wav", duration=1.0)
    video_only = mediagen.make_video_only(d / "video_only.mp4", duration=1.0)
    return {
        "clip": clip,
        "wav": wav,
        "huge_mkv": mediagen.patch_mkv_duration(clip_mkv, d / "huge.mkv", 1e15),
        "long_aac": mediagen.patch_mkv_duration(aac_mkv, d / "long_aac.mkv", 27.8 * 3600e3),
        "sparse_mp4": mediagen.make_sparse_video(d / "sparse.mp4", gap_s=1e6),
        "sparse_mkv": mediagen.make_sparse_video(d / "sparse.mkv", gap_s=1e6),
        "sparse_audio": mediagen.make_sparse_audio(d / "sparse_audio.mkv", gap_s=1e6),
        "tags_mkv": mediagen.make_bad_tags(d / "tags.mkv"),
        "tags_mp4": mediagen.make_bad_tags(d / "tags.mp4"),
        "no_codec": mediagen.replace_bytes(clip, d / "no_codec.mp4", b"avc1", b"zzzz"),
        "no_codec_only": mediagen.replace_bytes(video_only, d / "no_codec_only.mp4", b"avc1", b"zzzz"),
        "ch255": mediagen.patch_wav_header(wav, d / "ch255.wav", channels=255),
        "ch0": mediagen.patch_wav_header(wav, d / "ch0.wav", channels=0),
        "rate_2ghz": mediagen.patch_wav_header(wav, d / "rate.wav", sample_rate=2**31 - 1),
        "rate_1hz": mediagen.patch_wav_header(wav, d / "rate1.wav", sample_rate=1),
    }


def one_sentence(e: BaseException) -> str:
    """The error is Kestrel's, one printable line of text."""
    assert isinstance(e, MediaError), f"{type(e).__name__}: {e}"
    text = str(e)
    text.encode("utf-8")  # printable: no lone surrogates from undecodable names
    assert text and "\n" not in text and "Traceback" not in text
    return text


def every_reader(path) -> list[str]:
    """Probe, index, decode and read audio; return the messages of the clean errors."""
    messages = []
    for read in (lambda: probe(path), lambda: frame_times(path), lambda: VideoDecoder(path).frame_at(0.1),
                 lambda: AudioReader(path).read(0, 0.5), lambda: load_mono(path)):
        try:
            read()
        except MediaError as e:
            messages.append(one_sentence(e))
    return messages


# -- odd paths ----------------------------------------------------------------------------

def test_a_name_longer_than_the_file_system_allows(tmp_path):
    path = tmp_path / ("x" * 300 + ".mp4")
    msgs = every_reader(path)
    assert len(msgs) == 5 and "304 bytes" in msgs[0] and "255" in msgs[0]


def test_a_long_path_with_names_the_file_system_allows_opens(tmp_path, made):
    folder = tmp_path / ("f" * 200) / ("g" * 200)
    folder.mkdir(parents=True)
    path = folder / ("c" * 250 + ".mp4")
    path.write_bytes(made["clip"].read_bytes())
    assert len(str(path)) > 650
    assert every_reader(path) == []


def test_a_name_that_is_not_utf8_is_refused_with_a_printable_sentence(tmp_path, made):
    raw = os.fsencode(tmp_path) + b"/clip\xff\nnew.mp4"
    with open(raw, "wb") as f:
        f.write(made["clip"].read_bytes())
    path = os.fsdecode(raw)
    msgs = every_reader(path)
    assert len(msgs) == 5
    assert "clip\\xff\\nnew.mp4" in msgs[0] and "UTF-8" in msgs[0] and "rename" in msgs[0]
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    with open(folder + b"/ok.mp4", "wb") as f:
        f.write(made["clip"].read_bytes())
    msgs = every_reader(os.fsdecode(folder + b"/ok.mp4"))
    assert len(msgs) == 5 and msgs[0].startswith("ok.mp4 is in a folder whose name is not valid UTF-8 text (byte 0xe9)")


def test_folders_pipes_empty_and_unreadable_files(tmp_path, made):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert "named pipe" in every_reader(fifo)[0]  # not "empty", and never blocks reading it
    assert "folder" in every_reader(tmp_path)[0]
    assert "empty" in every_reader(mediagen.make_zero_byte(tmp_path / "empty.mp4"))[0]
    assert "not a media file" in every_reader(mediagen.make_text_as_mp4(tmp_path / "text.mp4"))[0]
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(made["clip"].read_bytes())
    locked.chmod(0)
    msgs = every_reader(locked)
    if os.geteuid() == 0:  # root reads anything
        assert msgs == []
    else:
        assert len(msgs) == 5 and "permission denied" in msgs[0]


# -- damaged headers ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tags_mkv", "tags_mp4"])
def test_tags_that_are_not_utf8_do_not_stop_the_file_opening(made, name):
    info = probe(made[name])
    assert info.has_audio and info.duration_s == pytest.approx(1.0, abs=0.05)
    assert load_mono(made[name]).size == pytest.approx(16000, abs=800)


def test_a_stream_no_decoder_knows_is_ignored_with_a_note(made):
    info = probe(made["no_codec"])
    assert not info.has_video and info.has_audio
    assert any("codec FFmpeg cannot decode" in n for n in info.notes)
    assert [s.kind for s in info.streams] == ["unusable", "audio"]
    with pytest.raises(MediaError, match="no video stream that can be decoded"):
        VideoDecoder(made["no_codec"])
    msgs = every_reader(made["no_codec_only"])
    assert len(msgs) == 4 and "cannot be opened: its video stream uses a codec FFmpeg cannot decode" in msgs[0]


@pytest.mark.parametrize("name, words", [("ch255", "255 channels"), ("ch0", "no channels"),
                                         ("rate_2ghz", "a sample rate of 2,147,483,647 Hz"),
                                         ("rate_1hz", "a sample rate of 1 Hz (Kestrel reads 1,000 to 768,000 Hz)")])
def test_wav_headers_with_absurd_channels_or_rates(made, name, words):
    msgs = every_reader(made[name])
    assert len(msgs) == 4  # probe, decoder (no video), audio reader, load_mono; frame_times gives []
    assert words in msgs[0] and all(words in m for m in msgs[2:])


# -- absurd declared sizes -----------------------------------------------------------------

def test_a_duration_of_31688_years_is_not_believed(made):
    path = made["huge_mkv"]
    info = probe(path)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.notes == ("huge.mkv declares a duration of 31,688 years but holds 2 s of video; using 2 s.",)
    with VideoDecoder(path) as dec:
        assert dec.duration == pytest.approx(info.duration_s)
    with AudioReader(path) as r:
        assert r.duration == pytest.approx(info.duration_s)
    assert len(frame_times(path)) == 50
    assert load_mono(path).size <= 3 * 16000
    pyr = build_waveform(WaveformRequest(str(path)), HeadlessState())
    assert pyr.duration == pytest.approx(2.0, abs=0.1)


def test_aac_claiming_27_hours_gives_two_seconds_to_voice_activity(made):
    path = made["long_aac"]
    info = probe(path)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert "declares a duration of 27.8 h but holds 2 s of audio" in info.notes[0]
    res = analyze(AnalysisRequest(str(path), models=("silero-vad",)), HeadlessState())
    assert res.outputs["silero-vad"].error is None and res.media_duration < 3


class CountingDetector:
    """Counts the frames it is given; finds nothing."""

    classes = ("thing",)
    images = 0  # how many pictures all instances were given

    def __init__(self, spec, where, device, **options):
        self.device = device

    def detect(self, images):
        CountingDetector.images += len(images)
        return [[] for _ in images]


@pytest.fixture
def counting(monkeypatch):
    real = catalogue.load_catalogue()
    spec = ModelSpec(name="counting", title="Counting", task="detect", cls=f"{__name__}:CountingDetector",
                     weights={"package": "numpy", "module": "numpy", "files": []}, version="t1")
    monkeypatch.setattr(catalogue, "load_catalogue", lambda: {**real, "counting": spec})


@pytest.mark.parametrize("name", ["sparse_mp4", "sparse_mkv"])
def test_two_frames_a_million_seconds_apart_plan_what_decodes(made, counting, name):
    path = made[name]
    info = probe(path)
    assert info.duration_s == pytest.approx(1e6, rel=1e-3)  # real timestamps: the span is true
    assert "bytes of video over 11.6 days: its timestamps may be damaged." in info.notes[0]
    assert len(frame_times(path)) == 2
    seen = []

    def partial(p):  # the old plan asked for 2,000,002 frames: stop it long before that
        seen.append(len(p.frames))
        if len(seen) > 100:
            st.cancel()

    st = HeadlessState(on_partial=partial)
    CountingDetector.images = 0
    res = analyze(AnalysisRequest(str(path), models=("counting",), fps=2.0), st)
    times = [t for t, _ in res.outputs["counting"].frames]
    # ten seconds of the first frame (it stays on screen), then the second frame
    assert 2 <= len(times) <= 25 and times[0] == 0.0 and times[-1] == pytest.approx(1e6)
    assert CountingDetector.images == 2  # the model sees each distinct frame once
    assert st.progress == 1.0


def test_audio_whose_timestamps_jump_a_million_seconds(made):
    path = made["sparse_audio"]
    assert probe(path).duration_s == pytest.approx(1e6, rel=1e-3)
    x = load_mono(path)  # 10^6 s at 16 kHz would be 64 GB
    assert 16000 <= x.size <= 16000 + 600 * 16000
    assert np.abs(x[:16000]).max() > 0.3  # the tone is there
    pyr = build_waveform(WaveformRequest(str(path)), HeadlessState())
    assert 0.9 <= pyr.duration <= 2.0
    with AudioReader(path) as r:
        assert r.read(0.5, 1e9).shape == (1, 600 * 48000) and r.read(0.0, 0.5).shape == (1, 24000)


# -- the window -----------------------------------------------------------------------------

def test_the_window_opens_a_file_claiming_31688_years(qtbot, window, made):
    with qtbot.waitSignals([window.media_ready, window.player.frame_shown, window.waveform_ready], timeout=30000):
        window.open_media(str(made["huge_mkv"]))
    assert window.session.duration == pytest.approx(2.0, abs=0.1)
    assert "31,688 years" in window.statusBar().currentMessage()
    assert window.player.slider.maximum() == pytest.approx(2000, abs=100)
    window.timeline.grab()  # the ruler draws a bounded number of ticks


@pytest.mark.parametrize("duration", [1e12, 1e6, 0.0, 1e-6, float("nan"), float("inf"), -5.0])
def test_player_timeline_and_waveform_cope_with_any_duration(qtbot, window, caplog, duration):
    from core.media.decode import MediaInfo, StreamInfo
    from gui.views.timeline import tick_step

    info = MediaInfo(path="/nowhere/odd.wav", size_bytes=1, duration_s=duration, container="wav",
                     streams=(StreamInfo(index=0, kind="audio", codec="pcm_s16le", sample_rate=8000, channels=1),))
    s = window.session
    s.set_media(info)
    duration = info.duration_s  # NaN, infinite and negative durations are 0 (unknown)
    assert duration == duration and duration >= 0 and duration != float("inf")
    for t in (duration / 2, duration, 0.0):
        s.seek(t)
        assert window.player.slider.value() * window.player._unit == pytest.approx(s.position, rel=1e-3, abs=2e-3)
    s.set_view(0.0, duration)
    window.timeline.grab()
    window.waveform.grab()
    step = tick_step(max(duration, 1e-3), 1000)
    assert step * 1000 / max(duration, 1e-3) >= 80 and max(duration, 1e-3) / step <= 13
    assert not [r for r in caplog.records if r.levelno >= 40], [r.getMessage() for r in caplog.records]


READ_ALL = """
import sys
from core.media.audio import AudioReader, load_mono
from core.jobs import HeadlessState
from core.media.decode import MediaError, probe
from core.media.waveform import WaveformRequest, build_waveform
for path in sys.argv[1:]:
    try:
        probe(path)
        with AudioReader(path) as r:
            r.read(0.0, 2.0)
        load_mono(path)
        build_waveform(WaveformRequest(path), HeadlessState())
        print("read", path)
    except MediaError as e:
        print("refused", path, e)
"""


def test_audio_with_more_than_8_channels_is_never_a_crash(tmp_path, sample, made):
    """PyAV walks the planes of a frame with more than 8 channels past the end of FFmpeg's
    array (a segmentation fault): such streams are refused, such frames (damaged AAC that
    decodes as 57 channels mid-stream) skipped. Run in a child process: a crash fails the test."""
    import random
    import subprocess
    import sys

    wav12 = mediagen.patch_wav_header(made["wav"], tmp_path / "ch12.wav", channels=12)
    data = bytearray(mediagen.cut_copy(sample("bbb_6ch"), tmp_path / "6ch.mp4", 3.0).read_bytes())
    rng = random.Random(3)  # this damage makes the AAC decoder return a frame of 57 channels
    for _ in range(len(data) // 200):
        data[rng.randrange(len(data))] = rng.randrange(256)
    damaged = tmp_path / "6ch-damaged.mp4"
    damaged.write_bytes(bytes(data))
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", READ_ALL, str(wav12), str(damaged)], capture_output=True, text=True,
                       timeout=120, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"refused {wav12} ch12.wav cannot be opened: its audio stream declares 12 channels" in p.stdout
    assert f"read {damaged}" in p.stdout


def test_the_frame_plan_leaps_over_a_stretch_where_nothing_decodes():
    """Frames decode only from 30 s on (a damaged start): the plan finds them in a few tries
    and samples the rest of the range as usual."""
    from core.perception.analysis import sample_frames
    from core.media.decode import Frame

    class Decoder:
        calls = 0

        def frame_at(self, t):
            Decoder.calls += 1
            if t < 30.0:
                raise MediaError("nothing decodes here")
            n = int(t * 25)
            return Frame(time=n / 25, duration=0.04, image=np.zeros((2, 2, 3), np.uint8))

    got = [t for t, _f in sample_frames(Decoder(), 0.0, 100.0, 2.0)]
    assert got and 30.0 <= got[0] <= 60.0 and got[-1] == 99.5
    assert np.allclose(np.diff(got), 0.5) and Decoder.calls - len(got) <= 8


def _video_with_bad_tags(tmp_path: Path) -> Path:
    """A short video whose container title holds bytes that are not UTF-8."""
    dst = tmp_path / "badtags.mkv"
    with av.open(str(dst), "w") as out:
        out.metadata["title"] = "QQQQ title"
        vs = mediagen._add_video_stream(out, "libx264", 25, (160, 120), None, False, None)
        mediagen._write_video(out, vs, 1.0, 25, (160, 120), False)
    data = dst.read_bytes()
    assert data.count(b"QQQQ") == 1
    dst.write_bytes(data.replace(b"QQQQ", b"\xff\xfe\xc3\x28"))
    return dst


def test_readers_outside_core_media_take_tags_that_are_not_utf8(tmp_path):
    """Shot detection and the chat meter's human-quality stream open files themselves: a
    title tag that is not UTF-8 must not stop them (it raised UnicodeDecodeError)."""
    from core.chat.encoder import human_quality_kbps
    from core.jobs import HeadlessState
    from core.tagging.shots import detect_shots

    path = _video_with_bad_tags(tmp_path)
    with pytest.raises(UnicodeDecodeError):  # the file really carries the damage
        av.open(str(path)).close()
    assert detect_shots(str(path), HeadlessState())
    assert human_quality_kbps(str(path), preset="ultrafast") > 0
