"""The chat panel's views: the self-test window (accuracy against kbps, what broke first, cancel)
and the live bitrate meter (its live processors are tested Qt-free in tests/chat/test_chat_live.py).

The self-test itself is tested with the real embedded LLM in test_chat_selftest.py; here a
small scripted model stands in for the LLM only, so the window around it is tested on real
runs (real clip, real encoder, real detector on the decoded frames) in seconds.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from core.chat.grounding import PerceptionLog
from core.chat.selftest import LADDER, QUESTIONS, UNCOMPRESSED, Clip, QAResult, RungResult, SelfTestReport

BUS_Q = next(q for q in QUESTIONS if q.question == "Is there a bus?")
PEOPLE_Q = next(q for q in QUESTIONS if q.question.startswith("How many people"))
TEXT_Q = next(q for q in QUESTIONS if q.needs_text and q.clip == "bus")
DOG_Q = next(q for q in QUESTIONS if q.question == "Is there a dog?")


class ScriptedLLM:
    """Stands in for the LLM: says "Yes, a bus" when the lines it is given (what perception found
    in the decoded frames) mention a bus. ``hold``: stream tokens until stopped, like a model
    that is slow to finish (for the cancel test)."""

    name = "scripted"
    sees_images = False
    english_only = True
    n_ctx = 4096

    def __init__(self, hold: bool = False) -> None:
        from models.llm.base import Timing
        self.hold = hold
        self.last_timing = Timing()
        self.threads: set[int] = set()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.stopped_by_request = False
        self._never = threading.Event()

    def stream(self, messages, images=None, stop_event=None, *, max_tokens=256, temperature=0.0):
        self.threads.add(threading.get_ident())
        self.started.set()
        try:
            if self.hold:
                while not (stop_event is not None and stop_event.is_set()):
                    yield " yes"
                    self._never.wait(0.02)  # a model's token pace; nothing sets it
                self.stopped_by_request = True
                return
            lines = messages[-1]["content"].lower()
            yield "Yes, there is a bus." if "bus" in lines else "It is not in the log."
        finally:
            self.finished.set()

    def stop(self) -> None:
        pass


def _result(qa, correct: bool, kbps: float, text: str = "") -> QAResult:
    stream_s = 3.0
    return QAResult(qa, text or ("right" if correct else "wrong"), correct, kbps, stream_s,
                    int(round(kbps * 1000 * stream_s / 8)), [2.0], 0.1, 0.0, 0.2, 0.1)


def _rung(name: str, kbps: float, right: dict) -> RungResult:
    settings = dict([UNCOMPRESSED, *LADDER]).get(name)
    return RungResult(name, settings, [_result(qa, ok, kbps, f"{name} says {'yes' if ok else 'no'}")
                                       for qa, ok in right.items()])


@pytest.fixture
def view(qtbot, env):
    from gui.panels.chat_selftest import SelfTestView
    from gui.tasks import TaskManager

    tasks = TaskManager()
    v = SelfTestView(tasks, folder=str(env / "selftest"))
    qtbot.addWidget(v)
    v.show()
    yield v
    tasks.shutdown(wait=True)


def test_the_view_plots_a_report_and_lists_what_broke_first(view):
    qs = (BUS_Q, PEOPLE_Q, TEXT_Q, DOG_Q)
    base = _rung("uncompressed", 9000.0, dict(zip(qs, (True, True, True, False))))
    rungs = [_rung("640/crf34", 40.0, dict(zip(qs, (True, True, True, False)))),
             _rung("384/crf40", 12.0, dict(zip(qs, (True, True, False, False)))),
             _rung("160/crf48", 3.0, dict(zip(qs, (True, False, False, False))))]
    warning = "1 question(s) need reading text in the picture; they are the first to fail."
    report = SelfTestReport("scripted", rungs, base, {"bus": 1200.0}, [warning])
    view.show_report(report)

    assert view.plotted == [("160/crf48", pytest.approx(3.0), 25.0), ("384/crf40", pytest.approx(12.0), 50.0),
                            ("640/crf34", pytest.approx(40.0), 75.0)]
    assert sorted((k, 100 * a) for k, a in report.points()) == [(k, a) for _n, k, a in view.plotted]
    x, y = view.curve.getData()  # the plot's x axis is log10(kbps)
    assert np.allclose(x, np.log10([3.0, 12.0, 40.0])) and np.allclose(y, [25, 50, 75])
    _tx, ty = view.text_curve.getData()
    assert list(ty) == [0.0, 0.0, 100.0]  # the text question alone: lost below 40 kbps
    from pyqtgraph import InfiniteLine
    lines = [m for m in view._marks if isinstance(m, InfiniteLine)]
    assert any(m.angle == 90 and m.value() == pytest.approx(math.log10(1200.0)) for m in lines)  # human-quality
    assert any(m.angle == 0 and m.value() == pytest.approx(75.0) for m in lines)  # uncompressed accuracy
    lo, hi = view.plot.getViewBox().viewRange()[0]
    assert lo < math.log10(3.0) and hi > math.log10(1200.0)

    # broke first: the text question (at 12 kbps), then the count (at 3 kbps); the bus held; the dog never
    assert [(b.qa, b.status, b.rung) for b in view.broke] == [
        (TEXT_Q, "broke", "384/crf40"), (PEOPLE_Q, "broke", "160/crf48"), (BUS_Q, "held", ""), (DOG_Q, "never",
                                                                                                 "uncompressed")]
    assert view.table.rowCount() == 4
    assert view.table.item(0, 0).text() == TEXT_Q.question and view.table.item(0, 1).text() == "⚠ yes"
    assert view.table.item(0, 3).text() == "384/crf40 (12.0 kbps)"
    assert view.table.item(0, 4).text() == "384/crf40 says no"
    assert [view.table.item(r, 1).text() for r in range(1, 4)] == ["", "", ""]
    assert "reading text" in view.warn.text()
    assert "640/crf34" in view.summary.text() and "human-quality H.264 stream of these clips costs 1,200 kbps" in view.summary.text()


def test_a_real_run_fills_the_plot_as_it_goes(view, qtbot, bus_clip):
    """The real self-test job on the real bus clip (encoder, decoder, detector on the decoded
    frames, human-quality reference), through the task manager; only the LLM is scripted."""
    llm = ScriptedLLM()
    view.set_backend(llm, ("local", "", ""), "scripted")
    seen: list[list] = []
    view.points_changed.connect(seen.append)
    reports = []
    view.report_ready.connect(reports.append)
    with qtbot.waitSignal(view.run_ended, timeout=120000) as ended:
        view.run(clips={"bus": Clip(str(bus_clip), PerceptionLog())}, questions=[BUS_Q],
                 ladder=(LADDER[0], LADDER[-1]))
        assert not view.run_btn.isEnabled() and view.cancel_btn.isEnabled()
    assert ended.args == ["done"], view.status.text()
    [report] = reports
    assert threading.get_ident() not in llm.threads  # the job ran off the UI thread
    assert [len(r.results) for r in report.rungs] == [1, 1] and report.baseline is not None
    # it filled in as it ran: after the cleared plot, one point, then two
    growth = [len(p) for p in seen]
    assert 1 in growth and growth[-1] == 2
    pts = sorted((k, 100 * a) for k, a in report.points())
    assert np.allclose([(k, a) for _n, k, a in view.plotted], pts)
    assert all(k > 0 for k, _a in pts)
    x, _y = view.curve.getData()
    assert np.allclose(x, np.log10([k for k, _a in pts]))
    human = report.human_kbps["bus"]
    assert human > max(k for k, _a in pts)
    from pyqtgraph import InfiniteLine
    assert any(isinstance(m, InfiniteLine) and m.angle == 90 and m.value() == pytest.approx(math.log10(human))
               for m in view._marks)
    assert view.table.rowCount() == 1 and view.run_btn.isEnabled()


def test_cancelling_the_selftest_stops_the_model_and_keeps_the_window_usable(view, qtbot, bus_clip):
    llm = ScriptedLLM(hold=True)
    view.set_backend(llm, ("local", "", ""), "scripted")
    view.run(clips={"bus": Clip(str(bus_clip), PerceptionLog())}, questions=[BUS_Q], ladder=(LADDER[-1],))
    qtbot.waitUntil(llm.started.is_set, timeout=60000)
    assert view.running and view.cancel_btn.isEnabled()
    with qtbot.waitSignal(view.run_ended, timeout=5000) as ended:
        view.cancel_btn.click()
    assert ended.args == ["cancelled"]
    assert view.run_btn.isEnabled() and not view.cancel_btn.isEnabled() and not view.running
    assert "Cancelled" in view.status.text() and view.report is None
    qtbot.waitUntil(llm.finished.is_set, timeout=10000)  # the worker left the model's stream…
    assert llm.stopped_by_request  # …because it was told to stop, not because it ran out of tokens
    assert not [t for t in view.tasks.active if t.key == "chat-selftest"]


def test_the_chat_meter_follows_the_live_stream(window, qtbot, bus_clip):
    from core.chat.live import StreamRate

    chat = window.chat
    assert chat.stream_meter in window.live.processors
    live_rate = lambda r: isinstance(r, StreamRate) and r.kbps > 0 and r.human_kbps > 0  # noqa: E731
    with qtbot.waitSignal(chat.meter_changed, timeout=30000, check_params_cb=live_rate) as first:
        window.open_stream(str(bus_clip), loop=True)
    r1 = first.args[0]
    assert chat.live_meter.isVisible()
    text = chat.live_meter.text()
    assert f"{r1.kbps:.1f} kbps" in text and f"{r1.human_kbps:,.0f} kbps" in text and "live" in text
    assert chat.stream_meter.encoder_thread not in (None, threading.get_ident())  # not the UI thread
    with qtbot.waitSignal(chat.meter_changed, timeout=30000,
                          check_params_cb=lambda r: isinstance(r, StreamRate) and r.time > r1.time) as second:
        pass
    r2 = second.args[0]
    assert f"{r2.kbps:.1f} kbps" in chat.live_meter.text()
    with qtbot.waitSignal(window.live.stopped, timeout=10000):
        window.stop_stream()
    assert "stream stopped" in chat.live_meter.text() and f"{r2.kbps:.1f} kbps" in chat.live_meter.text()
