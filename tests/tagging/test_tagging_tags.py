"""Tag naming, the analyst's edits, and the archive index on stored features (no models run)."""
from __future__ import annotations

import numpy as np
import pytest

from projectkit import _fake_archive

from core.tagging.stored import merge_edits
from core.tagging.tags import LOW, Tag, cluster_names, keywords, shot_tags, voices


def test_shot_tags_name_what_the_features_saw():
    info = {"objects": {"person": 3, "bicycle": 1}, "imagenet": [["seashore, coast", 0.4], ["sandbar", 0.02]],
            "faces": 2, "face_area": 0.09, "words": "we met at the harbour today", "ocr": ["EXIT"]}
    vis = {"coco:person": 2.5, "coco:bicycle": 0.3, "faces_mean": 1.5, "motion": 0.01, "pan": 0.0,
           "brightness": 0.5, "saturation": 0.3}
    aud = {"vad": 0.8, "speech": 0.8, "rms_db": -20.0}
    tags = {t.name: t for t in shot_tags(info, vis, aud, True)}
    assert {"people", "bicycle", "seashore", "2 faces", "close-up", "static", "on-screen text", "speech"} <= set(tags)
    assert tags["people"].confidence > tags["bicycle"].confidence  # in every frame vs a third of them
    assert "sandbar" not in tags  # p = 0.02 is noise
    assert "sound without speech" not in tags and "silence" not in tags
    quiet = {t.name for t in shot_tags({}, None, {"vad": 0.0, "speech": 0.0, "rms_db": -70.0}, False)}
    assert quiet == {"silence"}
    grey = {t.name for t in shot_tags({}, {"saturation": 0.0, "brightness": 0.4, "motion": 0.5, "pan": 0.0},
                                      None, False)}
    assert {"black and white", "moving"} <= grey


def test_keywords_prefer_words_rare_in_the_archive():
    texts = ["the harbour master opened the harbour gate", "the gate was closed", "gate gate gate", ""]
    kw = keywords(texts, top=2)
    assert kw[0][0][0] == "harbour" and kw[3] == []
    assert all(w != "the" for ws in kw for w, _ in ws)


def test_voices_group_alike_fingerprints():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 26), rng.normal(0, 1, 26) + 4
    fp = np.stack([a + rng.normal(0, .1, 26) for _ in range(4)] + [b + rng.normal(0, .1, 26) for _ in range(4)]
                  + [np.zeros(26)])
    ids, conf = voices(fp, np.array([True] * 8 + [False]))
    assert len(set(ids[:4])) == 1 and len(set(ids[4:8])) == 1 and ids[0] != ids[4] and ids[8] == -1
    assert (conf[:8] > 0).all()


def test_cluster_names_come_from_over_represented_tags():
    tags = [[Tag("car", "object", .9), Tag("moving", "shot", .5)]] * 3 + [[Tag("speech", "speech", .9),
                                                                            Tag("moving", "shot", .5)]] * 3
    names = cluster_names(tags, np.array([0, 0, 0, 1, 1, 1]))
    assert names[0].startswith("car") and names[1].startswith("speech") and "moving" not in names[0]


def test_edits_overlay_automatic_tags():
    tags = [Tag("person", "object", .9), Tag("kite", "object", .2)]
    assert tags[1].low and LOW > .2
    out = merge_edits(tags, {"renamed": {"person": "reporter"}, "state": {"kite": "rejected"},
                             "added": [{"name": "interview"}]})
    by = {t.name: t for t in out}
    assert set(by) == {"reporter", "kite", "interview"}
    assert by["kite"].state == "rejected" and by["interview"].state == "user" and not by["kite"].low


def test_edits_and_vocabulary_are_stored_in_the_project(tmp_path):
    from core.store.project import Project
    from core.tagging import TaggingError
    from core.tagging.index import ShotRef, edit_tag, set_vocabulary

    with Project.create(tmp_path / "p.kestrel") as p:
        ref = ShotRef(1, "/x.mp4", 0, 1.0, 2.0, "qs256:abc")
        set_vocabulary(p, ["interview", " outdoors ", "interview", ""])
        edit_tag(p, ref, "add", "interview")
        with pytest.raises(TaggingError, match="vocabulary"):
            edit_tag(p, ref, "add", "explosion")
        edit_tag(p, ref, "reject", "kite")
        edit_tag(p, ref, "rename", "person", "reporter")
        edit_tag(p, ref, "accept", "reporter")
    with Project.open(tmp_path / "p.kestrel") as p:
        from core.tagging.index import EDITS_SETTING, vocabulary
        assert vocabulary(p) == ["interview", "outdoors"]
        e = p.get_setting(EDITS_SETTING)[ref.key]
        out = {t.name: t.state for t in merge_edits([Tag("person", "object", .9), Tag("kite", "object", .3)], e)}
        assert out == {"reporter": "accepted", "kite": "rejected", "interview": "user"}


def test_index_with_dynamic_experts_shows_what_each_encoder_spent(tmp_path):
    from core.jobs import HeadlessState
    from core.store.project import Project
    from core.tagging.index import IndexParams, build_index, load_index

    with Project.create(tmp_path / "p.kestrel") as p:
        _fake_archive(p)
        idx = build_index(p, HeadlessState(), IndexParams(ffn="anyexperts", epochs=5))
        assert idx.method == "mmae" and idx.model_info["params"]["ffn"] == "anyexperts"
        assert idx.model_info["experts"]["kind"] == "dynamic"  # the layer's config is in the provenance
        ex = idx.experts
        assert set(ex) == {"visual", "audio", "text"}
        assert np.isnan(ex["text"]).any() and np.isfinite(ex["visual"]).all()  # no text: no text encoder spent
        fin = np.concatenate([v[np.isfinite(v)] for v in ex.values()])
        assert ((fin >= 1) & (fin <= 4)).all()
        again = load_index(p)
        np.testing.assert_allclose(np.nan_to_num(again.experts["visual"]), np.nan_to_num(ex["visual"]), atol=1e-3)
        dense = build_index(p, HeadlessState(), IndexParams(epochs=5))
        assert dense.experts is None
