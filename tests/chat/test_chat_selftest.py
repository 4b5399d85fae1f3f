"""The chat self-test (accuracy against kbps, text questions flagged) and the headless command,
both with the real embedded LLM on the real bus clip."""
from __future__ import annotations

import socket

import pytest

from core.chat.evidence import perceive_file
from core.chat.history import load_chat
from core.chat.selftest import (LADDER, QUESTIONS, Clip, SelfTestRequest, format_report, is_correct,
                                run_selftest)
from core.cli import command
from core.jobs import HeadlessState

cmd_chat = command("chat")  # the command as main.py runs it


def test_accuracy_per_kbps_with_a_warning_for_text(qwen_chat, bus_clip):
    log, errors = perceive_file(str(bus_clip), models=("ssd-mobilenet-v2-coco", "rapidocr"))
    assert not errors
    qs = [q for q in QUESTIONS if q.clip == "bus" and q.question != "Is there a dog?"]
    assert [q.needs_text for q in qs] == [False, False, True]
    partials = []
    rep = run_selftest(SelfTestRequest(qwen_chat, {"bus": Clip(str(bus_clip), log)}, questions=qs,
                                       ladder=(LADDER[0], LADDER[-1]), max_tokens=40),
                       HeadlessState(on_partial=partials.append))
    assert len(partials) == 9 and rep.baseline is not None
    assert rep.baseline.accuracy == 1.0, [(r.qa.question, r.text) for r in rep.baseline.results]
    top, bottom = rep.rungs
    assert top.accuracy == 1.0 and rep.agreement(top) == 1.0, [(r.qa.question, r.text) for r in top.results]
    assert bottom.kbps < top.kbps < rep.human_kbps["bus"] / 10
    assert bottom.accuracy <= top.accuracy
    assert [p[0] for p in rep.points()] == [top.kbps, bottom.kbps]
    assert rep.saturation() in rep.rungs
    assert "reading text" in rep.warnings[0]
    table = format_report(rep)
    assert "uncompressed" in table and "160/crf48" in table and "human-quality" in table


def test_answer_matching():
    q = next(q for q in QUESTIONS if q.question == "Is there a bus?")
    assert is_correct("Yes: at [00:02] perception sees 1 bus.", q)
    assert not is_correct("No, there is not a bus.", q)


def test_the_headless_command(bus_clip, tmp_path, capsys):
    project = tmp_path / "chat.kestrel"
    rc = cmd_chat([str(bus_clip), "--ask", "Is there a bus?", "--at", "2", "--window", "3",
                   "--project", str(project), "--max-tokens", "30"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.lower().startswith("yes"), out
    assert "[00:02] → 2 s" in out and "kbps (human-quality H.264 of the same frames:" in out
    assert "latency: encode" in out
    from core.store.project import Project
    with Project.open(project) as p:
        [media] = p.list_media()
        assert load_chat(p, media.id)[0]["question"] == "Is there a bus?"


def test_the_headless_command_with_a_server_that_is_down(bus_clip, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = cmd_chat([str(bus_clip), "--ask", "Is there a bus?", "--server", f"http://127.0.0.1:{port}",
                   "--model", "llava", "--window", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "connection refused" in err
    assert cmd_chat(["/no/such/file.mp4", "--ask", "x"]) == 1


def test_the_headless_command_on_a_live_stream(bus_clip, capsys):
    """A real clip served as a live TCP stream (tests/livesender.py): watched for a few seconds with
    the detector running, then asked about."""
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "livesender.py"), str(bus_clip),
                               str(port), "--loop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc = cmd_chat([f"tcp://127.0.0.1:{port}", "--ask", "Is there a bus?", "--listen", "3", "--window", "3",
                       "--max-tokens", "30"])
    finally:
        sender.terminate()
        sender.wait(10)
    out = capsys.readouterr().out
    assert rc == 0 and out.lower().startswith("yes"), out
    assert "kbps" in out and "the model saw" in out
