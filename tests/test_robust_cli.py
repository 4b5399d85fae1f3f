"""Issue #15, command lines: every bad argument is one line and exit 2 (never a traceback, never
ignored); Kestrel's errors reach the terminal in one way; ``chat`` with no frames is an error, not
an answer; models that do not apply to a file (no audio, no video) are skipped, not failed.

The bad command lines run in-process through ``main.main`` (a few as real subprocesses, to show
that no traceback reaches a terminal); the media are short clips from ``tests/mediagen.py``.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import main
import mediagen

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLIP_S = 2.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("robust-cli")
    return {"av": mediagen.make_clip(d / "av.mp4", duration=CLIP_S),
            "video": mediagen.make_video_only(d / "video_only.mp4", duration=CLIP_S),
            "audio": mediagen.make_audio_only(d / "audio.wav", duration=CLIP_S)}


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """Kestrel's data folder (the log file lives there) in the test's own tmp folder."""
    d = tmp_path / "data"
    monkeypatch.setenv("KESTREL_DATA_DIR", str(d))
    monkeypatch.setenv("KESTREL_CONFIG_DIR", str(tmp_path / "config"))
    return d


def run_main(argv: list[str]) -> int:
    try:
        return main.main(argv)
    except SystemExit as e:  # argparse
        return e.code if isinstance(e.code, int) else 1


# -- 1. bad command lines: one line, exit 2 ------------------------------------------------------------

A = ["analyze", "{av}", "--project", "{proj}"]
N = ["anomalies", "{av}"]
S = ["select", "{av}", "--query", "a bus"]
C = ["chat", "{av}", "--ask", "is anyone there?"]
T = ["tag", "--project", "{proj}"]

BAD = [
    # analyze
    (A + ["--fps", "0"], "--fps"),
    (A + ["--fps", "nan"], "--fps"),
    (A + ["--fps", "inf"], "--fps"),
    (A + ["--fps", "1e9"], "--fps"),
    (A + ["--fps", "-1"], "--fps"),
    (A + ["--fps", "two"], "--fps"),
    (A + ["--fps", "1e-300"], "--fps"),  # positive, but a frame's step would be 1e300 s
    (A + ["--end", "nan"], "--end"),
    (A + ["--end", "inf"], "--end"),
    (A + ["--start", "-1"], "--start"),
    (A + ["--start", "1e400"], "--start"),
    (A + ["--start", "5"], "--start"),  # past the end of the 2 s clip: known only after probing it
    (A + ["--start", "1", "--end", "0.5"], "--end"),
    (A + ["--start", "1", "--end", "1"], "--end"),
    (A + ["--models", ""], "--models"),
    (A + ["--models", " , "], "--models"),
    (A + ["--models", "ssd-mobilenet-v2-coco,no-such-model"], "--models"),
    (A + ["--models", "minilm"], "--models"),  # a text embedder: nothing to run over a file
    (A + ["--models", "qwen2.5-0.5b-chat"], "--models"),
    (A + ["--weights", "no-such-model=/tmp/x.pt"], "--weights"),
    (A + ["--weights", "yolo-user"], "--weights"),
    (A + ["--weights", "=/tmp/x.pt"], "--weights"),
    (A + ["--weights", "ssd-mobilenet-v2-coco=/tmp/x.pt"], "--weights"),  # takes no weights of yours
    (A + ["--weights", "yolo-user=/tmp/x.pt"], "--weights"),  # not in --models: would go unused
    (A + ["--device", "cuda"], "--device"),
    (A + ["--device", "tpu"], "--device"),
    # anomalies
    (N + ["--first-minutes", "nan"], "--first-minutes"),
    (N + ["--first-minutes", "-1"], "--first-minutes"),
    (N + ["--first-minutes", "inf"], "--first-minutes"),
    (N + ["--clips", "-1"], "--clips"),
    (N + ["--clips", "2.5"], "--clips"),
    (N + ["--sensitivity", "nan"], "--sensitivity"),
    (N + ["--sensitivity", "1.5"], "--sensitivity"),
    (N + ["--window", "0"], "--window"),
    (N + ["--window", "inf"], "--window"),
    (N + ["--normal", "5-1"], "--normal"),
    (N + ["--normal", "nan-5"], "--normal"),
    (N + ["--normal", "100-200"], "--normal"),  # past the end of the file
    (N + ["--experts", "dynamic", "--expert", "budget=NaN"], "--expert"),
    (N + ["--experts", "dynamic", "--expert", "budget=1e999"], "--expert"),
    (N + ["--experts", "topk", "--expert", "n_experts=1e9"], "--expert"),
    # select
    (S + ["--example-time", "nan"], "--example-time"),
    (S + ["--example-time", "-1"], "--example-time"),
    (S + ["--example-time", "100"], "--example-time"),  # past the end of the file
    (S + ["--k", "0"], "--k"),
    (S + ["--k", "-1"], "--k"),
    (S + ["--k", "1e9"], "--k"),
    (S + ["--budget-share", "0"], "--budget-share"),
    (S + ["--budget-share", "nan"], "--budget-share"),
    (S + ["--budget-share", "2"], "--budget-share"),
    (S + ["--budget-frames", "0"], "--budget-frames"),
    (S + ["--seed", "-1"], "--seed"),
    (S + ["--scorer", "no-such-scorer"], "--scorer"),
    (S + ["--weights", "/tmp/folder"], "--weights"),  # the embedded scorer takes none
    # chat
    (C + ["--at", "nan"], "--at"),
    (C + ["--at", "-1"], "--at"),
    (C + ["--at", "100"], "--at"),  # past the end of the file
    (C + ["--window", "0"], "--window"),
    (C + ["--window", "nan"], "--window"),
    (C + ["--listen", "inf"], "--listen"),
    (C + ["--listen", "-3"], "--listen"),
    (C + ["--connect-timeout", "nan"], "--connect-timeout"),
    (C + ["--max-side", "0"], "--max-side"),
    (C + ["--crf", "99"], "--crf"),
    (C + ["--max-tokens", "0"], "--max-tokens"),
    (C + ["--timeout", "-1"], "--timeout"),
    (C + ["--server", "http://127.0.0.1:9/v1"], "--server"),  # no --model
    (["chat", "{av}", "--ask", "  "], "--ask"),
    # tag
    (T + ["--search", "a bus", "--k", "0"], "--k"),
    (T + ["--search", "a bus", "--k", "nan"], "--k"),
    (T + ["{folder}", "--workers", "0"], "--workers"),
    (T + ["{folder}", "--device", "cuda"], "--device"),
    (T + ["--search", " "], "--search"),
    # models, and the window's own command line
    (["models", "--fps", "2"], "--fps"),
    (["{av}", "--seek", "nan"], "--seek"),
    (["{av}", "--seek", "-1"], "--seek"),
]


def _fill(argv: list[str], clips: dict[str, Path], tmp_path: Path) -> list[str]:
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    return [a.format(av=clips["av"], proj=tmp_path / "p.kestrel", folder=folder) for a in argv]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if "error:" in ln or ln.startswith("kestrel:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv,option", BAD, ids=[" ".join(a[-2:]) + f" [{i}]" for i, (a, _o) in enumerate(BAD)])
def test_a_bad_command_line_is_one_line_and_exit_2(argv, option, clips, tmp_path, data_dir, capsys, monkeypatch):
    from models import devices

    monkeypatch.setattr(devices, "any_cuda", lambda: (False, "no CUDA (test)"))  # the same answer on a GPU machine
    rc = run_main(_fill(argv, clips, tmp_path))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err + out
    assert option in _one_error_line(err), err
    assert not (tmp_path / "p.kestrel").exists()  # refused before anything was created


def test_the_bad_lines_cover_every_command():
    commands = {argv[0] for argv, _o in BAD}
    assert {"analyze", "anomalies", "select", "chat", "tag", "models"} <= commands and len(BAD) >= 40


@pytest.mark.parametrize("argv,option", [
    (A + ["--fps", "nan"], "--fps"),
    (A + ["--start", "5"], "--start"),
    (N + ["--first-minutes", "-1"], "--first-minutes"),
    (S + ["--example-time", "100"], "--example-time"),
    (C + ["--at", "inf"], "--at"),
])
def test_no_traceback_reaches_the_terminal(argv, option, clips, tmp_path, data_dir):
    r = subprocess.run([PY, str(ROOT / "main.py"), *_fill(argv, clips, tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert option in _one_error_line(r.stderr)


def test_checking_the_arguments_does_not_import_torch(clips, tmp_path, data_dir):
    """--device is checked with torch only when CUDA is asked for: a bad command line stays cheap
    (this one passes argparse and the device check, and is refused after probing the file)."""
    code = ("import sys, main\n"
            f"rc = main.main(['analyze', {str(clips['av'])!r}, '--project', 'p', '--start', '5'])\n"
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([PY, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr)
    assert "--start 5 s is past the end of av.mp4" in r.stderr


def test_good_numbers_pass():
    from core import cliargs

    assert cliargs.fps("120") == 120.0 and cliargs.fps("0.5") == 0.5
    assert cliargs.seconds("0") == 0.0 and cliargs.integer(0, 51)("51") == 51
    assert cliargs.weights_pair("yolo-user=/m/best.pt") == ("yolo-user", "/m/best.pt")
    assert cliargs.model_list()("ssd-mobilenet-v2-coco, silero-vad,") == ("ssd-mobilenet-v2-coco", "silero-vad")


# -- 2. one way to report errors ------------------------------------------------------------------------

def test_every_command_line_error_goes_through_print_error():
    files = [ROOT / "main.py", ROOT / "core/cli.py", ROOT / "core/perception/cli.py", ROOT / "core/anomaly/cli.py",
             ROOT / "core/chat/cli.py", ROOT / "core/tagging/cli.py", ROOT / "core/focus/cli.py"]
    pasted = [f"{f.relative_to(ROOT)}:{i}" for f in files
              for i, line in enumerate(f.read_text().splitlines(), 1) if 'kestrel: {' in line or 'f"kestrel:' in line]
    assert pasted == []


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log(data_dir, capsys, monkeypatch):
    import core.cli

    def boom(args):
        raise RuntimeError("the flux capacitor\nbroke")

    monkeypatch.setattr(core.cli, "list_models", boom)
    assert main.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("kestrel: an unexpected error (RuntimeError: the flux capacitor broke); details in ")
    log = data_dir / "kestrel.log"
    assert str(log) in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in boom" in text and "kestrel models failed" in text


def test_kestrel_errors_and_interrupts_are_one_line(data_dir, capsys, monkeypatch):
    import core.cli
    from core.media.decode import MediaError

    def media_error(args):
        raise MediaError("x.mp4 is damaged: its header cannot be read.")

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.cli, "list_models", media_error)
    assert main.main(["models"]) == 1
    assert capsys.readouterr().err == "kestrel: x.mp4 is damaged: its header cannot be read.\n"
    monkeypatch.setattr(core.cli, "list_models", interrupt)
    assert main.main(["models"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and [ln for ln in err.splitlines() if ln] == ["kestrel: interrupted; stopped"]
    assert not (data_dir / "kestrel.log").exists()  # expected errors leave no traceback anywhere


def test_a_traceback_logged_during_a_command_stays_in_the_log(data_dir, capsys, monkeypatch):
    """core.media.decode logs a failed probe with exc_info: without handlers Python's last resort would
    print that traceback on the terminal; a command prints one line and the log keeps it."""
    import logging

    import core.cli

    def logs(args):
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("core.media.decode").warning("probing x.mp4 failed", exc_info=True)
        return 0

    monkeypatch.setattr(core.cli, "list_models", logs)
    root = logging.getLogger()
    before = list(root.handlers)
    assert main.main(["models"]) == 0
    assert capsys.readouterr().err == "warning: probing x.mp4 failed\n"
    text = (data_dir / "kestrel.log").read_text()
    assert "WARNING core.media.decode: probing x.mp4 failed" in text and "KeyError: 'missing'" in text
    assert root.handlers == before  # the command's handlers are gone with it


def test_a_reader_that_goes_away_is_no_error(tmp_path):
    """``kestrel … | head -1``: the pipe closes under a long listing; no traceback, no "Exception
    ignored" at exit."""
    code = ("import sys, main, core.cli\n"
            "def listing(args):\n"
            "    for i in range(200000):\n"
            "        print(f'line {i}')\n"
            "    return 0\n"
            "core.cli.list_models = listing\n"
            "sys.exit(main.main(['models']))\n")
    p = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "KESTREL_DATA_DIR": str(tmp_path / "data")})
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 1 and err == ""


# -- 3. chat with no frames ------------------------------------------------------------------------------

def _chat(source: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(ROOT / "main.py"), "chat", source, "--ask", "Is anyone at the gate?",
                           "--connect-timeout", "2", "--listen", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "KESTREL_DATA_DIR": str(data_dir)})


def _assert_nothing_asked(r: subprocess.CompletedProcess, source: str) -> None:
    assert r.returncode not in (0, 2), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith(f"kestrel: no frames could be read from {source} (") and line.endswith("nothing was asked")
    assert r.stdout == ""  # no answer, no "No one there.", no stream report


def test_chat_on_a_dead_port_asks_nothing(data_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for source in (f"rtsp://127.0.0.1:{port}/x", f"http://127.0.0.1:{port}/x"):
        r = _chat(source, data_dir)
        _assert_nothing_asked(r, source)
        assert "Connection refused" in r.stderr.splitlines()[-1]


def test_chat_on_a_server_that_never_answers_gives_up(data_dir):
    with socket.socket() as s:  # accepts the connection (the kernel's backlog), never says a word
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        source = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        _assert_nothing_asked(_chat(source, data_dir), source)


def test_chat_on_a_missing_camera_or_file_asks_nothing(data_dir, tmp_path):
    if Path("/dev/video9").exists():
        pytest.skip("this machine has a /dev/video9")
    for source in ("9", "/dev/video9", str(tmp_path / "gone.mp4")):
        _assert_nothing_asked(_chat(source, data_dir), source)


def test_chat_on_a_file_without_pictures_asks_nothing(clips, data_dir, capsys):
    """An audio-only file: no frame to show the model, so no answer about a picture nobody saw."""
    rc = main.main(["chat", str(clips["audio"]), "--ask", "Is anyone at the gate?"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert _one_error_line(err) == (f"kestrel: no frames could be read from {clips['audio']} "
                                    "(it has no video stream); nothing was asked")


# -- 4. files without audio, files without video ------------------------------------------------------

@pytest.mark.parametrize("kind,skipped,ran", [
    ("video", ("silero-vad", "whisper-tiny"), ("ssd-mobilenet-v2-coco", "mtcnn-faces")),
    ("audio", ("ssd-mobilenet-v2-coco", "mtcnn-faces"), ("silero-vad", "whisper-tiny")),
])
def test_models_that_do_not_apply_are_skipped_not_failed(kind, skipped, ran, clips, tmp_path, data_dir, capsys):
    from core.perception.analysis import DEFAULT_MODELS
    from core.store.project import Project

    assert set(skipped + ran) == set(DEFAULT_MODELS)
    proj = tmp_path / "p.kestrel"
    rc = main.main(["analyze", str(clips[kind]), "--project", str(proj)])  # the default models
    out, err = capsys.readouterr()
    assert rc == 0, err
    missing = "audio track" if kind == "video" else "video"
    for name in skipped:
        assert f"{name}: skipped — {clips[kind].name} has no {missing}" in out
    for name in ran:
        assert re.search(rf"^{name}: \d+ results in .* \(run #\d+\)$", out, re.M), out
    assert "FAILED" not in out + err and "Traceback" not in err
    with Project.open(proj) as p:
        [media] = p.list_media()
        runs = p.list_runs(media.id)
        # nothing stored for what did not apply (a file that was listened to also gets its loud sounds)
        derived = ("loud-sounds",) if kind == "audio" else ()
        assert sorted(r.producer for r in runs) == sorted(ran + derived)
        assert {r.status for r in runs} == {"ok"}
    # the next run reuses what ran and skips the rest again: still exit 0
    assert main.main(["analyze", str(clips[kind]), "--project", str(proj)]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: reusing stored results" in out for n in ran) and all(f"{n}: skipped" in out for n in skipped)


def test_a_file_with_audio_still_runs_the_audio_models(clips):
    from core.perception.analysis import AnalysisRequest, analyze
    from core.jobs import HeadlessState

    res = analyze(AnalysisRequest(str(clips["av"]), models=("silero-vad",)), HeadlessState())
    assert res.skipped == {} and res.outputs["silero-vad"].error is None
