"""Evidence on screen (#17 point 4): an answer that names an object carries the boxes it cites, and
clicking its time shows them on the video (the overlay's evidence layer), until the next question.

Real footage (the bus clip), real SSD — stored by the window's analysis, or the chat's own look at
the frames given to the model — and the real chat job; only the LLM is scripted (it says what the
frames' lines show, or a wrong count Kestrel replaces), so the window around it is tested in seconds.
"""
from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QUrl


class Scripted:
    """Stands in for the LLM. ``say``: a fixed answer; None: "Yes, there is a bus at [mm:ss]." at the
    last frame given to it whose line shows a bus (what the chat's eyes saw), else "No bus"."""

    name = "scripted"
    sees_images = False
    english_only = True
    n_ctx = 4096

    def __init__(self, say: str | None = None) -> None:
        from models.llm.base import Timing
        self.say = say
        self.last_timing = Timing()

    def stream(self, messages, images=None, stop_event=None, *, max_tokens=256, temperature=0.0):
        if self.say is not None:
            yield self.say
            return
        shows = re.findall(r"\[(\d\d:\d\d)\] frame given to the model[^\n]*shows: ([^\n]*)", messages[-1]["content"])
        bus = [t for t, what in shows if "bus" in what]
        yield f"Yes, there is a bus at [{bus[-1]}]." if bus else "No bus is in the log."

    def stop(self) -> None:
        pass


def _open(qtbot, window, clip) -> None:
    with qtbot.waitSignals([window.media_ready, window.player.frame_shown], timeout=30000):
        window.open_media(str(clip))
    qtbot.waitUntil(lambda: window.session.media_id is not None, timeout=10000)


def _ask(qtbot, window, backend, question: str):
    chat = window.chat
    chat.backend, chat._backend_key = backend, chat._key()
    chat.question.setText(question)
    with qtbot.waitSignal(chat.answered, timeout=120000) as got:
        chat.ask()
    return got.args[0]


def _click(qtbot, window, href: str) -> None:
    """Click a link of the chat; wait until the player shows the frame at the playhead it seeks to."""
    window.chat.history.anchorClicked.emit(QUrl(href))
    player = window.player

    def on_screen() -> bool:
        f = player._shown
        return f is not None and f.time <= window.session.position < f.end
    qtbot.waitUntil(on_screen, timeout=30000)


def test_clicking_a_cited_time_draws_the_stored_boxes_it_cites(qtbot, window, bus_clip):
    _open(qtbot, window, bus_clip)
    with qtbot.waitSignal(window.analysis.analysis_finished, timeout=180000):
        window.analysis.start(("ssd-mobilenet-v2-coco",), 2.0)
    with qtbot.waitSignal(window.player.frame_shown, timeout=30000):
        window.session.seek(2.0)
    # the model miscounts; Kestrel's count from the stored boxes replaces it and cites their frame
    ans = _ask(qtbot, window, Scripted("There are 9 people."), "How many people are there?")
    assert ans.corrected and "[00:02]" in ans.text, ans.text
    stored = [it for it in window.session.timeline.track("boxes", "ssd-mobilenet-v2-coco").items
              if it.label == "person" and abs(it.start - 2.0) < 1e-3]
    assert len(stored) >= 3
    assert {b.label for b in ans.evidence} == {"person"} and all(abs(b.time - 2.0) < 1e-3 for b in ans.evidence)
    assert len(ans.evidence) == min(len(stored), 12) and all(b.source == "perception" for b in ans.evidence)
    assert "t:2.0#a0" in window.chat.history.toHtml()
    assert "click a time to see the boxes it cites" in window.chat.history.toPlainText()

    with qtbot.waitSignal(window.player.frame_shown, timeout=30000):
        window.session.seek(0.0)  # somewhere else first: the click must bring the player back
    _click(qtbot, window, "t:2.0#a0")
    assert window.session.position == pytest.approx(2.0, abs=0.06)
    cited = [b for b in window.player.canvas.boxes if b.cited]
    assert len(cited) == len(ans.evidence)
    # each cited box is a stored box of that frame: same place (fractions of the frame), score and verdict
    def key(x1, y1, score, confirmed):
        return round(x1, 4), round(y1, 4), round(score, 4), confirmed
    frame = {key(it.data["box"][0] / it.data["size"][0], it.data["box"][1] / it.data["size"][1], it.confidence,
                 it.data.get("confirmed")) for it in stored}
    assert {key(b.x1, b.y1, b.score, b.confirmed) for b in cited} <= frame
    for b in cited:  # labelled as evidence; unconfirmed ones as the overlay shows unconfirmed boxes
        assert b.caption == ("cited: ? person" if b.confirmed is False else "cited: person")
    assert not window.player.canvas.grab().isNull()  # drawn: the paint of cited boxes runs
    # the overlay's own boxes are still there beside the evidence
    assert any(not b.cited and b.label == "person" for b in window.player.canvas.boxes)

    # the next question clears the evidence
    _ask(qtbot, window, Scripted("It is not in the log."), "Is it raining?")
    assert window.overlay.evidence == [] and not any(b.cited for b in window.player.canvas.boxes)
    # and a link without cited boxes (the frames the model saw) shows none
    _click(qtbot, window, "t:2.0#a0")
    assert any(b.cited for b in window.player.canvas.boxes)
    window.chat.history.anchorClicked.emit(QUrl("t:0.5"))
    qtbot.waitUntil(lambda: not any(b.cited for b in window.player.canvas.boxes), timeout=10000)


def test_the_chats_own_look_is_evidence_when_nothing_was_stored(qtbot, window, bus_clip):
    """No analysis: the boxes come from the chat's own perception of the frames it gave the model."""
    _open(qtbot, window, bus_clip)
    assert not window.overlay.box_tracks()
    with qtbot.waitSignal(window.player.frame_shown, timeout=30000):
        window.session.seek(2.9)
    ans = _ask(qtbot, window, Scripted(), "Is there a bus?")
    m = re.search(r"\[(\d\d):(\d\d)\]", ans.text)
    assert m, ans.text
    t = int(m.group(1)) * 60 + int(m.group(2))
    assert ans.evidence and {b.label for b in ans.evidence} == {"bus"}
    assert all(b.source == "chat" and b.confirmed is None and abs(b.time - t) <= 0.5 for b in ans.evidence)
    _click(qtbot, window, f"t:{float(t)}#a0")
    cited = [b for b in window.player.canvas.boxes if b.cited]
    assert [b.label for b in cited] == ["bus"] * len(ans.evidence)
    e = ans.evidence[0]
    assert (cited[0].x1, cited[0].y2) == (pytest.approx(e.box[0] / e.size[0]), pytest.approx(e.box[3] / e.size[1]))
    # the chat's own look made no verdict: weak evidence, drawn as unconfirmed; nothing stored to draw
    assert cited[0].caption == "cited: ? bus" and cited[0].confirmed is False and window.player.canvas.boxes == cited

