"""A chat conversation to Markdown with the frames it cites (core.handoff.chatlog), from a real project
whose chat is stored by core.chat.history.save_chat and a generated clip whose frames carry their
number (tests/mediagen.py), so each PNG can be checked to show the frame its name says."""
from __future__ import annotations

import re
import shutil

import pytest

from core.chat import citations
from core.chat.cited import CitedBox
from core.chat.history import save_chat
from core.chat.session import ChatAnswer
from core.handoff.base import HandoffError, export_with
from core.handoff.chatlog import export
from core.media.decode import probe
from core.perception import ops
from core.store.project import Project
from models.catalogue import get_spec
from tests import mediagen

FPS = 25
MODEL = "qwen2.5-0.5b-chat"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return mediagen.make_video_only(tmp_path_factory.mktemp("chatclip") / "gate cam.mp4", duration=3.0, fps=FPS,
                                    size=(128, 96))


def _answer(question: str, text: str, at: float, model: str = MODEL, evidence=()) -> ChatAnswer:
    return ChatAnswer(question, text, citations(text), model, 12.5, [at - 0.5, at], at=at, human_kbps=240.0,
                      encode_s=0.2, inference_s=1.5, evidence=list(evidence))


@pytest.fixture
def chat(tmp_path, clip):
    media = tmp_path / clip.name
    shutil.copyfile(clip, media)
    with Project.create(tmp_path / "p.kestrel") as project:
        media_id = ops.register_media(project, probe(media))
        bus = CitedBox(2.0, 2.0, (10.0, 20.0, 60.5, 80.0), (128, 96), "bus", 0.87, True)
        save_chat(project, media_id, _answer("Is there a bus?", "Yes, a bus at [00:02] and again at [00:01].", 2.5,
                                             evidence=[bus]))
        save_chat(project, media_id, _answer("What happens first?", "A bar moves at [00:00].", 0.5,
                                             model="gpt-x @ example.org"))
        yield project, media_id, media


def _frame_of_png(path) -> int:
    import cv2

    bgr = cv2.imread(str(path))
    assert bgr is not None, f"{path} does not decode"
    return mediagen.decode_frame_index(bgr[:, :, ::-1])


def test_the_conversation_with_its_cited_frames(chat, tmp_path):
    project, media_id, _media = chat
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "gate chat.md"
    res = export(project, media_id, out)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Chat about gate cam.mp4\n")
    # in the order asked (not by media time), each with the date its answer was stored and the time asked about
    q = re.findall(r"^\*\*Q\*\* \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC), at (\d\d:\d\d:\d\d)\) (.*)$", text, re.M)
    assert [(at, question) for _d, at, question in q] == [("00:00:02", "Is there a bus?"),
                                                          ("00:00:00", "What happens first?")]
    assert "**A** Yes, a bus at \\[00:02\\] and again at \\[00:01\\]." in text
    # the cited frames: the frame on screen at each cited second, numbered round(t * fps), a PNG next to the .md
    links = re.findall(r"!\[(\d\d:\d\d:\d\d)\]\((gate%20chat_frames/(\d{6})\.png) \"frame (\d+), ([\d:.]+)\"\)", text)
    assert [(alt, int(n)) for alt, _l, n, _f, _t in links] == [("00:00:02", 50), ("00:00:01", 25), ("00:00:00", 0)]
    for _alt, _link, name, n, _t in links:
        png = out.parent / "gate chat_frames" / f"{name}.png"
        assert int(n) == int(name) and _frame_of_png(png) == int(name)
    assert sorted(p.name for p in res.paths) == ["000000.png", "000025.png", "000050.png", "gate chat.md"]
    assert res.counts == {"turns": 2, "frames": 3} and res.notes == ()
    # the model (with its catalogue version where the catalogue knows it), what it was given, the boxes it cites
    assert f"Answered by {MODEL} (catalogue version {get_spec(MODEL).version})" in text
    assert "gpt-x @ example.org (not in Kestrel's catalogue" in text
    assert "machine stream of 12.5 kbit/s (a human-quality H.264 stream of the same frames: 240 kbit/s)" in text
    assert "- bus 0.87 cited at 00:00:02, seen in the frame at 00:00:02.000, box \\[10, 20, 60.5, 80\\] of 128×96, " \
           "confirmed, from perception" in text


def test_the_markdown_shows_stored_text_as_text(chat, tmp_path):
    md_it = pytest.importorskip("markdown_it")
    project, media_id, _media = chat
    save_chat(project, media_id, _answer("![x](http://evil.example/t.png) <img src=x onerror=alert(1)>\n# not a title",
                                         "1. [click](javascript:alert(1)) & <b>bold</b> at [00:01]", 1.0))
    out = tmp_path / "c.md"
    export(project, media_id, out)
    tokens = md_it.MarkdownIt("commonmark").parse(out.read_text(encoding="utf-8"))
    flat = [t for tok in tokens for t in [tok, *(tok.children or [])]]
    assert not [t for t in flat if t.type in ("html_inline", "html_block", "link_open", "ordered_list_open")]
    images = [t.attrGet("src") for t in flat if t.type == "image"]
    assert images and all(src.startswith("c_frames/") for src in images)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "not a title" not in " ".join(headings) and "Chat about gate cam.mp4" in headings
    inline = " ".join(t.content for t in tokens if t.type == "inline")
    assert "![x](http://evil.example/t.png) <img src=x onerror=alert(1)>" in inline.replace("\\", "")


def test_a_range_keeps_the_turns_about_or_citing_it(chat, tmp_path):
    project, media_id, _media = chat
    res = export_with("markdown", project, media_id, tmp_path / "r.md", start=1.8, end=2.2)
    text = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "Is there a bus?" in text and "What happens first?" not in text
    assert res.counts == {"turns": 1, "frames": 2}  # the turn's cited frames, 00:01 included
    res = export(project, media_id, tmp_path / "r0.md", start=0.0, end=0.3)  # asked at 00:00.5, citing 00:00
    assert "What happens first?" in (tmp_path / "r0.md").read_text(encoding="utf-8") and res.counts["turns"] == 1
    with pytest.raises(HandoffError, match="no chat question about gate cam.mp4 is about or cites"):
        export(project, media_id, tmp_path / "none.md", start=2.8, end=2.9)


def test_a_file_gone_or_changed_gets_a_note_not_a_crash(chat, tmp_path, clip):
    project, media_id, media = chat
    media.unlink()
    res = export(project, media_id, tmp_path / "gone.md")
    text = (tmp_path / "gone.md").read_text(encoding="utf-8")
    assert "is not on this machine: the cited frames are not included" in text
    assert res.counts["frames"] == 0 and res.paths == (tmp_path / "gone.md",) and len(res.notes) == 1
    assert not (tmp_path / "gone_frames").exists()
    mediagen.make_video_only(media, duration=1.0, fps=FPS, size=(128, 96))  # another file under the same name
    res = export(project, media_id, tmp_path / "changed.md")
    assert "has changed since this project analysed it" in res.notes[0] and res.counts["frames"] == 0
    assert "has changed since this project analysed it" in (tmp_path / "changed.md").read_text(encoding="utf-8")


def test_what_cannot_be_exported_is_one_clear_error(chat, tmp_path):
    project, media_id, _media = chat
    with pytest.raises(HandoffError, match=r"written as \.md"):
        export(project, media_id, tmp_path / "c.txt")
    other = project.add_media("/videos/quiet.mp4", "h", 1, 10.0, "mp4", [])
    with pytest.raises(HandoffError, match="no chat conversation about quiet.mp4"):
        export(project, other, tmp_path / "c.md")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(HandoffError, match="cannot write"):
        export(project, media_id, blocker / "c.md")
    with pytest.raises(HandoffError, match="cannot write .*no such folder"):
        export(project, media_id, tmp_path / "no such folder" / "c.md")
    assert not (tmp_path / "c.md").exists() and not (tmp_path / "no such folder").exists()


def test_a_cancelled_export_writes_no_markdown(chat, tmp_path):
    from core.jobs import Cancelled, HeadlessState

    project, media_id, _media = chat
    state = HeadlessState()
    state.cancel()
    with pytest.raises(Cancelled):
        export(project, media_id, tmp_path / "c.md", state=state)
    assert not (tmp_path / "c.md").exists()
