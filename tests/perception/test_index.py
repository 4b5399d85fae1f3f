"""The media index (core.perception.index) on real footage with a real bus planted, and FOCUS on it.

The clip: 24 s of the FOCUS bench's filler (real clips: Sintel, Big Buck Bunny, an airliner,
Chaplin, a city at night — none has a bus) with the real bus photo panned for 6 s at ~10 s,
320×180 at 15 fps with a keyframe every second. The index is built once for the module (real
SSD, EfficientNet, MiniLM; faces off to keep the tests short) and stored in a project.
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.focus import build_video, pieces
from core.jobs import HeadlessState
from core.perception import index as mi

CFG = mi.IndexConfig(faces=None)
PLANT_AT = 10.0


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from core.media.decode import probe
    from core.perception import ops
    from core.store.project import Project

    filler, plant = pieces(15, (320, 180), 15, 6.0)
    folder = tmp_path_factory.mktemp("index")
    path = folder / "planted.mp4"
    seg = build_video(path, filler, plant, 24.0, PLANT_AT)
    project = Project.create(folder / "p.kestrel")
    mid = ops.register_media(project, probe(path))
    idx, built = mi.ensure_index(project, mid, mi.IndexRequest(str(path), CFG), HeadlessState())
    assert built
    yield str(path), seg, project, mid, idx
    project.close()


def test_index_is_built_stored_and_reloaded(indexed):
    path, seg, project, mid, idx = indexed
    plan = idx.params["plan"]
    assert len(idx) == plan["described"] == plan["samples"] > 0 and idx.keyframe.any()
    assert plan["frame_size"] == [320, 180] and plan["sampler"] in ("core.media.changes", "keyframes")
    assert np.all(np.diff(idx.times) > 0) and idx.probs.shape == (len(idx), 1000)
    run = [r for r in project.list_runs(mid) if r.kind == mi.INDEX_KIND][-1]
    assert run.producer == mi.PRODUCER and run.params["plan"]["samples"] == len(idx)
    back = mi.load_index(project, mid, CFG)
    assert back is not None and np.array_equal(back.times, idx.times) and back.facets == idx.facets
    assert np.array_equal(back.objects, idx.objects) and np.array_equal(back.probs, idx.probs)
    on_bus = idx.inside(*seg)
    assert len(on_bus) and any(b.label == "bus" for i in on_bus for b in idx.confirmed(int(i)))
    assert not any(b.label == "bus" for i in range(len(idx)) if i not in on_bus for b in idx.confirmed(i))
    from models.loaded import held

    best_t, best_p = max(idx.candidates(held("minilm").embed(["a bus"])[0], k=3), key=lambda c: c[1])
    assert seg[0] <= best_t < seg[1] and best_p > 0.5
    emb = idx.image_embedding()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_stale_index_is_rebuilt_not_misread(indexed, monkeypatch):
    path, _seg, project, mid, idx = indexed
    other = mi.IndexConfig(detector=None, faces=None, looks=False)  # tags only: cheap to rebuild
    assert mi.load_index(project, mid, other) is None
    assert mi.load_index(project, mid, CFG, start=5.0) is None  # another range
    frames, meta = project.get_array(mid, f"{mi.KEY}/frames")
    project.put_array(mid, f"{mi.KEY}/frames", frames, meta={**meta, "content_hash": "other-file"})
    assert mi.load_index(project, mid, CFG) is None  # made for other contents
    project.put_array(mid, f"{mi.KEY}/frames", frames, meta={**meta, "params": {**meta["params"], "version": 0}})
    assert mi.load_index(project, mid, CFG) is None  # another index version
    rebuilt, built = mi.ensure_index(project, mid, mi.IndexRequest(path, other), HeadlessState())
    assert built and len(rebuilt.objects) == 0 and mi.load_index(project, mid, other) is not None
    assert mi.load_index(project, mid, CFG) is None  # one index per file: the new one replaced it
    mi.store_index(project, mid, idx)  # put the module's index back for the next test
    assert mi.load_index(project, mid, CFG) is not None


def test_focus_with_the_index_finds_the_bus_and_a_second_question_does_not_rebuild(indexed, monkeypatch):
    from core.focus.search import FocusRequest, select_frames

    path, seg, project, mid, idx = indexed
    res = select_frames(FocusRequest(path, "a bus", k=6, index=idx, faces=False, rescore_frames=4), HeadlessState())
    assert res.shortlist and res.from_index > 0 and res.frames_scored <= res.from_index + 4 + len(res.shortlist)
    assert any(seg[0] <= f.time < seg[1] for f in res.frames)
    assert max(s for _t, s in res.scored) > 0.9
    from core.focus.store import store_selection

    run_id = store_selection(project, mid, res)  # stored with the index's settings, not the index
    run = next(r for r in project.list_runs(mid) if r.id == run_id)
    assert run.params["index"]["samples"] == len(idx) and run.params["index"]["tagger"] == CFG.tagger

    def no_build(*_a, **_k):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(mi, "build_index", no_build)
    again, built = mi.ensure_index(project, mid, mi.IndexRequest(path, CFG), HeadlessState())
    assert not built
    res2 = select_frames(FocusRequest(path, "an airplane in the sky", k=4, index=again, faces=False,
                                      rescore_frames=0), HeadlessState())
    assert res2.frames_scored == res2.from_index > 0 and len(res2.frames) == 4


def test_chat_and_tagging_read_the_index(indexed):
    from core.chat.session import index_moment
    from core.tagging.features import FeatureConfig, shot_features
    from core.tagging.shots import Shot

    path, seg, _project, _mid, idx = indexed
    at, t, p = index_moment(idx, "when does the bus come by?", window_s=10.0)
    assert seg[0] <= t < seg[1] and p > 0.5 and at == pytest.approx(min(idx.duration, t + 5.0))
    assert index_moment(idx, "a giraffe eating leaves", window_s=10.0) is None
    cfg = FeatureConfig(detector=None, faces=None, vad=None, asr=None, ocr=None, text_embed=None)
    shots = [Shot(0, seg[0], seg[1], int(seg[0] * 15), int(seg[1] * 15)), Shot(1, 0.0, 0.5, 0, 7)]
    feats = shot_features(path, shots, HeadlessState(), cfg, media_index=idx)
    rows = idx.inside(seg[0], seg[1])
    assert "media index" in feats.info[0]["imagenet_from"] and feats.params["media_index"]["tagger"] == cfg.tagger
    probs = idx.probs[rows].astype(np.float32)
    mean = (probs / probs.sum(axis=1, keepdims=True)).mean(axis=0)
    in0 = next(i for i, c in enumerate(feats.columns["visual"]) if c.startswith("in:"))
    assert np.allclose(feats.values["visual"][0, in0:in0 + 1000], mean, atol=1e-5)
    assert feats.info[0]["imagenet"][0][0] == feats.columns["visual"][in0 + int(np.argmax(mean))][3:]
    assert "imagenet_from" in feats.info[1] or len(idx.inside(0.0, 0.5)) == 0
