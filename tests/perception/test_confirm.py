"""Objects that are there (core/perception/confirm.py): the rules on hand-made detection sequences,
and the real second look (SSD + EfficientNet-Lite3) on real images.

The fake looks below stand in for a second look only in the tests of the linking and voting code
around it; the real classifier and re-detection run in the tests at the bottom.
"""
from __future__ import annotations

import numpy as np

from core.perception.coco_imagenet import COCO_TO_IMAGENET
from core.perception.confirm import (ClassifierLook, Confirmer, Look, RedetectLook, Rules, SceneConfusions,
                                     SecondLook, confirm, enlarged, imagenet_ids, with_verdicts)
from mediagen import read_rgb
from models.backends.coco import COCO90
from models.types import Detection

SIZE = (640, 360)


def det(label: str, x: float, y: float, w: float = 60, h: float = 80, score: float = 0.8) -> Detection:
    return Detection((x, y, x + w, y + h), label, score)


class FakeLook:
    """Agrees (or not) with every box, and counts how often it was asked."""

    def __init__(self, agrees: bool, kind: str = "fake") -> None:
        self.agrees, self.kind, self.asked = agrees, kind, 0

    def looks(self, image, dets, t=0.0):
        self.asked += len(dets)
        return [Look(self.kind, self.agrees, d.label if self.agrees else "", 0.9, t) for d in dets]


def run(frames, look=None, confusions=None):
    c = Confirmer(look, confusions=confusions, frame_size=SIZE)
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    for t, dets in frames:
        c.update(t, image, dets)
    return c.tracks()


def test_a_one_frame_flash_is_unconfirmed_even_when_a_look_agrees():
    frames = [(i / 2, [det("person", 100, 100)] if i == 3 else []) for i in range(10)]
    for look in (None, FakeLook(True)):
        (tr,) = run(frames, look)
        assert not tr.confirmed and len(tr.hits) == 1 and tr.steady == 1
        assert tr.reason.startswith("unconfirmed: hits 1/5")
    # the ImageNet classifier is an independent model: its agreement confirms a one-frame glimpse
    (tr,) = run(frames, FakeLook(True, kind="classifier"))
    assert tr.confirmed and tr.reason.startswith("confirmed: second look classifier agrees")


def test_a_redetection_needs_two_hits_and_a_score_clear_of_the_threshold():
    def flash(score, hits):
        return [(i / 2, [det("person", 100, 100, score=score)] if 3 <= i < 3 + hits else []) for i in range(10)]

    redetect = FakeLook(True, kind="redetect")
    assert not run(flash(0.8, 1), redetect)[0].confirmed  # one frame
    assert not run(flash(0.42, 2), redetect)[0].confirmed  # a noise flash just over SSD's 0.4
    assert run(flash(0.8, 2), redetect)[0].confirmed
    assert run(flash(0.42, 5), redetect)[0].confirmed  # weak but there in every frame


def test_a_steady_moving_track_is_confirmed_by_hits():
    frames = [(i / 2, [det("person", 50 + 20 * i, 100)]) for i in range(5)]  # walks right, 20 px a frame
    (tr,) = run(frames)
    assert tr.confirmed and tr.steady == 5 and tr.motion > 0.5
    assert tr.reason == "confirmed: hits 5/5, moving"
    ev = tr.evidence()
    assert ev["confirmed"] and ev["hits"] == 5 and ev["look"] is None


def test_hits_alone_never_confirm_a_static_box_but_an_agreeing_look_does():
    frames = [(i / 2, [det("surfboard", 200, 100, score=0.89)]) for i in range(8)]
    (tr,) = run(frames)
    assert not tr.confirmed and "but static" in tr.reason
    no = FakeLook(False)
    (tr,) = run(frames, no)
    assert not tr.confirmed and "fake disagrees" in tr.reason
    assert no.asked == Rules().looks  # a disagreeing track is asked a bounded number of times
    yes = FakeLook(True)
    (tr,) = run(frames, yes)
    assert tr.confirmed and tr.agreeing_look.kind == "fake" and tr.evidence()["look"]["agrees"]
    assert yes.asked == 1  # once it agrees, no more looks


def test_a_trackers_id_links_boxes_that_jumped():
    from dataclasses import replace

    frames = [(i / 2, [replace(det("person", 50 + 100 * i, 100), track_id=7)]) for i in range(4)]
    (tr,) = run(frames)
    assert len(tr.hits) == 4 and tr.confirmed
    assert len(run([(t, [replace(d, track_id=None) for d in ds]) for t, ds in frames])) == 4


def test_gaps_and_labels_split_tracks():
    frames = [(0.0, [det("car", 100, 100), det("car", 400, 100)]),
              (0.5, [det("car", 105, 100), det("truck", 400, 100)]),
              (1.0, []), (1.5, []),
              (2.0, [det("car", 110, 100)]),  # two missed frames: still the same car
              (2.5, []), (3.0, []), (3.5, []),
              (4.0, [det("car", 110, 100)])]  # three missed: a new track
    tracks = run(frames)
    assert [(t.label, len(t.hits)) for t in tracks] == [("car", 3), ("car", 1), ("truck", 1), ("car", 1)]
    paired = with_verdicts(frames, tracks)
    assert [len(d) for _t, d in paired] == [2, 2, 0, 0, 1, 0, 0, 0, 1]
    assert paired[1][1][0][1] is tracks[0] and paired[1][1][1][1] is tracks[2]


def test_a_static_confusion_is_learned_suppressed_and_restored():
    normal = [(i / 2, [det("surfboard", 300, 50, score=0.89)] + ([det("person", 20 * i, 200)] if i < 6 else []))
              for i in range(20)]
    sc = SceneConfusions()
    learned = sc.learn(normal, SIZE)
    assert [c.label for c in learned] == ["surfboard"]  # the walking person is not a confusion
    assert not learned[0].suppressed and sc.suppressed == []
    assert sc.suppress(learned) == 1 and [c.label for c in sc.suppressed] == ["surfboard"]

    later = [(i / 2, [det("surfboard", 302, 51), det("surfboard", 40, 250)]) for i in range(6)]
    there, elsewhere = run(later, FakeLook(True), sc)
    assert not there.confirmed and "learned confusion" in there.reason and there.evidence()["confusion"]
    assert elsewhere.confirmed  # the same class somewhere else in the scene is not suppressed

    assert sc.restore("surfboard") == 1 and len(sc.entries) == 1  # undone, still listed
    assert run(later, FakeLook(True), sc)[0].confirmed
    again = SceneConfusions.from_json(sc.to_json())
    assert again.entries[0].label == "surfboard" and not again.entries[0].suppressed
    assert sc.learn(normal, SIZE) == []  # learning the same footage again adds nothing new


def test_the_mapping_table_names_real_classes():
    coco = set(COCO90.values())
    assert set(COCO_TO_IMAGENET) <= coco
    assert "person" not in COCO_TO_IMAGENET and "surfboard" not in COCO_TO_IMAGENET
    assert len(imagenet_ids("dog")) == 118 and len(imagenet_ids("bird")) == 59
    from models.backends.imagenet import IMAGENET_CLASSES
    assert {IMAGENET_CLASSES[i] for i in imagenet_ids("bus")} >= {"minibus", "school bus", "trolleybus"}
    assert 21 not in imagenet_ids("kite") and imagenet_ids("person") == frozenset()


def test_enlarged_crops_stay_inside_the_image():
    assert enlarged((0, 0, 640, 360), 640, 360, 1.6) == (0, 0, 640, 360)
    x1, y1, x2, y2 = enlarged((600, 300, 640, 360), 640, 360, 1.6)
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360 and x2 - x1 == y2 - y1 == 96


# -- the real second look ------------------------------------------------------------------

def test_the_classifier_confirms_the_bus_and_not_foliage(ssd, efficientnet, sample):
    img = read_rgb(sample("bus_jpg"))
    bus = next(d for d in ssd.detect([img])[0] if d.label == "bus")
    look = ClassifierLook(efficientnet)
    (seen,) = look.looks(img, [bus])
    assert seen.agrees and seen.kind == "classifier", seen
    assert seen.label in {"minibus", "school bus", "trolleybus", "passenger car", "recreational vehicle"}
    leaves = np.ascontiguousarray(read_rgb(sample("vacation_jpg"))[800:1300, 900:1700])  # foliage
    boxes = [Detection((40, 40, 500, 400), "bus", 0.9), Detection((200, 100, 400, 300), "dog", 0.9)]
    for seen in look.looks(leaves, boxes):
        assert not seen.agrees, seen


def test_ssds_vase_on_a_white_wall_is_not_confirmed(ssd, efficientnet, sample):
    from core.media.decode import VideoDecoder

    with VideoDecoder(sample("bikes"), max_size=SIZE) as dec:
        wall = dec.frame_at(0.5).image
    rng = np.random.default_rng(0)
    frames = [np.clip(wall + rng.normal(0, 3, wall.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    dets = ssd.detect(frames)
    assert sum(d.label == "vase" for f in dets for d in f) >= 4  # the detector's steady phantom
    look = SecondLook(ssd, efficientnet)
    tracks = confirm(list(zip([i / 2 for i in range(6)], dets)), lambda t: frames[int(t * 2)], look)
    vases = [tr for tr in tracks if tr.label == "vase"]
    assert vases and not any(tr.confirmed for tr in vases), [tr.reason for tr in vases]
    assert all(tr.looks and tr.looks[0].kind == "classifier" for tr in vases)


def test_the_redetection_confirms_people_and_not_a_texture(ssd, sample):
    img = read_rgb(sample("zidane_jpg"))
    people = [d for d in ssd.detect([img])[0] if d.label == "person"]
    assert people
    look = RedetectLook(ssd)
    assert any(lk.agrees for lk in look.looks(img, people))
    leaves = np.ascontiguousarray(read_rgb(sample("vacation_jpg"))[800:1300, 900:1700])
    (lk,) = look.looks(leaves, [Detection((300, 100, 450, 400), "person", 0.7)])
    assert not lk.agrees and lk.kind == "redetect"


def test_a_panned_bus_is_confirmed_end_to_end(ssd, efficientnet, sample):
    import cv2

    img = read_rgb(sample("bus_jpg"))
    frames = [cv2.resize(img[:, 20 * i:20 * i + 700], (467, 720)) for i in range(5)]
    tracks = confirm(list(zip([i / 2 for i in range(5)], ssd.detect(frames))), lambda t: frames[int(t * 2)],
                     SecondLook(ssd, efficientnet))
    labels = {tr.label for tr in tracks if tr.confirmed}
    assert {"bus", "person"} <= labels, [(tr.label, tr.reason) for tr in tracks]


def test_a_scenes_confusions_are_stored_per_scene_in_the_project(tmp_path):
    from core.perception.confirm import Confusion, load_confusions, save_confusions, stored_scenes
    from core.store.project import Project

    with Project.create(tmp_path / "p.kestrel") as p:
        assert load_confusions(p, "tree-cam").entries == []
        sc = SceneConfusions([Confusion("surfboard", (0.1, 0.1, 0.5, 0.5), 0.9, 0.89, True)])
        save_confusions(p, sc, "tree-cam")
        back = load_confusions(p, "tree-cam")
        assert [c.label for c in back.suppressed] == ["surfboard"]
        back.restore("surfboard")
        save_confusions(p, back, "tree-cam")
        assert load_confusions(p, "tree-cam").suppressed == [] and len(load_confusions(p, "tree-cam").entries) == 1
        assert stored_scenes(p) == ["tree-cam"]
        p.set_setting("scene-confusions/damaged", [{"label": "x"}])  # a hostile entry: nothing learned, no crash
        assert load_confusions(p, "damaged").entries == []


def test_the_redetection_waits_for_a_second_hit_the_classifier_does_not():
    """A one-frame flash of a class with no ImageNet counterpart costs no re-detection (its
    agreement could not confirm it); the second hit gets one. (A counting stand-in detector: this
    tests when the look runs, the real one is tested above.)"""

    class Counting:
        def __init__(self):
            self.crops = 0

        def detect(self, crops):
            self.crops += len(crops)
            return [[] for _ in crops]

    det_ = Counting()
    look = SecondLook(det_, tagger=object())
    assert look.min_hits("person") == Rules().look_hits and look.min_hits("bus") == Rules().classifier_hits
    c = Confirmer(look, frame_size=SIZE)
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    c.update(0.0, image, [det("person", 100, 100)])
    c.update(0.5, image, [])
    c.update(1.0, image, [])
    c.update(1.5, image, [])
    assert det_.crops == 0  # a flash: no look
    c.update(2.0, image, [det("person", 300, 100)])
    c.update(2.5, image, [det("person", 302, 100)])
    assert det_.crops == 1 and len(c.tracks()[-1].looks) == 1
