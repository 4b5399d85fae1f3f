"""ETA and throughput (issue #18, item 6): the estimator with a clock driven by hand, the command
line's bar, and the window's job bar (pytest-qt, signals only, a fake clock: no sleeps, no timing)."""
from __future__ import annotations

import io
import threading

import pytest

from core.jobs import (ESTIMATING, Estimator, HeadlessState, SubProgress, media_amount, set_media_span,
                       speed_text, wall_duration)


class Clock:
    """A clock that moves only when told (thread-safe enough: one writer, reads are atomic)."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def steady(est: Estimator, clock: Clock, upto: float, step: float = 0.01, dt: float = 1.0) -> None:
    f = est.fraction
    while f < upto - 1e-9:
        f = round(f + step, 6)
        clock.t += dt
        est.update(f)


# ------------------------------------------------------------------------------ the estimator
def test_steady_rate_gives_the_right_eta_and_throughput():
    clock = Clock()
    est = Estimator(clock)
    est.set_media_span(7200.0)  # two hours of footage
    est.update(0.0)
    clock.t += 20.0  # loading models at 0 %: not counted as speed
    est.update(0.0)
    steady(est, clock, 0.30)  # 1 % a second
    assert est.eta() == pytest.approx(70.0)
    assert est.throughput() == pytest.approx(72.0)  # 7200 s of media per 100 s of work
    assert est.text() == "ETA 1 min 10 s · 72× faster than real time"
    assert "2.0 h of footage in about" in est.detail()
    clock.t += 30.0  # no report for 30 s: the ETA counts down
    assert est.eta() == pytest.approx(40.0)
    clock.t += 60.0  # past the estimate without a report: it no longer holds
    assert est.eta() is None and est.text() == ESTIMATING


def test_no_eta_too_early():
    clock = Clock()
    est = Estimator(clock)
    est.set_media_span(600.0)
    assert est.text() == ESTIMATING
    est.update(0.002)
    clock.t += 1.0
    est.update(0.004)
    assert est.eta() is None and est.throughput() is None  # 1 s and 0.2 %: too little to say
    clock.t += 1.0
    est.update(0.03)
    assert est.eta() is None  # 2 s measured: still too early
    clock.t += 2.0
    est.update(0.05)
    assert est.eta() is not None and est.text().startswith("ETA ")


def test_jumps_count_as_done_not_as_speed():
    clock = Clock()
    est = Estimator(clock)
    est.update(0.001)
    clock.t += 0.01
    est.update(0.40)  # results reused: 40 % in a moment, before any rate
    steady(est, clock, 0.50)  # then 1 % a second
    assert est.eta() == pytest.approx(50.0)
    clock.t += 0.1
    est.update(0.80)  # a stage skipped
    assert est.eta() == pytest.approx(20.0, rel=0.1)
    steady(est, clock, 0.90)
    assert est.eta() == pytest.approx(10.0, rel=0.1)


def test_two_workers_finishing_together_is_work_not_a_jump():
    clock = Clock()
    est = Estimator(clock)
    est.set_media_span(3600.0)
    f = 0.0
    for _ in range(6):  # two files of 5 % every 10 s, finished within 10 ms of each other
        clock.t += 10.0
        f += 0.05
        est.update(f)
        clock.t += 0.01
        f += 0.05
        est.update(f)
    assert est.eta() == pytest.approx(40.0, rel=0.02)  # 1 % a second: 40 % left
    assert est.throughput() == pytest.approx(36.0, rel=0.02)


def test_progress_going_back_starts_a_new_estimate_and_the_end_says_how_long():
    clock = Clock(0.0)
    est = Estimator(clock)
    est.set_media_span(3600.0)
    steady(est, clock, 0.5, step=0.05)
    assert est.eta() is not None
    est.update(0.1)  # a second pass
    assert est.eta() is None
    steady(est, clock, 1.0, step=0.05)
    assert est.eta() == 0.0 and est.elapsed() == pytest.approx(28.0)
    assert est.text() == f"done in 28 s · 1.0 h of footage, {speed_text(3600 / 28)}"
    assert speed_text(3600 / 28) == "129× faster than real time"


def test_wording():
    assert [wall_duration(x) for x in (4.4, 59.6, 192, 180, 7500)] == ["4 s", "1 min", "3 min 12 s", "3 min",
                                                                        "2 h 05 min"]
    assert [media_amount(x) for x in (30, 720, 4320, 86400)] == ["30 s", "12 min", "1.2 h", "24 h"]
    assert [speed_text(x) for x in (48.2, 4.83, 1.02, 0.5, 0.004)] == [
        "48× faster than real time", "4.8× faster than real time", "about real time",
        "2.0× slower than real time", "250× slower than real time"]


def test_a_stage_never_overwrites_the_jobs_span():
    outer = HeadlessState()
    set_media_span(SubProgress(outer, 0.0, 0.5), 60.0)  # one stage of several: not the job's span
    assert outer.media_span is None
    whole = SubProgress(SubProgress(outer))  # a stage that is the whole job passes it on
    set_media_span(whole, 3600.0)
    assert outer.media_span == 3600.0
    set_media_span(SubProgress(outer), 10.0)  # ...but never over the job's own
    assert outer.media_span == 3600.0
    set_media_span(SubProgress(HeadlessState(), quiet=True), 10.0)
    set_media_span(object(), 10.0)  # a state without the method ignores it


# ------------------------------------------------------------------------------ the command line
def test_cli_bar_shows_eta_and_throughput_then_how_long_it_took():
    clock = Clock(0.0)
    out = io.StringIO()
    state = HeadlessState(bar=True, label="day.mp4", stream=out, clock=clock)
    set_media_span(state, 86400.0)  # a day of footage
    clock.t += 5.0
    state.set_progress(0.0, "loading SSD")
    for i in range(1, 101):
        clock.t += 6.0
        state.set_progress(i / 100, f"frame {i}")
    lines = out.getvalue().split("\r")
    mid = next(x for x in lines if " 50.0%" in x)
    assert "ETA 5 min · 144× faster than real time" in mid and "frame 50" in mid
    assert lines[-1] == ("day.mp4 [####################] 100.0% done in 10 min 5 s · 24 h of footage, "
                         f"{speed_text(86400 / 605)}\n")


def test_the_waveform_job_says_its_span(tmp_path):
    import mediagen
    from core.media.waveform import WaveformRequest, build_waveform

    path = mediagen.make_audio_only(tmp_path / "tone.wav", duration=3.0)
    state = HeadlessState()
    build_waveform(WaveformRequest(str(path)), state)
    assert state.media_span == pytest.approx(3.0, abs=0.05)
    assert state.estimate.text().startswith("done in ")


def test_the_long_jobs_say_their_span(tmp_path):
    """The frame index, shot detection, the window's tagging job and the chat self-test tell their
    state how much media they cover (what the estimator turns into × real time)."""
    import mediagen
    from core.chat.selftest import QA, streamed_seconds
    from core.jobs import Cancelled
    from core.media.decode import probe
    from core.perception.ops import frame_times_job
    from core.store.project import Project
    from core.tagging.jobs import TagRequest, describe_job
    from core.tagging.shots import detect_shots

    clip = mediagen.make_clip(tmp_path / "clip.mp4", duration=2.0, audio=False)
    state = HeadlessState()
    assert len(frame_times_job(str(clip), state)) > 0 and state.media_span == pytest.approx(2.0, abs=0.1)
    state = HeadlessState()
    assert detect_shots(str(clip), state) and state.media_span == pytest.approx(2.0, abs=0.1)
    with Project.create(tmp_path / "p.kestrel") as project:
        state = HeadlessState()
        state.cancel()  # stops at the first file: the span is said before any work
        with pytest.raises(Cancelled):
            describe_job(TagRequest(project, (probe(str(clip), with_hash=False),)), state)
        assert state.media_span == pytest.approx(2.0, abs=0.1)
    qs = [QA("a", "q1", at=30.0, accept=("x",), window_s=20.0), QA("a", "q2", at=5.0, accept=("x",))]
    assert streamed_seconds(qs, 3) == pytest.approx(3 * (20.0 + 5.0))


# ------------------------------------------------------------------------------ the window
def paced_job(request, state):
    """Says its span, then 1 % per (fake) second up to ``upto``; waits on ``gate`` to finish."""
    clock, span, upto, gate = request
    set_media_span(state, span)
    state.set_progress(0.0, "loading")
    clock.t += 10.0
    for i in range(1, int(upto * 100) + 1):
        clock.t += 1.0
        state.set_progress(i / 100, f"frame {i}")
    gate.wait(10)
    return upto


@pytest.fixture
def clock():
    return Clock()


def test_the_job_bar_shows_eta_and_throughput(qtbot, clock):
    import shiboken6
    from PySide6.QtCore import QCoreApplication

    from gui.main_window import JobBar
    from gui.tasks import TaskManager

    tasks = TaskManager(clock=clock)
    bar = JobBar(tasks)
    qtbot.addWidget(bar)
    gate = threading.Event()
    try:
        task = tasks.run(paced_job, (clock, 3600.0, 0.40, gate), name="analysis")
        qtbot.waitUntil(lambda: bar.isVisible() and task.progress >= 0.40, timeout=5000)
        bar._refresh()
        assert bar.eta.text() == "ETA 1 min · 36× faster than real time"
        assert "1.0 h of footage in about 1 min 50 s" in bar.eta.toolTip()
        assert bar.label.text() == "analysis: frame 40"
        clock.t += 20.0  # no report for 20 s: the tick counts down
        with qtbot.waitSignal(bar._tick.timeout, timeout=3000):
            pass
        assert bar.eta.text() == "ETA 40 s · 36× faster than real time"
        with qtbot.waitSignal(tasks.task_ended, timeout=5000):
            gate.set()
        assert not bar.isVisible()
    finally:
        gate.set()
        tasks.shutdown()
        QCoreApplication.processEvents()
        shiboken6.delete(tasks)


def test_the_window_shows_it_whole(qtbot, env, clock):
    """In the main window's status bar, beside a long job text, the ETA reads in full."""
    from core.settings import Settings
    from gui.main_window import JobBar, MainWindow
    from gui.tasks import TaskManager

    win = MainWindow(Settings(), tasks=TaskManager(clock=clock))
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    gate = threading.Event()
    try:
        win.tasks.run(paced_job, (clock, 86400.0, 0.30, gate),
                      name="analysis of a very long file name from camera 12, north gate, day 3")
        qtbot.waitUntil(lambda: win.jobbar.isVisible() and "ETA" in win.jobbar.eta.text(), timeout=5000)
        eta = win.jobbar.eta
        assert eta.text() == "ETA 1 min 10 s · 864× faster than real time"
        fm = eta.fontMetrics()
        assert eta.width() >= fm.horizontalAdvance(eta.text())  # not cut
        assert fm.height() >= 10  # a readable size
        top_left = eta.mapTo(win, eta.rect().topLeft())
        assert 0 <= top_left.x() and top_left.x() + eta.width() <= win.width()
        label = win.jobbar.label
        assert label.width() <= JobBar.LABEL_W and "…" in label.text()
    finally:
        gate.set()
        win.close()
