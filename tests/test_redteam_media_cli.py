"""Red team (#15): damaged media and bad command lines through the commands other than
``analyze`` (anomalies, select, tag, chat), each as a subprocess where a crash would kill
pytest: no traceback, no hang, no signal, exit 0 with results or 1/2 with one ``kestrel:`` line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import mediagen

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def kestrel(args: list[str], tmp_path: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "KESTREL_DATA_DIR": str(tmp_path / "data"), "KESTREL_CONFIG_DIR": str(tmp_path / "config"),
           "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([PY, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, **kw)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kestrel:") or "error:" in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


def pcm_wav(path: Path, channels: int, rate: int = 16000, seconds: float = 2.0) -> Path:
    x = np.random.default_rng(0).integers(-3000, 3000, (int(rate * seconds), channels)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return path


# -- 8 audio channels: PyAV walks a 9th plane of an 8-channel planar frame (a segfault) --------------

def test_eight_channel_audio_reads_without_touching_planes(tmp_path):
    """In a subprocess: before the fix this segfaulted (``anomalies`` on a 7.1 PCM WAV)."""
    wav = pcm_wav(tmp_path / "eight.wav", 8)
    code = ("import sys, wave, numpy as np\n"
            "from core.media.audio import AudioReader\n"
            f"r = AudioReader({str(wav)!r})\n"
            "a = np.concatenate([b.samples for b in r.blocks()], axis=1)\n"
            f"w = wave.open({str(wav)!r})\n"
            "x = np.frombuffer(w.readframes(w.getnframes()), '<i2').reshape(-1, 8).T / 32768.0\n"
            "print(a.shape, bool(np.allclose(a, x, atol=1e-6)))\n")
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["(8,", "32000)", "True"], r.stdout


def test_a_live_source_with_eight_channels_reads_them(tmp_path):
    """File ▸ Open Stream / chat on a live source: the live reader resampled to 8 planes and read
    them plane by plane (the same segfault); in a subprocess."""
    wav = pcm_wav(tmp_path / "eight.wav", 8)
    code = ("from core.media.live import LiveSource\n"
            f"chunks = [c for c in LiveSource({str(wav)!r}, realtime=False).chunks() if c.kind == 'audio']\n"
            "print(sum(c.samples.shape[1] for c in chunks), {c.samples.shape[0] for c in chunks})\n")
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["32000", "{8}"], r.stdout


def test_samples_of_packed_and_planar_frames():
    import av

    from core.media.audio import samples_of

    x = np.arange(8 * 6, dtype=np.float32).reshape(6, 8)  # 6 samples, 8 channels, interleaved
    packed = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="7.1")
    assert np.array_equal(samples_of(packed), x.T)
    planar = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T[:2]), format="fltp", layout="stereo")
    assert np.array_equal(samples_of(planar), x.T[:2])


def test_eight_channel_audio_mixes_to_mono_as_ffmpeg_does(tmp_path):
    """load_mono (tagging, anomalies, VAD) built an 8-plane frame: PyAV filled a 9th plane
    (IndexError: tag reported the file FAILED; anomalies said its audio cannot be decoded)."""
    import av

    from core.media.audio import load_mono

    wav = pcm_wav(tmp_path / "eight.wav", 8)
    x = load_mono(wav, 16000)
    rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(str(wav)) as c:
        y = np.concatenate([o.to_ndarray().reshape(-1) for p in c.demux(audio=0) for f in p.decode()
                            for o in rs.resample(f)])
    assert x.shape == y.shape == (32000,) and np.allclose(x, y, atol=1e-6)


def test_anomalies_on_eight_channel_audio(tmp_path):
    r = kestrel(["anomalies", str(pcm_wav(tmp_path / "eight.wav", 8))], tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and " events (sensitivity" in r.stdout
    assert "cannot be decoded" not in r.stderr and "vision only" not in r.stderr


# -- two frames 10^6 s apart: a window a second would be a million windows ------------------------------

@pytest.mark.parametrize("name", ["sparse.mp4", "sparse.mkv"])
def test_anomalies_on_a_sparse_file_ends_with_a_sentence(name, tmp_path):
    """Before: 1,000,000 windows of one held picture (about 3 a second: days)."""
    f = mediagen.make_sparse_video(tmp_path / name)
    r = kestrel(["anomalies", str(f)], tmp_path, timeout=90)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    line = one_line(r)
    assert line.startswith(f"kestrel: {name} spreads ") and "timestamps are likely damaged" in line


def test_a_short_range_of_a_sparse_file_is_still_looked_at(tmp_path):
    from core.anomaly.pipeline import media_range
    from core.media.decode import probe

    info = probe(mediagen.make_sparse_video(tmp_path / "sparse.mp4"), with_hash=False)
    assert media_range(info, 0.0, 60.0) == (0.0, 60.0)


# -- words that are not UTF-8 (a terminal in Latin-1): refused before any model loads --------------------

@pytest.mark.parametrize("argv,option", [
    (["select", "{clip}", "--query", "caf\udce9"], "--query"),
    (["chat", "{clip}", "--ask", "caf\udce9?"], "--ask"),
    (["tag", "--project", "{proj}", "--search", "caf\udce9"], "--search"),
])
def test_words_that_are_not_utf8_are_a_usage_error(argv, option, tmp_path, monkeypatch, capsys):
    """Before: select decoded and scored for a minute, then 'No frame could be scored … TypeError:
    TextEncodeInput must be …'."""
    import main

    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))
    clip = tmp_path / "missing.mp4"  # never reached: the argument is refused first
    argv = [a.format(clip=clip, proj=tmp_path / "p.kestrel") for a in argv]
    with pytest.raises(SystemExit) as e:
        main.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "error:" in ln]
    assert option in line and "not UTF-8" in line
    assert not (tmp_path / "p.kestrel").exists()


# -- where the output cannot go ----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["{file}/x.png", "{tmp}/missing/x.png", " "])
def test_a_screenshot_into_no_folder_is_a_usage_error(where, tmp_path, monkeypatch, capsys):
    """Before: the window opened, loaded the file, then printed 'could not write …' without
    ``kestrel:`` (exit 1)."""
    import main

    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        main.main([str(tmp_path / "clip.mp4"), "--screenshot", where.format(file=tmp_path / "file", tmp=tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "error:" in ln]
    assert "--screenshot" in line


def test_tagging_a_folder_with_nothing_to_tag_says_so(tmp_path, monkeypatch, capsys):
    import main

    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not media")
    rc = main.main(["tag", str(folder), "--project", str(tmp_path / "p.kestrel")])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err
    assert f"skipped {folder / 'readme.txt'}: " in out
    assert [ln for ln in err.splitlines() if ln.startswith("kestrel:")] == [
        f"kestrel: nothing in {folder} could be tagged (1 skipped, 0 failed)"]


@pytest.mark.parametrize("argv", [
    ["anomalies", "{clip}", "--export", "{file}"],
    ["select", "{clip}", "--query", "a bus", "--export", "{file}/sub"],
    ["tag", "--project", "{proj}", "--export", "{file}"],
    ["tag", "--project", "{proj}", "--export", ""],
])
def test_an_export_folder_that_cannot_be_is_refused_before_the_work(argv, tmp_path, monkeypatch, capsys):
    """Before: anomalies/select decoded and scored for a minute, then 'File exists: …'."""
    import main

    monkeypatch.setenv("KESTREL_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "file").write_text("x")
    argv = [a.format(clip=tmp_path / "clip.mp4", file=tmp_path / "file", proj=tmp_path / "p.kestrel") for a in argv]
    with pytest.raises(SystemExit) as e:
        main.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "error:" in ln]
    assert "argument --export:" in line
    assert not (tmp_path / "p.kestrel").exists()


def test_the_window_reports_a_file_it_cannot_open_as_kestrel(tmp_path):
    """--screenshot of /dev/zero: was 'error: Cannot open …', the only line without ``kestrel:``."""
    r = kestrel(["/dev/zero", "--screenshot", str(tmp_path / "s.png")], tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    assert one_line(r) == "kestrel: Cannot open /dev/zero: zero is a device, not a media file."


def test_an_export_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """As a user (root writes anywhere, so the permission is faked): a read-only folder, or a new
    folder under one, is refused when the command line is read."""
    import argparse

    from core import cliargs

    assert cliargs.out_folder(str(tmp_path / "new" / "sub")) == str(tmp_path / "new" / "sub")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    for where in (tmp_path, tmp_path / "new" / "sub"):
        with pytest.raises(argparse.ArgumentTypeError, match="cannot be written to"):
            cliargs.out_folder(str(where))


def test_an_error_after_a_progress_bar_starts_its_own_line(tmp_path):
    """select with a scorer folder that is not there: the bar was drawn, then 'kestrel: …' was
    written on the bar's line (after 40 blanks), not on a line of its own."""
    clip = mediagen.make_clip(tmp_path / "c.mp4", duration=1.0, size=(160, 120))
    r = kestrel(["select", str(clip), "--query", "a bus", "--scorer", "clip-user", "--weights",
                 str(tmp_path / "gone")], tmp_path)
    assert r.returncode == 1, r.stderr
    assert any(ln.startswith("kestrel: ") and "gone" in ln for ln in r.stderr.split("\n")), repr(r.stderr)


# -- a WAV followed by gigabytes of nothing ----------------------------------------------------------------

def test_a_wav_with_a_huge_tail_is_read_up_to_its_chunks(tmp_path):
    """A 2 s WAV then 10 GB of zeros (truncate -s 10G): FFmpeg's WAV demuxer walked the zeros 8
    bytes at a time looking for chunks, on every open: 20 s a probe, anomalies 113 s. Now the
    file is seen up to its RIFF/data chunks (and 1 MB for footers); the samples are the same."""
    from core.media.audio import load_mono
    from core.media.decode import WAV_TAIL_SLACK, _wav_riff_end, probe

    wav = pcm_wav(tmp_path / "a.wav", 2, rate=16000)
    big = tmp_path / "big.wav"
    big.write_bytes(wav.read_bytes())
    os.truncate(big, 2 << 30)  # sparse: no disk used
    assert _wav_riff_end(wav) is None  # an ordinary WAV opens as before
    assert _wav_riff_end(big) == wav.stat().st_size + WAV_TAIL_SLACK
    info = probe(big)
    assert info.duration_s == pytest.approx(2.0) and info.audio.channels == 2
    assert np.array_equal(load_mono(big, 16000), load_mono(wav, 16000))
    r = kestrel(["anomalies", str(big), "--export", str(tmp_path / "out")], tmp_path, timeout=120)
    assert r.returncode == 0 and " events (sensitivity" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "out" / "events.csv").exists()


def test_shot_detection_and_clip_export_open_files_as_the_readers_do(tmp_path, monkeypatch):
    """Shot detection (tag) and event clips opened files with av.open themselves (the WAV tail
    above cost them 20 s each); they go through core.media.decode._open now."""
    import core.media.decode
    from core.anomaly.events import AnomalyEvent
    from core.anomaly.export import export_event_clips
    from core.jobs import HeadlessState
    from core.tagging.shots import detect_shots

    opened = []
    real = core.media.decode._open
    monkeypatch.setattr(core.media.decode, "_open", lambda p: opened.append(sys._getframe(1).f_globals["__name__"]) or real(p))
    clip = mediagen.make_clip(tmp_path / "c.mp4", duration=1.0, size=(160, 120))
    detect_shots(str(clip), HeadlessState())
    assert "core.tagging.shots" in opened  # not only probe's open
    export_event_clips(str(clip), [AnomalyEvent(start=0.2, end=0.6, peak=0.9, peak_time=0.4)], tmp_path / "out")
    assert "core.anomaly.export" in opened
