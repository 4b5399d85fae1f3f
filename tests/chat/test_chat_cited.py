"""The boxes an answer cites (core/chat/cited.py), Qt-free: the objects it names, at the frame nearest each
cited time, the stored perception before the chat's own look; and as the player's evidence layer.
The chat panel showing them is tested in tests/gui/test_gui_chat_evidence.py."""
from __future__ import annotations

from core.chat.perception_log import Observation, PerceptionLog


def test_cited_boxes_pick_the_named_objects_at_the_cited_frame():
    """Qt-free: the named label only, the sample nearest the cited second, the stored log before the chat's look."""
    from core.chat import citations
    from core.chat.cited import cited_boxes, on_screen

    stored, eyes = PerceptionLog(step=0.5), PerceptionLog(step=0.5)
    for t in (1.5, 2.0, 2.5):
        stored.add(Observation(t, "object", "person", box=(10, 20, 50, 80), size=(100, 100), score=0.9, confirmed=True))
        stored.add(Observation(t, "object", "car", box=(0, 0, 10, 10), size=(100, 100), score=0.8, confirmed=True))
    stored.add(Observation(2.0, "object", "person", box=(60, 20, 90, 80), size=(100, 100), score=0.4, confirmed=False))
    eyes.add(Observation(7.0, "object", "person", box=(0, 0, 50, 50), size=(200, 100), score=0.7))
    text = "2 people at [00:02]; one at [00:07]; none at [00:30]."
    got = cited_boxes(text, citations(text), [(stored, "perception"), (eyes, "chat")])
    at2 = [b for b in got if b.cited == 2.0]
    assert {(b.time, b.label) for b in at2} == {(2.0, "person")} and len(at2) == 2
    assert [b.confirmed for b in at2] == [True, False]  # confirmed first; the unconfirmed one kept
    [at7] = [b for b in got if b.cited == 7.0]
    assert at7.source == "chat" and at7.confirmed is None
    assert not [b for b in got if b.cited == 30.0]
    assert cited_boxes("Nothing named at [00:02].", citations("Nothing named at [00:02]."), [(stored, "p")]) == []
    ev = on_screen([at7])
    assert (ev[0].box.x2, ev[0].box.y2) == (0.25, 0.5) and ev[0].start <= 7.0 < ev[0].end and ev[0].box.cited
