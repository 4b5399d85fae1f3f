"""Live sources: a real clip served as a TCP stream on localhost, dropped and restarted."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.media.live import LiveError, LiveSource, RingBuffer

HERE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(clip, port) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "livesender.py"), str(clip), str(port), "--loop"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_file_as_live_is_paced_and_buffered(media_dir):
    src = LiveSource(str(media_dir / "clip.mp4"))
    ring = RingBuffer(seconds=1.0)
    times, walls = [], []
    for c in src.chunks():
        ring.push(c)
        if c.kind == "video":
            times.append(c.time)
            walls.append(c.wall)
    assert len(times) == 75 and times == sorted(times)
    # real-time pacing: 3 s of media took about 3 s of wall time
    assert walls[-1] - walls[0] == pytest.approx(times[-1] - times[0], abs=0.3)
    a, b = ring.span
    assert b == pytest.approx(times[-1]) and b - a <= 1.0 + 1e-6
    audio, sr = ring.audio(a, b)
    assert sr == 48000 and audio.shape[1] > 0


def test_network_stream_reconnects(media_dir):
    port = free_port()
    sender = serve(media_dir / "clip.mp4", port)
    statuses: list[str] = []
    src = LiveSource(f"tcp://127.0.0.1:{port}", backoff=(0.2, 1.0), open_timeout=2.0, read_timeout=2.0,
                     give_up_s=20.0, on_status=statuses.append)
    seen = {"before": 0, "after": 0}
    restarted = threading.Event()
    stop = threading.Event()
    result = {}

    def consume():
        try:
            for c in src.chunks(stop.is_set):
                if c.kind == "video":
                    key = "after" if restarted.is_set() and src.reconnects else "before"
                    seen[key] += 1
                    result.setdefault(key + "_t", c.time)
                    if seen["before"] == 20 and not restarted.is_set():
                        sender.kill()
                        sender.wait()
                        # the camera comes back: a new sender on the same port
                        result["sender"] = serve(media_dir / "clip.mp4", port)
                        restarted.set()
                    if seen["after"] >= 10:
                        stop.set()
        except Exception as e:  # reported to the test thread
            result["error"] = e

    th = threading.Thread(target=consume)
    th.start()
    th.join(60)
    stop.set()
    th.join(5)
    for p in (sender, result.get("sender")):
        if p is not None:
            p.kill()
            p.wait()
    assert "error" not in result, result.get("error")
    assert seen["before"] >= 20 and seen["after"] >= 10, (seen, statuses)
    assert any("reconnect" in s for s in statuses), statuses
    assert result["after_t"] > result["before_t"]  # the stream clock kept running


def test_a_camera_that_never_connects_gives_up_clearly():
    port = free_port()
    src = LiveSource(f"tcp://127.0.0.1:{port}", backoff=(0.1, 0.2), open_timeout=0.5, give_up_s=1.0)
    with pytest.raises(LiveError, match="no connection"):
        for _ in src.chunks():
            pass


def test_ring_buffer_writes_an_event_clip(media_dir, tmp_path):
    import av
    ring = RingBuffer(seconds=10)
    for c in LiveSource(str(media_dir / "clip.mp4"), realtime=False).chunks():
        ring.push(c)
    out = ring.write_clip(1.0, 2.0, tmp_path / "event.mp4", fps=25)
    with av.open(str(out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert 20 <= n <= 27
    t, img = ring.frame_at(1.5)
    assert t <= 1.5 and img.shape[2] == 3 and np.asarray(img).mean() > 0
