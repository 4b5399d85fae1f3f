"""The task manager: progress, partial results, cancel, superseded and failed jobs."""
from __future__ import annotations

import threading

import pytest
import shiboken6
from PySide6.QtCore import QCoreApplication

from core.jobs import Cancelled, HeadlessState, Throttle, check
from gui.tasks import TaskManager


def counting_job(request, state):
    """Counts to n, reporting each step; waits on an event between steps when given one."""
    n, gate = request
    for i in range(n):
        check(state)
        if gate is not None:
            gate.wait(5)
        state.set_progress((i + 1) / n, f"step {i + 1}")
        state.set_partial_result(i)
    return n


@pytest.fixture
def tasks(qtbot):
    tm = TaskManager()
    yield tm
    tm.shutdown()
    # deliver what the workers queued, then free the QObjects while Qt is still up
    QCoreApplication.processEvents()
    shiboken6.delete(tm)


def test_progress_partials_and_result(qtbot, tasks):
    partials, results = [], []
    task = tasks.run(counting_job, (5, None), name="count")
    task.on_partial(partials.append).on_done(results.append)
    with qtbot.waitSignal(tasks.task_ended, timeout=5000):
        pass
    assert results == [5] and partials == [0, 1, 2, 3, 4]
    assert task.finished and not tasks.active


def test_cancel_drops_the_result(qtbot, tasks):
    gate = threading.Event()
    results, cancelled = [], []
    task = tasks.run(counting_job, (100, gate), name="slow")
    task.on_done(results.append).on_cancel(lambda: cancelled.append(True))
    with qtbot.waitSignal(tasks.task_ended, timeout=5000):
        task.cancel()
    gate.set()
    # a later job on the same worker runs once the cancelled one has stopped
    with qtbot.waitSignal(tasks.task_ended, timeout=5000):
        tasks.run(counting_job, (1, None))
    assert results == [] and cancelled == [True]


def test_same_key_supersedes(qtbot, tasks):
    gate = threading.Event()
    got = []
    first = tasks.run(counting_job, (50, gate), key="k").on_done(lambda r: got.append(("first", r)))
    second = tasks.run(counting_job, (2, None), key="k").on_done(lambda r: got.append(("second", r)))
    assert first.cancelled
    gate.set()
    qtbot.waitUntil(lambda: second.finished, timeout=5000)
    assert got == [("second", 2)]


def test_errors_go_to_the_handler_or_the_shared_signal(qtbot, tasks):
    def boom(_req, _state):
        raise ValueError("bad input")
    errors = []
    tasks.run(boom, None).on_error(errors.append)
    with qtbot.waitSignal(tasks.task_failed, timeout=5000) as blocker:
        tasks.run(boom, None, name="unhandled")
    assert blocker.args[0].name == "unhandled" and "bad input" in str(blocker.args[1])
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_headless_state_and_throttle():
    st = HeadlessState(bar=False)
    assert counting_job((3, None), st) == 3 and st.progress == 1.0 and st.partials == 3
    st.cancel()
    with pytest.raises(Cancelled):
        counting_job((3, None), st)
    th = Throttle(10.0)
    assert th() and not th()
