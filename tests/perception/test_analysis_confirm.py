"""Objects that are there, through the analysis job (core/perception/analysis.py + confirm.py):
real SSD + EfficientNet-Lite3 on real footage, the stored verdicts, and what readers make of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.jobs import HeadlessState
from core.perception.analysis import UNCONFIRMED, AnalysisRequest, analyze, tracks_for
from core.perception.confirm import LEGACY_REASON, Confusion, is_confirmed, why
from core.timeline import Item, Timeline, Track

SSD = "ssd-mobilenet-v2-coco"


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 2) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def wall_clip(sample, tmp_path_factory):
    """8 s of a real white wall (the bikes clip at 0.5 s), held static with sensor noise: SSD
    reports a "vase" there in most frames; nothing is there."""
    from core.media.decode import VideoDecoder

    with VideoDecoder(sample("bikes"), max_size=(640, 360)) as dec:
        wall = dec.frame_at(0.5).image
    rng = np.random.default_rng(3)
    frames = [np.clip(wall + rng.normal(0, 3, wall.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    return write_clip(tmp_path_factory.mktemp("wall") / "wall.mp4", frames)


def ssd_out(path, **kw):
    res = analyze(AnalysisRequest(str(path), models=(SSD,), **kw), HeadlessState())
    out = res.outputs[SSD]
    assert out.error is None, out.error
    return out


def box_items(tracks):
    return [it for tr in tracks if tr.kind == "boxes" for it in tr.items]


def test_the_job_confirms_the_bus_and_people_and_records_its_rules(bus_clip):
    out = ssd_out(bus_clip)
    tracks = tracks_for(out, 0.5)
    boxes = box_items(tracks)
    assert boxes and all(isinstance(it.data["confirmed"], bool) for it in boxes)
    bus = [it for it in boxes if it.label == "bus"]
    assert bus and all(is_confirmed(it.data) for it in bus), [why(it.data) for it in bus]
    ev = bus[0].data["evidence"]
    assert {"reason", "hits", "motion", "look", "object"} <= set(ev) and ev["look"]["label"]
    shown = {tr.name for tr in tracks if tr.kind == "detections" and tr.visible}
    assert {"bus", "person"} <= shown and not any(n.endswith(UNCONFIRMED) for n in shown)
    rules = out.params["confirm"]
    assert rules["rules"]["k"] == 3 and rules["classifier"] == "efficientnet-lite3" and rules["confusions"] == []


def test_a_static_walls_phantom_stays_unconfirmed_kept_and_hidden(wall_clip):
    out = ssd_out(wall_clip)
    tracks = tracks_for(out, 0.5)
    vases = [it for it in box_items(tracks) if it.label == "vase"]
    assert len(vases) >= 8, [it.label for it in box_items(tracks)]  # SSD's steady phantom is there to check
    assert not any(is_confirmed(it.data) for it in box_items(tracks)), [why(it.data) for it in box_items(tracks)]
    assert vases[0].data["evidence"]["reason"].startswith("unconfirmed")
    det = {tr.name: tr for tr in tracks if tr.kind == "detections"}
    assert "vase" not in det and not det["vase" + UNCONFIRMED].visible
    assert det["vase" + UNCONFIRMED].meta["confirmed"] is False
    assert all(it.label.startswith("vase") for it in det["vase" + UNCONFIRMED].items)


def test_with_confirmation_off_nothing_is_confirmed(bus_clip):
    out = ssd_out(bus_clip, confirm=False)
    assert out.params["confirm"] is False and out.evidence is None
    tracks = tracks_for(out, 0.5)
    assert box_items(tracks) and not any(is_confirmed(it.data) for it in box_items(tracks))
    assert "confirmation was off" in why(box_items(tracks)[0].data)
    assert all(tr.name.endswith(UNCONFIRMED) and not tr.visible for tr in tracks if tr.kind == "detections")


def test_learned_confusions_come_through_the_request_and_the_params(wall_clip, tmp_path):
    from core.perception import ops
    from core.store.project import Project

    learned = ops.learn_confusions(ops.LearnRequest(str(wall_clip)), HeadlessState())
    assert "vase" in {c.label for c in learned.confusions} and learned.frames == 16
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media(str(wall_clip), "sha256:wall", 1000, 8.0, "mp4", [])
        sc = ops.add_confusions(p, learned.confusions)
        assert {c.label for c in sc.suppressed} >= {"vase"}
        req, cached = ops.analysis_plan(p, mid, AnalysisRequest(str(wall_clip), models=(SSD,)), 8.0)
        assert cached == {} and any(c.label == "vase" and c.suppressed for c in req.confusions)
        res = analyze(req, HeadlessState())
        out = res.outputs[SSD]
        assert "vase" in [c["label"] for c in out.params["confirm"]["confusions"]]
        ops.store_analysis(p, mid, out, 0.5)
        assert ops.analysis_plan(p, mid, AnalysisRequest(str(wall_clip), models=(SSD,)), 8.0)[1] == {SSD: 1}
        vase = [it for it in box_items(ops.load_tracks(p, mid)) if it.label == "vase"]
        assert vase and all(it.data["evidence"]["confusion"] for it in vase)
        assert not any(is_confirmed(it.data) for it in vase)
        hidden = {t.name: t.visible for t in ops.load_tracks(p, mid) if t.kind == "detections"}
        assert hidden.get("vase" + UNCONFIRMED) is False  # stored hidden, loaded hidden
        ops.mark_confusion(p, "vase", sc.suppressed[0].box, False)  # undo: listed, not suppressed
        back = ops.scene_confusions(p)
        assert "vase" in {c.label for c in back.entries} and "vase" not in {c.label for c in back.suppressed}
        # another set of confusions is another result: not reused
        assert ops.analysis_plan(p, mid, AnalysisRequest(str(wall_clip), models=(SSD,)), 8.0)[1] == {}


def test_a_missing_classifier_leaves_its_classes_to_hits_and_says_so(bus_clip, monkeypatch):
    import models.loaded
    from models.catalogue import ModelError

    def missing(name, **_kw):
        raise ModelError(f"{name} is not installed")

    monkeypatch.setattr(models.loaded, "held", missing)
    out = ssd_out(bus_clip)
    verdicts = [(d.label, e) for (_t, dets), frame in zip(out.frames, out.evidence) for d, e in zip(dets, frame)]
    assert verdicts and all("not installed" in e["evidence"]["look_error"] for _l, e in verdicts)
    bus = [e for label, e in verdicts if label == "bus"]
    # the slowly panned bus barely moves: without the classifier nothing confirms it (no guess)
    assert bus and not any(e["confirmed"] for e in bus), bus[0]
    # people have no ImageNet class: the re-detection still looks at them
    people = [e for label, e in verdicts if label == "person"]
    assert any(e["confirmed"] and "redetect" in e["evidence"]["reason"] for e in people), people[0]


def test_is_confirmed_never_makes_a_fact_of_an_unchecked_item():
    assert is_confirmed({"confirmed": True})
    for data in ({}, {"confirmed": False}, {"confirmed": 1}, {"confirmed": "yes"}, None, {"box": [0, 0, 1, 1]}):
        assert not is_confirmed(data)
    assert why({"box": [0, 0, 1, 1]}) == LEGACY_REASON
    assert why({"confirmed": False, "evidence": {"reason": "unconfirmed: hits 1/5"}}) == "unconfirmed: hits 1/5"


def test_the_overlay_greys_unconfirmed_and_legacy_boxes_and_filters_them():
    from core.perception.overlay import OverlayModel

    box = {"box": [10, 10, 50, 50], "size": [100, 100]}
    objects = [Item(0, 1, "car", 0.9, data={**box, "confirmed": True, "evidence": {"reason": "confirmed: moving"}}),
               Item(0, 1, "surfboard", 0.89, data={**box, "confirmed": False,
                                                   "evidence": {"reason": "unconfirmed: hits 5/5 but static"}}),
               Item(0, 1, "kite", 0.7, data=dict(box))]  # stored before confirmation existed
    tl = Timeline()
    tl.set_track(Track("boxes", "ssd", objects, meta={"task": "detect"}, visible=False))
    tl.set_track(Track("boxes", "mtcnn", [Item(0, 1, "face", 0.99, data=dict(box))], meta={"task": "faces"}))
    ov = OverlayModel(tl)
    got = {b.label: b for b in ov.boxes_at(0.5)}
    assert got["car"].confirmed is True and got["car"].caption == "car"
    assert got["surfboard"].confirmed is False and got["surfboard"].caption == "? surfboard"
    assert "static" in got["surfboard"].reason
    assert got["kite"].confirmed is False and got["kite"].reason == LEGACY_REASON
    assert got["face"].confirmed is None  # faces are not checked: drawn as always
    assert ov.confirmed_counts() == {"car": (1, 0), "surfboard": (0, 1), "kite": (0, 1)}
    ov.set_show_unconfirmed(False)
    assert {b.label for b in ov.boxes_at(0.5)} == {"car", "face"}
    assert {it.label for it, _src in ov.rows()} == {"car", "face"}


def test_partial_results_carry_the_verdicts_so_far(bus_clip):
    from core.perception.analysis import AnalysisPartial, partial_tracks

    got = []
    analyze(AnalysisRequest(str(bus_clip), models=(SSD,)), HeadlessState(on_partial=got.append))
    parts = [p for p in got if isinstance(p, AnalysisPartial) and p.model == SSD]
    assert parts and all(len(p.evidence) == len(p.frames) for p in parts)
    tracks = [tr for p in parts for tr in partial_tracks(p, "SSD", 0.5)]
    boxes = [it for tr in tracks if tr.kind == "boxes" for it in tr.items]
    assert any(is_confirmed(it.data) for it in boxes)
    assert all(tr.visible == (not tr.name.endswith(UNCONFIRMED)) for tr in tracks if tr.kind == "detections")
