"""Per-shot features on real clips: shapes, presence, words in the right shot, reuse.

The speech clip is a montage of real clips (cut frames known) whose audio track holds two
espeak-ng sentences placed inside known shots, so the transcript has a ground truth in time.
Models are loaded once for the module (one ModelPool), as an archive run would.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import mediagen
from projectkit import CancelAfter
from bench.shots import make_montage
from core.perception import ops
from core.jobs import Cancelled, HeadlessState
from core.media.decode import probe
from core.store.project import Project
from core.tagging import TaggingError
from core.tagging.features import (
    MODALITIES,
    TEXT_DIM,
    FeatureConfig,
    ModelPool,
    ShotFeatures,
    audio_chunks,
    cached_shot_features,
    feature_params,
    load_features,
    shot_features,
    visual_columns,
    words_in,
)
from core.tagging.shots import Shot, detect_shots

SR = 16000
FOX = "the quick brown fox jumps over the lazy dog"
GATE = "gate seven opens at nine"
# chaplin 0–1.6 s, city at night 1.6–6.0 s, Big Buck Bunny 6.0–10.0 s, bikes 10.0–12.0 s
SPEECH_SEGMENTS = (("chaplin", 0, 40), ("city_mpg", 0, 110), ("bbb_6ch", 10, 100), ("bikes", 80, 50))
SPOKEN = ((2.2, FOX, 1), (6.8, GATE, 2))  # (start s, sentence, shot it lies in)


def speak(text: str) -> np.ndarray:
    return mediagen.speak(text, SR)


@pytest.fixture(scope="module")
def pool():
    return ModelPool(device="cpu")


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory, sample):
    for name, _, _ in SPEECH_SEGMENTS:
        sample(name)
    total = sum(n for _, _, n in SPEECH_SEGMENTS) / 25
    audio = np.zeros(int(total * SR), np.float32)
    for start, text, _ in SPOKEN:
        x = speak(text)
        x = 0.5 * x / max(1e-6, float(np.abs(x).max()))
        a = int(start * SR)
        audio[a:a + x.size] = x[:audio.size - a]
    path = tmp_path_factory.mktemp("speech") / "speech.mp4"
    cuts = make_montage(path, SPEECH_SEGMENTS, audio=audio, sample_rate=SR)
    shots = detect_shots(str(path), HeadlessState())
    assert [s.start_frame for s in shots[1:]] == pytest.approx(cuts, abs=1)
    return path, shots


@pytest.fixture(scope="module")
def speech_feats(speech_clip, pool):
    path, shots = speech_clip
    st = HeadlessState()
    return shot_features(str(path), shots, st, FeatureConfig(), pool), st


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def check_shapes(f: ShotFeatures, n: int, cfg: FeatureConfig) -> None:
    assert len(f) == n
    assert f.values["visual"].shape == (n, len(visual_columns(cfg)))
    assert f.values["audio"].shape[0] == n and f.values["text"].shape == (n, TEXT_DIM)
    for m in MODALITIES:
        assert f.values[m].dtype == np.float32 and np.isfinite(f.values[m]).all()
        assert f.present[m].shape == (n,) and f.present[m].dtype == bool
        assert not f.values[m][~f.present[m]].any(), f"absent {m} rows must be zero"
        assert len(f.columns[m]) == f.values[m].shape[1]
    json.dumps(f.info)  # JSON-able, for the tag namer and the export


def test_words_land_in_their_shots(speech_feats, speech_clip):
    f, st = speech_feats
    _, shots = speech_clip
    check_shapes(f, len(shots), FeatureConfig())
    assert st.progress == 1.0
    for _, text, k in SPOKEN:
        said = words(f.info[k]["words"])
        assert len(said & words(text)) >= len(words(text)) // 2, (k, f.info[k]["words"])
        others = set().union(*(words(f.info[j]["words"]) for j in range(len(shots)) if j != k))
        assert not (said & words(text) & others) - {"the", "at"}, "a word landed in two shots"
    assert {"fox", "dog"} <= words(f.info[1]["words"]) and "gate" in words(f.info[2]["words"])
    assert f.info[0]["words"] == "" and f.info[3]["words"] == ""
    assert f.present["audio"].all() and f.present["visual"].all()
    assert f.present["text"][1] and f.present["text"][2]
    for j in (0, 3):  # no speech there: text only if the picture holds some
        assert f.present["text"][j] == bool(f.info[j].get("ocr"))
    vad = f.col("audio", "vad")
    assert vad[1] > 0.3 and vad[2] > 0.3 and vad[0] < 0.05 and vad[3] < 0.05
    assert f.info[1]["speaker_frames"] > 50 and f.info[0]["speaker_frames"] == 0
    assert f.col("audio", "rms_db")[0] < -60 < f.col("audio", "rms_db")[1]  # silence vs speech
    # the two sentences are the same synthetic voice: their fingerprints are closer to each
    # other than to zero, and the text embeddings are unit vectors
    mfcc = [c for c in f.columns["audio"] if c.startswith("mfcc_mean")]
    fp = f.values["audio"][:, [f.columns["audio"].index(c) for c in mfcc]]
    assert np.linalg.norm(fp[1] - fp[2]) < np.linalg.norm(fp[1])
    assert np.allclose(np.linalg.norm(f.values["text"][f.present["text"]], axis=1), 1.0, atol=1e-3)
    assert all(a < b for a, b, _ in f.words)


def test_visual_parts_name_what_is_there(sample, pool):
    path = sample("bikes")
    shots = detect_shots(str(path), HeadlessState())
    f = shot_features(str(path), shots, HeadlessState(), FeatureConfig(asr=None), pool)
    check_shapes(f, len(shots), FeatureConfig())
    assert f.present["visual"].all()
    assert not f.present["audio"].any()  # bikes.mp4 has no audio track
    for i, s in enumerate(shots):
        top = f.info[i]["imagenet"]
        assert len(top) == 5 and top[0][1] >= top[-1][1] > 0
        assert f.col("visual", "duration_s")[i] == pytest.approx(s.duration)
        p = f.values["visual"][i, [j for j, c in enumerate(f.columns["visual"]) if c.startswith("in:")]]
        assert p.sum() == pytest.approx(1.0, abs=1e-3)  # a distribution over the 1000 classes
    # the street shots hold cars and bicycles, and the detector says so
    objects = Counter_of(f.info, "objects")
    assert objects["car"] >= 2 and objects["bicycle"] >= 1 and objects["person"] >= 1
    assert (f.col("visual", "coco:car") > 0).sum() >= 2


def Counter_of(info, key):
    from collections import Counter

    c = Counter()
    for i in info:
        c.update({k: 1 for k in i.get(key, {})})
    return c


def test_missing_modalities(tmp_path, pool):
    video_only = mediagen.make_video_only(tmp_path / "v.mp4", duration=2.0)
    shots = detect_shots(str(video_only), HeadlessState())
    f = shot_features(str(video_only), shots, HeadlessState(), FeatureConfig(faces=None, ocr=None), pool)
    assert f.present["visual"].all() and not f.present["audio"].any() and not f.present["text"].any()
    assert f.col("visual", "motion")[0] > 0  # the bar moves
    tone = mediagen.make_audio_only(tmp_path / "a.wav", duration=2.0, tone=(0.5, 1.5, 440.0, 0.5))
    shots = detect_shots(str(tone), HeadlessState())
    f = shot_features(str(tone), shots, HeadlessState(), FeatureConfig(), pool)
    check_shapes(f, 1, FeatureConfig())
    assert not f.present["visual"].any() and f.present["audio"].all() and not f.present["text"].any()
    assert f.col("audio", "vad")[0] < 0.2 and f.col("audio", "rms_db")[0] > -20


def test_bad_input(tmp_path, sample, pool):
    bad = mediagen.make_text_as_mp4(tmp_path / "bad.mp4")
    with pytest.raises(TaggingError, match="bad.mp4"):
        shot_features(str(bad), [Shot(0, 0.0, 1.0, 0, 25)], HeadlessState(), FeatureConfig(), pool)
    with pytest.raises(TaggingError, match="no shots"):
        shot_features(str(sample("bikes")), [], HeadlessState(), FeatureConfig(), pool)
    with pytest.raises(TaggingError, match="no-such-model"):
        shot_features(str(sample("bikes")), [Shot(0, 0.0, 10.0, 0, 250)], HeadlessState(),
                      FeatureConfig(ocr="no-such-model"), ModelPool())
    st = HeadlessState()
    st.cancel()
    with pytest.raises(Cancelled):
        shot_features(str(sample("bikes")), [Shot(0, 0.0, 10.0, 0, 250)], st, FeatureConfig(), pool)
    shots = detect_shots(str(sample("bikes")), HeadlessState())
    mid = CancelAfter(0.3)
    with pytest.raises(Cancelled):
        shot_features(str(sample("bikes")), shots, mid, FeatureConfig(faces=None, ocr=None), pool)
    assert 0.3 <= mid.progress < 1.0


def test_stored_and_reused(tmp_path, speech_clip, speech_feats):
    path, shots = speech_clip
    first, _ = speech_feats
    cfg = FeatureConfig()
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = ops.register_media(p, probe(path))
        params = feature_params(shots, cfg)
        assert load_features(p, mid, params) is None
        from core.tagging.features import store_features
        store_features(p, mid, first, params, duration_s=1.0)
        fresh = ModelPool()
        again = cached_shot_features(p, mid, str(path), shots, HeadlessState(), cfg, fresh)
        assert not fresh.loads and not fresh.calls  # nothing was computed
        for m in MODALITIES:
            assert np.array_equal(again.values[m], first.values[m])
            assert np.array_equal(again.present[m], first.present[m])
        assert again.info == json.loads(json.dumps(first.info)) and again.shots == shots
        assert again.columns == first.columns
        runs = [r for r in p.list_runs(mid) if r.kind == "tagging/features"]
        assert len(runs) == 1
        # other shots or other settings are other features
        assert load_features(p, mid, feature_params(shots[:2], cfg)) is None
        assert load_features(p, mid, feature_params(shots, FeatureConfig(faces=None))) is None


def test_audio_chunks_cut_at_shots():
    shots = [Shot(0, 0.0, 50.0, 0, 1), Shot(1, 50.0, 130.0, 1, 2), Shot(2, 130.0, 200.0, 2, 3)]
    assert audio_chunks(shots, 200.0) == [(0.0, 50.0), (50.0, 110.0), (110.0, 130.0), (130.0, 190.0),
                                          (190.0, 200.0)]
    assert audio_chunks([Shot(0, 0.0, 30.0, 0, 1)], 30.0) == [(0.0, 30.0)]
    assert words_in(shots[1], [(49.0, 49.8, "a"), (49.8, 50.4, "b"), (51.0, 52.0, "c")]) == ["b", "c"]


def test_object_columns_count_confirmed_detections_only(sample, ssd, efficientnet):
    """Issue #17: a shot's coco:<class> counts only detections a Confirmer confirms. Three frames
    of the real bus photo: SSD's bus is confirmed by the classifier's second look; a phantom
    "vase" planted on the road in the same place in every frame (what a detector's confusion
    with the background looks like) is kept as unconfirmed, with why, and not counted."""
    import cv2

    from core.tagging.features import _confirmed
    from models.types import Detection

    img = cv2.cvtColor(cv2.imread(str(sample("bus_jpg"))), cv2.COLOR_BGR2RGB)
    frames = [img, img.copy(), img.copy()]
    real = ssd.detect(frames)
    assert all(any(d.label == "bus" for d in fd) for fd in real)
    vase = Detection((560.0, 930.0, 780.0, 1070.0), "vase", 0.9)
    dets = [list(fd) + [vase] for fd in real]

    class Pool:
        def get(self, name):
            return {"ssd-mobilenet-v2-coco": ssd, "efficientnet-lite3": efficientnet}[name]

    feats = ShotFeatures([], {}, {}, {}, [])
    kept, doubt = _confirmed(frames, dets, FeatureConfig(), Pool(), set(), feats)
    assert all(any(d.label == "bus" for d in fd) for fd in kept)
    assert not any(d.label == "vase" for fd in kept for d in fd)
    assert doubt["vase"]["why"].startswith("unconfirmed") and doubt["vase"]["score"] == 0.9
    # confirmation off: every detection counts (and the stored key differs)
    kept, doubt = _confirmed(frames, dets, FeatureConfig(confirm=False), Pool(), set(), feats)
    assert kept == dets and doubt == {}
    shots = [Shot(0, 0.0, 1.0, 0, 25)]
    assert feature_params(shots, FeatureConfig()) != feature_params(shots, FeatureConfig(confirm=False))
    # a second look that cannot run: nothing is counted, and the file's notes say so
    failed: set[str] = set()
    kept, _ = _confirmed(frames, dets, FeatureConfig(detector="no-such-model"), Pool(), failed, feats)
    assert kept == [[], [], []] and "confirm" in failed and "could not be confirmed" in feats.notes[-1]
