"""Facts a small model cannot make, computed in code (#17 item 2) and said with their evidence
(item 4): whether a file has audio or video, when speech starts and ends, an object's colour
from its pixels, first and last appearance over the part of the file perception covered, what is
in view — weak evidence said as weak.

On constructed perception logs and generated images first (quick), then on real photos (looked
at: the Madrid bus is blue, the car park's SUV is silver, Zidane wears a black suit) and through
``main.py chat``'s own path (core.cli.command("chat")) on generated clips: one with no audio
track, one where espeak-ng speaks from 15 s, the bus photo as a clip.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import mediagen
from core.chat.grounding import ground, question_kind
from core.chat.perception_log import PerceptionLog
from core.cli import command
from core.perception.colour import NAMES, box_colour, pixel_names
from core.timeline import Item, Track
from models.types import Detection

cmd_chat = command("chat")


# -- colour from pixels ------------------------------------------------------------------------

@pytest.mark.parametrize("rgb,name", [
    ((250, 250, 250), "white"), ((128, 128, 128), "grey"), ((10, 10, 10), "black"), ((220, 20, 30), "red"),
    ((240, 140, 20), "orange"), ((240, 230, 40), "yellow"), ((30, 170, 60), "green"), ((30, 80, 220), "blue"),
    ((130, 40, 200), "purple"), ((250, 160, 200), "pink"), ((120, 70, 30), "brown"), ((40, 200, 220), "blue"),
    ((200, 205, 210), "white"), ((90, 95, 100), "grey")])
def test_each_basic_colour_is_named(rgb, name):
    assert NAMES[int(pixel_names(np.array([[rgb]], np.uint8))[0, 0])] == name


def _scene(obj_rgb, bg_rgb, *, size=(240, 320), box=(80, 60, 240, 180), noise=12, seed=0) -> np.ndarray:
    """A noisy ``bg_rgb`` frame with an ``obj_rgb`` ellipse filling most of ``box`` (its corners
    show the background, as a detector's box around a van shows the road)."""
    rng = np.random.default_rng(seed)
    img = np.empty((*size, 3), np.float32)
    img[:] = bg_rgb
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0] = obj_rgb
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("obj,bg,name", [((245, 245, 245), (70, 110, 60), "white"),  # a white van on a hedge
                                         ((200, 30, 30), (120, 120, 120), "red"),  # a red car on asphalt
                                         ((30, 60, 200), (240, 240, 240), "blue"),  # a blue bus on a white wall
                                         ((20, 20, 20), (200, 180, 60), "black")])
def test_the_colour_of_a_box_ignores_its_backdrop(obj, bg, name):
    img = _scene(obj, bg)
    c = box_colour(img, (80, 60, 240, 180))
    assert c.name == name and not c.weak, c
    # a loose box (twice the object's margin): the backdrop fills the corners, the object still wins
    c = box_colour(img, (60, 45, 260, 195))
    assert c.name == name, c


def test_a_split_box_is_weak_and_an_empty_one_is_none():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = (220, 20, 30)
    img[:, 50:] = (30, 170, 60)
    c = box_colour(img, (0, 0, 100, 100))
    assert c.weak and set(c.shares) >= {"red", "green"}, c
    assert "weak" in c.describe()
    assert box_colour(img, (50, 50, 50, 80)) is None  # no pixel
    assert box_colour(img, (0, 0, 4, 4)).weak  # 4 px: too small to trust


@pytest.fixture(scope="module")
def photos(sample):
    return {n: mediagen.read_rgb(sample(n)) for n in ("bus_jpg", "vacation_jpg", "zidane_jpg")}


def test_real_photos_colours(photos):
    """Boxes as SSD finds them in these photos (its output, written down)."""
    bus = box_colour(photos["bus_jpg"], (5, 213, 810, 758))  # the Madrid EMT bus: blue, a white roof
    assert bus.name == "blue", bus
    car = box_colour(photos["vacation_jpg"], (1486, 465, 2406, 900))  # silver SUV behind red-leaved plants
    assert car.name in ("white", "grey") and car.shares.get("red", 0) < 0.1 and car.shares.get("green", 0) < 0.1, car
    suit = box_colour(photos["zidane_jpg"], (740, 47, 1149, 698))  # the man on the right: a black suit
    assert suit.name == "black", suit


# -- facts on constructed logs -------------------------------------------------------------------

def _file_log(*, duration=600.0, seen=(0.0, 600.0), has_audio=True) -> PerceptionLog:
    """A 10-minute file: one person from 6:40 to 6:50, a car in one frame at 9:59 (score 0.41)."""
    log = PerceptionLog(step=0.5)
    log.duration, log.seen, log.has_audio, log.has_video = duration, seen, has_audio, True
    for i in range(int(seen[0] * 2), int(seen[1] * 2)):
        t = i * 0.5
        dets = [Detection((300, 100, 360, 300), "person", 0.9)] if 400 <= t < 410 else []
        if t == 599.0:
            dets = [Detection((100, 200, 220, 260), "car", 0.41)]
        log.add_frame(t, dets, size=(640, 360))
    return log


def test_first_and_last_appearance_over_the_whole_file():
    g = ground("When do people appear in this video?", _file_log(), at=600.0, window_s=30)
    assert g.kind == "when" and g.final
    assert g.direct.startswith("The person first appeared at [06:40].") and "[06:40–06:50]" in g.direct
    assert "whole file" in g.direct and "09:" not in g.direct, g.direct
    g = ground("When did the person leave?", _file_log(), at=600.0, window_s=30)
    assert "last seen at [06:50]" in g.direct


def test_when_perception_saw_only_the_window_the_answer_says_so():
    g = ground("When do people appear in this video?", _file_log(seen=(570.0, 600.0)), at=600.0, window_s=30)
    assert g.final and g.direct.startswith("No person was seen in only 09:30–10:00 of the 10:00 file"), g.direct
    assert "not looked at" in g.direct


def test_a_weak_sighting_is_said_as_weak_and_never_the_first_appearance():
    g = ground("When was a car seen?", _file_log(), at=600.0, window_s=30)
    assert "Weak evidence only" in g.direct and "0.41" in g.direct and "may not be there" in g.direct, g.direct
    log = _file_log()
    log.add_frame(100.0, [Detection((300, 100, 360, 300), "person", 0.45)], size=(640, 360))  # a phantom
    g = ground("When does someone appear?", log, at=600.0, window_s=30)
    assert g.direct.startswith("The person first appeared at [06:40]."), g.direct
    assert "Weak sightings, not counted: [01:40]" in g.direct


def test_no_audio_track_is_a_plain_no():
    log = _file_log(has_audio=False)
    for q in ("Can you hear anything?", "Is there any sound?", "What can be heard right now?"):
        g = ground(q, log, at=600.0)
        assert g.kind == "audio" and g.final and g.direct == "No: this file has no audio track.", (q, g.direct)
    g = ground("When did someone start speaking?", log, at=600.0)
    assert g.kind == "speech" and "no audio track" in g.direct
    assert ground("Does this file have a video stream?", log).direct == "Yes: this file has a video stream."


def test_audio_without_anything_recognised_says_what_was_listened_for():
    log = _file_log()
    log.heard = (0.0, 600.0)
    g = ground("Can you hear anything?", log, at=600.0, window_s=30)
    assert g.direct.startswith("The file has an audio track, but Kestrel recognised nothing"), g.direct
    log.add_speech(590.0, 593.0, "Over here.")
    log.add_event(595.0, 596.0, "audio", "siren", 0.8)
    g = ground("Can you hear anything?", log, at=600.0, window_s=30)
    assert g.direct.startswith('Yes: speech: [09:50–09:53] "Over here."') and "siren (0.80)" in g.direct


def _speech_log() -> PerceptionLog:
    """Voice activity from 15 s to 19 s and 24 s to 26 s; Whisper's (later, looser) segments."""
    vad = Track("speech", "voice activity", [Item(15.0, 19.0, "speech", 0.9), Item(24.0, 26.0, "speech", 0.8)])
    asr = Track("speech", "transcript", [Item(15.2, 19.5, "Hello, is anyone there?", 0.9),
                                         Item(24.0, 26.4, "I can hear you.", 0.9)])
    boxes = Track("boxes", "ssd", [Item(24.0, 24.5, "person", 0.8, None, {"box": [0, 0, 10, 10], "size": [64, 48]})],
                  meta={"task": "detect"})
    log = PerceptionLog.from_tracks([vad, asr, boxes])
    log.has_audio, log.duration, log.heard = True, 40.0, (0.0, 40.0)
    return log


def test_when_speech_starts_and_ends_comes_from_voice_activity():
    log = _speech_log()
    assert [ln.kind for ln in log.lines()].count("speech") == 2  # voice activity is no log line
    g = ground("When did someone start speaking?", log, at=40.0, window_s=30)
    assert g.kind == "speech" and g.final  # "someone" is the voice here, not a person in view
    assert g.direct.startswith("Speech starts at [00:15]") and "[00:24]" not in g.direct.split(" and ")[0], g.direct
    assert '"Hello, is anyone there?"' in g.direct
    g = ground("When does the talking stop?", log, at=40.0, window_s=30)
    assert g.direct.startswith("Speech ends at [00:26]"), g.direct
    assert ground("Does anyone speak?", log, at=40.0).direct.startswith("Yes: speech is heard from [00:15]")
    assert "6 s in all" in ground("How long does someone talk?", log, at=40.0).direct
    quiet = PerceptionLog()
    quiet.has_audio, quiet.duration, quiet.heard = True, 40.0, (0.0, 40.0)
    assert ground("When did someone start speaking?", quiet).direct == \
        "No speech was detected in the whole file (00:00–00:40)."
    deaf = PerceptionLog()
    deaf.has_audio = True
    assert "has not listened" in ground("When did someone start speaking?", deaf).direct


def test_what_is_in_view_with_scores_weak_ones_marked():
    log = _file_log()
    log.add_event(598.0, 600.0, "tag", "parking lot", 0.6)
    g = ground("What objects are in view?", log, at=599.0, window_s=30)
    assert g.kind == "view" and g.final
    assert g.direct.startswith("In view at [09:59]: car (0.41 — weak).") and "parking lot (0.60)" in g.direct, g.direct
    g = ground("What do you see?", log, at=300.0, window_s=30)
    assert g.direct.startswith("In view at [05:00]: nothing recognised."), g.direct
    g = ground("What is in view?", log, at=405.0, window_s=30)
    assert g.direct.startswith("In view at [06:45]: person (0.90)."), g.direct


def test_colour_of_a_named_object_is_read_at_its_box():
    img = _scene((245, 245, 245), (90, 90, 95), size=(360, 640), box=(300, 100, 500, 260))
    img[40:90, 40:120] = (210, 30, 30)  # a red car elsewhere in the frame
    log = PerceptionLog(step=0.5)
    log.add_frame(10.0, [Detection((300, 100, 500, 260), "truck", 0.82), Detection((40, 40, 120, 90), "car", 0.7)],
                  size=(640, 360))
    half = img[::2, ::2]  # the window's frames may be smaller than perception's: boxes are scaled
    g = ground("What colour is the van?", log, at=10.0, frames=[(9.5, half), (10.0, half)])
    assert g.kind == "colour" and g.final and g.labels[0] == "truck"
    assert g.direct.startswith("The truck at [00:10] is white"), g.direct
    assert "red" in ground("What color is the car?", log, at=10.0, frames=[(10.0, img)]).direct
    assert "cannot read its colour" in ground("What colour is the dog?", log, at=10.0, frames=[(10.0, img)]).direct
    assert "No frame" in ground("What colour is the van?", log, at=10.0).direct


@pytest.mark.parametrize("q,kind", [("What does the sign say?", "open"), ("What is written on the screen?", "open"),
                                    ("What did he say?", "open"), ("How many people are there?", "count"),
                                    ("Is there a bus?", "presence"), ("What colour is the bus?", "colour"),
                                    ("When did someone start speaking?", "speech"), ("Can you hear a car?", "audio")])
def test_question_kinds(q, kind):
    assert question_kind(q, ["bus"] if "bus" in q else []) == kind


# -- through main.py chat's own path ---------------------------------------------------------------

def _talking_clip(path: Path, *, speech_at: float, duration: float, text: str) -> Path:
    """A small video clip (mediagen's frames) whose only sound is espeak-ng saying ``text`` from ``speech_at`` s."""
    voice = mediagen.speak(text, rate=16000)
    audio = np.zeros(int(duration * 16000), np.float32)
    i = int(speech_at * 16000)
    audio[i:i + len(voice)] = voice[: len(audio) - i]
    fps, size = 5, (160, 120)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = *size, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        for k in range(int(duration * fps)):
            frame = av.VideoFrame.from_ndarray(mediagen.render_frame(k, size), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        mediagen._write_audio(out, a, audio[None, :])
    return path


def test_chat_command_on_a_file_without_audio(tmp_path, capsys):
    clip = mediagen.make_video_only(tmp_path / "silent.mp4", duration=4.0)
    assert cmd_chat([str(clip), "--ask", "Can you hear anything?"]) == 0
    out = capsys.readouterr().out
    assert "No: this file has no audio track." in out and "the model was not asked" in out, out
    assert "hear the person" not in out


@pytest.mark.slow
def test_chat_command_finds_when_speech_starts(tmp_path, capsys):
    clip = _talking_clip(tmp_path / "quiet_room.mp4", speech_at=15.0, duration=22.0,
                         text="Good morning. I am reading a sentence in a quiet room.")
    assert cmd_chat([str(clip), "--ask", "When did someone start speaking?"]) == 0
    out = capsys.readouterr().out
    assert "Speech starts at [00:15]" in out, out
    assert "whole file" in out


def test_chat_command_names_the_colour_and_what_is_in_view(bus_clip, capsys):
    assert cmd_chat([str(bus_clip), "--ask", "What colour is the bus?"]) == 0
    out = capsys.readouterr().out
    assert "The bus at [" in out and "is blue" in out, out
    assert cmd_chat([str(bus_clip), "--ask", "What objects are in view?"]) == 0
    out = capsys.readouterr().out
    assert "In view at [" in out and "bus (0.9" in out and "people" in out, out


def test_presence_outside_the_window_points_to_where_it_was_seen():
    g = ground("Is there a person?", _file_log(), at=600.0, window_s=30)
    assert g.kind == "presence"
    assert g.facts[0].text == ("No person in 09:30–10:00; in the whole file (00:00–10:00) it was seen at "
                               "[06:40–06:50]."), g.facts[0].text


def test_any_sound_question_on_a_file_without_audio_says_so():
    log = _file_log(has_audio=False)
    for q in ("What is being said?", "How many speakers are there?", "Is anyone talking?", "What sounds can be heard?"):
        g = ground(q, log, at=600.0)
        assert g.final and "no audio track" in g.direct, (q, g.kind, g.direct)
    assert ground("What does the sign say?", log, at=600.0).kind == "open"  # reading, not hearing


def test_when_a_sound_is_heard_over_the_whole_log():
    log = _speech_log()
    log.add_event(6.0, 6.5, "audio", "loud impact", 0.9)
    g = ground("When is the loud sound heard?", log, at=40.0, window_s=10)
    assert g.kind == "audio" and g.direct.startswith("Sounds Kestrel names: loud impact (0.90) at [00:06]"), g.direct


def test_colour_of_something_no_detector_knows_is_what_stands_out():
    img = _scene((30, 60, 200), (235, 235, 235), size=(360, 640), box=(260, 120, 380, 240))
    g = ground("What colour is the circle?", PerceptionLog(), at=4.0, frames=[(4.0, img)])
    assert g.kind == "colour" and g.direct.startswith("What stands out from the backdrop at [00:04] (centre) is blue")
    g = ground("What colour is the circle?", PerceptionLog(), at=4.0, frames=[(4.0, np.full((90, 160, 3), 200, np.uint8))])
    assert "cannot say its colour" in g.direct
    grey = np.repeat(_scene((30, 30, 30), (200, 200, 200))[..., :1], 3, axis=2)
    g = ground("Is this film in colour or in black and white?", PerceptionLog(), at=1.0, frames=[(1.0, grey)])
    assert g.direct.startswith("It is in black and white"), g.direct
    g = ground("Is this film in colour or in black and white?", PerceptionLog(), at=1.0, frames=[(1.0, img)])
    assert g.direct.startswith("It is in colour"), g.direct


def test_boxes_perception_did_not_confirm_are_weak():
    """A box item's ``confirmed`` flag (core.perception.confirm's verdict, when the analysis writes
    it) makes a sighting weak however high its score: SSD's "surfboard" at 0.89 on a static tree."""
    items = [Item(t, t + 0.5, "surfboard", 0.89, None, {"box": [10, 10, 60, 90], "size": [160, 120], "confirmed": False})
             for t in (20.0, 20.5, 21.0, 21.5)]
    items += [Item(t, t + 0.5, "person", 0.8, None, {"box": [80, 20, 120, 110], "size": [160, 120], "confirmed": True})
              for t in (30.0, 30.5, 31.0)]
    log = PerceptionLog.from_tracks([Track("boxes", "ssd", items, meta={"task": "detect"})])
    g = ground("When does the surfboard appear?", log, at=40.0)
    assert "Weak evidence only" in g.direct and "unconfirmed" in g.direct, g.direct
    assert ground("When does a person appear?", log, at=40.0).direct.startswith("The person first appeared at [00:30]. Seen")
    g = ground("What is in view?", log, at=21.0, window_s=10)
    assert g.direct.startswith("In view at [00:21]: surfboard (0.89, unconfirmed)."), g.direct


def test_chat_command_uses_a_projects_stored_perception_over_the_whole_file(tmp_path, capsys):
    """"When do people appear?" asked at the end of a file with a 3 s window: the project's stored
    detector run covers the whole file, so the answer is the person at 12 s, not "nothing in the window"."""
    from core.media.decode import probe
    from core.perception import ops
    from core.perception.analysis import AnalysisRequest, ModelOutput, run_params
    from core.store.project import Project
    from models.catalogue import get_spec

    clip = mediagen.make_video_only(tmp_path / "yard.mp4", duration=20.0, fps=5, size=(160, 120))
    spec = get_spec("ssd-mobilenet-v2-coco")
    frames = [(i * 0.5, [Detection((40.0, 20.0, 80.0, 110.0), "person", 0.9, 1)] if 12.0 <= i * 0.5 < 14.0 else [])
              for i in range(40)]
    out = ModelOutput(spec.name, spec.title, spec.task, spec.version or "1",
                      run_params(AnalysisRequest(path=str(clip), models=(spec.name,)), spec, 20.0),
                      frames=frames, frame_size=(160, 120), started_at=1.7e9, duration_s=1.0)
    if hasattr(out, "evidence"):  # the run confirmed its person (core.perception.confirm): a fact, not a weak sighting
        out.evidence = [[{"confirmed": True, "evidence": {"hits": 4}} for _d in dets] for _t, dets in frames]
    with Project.create(tmp_path / "yard.kestrel") as p:
        ops.store_analysis(p, ops.register_media(p, probe(str(clip))), out, 0.5)
    assert cmd_chat([str(clip), "--ask", "When do people appear in this video?", "--window", "3",
                     "--project", str(tmp_path / "yard.kestrel")]) == 0
    text = capsys.readouterr().out
    assert "The person first appeared at [00:12]. Seen [00:12–00:14], in the whole file (00:00–00:20)." in text, text


def test_an_empty_scene_is_nothing_recognised(tmp_path, capsys):
    """A file the detector looked at and found nothing in: no box is stored, yet the answer is
    "nothing recognised", not the model's "Objects are in view."."""
    log = PerceptionLog.from_tracks([Track("boxes", "ssd", [], meta={"task": "detect"})])
    log.seen, log.duration = (0.0, 10.0), 10.0
    g = ground("What objects are in view?", log, at=10.0)
    assert g.final and g.direct.startswith("In view at [00:10]: nothing recognised."), g.direct
    assert ground("What objects are in view?", PerceptionLog(), at=10.0).direct is None  # nothing looked at: unknown
    clip = mediagen.make_video_only(tmp_path / "wall.mp4", duration=3.0)
    assert cmd_chat([str(clip), "--ask", "What objects are in view?"]) == 0
    assert "nothing recognised" in capsys.readouterr().out


def test_when_something_is_said_comes_from_the_transcript():
    log = _speech_log()
    log.add_speech(30.0, 33.0, "What brings you to the land of the gatekeeper?")
    g = ground("When does someone mention the gatekeepers?", log, at=40.0)
    assert g.kind == "speech" and g.direct.startswith("It is said at [00:30]:"), g.direct  # not "a person appears"
    assert ground("Does anyone say hello?", log, at=40.0).direct.startswith("Yes: it is said at [00:15]")
    assert ground("When does someone mention the dragon?", log, at=40.0).direct.startswith(
        'No transcribed line says "dragon" in the whole file')
    g = ground("When does the second voice start speaking?", log, at=40.0)
    assert g.direct.startswith("Kestrel cannot tell voices apart"), g.direct  # never the first voice's time as its answer


def test_a_sound_nothing_names_is_not_invented():
    log = _speech_log()
    g = ground("When was the loud bang?", log, at=40.0)
    assert g.kind == "audio" and g.direct.startswith("Kestrel recognised no bang in the whole file") and "[" not in g.direct
    log.add_event(6.0, 6.4, "audio", "bang", 0.7)
    assert ground("When was the loud bang?", log, at=40.0).direct == "Sounds Kestrel names: bang (0.70) at [00:06]."


@pytest.mark.parametrize("q", ["Is more than one person speaking?", "Are there two different voices?",
                               "Who is speaking?"])
def test_how_many_or_which_voices_is_not_answered_from_voice_activity(q):
    g = ground(q, _speech_log(), at=40.0)
    assert g.direct.startswith("Kestrel cannot tell voices apart"), (q, g.kind, g.direct)


def test_hearing_someone_talk_is_voice_activity_not_a_quote():
    g = ground("Can you hear anyone talking?", _speech_log(), at=40.0)
    assert g.direct.startswith("Yes: speech is heard from [00:15]"), g.direct
