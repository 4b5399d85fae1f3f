"""Measure live alert latency over a real stream: a clip served by ``livesender.py`` on
localhost, its wall clock known, so that "the event happened on the wire at W, the alert
came at A" gives the latency A - W. Used by ``test_anomaly_live.py`` and ``bench/anomaly.py``.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sender:
    """``livesender.py CLIP PORT --start S`` as a context manager; :meth:`wall_of` maps a
    second of the clip to the wall-clock time it was due on the wire."""

    def __init__(self, clip: Path | str, start: float = 0.0, port: int | None = None) -> None:
        self.clip, self.start, self.port = str(clip), float(start), port or free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.t0: float | None = None
        self._ready = threading.Event()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Sender":
        self.proc = subprocess.Popen([sys.executable, str(HERE / "livesender.py"), self.clip, str(self.port),
                                      "--start", str(self.start)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("t0 "):
                self.t0 = float(line.split()[1])
                self._ready.set()

    def wall_of(self, clip_second: float, timeout: float = 10.0) -> float:
        if not self._ready.wait(timeout):
            raise RuntimeError("the sender never had a client")
        assert self.t0 is not None
        return self.t0 + clip_second - self.start

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
